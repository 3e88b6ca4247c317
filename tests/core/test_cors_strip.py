"""``strip_cors``: the head a response had before ``apply_cors`` decorated it."""

from __future__ import annotations

from gripd.core.cors import apply_cors, strip_cors
from gripd.core.headers import Headers

REQ: Headers = [("Origin", "https://o"), ("Access-Control-Request-Headers", "X-A")]


def test_strip_undoes_apply() -> None:
    raw: Headers = [("X-H", "h"), ("Content-Type", "text/plain")]
    assert strip_cors(REQ, apply_cors(REQ, raw)) == raw


def test_origin_cors_headers_are_kept() -> None:
    raw: Headers = [("Access-Control-Allow-Origin", "https://mine"), ("X-Z", "z")]
    decorated = apply_cors(REQ, raw)
    assert len(decorated) > len(raw)
    assert strip_cors(REQ, decorated) == raw


def test_undecorated_head_is_left_alone() -> None:
    raw: Headers = [("X-H", "h"), ("Access-Control-Max-Age", "10")]
    assert strip_cors(REQ, raw) == raw
    assert strip_cors([], []) == []

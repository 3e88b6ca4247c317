"""F45 auto cross-origin headers; expectations captured from Pushpin 1.36 (route ``aco``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.cors import apply_cors
from gripd.core.headers import Headers

DEFAULT_METHODS = ("Access-Control-Allow-Methods", "OPTIONS, HEAD, GET, POST, PUT, DELETE")
CRED = ("Access-Control-Allow-Credentials", "true")
ANY_ORIGIN = ("Access-Control-Allow-Origin", "*")
MAX_AGE = ("Access-Control-Max-Age", "3600")

CASES: list[tuple[str, Headers, Headers, Headers]] = [
    (
        # Every request-side input, a case-duplicate and simple headers in the response.
        "full",
        [
            ("Host", "example.com"),
            ("Origin", "http://o.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "X-One, X-Two"),
            ("Access-Control-Request-Headers", ""),
            ("Access-Control-Request-Headers", "X-Three"),
        ],
        [
            ("Content-Type", "text/plain"),
            ("X-A", "1"),
            ("Cache-Control", "no-cache"),
            ("x-a", "2"),
            ("X-B", "3"),
            ("ETag", '"e"'),
            ("Content-Length", "3"),
        ],
        [
            ("Access-Control-Allow-Methods", "PUT"),
            ("Access-Control-Allow-Headers", "X-One, X-Two, X-Three"),
            ("Access-Control-Expose-Headers", "X-A, X-B, ETag"),
            CRED,
            ("Access-Control-Allow-Origin", "http://o.example"),
            MAX_AGE,
        ],
    ),
    (
        "bare",
        [("Host", "e")],
        [("Content-Length", "3")],
        [DEFAULT_METHODS, CRED, ANY_ORIGIN, MAX_AGE],
    ),
    (
        # Present ones (any case) are left alone and not re-added.
        "existing",
        [("Host", "e")],
        [
            ("access-control-allow-origin", "x"),
            ("Access-Control-Max-Age", "5"),
            ("Content-Length", "3"),
        ],
        [DEFAULT_METHODS, CRED],
    ),
    (
        # A chunked origin response: Transfer-Encoding is not exposed.
        "chunked",
        [("Host", "e")],
        [("X-Z", "z"), ("Transfer-Encoding", "chunked")],
        [DEFAULT_METHODS, ("Access-Control-Expose-Headers", "X-Z"), CRED, ANY_ORIGIN, MAX_AGE],
    ),
    (
        "options-204",
        [("Host", "e"), ("Origin", "http://x")],
        [],
        [DEFAULT_METHODS, CRED, ("Access-Control-Allow-Origin", "http://x"), MAX_AGE],
    ),
    (
        "grip-and-empty-inputs",
        [
            ("Access-Control-Request-Method", ""),
            ("Origin", ""),
            ("Access-Control-Request-Headers", " , "),
        ],
        [("Grip-Foo", "1"), ("Access-Control-Foo", "2"), ("Pragma", "x"), ("Expires", "0")],
        [DEFAULT_METHODS, CRED, ANY_ORIGIN, MAX_AGE],
    ),
    (
        "quoted-comma",
        [("Access-Control-Request-Headers", ' a , "b,c" ,d')],
        [("Access-Control-Expose-Headers", "")],
        [
            DEFAULT_METHODS,
            ("Access-Control-Allow-Headers", 'a, "b,c", d'),
            CRED,
            ANY_ORIGIN,
            MAX_AGE,
        ],
    ),
]


@pytest.mark.parametrize(("name", "req", "resp", "added"), CASES, ids=[c[0] for c in CASES])
def test_apply_cors_matches_pushpin(name: str, req: Headers, resp: Headers, added: Headers) -> None:
    assert apply_cors(req, resp) == resp + added


def test_apply_cors_does_not_mutate_input() -> None:
    resp: Headers = [("X", "1")]
    apply_cors([], resp)
    assert resp == [("X", "1")]


_names = st.sampled_from(
    ["X-A", "x-a", "Content-Type", "Grip-X", "Access-Control-Allow-Origin", "Origin", "ETag"]
)
_headers = st.lists(st.tuples(_names, st.text(max_size=5)), max_size=6)


@given(_headers, _headers)
def test_apply_cors_is_idempotent_and_only_appends(req: Headers, resp: Headers) -> None:
    once = apply_cors(req, resp)
    assert once[: len(resp)] == resp
    assert apply_cors(req, once) == once
    names = [k.lower() for k, _ in once[len(resp) :]]
    assert len(names) == len(set(names))
    assert all(n.startswith("access-control-") for n in names)

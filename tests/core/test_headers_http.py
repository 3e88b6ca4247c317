"""Header grammar (Pushpin httpheaders.cpp) and response encoding (F20, F22, F47)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core import headers as hdr
from gripd.core.http import (
    LAST_CHUNK,
    HttpResponse,
    encode_chunk,
    encode_full,
    interim_head_problem,
    persistent,
    reason_phrase,
    text_response,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a, b", ["a", " b"]),
        ('a; x="1,2", b', ['a; x="1,2"', " b"]),
        ('"a\\"," , b', ['"a\\"," ', " b"]),
        ("", [""]),
    ],
)
def test_split_unquoted(value: str, expected: list[str]) -> None:
    assert hdr.split_unquoted(value, ",") == expected


def test_parse_parameters() -> None:
    first, params = hdr.parse_parameters(' chan ; prev-id=3 ; filter="skip-self"; flag')
    assert first == "chan"
    assert params == [("prev-id", "3"), ("filter", "skip-self"), ("flag", "")]
    assert hdr.param(params, "PREV-ID") == "3"
    assert hdr.param(params, "none") is None


def test_parse_list_over_repeated_headers() -> None:
    values = hdr.get_all(
        [("Grip-Channel", "a, b"), ("X", "y"), ("grip-channel", "c")], "GRIP-CHANNEL"
    )
    assert [n for n, _ in hdr.parse_list(values)] == ["a", "b", "c"]


def test_header_list_helpers() -> None:
    h = [("A", "1"), ("b", "2"), ("a", "3")]
    assert hdr.get(h, "a") == "1"
    assert hdr.remove(h, "A") == [("b", "2")]
    assert hdr.set_header(h, "a", "9") == [("a", "9"), ("b", "2")]
    assert hdr.set_header(h, "C", "4")[-1] == ("C", "4")
    assert hdr.contains(h, "B") and not hdr.contains(h, "c")
    assert hdr.unquote('"a\\"b"') == 'a"b'


_NAMES = ("host", "Host", "content-length", "k", "")


@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from((*_NAMES, "HOST", "Hos", "hostt", "\u0130", "\u212a")), st.text()
            ),
            st.text(max_size=3),
        ),
        max_size=6,
    ),
    st.sampled_from(_NAMES),
)
def test_lookups_skip_other_lengths_without_missing_a_match(
    headers: list[tuple[str, str]], name: str
) -> None:
    """``get``/``get_all``/``contains`` pass over names of another length: the same answers
    as comparing every lowered name (non-ASCII names included: U+0130 lowers to two characters,
    the Kelvin sign U+212A to "k")."""
    every = [v for k, v in headers if k.lower() == name.lower()]
    assert hdr.get_all(headers, name) == every
    assert hdr.get(headers, name) == (every[0] if every else None)
    assert hdr.contains(headers, name) == bool(every)


@given(st.text())
def test_split_rejoins(value: str) -> None:
    assert ",".join(hdr.split_unquoted(value, ",")) == value


def test_reason_phrases() -> None:
    assert reason_phrase(200) == "OK"
    assert reason_phrase(502) == "Bad Gateway"
    assert reason_phrase(299) == "Undefined Reason"  # F20 verified on Pushpin


def test_encode_full_recomputes_length_and_drops_hop_by_hop() -> None:
    resp = HttpResponse(
        200, "OK", [("Content-Length", "99"), ("Connection", "x"), ("X-A", "b")], b"hi\n"
    )
    raw = encode_full(resp)
    assert raw == b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 3\r\n\r\nhi\n"
    assert encode_full(resp, method="HEAD").endswith(b"Content-Length: 3\r\n\r\n")
    assert b"Connection: close" in encode_full(resp, keep_alive=False)
    no_body = encode_full(HttpResponse(204, "No Content", [], b"x"))
    assert no_body == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_chunks() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert encode_chunk(b"") == b""
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_text_response() -> None:
    r = text_response(502, "No route for host: a\n")
    assert (r.code, r.reason, r.headers, r.body) == (
        502,
        "Bad Gateway",
        [("Content-Type", "text/plain")],
        b"No route for host: a\n",
    )


def test_reason_table_is_pushpins() -> None:
    assert reason_phrase(306) == "Reserved"
    assert reason_phrase(413) == "Request Entity Too Large"
    for code in (103, 418, 421, 425, 451, 0, 999):
        assert reason_phrase(code) == "Undefined Reason"


# --- the header safety check shared by every non-HTTP input (RFC 9110 5.1, 5.5) ---------------


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("X-Ok", "v a\tlue é", None),
        ("!#$%&'*+-.^_`|~09azAZ", "", None),
        ("", "v", "name"),
        ("X Y", "v", "name"),
        ("X:", "v", "name"),
        ("X\r\nY", "v", "name"),
        ("Xé", "v", "name"),
        ("X", "a\r\nSet-Cookie: e=1", "value"),
        ("X", "a\rb", "value"),
        ("X", "a\nb", "value"),
        ("X", "a\x00b", "value"),
        ("X Y", "a\r\n", "name"),  # the name is checked first
    ],
)
def test_field_problem(name: str, value: str, problem: str | None) -> None:
    assert hdr.field_problem(name, value) == problem
    assert hdr.is_token(name) == (problem != "name")
    assert hdr.is_safe_text(value) == (not any(c in value for c in "\r\n\x00"))


def test_show_escapes_controls() -> None:
    assert hdr.show("a\r\nb\x00\x7f\tc é") == "a\\r\\nb\\x00\\x7f\\tc é"


@pytest.mark.parametrize(
    ("status", "headers", "problem"),
    [
        (100, [], None),
        (103, [("Link", "</a>; rel=preload")], None),
        (100, [("Content-Length", "0")], None),
        (2, [], "Invalid status code from origin: 2"),
        (99, [], "Invalid status code from origin: 99"),
        (101, [], "Unexpected protocol upgrade from origin"),
        (199, [("Content-Length", "3")], "Interim response from origin has a body"),
        (100, [("transfer-encoding", "chunked")], "Interim response from origin has a body"),
    ],
)
def test_interim_head_problem(status: int, headers: hdr.Headers, problem: str | None) -> None:
    # Pushpin 1.36 answers 502 to each refused head (checked by running it).
    assert interim_head_problem(status, headers) == problem


@pytest.mark.parametrize(
    ("version", "tokens", "expected"),
    [
        ("1.1", [], True),
        ("1.1", ["close"], False),
        ("1.1", ["foo", "close"], False),
        ("1.0", [], False),
        ("1.0", ["keep-alive"], True),
        ("1.0", ["keep-alive", "close"], False),  # close wins
        ("1.2", [], False),
        ("", ["keep-alive"], False),
    ],
)
def test_persistent(version: str, tokens: list[str], expected: bool) -> None:
    """RFC 9112 9.3, for the control API's requests and the origin's HEAD responses."""
    assert persistent(version, tokens) is expected

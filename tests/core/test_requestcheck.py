"""``gripd.core.requestcheck``: CONNECT and Host checks before routing (RFC 9112 §3.2, F47)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.requestcheck import _HOST_RE, CONNECT_BODY, check_host, check_request, valid_host


@pytest.mark.parametrize(
    "value",
    [
        "t",
        "example.com",
        "example.com:8080",
        "example.com:",  # RFC 3986: port = *DIGIT
        "",  # reg-name may be empty
        "127.0.0.1:7999",
        "[::1]",
        "[::1]:80",
        "[v1.fe80::a+en1]",
        "xn--bcher-kva.example",
        "a%20b",
        "under_score.example",
        "sub!$&'()*+,;=delims",
    ],
)
def test_valid_hosts(value: str) -> None:
    assert valid_host(value)


@pytest.mark.parametrize(
    "value",
    [
        "a b",
        "a<b>",
        "a\tb",
        "host:80x",
        "host:80:81",
        "a%2",
        "a%zz",
        "[::1",
        "::1]",
        "a/b",
        "a?b",
        "a#b",
        "user@host",
        'a"b',
        "a\\b",
        "h\u00e9llo",
        "a\x00b",
    ],
)
def test_invalid_hosts(value: str) -> None:
    assert not valid_host(value)


def test_check_host() -> None:
    assert check_host([("Host", "t")]) is None
    assert check_host([]) is None  # a missing Host is left to routing (Pushpin: localhost)
    assert check_host([("X-Host", "a b")]) is None
    two = check_host([("Host", "t"), ("host", "u")])
    assert two is not None
    assert two[0] == "more than one Host header"
    assert "'t'" in two[1] and "'u'" in two[1]
    same = check_host([("Host", "t"), ("HOST", "t")])  # RFC 9112 §3.2: more than one line
    assert same is not None and same[0] == "more than one Host header"
    bad = check_host([("Host", "a\r b")])
    assert bad is not None
    assert bad[0] == "invalid Host header"
    assert "\\r" in bad[1]  # control characters are escaped for the log


def test_check_request() -> None:
    assert check_request("GET", [("Host", "t")]) is None
    assert check_request("POST", []) is None
    rej = check_request("CONNECT", [("Host", "example.com:443")])
    assert rej is not None
    assert (rej.response.code, rej.response.body, rej.close) == (502, CONNECT_BODY.encode(), True)
    assert rej.response.headers == [("Content-Type", "text/plain")]
    rej = check_request("GET", [("Host", "a b")])
    assert rej is not None
    assert rej.response.code == 400
    assert rej.response.body == b"Bad Request: invalid Host header.\n"
    assert rej.close
    assert "'a b'" in rej.reason


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="aZ09-._~!$&'()*+,;=%:[]@/ \t\x7f\u00e9", max_size=24))
def test_the_plain_host_shortcut_agrees_with_the_whole_grammar(value: str) -> None:
    """``valid_host`` answers first with a faster pattern for plain names; it must accept
    exactly what RFC 3986's host grammar accepts."""
    assert valid_host(value) == (_HOST_RE.fullmatch(value) is not None)

"""Tests for gripd.core.instruct: GRIP instruction parsing (F18-F21, F47 messages).

Expected values come from Pushpin 1.36 src/handler/instruct.cpp and its instructtest.cpp, and
(for the Qt primitives) from calling Qt5 itself, see ``test_qt_oracle_*`` at the end.
"""

from __future__ import annotations

import ctypes
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gripd.core.errors import InstructError, OriginError
from gripd.core.headers import Headers
from gripd.core.instruct import (
    Channel,
    Instruct,
    KeepAlive,
    NextLink,
    decode_keep_alive_data,
    is_grip_response,
    parse_instruct,
)

GI = ("Content-Type", "application/grip-instruct")
TP = ("Content-Type", "text/plain")


def parse(headers: Headers, body: bytes = b"hello", code: int = 200, **kw: Any) -> Instruct:
    return parse_instruct(code, "OK", headers, body, **kw)


def pj(doc: object, headers: Headers | None = None, **kw: Any) -> Instruct:
    """Parse a JSON instruct body (F21)."""
    return parse([GI, *(headers or [])], json.dumps(doc).encode(), **kw)


# --------------------------------------------------------------------------------------------
# F18 detection


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([TP], False),
        ([], False),
        ([GI], True),
        ([("content-type", "application/grip-instruct; charset=utf-8")], True),
        ([("Content-Type", "Application/Grip-Instruct")], False),  # proxysession: exact
        ([("Content-Type", "application/grip-instruct ; x")], False),  # not trimmed
        ([TP, ("Grip-Hold", "response")], True),
        ([TP, ("grip-x-anything", "")], True),
        ([TP, ("GRIP-", "1")], True),
        ([TP, ("Grip", "1")], False),
        ([TP, ("X-Grip-Hold", "stream")], False),
    ],
)
def test_is_grip_response(headers: Headers, expected: bool) -> None:
    assert is_grip_response(headers) is expected


# --------------------------------------------------------------------------------------------
# F20 header form: successful parses


def test_no_hold_strips_grip_headers_and_keeps_body() -> None:
    i = parse([TP, ("Grip-Channel", "test"), ("X-Other", "1")])
    assert i.hold_mode is None
    assert i.next_link is None
    assert i.response.code == 200
    assert i.response.reason == "OK"
    assert i.response.headers == [TP, ("X-Other", "1")]
    assert i.response.body == b"hello"
    assert [c.name for c in i.channels] == ["test"]


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        ("404", 404, "Not Found"),
        ("404 Nothing To See Here", 404, "Nothing To See Here"),
        ("299", 299, "Undefined Reason"),
        ("0", 0, "Undefined Reason"),
        ("999 x", 999, "x"),
        ("200 ", 200, "OK"),  # empty reason -> standard reason
        ("201  two spaces", 201, " two spaces"),
        ("+202", 202, "Accepted"),
        ("", 200, "OK"),  # empty Grip-Status is ignored
    ],
)
def test_grip_status(status: str, code: int, reason: str) -> None:
    r = parse([TP, ("Grip-Status", status)]).response
    assert (r.code, r.reason) == (code, reason)


def test_origin_reason_kept_without_grip_status() -> None:
    i = parse_instruct(203, "Fine Thanks", [("Grip-Hold", "response")], b"")
    assert (i.response.code, i.response.reason) == (203, "Fine Thanks")
    i = parse_instruct(203, "", [("Grip-Hold", "response")], b"")
    assert i.response.reason == "Non-Authoritative Information"


@pytest.mark.parametrize(("value", "mode"), [("response", "response"), ("stream", "stream")])
def test_grip_hold(value: str, mode: str) -> None:
    assert parse([("Grip-Hold", value)]).hold_mode == mode


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["apple"], [Channel("apple")]),
        (["apple", "banana, cherry"], [Channel("apple"), Channel("banana"), Channel("cherry")]),
        (
            ["apple; prev-id=item1; filter=f1", "banana; filter=f2, cherry; filter=f1; filter=f2"],
            [
                Channel("apple", "item1", ["f1"]),
                Channel("banana", None, ["f2"]),
                Channel("cherry", None, ["f1", "f2"]),
            ],
        ),
        (['a; prev-id="x,y; z"'], [Channel("a", "x,y; z")]),
        (["a; PREV-ID=1"], [Channel("a", "1")]),  # parameter names are case-insensitive...
        (["a; FILTER=skip-self"], [Channel("a")]),  # ...except filter (compared exactly)
        (["a; prev-id"], [Channel("a")]),  # no '=' -> null -> no prev-id
        (["a; prev-id="], [Channel("a", "")]),
        (['a; prev-id=""'], [Channel("a")]),  # empty quoted value is a Qt null
        (["a; prev-id= 5 "], [Channel("a", "5")]),
        (["a; filter"], [Channel("a", None, [""])]),
        (["a,,b"], [Channel("a"), Channel(""), Channel("b")]),  # empty inner parts are kept
        (["a,"], [Channel("a")]),  # but nothing follows a final comma
        ([""], []),
        (['"q"'], [Channel('"q"')]),  # the first element keeps its quotes
        (['a; prev-id="unterminated', "b"], [Channel("b")]),  # invalid elements are skipped
        (["caf\xc3\xa9"], [Channel("café")]),  # UTF-8 bytes in latin-1 header text
        (["\xff"], [Channel("\ufffd")]),
    ],
)
def test_grip_channel(values: list[str], expected: list[Channel]) -> None:
    i = parse([("Grip-Hold", "response"), *[("Grip-Channel", v) for v in values]])
    assert i.channels == expected


def test_channel_prefix_and_truncation() -> None:
    headers: Headers = [("Grip-Hold", "stream"), ("Grip-Channel", ", ".join(map(str, range(25))))]
    i = parse(headers, channel_prefix="pre-")
    assert [c.name for c in i.channels] == [f"pre-{n}" for n in range(20)]
    assert i.warnings == ["httpsession: too many subscriptions"]
    i = parse(headers, connection_subscription_max=25)
    assert len(i.channels) == 25
    assert i.warnings == []


def test_hold_without_channels_is_not_an_error() -> None:
    i = parse([("Grip-Hold", "response")])
    assert i.hold_mode == "response"
    assert i.channels == []


@pytest.mark.parametrize(
    ("value", "timeout"),
    [
        (None, 55),
        ("120", 120),
        ("0", 5),
        ("4", 5),
        ("5", 5),
        (" 7 ", 7),
        ("+8", 8),
        ("-0", 5),
        ("2147483647", 2147483647),
    ],
)
def test_grip_timeout(value: str | None, timeout: int) -> None:
    headers: Headers = [("Grip-Hold", "response")]
    if value is not None:
        headers.append(("Grip-Timeout", value))
    assert parse(headers).timeout == timeout


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ping1\\n; timeout=10", KeepAlive(b"ping1\\n", 10, "idle")),
        ("ping2\\n; format=cstring", KeepAlive(b"ping2\n", 55, "idle")),
        ("cGluZzMK; format=base64", KeepAlive(b"ping3\n", 55, "idle")),
        ("ping4\\n; mode=interval", KeepAlive(b"ping4\\n", 55, "interval")),
        ("x; mode=idle; timeout=0", KeepAlive(b"x", 1, "idle")),  # minimum 1
        ("x; format=raw; mode=", KeepAlive(b"x", 55, "idle")),
        (":\\n\\n; format=cstring; timeout=20", KeepAlive(b":\n\n", 20, "idle")),
        ("a, b", KeepAlive(b"a, b", 55, "idle")),  # not comma-split
        ("  padded  ; timeout=3", KeepAlive(b"padded", 3, "idle")),
        ('x; format="base64"', KeepAlive(b"", 55, "idle")),  # lenient base64 of "x"
    ],
)
def test_grip_keep_alive(value: str, expected: KeepAlive) -> None:
    assert parse([("Grip-Hold", "stream"), ("Grip-Keep-Alive", value)]).keep_alive == expected


@pytest.mark.parametrize("value", ["", 'x; format="unterminated'])
def test_grip_keep_alive_absent(value: str) -> None:
    # An empty value or an unparsable one counts as no header at all (getAsParameters).
    assert parse([("Grip-Hold", "stream"), ("Grip-Keep-Alive", value)]).keep_alive is None


@pytest.mark.parametrize(
    ("values", "meta"),
    [
        (["foo=bar, bar=baz"], {"foo": "bar", "bar": "baz"}),
        (['a="x, y"', "b=2; ignored=1"], {"a": "x, y", "b": "2"}),
        (["flag"], {"flag": ""}),
        (["a=1", "a=2"], {"a": "2"}),
        (['a="unterminated'], {}),
    ],
)
def test_grip_set_meta(values: list[str], meta: dict[str, str]) -> None:
    assert parse([("Grip-Hold", "response"), *[("Grip-Set-Meta", v) for v in values]]).meta == meta


@pytest.mark.parametrize(
    ("values", "link", "others"),
    [
        (["</next>; rel=next"], NextLink("/next", 120), []),
        (["<http://h/x?y=1>; rel=next; timeout=30"], NextLink("http://h/x?y=1", 30), []),
        (["</a>; rel=next; timeout=0"], NextLink("/a", 0), []),
        (["</a>; rel=next", "</b>; rel=next"], NextLink("/b", 120), []),  # last one wins
        (["</a>; rel=next, </g>; rel=gone"], NextLink("/a", 120), [("gone", "/g")]),
        (['</a>; REL="next"'], NextLink("/a", 120), []),
        (["</a>"], None, []),  # no parameters: ignored
        (["</a>; rel=Next"], None, [("Next", "/a")]),
        (["garbage; rel=other"], None, []),  # only rel=next links are validated
    ],
)
def test_grip_link(values: list[str], link: NextLink | None, others: list[Any]) -> None:
    i = parse([("Grip-Hold", "stream"), *[("Grip-Link", v) for v in values]])
    assert i.next_link == link
    assert i.other_links == others


def test_response_headers_cleanup_and_expose() -> None:
    headers: Headers = [
        TP,
        ("Grip-Hold", "response"),
        ("Connection", "close"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Encoding", "gzip"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "5"),
        ("X-A", "1"),
        ("x-b", "2"),
    ]
    assert parse(headers).response.headers == [TP, ("X-A", "1"), ("x-b", "2")]
    exposed = parse([*headers, ("Grip-Expose-Headers", "X-B, content-type")]).response.headers
    assert exposed == [TP, ("x-b", "2")]
    # ',' gives one empty name: only a header named "" would be kept
    assert parse([*headers, ("Grip-Expose-Headers", ",")]).response.headers == []


# --------------------------------------------------------------------------------------------
# F20 header form: errors (Pushpin's messages)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("Grip-Hold", "Response")], "Grip-Hold must be set to either 'response' or 'stream'"),
        ([("Grip-Hold", "")], "Grip-Hold must be set to either 'response' or 'stream'"),
        ([("Grip-Hold", " stream")], "Grip-Hold must be set to either 'response' or 'stream'"),
        ([("Grip-Timeout", "abc")], "failed to parse Grip-Timeout"),
        ([("Grip-Timeout", "")], "failed to parse Grip-Timeout"),
        ([("Grip-Timeout", "1.5")], "failed to parse Grip-Timeout"),
        ([("Grip-Timeout", "10, 20")], "failed to parse Grip-Timeout"),
        ([("Grip-Timeout", "2147483648")], "failed to parse Grip-Timeout"),
        ([("Grip-Timeout", "-1")], "Grip-Timeout has invalid value"),
        ([("Grip-Keep-Alive", "; timeout=5")], "Grip-Keep-Alive cannot be empty"),
        ([("Grip-Keep-Alive", "x; mode=often")], "no such Grip-Keep-Alive mode 'often'"),
        (
            [("Grip-Keep-Alive", "x; timeout=soon")],
            "failed to parse Grip-Keep-Alive timeout value",
        ),
        ([("Grip-Keep-Alive", "x; timeout")], "failed to parse Grip-Keep-Alive timeout value"),
        ([("Grip-Keep-Alive", "x; timeout=-3")], "Grip-Keep-Alive timeout has invalid value"),
        (
            [("Grip-Keep-Alive", "x\\; format=cstring")],
            "failed to parse Grip-Keep-Alive cstring format",
        ),
        ([("Grip-Keep-Alive", "x; format=hex")], "no such Grip-Keep-Alive format 'hex'"),
        ([("Grip-Set-Meta", "a=1,,b=2")], "Grip-Set-Meta cannot be empty"),
        ([("Grip-Set-Meta", ", a=1")], "Grip-Set-Meta cannot be empty"),
        ([("Grip-Status", "abc")], "Grip-Status contains invalid status code"),
        ([("Grip-Status", "1000")], "Grip-Status contains invalid status code"),
        ([("Grip-Status", "-1 Minus")], "Grip-Status contains invalid status code"),
        ([("Grip-Link", "/next; rel=next")], "failed to parse Grip-Link value"),
        ([("Grip-Link", "<>; rel=next")], "failed to parse Grip-Link value"),
        ([("Grip-Link", "<http://h:port/>; rel=next")], "Grip-Link contains invalid link"),
        ([("Grip-Link", "<1a:b>; rel=next")], "Grip-Link contains invalid link"),
        ([("Grip-Link", "<http://a b/>; rel=next")], "Grip-Link contains invalid link"),
        ([("Grip-Link", "</a>; rel=next; timeout=x")], "failed to parse Grip-Link timeout value"),
        ([("Grip-Link", "</a>; rel=next; timeout=-1")], "Grip-Link timeout has invalid value"),
        # the first check in Pushpin's order wins
        (
            [("Grip-Timeout", "x"), ("Grip-Hold", "bad")],
            "Grip-Hold must be set to either 'response' or 'stream'",
        ),
        ([("Grip-Status", "x"), ("Grip-Set-Meta", ",")], "Grip-Set-Meta cannot be empty"),
    ],
)
def test_header_errors(headers: Headers, message: str) -> None:
    with pytest.raises(InstructError) as ei:
        parse(headers)
    assert str(ei.value) == message
    assert isinstance(ei.value, OriginError)


# --------------------------------------------------------------------------------------------
# decode_keep_alive_data (F20 formats)


@pytest.mark.parametrize(
    ("data", "fmt", "out"),
    [
        ("a\\\\b", "cstring", b"a\\b"),
        ("\\r\\n", "cstring", b"\r\n"),
        ("\\x41\\x4a\\x4A", "cstring", b"AJJ"),
        ("a\\tb", "cstring", b"ab"),  # unknown escapes are dropped
        ("\\x00", "cstring", b"\x00"),
        ("raw\\n", "raw", b"raw\\n"),
        ("raw", "", b"raw"),
        ("\xe9", "raw", b"\xe9"),
        ("cGluZzMK", "base64", b"ping3\n"),
        ("cGl!uZz=MK", "base64", b"ping3\n"),  # invalid characters are skipped
        ("QQ", "base64", b"A"),
        ("Q", "base64", b""),
    ],
)
def test_decode_keep_alive_data(data: str, fmt: str, out: bytes) -> None:
    assert decode_keep_alive_data(data, fmt) == out


@pytest.mark.parametrize("data", ["a\\", "\\x4", "\\x4g", "\\xg4", "\\t", "\\x"])
def test_decode_keep_alive_cstring_errors(data: str) -> None:
    with pytest.raises(InstructError, match=r"^failed to parse Grip-Keep-Alive cstring format$"):
        decode_keep_alive_data(data, "cstring")


# --------------------------------------------------------------------------------------------
# F21 JSON form


def test_json_full() -> None:
    i = pj(
        {
            "hold": {
                "mode": "stream",
                "channels": [
                    {"name": "apple", "prev-id": "item1", "filters": ["f1"]},
                    {"name": "banana"},
                ],
                "timeout": 120,
                "keep-alive": {"content": "ka\n", "timeout": 3},
                "meta": {"foo": "bar", "bar": "baz"},
            },
            "response": {"code": 202, "headers": {"X-A": "b"}, "body": "to\n"},
        },
        channel_prefix="p.",
    )
    assert i.hold_mode == "stream"
    assert i.channels == [Channel("p.apple", "item1", ["f1"]), Channel("p.banana")]
    assert i.timeout == 120
    assert i.keep_alive == KeepAlive(b"ka\n", 3, "interval")  # JSON keep-alive: interval
    assert i.meta == {"foo": "bar", "bar": "baz"}
    assert i.response.code == 202
    assert i.response.reason == "Accepted"
    assert i.response.headers == [("X-A", "b")]
    assert i.response.body == b"to\n"


def test_json_ignores_origin_headers_and_body() -> None:
    i = parse([GI, ("X-Origin", "1")], b'{"hold":{"channels":[]}}')
    assert i.hold_mode == "response"  # mode defaults to response
    assert (i.response.code, i.response.reason) == (200, "OK")
    assert i.response.headers == []
    assert i.response.body == b""


@pytest.mark.parametrize(
    ("response", "code", "reason", "headers", "body"),
    [
        ({}, 200, "OK", [], b""),
        ({"code": 404}, 404, "Not Found", [], b""),
        ({"code": 404, "reason": "Gone Fishing"}, 404, "Gone Fishing", [], b""),
        ({"reason": "Fine"}, 200, "Fine", [], b""),
        ({"code": 299}, 299, "Undefined Reason", [], b""),
        ({"code": 201.6}, 202, "Accepted", [], b""),  # doubles are rounded
        ({"code": "204"}, 204, "No Content", [], b""),  # strings convert
        ({"code": "abc"}, 0, "Undefined Reason", [], b""),  # ...to 0 when not a number
        ({"code": True}, 1, "Undefined Reason", [], b""),
        ({"headers": {"X-B": "1", "X-A": "2"}}, 200, "OK", [("X-A", "2"), ("X-B", "1")], b""),
        ({"headers": [["X-B", "1"], ["X-A", "2"]]}, 200, "OK", [("X-B", "1"), ("X-A", "2")], b""),
        ({"headers": {"X-U": "é"}}, 200, "OK", [("X-U", "\xc3\xa9")], b""),
        ({"headers": {"Content-Length": "9", "Connection": "x"}}, 200, "OK", [], b""),
        ({"body": "é"}, 200, "OK", [], "é".encode()),
        ({"body-bin": "aGk="}, 200, "OK", [], b"hi"),
        ({"body-bin": "aGk=", "body": "ignored"}, 200, "OK", [], b"hi"),
        ({"body-bin": None}, 200, "OK", [], b""),
    ],
)
def test_json_response(
    response: dict[str, Any], code: int, reason: str, headers: Headers, body: bytes
) -> None:
    r = pj({"response": response}).response
    assert (r.code, r.reason, r.headers, r.body) == (code, reason, headers, body)


@pytest.mark.parametrize(
    ("hold", "attr", "value"),
    [
        ({"channels": [], "mode": None}, "hold_mode", "response"),
        ({"channels": [], "timeout": 2}, "timeout", 5),
        ({"channels": [], "timeout": "30"}, "timeout", 30),
        ({"channels": [], "timeout": 4294967300.0}, "timeout", 5),  # int() truncation: 4
        ({"channels": [], "keep-alive": {}}, "keep_alive", KeepAlive(b"", 55, "interval")),
        (
            {"channels": [], "keep-alive": {"content-bin": "aGk=", "content": "x", "timeout": 0}},
            "keep_alive",
            KeepAlive(b"hi", 1, "interval"),
        ),
        ({"channels": [], "keep-alive": None}, "keep_alive", None),
        ({"channels": [], "meta": None}, "meta", {}),
        (
            {"channels": [{"name": "a", "prev-id": None, "filters": None}]},
            "channels",
            [Channel("a")],
        ),
    ],
)
def test_json_hold_fields(hold: dict[str, Any], attr: str, value: object) -> None:
    assert getattr(pj({"hold": hold}), attr) == value


def test_json_mixes_with_headers_like_pushpin() -> None:
    """Header instructions are read first and the JSON adds to / overrides them."""
    i = pj(
        {"hold": {"channels": [{"name": "j"}], "keep-alive": {"content": "k"}}},
        headers=[
            ("Grip-Channel", "h"),
            ("Grip-Keep-Alive", "x; mode=idle; timeout=9"),
            ("Grip-Link", "</n>; rel=next"),
            ("Grip-Status", "203 Hi"),
        ],
    )
    assert [c.name for c in i.channels] == ["h", "j"]
    assert i.keep_alive == KeepAlive(b"k", 55, "idle")
    assert i.next_link == NextLink("/n", 120)
    assert (i.response.code, i.response.reason) == (203, "Hi")


J_FAIL = "failed to parse application/grip-instruct content as JSON"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", J_FAIL),
        (b"{", J_FAIL),
        (b"1", J_FAIL),  # Qt5 only accepts an object or array at the top level
        (b'"x"', J_FAIL),
        (b"{} x", J_FAIL),
        (b'{"a":1,}', J_FAIL),
        (b'{"a":01}', J_FAIL),
        (b'{"a":"\xff"}', J_FAIL),
        (b"[" * 1025 + b"]" * 1025, J_FAIL),
        (b"[]", "instruct must be an object"),
        (b'{"hold":1}', "instruct contains 'hold' with wrong type"),
        (b'{"hold":null}', "instruct contains 'hold' with wrong type"),
        (b'{"hold":{}}', "hold does not contain 'channels'"),
        (b'{"hold":{"channels":null}}', "hold contains 'channels' with wrong type"),
        (b'{"hold":{"channels":{}}}', "hold contains 'channels' with wrong type"),
        (
            b'{"hold":{"mode":"x","channels":[]}}',
            "hold 'mode' must be set to either 'response' or 'stream'",
        ),
        (b'{"hold":{"mode":1,"channels":[]}}', "hold contains 'mode' with wrong type"),
        (b'{"hold":{"channels":["a"]}}', "channel is not an object"),
        (b'{"hold":{"channels":[{}]}}', "channel does not contain 'name'"),
        (b'{"hold":{"channels":[{"name":null}]}}', "channel contains 'name' with wrong type"),
        (
            b'{"hold":{"channels":[{"name":"a","prev-id":1}]}}',
            "channel contains 'prev-id' with wrong type",
        ),
        (
            b'{"hold":{"channels":[{"name":"a","filters":"f"}]}}',
            "channel contains 'filters' with wrong type",
        ),
        (
            b'{"hold":{"channels":[{"name":"a","filters":[1]}]}}',
            "filters contains value with wrong type",
        ),
        (b'{"hold":{"channels":[],"timeout":null}}', "hold contains 'timeout' with wrong type"),
        (b'{"hold":{"channels":[],"timeout":[]}}', "hold contains 'timeout' with wrong type"),
        (b'{"hold":{"channels":[],"timeout":-1}}', "hold contains 'timeout' with invalid value"),
        (b'{"hold":{"channels":[],"keep-alive":1}}', "hold contains 'keep-alive' with wrong type"),
        (
            b'{"hold":{"channels":[],"keep-alive":{"content":1}}}',
            "keep-alive contains 'content' with wrong type",
        ),
        (
            b'{"hold":{"channels":[],"keep-alive":{"content-bin":1}}}',
            "keep-alive contains 'content-bin' with wrong type",
        ),
        (
            b'{"hold":{"channels":[],"keep-alive":{"timeout":{}}}}',
            "keep-alive contains 'timeout' with wrong type",
        ),
        (
            b'{"hold":{"channels":[],"keep-alive":{"timeout":-5}}}',
            "keep-alive contains 'timeout' with invalid value",
        ),
        (b'{"hold":{"channels":[],"meta":[]}}', "hold contains 'meta' with wrong type"),
        (b'{"hold":{"channels":[],"meta":{"b":1,"a":2}}}', "'meta' contains 'a' with wrong type"),
        (b'{"response":1}', ""),  # Pushpin fails without a message here
        (b'{"response":{"code":null}}', "response contains 'code' with wrong type"),
        (b'{"response":{"code":1000}}', "response contains 'code' with invalid value"),
        (b'{"response":{"code":-1}}', "response contains 'code' with invalid value"),
        (b'{"response":{"reason":5}}', "response contains 'reason' with wrong type"),
        (b'{"response":{"headers":"x"}}', "response contains 'headers' with wrong type"),
        (b'{"response":{"headers":null}}', "response contains 'headers' with wrong type"),
        (b'{"response":{"headers":["x"]}}', "headers contains element with wrong type"),
        (
            b'{"response":{"headers":[["a"]]}}',
            "headers contains list with wrong number of elements",
        ),
        (b'{"response":{"headers":[[1,"v"]]}}', "header contains name element with wrong type"),
        (b'{"response":{"headers":[["n",1]]}}', "header contains value element with wrong type"),
        (b'{"response":{"headers":{"Z":1,"Y":null}}}', "headers contains 'Y' with wrong type"),
        (b'{"response":{"body-bin":1}}', "response contains 'body-bin' with wrong type"),
        (b'{"response":{"body":null}}', "response contains 'body' with wrong type"),
    ],
)
def test_json_errors(body: bytes, message: str) -> None:
    with pytest.raises(InstructError) as ei:
        parse([GI], body)
    assert str(ei.value) == message


def test_json_requires_code_200() -> None:
    with pytest.raises(
        InstructError, match=r"^response code for application/grip-instruct content must be 200$"
    ):
        parse([GI], b"{}", code=201)
    # Grip-Status does not count: the origin's own code is checked
    assert parse([GI, ("Grip-Status", "404")], b"{}").response.code == 404


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'\xef\xbb\xbf{"response":{"headers":{"a":"b"}}}', [("a", "b")]),  # BOM
        (b'{"response":{"headers":{"a":"x\ty"}}}', [("a", "x\ty")]),  # raw control char
        (b'{"response":{"headers":{"a":"\\q"}}}', [("a", "q")]),  # unknown escape
        (b'{"response":{"headers":{"a":"\\ud83d\\ude00"}}}', [("a", "\xf0\x9f\x98\x80")]),
        (b'{"response":{"headers":{"a":"\\ud800"}}}', [("a", "?")]),  # lone surrogate
        (b'{"response":{"code":.5e3,"headers":{"a":"1"}}}', [("a", "1")]),
        (b'{"response":{"headers":{"a":"1","a":"2"}}}', [("a", "2")]),  # last key wins
    ],
)
def test_json_qt_leniency(body: bytes, headers: Headers) -> None:
    """Qt5's JSON parser accepts more than RFC 8259; so must we."""
    assert parse([GI], body).response.headers == headers


def test_json_deep_nesting_limit() -> None:
    ok = b'{"x":' + b"[" * 1023 + b"]" * 1023 + b"}"
    assert parse([GI], ok).hold_mode is None


# --------------------------------------------------------------------------------------------
# Robustness: nothing but InstructError escapes, whatever the origin sends

GRIP_NAMES = [
    "Grip-Hold",
    "Grip-Channel",
    "Grip-Timeout",
    "Grip-Keep-Alive",
    "Grip-Set-Meta",
    "Grip-Status",
    "Grip-Link",
    "Grip-Expose-Headers",
    "Content-Type",
]
header_text = st.text(
    alphabet=st.sampled_from(list(' \t,;="\\<>:/x0123456789abcdefmnrt-+.%[]@\x00\xe9\xff')),
    max_size=30,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(GRIP_NAMES), header_text), max_size=6), st.binary())
def test_fuzz_headers_only_instruct_error(headers: Headers, body: bytes) -> None:
    try:
        i = parse(headers, body)
    except InstructError:
        return
    assert i.timeout >= 5
    assert 0 <= i.response.code <= 999
    assert all(not k.lower().startswith("grip-") for k, _ in i.response.headers) or any(
        k.lower() == "content-type" for k, _ in headers
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["hold", "response", "mode", "channels", "name", "prev-id", "filters", "timeout",
     "keep-alive", "content", "content-bin", "meta", "code", "reason", "headers", "body",
     "body-bin"]
)  # fmt: skip
instruct_like = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(instruct_like)
def test_fuzz_json_only_instruct_error(doc: object) -> None:
    try:
        body = json.dumps(doc).encode()
    except (ValueError, OverflowError):
        return
    try:
        parse([GI], body)
    except InstructError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_fuzz_json_bytes_only_instruct_error(body: bytes) -> None:
    try:
        parse([GI], b'{"response":' + body)
    except InstructError:
        pass


# --------------------------------------------------------------------------------------------
# Differential leg: compare the Qt primitives with Qt5 itself (the library Pushpin 1.36 uses).

_QT_LIB = "/lib/x86_64-linux-gnu/libQt5Core.so.5.15"


class _Qt:
    """Minimal ctypes access to libQt5Core 5.15 (x86-64 Itanium ABI, QArrayData layout)."""

    def __init__(self) -> None:
        q = ctypes.CDLL(_QT_LIB)
        self.ba_ctor = q._ZN10QByteArrayC1EPKci
        self.ba_ctor.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.to_int = q._ZNK10QByteArray5toIntEPbi
        self.to_int.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_bool), ctypes.c_int]
        self.to_int.restype = ctypes.c_int
        self.from_b64 = q._ZN10QByteArray10fromBase64ERKS_
        self.from_b64.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.from_json = q._ZN13QJsonDocument8fromJsonERK10QByteArrayP15QJsonParseError
        self.from_json.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        # The QByteArray/QJsonDocument temporaries are leaked on purpose (a test process).

    def ba(self, b: bytes) -> ctypes.Array[ctypes.c_char]:
        buf = ctypes.create_string_buffer(16)
        self.ba_ctor(buf, b, len(b))
        return buf

    def toint(self, b: bytes) -> int | None:
        ok = ctypes.c_bool()
        v = int(self.to_int(self.ba(b), ctypes.byref(ok), 10))
        return v if ok.value else None

    def b64(self, b: bytes) -> bytes:
        out = ctypes.create_string_buffer(16)
        self.from_b64(out, self.ba(b))
        d = ctypes.c_void_p.from_buffer(out).value
        assert d is not None
        size = ctypes.c_int.from_address(d + 4).value
        offset = ctypes.c_longlong.from_address(d + 16).value
        return ctypes.string_at(d + offset, size)

    def json_ok(self, b: bytes) -> bool:
        out = ctypes.create_string_buffer(64)
        err = (ctypes.c_int * 2)()
        self.from_json(out, self.ba(b), err)
        return err[1] == 0


qt_only = pytest.mark.skipif(not os.path.exists(_QT_LIB), reason="needs Pushpin's libQt5Core 5.15")


@pytest.fixture(scope="module")
def qt() -> _Qt:
    return _Qt()


@pytest.mark.pushpin
@qt_only
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=" \t\n\v\f\r+-0123456789x\x00a", max_size=14))
def test_qt_oracle_to_int(qt: _Qt, s: str) -> None:
    """Grip-Timeout / keep-alive / link timeouts use QByteArray::toInt."""
    expected = qt.toint(s.encode("latin-1"))
    got = None
    try:
        got = parse([("Grip-Timeout", s)]).timeout
    except InstructError as e:
        assert expected is None or expected < 0, str(e)
        return
    assert expected is not None
    assert got == max(expected, 5)


@pytest.mark.pushpin
@qt_only
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=24))
def test_qt_oracle_base64(qt: _Qt, b: bytes) -> None:
    assert decode_keep_alive_data(b.decode("latin-1"), "base64") == qt.b64(b)


@pytest.mark.pushpin
@qt_only
@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=' \t\n\r{}[]",:0123456789.eE+-\\ntrufalsu\x00\xe9', max_size=14))
def test_qt_oracle_json_acceptance(qt: _Qt, s: str) -> None:
    body = s.encode()
    try:
        parse([GI], body)
        accepted = True
    except InstructError as e:
        accepted = str(e) != J_FAIL
    assert accepted == qt.json_ok(body), body


# --------------------------------------------------------------------------------------------
# Header injection through the JSON form (F21). Origin header text comes through httptools,
# which refuses CR, LF and NUL; JSON text does not, so the parser checks it (RFC 9110 5.1,
# 5.5). Pushpin 1.36 does not check; gripd answers 502 (docs/compatibility.md).


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"headers": {"X": "a\r\nSet-Cookie: e=1"}}, "headers contains 'X' with invalid value"),
        ({"headers": [["X", "a\nb"]]}, "headers contains 'X' with invalid value"),
        ({"headers": {"X": "a\x00b"}}, "headers contains 'X' with invalid value"),
        ({"headers": {"X\r\nY": "1"}}, "headers contains invalid name 'X\\r\\nY'"),
        ({"headers": [["X Y", "1"]]}, "headers contains invalid name 'X Y'"),
        ({"headers": [["", "1"]]}, "headers contains invalid name ''"),
        (
            {"code": 200, "reason": "OK\r\nSet-Cookie: e=1"},
            "response contains 'reason' with invalid value",
        ),
        ({"reason": "\x00"}, "response contains 'reason' with invalid value"),
    ],
)
def test_json_response_header_injection(response: dict[str, Any], message: str) -> None:
    with pytest.raises(InstructError) as ei:
        pj({"response": response})
    assert str(ei.value) == message


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ({"name": "a\r\nX: y"}, "channel contains 'name' with invalid value"),
        ({"name": "a", "prev-id": "1\nX: y"}, "channel contains 'prev-id' with invalid value"),
        ({"name": "a", "prev-id": "\x00"}, "channel contains 'prev-id' with invalid value"),
    ],
)
def test_json_channel_header_injection(channel: dict[str, Any], message: str) -> None:
    """Channel names and prev-ids go back to the origin in ``Grip-Last`` (F23, F25)."""
    with pytest.raises(InstructError) as ei:
        pj({"hold": {"channels": [channel]}})
    assert str(ei.value) == message


def test_json_header_text_that_is_allowed() -> None:
    ins = pj(
        {
            "hold": {"channels": [{"name": "a b\té", "prev-id": "p 1"}]},
            "response": {"reason": "Fine\té", "headers": [["X-A", "v\t é"]], "body": "\r\n\x00"},
        }
    )
    assert ins.response.reason == "Fine\té".encode().decode("latin-1")
    assert ins.response.headers == [("X-A", "v\t é".encode().decode("latin-1"))]
    assert ins.response.body == b"\r\n\x00"
    assert ins.channels[0].name == "a b\té"


@pytest.mark.parametrize(
    ("link", "url"),
    [
        ("</n ext\t2?q=1 2>", "/n%20ext%092?q=1%202"),
        ("</a^b|c{d}`e\\f>", "/a%5Eb%7Cc%7Bd%7D%60e%5Cf"),
        ("</\xc3\xa9>", "/%C3%A9"),  # header text: the UTF-8 bytes as latin-1
        ("</a%20b%41?x=%2F>", "/a%20b%41?x=%2F"),  # existing escapes kept
        ("<http://h:8080/p?q#f>", "http://h:8080/p?q#f"),
    ],
)
def test_grip_link_is_encoded_for_the_request_line(link: str, url: str) -> None:
    """F25: what QUrl encodes (observed with Pushpin 1.36) is percent-encoded, so the link's
    GET request line cannot be split by a space or tab."""
    i = parse([("Grip-Hold", "stream"), ("Grip-Link", f"{link}; rel=next, {link}; rel=gone")])
    assert i.next_link == NextLink(url, 120)
    assert i.other_links == [("gone", url)]

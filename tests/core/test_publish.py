"""Publish item validation (F29, F30), the control API routing (F28), http-response apply (F22).

Every expected error string below was checked against a running Pushpin 1.36 control API.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.errors import PublishError
from gripd.core.http import HttpResponse
from gripd.core.publish import (
    HttpResponseFormat,
    PublishItem,
    apply_body_patch,
    apply_http_response,
    handle_control_request,
    parse_item,
    parse_publish_body,
)
from gripd.core.qtcompat import _JsonError, _LenientJson, read_json
from tests.core.test_itemwire import full_item


def _hr(**fmt: Any) -> dict[str, Any]:
    return {"items": [{"channel": "a", "formats": {"http-response": fmt}}]}


def _hs(**fmt: Any) -> dict[str, Any]:
    return {"items": [{"channel": "a", "formats": {"http-stream": fmt}}]}


def _ws(**fmt: Any) -> dict[str, Any]:
    return {"items": [{"channel": "a", "formats": {"ws-message": fmt}}]}


def _item(**extra: Any) -> dict[str, Any]:
    return {"items": [{"channel": "a", "formats": {"ws-message": {"content": "x"}}, **extra}]}


WS_X = {"ws-message": {"content": "x"}}
HR = "Invalid format: 'http-response'"
HS = "Invalid format: 'http-stream'"
WS = "Invalid format: 'ws-message'"
PI = "Invalid format: publish item object"

# (body, expected API message or None for "Published")  -- F28/F29/F30
BODY_CASES: list[tuple[Any, str | None]] = [
    ({"items": {}}, "Invalid format: object contains 'items' with wrong type"),
    ({"items": None}, "Invalid format: object contains 'items' with wrong type"),
    ({"x": 1}, "Invalid format: object does not contain 'items'"),
    ([], "Invalid format."),
    ({"items": []}, None),
    ({"items": [1]}, f"{PI} is not an object"),
    ({"items": [{}]}, f"{PI} does not contain 'channel'"),
    ({"items": [{"channel": 5}]}, f"{PI} contains 'channel' with wrong type"),
    ({"items": [{"channel": None, "formats": WS_X}]}, f"{PI} contains 'channel' with wrong type"),
    ({"items": [{"channel": "a"}]}, "Invalid format: no formats specified"),
    ({"items": [{"channel": "a", "formats": {}}]}, "Invalid format: no formats specified"),
    ({"items": [{"channel": "a", "formats": None}]}, f"{PI} contains 'formats' with wrong type"),
    ({"items": [{"channel": "a", "formats": []}]}, f"{PI} contains 'formats' with wrong type"),
    ({"items": [{"channel": "a", "formats": {"foo": {}}}]}, None),
    (
        {"items": [{"channel": "a", "id": 3, "formats": WS_X}]},
        f"{PI} contains 'id' with wrong type",
    ),
    (
        {"items": [{"channel": "a", "id": None, "formats": WS_X}]},
        f"{PI} contains 'id' with wrong type",
    ),
    (
        {"items": [{"channel": "a", "prev-id": [], "formats": WS_X}]},
        f"{PI} contains 'prev-id' with wrong type",
    ),
    ({"items": [{"channel": "a", "formats": {"http-stream": 1}}]}, f"{HS} is not an object"),
    (_hs(), f"{HS} does not contain 'content' or 'content-bin'"),
    (_hs(action="bogus"), "Invalid format: "),
    (_hs(action=5), f"{HS} contains 'action' with wrong type"),
    (_hs(content=5), f"{HS} contains 'content' with wrong type"),
    (_hs(**{"content-bin": 5}), f"{HS} contains 'content-bin' with wrong type"),
    (
        _hs(content="x", **{"content-filters": "x"}),
        f"{HS} contains 'content-filters' with wrong type",
    ),
    (
        _hs(content="x", **{"content-filters": [1]}),
        "Invalid format: content-filters contains element with wrong type",
    ),
    (_hs(action="hint", content=7), None),
    (_hs(action="close"), None),
    (_hr(), f"{HR} does not contain 'body', 'body-bin', or 'body-patch'"),
    (_hr(code="abc", body=""), None),
    (_hr(code=[], body=""), f"{HR} contains 'code' with wrong type"),
    (_hr(code={}, body=""), f"{HR} contains 'code' with wrong type"),
    (_hr(code=None, body=""), f"{HR} contains 'code' with wrong type"),
    (_hr(code=1000, body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code=-1, body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code=True, body=""), None),
    (_hr(code=200, reason=3, body=""), f"{HR} contains 'reason' with wrong type"),
    (_hr(headers=3, body=""), f"{HR} contains 'headers' with wrong type"),
    (_hr(headers=[3], body=""), "Invalid format: headers contains element with wrong type"),
    (
        _hr(headers=[["a"]], body=""),
        "Invalid format: headers contains list with wrong number of elements",
    ),
    (
        _hr(headers=[[1, "a"]], body=""),
        "Invalid format: header contains name element with wrong type",
    ),
    (
        _hr(headers=[["a", 1]], body=""),
        "Invalid format: header contains value element with wrong type",
    ),
    (_hr(headers={"X": 1}, body=""), "Invalid format: headers contains 'X' with wrong type"),
    (_hr(body=1), f"{HR} contains 'body' with wrong type"),
    (_hr(body=None), f"{HR} contains 'body' with wrong type"),
    (_hr(**{"body-bin": 1}), f"{HR} contains 'body-bin' with wrong type"),
    (_hr(**{"body-patch": 1}), f"{HR} contains 'body-patch' with wrong type"),
    (_hr(**{"body-patch": None}), f"{HR} contains 'body-patch' with wrong type"),
    (_hr(action="close"), None),
    (_ws(), f"{WS} does not contain 'content' or 'content-bin'"),
    (_ws(type="ping"), None),
    (_ws(type="foo"), f"{WS} contains 'type' with unknown value"),
    (_ws(type=1), f"{WS} contains 'type' with wrong type"),
    (_ws(**{"content-bin": 1}), f"{WS} contains 'content-bin' with wrong type"),
    (_ws(content=1), f"{WS} contains 'content' with wrong type"),
    (_ws(action="close", code="x"), None),
    (_ws(action="close", code=-5), f"{WS} contains 'code' with invalid value"),
    (_ws(action="close", code=[]), f"{WS} contains 'code' with wrong type"),
    (_ws(action="close", reason=5), f"{WS} contains 'reason' with wrong type"),
    (_ws(action="refresh"), "Invalid format: "),  # refresh arrives in Pushpin 1.38
    (_item(meta=1), f"{PI} contains 'meta' with wrong type"),
    (_item(meta={"k": 1}), "Invalid format: 'meta' contains 'k' with wrong type"),
    (_item(size="x"), None),
    (_item(size="9" * 5000), None),  # Qt toInt: not ok, 0 (was a ValueError: fuzzing find)
    (_item(size=[]), f"{PI} contains 'size' with wrong type"),
    (_item(size=None), f"{PI} contains 'size' with wrong type"),
    (_item(size=-1), f"{PI} contains 'size' with invalid value"),
    (_item(size="-1"), f"{PI} contains 'size' with invalid value"),
    (_item(size=4294967295), f"{PI} contains 'size' with invalid value"),
    (_item(size=-0.5), None),
    (_item(size=-0.6), f"{PI} contains 'size' with invalid value"),
    (_item(**{"no-seq": 1}), f"{PI} contains 'no-seq' with wrong type"),
    (_item(**{"no-seq": None}), f"{PI} contains 'no-seq' with wrong type"),
    (
        {"items": [{"channel": "a", "http-stream": {"content": 1}}]},
        f"{HS} contains 'content' with wrong type",
    ),
    # "formats" present: format keys on the item itself are ignored
    ({"items": [{"channel": "a", "formats": WS_X, "http-stream": {"content": 1}}]}, None),
    (
        {"items": [{"channel": "a", "formats": WS_X}, {"channel": 1}]},
        f"{PI} contains 'channel' with wrong type",
    ),
    ({"items": [{"channel": "", "formats": WS_X}]}, None),
    # Qt's QVariant::toInt: strings parse as 64-bit decimal (else 0), truncated to 32 bits;
    # doubles round half up.
    (_hr(code="1000", body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code=" 1000 ", body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code="+1000", body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code="-1", body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code="1e3", body=""), None),
    (_hr(code="0x3e8", body=""), None),
    (_hr(code="1000.0", body=""), None),
    (_hr(code="", body=""), None),
    (_hr(code="10000000000", body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code="9" * 5000, body=""), None),  # past int()'s digit limit: 0, as Qt (fuzzing find)
    (_hr(code="4294967496", body=""), None),
    (_hr(code=4294967496, body=""), None),
    (_hr(code=4294967496.0, body=""), None),
    (_hr(code=2147483648.0, body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code=-2147483649.0, body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code=2**63, body=""), None),
    (_hr(code=1e300, body=""), None),
    (_hr(code=999.49, body=""), None),
    (_hr(code=999.5, body=""), f"{HR} contains 'code' with invalid value"),
    (_hr(code=-0.5, body=""), None),
    (_hr(code=-0.6, body=""), f"{HR} contains 'code' with invalid value"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), BODY_CASES, ids=[json.dumps(c[0])[:300] for c in BODY_CASES]
)
def test_publish_body_errors_match_pushpin(doc: Any, expected: str | None) -> None:
    body = json.dumps(doc).encode()
    if expected is None:
        parse_publish_body(body)
    else:
        with pytest.raises(PublishError) as ei:
            parse_publish_body(body)
        assert str(ei.value) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"abc",
        b"5",
        b'"x"',
        b"null",
        b'{"items":[],"a":NaN}',
        b'{"items":[]}x',
        b'{"a":"\xff"}',
    ],
)
def test_body_not_valid_json(body: bytes) -> None:
    with pytest.raises(PublishError, match=r"^Body is not valid JSON\.$"):
        parse_publish_body(body)


def test_body_bom_and_whitespace_accepted_and_duplicate_key_last_wins() -> None:
    assert parse_publish_body(b'\xef\xbb\xbf {"items":[]} ') == []
    with pytest.raises(PublishError, match="'items' with wrong type"):
        parse_publish_body(b'{"items":[], "items": 5}')


def test_full_item_fields() -> None:
    (item,) = parse_publish_body(
        json.dumps(
            {
                "items": [
                    {
                        "channel": "c",
                        "id": "2",
                        "prev-id": "1",
                        "meta": {"sender": "me"},
                        "size": "12",
                        "no-seq": True,
                        "formats": {
                            "http-response": {
                                "code": 201,
                                "headers": {"Zed": "1", "Alpha": "2"},
                                "body-bin": "aGk=",
                                "body": "ignored",
                                "content-filters": ["skip-self"],
                            },
                            "http-stream": {"content-bin": "aGk"},  # missing padding is fine
                            "ws-message": {"content-bin": "AAE="},
                        },
                    }
                ]
            }
        ).encode()
    )
    assert (item.channel, item.id, item.prev_id, item.size, item.no_seq) == (
        "c",
        "2",
        "1",
        12,
        True,
    )
    assert item.meta == {"sender": "me"}
    hr = item.http_response
    assert hr is not None
    assert (hr.code, hr.reason, hr.body, hr.content_filters) == (201, None, b"hi", ["skip-self"])
    assert hr.headers == [("Alpha", "2"), ("Zed", "1")]  # a JSON object iterates in key order
    assert item.http_stream is not None and item.http_stream.content == b"hi"
    ws = item.ws_message
    assert ws is not None and (ws.type, ws.content) == ("binary", b"\x00\x01")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"content": "é"}, ("text", "é".encode())),
        ({"content": "x", "type": "binary"}, ("binary", b"x")),
        ({"content-bin": "eA==", "type": "text"}, ("text", b"x")),
        ({"type": "pong"}, ("pong", b"")),
        ({"content-bin": "eA==", "content": "y"}, ("binary", b"x")),
    ],
)
def test_ws_message_types(fmt: dict[str, Any], expected: tuple[str, bytes]) -> None:
    item = parse_item({"channel": "c", "formats": {"ws-message": fmt}})
    assert item.ws_message is not None
    assert (item.ws_message.type, item.ws_message.content) == expected


def test_ws_close_and_defaults() -> None:
    item = parse_item(
        {"channel": "c", "ws-message": {"action": "close", "code": 4001, "reason": "bye"}}
    )
    assert item.ws_message is not None
    assert (item.ws_message.action, item.ws_message.code, item.ws_message.reason) == (
        "close",
        4001,
        "bye",
    )
    item = parse_item(
        {"channel": "c", "http-response": {"body": "x"}, "http-stream": {"action": "hint"}}
    )
    assert item.http_response is not None and item.http_response.code == 200
    assert item.http_stream is not None and item.http_stream.action == "hint"
    assert item.ws_message is None


def test_go_pubcontrol_formats_on_item() -> None:
    item = parse_item({"channel": "c", "http-stream": {"content": "d"}, "id": "1"})
    assert item.http_stream is not None and item.http_stream.content == b"d"


def test_binary_tnetstring_values() -> None:
    raw = {
        b"channel": b"ignored",
        b"formats": {
            b"http-stream": {b"content": b"\xff\x00"},
            b"ws-message": {b"content-bin": b"\x01\x02"},
            b"http-response": {b"body": b"b", b"headers": [[b"X", b"1"]], b"code": 202},
        },
        b"meta": {b"k": b"v"},
    }
    item = parse_item(raw, binary=True, channel="sub")
    assert item.channel == "sub"  # the SUB frame's channel wins
    assert item.http_stream is not None and item.http_stream.content == b"\xff\x00"
    assert item.ws_message is not None and item.ws_message.type == "binary"
    assert item.ws_message.content == b"\x01\x02"
    assert item.http_response is not None and item.http_response.headers == [("X", "1")]
    assert item.meta == {"k": "v"}


@pytest.mark.parametrize(
    ("fmts", "message"),
    [
        (
            {b"http-response": {b"body-bin": b"aGk="}},
            "'http-response' does not contain 'body' or 'body-patch'",
        ),
        ({b"http-stream": {b"content-bin": b"aGk="}}, "'http-stream' does not contain 'content'"),
        (
            {b"ws-message": {b"content-bin": "str"}},
            "'ws-message' contains 'content-bin' with wrong type",
        ),
    ],
)
def test_binary_errors(fmts: dict[bytes, Any], message: str) -> None:
    with pytest.raises(PublishError) as ei:
        parse_item({b"channel": b"c", b"formats": fmts}, binary=True)
    assert str(ei.value) == message


def test_empty_sub_channel_falls_back_to_item() -> None:
    assert parse_item({"channel": "own", "formats": WS_X}, channel="").channel == "own"
    with pytest.raises(PublishError, match="does not contain 'channel'"):
        parse_item({"formats": WS_X}, channel="")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=12,
)
format_keys = st.sampled_from(
    [
        "action",
        "code",
        "reason",
        "headers",
        "body",
        "body-bin",
        "body-patch",
        "content",
        "content-bin",
        "type",
        "content-filters",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "channel",
                "id",
                "prev-id",
                "formats",
                "meta",
                "size",
                "no-seq",
                "http-stream",
                "ws-message",
                "http-response",
            ]
        ),
        json_values
        | st.dictionaries(
            st.sampled_from(["http-response", "http-stream", "ws-message"]),
            st.dictionaries(format_keys, json_values),
        ),
    )
)
def test_parse_item_only_raises_publish_error(obj: dict[str, Any]) -> None:
    try:
        parse_item(obj)
    except PublishError:
        pass


# ---- apply_http_response (F22, F20) ----

HELD = HttpResponse(
    200, "OK", [("X-Custom", "a"), ("Content-Type", "text/plain"), ("X-P", "old")], b"timeout\n"
)


def test_apply_merges_headers_by_name_and_defaults() -> None:
    fmt = HttpResponseFormat(code=201, headers=[("x-p", "1"), ("Grip-Foo", "z")], body=b"hi\n")
    out = apply_http_response(HELD, fmt)
    assert (out.code, out.reason, out.body) == (201, "Created", b"hi\n")
    assert out.headers == [("X-Custom", "a"), ("Content-Type", "text/plain"), ("x-p", "1")]
    out = apply_http_response(HELD, HttpResponseFormat(code=299, reason="Fine", body=b""))
    assert (out.code, out.reason) == (299, "Fine")
    assert (
        apply_http_response(HELD, HttpResponseFormat(code=299, body=b"")).reason
        == "Undefined Reason"
    )


def test_apply_expose_headers_removes_listed() -> None:
    fmt = HttpResponseFormat(
        headers=[("Grip-Expose-Headers", "x-custom, X-New"), ("X-New", "n"), ("X-Keep", "k")],
        body=b"",
    )
    out = apply_http_response(HELD, fmt)
    assert out.headers == [("Content-Type", "text/plain"), ("X-P", "old"), ("X-Keep", "k")]
    assert out.code == 200 and out.reason == "OK"


@pytest.mark.parametrize(
    ("held", "patch", "expected"),
    [
        (
            b'{"b": 1, "a": [1, 2]}\n',
            [{"op": "add", "path": "/c", "value": "é"}],
            b'{"a":[1,2],"b":1,"c":"\xc3\xa9"}\n',
        ),
        (b'{"n": 1.0}\r\n', [{"op": "replace", "path": "/n", "value": 2.5}], b'{"n":2.5}\r\n'),
        (
            b'{"n": 1.0}',
            [{"op": "add", "path": "/m", "value": 1e16}],
            b'{"m":10000000000000000,"n":1}',
        ),
        (b"[1,2]", [{"op": "remove", "path": "/0"}], b"[2]"),
        (b'{"x":{"y":1}}', [{"op": "move", "from": "/x/y", "path": "/z"}], b'{"x":{},"z":1}'),
        (b'{"s":"a\\u0001\\n"}', [], b'{"s":"a\\u0001\\n"}'),
    ],
)
def test_body_patch(held: bytes, patch: list[Any], expected: bytes) -> None:
    assert apply_body_patch(held, patch) == expected
    out = apply_http_response(HttpResponse(body=held), HttpResponseFormat(body_patch=patch))
    assert out.body == expected


@pytest.mark.parametrize(
    ("held", "patch"),
    [
        (b"not json", []),
        (b'"scalar"', []),
        (b"{}", [{"op": "remove", "path": "/missing"}]),
        (b"{}", [{"op": "test", "path": "/a", "value": 1}]),
        (b"{}", [{"op": "bogus", "path": "/a"}]),
        (b"{}", [5]),
        (b'{"a":1}', [{"op": "replace", "path": "", "value": 3}]),
    ],
)
def test_body_patch_failure_raises(held: bytes, patch: list[Any]) -> None:
    with pytest.raises(PublishError):
        apply_http_response(HttpResponse(body=held), HttpResponseFormat(body_patch=patch))


# ---- handle_control_request (F28) ----

PUB = b'{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}'


@pytest.mark.parametrize(
    ("method", "uri", "headers", "body", "code", "text", "ctype"),
    [
        ("GET", "/", [], b"", 200, "Pushpin API\n", "text/plain"),
        ("POST", "//", [], b"", 200, "Pushpin API\n", "text/plain"),
        ("GET", "/publish", [], b"", 405, "Method not allowed: GET.\n", "text/plain"),
        ("PUT", "/recover/", [], b"", 405, "Method not allowed: PUT.\n", "text/plain"),
        ("POST", "/publish?x=1", [], PUB, 404, "Not Found\n", "text/plain"),
        ("POST", "/publish/", [], PUB, 200, "Published\n", "text/plain"),
        (
            "POST",
            "/publish",
            [("accept", "application/json")],
            PUB,
            200,
            '{"message":"Published"}\n',
            "application/json",
        ),
        (
            "POST",
            "/publish",
            [("Accept", "application/json, text/plain")],
            PUB,
            200,
            "Published\n",
            "text/plain",
        ),
        (
            "POST",
            "/publish",
            [("Accept", "text/plain;q=0.1, application/*")],
            PUB,
            200,
            '{"message":"Published"}\n',
            "application/json",
        ),
        (
            "POST",
            "/publish",
            [("Accept", "application/json")],
            b"[]",
            400,
            "Invalid format.\n",
            "text/plain",
        ),
        (
            "POST",
            "/nope",
            [("Accept", "TEXT/PLAIN")],
            b"",
            406,
            "Not Acceptable. Supported formats are text/plain and application/json.\n",
            "text/plain",
        ),
        (
            "POST",
            "/",
            [("Accept", "")],
            b"",
            406,
            "Not Acceptable. Supported formats are text/plain and application/json.\n",
            "text/plain",
        ),
        ("POST", "/recover", [("Accept", "*/*")], b"", 200, "Updated\n", "text/plain"),
    ],
)
def test_control_routing(
    method: str,
    uri: str,
    headers: list[tuple[str, str]],
    body: bytes,
    code: int,
    text: str,
    ctype: str,
) -> None:
    reply = handle_control_request(method, uri, headers, body)
    assert (reply.code, reply.body.decode(), reply.headers[-1]) == (
        code,
        text,
        ("Content-Type", ctype),
    )
    assert reply.recover == (code == 200 and uri.startswith("/recover"))
    assert (reply.items is not None) == (code == 200 and uri.startswith("/publish"))
    if code == 405:
        assert reply.headers[0] == ("Allow", "POST")


def test_control_log_line() -> None:
    reply = handle_control_request("POST", "/publish/", [], PUB)
    assert reply.log == "control: POST /publish/ code=200 10 items=1"
    assert reply.items is not None and reply.items[0].channel == "c"
    assert handle_control_request("GET", "/x", [], b"").log == "control: GET /x code=404 10"


# --- header injection (response splitting) -------------------------------------------------------
# Pushpin 1.36 accepts all of these and writes them raw to the held client (checked by running
# it); gripd refuses the item with a 400 naming the field (docs/compatibility.md).

SPLIT_CASES: list[tuple[dict[str, Any], str]] = [
    (
        _hr(headers={"X": "a\r\nSet-Cookie: evil=1"}, body="b"),
        "Invalid format: headers contains 'X' with invalid value",
    ),
    (
        _hr(headers={"X": "a\rb"}, body="b"),
        "Invalid format: headers contains 'X' with invalid value",
    ),
    (
        _hr(headers={"X": "a\nb"}, body="b"),
        "Invalid format: headers contains 'X' with invalid value",
    ),
    (
        _hr(headers={"X": "a\x00b"}, body="b"),
        "Invalid format: headers contains 'X' with invalid value",
    ),
    (
        _hr(headers=[["X", "a\r\nSet-Cookie: evil=1"]], body="b"),
        "Invalid format: headers contains 'X' with invalid value",
    ),
    (
        _hr(headers={"X\r\nSet-Cookie": "evil=1"}, body="b"),
        "Invalid format: headers contains invalid name 'X\\r\\nSet-Cookie'",
    ),
    (
        _hr(headers=[["X Y", "1"]], body="b"),
        "Invalid format: headers contains invalid name 'X Y'",
    ),
    (_hr(headers={"": "1"}, body="b"), "Invalid format: headers contains invalid name ''"),
    (
        _hr(headers={"X:": "1"}, body="b"),
        "Invalid format: headers contains invalid name 'X:'",
    ),
    (
        _hr(reason="OK\r\nSet-Cookie: evil=1", body="b"),
        f"{HR} contains 'reason' with invalid value",
    ),
    (_hr(reason="O\x00K", body="b"), f"{HR} contains 'reason' with invalid value"),
    (
        {"items": [{"channel": "a", "id": "1\r\nX: y", "formats": WS_X}]},
        f"{PI} contains 'id' with invalid value",
    ),
]


@pytest.mark.parametrize(("doc", "message"), SPLIT_CASES)
def test_header_injection_rejected(doc: dict[str, Any], message: str) -> None:
    """F28/F30: CR, LF or NUL in a header value, reason or item id, or a header name that is
    not an RFC 9110 token, fails the whole request with a 400 naming the field."""
    with pytest.raises(PublishError) as ei:
        parse_publish_body(json.dumps(doc).encode())
    assert str(ei.value) == message
    reply = handle_control_request("POST", "/publish", [], json.dumps(doc).encode())
    assert (reply.code, reply.body.decode(), reply.items) == (400, message + "\n", None)


def test_header_injection_rejects_whole_batch() -> None:
    good = {"channel": "a", "formats": {"http-response": {"body": "ok"}}}
    bad = {"channel": "a", "formats": {"http-response": {"headers": {"X": "\n"}, "body": "b"}}}
    reply = handle_control_request(
        "POST", "/publish", [], json.dumps({"items": [good, bad]}).encode()
    )
    assert reply.code == 400 and reply.items is None


def test_header_injection_rejected_in_tnetstring_items() -> None:
    """F31: the ZeroMQ inputs and the command socket share ``parse_item``."""
    fmt = {b"http-response": {b"headers": {b"X": b"a\r\nSet-Cookie: e=1"}, b"body": b"b"}}
    with pytest.raises(PublishError, match="headers contains 'X' with invalid value"):
        parse_item({b"channel": b"c", b"formats": fmt}, binary=True)
    fmt = {b"http-response": {b"reason": b"OK\nX: y", b"body": b"b"}}
    with pytest.raises(PublishError, match="contains 'reason' with invalid value"):
        parse_item({b"channel": b"c", b"formats": fmt}, binary=True)


def test_header_text_that_is_allowed() -> None:
    """Tabs, spaces, obs-text and other tchars stay allowed; content bytes are not headers."""
    item = parse_item(
        {
            "channel": "a",
            "id": "id 1",
            "formats": {
                "http-response": {
                    "reason": "Fine\tReason é",
                    "headers": [["X-a_b.c!#$%&'*+^`|~9", "v\t1 é"]],
                    "body": "a\r\nb\x00",
                },
                "http-stream": {"content": "x\r\n\r\ny"},
                "ws-message": {"content": "\r\n\x00"},
            },
        }
    )
    assert item.http_response is not None
    assert item.http_response.headers == [("X-a_b.c!#$%&'*+^`|~9", "v\t1 é")]
    assert item.http_response.reason == "Fine\tReason é"


def test_tnetstring_huge_size_is_zero_not_a_crash() -> None:
    """F29: a tnetstring ``size`` past Python's int() digit limit reads as Qt toInt's 0."""
    item = parse_item(
        {b"channel": b"a", b"formats": {b"http-stream": {b"content": b""}}, b"size": b"9" * 5000},
        binary=True,
    )
    assert item.size == 0


def test_error_naming_a_lone_surrogate_key_is_a_400() -> None:
    """F28: the 400 message quotes a JSON key that is a lone surrogate; Qt's toUtf8 writes '?'
    for it, so the reply is encodable (it was a UnicodeEncodeError, i.e. a 500)."""
    body = b'{"items":[{"channel":"a","formats":{"http-response":{"headers":{"\\ude00":1}}}}]}'
    reply = handle_control_request("POST", "/publish", [], body)
    assert reply.code == 400
    assert reply.body == b"Invalid format: headers contains '?' with wrong type\n"


def test_items_pickle_by_value() -> None:
    """The hub pickles items to its workers: every field survives, in a fresh object."""
    item = full_item()
    back = pickle.loads(pickle.dumps([item, PublishItem(channel="c")], protocol=5))
    assert back == [item, PublishItem(channel="c")]
    assert back[0] is not item and back[0].meta is not item.meta


# --- The publish body's JSON, as Pushpin's Qt reads it (F28) -------------------------------------
# What a running Pushpin 1.36 did with each body (2026-12-06): raw control characters, ``.5``, a
# BOM and a lone surrogate escape (sent on as "?") are published; the rest are refused.

_ITEM = b'{"channel":"c","formats":{"http-stream":{"content":"%s"}}}'


@pytest.mark.parametrize(
    ("body", "content"),
    [
        (b'{"items":[' + _ITEM % b"c\x01x\\n" + b"]}", b"c\x01x\n"),  # a raw control character
        (b'{"items":[' + _ITEM % b"s\\ud800\\n" + b"]}", b"s?\n"),  # a lone surrogate escape
        (b'\xef\xbb\xbf{"items":[' + _ITEM % b"b\\n" + b"]}", b"b\n"),  # a UTF-8 BOM
        (b'{"items":[{"channel":"c","size":.5,"formats":{"http-stream":{"content":"d"}}}]}', b"d"),
    ],
)
def test_publish_body_is_read_as_qt_reads_it(body: bytes, content: bytes) -> None:
    (item,) = parse_publish_body(body)
    assert item.http_stream is not None and item.http_stream.content == content


@pytest.mark.parametrize(
    "body",
    [
        b'{"items":[],"a":NaN}',
        b'{"items":[],"a":1e400}',  # beyond a double
        b'{"items":["\xff"]}',  # bad UTF-8
        b'\xef\xbb\xbf\xef\xbb\xbf{"items":[]}',  # a second BOM
        b'{"items":[]} x',
        b"[" * 5000 + b"]" * 5000,
        b"",
    ],
)
def test_publish_body_qt_refuses_is_not_valid_json(body: bytes) -> None:
    with pytest.raises(PublishError, match=r"^Body is not valid JSON\.$"):
        parse_publish_body(body)


def _norm(v: object) -> object:
    """A JSON value with every number as a double, as Qt holds them (msgspec keeps integers)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list):
        return [_norm(x) for x in v]
    assert isinstance(v, dict)
    return [(k, _norm(x)) for k, x in v.items()]  # key order counts


def _qt_either(fn: Any, body: bytes) -> object:
    try:
        return _norm(fn(body))
    except (ValueError, IndexError, OverflowError, _JsonError):  # how the Qt grammar's fails
        return "refused"


@settings(max_examples=300)
@given(json_values, st.booleans())
def test_msgspec_reads_what_it_reads_as_the_qt_grammar_does(
    value: object, ascii_only: bool
) -> None:
    """``read_json`` takes msgspec's value when msgspec reads the body: the same as the Qt
    grammar's for any JSON document (numbers compared as doubles)."""
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    qt = _qt_either(lambda b: _LenientJson(b).parse(), body)
    if isinstance(value, dict | list) or qt != "refused":  # Qt takes no scalar at the top
        assert _qt_either(read_json, body) == qt

"""Tests for gripd.core.wscontrol: GRIP WebSocket control messages (F39), the grip extension
(F37/F41) and origin message classification (F38).

Expected values and error texts come from Pushpin 1.36 src/handler/wscontrolmessage.cpp, the
defaults in src/handler/engine.cpp, and wsproxysession.cpp's getExtension/parseParams. The
"content-bin without message-type is text" quirk was checked against a running 1.36.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.errors import GripError, InstructError
from gripd.core.wscontrol import (
    ControlMessage,
    Detach,
    FlushDelayed,
    KeepAlive,
    KeepAliveMsg,
    SendDelayed,
    Session,
    SetMeta,
    Subscribe,
    Unsubscribe,
    WsControlError,
    classify_origin_message,
    control_message_from_json,
    grip_extension_raw,
    parse_control_message,
    parse_grip_extension,
)


def pc(doc: object) -> ControlMessage:
    return parse_control_message(json.dumps(doc).encode())


# ---------------------------------------------------------------------------------------------
# Control messages


@pytest.mark.parametrize(
    ("doc", "msg"),
    [
        ({"type": "subscribe", "channel": "c"}, Subscribe("c")),
        ({"type": "subscribe", "channel": "c", "filters": None}, Subscribe("c")),
        ({"type": "subscribe", "channel": "c", "filters": []}, Subscribe("c")),
        (
            {"type": "subscribe", "channel": "c", "filters": ["skip-self", "x"]},
            Subscribe("c", ("skip-self", "x")),
        ),
        ({"type": "unsubscribe", "channel": "c", "filters": 5}, Unsubscribe("c")),
        ({"type": "detach", "extra": 1}, Detach()),
        ({"type": "session", "id": "sid"}, Session("sid")),
        ({"type": "session"}, Session(None)),
        ({"type": "session", "id": None}, Session(None)),
        ({"type": "set-meta", "name": "user", "value": "alice"}, SetMeta("user", "alice")),
        ({"type": "set-meta", "name": "user", "value": ""}, SetMeta("user", "")),
        ({"type": "set-meta", "name": "user"}, SetMeta("user", None)),  # omitted: delete
        ({"type": "set-meta", "name": "user", "value": None}, SetMeta("user", None)),
        ({"type": "keep-alive"}, KeepAlive(None)),  # no content: keep-alives off
        ({"type": "keep-alive", "content": "ka"}, KeepAlive(b"ka", "text", 55, "idle")),
        (
            {
                "type": "keep-alive",
                "content": "ka",
                "message-type": "ping",
                "timeout": 30,
                "mode": "interval",
            },
            KeepAlive(b"ka", "ping", 30, "interval"),
        ),
        ({"type": "keep-alive", "content": "é"}, KeepAlive("é".encode(), "text", 55, "idle")),
        ({"type": "keep-alive", "content": "", "timeout": 0}, KeepAlive(b"", "text", 55, "idle")),
        ({"type": "keep-alive", "content": "k", "timeout": 2.5}, KeepAlive(b"k", "text", 3)),
        ({"type": "keep-alive", "content": "k", "timeout": "7"}, KeepAlive(b"k", "text", 7)),
        ({"type": "keep-alive", "content": "k", "timeout": "x"}, KeepAlive(b"k", "text", 55)),
        ({"type": "keep-alive", "content": "k", "timeout": True}, KeepAlive(b"k", "text", 1)),
        ({"type": "keep-alive", "content": "k", "mode": "Interval"}, KeepAlive(b"k")),
        ({"type": "keep-alive", "content": "k", "mode": "bogus"}, KeepAlive(b"k")),
        # the timeout is not even looked at without content
        ({"type": "keep-alive", "timeout": [1]}, KeepAlive(None)),
        (
            {"type": "keep-alive", "content-bin": "AAEC", "message-type": "binary"},
            KeepAlive(b"\x00\x01\x02", "binary"),
        ),
        # content-bin wins over content; without message-type it is still text [verified]
        ({"type": "keep-alive", "content-bin": "aGk=", "content": "no"}, KeepAlive(b"hi", "text")),
        ({"type": "keep-alive", "content-bin": "a G!k"}, KeepAlive(b"hi")),  # Qt-lenient base64
        # a lone surrogate: Qt's toUtf8 writes '?', which fromBase64 skips (fuzzing find)
        ({"type": "keep-alive", "content-bin": "aG\ude00k="}, KeepAlive(b"hi")),
        ({"type": "keep-alive", "content": "k", "message-type": None}, KeepAlive(b"k", "text")),
        ({"type": "send-delayed", "content": "hi"}, SendDelayed(b"hi", "text", 1)),
        (
            {"type": "send-delayed", "content": "hi", "message-type": "pong", "timeout": 5},
            SendDelayed(b"hi", "pong", 5),
        ),
        ({"type": "send-delayed"}, SendDelayed(b"", "text", 1)),
        ({"type": "send-delayed", "timeout": 9}, SendDelayed(b"", "text", 1)),
        ({"type": "send-delayed", "content": "x", "mode": 5}, SendDelayed(b"x")),  # no mode
        ({"type": "flush-delayed"}, FlushDelayed()),
    ],
)
def test_parse_valid(doc: object, msg: ControlMessage) -> None:
    assert pc(doc) == msg


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ([], "grip control packet is not an object"),
        ([{"type": "detach"}], "grip control packet is not an object"),
        ({}, "grip control object does not contain 'type'"),
        ({"type": None}, "grip control object contains 'type' with wrong type"),
        ({"type": 5}, "grip control object contains 'type' with wrong type"),
        ({"type": "close"}, "'type' contains unknown value: close"),  # there is no close
        ({"type": "Subscribe"}, "'type' contains unknown value: Subscribe"),
        ({"type": ""}, "'type' contains unknown value: "),
        ({"type": "subscribe"}, "grip control object does not contain 'channel'"),
        (
            {"type": "subscribe", "channel": ""},
            "grip control object contains 'channel' with invalid value",
        ),
        (
            {"type": "subscribe", "channel": None},
            "grip control object contains 'channel' with wrong type",
        ),
        (
            {"type": "subscribe", "channel": 1},
            "grip control object contains 'channel' with wrong type",
        ),
        (
            {"type": "unsubscribe", "channel": ""},
            "grip control object contains 'channel' with invalid value",
        ),
        (
            {"type": "subscribe", "channel": "c", "filters": "x"},
            "grip control object contains 'filters' with wrong type",
        ),
        (
            {"type": "subscribe", "channel": "c", "filters": {}},
            "grip control object contains 'filters' with wrong type",
        ),
        (
            {"type": "subscribe", "channel": "c", "filters": ["a", 1]},
            "filters contains value with wrong type",
        ),
        ({"type": "session", "id": 5}, "grip control object contains 'id' with wrong type"),
        ({"type": "set-meta"}, "grip control object does not contain 'name'"),
        (
            {"type": "set-meta", "name": ""},
            "grip control object contains 'name' with invalid value",
        ),
        (
            {"type": "set-meta", "name": "n", "value": 1},
            "grip control object contains 'value' with wrong type",
        ),
        (
            {"type": "keep-alive", "message-type": "close"},
            "grip control object contains 'message-type' with unknown value",
        ),
        (
            {"type": "keep-alive", "message-type": "TEXT"},
            "grip control object contains 'message-type' with unknown value",
        ),
        (
            {"type": "send-delayed", "message-type": 1},
            "grip control object contains 'message-type' with wrong type",
        ),
        (
            {"type": "keep-alive", "content": 5},
            "grip control object contains 'content' with wrong type",
        ),
        (
            {"type": "keep-alive", "content": None},
            "grip control object contains 'content' with wrong type",
        ),
        (
            {"type": "send-delayed", "content-bin": 5},
            "grip control object contains 'content-bin' with wrong type",
        ),
        (
            {"type": "keep-alive", "content-bin": None},
            "grip control object contains 'content-bin' with wrong type",
        ),
        (
            {"type": "keep-alive", "content": "k", "timeout": None},
            "grip control object contains 'timeout' with wrong type",
        ),
        (
            {"type": "keep-alive", "content": "k", "timeout": [5]},
            "grip control object contains 'timeout' with wrong type",
        ),
        (
            {"type": "send-delayed", "content": "k", "timeout": {}},
            "grip control object contains 'timeout' with wrong type",
        ),
        (
            {"type": "keep-alive", "content": "k", "timeout": -1},
            "grip control object contains 'timeout' with invalid value",
        ),
        (
            {"type": "send-delayed", "content": "k", "timeout": -5},
            "grip control object contains 'timeout' with invalid value",
        ),
        (
            {"type": "keep-alive", "content": "k", "mode": 1},
            "grip control object contains 'mode' with wrong type",
        ),
    ],
)
def test_parse_errors(doc: object, error: str) -> None:
    with pytest.raises(WsControlError) as ei:
        pc(doc)
    assert str(ei.value) == error
    assert isinstance(ei.value, InstructError)


@pytest.mark.parametrize(
    "payload",
    [b"", b"nope", b"5", b'"str"', b"null", b"true", b"{", b'{"type":"detach"', b"\xff{}"],
)
def test_parse_not_json(payload: bytes) -> None:
    with pytest.raises(WsControlError) as ei:
        parse_control_message(payload)
    assert str(ei.value) == "grip control message is not valid json"


def test_parse_accepts_text_and_qt_lenient_json() -> None:
    assert parse_control_message('{"type":"subscribe","channel":"ü"}') == Subscribe("ü")
    # Qt5 accepts a raw control character inside a string; msgspec alone would not
    assert parse_control_message(b'{"type":"set-meta","name":"n","value":"a\tb"}') == SetMeta(
        "n", "a\tb"
    )


def test_from_json_directly() -> None:
    assert control_message_from_json({"type": "detach"}) == Detach()
    with pytest.raises(WsControlError):
        control_message_from_json("detach")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_types = st.sampled_from(
    ["subscribe", "unsubscribe", "detach", "session", "set-meta", "keep-alive", "send-delayed"]
)
_keys = st.sampled_from(
    [
        "channel",
        "filters",
        "id",
        "name",
        "value",
        "content",
        "content-bin",
        "message-type",
        "timeout",
        "mode",
    ]
)


_CLASSES: dict[str, type] = {
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "detach": Detach,
    "session": Session,
    "set-meta": SetMeta,
    "keep-alive": KeepAlive,
    "send-delayed": SendDelayed,
}


@given(_types, st.dictionaries(_keys, _json, max_size=5))
def test_parse_raises_only_documented_error(mtype: str, fields: dict[str, object]) -> None:
    try:
        msg = control_message_from_json({"type": mtype, **fields})
    except WsControlError:
        return
    assert type(msg) is _CLASSES[mtype]
    if isinstance(msg, (KeepAlive, SendDelayed)):
        assert msg.timeout > 0


@given(st.binary(max_size=100))
def test_parse_random_bytes(payload: bytes) -> None:
    try:
        parse_control_message(payload)
    except WsControlError:
        pass


# ---------------------------------------------------------------------------------------------
# The grip extension


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        (None, None),
        ([], None),
        ("", None),
        ("permessage-deflate", None),
        ("grip", "m:"),
        ("  grip  ", "m:"),
        ("grip;", "m:"),
        ('grip; message-prefix=""', ""),
        ('grip; message-prefix="m:"', "m:"),
        ('grip; message-prefix="x;y"', "x;y"),
        ('grip; message-prefix="a\\"b"', 'a"b'),
        ("grip; message-prefix=abc", "abc"),
        ("grip; message-prefix= abc ; other=1", "abc"),
        ('grip; message-prefix= "q"', '"q"'),  # Pushpin quirk: a space before the quote
        ("grip; other; message-prefix=p", "p"),
        ("grip; message-prefix=a; message-prefix=b", "b"),  # last wins
        ("grip; Message-Prefix=x", "m:"),  # parameter names are case-sensitive
        ("Grip", None),  # so is the extension name
        ("gripx", None),
        ("permessage-deflate, grip; message-prefix=p", "p"),
        ('x; a="1,2", grip', "m:"),
        (["permessage-deflate", "grip; message-prefix=z"], "z"),
        ("grip; message-prefix=a, grip; message-prefix=b", "a"),  # the first grip counts
        # unparseable parameters: Pushpin treats the extension as absent
        ("grip; message-prefix=", None),
        ('grip; message-prefix="abc', None),
        ('grip; message-prefix="abc\\', None),
    ],
)
def test_parse_grip_extension(value: str | list[str] | None, prefix: str | None) -> None:
    assert parse_grip_extension(value) == prefix


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        ("permessage-deflate, grip; message-prefix=p", "grip; message-prefix=p"),
        ("grip", "grip"),
        ("deflate", None),
        (None, None),
    ],
)
def test_grip_extension_raw(value: str | None, raw: str | None) -> None:
    assert grip_extension_raw(value) == raw


# ---------------------------------------------------------------------------------------------
# Origin -> client classification (F38)


def classify(
    data: bytes | str, is_text: bool, prefix: str, single_frame: bool = True
) -> tuple[str, bytes | str | None]:
    if isinstance(data, bytes):
        return classify_origin_message(data, is_text, prefix, single_frame=single_frame)
    return classify_origin_message(data, is_text, prefix, single_frame=single_frame)


@pytest.mark.parametrize(
    ("data", "is_text", "prefix", "result"),
    [
        (b'c:{"type":"detach"}', True, "m:", ("control", b'{"type":"detach"}')),
        ('c:{"type":"detach"}', True, "m:", ("control", '{"type":"detach"}')),
        (b"c:", True, "m:", ("control", b"")),
        (b"m:hello", True, "m:", ("relay", b"hello")),
        ("m:héllo", True, "m:", ("relay", "héllo")),
        (b"m:", True, "m:", ("relay", b"")),
        (b"m:\x00\x01", False, "m:", ("relay", b"\x00\x01")),  # binary uses the prefix too
        (b"c:data", False, "m:", ("drop", None)),  # binary is never control
        (b"c:data", False, "", ("relay", b"c:data")),
        (b"hello", True, "m:", ("drop", None)),  # F38: unprefixed is dropped
        ("hello", True, "m:", ("drop", None)),
        (b"M:hello", True, "m:", ("drop", None)),
        (b"", True, "m:", ("drop", None)),
        (b"hello", True, "", ("relay", b"hello")),  # message-prefix=""
        (b"", False, "", ("relay", b"")),
        (b"c:x", True, "", ("control", b"x")),  # control wins over an empty prefix
        (b"pfx-data", False, "pfx-", ("relay", b"data")),
        ("\xe9:x".encode(), True, "\xc3\xa9:", ("relay", b"x")),  # latin-1 header text
        ("é:x", True, "\xc3\xa9:", ("relay", "x")),
    ],
)
def test_classify(data: bytes | str, is_text: bool, prefix: str, result: object) -> None:
    assert classify(data, is_text, prefix) == result


@pytest.mark.parametrize("data", [b'c:{"type":"detach"}', 'c:{"type":"detach"}'])
def test_classify_fragmented_control_is_ignored(data: bytes | str) -> None:
    assert classify(data, True, "m:", single_frame=False) == ("drop", None)
    # other messages do not care how many frames they had
    assert classify(data, False, "", single_frame=False)[0] == "relay"


@given(st.binary(max_size=30), st.booleans(), st.sampled_from(["m:", "", "xy"]))
def test_classify_properties(data: bytes, is_text: bool, prefix: str) -> None:
    kind, payload = classify_origin_message(data, is_text, prefix)
    as_text = classify_origin_message(data.decode("latin-1"), is_text, prefix)
    assert as_text[0] == kind
    if kind == "control":
        assert is_text and data == b"c:" + (payload or b"")
    elif kind == "relay":
        assert data == prefix.encode() + (payload or b"")
    else:
        assert payload is None


def test_keep_alive_alias() -> None:
    assert KeepAliveMsg is KeepAlive


def test_errors_are_grip_errors() -> None:
    with pytest.raises(GripError):
        pc({"type": "nope"})


# ---------------------------------------------------------------------------------------------
# set-meta is sent back as a ``Meta-<name>: <value>`` header over WebSocket-over-HTTP (F40), so
# a name that is not an RFC 9110 token, or a value with CR, LF or NUL, is an invalid message.


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("a\r\nX", "1", "grip control object contains 'name' with invalid value"),
        ("a b", "1", "grip control object contains 'name' with invalid value"),
        ("a:", "1", "grip control object contains 'name' with invalid value"),
        ("user", "1\r\nX-Evil: 1", "grip control object contains 'value' with invalid value"),
        ("user", "a\nb", "grip control object contains 'value' with invalid value"),
        ("user", "a\x00b", "grip control object contains 'value' with invalid value"),
    ],
)
def test_set_meta_header_injection(name: str, value: str, error: str) -> None:
    with pytest.raises(WsControlError) as ei:
        control_message_from_json({"type": "set-meta", "name": name, "value": value})
    assert str(ei.value) == error


def test_set_meta_header_text_that_is_allowed() -> None:
    msg = control_message_from_json({"type": "set-meta", "name": "User_1.x", "value": "a\t b é"})
    assert msg == SetMeta("User_1.x", "a\t b é")

"""The bus wire format (gripd.core.itemwire): exact round trip of every PublishItem field
(F29, F30 formats) and strict rejection of anything malformed (it comes from Redis, which any
client with access can write to)."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core import tnetstring
from gripd.core.itemwire import VERSION, decode_items, decode_message, encode_items
from gripd.core.publish import (
    HttpResponseFormat,
    HttpStreamFormat,
    PublishItem,
    WsMessageFormat,
    parse_item,
)


def _same(a: object, b: object) -> bool:
    """Stricter than ==: types too (True vs 1, -0.0 vs 0.0, str vs bytes) and dict order."""
    return repr(a) == repr(b)


def full_item() -> PublishItem:
    """Every field set, with the awkward values: repeated headers, bytes, a lone surrogate."""
    return PublishItem(
        channel="ch\ud800é",
        id="id-1",
        prev_id="id-0",
        http_response=HttpResponseFormat(
            action="send",
            code=404,
            reason="Not Here",
            headers=[("X-A", "1"), ("x-a", "2"), ("X-A", "1"), ("Grip-Expose-Headers", "X-B")],
            body=b"\x00\xffbody\r\n",
            body_patch=None,
            content_filters=["skip-self", "build-id"],
        ),
        http_stream=HttpStreamFormat(action="send", content=b"\x80chunk", content_filters=[]),
        ws_message=WsMessageFormat(
            action="close",
            type="binary",
            content=b"",
            code=4001,
            reason="bye\n",
            content_filters=None,
        ),
        meta={"user": "42", "ü": "\ud83d", "": ""},
        size=1234,
        no_seq=True,
    )


def test_full_item_round_trips_exactly() -> None:
    item = full_item()
    data = encode_items([item, item], "node-a", source="http", seq=99)
    msg = decode_message(data)
    assert (msg.node, msg.source, msg.seq) == ("node-a", "http", 99)
    assert _same(msg.items, [item, item])
    assert _same(decode_items(data), ("node-a", [item, item]))


def test_body_patch_keeps_json_and_tnetstring_values() -> None:
    patch: list[Any] = [
        {"op": "replace", "path": "/a", "value": {"x": [1, 2.5, None, True, False, "s"]}},
        {"op": "add", "path": "/b", "value": [math.inf, -math.inf, -0.0, 2**70, -(2**63)]},
        {b"op": b"add", b"path": b"/c", b"value": {b"k": b"\xff", "k": "str"}},
        [],
        {},
        "",
        b"",
    ]
    item = PublishItem(channel="c", http_response=HttpResponseFormat(code=200, body_patch=patch))
    out = decode_items(encode_items([item], "n"))[1][0]
    assert out.http_response is not None
    assert _same(out.http_response.body_patch, patch)
    nan_item = PublishItem(channel="c", http_response=HttpResponseFormat(body_patch=[math.nan]))
    got = decode_items(encode_items([nan_item], "n"))[1][0].http_response
    assert got is not None and got.body_patch is not None and math.isnan(got.body_patch[0])


def test_every_action_and_ws_type_round_trips() -> None:
    items = [
        PublishItem(channel="a", http_response=HttpResponseFormat(action=a))
        for a in ("send", "hint", "close")
    ]
    items += [
        PublishItem(channel="a", http_stream=HttpStreamFormat(action=a))
        for a in ("send", "hint", "close")
    ]
    for action in ("send", "close", "hint", "refresh"):
        for t in ("text", "binary", "ping", "pong"):
            items.append(
                PublishItem(channel="a", ws_message=WsMessageFormat(action=action, type=t))
            )
    assert _same(decode_items(encode_items(items, "n"))[1], items)


def test_parsed_items_round_trip() -> None:
    """Items as the publish parsers produce them (F29, F30), from JSON and from tnetstring."""
    items = [
        parse_item(
            {
                "channel": "x",
                "id": "1",
                "formats": {
                    "http-response": {
                        "headers": {"B": "1", "A": "2"},
                        "body-patch": [{"op": "remove", "path": "/a"}],
                    },
                    "ws-message": {"content-bin": "AAE="},
                },
                "meta": {"k": "v"},
                "no-seq": True,
            }
        ),
        parse_item(
            {b"channel": b"y", b"formats": {b"http-stream": {b"content": b"\xfe"}}, b"size": 3},
            binary=True,
        ),
    ]
    assert _same(decode_items(encode_items(items, "n", source="zmq"))[1], items)


def test_empty_batch_and_empty_strings() -> None:
    msg = decode_message(encode_items([], "", source="", seq=0))
    assert (msg.node, msg.source, msg.seq, msg.items) == ("", "", 0, [])


def test_unencodable_body_patch_is_a_value_error() -> None:
    item = PublishItem(channel="c", http_response=HttpResponseFormat(body_patch=[object()]))
    with pytest.raises(ValueError, match="body_patch"):
        encode_items([item], "n")
    item = PublishItem(channel="c", http_response=HttpResponseFormat(body_patch=[{1: 2}]))
    with pytest.raises(ValueError, match="key"):
        encode_items([item], "n")


# -- property: any item the parsers can produce round-trips -------------------------------------

_any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates too
_safe_text = st.text(
    st.characters(exclude_characters="\r\n\x00", exclude_categories=()), max_size=12
)
_token = st.text("!#$%&'*+-.^_`|~0123456789abcxyzABCXYZ", min_size=1, max_size=8)
_filters = st.none() | st.lists(_any_text, max_size=3)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | _any_text
    | st.binary(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(_any_text | st.binary(max_size=4), kids, max_size=3)
    ),
    max_leaves=10,
)
_http_response = st.builds(
    HttpResponseFormat,
    action=st.sampled_from(["send", "hint", "close"]),
    code=st.none() | st.integers(0, 999),
    reason=st.none() | _safe_text,
    headers=st.lists(st.tuples(_token, _safe_text), max_size=4),
    body=st.none() | st.binary(max_size=40),
    body_patch=st.none() | st.lists(_json, max_size=3),
    content_filters=_filters,
)
_http_stream = st.builds(
    HttpStreamFormat,
    action=st.sampled_from(["send", "hint", "close"]),
    content=st.binary(max_size=40),
    content_filters=_filters,
)
_ws_message = st.builds(
    WsMessageFormat,
    action=st.sampled_from(["send", "close", "hint", "refresh"]),
    type=st.sampled_from(["text", "binary", "ping", "pong"]),
    content=st.binary(max_size=40),
    code=st.none() | st.integers(0, 2**31 - 1),
    reason=st.none() | _any_text,
    content_filters=_filters,
)
_item = st.builds(
    PublishItem,
    channel=_any_text,
    id=st.none() | _safe_text,
    prev_id=st.none() | _any_text,
    http_response=st.none() | _http_response,
    http_stream=st.none() | _http_stream,
    ws_message=st.none() | _ws_message,
    meta=st.dictionaries(_any_text, _any_text, max_size=3),
    size=st.none() | st.integers(0, 2**31 - 1),
    no_seq=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_item, max_size=4), _any_text, _any_text, st.integers(0, 2**63 - 1))
def test_round_trip_property(items: list[PublishItem], node: str, source: str, seq: int) -> None:
    msg = decode_message(encode_items(items, node, source=source, seq=seq))
    assert _same((msg.node, msg.source, msg.seq, msg.items), (node, source, seq, items))


@settings(max_examples=300, deadline=None)
@given(st.lists(_item, min_size=1, max_size=2), st.data())
def test_corrupted_messages_raise_only_value_error(
    items: list[PublishItem], data: st.DataObject
) -> None:
    """Flipping, cutting or inserting bytes never gets past the decoder as anything but
    ValueError (or a message that still decodes)."""
    raw = bytearray(encode_items(items, "n"))
    pos = data.draw(st.integers(0, len(raw) - 1))
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if how == "flip":
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del raw[pos:]
    else:
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decode_message(bytes(raw))
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_value_error(raw: bytes) -> None:
    try:
        decode_message(raw)
    except ValueError:
        pass


# -- malformed messages --------------------------------------------------------------------------


def _raw_item(**change: Any) -> list[Any]:
    """A valid item as the wire lists it, with positions replaced by name."""
    fields = {
        "channel": b"c",
        "id": None,
        "prev_id": None,
        "meta": [],
        "size": None,
        "no_seq": False,
        "hr": None,
        "hs": [b"send", b"x", None],
        "ws": None,
    }
    fields.update(change)
    return list(fields.values())


def _hr(**change: Any) -> list[Any]:
    fields = {
        "action": b"send",
        "code": 200,
        "reason": None,
        "headers": [],
        "body": b"",
        "patch": None,
        "filters": None,
    }
    fields.update(change)
    return list(fields.values())


def _ws(**change: Any) -> list[Any]:
    fields = {
        "action": b"send",
        "type": b"text",
        "content": b"",
        "code": None,
        "reason": None,
        "filters": None,
    }
    fields.update(change)
    return list(fields.values())


def _msg(*items: list[Any], top: list[Any] | None = None) -> bytes:
    return tnetstring.dumps(top if top is not None else [VERSION, b"n", b"src", 1, list(items)])


def test_valid_hand_built_message_decodes() -> None:
    """The templates below are valid as they stand, so each malformed case tests one change."""
    data = _msg(_raw_item(hr=_hr(), ws=_ws(), meta=[b"k", b"v"]))
    node, items = decode_items(data)
    assert node == "n" and items[0].channel == "c"


MALFORMED: list[tuple[str, bytes, str]] = [
    ("not tnetstring", b"hello", "invalid tnetstring"),
    ("pickle", pickle.dumps([1, "n", "s", 0, []]), "invalid tnetstring"),
    ("trailing bytes", _msg(_raw_item()) + b"0:~", "trailing"),
    ("top not list", tnetstring.dumps({b"a": b"b"}), "message is not a list"),
    ("top wrong arity", _msg(top=[VERSION, b"n", b"s", []]), "4 elements"),
    ("unknown version", _msg(top=[2, b"n", b"s", 0, []]), "version"),
    ("version as bool", _msg(top=[True, b"n", b"s", 0, []]), "version"),
    ("seq negative", _msg(top=[VERSION, b"n", b"s", -1, []]), "seq"),
    ("seq not int", _msg(top=[VERSION, b"n", b"s", b"1", []]), "seq"),
    ("node not string", _msg(top=[VERSION, 5, b"s", 0, []]), "node"),
    ("source bad utf-8", _msg(top=[VERSION, b"n", b"\xff", 0, []]), "source is not UTF-8"),
    ("items not list", _msg(top=[VERSION, b"n", b"s", 0, b"x"]), "items"),
    ("item not list", _msg([b"x"]), "item 0: it has 1 elements"),  # _msg wraps: [[b"x"]]
    ("item wrong arity", _msg(_raw_item()[:8]), "item 0: it has 8"),
    ("channel not bytes", _msg(_raw_item(channel=1)), "channel is not a string"),
    ("channel bad utf-8", _msg(_raw_item(channel=b"\xc3")), "channel is not UTF-8"),
    ("id with CRLF", _msg(_raw_item(id=b"a\r\nb")), "id has CR"),
    ("prev_id not string", _msg(_raw_item(prev_id=[])), "prev_id"),
    ("meta odd", _msg(_raw_item(meta=[b"k"])), "odd"),
    ("meta not list", _msg(_raw_item(meta=b"k")), "meta list is not a list"),
    ("meta repeated key", _msg(_raw_item(meta=[b"k", b"1", b"k", b"2"])), "repeats key"),
    ("meta value not string", _msg(_raw_item(meta=[b"k", 1])), "meta value"),
    ("size negative", _msg(_raw_item(size=-1)), "size is out of range"),
    ("size too big", _msg(_raw_item(size=2**31)), "size is out of range"),
    ("size bool", _msg(_raw_item(size=True)), "size is not an integer"),
    ("no_seq not bool", _msg(_raw_item(no_seq=1)), "no_seq"),
    ("hr not list", _msg(_raw_item(hr=b"x")), "http-response is not a list"),
    ("hr unknown action", _msg(_raw_item(hr=_hr(action=b"refresh"))), "action is unknown"),
    ("hr action not bytes", _msg(_raw_item(hr=_hr(action=1))), "action is unknown"),
    ("hr code 1000", _msg(_raw_item(hr=_hr(code=1000))), "code is out of range"),
    ("hr code float", _msg(_raw_item(hr=_hr(code=200.0))), "code is not an integer"),
    ("hr reason CRLF", _msg(_raw_item(hr=_hr(reason=b"OK\r\nX: y"))), "reason has CR"),
    ("header bad name", _msg(_raw_item(hr=_hr(headers=[b"X A", b"1"]))), "header name 'X A'"),
    ("header bad value", _msg(_raw_item(hr=_hr(headers=[b"X", b"1\r\nY: 2"]))), "invalid value"),
    ("header NUL", _msg(_raw_item(hr=_hr(headers=[b"X", b"\x00"]))), "invalid value"),
    ("headers odd", _msg(_raw_item(hr=_hr(headers=[b"X"]))), "odd"),
    ("body not bytes", _msg(_raw_item(hr=_hr(body=[]))), "body is not a byte string"),
    ("patch untagged string", _msg(_raw_item(hr=_hr(patch=[b"l", b"xop"]))), "no type tag"),
    ("patch not a list", _msg(_raw_item(hr=_hr(patch=[b"d"]))), "body_patch is not a list"),
    ("patch bare list", _msg(_raw_item(hr=_hr(patch=[b"sop"]))), "malformed"),
    ("patch empty list", _msg(_raw_item(hr=_hr(patch=[]))), "unknown type"),
    ("patch dict odd", _msg(_raw_item(hr=_hr(patch=[b"l", [b"d", b"sk"]]))), "malformed"),
    ("patch key not string", _msg(_raw_item(hr=_hr(patch=[b"l", [b"d", 1, 2]]))), "key"),
    ("patch tnetstring dict", _msg(_raw_item(hr=_hr(patch=[b"l", {b"a": 1}]))), "unknown type"),
    ("filters not list", _msg(_raw_item(hr=_hr(filters=b"x"))), "content filters"),
    ("filter not string", _msg(_raw_item(hs=[b"send", b"x", [1]])), "content filter"),
    ("hs wrong arity", _msg(_raw_item(hs=[b"send", b"x"])), "http-stream has 2"),
    ("hs content str", _msg(_raw_item(hs=[b"send", None, None])), "content is not a byte"),
    ("hs unknown action", _msg(_raw_item(hs=[b"refresh", b"", None])), "action is unknown"),
    ("ws unknown type", _msg(_raw_item(ws=_ws(type=b"close"))), "type is unknown"),
    ("ws unknown action", _msg(_raw_item(ws=_ws(action=b"nope"))), "action is unknown"),
    ("ws code negative", _msg(_raw_item(ws=_ws(code=-1))), "code is out of range"),
    ("ws reason bad utf-8", _msg(_raw_item(ws=_ws(reason=b"\xff"))), "reason is not UTF-8"),
]


@pytest.mark.parametrize(("data", "message"), [pytest.param(d, m, id=i) for i, d, m in MALFORMED])
def test_malformed_message_is_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=r"^bus message: ") as e:
        decode_message(data)
    assert message in str(e.value)
    with pytest.raises(ValueError):
        decode_items(data)


class _Raw(bytes):
    """Already-encoded tnetstring bytes to splice into ``_enc``'s output."""


def _enc(v: object) -> bytes:
    if isinstance(v, _Raw):
        return bytes(v)
    if isinstance(v, list):
        body = b"".join(_enc(x) for x in v)
        return b"%d:%s]" % (len(body), body)
    return tnetstring.dumps(v)


@pytest.mark.parametrize("depth", [10, 5000])
def test_deeply_nested_patch_is_rejected_not_crashing(depth: int) -> None:
    """A value nested past the recursion limit is a ValueError (shallow: a malformed patch)."""
    inner = b"3:sop,"
    for _ in range(depth):
        inner = b"%d:1:l,%s]" % (len(inner) + 4, inner)
    data = _enc([VERSION, b"n", b"s", 0, [_raw_item(hr=_hr(patch=_Raw(inner)))]])
    if depth == 10:
        (item,) = decode_items(data)[1]
        assert item.http_response is not None
        patch: Any = item.http_response.body_patch
        for _ in range(9):
            patch = patch[0]
        assert patch == ["op"]
        return
    with pytest.raises(ValueError, match="bus message"):
        decode_message(data)

"""ZeroMQ publish messages (F31): tnetstring and ``J``-JSON items, and the tnetstring codec.

Input: one flag byte, then a payload. Flags (low 2 bits): 0 — a PULL message ``[payload]``;
1 — a SUB message ``[channel, payload]`` with the channel up to the first NUL; 2 — a bare
tnetstring, decoded by the C extension and the pure-Python codec, which must agree, then
re-encoded (``loads(dumps(v)) == v``) and parsed as a binary publish item.

Allowed outcomes: a ``PublishItem`` or a ``Drop`` (the input logs and counts it) for messages;
a value or ``TnetstringError`` for the codec, then an item or ``PublishError``. Anything else
is a find.
"""

from __future__ import annotations

from gripd.core import tnetstring
from gripd.core.errors import PublishError
from gripd.core.publish import PublishItem, parse_item
from gripd.io.inputs.zmq import Drop, parse_pull_message, parse_sub_message

from ._common import flags_and_rest, same

SEEDS = [
    b"\x00T76:7:channel,4:test,7:formats,45:11:http-stream,26:7:content,12:hello world\n,}}}",
    b'\x00J{"channel":"test","formats":{"ws-message":{"content":"hi"}}}',
    b"\x01test\x0069:7:formats,55:10:ws-message,37:4:type,6:binary,11:content-bin,"
    b"3:\x00\x01\x02,}}}",
    b"\x02" + b"39:1:a,5:hello,1:b,2:12#1:c,0:~1:d,4:true!}",
    b"\x02" + b"37:1:1#3:2.5^4:-7.0^5:false!0:~0:,0:]0:}]",
    b"\x00154:7:channel,1:x,2:id,1:2,7:prev-id,1:1,7:formats,85:13:http-response,64:4:code,"
    b"3:404#6:reason,4:Nope,4:body,0:,7:headers,11:8:1:X,1:1,]]}}4:meta,8:1:k,1:v,}}",
]

TOKENS = [
    b"0:~",
    b"4:true!",
    b"5:false!",
    b"1:1#",
    b"3:1.5^",
    b"3:inf^",
    b"3:nan^",
    b"0:]",
    b"0:}",
    b"7:channel,",
    b"7:formats,",
    b"11:http-stream,",
    b"13:http-response,",
    b"10:ws-message,",
    b"7:content,",
    b"11:content-bin,",
    b"4:body,",
    b"4:code,",
    b"4:type,",
    b"6:action,",
    b"5:close,",
    b"4:meta,",
    b"4:size,",
    b"6:no-seq,",
    b"7:headers,",
    b"9999999999:",
]


def _item_checks(item: PublishItem) -> None:
    assert isinstance(item.channel, str)
    assert (
        item.http_response is None
        or item.http_response.action != "send"
        or (item.http_response.code is not None and 0 <= item.http_response.code <= 999)
    )


def fuzz_one(data: bytes) -> None:
    flags, payload = flags_and_rest(data)
    mode = flags & 3
    if mode == 0:
        try:
            _item_checks(parse_pull_message([payload]))
        except Drop:
            pass
        return
    if mode == 1:
        channel, _, body = payload.partition(b"\0")
        try:
            _item_checks(parse_sub_message([channel, body]))
        except Drop:
            pass
        return
    try:
        value = tnetstring.loads(payload)
    except tnetstring.TnetstringError:
        try:
            tnetstring.py_loads(payload)
        except tnetstring.TnetstringError:
            return
        raise AssertionError("the pure codec accepts what the C extension rejects") from None
    assert same(value, tnetstring.py_loads(payload)), "the two codecs disagree"
    assert same(tnetstring.loads(tnetstring.dumps(value)), value), "dumps/loads round trip"
    try:
        _item_checks(parse_item(value, binary=True))
    except PublishError:
        pass

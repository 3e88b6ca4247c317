"""WebSocket-over-HTTP answers from a backend (F40, F41): headers and the event body.

Input: one flag byte, then a head (``Name: value`` lines), a blank line and the event body.
Flags: bit 0 — this answers the opening request; bit 1 — body-only: the head is just
``Content-Type: application/websocket-events`` and the whole rest is the body.

Allowed outcomes: a ``WohResponse`` whose events re-encode to a body that decodes to the same
events, or ``WsEventsError`` (``WohRejected`` included; the connection is dropped or the client
gets the rejection). Anything else is a find.
"""

from __future__ import annotations

from gripd.core.headers import Headers
from gripd.core.wsevents import (
    BINARY,
    CLOSE,
    CONTENT_TYPE,
    DISCONNECT,
    OPEN,
    PING,
    PONG,
    TEXT,
    WsEventsError,
    apply_meta_updates,
    decode_close_content,
    decode_events,
    encode_events,
    parse_woh_response,
    woh_client_101_headers,
)

from ._common import flags_and_rest, split_head_body

_TYPES = frozenset({OPEN, TEXT, BINARY, PING, PONG, CLOSE, DISCONNECT})

SEEDS = [
    b"\x03OPEN\r\n",
    b"\x03OPEN\r\nTEXT 5\r\nhello\r\nBINARY 3\r\n\x00\x01\x02\r\nPING\r\nPONG 2\r\nhi\r\n"
    b"CLOSE 5\r\n\x03\xe8bye\r\nDISCONNECT\r\n",
    b"\x01Content-Type: application/websocket-events\r\nKeep-Alive-Interval: 30\r\n"
    b'Set-Meta-User: alice\r\nSec-WebSocket-Extensions: grip; message-prefix=""\r\n\r\n',
    b"\x00Content-Type: application/websocket-events\r\nSet-Meta-User:\r\n\r\n"
    b'TEXT 10\r\nc:{"a":1}\r\nTEXT 1a\r\n' + b"x" * 26 + b"\r\n",
    b"\x02TEXT 3\r\nabc",
]

TOKENS = [
    b"OPEN",
    b"TEXT ",
    b"BINARY ",
    b"PING",
    b"PONG",
    b"CLOSE ",
    b"DISCONNECT",
    b"\r\n",
    b"ffffffff",
    b"Content-Type: application/websocket-events",
    b"Keep-Alive-Interval: ",
    b"Set-Meta-",
    b"Sec-WebSocket-Extensions: grip",
    b"; message-prefix=",
]


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    headers: Headers
    if flags & 2:
        headers, body = [("Content-Type", CONTENT_TYPE)], rest
    else:
        headers, body = split_head_body(rest)
    woh_client_101_headers(headers)
    try:
        resp = parse_woh_response(200, "OK", headers, body, opening=bool(flags & 1))
    except WsEventsError:
        return
    assert resp.keep_alive_interval is None or resp.keep_alive_interval >= 0
    # Unknown event types are ignored by the connection (as by Pushpin): only ours re-encode.
    known = [e for e in resp.events if e.type in _TYPES]
    again = decode_events(encode_events(known))
    assert [(e.type, e.content or b"") for e in again] == [
        (e.type, e.content or b"") for e in known
    ], "events do not survive encode/decode"
    for e in resp.events:
        if e.type == CLOSE:
            code, reason = decode_close_content(e.content)
            assert code is None or 0 <= code <= 0xFFFF
            assert isinstance(reason, str)
    apply_meta_updates({"user": "bob"}, resp.meta_updates)

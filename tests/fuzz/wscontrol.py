"""GRIP over WebSocket (F37-F39): the ``grip`` extension header and control messages.

Input: one flag byte, then the bytes. Flags: bit 0 — the bytes are a whole message from a
GRIP-mode origin (classified, and a ``c:`` control payload parsed; bit 1 says text, bit 2 that
it came in more than one frame, bit 3 that it is handed over as ``str``); else bit 1 — the bytes
are a ``Sec-WebSocket-Extensions`` value (latin-1, as headers are decoded); else they are a
control message's JSON.

Allowed outcomes: a control message or ``WsControlError`` (logged and ignored); for the
extension, a prefix string or None (never an error); a classification. Anything else is a find.
"""

from __future__ import annotations

from gripd.core.wscontrol import (
    WsControlError,
    classify_origin_message,
    grip_extension_raw,
    parse_control_message,
    parse_grip_extension,
)

from ._common import flags_and_rest

# jsonmut: JSON after the flag byte (when the flags select it).
JSON_OFFSET = 1

SEEDS = [
    b'\x00{"type":"subscribe","channel":"a","filters":["skip-self"]}',
    b'\x00{"type":"unsubscribe","channel":"a"}',
    b'\x00{"type":"set-meta","name":"user","value":"alice"}',
    b'\x00{"type":"keep-alive","content":"ping","timeout":30,"mode":"interval",'
    b'"message-type":"binary"}',
    b'\x00{"type":"send-delayed","content-bin":"aGk=","timeout":5}',
    b'\x00{"type":"session","id":"s1"}',
    b'\x00{"type":"detach"}',
    b'\x00{"type":"flush-delayed"}',
    b'\x02grip; message-prefix="m:"',
    b'\x02permessage-deflate, grip;message-prefix=""',
    b'\x03c:{"type":"subscribe","channel":"x"}',
    b"\x03m:hello",
    b"\x01m:\x00\x01",
]

TOKENS = [
    b'"type"',
    b'"subscribe"',
    b'"unsubscribe"',
    b'"detach"',
    b'"set-meta"',
    b'"keep-alive"',
    b'"send-delayed"',
    b'"flush-delayed"',
    b'"session"',
    b'"channel"',
    b'"filters"',
    b'"name"',
    b'"value"',
    b'"content"',
    b'"content-bin"',
    b'"message-type"',
    b'"timeout"',
    b'"mode"',
    b'"id"',
    b"c:",
    b"m:",
    b"grip",
    b"message-prefix=",
    b"99999999999999999999",
]


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    if flags & 1:
        is_text = bool(flags & 2)
        single = not flags & 4
        payload: bytes | str | None
        if flags & 8:  # the message as text (the WebSocket layer decoded it)
            action, payload = classify_origin_message(
                rest.decode("utf-8", "replace"), is_text, "m:", single_frame=single
            )
        else:
            action, payload = classify_origin_message(rest, is_text, "m:", single_frame=single)
        assert action in ("control", "relay", "drop")
        if action != "control":
            return
        assert payload is not None
        rest = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    elif flags & 2:
        value = rest.decode("latin-1")
        prefix = parse_grip_extension(value)
        assert prefix is None or isinstance(prefix, str)
        raw = grip_extension_raw([value, value])
        assert (raw is None) == (grip_extension_raw(value) is None)
        return
    try:
        parse_control_message(rest)
    except WsControlError:
        pass

"""GRIP instructions: ``Grip-*`` headers (F20) and ``application/grip-instruct`` JSON (F21).

Input: one flag byte, then a head (``Name: value`` lines), a blank line and the body. Flags:
bit 0 — body-only: the whole rest is a grip-instruct JSON body; bits 1-2 — the origin status
(200, 200, 304, 500).

Allowed outcomes: an ``Instruct`` (with at most ``connection_subscription_max`` channels, a
timeout of at least 5 s, a keep-alive timeout of at least 1 s and a status in 0-999), or
``InstructError`` (the proxy answers 502, F47). Anything else is a find.
"""

from __future__ import annotations

from gripd.core.errors import InstructError
from gripd.core.headers import Headers
from gripd.core.instruct import is_grip_response, parse_instruct

from ._common import flags_and_rest, split_head_body

_CODES = (200, 200, 304, 500)
_MAX_SUBS = 20

# jsonmut: JSON after the flag byte (when the flags select it).
JSON_OFFSET = 1

SEEDS = [
    b"\x00Grip-Hold: response\nGrip-Channel: test\n\n",
    b"\x00Grip-Hold: stream\nGrip-Channel: a; prev-id=1, b; filter=skip-self\n"
    b"Grip-Keep-Alive: \\x00\\n; format=cstring; timeout=20; mode=interval\n"
    b'Grip-Timeout: 30\nGrip-Set-Meta: user=alice, x="y,z"\n'
    b"Grip-Link: </x?after=1>; rel=next; timeout=30\nGrip-Status: 404 Nope\n"
    b"Grip-Expose-Headers: X-A\nX-A: b\nContent-Type: text/plain\n\nbody",
    b"\x00Grip-Keep-Alive: aGVsbG8=; format=base64\nGrip-Hold: stream\n\n",
    b'\x01{"hold":{"mode":"response","channels":[{"name":"a","prev-id":"1"}],"timeout":60},'
    b'"response":{"code":200,"reason":"OK","headers":{"X-A":"b"},"body":"hi\\n"}}',
    b'\x01{"hold":{"mode":"stream","channels":[{"name":"a","filters":["skip-self"]}],'
    b'"keep-alive":{"content-bin":"aGk=","timeout":20},"meta":{"k":"v"}},'
    b'"response":{"headers":[["X","1"]],"body-bin":"aGk="}}',
    b"\x00Content-Type: application/grip-instruct\n\n"
    b'{"hold":{"mode":"response","channels":[{"name":"x"}]}}',
]

TOKENS = [
    b"Grip-Hold: ",
    b"Grip-Channel: ",
    b"Grip-Timeout: ",
    b"Grip-Keep-Alive: ",
    b"Grip-Set-Meta: ",
    b"Grip-Link: ",
    b"Grip-Status: ",
    b"Grip-Expose-Headers: ",
    b"Content-Type: application/grip-instruct",
    b"; format=cstring",
    b"; format=base64",
    b"; timeout=",
    b"; rel=next",
    b"; prev-id=",
    b"; filter=",
    b"mode=interval",
    b'"hold"',
    b'"mode"',
    b'"channels"',
    b'"name"',
    b'"prev-id"',
    b'"filters"',
    b'"timeout"',
    b'"keep-alive"',
    b'"content"',
    b'"content-bin"',
    b'"response"',
    b'"code"',
    b'"headers"',
    b'"body"',
    b'"body-bin"',
    b'"meta"',
    b'"stream"',
    b"99999999999999999999",
    b"1e400",
    b"\\u0000",
]


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    headers: Headers
    if flags & 1:
        headers, body = [("Content-Type", "application/grip-instruct")], rest
    else:
        headers, body = split_head_body(rest)
    code = _CODES[(flags >> 1) & 3]
    is_grip_response(headers)
    try:
        ins = parse_instruct(
            code, "OK", headers, body, channel_prefix="p_", connection_subscription_max=_MAX_SUBS
        )
    except InstructError:
        return
    assert len(ins.channels) <= _MAX_SUBS
    assert ins.timeout >= 5
    assert ins.keep_alive is None or ins.keep_alive.timeout >= 1
    assert 0 <= ins.response.code <= 999
    assert all(c.name.startswith("p_") for c in ins.channels)

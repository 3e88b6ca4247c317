"""Fuzzing finds in the core parsers (F1 routes, F28 control API), run against gripd and
Pushpin 1.36: values past Python's 4300-digit ``int()`` limit and a lone surrogate in a JSON
key get Pushpin's answers, not a crash or a 500."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import StartFn
from tests.support.procs import Impl

BIG = "9" * 5000  # past Python's int() digit limit (4300)


async def _publish(url: str, body: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/publish/", data=body, timeout=aiohttp.ClientTimeout(total=10)) as r,
    ):
        return r.status, await r.read()


async def test_parser_fuzz_finds_match_pushpin(impl: Impl, start: StartFn) -> None:
    # F1: a huge target port is the line's "target invalid port" warning; the next line loads.
    s = await start(impl, [f"* localhost:{BIG}", "* localhost:1"], probe=False)
    # F28: the 400 names the key; Qt's toUtf8 writes '?' for the lone surrogate.
    lone = b'{"items":[{"channel":"a","formats":{"http-response":{"headers":{"\\ude00":1}}}}]}'
    assert await _publish(s.control_url(), lone) == (
        400,
        b"Invalid format: headers contains '?' with wrong type\n",
    )
    # Qt toInt: a huge numeric string is not ok and reads as 0, which both fields accept.
    code = '{"items":[{"channel":"a","formats":{"http-response":{"code":"%s","body":""}}}]}'
    size = '{"items":[{"channel":"a","formats":{"http-stream":{"content":""}},"size":"%s"}]}'
    for body in (code % BIG, size % BIG):
        assert await _publish(s.control_url(), body.encode()) == (200, b"Published\n")
    for _ in range(50):  # the warning is logged at load, before the server reports ready
        if "routes:1: target invalid port" in s.log_text():
            break
        await asyncio.sleep(0.1)
    assert "routes:1: target invalid port" in s.log_text()

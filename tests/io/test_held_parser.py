"""A held stream keeps no HTTP parser: it is let go between requests and made anew when the
client sends more.

An ``httptools`` parser with the six callbacks it binds to its connection is about 0.9 KiB,
about a fifth of an idle held stream's memory, and seven of the objects the cycle collector
scans for each held connection. Checked in-process (gripd's ``App`` in the test's loop) for a
hold that starts inside the parser's callbacks (the built-in test target) and one that starts
when an origin answers; that the connection still serves requests after and during a hold is
checked against Pushpin in ``tests/e2e/test_grip_holds.py``.
"""

from __future__ import annotations

import asyncio
import gc

import httptools
import pytest

from tests.support.inproc import inprocess_app
from tests.support.origin import Origin, Reply

HELD = 30


def _parsers() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is httptools.HttpRequestParser)


async def _hold(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    return r, w


@pytest.mark.parametrize("target", ["test target", "origin"])
async def test_held_streams_keep_no_parser(target: str, origin: Origin) -> None:
    origin.route(
        "GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "s")], "open\n")
    )
    route = "* test" if target == "test target" else f"* 127.0.0.1:{origin.port}"
    path = "/stream?channel=s" if target == "test target" else "/s"
    async with inprocess_app(route) as app:
        port = app.config.http_port[0].port
        gc.collect()
        before = _parsers()
        conns = [await _hold(port, path) for _ in range(HELD)]
        try:
            await asyncio.sleep(0.2)
            assert _parsers() == before  # one per held connection without the parking
            # A client that sends more during the hold gets a parser for it: here a request
            # that waits behind the stream, so the connection stays held.
            conns[0][1].write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            await asyncio.sleep(0.2)
            assert _parsers() == before + 1
        finally:
            for _, w in conns:
                w.close()

"""Next links (F25) and a client that does not read: fetches wait for the client.

A chain of next links without a hold is followed one link after the other, each body appended
to the client's response. With a client that never reads, every fetched body stays in gripd's
memory, so gripd must not fetch the next link while the client's output is backed up. The chain
here is capped at ``CHAIN_MAX`` links (then a plain response ends it) so the test stays bounded
either way. Pushpin 1.36 waits the same way (46 fetches here).
"""

from __future__ import annotations

import asyncio
import socket
import time

from tests.conftest import StartFn
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl

BODY = 64 * 1024
CHAIN_MAX = 300


async def test_link_chain_waits_for_a_non_reading_client(impl: Impl, start: StartFn) -> None:
    count = {"n": 0}

    def link(req: RecordedRequest) -> Reply:
        count["n"] += 1
        if count["n"] >= CHAIN_MAX:
            return Reply(200, [], b"end\n")
        return Reply(200, [("Grip-Link", "</c>; rel=next")], b"x" * BODY)

    async with Origin() as o:
        o.route("GET", "/c", link)
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(c, ("127.0.0.1", s.http_port))
            c.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
            # Never read; give gripd time to follow the chain as far as it will.
            end = time.monotonic() + 4.0
            last = -1
            while time.monotonic() < end and count["n"] < CHAIN_MAX:
                await asyncio.sleep(0.5)
                if count["n"] == last:
                    break  # it stopped fetching
                last = count["n"]
            # Kernel buffers (a few MiB) plus the 256 KiB write high-water mark hold about 60
            # bodies; without backpressure the whole chain is fetched at once.
            assert count["n"] < CHAIN_MAX // 2, count["n"]
        finally:
            c.close()

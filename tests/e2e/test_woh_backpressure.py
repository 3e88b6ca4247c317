"""WebSocket-over-HTTP backpressure (F40, F41): a client that sends but never reads.

Every request to the origin is answered with a 32 KiB TEXT event. A client with a tiny receive
buffer sends a 1 KiB message every 2 ms for a few seconds and never reads. gripd must stop
sending requests while the client's output is backed up (and then stop reading the client once
its messages fill the queue), so the number of requests stays near what the kernel buffers and
the client's write buffer hold, instead of one request per message for as long as the client
sends (each one adding 32 KiB to gripd's memory). Pushpin 1.36 holds its requests the same way
(13 requests in this test, against about 100 for gripd and about 1,800 without backpressure).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

from tests.conftest import StartFn
from tests.e2e.test_woh import CT, Event, encode, parse_events
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl

ANSWER = 32 * 1024
SEND_FOR = 4.0  # seconds the client keeps sending (bounded)
MESSAGE = 1024
MAX_MESSAGES = 2_000
PACE = 0.002  # seconds between messages: about one origin round trip, so each gets a request


def _answer(req: RecordedRequest) -> Reply:
    out: list[Event] = []
    if any(e[0] == "OPEN" for e in parse_events(req.body)):
        out.append(("OPEN", None))
    out.append(("TEXT", b"a" * ANSWER))
    return Reply(200, [("Content-Type", CT)], encode(out))


def _frame(payload: bytes) -> bytes:
    """One masked client text frame (payload < 64 KiB)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + masked


def _flood(port: int) -> int:
    """Handshake, then send text frames without ever reading; returns the messages sent."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    c.sendall(
        f"GET /w HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        head += c.recv(1)  # only the head: the frames after it stay unread
    assert head.startswith(b"HTTP/1.1 101"), head
    c.setblocking(False)
    frame = _frame(b"m" * MESSAGE)
    sent = 0
    end = time.monotonic() + SEND_FOR
    pending = b""
    while time.monotonic() < end and sent < MAX_MESSAGES:
        if not pending:
            pending = frame
            sent += 1
        try:
            n = c.send(pending)
            pending = pending[n:]
        except BlockingIOError:
            pass
        time.sleep(PACE)
    c.close()
    return sent


async def test_woh_non_reading_client_holds_requests(impl: Impl, start: StartFn) -> None:
    async with Origin() as o:
        o.route("POST", "/w", _answer)
        server = await start(impl, [f"* 127.0.0.1:{o.port},over_http"])
        sent = await asyncio.to_thread(_flood, server.http_port)
        await asyncio.sleep(0.5)
        requests = len(o.requests_for("/w"))
        # Kernel buffers (a few MiB) plus gripd's 256 KiB write high-water mark hold about 100
        # answers; without backpressure there is one request per round trip (over a thousand).
        assert requests < 400, (requests, sent)
        assert sent > 400  # the client did send more than that many messages

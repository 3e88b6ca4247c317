"""The control API's ``client_header_timeout`` (F28) when connections share one deadline timer:
incomplete requests still get 408 and a close, complete ones are never timed out, and a
timeout lowered by a reload applies to new connections at once."""

from __future__ import annotations

import asyncio
import time

from gripd.io.inputs.control_http import ControlLimits, start_control_server
from tests.support.sinks import RecordingSink

PUB = b'{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}'
REQUEST = b"POST /publish/ HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(PUB), PUB)
TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 30\r\n\r\nRequest not complete in time.\n"
)


async def _send(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def _reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[bytes, float]:
    """The whole reply (the server closes) and when it was complete (monotonic)."""
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return data, time.monotonic()


async def test_partial_requests_time_out_among_complete_ones() -> None:
    """F28: complete publishes before, between and after partial ones are answered (and not
    timed out later); each partial head or body gets 408 at the timeout."""
    sink = RecordingSink()
    limits = ControlLimits(10000, 1_000_000, 0.5)
    srv = await start_control_server(sink, "127.0.0.1", 0, limits=limits)
    port = srv.sockets[0].getsockname()[1]
    try:
        done = [await _reply(*await _send(port, REQUEST)) for _ in range(20)]
        t0 = time.monotonic()
        partial_head = await _send(port, b"POST /publish/ HTTP/1.1\r\nContent-Le")
        done += [await _reply(*await _send(port, REQUEST)) for _ in range(20)]
        partial_body = await _send(port, REQUEST[:-5])
        done += [await _reply(*await _send(port, REQUEST)) for _ in range(20)]
        for data, _ in done:
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
        assert len(sink.items) == 60
        for conn in (partial_head, partial_body):
            data, at = await _reply(*conn)
            assert data == TIMEOUT_REPLY
            assert at - t0 >= 0.45
        assert len(sink.items) == 60
    finally:
        srv.close()
        await srv.wait_closed()


async def test_lowered_timeout_applies_before_earlier_longer_ones() -> None:
    """A reload that lowers ``client_header_timeout``: a connection accepted afterwards times
    out at the new, shorter deadline, although earlier connections wait for a later one."""
    limits = ControlLimits(10000, 1_000_000, 30.0)
    srv = await start_control_server(RecordingSink(), "127.0.0.1", 0, limits=limits)
    port = srv.sockets[0].getsockname()[1]
    try:
        early = await _send(port, b"POST /publish/ HTTP/1.1\r\n")
        await asyncio.sleep(0.05)
        limits.header_timeout = 0.3
        late = await _send(port, b"POST /publish/ HTTP/1.1\r\n")
        data, _ = await _reply(*late)
        assert data == TIMEOUT_REPLY
        # The early connection is still open (its deadline is 30 s away): it takes a request.
        early[1].write(b"Content-Length: %d\r\n\r\n%s" % (len(PUB), PUB))
        data, _ = await _reply(*early)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    finally:
        srv.close()
        await srv.wait_closed()

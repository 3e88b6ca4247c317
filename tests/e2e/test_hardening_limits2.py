"""More hardening limits, end to end.

1. A client request head with a line that never ends (F3 ``client_buffer_size``): an endless
   header value, or an endless URL. httptools keeps an unfinished line in its own memory and
   calls nothing back, so gripd also counts the raw bytes of an unfinished head: past
   ``client_buffer_size`` it answers ``431`` and closes, and its memory does not follow the
   stream. Pushpin 1.36 (condure, checked by running it) closes such a connection silently once
   its 8 KiB request buffer is full; both are checked to cut the client off early.
2. A WebSocket origin that never answers the handshake, or never ends its refusal body (F37),
   and a WebSocket-over-HTTP origin that never answers the OPEN or never ends its answer's body
   (F40): gripd answers the client Pushpin's WebSocket ``502`` once ``origin_response_timeout``
   passes (set to 1 s here). gripd only: Pushpin 1.36 (checked by running it) answers nothing
   in all these cases for as long as the origin keeps the connection open (50 s observed).

Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.procs import Impl, Server
from tests.support.raworigin import RawOrigin

WAIT = 5.0 * TIME_SCALE
SEND_MAX = 20 * 1024 * 1024  # what the endless client sends at most (bounded test)
SEND_SECONDS = 10.0
RSS_SLACK = 5 * 1024 * 1024  # a quarter of SEND_MAX: the proxy must not buffer the stream
CHUNK = 64 * 1024
WS_HANDSHAKE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

# -- 1. a client head line that never ends -----------------------------------------------------


async def send_endless(s: Server, prefix: bytes) -> tuple[bytes, int, int]:
    """Send ``prefix`` then ``a`` bytes without end (up to ``SEND_MAX`` / ``SEND_SECONDS``),
    sampling the proxy's RSS; returns (what the proxy answered, bytes sent, peak RSS growth)."""
    base = s.rss_bytes()
    peak = base
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(prefix)
    loop = asyncio.get_running_loop()
    end = loop.time() + SEND_SECONDS
    sent = 0
    chunk = b"a" * CHUNK
    answer = b""
    try:
        while sent < SEND_MAX and loop.time() < end and not reader.at_eof():
            writer.write(chunk)
            sent += CHUNK
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.5)
            peak = max(peak, s.rss_bytes())
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(65536), 0.001)
    except ConnectionError:
        pass  # the proxy closed: cut off
    with contextlib.suppress(ConnectionError, TimeoutError):
        while more := await asyncio.wait_for(reader.read(65536), 1.0):
            answer += more
    peak = max(peak, s.rss_bytes())
    writer.close()
    return answer, sent, peak - base


@pytest.mark.parametrize(
    "prefix",
    [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ", b"GET /"],
    ids=["header-value", "url"],
)
async def test_endless_client_head_line_is_cut_off(
    impl: Impl, start: StartFn, prefix: bytes
) -> None:
    """F3: the proxy stops an unfinished head long before the stream's end and does not keep
    it; gripd answers ``431`` first and logs it with the connection id."""
    s = await start(impl, ["* test"])
    answer, sent, growth = await send_endless(s, prefix)
    assert sent < SEND_MAX // 4, f"{impl} read {sent} bytes of an unfinished head"
    assert growth < RSS_SLACK, f"{impl} RSS grew by {growth} bytes"
    if impl == "gripd":
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert answer.endswith(b"\r\n\r\nRequest header fields too large.\n")
    else:
        assert answer == b""  # Pushpin 1.36 closes without a word


async def test_head_after_body_in_one_read_not_refused(start: StartFn) -> None:
    """F3: a body and the next head in one read: the head is not charged for the body bytes
    that came before it in that read (gripd counts its raw bytes from the next read on)."""
    s = await start("gripd", ["* test"])
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    body = b"b" * 60000
    first = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    writer.write(first)
    await writer.drain()
    await asyncio.sleep(0.2 * TIME_SCALE)
    writer.write(body + b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"c" * 4000)
    await writer.drain()
    await asyncio.sleep(0.2 * TIME_SCALE)
    writer.write(b"\r\n\r\n")
    await writer.drain()
    got = b""
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while got.count(b"HTTP/1.1 ") < 2 and loop.time() < end:
        with contextlib.suppress(TimeoutError):
            more = await asyncio.wait_for(reader.read(65536), 0.2)
            if not more:
                break
            got += more
    writer.close()
    assert got.count(b"HTTP/1.1 200 ") == 2, got[:500]


# -- 2. a WebSocket origin that never answers ----------------------------------------------------

SHORT = {"gripd": {"origin_response_timeout": "1", "origin_connect_timeout": "1"}}


class SilentOrigin(RawOrigin):
    """Answers the readiness probe; for anything else reads the head, then sends ``reply``
    (possibly nothing) and keeps the connection open without another word until cut off."""

    def __init__(self, reply: bytes = b"", hold: float = 20.0) -> None:
        super().__init__(WAIT)
        self.reply = reply
        self.hold = hold  # how long it stays silent at most (bounded test)
        self.heads = 0

    async def respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.heads += 1
        writer.write(self.reply)
        with contextlib.suppress(TimeoutError):
            while await asyncio.wait_for(reader.read(65536), self.hold):
                pass
        self.cut_off.set()


async def ws_answer(s: Server, path: bytes, within: float) -> tuple[bytes, float]:
    """Open a WebSocket through the proxy; the answer until the proxy closes (or ``within``
    seconds), and how long it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: example.com\r\n" + WS_HANDSHAKE + b"\r\n")
    data = b""
    end = t0 + within
    with contextlib.suppress(ConnectionError):
        while loop.time() < end:
            try:
                more = await asyncio.wait_for(reader.read(65536), end - loop.time())
            except TimeoutError:
                break
            if not more:
                break
            data += more
    writer.close()
    return data, loop.time() - t0


def assert_ws_502(data: bytes) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 502 Bad Gateway", data[:300]
    assert not any(x.lower().startswith(b"content-type:") for x in lines)
    assert body == b"Error while proxying to origin.\n"


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nnot all",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
    ],
    ids=["no-answer", "refusal-body-stalls", "head-stalls"],
)
async def test_ws_origin_silent_gets_502(start: StartFn, reply: bytes) -> None:
    """F37: a WebSocket origin that stops answering mid-handshake: 502 once
    ``origin_response_timeout`` passes, the origin connection is dropped, and a log line names
    the connection and route."""
    async with SilentOrigin(reply) as o:
        s = await start("gripd", [f"* 127.0.0.1:{o.port}"], conf=SHORT)
        data, took = await ws_answer(s, b"/ws", 10.0 * TIME_SCALE)
        assert_ws_502(data)
        assert took < 5.0 * TIME_SCALE
        await asyncio.wait_for(o.cut_off.wait(), WAIT)
        log = s.log_text()
        assert "ws /ws: timeout waiting for the origin's handshake answer" in log, log[-2000:]
        assert "conn " in log and " route " in log


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\n"
        b"Content-Length: 100\r\n\r\nOPEN\r\n",
    ],
    ids=["no-answer", "body-stalls"],
)
async def test_woh_origin_silent_gets_502(start: StartFn, reply: bytes) -> None:
    """F40: a WebSocket-over-HTTP origin that never answers the OPEN request, or stalls its
    answer's body: 502 once the request's time is up (no retry for the OPEN)."""
    async with SilentOrigin(reply) as o:
        s = await start("gripd", [f"* 127.0.0.1:{o.port},over_http"], conf=SHORT)
        data, took = await ws_answer(s, b"/woh", 10.0 * TIME_SCALE)
        assert_ws_502(data)
        assert took < 5.0 * TIME_SCALE
        await asyncio.wait_for(o.cut_off.wait(), WAIT)
        assert o.heads == 1
        assert "ws /woh: Error: timeout" in s.log_text()

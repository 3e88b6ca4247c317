"""Persistent connections on the control API (``[gripd] control_keep_alive``; off, every answer
closes as in Pushpin, F28): requests one after another and pipelined, answered in order, the
version and ``Connection`` rules, framing errors still closing, the idle deadline, an answer
that comes later (a history read) with requests behind it, and a peer that does not read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gripd.core.history import HistoryPolicy, Replay
from gripd.io.deadlines import DeadlineQueue
from gripd.io.handler.history import ReplayDone
from gripd.io.inputs.control_http import (
    ControlLimits,
    ControlProtocol,
    start_control_server,
)
from gripd.io.listener.flusher import Flusher
from tests.support.sinks import RecordingSink


def pub(i: int, extra: str = "", ver: str = "1.1") -> bytes:
    body = json.dumps(
        {"items": [{"channel": f"c{i}", "formats": {"http-stream": {"content": "x"}}}]}
    ).encode()
    head = f"POST /publish/ HTTP/{ver}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def answer(connection: str = "", ver: str = "1.1") -> bytes:
    return (
        f"HTTP/{ver} 200 OK\r\nContent-Type: text/plain\r\n{connection}Content-Length: 10\r\n\r\n"
        "Published\n"
    ).encode()


KEPT = answer()
CLOSED = answer("Connection: close\r\n")


class LaterHistory:
    """A history reader whose answers come only when the test releases them."""

    def __init__(self) -> None:
        self.waiting: list[ReplayDone] = []
        self.asked = asyncio.Event()

    def read(self, channel: str, after: str | None, limit: int, done: ReplayDone) -> None:
        self.waiting.append(done)
        self.asked.set()

    def set_policy(self, channel: str, policy: HistoryPolicy) -> None:
        pass


@contextlib.asynccontextmanager
async def serve(
    keep_alive: bool = True, header_timeout: float = 0.0, history: LaterHistory | None = None
) -> AsyncIterator[tuple[int, RecordingSink]]:
    sink = RecordingSink()
    limits = ControlLimits(10000, 100_000, header_timeout, keep_alive)
    srv = await start_control_server(sink, "127.0.0.1", 0, limits=limits, history=history)
    try:
        yield srv.sockets[0].getsockname()[1], sink
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
async def kept() -> AsyncIterator[tuple[int, RecordingSink]]:
    async with serve() as s:
        yield s


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), 5)


async def test_off_by_default_every_answer_closes() -> None:
    """F28: without the setting, an HTTP/1.1 request that asks nothing still gets
    ``Connection: close`` and the close, and a second request on it is never read."""
    async with serve(keep_alive=False) as (port, sink):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pub(0) + pub(1))
        got = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n")  # the body "exceeded" it
        assert sink.items == []
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pub(0))
        assert await asyncio.wait_for(reader.read(), 5) == CLOSED
        writer.close()


async def test_requests_one_after_another(kept: tuple[int, RecordingSink]) -> None:
    port, sink = kept
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(5):
        writer.write(pub(i))
        assert await read_exactly(reader, len(KEPT)) == KEPT
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    pushpin_api = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nPushpin API\n"
    )
    assert await read_exactly(reader, len(pushpin_api)) == pushpin_api
    writer.write(pub(5, "Connection: close\r\n"))
    assert await asyncio.wait_for(reader.read(), 5) == CLOSED  # answered, then EOF
    writer.close()
    assert [i.channel for i in sink.items] == [f"c{i}" for i in range(6)]


async def test_pipelined_requests_answered_in_order(kept: tuple[int, RecordingSink]) -> None:
    """200 requests in one write, and another 200 split at awkward places."""
    port, sink = kept
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(pub(i) for i in range(200)))
    assert await read_exactly(reader, 200 * len(KEPT)) == KEPT * 200
    data = b"".join(pub(i) for i in range(200, 400))
    for at in range(0, len(data), 37):
        writer.write(data[at : at + 37])
        await writer.drain()
    assert await read_exactly(reader, 200 * len(KEPT)) == KEPT * 200
    writer.close()
    assert [i.channel for i in sink.items] == [f"c{i}" for i in range(400)]


@pytest.mark.parametrize(
    ("ver", "connection", "reply", "stays"),
    [
        ("1.0", "", answer("Connection: close\r\n", "1.0"), False),
        ("1.0", "Connection: Keep-Alive\r\n", answer("Connection: keep-alive\r\n", "1.0"), True),
        ("1.1", "Connection: foo, CLOSE\r\n", CLOSED, False),
        ("1.1", "Connection: keep-alive\r\n", KEPT, True),
        ("1.2", "", CLOSED, False),
    ],
)
async def test_version_and_connection_header(
    kept: tuple[int, RecordingSink], ver: str, connection: str, reply: bytes, stays: bool
) -> None:
    """RFC 9112 9.3: HTTP/1.1 persists unless ``close``; HTTP/1.0 only with ``keep-alive``."""
    port, sink = kept
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(pub(0, connection, ver))
    if stays:
        assert await read_exactly(reader, len(reply)) == reply
        writer.write(pub(1, connection, ver))
        assert await read_exactly(reader, len(reply)) == reply
        assert len(sink.items) == 2
    else:
        assert await asyncio.wait_for(reader.read(), 5) == reply
        assert len(sink.items) == 1
    writer.close()


async def test_framing_error_answers_and_closes(kept: tuple[int, RecordingSink]) -> None:
    """A request after a good one with a bad Content-Length: 400 (Pushpin's text), then the
    close; the good one was answered and published, and nothing after the bad one is read."""
    port, sink = kept
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(pub(0) + b"POST /publish/ HTTP/1.1\r\nContent-Length: x\r\n\r\n" + pub(1))
    got = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    bad = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: 20\r\n\r\nBad Content-Length.\n"
    )
    assert got == KEPT + bad
    assert [i.channel for i in sink.items] == ["c0"]


async def test_idle_deadline_follows_the_last_answer() -> None:
    """With client_header_timeout 0.5 s: a request answered at 0.3 s moves the deadline to
    0.8 s (the first request's deadline, 0.5 s, no longer counts); an idle connection is
    closed without an answer, a partial request gets 408."""
    async with serve(header_timeout=0.5) as (port, sink):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        writer.write(pub(0))
        assert await read_exactly(reader, len(KEPT)) == KEPT
        await asyncio.sleep(0.3)
        writer.write(pub(1))
        assert await read_exactly(reader, len(KEPT)) == KEPT
        t1 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing sent
        assert time.monotonic() - t1 >= 0.45
        assert time.monotonic() - t0 >= 0.75
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pub(2) + pub(3)[:-3])
        got = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert got.startswith(KEPT + b"HTTP/1.1 408 Request Timeout\r\n")
        assert [i.channel for i in sink.items] == ["c0", "c1", "c2"]


async def test_requests_wait_behind_a_later_answer() -> None:
    """A history read answered later, with publishes pipelined behind it: they are read only
    after its answer, and the answers come in order."""
    history = LaterHistory()
    async with serve(history=history) as (port, sink):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        read = b"GET /channels/c/items HTTP/1.1\r\nAccept: application/json\r\n\r\n"
        writer.write(read + pub(0) + pub(1))
        await writer.drain()
        await asyncio.wait_for(history.asked.wait(), 5)
        await asyncio.sleep(0.1)
        assert sink.items == []  # behind the unanswered read
        history.waiting.pop()(Replay("ok", top=None))
        body = b'{"items":[],"last-id":null,"gone":false}\n'
        items = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert await read_exactly(reader, len(items) + 2 * len(KEPT)) == items + KEPT * 2
        assert [i.channel for i in sink.items] == ["c0", "c1"]
        writer.write(pub(2))  # the connection reads again
        assert await read_exactly(reader, len(KEPT)) == KEPT
        writer.close()


async def test_peer_that_does_not_read_is_paused_then_served() -> None:
    """A publisher pipelining 20,000 requests without reading: gripd stops reading it while
    its answers wait (small socket buffers, so the kernel cannot take them all), and once the
    answers are read every request is answered."""
    sink = RecordingSink()
    srv = await start_control_server(
        sink, "127.0.0.1", 0, limits=ControlLimits(10000, 100_000, 0.0, True)
    )
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # accepted sockets inherit these
        srv.sockets[0].setsockopt(socket.SOL_SOCKET, opt, 4096)
    n = 20_000
    data = b"".join(pub(i) for i in range(n))
    sock = socket.socket()
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, srv.sockets[0].getsockname())
        reader, writer = await asyncio.open_connection(sock=sock)
        sending = asyncio.create_task(_send_all(writer, data))
        await asyncio.sleep(0.5)  # the server reads until the answers back up
        assert len(sink.items) < n / 2  # it stopped reading; the answers are not read yet
        got = await read_exactly(reader, n * len(KEPT))
        await asyncio.wait_for(sending, 5)
        writer.close()
        assert got == KEPT * n
        assert len(sink.items) == n
    finally:
        srv.close()
        await srv.wait_closed()


async def _send_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_gripcontrol_reuses_its_connection(
    keep_alive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gripcontrol`` (requests' session underneath) publishes over one connection when the
    answers let it, and opens one per publish when they say ``Connection: close``."""
    import urllib3.util.connection
    from gripcontrol import GripPubControl  # type: ignore[import-untyped]

    opened = []
    create = urllib3.util.connection.create_connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return create(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)

    async with serve(keep_alive=keep_alive) as (port, sink):
        url = f"http://127.0.0.1:{port}"
        pub: Any = GripPubControl({"control_uri": url})

        await asyncio.to_thread(_publish_20, pub)
        assert [i.channel for i in sink.items] == [f"c{i}" for i in range(20)]
        assert len(opened) == (1 if keep_alive else 20)


def _publish_20(pub: Any) -> None:
    for i in range(20):
        pub.publish_http_stream(f"c{i}", "x", blocking=True)
    pub.clients[0].requests_session.close()  # its kept connection too


class _Transport(asyncio.Transport):
    """Records writes and whether reading is paused (for the protocol without a socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def _protocol(**kw: Any) -> tuple[ControlProtocol, _Transport]:
    loop = asyncio.get_running_loop()
    proto = ControlProtocol(
        RecordingSink(),
        max_headers_size=10000,
        max_body_size=100_000,
        logger=logging.getLogger("test.control"),
        loop=loop,
        keep_alive=True,
        flusher=Flusher(loop),
        **kw,
    )
    transport = _Transport()
    proto.connection_made(transport)
    return proto, transport


async def test_one_deadline_timer_for_a_busy_persistent_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A persistent publisher sending every 10 ms with a 50 ms header timeout: the server's
    deadline timer fires about once per timeout period (a connection queued again from the
    timer's own callback must not start a second timer, which then multiply)."""
    fires = 0
    fire = DeadlineQueue._fire

    def counting(self: DeadlineQueue) -> None:
        nonlocal fires
        fires += 1
        fire(self)

    monkeypatch.setattr(DeadlineQueue, "_fire", counting)
    loop = asyncio.get_running_loop()
    proto, transport = _protocol(header_timeout=0.05, deadlines=DeadlineQueue(loop))
    end = loop.time() + 1.5
    sent = 0
    while loop.time() < end:
        await asyncio.sleep(0.01)
        proto.data_received(pub(sent))
        sent += 1
    await asyncio.sleep(0)  # the last answer goes out at the end of the tick
    assert not transport.closed  # never timed out: each request came in time
    assert transport.written.count(b"HTTP/1.1 200 OK") == sent
    assert fires < 100, fires  # about 30 with one timer; hundreds when timers multiply


async def test_a_later_answer_does_not_resume_reading_while_writes_are_paused() -> None:
    """A history read answered while the peer does not read its answers (writing paused):
    the requests held behind it are answered, and reading stays paused until writing
    resumes."""
    history = LaterHistory()
    proto, transport = _protocol(history=history, history_timeout=0)
    read = b"GET /channels/a/items HTTP/1.1\r\nAccept: application/json\r\n\r\n"
    proto.data_received(read + pub(1) + pub(2))
    assert transport.paused and history.waiting
    proto.pause_writing()
    history.waiting.pop()(Replay("off"))
    await asyncio.sleep(0.05)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    assert transport.paused, "reading resumed while writing is paused"
    proto.resume_writing()
    assert not transport.paused

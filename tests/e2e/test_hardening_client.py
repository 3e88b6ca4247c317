"""Client listener hardening: pipelining bounds, header/idle timeouts, CONNECT, Host checks.

- Pipelined requests behind a held request are queued only up to ``client_pipeline_max`` /
  ``client_pipeline_bytes_max``; then gripd stops reading that connection (F12, F24, F48).
- ``client_header_timeout`` / ``client_idle_timeout`` close slow heads (408) and idle keep-alive
  connections (silently), on the client port and the control API (F28). Held connections are not
  idle. Pushpin 1.36 (condure, checked by running it) closes a connection silently 60 s after
  accept when no complete head arrived, and an idle keep-alive connection 60 s after its last
  response; these tests use 1 s timeouts, so they are gripd only.
- Garbage pipelined behind a held stream closes the connection; no ``400`` lands in the stream.
- ``CONNECT`` gets Pushpin's answer (502, its proxy error body) without contacting the origin.
- Two ``Host`` lines or a malformed ``Host`` get ``400`` (RFC 9112 §3.2; Pushpin forwards them).

Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from websockets.asyncio.client import connect

from tests.conftest import TIME_SCALE, StartFn
from tests.support import rawhttp
from tests.support.e2e import get, publish, stream_item
from tests.support.flood import push_until_blocked
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request

HOLD_STREAM = Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "hc")], "open\n")
SHORT = {"gripd": {"client_header_timeout": "1", "client_idle_timeout": "1"}}
MiB = 1024 * 1024


async def settle(s: Server) -> None:
    """Pushpin's handler learns of a new stream subscription ~1 s late (F24)."""
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.2) * TIME_SCALE)


async def read_until_closed(
    reader: asyncio.StreamReader, timeout: float = 10.0, limit: int = 1 << 20
) -> tuple[bytes, float]:
    """(everything read until EOF or reset, seconds it took); TimeoutError if still open."""
    return await rawhttp.read_until_closed(reader, timeout * TIME_SCALE, limit)


def recv_until(sock: socket.socket, needle: bytes) -> bytes:
    """Blocking reads (a timeout set on ``sock``) until ``needle``, EOF, a timeout or 1 MiB."""
    got = b""
    with contextlib.suppress(TimeoutError):
        while needle not in got and len(got) < MiB:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


# -- 1. pipelining bounds --------------------------------------------------------------------


async def test_pipelined_body_behind_held_stream_is_bounded(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """A 300 MB body pipelined behind a held stream: the proxy stops reading (Pushpin after a few
    MB, gripd at client_pipeline_bytes_max), so the client can push only what kernel buffers
    hold, and the stream still gets its messages."""
    origin.route("GET", "/stream", HOLD_STREAM)
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    rss0 = s.rss_bytes()
    sock = socket.create_connection(("127.0.0.1", s.http_port))
    try:
        sock.sendall(get("/stream"))
        sock.settimeout(10 * TIME_SCALE)
        head = await asyncio.to_thread(sock.recv, 65536)
        assert head.startswith(b"HTTP/1.1 200 "), head
        post = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 300000000\r\n\r\n"
        sock.sendall(post)
        cap = 96 * MiB
        sent = await asyncio.to_thread(push_until_blocked, sock, b"x" * 65536, cap, 1.0)
        grown = s.rss_bytes() - rss0
        # Measured: ~10 MiB accepted (kernel buffers); before the bound gripd took all 96 MiB.
        assert sent < 48 * MiB, (sent, grown)
        if impl == "gripd":
            assert grown < 24 * MiB, (sent, grown)
        await settle(s)
        await publish(s, [stream_item("hc", "still here\n")])
        sock.setblocking(True)
        sock.settimeout(5 * TIME_SCALE)
        got = await asyncio.to_thread(recv_until, sock, b"still here\n")
        assert b"still here\n" in got, got[:300]
    finally:
        sock.close()


async def test_pipelined_gets_behind_held_stream_are_bounded(
    start: StartFn, origin: Origin
) -> None:
    """gripd only (RSS): 300,000 pipelined GETs behind a held stream are not all parsed and
    queued; gripd stops at client_pipeline_max (it took ~150 MB before the bound)."""
    origin.route("GET", "/stream", HOLD_STREAM)
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"])
    rss0 = s.rss_bytes()
    sock = socket.create_connection(("127.0.0.1", s.http_port))
    try:
        sock.sendall(get("/stream"))
        sock.settimeout(10 * TIME_SCALE)
        assert (await asyncio.to_thread(sock.recv, 65536)).startswith(b"HTTP/1.1 200 ")
        one = get("/x")
        batch = one * 2000
        sent = await asyncio.to_thread(push_until_blocked, sock, batch, 300_000 * len(one), 1.0)
        await asyncio.sleep(0.5 * TIME_SCALE)
        grown = s.rss_bytes() - rss0
        assert grown < 16 * MiB, (sent, grown)
        assert not origin.requests_for("/x")
    finally:
        sock.close()


async def test_pipeline_pauses_and_resumes_in_order(start: StartFn, origin: Origin) -> None:
    """gripd only: with tiny caps, requests (with bodies) pipelined behind a slow one are all
    answered, in order, once it finishes: pausing never loses or reorders requests."""
    origin.route("GET", "/slow", Reply(200, body="slow\n", delay=0.5))

    def echo(r: RecordedRequest) -> Reply:
        return Reply(200, body=r.path.encode() + b":" + r.body + b"\n")

    for i in range(40):
        origin.route("*", f"/e{i}", echo)
    s = await start(
        "gripd",
        [f"* 127.0.0.1:{origin.port}"],
        conf={"gripd": {"client_pipeline_max": "3", "client_pipeline_bytes_max": "2048"}},
    )
    reqs = [get("/slow")]
    for i in range(40):
        if i % 2:
            reqs.append(get(f"/e{i}"))
        else:
            body = b"%d" % i * 300  # some bodies pass the byte cap on their own
            reqs.append(
                b"POST /e%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b"
                % (i, len(body), body)
            )
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    try:
        writer.write(b"".join(reqs))
        bodies = []
        for _ in range(len(reqs)):
            r = RawResponse(reader, writer)
            await r.head(10 * TIME_SCALE)
            bodies.append(await r.read_to_end(10 * TIME_SCALE))
        assert bodies[0] == b"slow\n"
        for i in range(40):
            exp_body = b"" if i % 2 else b"%d" % i * 300
            assert bodies[i + 1] == b"/e%d:%b\n" % (i, exp_body), i
    finally:
        writer.close()


# -- 2. header and idle timeouts -------------------------------------------------------------


async def test_slow_heads_get_408(start: StartFn, origin: Origin) -> None:
    """gripd only: slowloris heads (a byte at a time), a bare HTTP/0.9 line, and a connection
    that sends nothing all get 408 and a close at client_header_timeout (Pushpin: silent close
    after 60 s, and the HTTP/0.9 line at once)."""
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=SHORT)
    conns = [await asyncio.open_connection("127.0.0.1", s.http_port) for _ in range(20)]
    bare = await asyncio.open_connection("127.0.0.1", s.http_port)
    bare[1].write(b"GET /\r\n")
    silent = await asyncio.open_connection("127.0.0.1", s.http_port)
    head = get("/never")

    async def dribble(w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            for b in head[:-2]:  # never the final CRLF
                w.write(bytes([b]))
                await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(dribble(w)) for _, w in conns]
    try:
        # Read every connection at once, each as its bytes come: a dribbler writing after the
        # close gets a reset, and a reader not yet drained would see only that.
        outs = await asyncio.gather(
            *(read_until_closed(r, timeout=5) for r, _ in [*conns, bare, silent])
        )
        for out, _ in outs:
            assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), out
            assert b"Connection: close" in out
        assert not origin.requests_for("/never")
        assert "client_header_timeout" in s.log_text()
    finally:
        for t in tasks:
            t.cancel()
        for _, w in [*conns, bare, silent]:
            w.close()


async def test_error_answer_survives_a_client_still_sending(start: StartFn) -> None:
    """gripd only: after an error answer gripd shuts its write side and reads and drops what the
    client still sends (RFC 9112 9.6, a lingering close), so the client reads the answer
    instead of a reset; it closes as soon as the client does, and a client that goes on
    sending past the bound is closed."""
    s = await start("gripd", ["* test"], conf=SHORT)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000  # over client_buffer_size: 431
    loop = asyncio.get_running_loop()

    r, w = await asyncio.open_connection("127.0.0.1", s.http_port)
    w.write(big)
    for _ in range(5):  # still sending after the answer (a reset would come back now)
        await asyncio.sleep(0.05 * TIME_SCALE)
        w.write(b"a" * 100)
    await asyncio.sleep(0.3 * TIME_SCALE)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5 * TIME_SCALE)
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert b"Connection: close" in head
    # The client closes its side: gripd closes at once, not at the end of the linger.
    t0 = loop.time()
    w.write_eof()
    rest, _ = await rawhttp.read_until_closed(r, timeout=5 * TIME_SCALE)
    assert rest == b"Request header fields too large.\n"
    assert loop.time() - t0 < 1.0 * TIME_SCALE
    w.close()

    # A client that keeps sending is closed once it sent 64 KiB more (or after the linger).
    r, w = await asyncio.open_connection("127.0.0.1", s.http_port)
    w.write(big)
    with contextlib.suppress(OSError):
        for _ in range(40):  # 40 x 8 KiB, bounded
            w.write(b"a" * 8192)
            await w.drain()
            await asyncio.sleep(0.01)
    out = b""
    with contextlib.suppress(OSError):
        out, _ = await rawhttp.read_until_closed(r, timeout=5 * TIME_SCALE)
    assert out == b"" or out.startswith(b"HTTP/1.1 431 "), out[:100]
    w.close()


async def test_idle_keep_alive_closed_but_holds_kept(start: StartFn, origin: Origin) -> None:
    """gripd only: an idle keep-alive connection is closed silently after client_idle_timeout;
    a held stream, a long-poll and a WebSocket outlive both timeouts; a head pipelined behind a
    held stream gets no 408 written into the stream."""
    origin.route("GET", "/ok", Reply(200, body="ok\n"))
    origin.route("GET", "/stream", HOLD_STREAM)
    s = await start("gripd", ["*,path_beg=/ws test", f"* 127.0.0.1:{origin.port}"], conf=SHORT)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", s.http_port)
    stream = await open_request(s.http_port, get("/stream"))
    stream.writer.write(b"GET /ok HTTP/1.1\r\nHo")  # a partial head behind the held stream
    ws = await connect(f"ws://127.0.0.1:{s.http_port}/ws", open_timeout=5, ping_interval=None)
    try:
        idle_w.write(get("/ok"))
        out, took = await read_until_closed(idle_r, timeout=6)
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"ok\n"), out
        assert took >= 0.8, took  # the response came at once; the close ~1 s later
        assert await stream.read_body_until(b"open\n") == b"open\n"
        await asyncio.sleep(2.5 * TIME_SCALE)  # past both timeouts
        await publish(s, [stream_item("hc", "late\n")])
        got = await stream.read_body_until(b"late\n", timeout=5)
        assert b"HTTP/1.1" not in got, got
        await ws.send("ping?")
        assert await asyncio.wait_for(ws.recv(), 5) == "ping?"
    finally:
        stream.close()
        idle_w.close()
        await ws.close()


async def test_control_api_timeouts(start: StartFn, origin: Origin) -> None:
    """gripd only: the control API times out a partial head and a partial body (408, close)."""
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=SHORT)
    for data in [
        b"POST /publish/ HTTP/1.1\r\nHost: t\r\n",
        b'POST /publish/ HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"items":',
        b"",
    ]:
        r, w = await asyncio.open_connection("127.0.0.1", s.control_port)
        try:
            w.write(data)
            out, _ = await read_until_closed(r, timeout=5)
            assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (data, out)
        finally:
            w.close()
    assert await asyncio.to_thread(s.publish, [stream_item("x", "y")]) == (200, "Published\n")


# -- 3. garbage behind a held stream ---------------------------------------------------------


async def test_garbage_behind_held_stream_closes(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """Bytes that do not parse, pipelined behind a held stream, close the connection: a 400
    written there would land inside the chunked stream (F24, F47)."""
    origin.route("GET", "/stream", HOLD_STREAM)
    origin.route("POST", "/p", Reply(200, body="p\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    stream = await open_request(s.http_port, get("/stream"))
    try:
        assert await stream.read_body_until(b"open\n") == b"open\n"
        stream.writer.write(
            b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\x00\xff garbage\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError, TimeoutError):
            await stream.read_to_end(timeout=5)
        assert b"400 Bad Request" not in stream.raw, bytes(stream.raw)
        if impl == "gripd":
            assert stream.eof, bytes(stream.raw)
            assert "while a response is in progress" in s.log_text()
    finally:
        stream.close()


# -- 4. CONNECT ------------------------------------------------------------------------------


async def test_connect_answered_without_origin(impl: Impl, start: StartFn) -> None:
    """``CONNECT`` gets Pushpin 1.36's answer, 502 with its proxy error body, and the origin
    is never contacted (Pushpin's zurl fails on ``CONNECT http://:443``)."""
    accepted = 0

    async def count(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        w.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = await start(impl, [f"* 127.0.0.1:{port}"], probe=False)
        status, headers, body = await raw_request(
            s.http_port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        )
        assert (status, body) == (502, b"Error while proxying to origin.\n")
        assert headers["content-type"] == "text/plain"
        await asyncio.sleep(0.3 * TIME_SCALE)
        assert accepted == 0
    finally:
        server.close()


# -- 5. Host ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "why"),
    [
        ([b"t", b"u"], b"more than one Host header"),
        ([b"t", b"t"], b"more than one Host header"),
        ([b"a b"], b"invalid Host header"),
        ([b"a<b>"], b"invalid Host header"),
        ([b"t:80x"], b"invalid Host header"),
    ],
)
async def test_bad_host_gets_400(
    start: StartFn, origin: Origin, hosts: list[bytes], why: bytes
) -> None:
    """gripd only (Pushpin 1.36 forwards these, with the first or an empty Host): RFC 9112
    §3.2 says 400 for more than one Host line or an invalid Host value."""
    origin.route("GET", "/h", Reply(200, body="h\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"])
    lines = b"".join(b"Host: " + h + b"\r\n" for h in hosts)
    r, w = await asyncio.open_connection("127.0.0.1", s.http_port)
    try:
        w.write(b"GET /h HTTP/1.1\r\n" + lines + b"\r\n")
        out, _ = await read_until_closed(r)
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
        assert out.endswith(b"\r\n\r\nBad Request: " + why + b".\n"), out
        assert not origin.requests_for("/h")
        for good in [b"t:8080", b"[::1]:80", b"", b"xn--bcher-kva.example"]:
            status, _, body = await raw_request(
                s.http_port, b"GET /h HTTP/1.1\r\nHost: " + good + b"\r\n\r\n"
            )
            assert (status, body) == (200, b"h\n"), good
    finally:
        w.close()


async def test_unfinished_body_after_response_times_out(start: StartFn, origin: Origin) -> None:
    """gripd only: an origin answers before the request body is complete; the client never
    sends the rest. The connection is closed at client_header_timeout, not kept for good."""

    writers: list[asyncio.StreamWriter] = []

    async def early(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nearly\n")
            await w.drain()
            await asyncio.wait_for(r.read(), 10)
        w.close()

    raw = await asyncio.start_server(early, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    try:
        s = await start(
            "gripd",
            [f"*,path_beg=/early 127.0.0.1:{port}", f"* 127.0.0.1:{origin.port}"],
            conf=SHORT,
        )
        r, w = await asyncio.open_connection("127.0.0.1", s.http_port)
        try:
            w.write(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\npart")
            out, took = await read_until_closed(r, timeout=6)
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"early\n"), out
            assert took >= 0.8, took
        finally:
            w.close()
    finally:
        for ow in writers:
            ow.close()
        raw.close()
        await raw.wait_closed()
        await asyncio.sleep(0.1)

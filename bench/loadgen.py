"""Load-generator worker processes for ``bench/run.py``.

Each worker is a forked process running a uvloop event loop with raw ``asyncio.Protocol`` clients
(httptools parses responses; no aiohttp in the hot path). The parent drives it over a
``multiprocessing`` pipe with small dict commands; every reply carries the worker's own CPU
seconds (``cpu``) so the parent can show the load generator was not the bottleneck.

Latency: publishers embed ``time.monotonic_ns()`` in each message; CLOCK_MONOTONIC is system-wide
on Linux, so receivers in other processes subtract it directly.

Commands (``op``):

- ``sse``: open ``n`` SSE connections to ``path`` with at most ``inflight`` connects pending
  (Pushpin 1.36 answers 500/502 when ~200 arrive at once); waits for the response headers.
  ``path`` may contain ``{i}``: it is replaced by ``first + <index>`` (one channel per client).
- ``ws``: the same for WebSocket clients (``WsClient``); success is a ``101``.
- ``warm``: how many open SSE/WebSocket connections have seen a warm-up event (``w <t>``).
- ``reset``: forget fan-out counts and latencies (after warm-up).
- ``fan``: counts so far; ``fan_collect`` adds the latency samples (``array('q')`` bytes).
- ``lp``: run long-poll cycles for ``duration`` s and return the counts.
- ``close``: close everything and exit.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import os
import resource
import signal
import struct
import time
from multiprocessing.connection import Connection
from typing import Any, cast

import httptools
import uvloop

Msg = dict[str, Any]

#: Reads with more SSE events than this get sampled latency (see ``SseClient.on_body``).
SAMPLE_ABOVE = 8


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE := hard (20,000 on the bench machine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SseClient(asyncio.Protocol):
    """One held SSE connection; counts ``data: m<seq> <t_ns>`` events and their latency."""

    def __init__(self, worker: Worker, request: bytes) -> None:
        self.worker = worker
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers_done = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.pending: list[bytes] = []
        self.warm = False
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.worker.reads += 1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.worker.parse_errors += 1
            if self.transport is not None:
                self.transport.close()
        if self.pending:
            # One pass per read, not per HTTP chunk: a server that writes one chunk per event
            # would otherwise cost the load generator a Python call per event.
            body = b"".join(self.pending)
            self.pending.clear()
            self.events(body)

    def on_body(self, body: bytes) -> None:
        self.pending.append(body)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.headers_done.done():
            self.headers_done.set_result(self.status)

    def events(self, body: bytes) -> None:
        """Count the complete SSE events in ``body`` (plus what was buffered)."""
        self.buf += body
        end = self.buf.rfind(b"\n\n")
        if end < 0:
            return
        chunk, self.buf = self.buf[:end], self.buf[end + 2 :]
        now = time.monotonic_ns()
        w = self.worker
        n = chunk.count(b"\n\n") + 1
        if n > SAMPLE_ABOVE and self.warm and chunk.count(b"data: m") == n:
            # A burst (e.g. ZeroMQ fan-out) arrives as one read with many events: count them in C
            # and parse the timestamps of SAMPLE_ABOVE evenly spaced ones, each weighted by the
            # events it stands for, so the load generator stays cheap.
            events = chunk.split(b"\n\n")
            step = -(-n // SAMPLE_ABOVE)
            for i in range(0, n, step):
                sample = array.array("q", [now - int(events[i].rsplit(b" ", 1)[1])])
                w.lat.extend(sample * min(step, n - i))
            w.received += n
            if w.first_ns == 0:
                w.first_ns = now
            w.last_ns = now
            return
        events = chunk.split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data: "):
                continue
            parts = ev[6:].split(b" ")
            if len(parts) != 2:
                continue
            if parts[0] == b"w":
                self.warm = True
                continue
            w.received += 1
            w.lat.append(now - int(parts[1]))
            if w.first_ns == 0:
                w.first_ns = now
            w.last_ns = now

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.headers_done.done():
            self.headers_done.set_result(0)


class WsClient(asyncio.Protocol):
    """One WebSocket client (RFC 6455) with a hand-written handshake and a minimal frame reader.

    Server frames are unmasked; only frame boundaries and payloads matter here. Text or binary
    payloads ``m<seq> <t_ns>`` are counted with their latency, ``w <t_ns>`` marks the warm-up.
    A ping is answered with a pong (masked with a zero key, so the payload is unchanged); a close
    frame is counted and the connection closed. Fragmented messages are not reassembled (the
    benchmark's messages are small; a continuation frame is counted in ``ws_fragments``)."""

    def __init__(self, worker: Worker, request: bytes) -> None:
        self.worker = worker
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers_done = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.upgraded = False
        self.warm = False
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.worker.reads += 1
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536 and self.transport is not None:
                    self.transport.close()
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = -1
            if not self.headers_done.done():
                self.headers_done.set_result(self.status)
            if self.status != 101:
                return
            self.upgraded = True
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        w = self.worker
        pos = 0
        n = len(buf)
        now = 0
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                hdr = 10
            if b1 & 0x80:  # a masked server frame is a protocol error; count it, skip the key
                w.ws_masked += 1
                hdr += 4
            if n - pos < hdr + length:
                break
            opcode = b0 & 0x0F
            payload = bytes(buf[pos + hdr : pos + hdr + length])
            pos += hdr + length
            if opcode in (1, 2):
                if payload.startswith(b"w "):
                    self.warm = True
                    continue
                parts = payload.split(b" ")
                if len(parts) != 2 or not payload.startswith(b"m"):
                    w.ws_other += 1
                    continue
                if now == 0:
                    now = time.monotonic_ns()
                w.received += 1
                w.lat.append(now - int(parts[1]))
                if w.first_ns == 0:
                    w.first_ns = now
                w.last_ns = now
            elif opcode == 0:
                w.ws_fragments += 1
            elif opcode == 9 and self.transport is not None and len(payload) < 126:
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                w.ws_closes += 1
                code = str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "none"
                key = f"{code} {payload[2:42].decode('utf-8', 'replace')}".strip()
                w.ws_close_codes[key] = w.ws_close_codes.get(key, 0) + 1
                if self.transport is not None:
                    self.transport.close()
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.headers_done.done():
            self.headers_done.set_result(0)


def ws_request(path: str) -> bytes:
    """A client upgrade request (the key is random per connection, RFC 6455 4.1)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class LpClient(asyncio.Protocol):
    """A long-poll client on its own channel: poll, get the published body, poll again."""

    def __init__(self, worker: Worker, channel: str) -> None:
        self.worker = worker
        self.channel = channel
        self.request = f"GET /lp/{channel} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body = b""
        self.cycle = 0
        self.waiting = False
        self.sent_ns = 0
        self.published_ns = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.poll()

    def poll(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.parser = httptools.HttpResponseParser(self)
        self.body = b""
        self.waiting = True
        self.sent_ns = time.monotonic_ns()
        self.published_ns = 0
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.worker.parse_errors += 1
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        w = self.worker
        self.waiting = False
        status = self.parser.get_status_code()
        if status != 200:
            w.lp_errors += 1
            w.lp_statuses[status] = w.lp_statuses.get(status, 0) + 1
        elif self.body == b"%d\n" % self.cycle:
            w.lp_cycles += 1
            w.lat.append(time.monotonic_ns() - self.sent_ns)
        else:
            w.lp_stale += 1
        self.cycle += 1
        if not w.lp_running:
            return
        if self.parser.should_keep_alive():
            asyncio.get_running_loop().call_soon(self.poll)
        elif self.transport is not None:
            self.transport.close()  # connection_lost reconnects

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting = False
        if not self.closed.done():
            self.closed.set_result(None)


class Worker:
    """State of one load-generator process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sse: list[SseClient | WsClient] = []
        self.lat: array.array[int] = array.array("q")
        self.received = 0
        self.first_ns = 0
        self.last_ns = 0
        self.parse_errors = 0
        self.lp_running = False
        self.lp_cycles = 0
        self.lp_stale = 0
        self.lp_errors = 0
        self.lp_statuses: dict[int, int] = {}
        self.ws_masked = self.ws_other = self.ws_fragments = self.ws_closes = 0
        self.ws_close_codes: dict[str, int] = {}  # "code reason" -> count
        self.reads = 0  # data_received calls on SSE/WebSocket clients (how the server batches)

    async def recv(self) -> Msg:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, lambda: None if fut.done() else fut.set_result(None))
        try:
            await fut
        finally:
            loop.remove_reader(fd)
            # uvloop leaves the fd non-blocking; a big reply (latency samples) would then fail
            # with EAGAIN in Connection.send.
            os.set_blocking(fd, True)
        msg: Msg = self.conn.recv()
        return msg

    async def serve(self) -> None:
        while True:
            msg = await self.recv()
            op = msg["op"]
            reply: Msg
            if op in ("sse", "ws"):
                reply = await self.open_sse(msg)
            elif op == "warm":
                reply = {
                    "warm": sum(1 for c in self.sse if c.warm and c.open),
                    "open": sum(1 for c in self.sse if c.open),
                }
            elif op == "reset":
                self.lat = array.array("q")
                self.received = self.first_ns = self.last_ns = self.reads = 0
                reply = {}
            elif op in ("fan", "fan_collect"):
                reply = {
                    "received": self.received,
                    "first_ns": self.first_ns,
                    "last_ns": self.last_ns,
                    "open": sum(1 for c in self.sse if c.open),
                    "parse_errors": self.parse_errors,
                    "ws_masked": self.ws_masked,
                    "ws_other": self.ws_other,
                    "ws_fragments": self.ws_fragments,
                    "ws_closes": self.ws_closes,
                    "ws_close_codes": self.ws_close_codes,
                    "reads": self.reads,
                }
                if op == "fan_collect":
                    reply["lat"] = self.lat.tobytes()
            elif op == "lp":
                reply = await self.run_long_poll(msg)
            elif op == "close":
                for c in self.sse:
                    if c.transport is not None:
                        c.transport.abort()
                self.sse.clear()
                self.conn.send({"cpu": time.process_time()})
                return
            else:
                reply = {"error": f"unknown op {op}"}
            reply["cpu"] = time.process_time()
            self.conn.send(reply)

    async def open_sse(self, msg: Msg) -> Msg:
        """Open ``n`` SSE (or, for ``op == "ws"``, WebSocket) connections, ``inflight`` at a time,
        retrying a failed one up to 3x."""
        loop = asyncio.get_running_loop()
        port: int = msg["port"]
        n: int = msg["n"]
        first = int(msg.get("first", 0))
        ws = msg["op"] == "ws"
        want = 101 if ws else 200
        deadline = loop.time() + float(msg["deadline"])

        def factory(i: int) -> SseClient | WsClient:
            path = str(msg["path"]).replace("{i}", str(first + i))
            if ws:
                return WsClient(self, ws_request(path))
            req = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
            return SseClient(self, req.encode())

        sem = asyncio.Semaphore(int(msg["inflight"]))
        statuses: dict[str, int] = {}
        stats = {"ok": 0, "failed": 0, "retries": 0}
        started = time.monotonic()

        async def one(i: int) -> None:
            for attempt in range(4):
                if loop.time() > deadline:
                    break
                if attempt:
                    stats["retries"] += 1
                    await asyncio.sleep(0.1 * attempt)
                async with sem:
                    try:
                        _, proto = await asyncio.wait_for(
                            loop.create_connection(lambda: factory(i), "127.0.0.1", port),
                            max(0.1, deadline - loop.time()),
                        )
                        status = await asyncio.wait_for(
                            proto.headers_done, max(0.1, deadline - loop.time())
                        )
                    except (OSError, TimeoutError) as e:
                        key = type(e).__name__
                        statuses[key] = statuses.get(key, 0) + 1
                        continue
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == want:
                    self.sse.append(proto)
                    stats["ok"] += 1
                    return
                if proto.transport is not None:
                    proto.transport.close()
            stats["failed"] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
        return {**stats, "statuses": statuses, "seconds": time.monotonic() - started}

    async def run_long_poll(self, msg: Msg) -> Msg:
        """Long-poll cycles on per-client channels for ``duration`` s.

        A waiting client's channel is published ``settle_ms`` after its poll was sent (the hold
        must exist first; Pushpin does not queue for absent subscribers) and re-published every
        ``retry_ms`` until answered. Items for all due clients go in one publish request."""
        loop = asyncio.get_running_loop()
        port: int = msg["port"]
        settle = int(msg["settle_ms"]) * 1_000_000
        retry = int(msg["retry_ms"]) * 1_000_000
        prefix: str = msg["prefix"]
        self.lat = array.array("q")
        self.lp_cycles = self.lp_stale = self.lp_errors = 0
        self.lp_running = True
        clients: list[LpClient] = []
        connect_failures = 0
        sem = asyncio.Semaphore(int(msg["inflight"]))

        async def connect(i: int) -> None:
            nonlocal connect_failures
            async with sem:
                try:
                    _, proto = await loop.create_connection(
                        lambda: LpClient(self, f"{prefix}{i}"), "127.0.0.1", port
                    )
                    clients.append(proto)
                except OSError:
                    connect_failures += 1

        await asyncio.gather(*(connect(i) for i in range(int(msg["clients"]))))
        publishes = items_sent = publish_errors = reconnects = 0
        tasks: set[asyncio.Task[None]] = set()  # reconnects in progress (keep references)
        started = time.monotonic()
        end = started + float(msg["duration"])
        while time.monotonic() < end:
            now = time.monotonic_ns()
            due = [
                c
                for c in clients
                if c.waiting
                and now - c.sent_ns >= settle
                and (c.published_ns == 0 or now - c.published_ns >= retry)
            ]
            for c in clients:  # reconnect clients whose connection the server closed
                if c.closed.done() and self.lp_running:
                    reconnects += 1
                    clients.remove(c)
                    tasks.add(loop.create_task(connect(int(c.channel[len(prefix) :]))))
                    break
            for start in range(0, len(due), 500):
                batch = due[start : start + 500]
                items = [
                    {
                        "channel": c.channel,
                        "formats": {"http-response": {"body": f"{c.cycle}\n"}},
                    }
                    for c in batch
                ]
                ok = await publish(int(msg["control_port"]), items, end)
                publishes += 1
                items_sent += len(items)
                if not ok:
                    publish_errors += 1
                sent = time.monotonic_ns()
                for c in batch:
                    c.published_ns = sent
            await asyncio.sleep(0.005)
        self.lp_running = False
        elapsed = time.monotonic() - started
        for c in clients:
            if c.transport is not None:
                c.transport.abort()
        return {
            "cycles": self.lp_cycles,
            "stale": self.lp_stale,
            "errors": self.lp_errors,
            "error_statuses": {str(k): v for k, v in self.lp_statuses.items()},
            "seconds": elapsed,
            "publishes": publishes,
            "items": items_sent,
            "publish_errors": publish_errors,
            "connect_failures": connect_failures,
            "reconnects": reconnects,
            "lat": self.lat.tobytes(),
        }


async def publish(port: int, items: list[dict[str, Any]], deadline: float) -> bool:
    """One POST /publish/ (Connection: close, F28); True on 200. Bounded by ``deadline``."""
    body = json.dumps({"items": items}).encode()
    head = (
        f"POST /publish/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(max(1.0, deadline - time.monotonic() + 5.0)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body)
            status_line = await reader.readline()
            writer.close()
            return status_line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False


def worker_main(conn: Connection) -> None:
    """Entry point of a forked worker process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (fork)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    raise_nofile()
    uvloop.run(Worker(conn).serve())

"""SSE fan-out over HTTP/2 against HTTP/1.1 (over TLS, and plain), gripd alone.

Usage: ``python bench/h2fanout.py [--streams 10000] [--h2-connections 100] [--messages 20]
[--interval 0.05] [--gripd-workers 1] [--clients 2] [--quick]``; see bench/README.md.

Three modes, each on a fresh gripd (``[runner] https_ports`` with a certificate from a trustme CA
made by the script, ``message_rate``/``message_hwm`` = -1 as in ``run.py``):

- ``h2``: N SSE streams (``GET /stream/fan``) carried by C HTTP/2 connections (ALPN ``h2``);
- ``h1tls``: N HTTP/1.1 connections to the same TLS port (ALPN ``http/1.1``);
- ``h1``: N plain HTTP/1.1 connections to ``http_port`` (what ``run.py``'s fanout measures).

Connects (TLS handshakes, and HTTP/2 streams: a stream is in flight from its HEADERS until its
response head) are ramped with at most ``--inflight`` (50) in flight over all client processes,
then a warm-up, then M publishes ``--interval`` apart, then a drain; all as in ``run.py``.

The HTTP/2 client is cheap on purpose: the ``h2`` library only writes the client preface, the
SETTINGS (INITIAL_WINDOW_SIZE 2**30, ENABLE_PUSH 0), a connection WINDOW_UPDATE to 2**31-1 and
the HEADERS of each stream (h2 encodes HPACK); incoming frames are parsed by hand: DATA counts
``data: m`` events (every event's timestamp is parsed for latency), HEADERS/CONTINUATION are
HPACK-decoded (needed to keep the decoder's table in step) and ``:status`` must be 200, SETTINGS
and PING are acknowledged, RST_STREAM, GOAWAY and END_STREAM on a held stream are counted as
failures. A connection consumes far less than its 1 GiB windows in a run; the connection window
is topped up anyway once 256 MiB were received (a stream would need 1 GiB). The client does not
wait for the server's SETTINGS_MAX_CONCURRENT_STREAMS: the script sets ``[gripd]
http2_max_streams`` above what its busiest connection carries (``--h2-max-streams`` overrides).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime as dt
import json
import math
import re
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import h2.config
import h2.connection
import h2.settings
import hpack
import loadgen
import run  # bench/run.py; puts the repo root and bench/ on sys.path
import uvloop
from run import BENCH, Row, Workers, cpu_of, drain, latency_rows, machine, publish_item, split

from tests.support.procs import (
    NO_RATE_LIMIT,
    Server,
    free_ports,
    gripd_runnable,
    merge_conf,
    publish_http,
    raise_nofile_limit,
    start_server,
)
from tests.support.tlscerts import ca_file, install_default_cert, make_ca

MODES = ("h2", "h1tls", "h1")
TITLES = {"h2": "HTTP/2 (TLS)", "h1tls": "HTTP/1.1 over TLS", "h1": "HTTP/1.1 plain"}
Msg = dict[str, Any]

_FRAME = struct.Struct("!HBBBL")  # 24-bit length as H + B, type, flags, stream id
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
STREAM_WINDOW = 1 << 30
CONN_TOPUP = 1 << 28  # received DATA bytes after which the connection window is reopened


@dataclass
class Settings:
    """Sizes for one run; ``--quick`` shrinks them."""

    streams: int = 10_000
    h2_connections: int = 100
    messages: int = 20
    interval: float = 0.05
    inflight: int = 50
    h2_max_streams: int = 0  # [gripd] http2_max_streams; 0: what the busiest connection needs
    clients: int = 2


# -- the load generator (forked worker processes) ----------------------------------------------


class H2Client(asyncio.Protocol):
    """One HTTP/2 connection carrying many SSE streams; incoming frames are parsed by hand."""

    def __init__(self, worker: H2Worker, authority: bytes) -> None:
        self.worker = worker
        self.authority = authority
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.pending: dict[int, asyncio.Future[int]] = {}  # streams waiting for their head
        self.held: set[int] = set()  # streams answered 200 and not ended
        self.warm: set[int] = set()  # held streams that saw a warm-up event
        self.block = b""  # a header block waiting for CONTINUATION
        self.block_sid = 0
        self.block_flags = 0
        self.consumed = 0
        self.next_sid = 1
        self.alpn = ""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sslobj = transport.get_extra_info("ssl_object")
        self.alpn = (sslobj.selected_alpn_protocol() or "") if sslobj is not None else ""
        self.open = True
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW, codes.ENABLE_PUSH: 0},
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window((1 << 31) - 1 - 65_535)
        self.transport.write(self.conn.data_to_send())

    def open_stream(self, path: bytes) -> asyncio.Future[int]:
        """Send one GET (HEADERS with END_STREAM); the future gets the status (0: failed)."""
        sid = self.next_sid
        self.next_sid += 2
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.transport is None or not self.open:
            fut.set_result(0)
            return fut
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path),
            (b"accept", b"text/event-stream"),
        ]
        self.conn.send_headers(sid, headers, end_stream=True)
        self.pending[sid] = fut
        self.transport.write(self.conn.data_to_send())
        return fut

    def data_received(self, data: bytes) -> None:
        w = self.worker
        w.reads += 1
        buf = self.buf + data if self.buf else data
        n = len(buf)
        pos = 0
        now = 0
        got = 0
        while n - pos >= 9:
            hi, lo, typ, flags, sid = _FRAME.unpack_from(buf, pos)
            end = pos + 9 + (hi << 8 | lo)
            if end > n:
                break
            sid &= 0x7FFFFFFF
            if typ == 0:  # DATA
                payload = buf[pos + 9 : end]
                self.consumed += end - pos - 9
                if flags & 0x8:  # PADDED
                    payload = payload[1 : len(payload) - payload[0]]
                k = payload.count(b"data: m")
                if k:
                    if now == 0:
                        now = time.monotonic_ns()
                    got += k
                    if k == 1:
                        w.lat.append(now - int(payload.rsplit(b" ", 1)[1]))
                    else:
                        for ev in payload.split(b"\n\n"):
                            if ev.startswith(b"data: m"):
                                w.lat.append(now - int(ev.rsplit(b" ", 1)[1]))
                elif payload.startswith(b"data: w"):
                    self.warm.add(sid)
                if flags & 0x1:
                    self.stream_ended(sid)
            elif typ == 1:  # HEADERS
                block = buf[pos + 9 : end]
                if flags & 0x8:
                    block = block[1 : len(block) - block[0]]
                if flags & 0x20:  # PRIORITY
                    block = block[5:]
                self.block, self.block_sid, self.block_flags = block, sid, flags
                if flags & 0x4:
                    self.head_done()
            elif typ == 9:  # CONTINUATION
                self.block += buf[pos + 9 : end]
                if flags & 0x4:
                    self.head_done()
            elif typ == 4 and not flags & 0x1 and self.transport is not None:  # SETTINGS
                self.transport.write(SETTINGS_ACK)
            elif typ == 6 and not flags & 0x1 and self.transport is not None:  # PING
                self.transport.write(_FRAME.pack(0, 8, 6, 1, 0) + buf[pos + 9 : end])
            elif typ == 3:  # RST_STREAM
                w.h2_rst += 1
                self.stream_ended(sid, counted=False)
            elif typ == 7:  # GOAWAY
                w.h2_goaway += 1
                if end - pos >= 17:
                    code = str(int.from_bytes(buf[pos + 13 : pos + 17], "big"))
                    w.h2_goaway_codes[code] = w.h2_goaway_codes.get(code, 0) + 1
            pos = end
        self.buf = buf[pos:]
        if got:
            w.received += got
            if w.first_ns == 0:
                w.first_ns = now
            w.last_ns = now
        if self.consumed >= CONN_TOPUP and self.transport is not None:
            self.transport.write(_FRAME.pack(0, 4, 8, 0, 0) + self.consumed.to_bytes(4, "big"))
            self.consumed = 0

    def head_done(self) -> None:
        """A complete header block: the response head of a stream (or its trailers)."""
        sid, flags = self.block_sid, self.block_flags
        status = 0
        try:
            for name, value in self.decoder.decode(self.block, raw=True):
                if name == b":status":
                    status = int(value)
        except hpack.HPACKError:
            self.worker.parse_errors += 1
        self.block = b""
        fut = self.pending.pop(sid, None)
        if status == 200 and not flags & 0x1:
            self.held.add(sid)
        elif flags & 0x1:
            self.stream_ended(sid)
        if fut is not None and not fut.done():
            fut.set_result(status)

    def stream_ended(self, sid: int, *, counted: bool = True) -> None:
        if sid in self.held:
            self.held.discard(sid)
            self.worker.h2_ended += counted
        fut = self.pending.pop(sid, None)
        if fut is not None and not fut.done():
            fut.set_result(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result(0)
        self.pending.clear()


class H2Worker(loadgen.Worker):
    """A load-generator process: ``run.py``'s worker state plus HTTP/2 and TLS connects."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.h2conns: list[H2Client] = []
        self.h2_rst = self.h2_goaway = self.h2_ended = 0
        self.h2_goaway_codes: dict[str, int] = {}

    def counts(self) -> tuple[int, int]:
        """(held streams/connections that saw a warm-up event, held and open)."""
        warm = sum(1 for c in self.sse if c.warm and c.open)
        held = sum(1 for c in self.sse if c.open)
        for h in self.h2conns:
            if h.open:
                warm += len(h.warm & h.held)
                held += len(h.held)
        return warm, held

    async def serve(self) -> None:
        while True:
            msg = await self.recv()
            op = msg["op"]
            reply: Msg
            if op == "connect":
                reply = await self.connect(msg)
            elif op == "warm":
                warm, held = self.counts()
                reply = {"warm": warm, "open": held}
            elif op == "reset":
                self.lat = array.array("q")
                self.received = self.first_ns = self.last_ns = self.reads = 0
                reply = {}
            elif op in ("fan", "fan_collect"):
                reply = {
                    "received": self.received,
                    "first_ns": self.first_ns,
                    "last_ns": self.last_ns,
                    "open": self.counts()[1],
                    "parse_errors": self.parse_errors,
                    "reads": self.reads,
                    "h2_rst": self.h2_rst,
                    "h2_goaway": self.h2_goaway,
                    "h2_goaway_codes": self.h2_goaway_codes,
                    "h2_ended": self.h2_ended,
                }
                if op == "fan_collect":
                    reply["lat"] = self.lat.tobytes()
            elif op == "close":
                for c in [*self.sse, *self.h2conns]:
                    if c.transport is not None:
                        c.transport.abort()
                self.conn.send({"cpu": time.process_time()})
                return
            else:
                reply = {"error": f"unknown op {op}"}
            reply["cpu"] = time.process_time()
            self.conn.send(reply)

    async def connect(self, msg: Msg) -> Msg:
        """Open ``n`` held SSE streams (mode ``h2``: over ``conns`` connections), ``inflight``
        connects or streams pending at a time, each retried up to 3 times."""
        loop = asyncio.get_running_loop()
        mode: str = msg["mode"]
        port: int = msg["port"]
        n: int = msg["n"]
        path: str = msg["path"]
        deadline = loop.time() + float(msg["deadline"])
        ctx: ssl.SSLContext | None = None
        if mode != "h1":
            ctx = ssl.create_default_context(cafile=msg["cafile"])
            ctx.set_alpn_protocols(["h2" if mode == "h2" else "http/1.1"])
        want_alpn = {"h2": "h2", "h1tls": "http/1.1", "h1": ""}[mode]
        sem = asyncio.Semaphore(int(msg["inflight"]))
        statuses: dict[str, int] = {}
        stats = {"ok": 0, "failed": 0, "retries": 0, "conns": 0}
        started = time.monotonic()

        def note(key: str) -> None:
            statuses[key] = statuses.get(key, 0) + 1

        def left() -> float:
            return max(0.1, deadline - loop.time())

        async def dial(factory: Any) -> Any:
            """One connection (TLS handshake included); None on failure or wrong ALPN."""
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        factory,
                        "127.0.0.1",
                        port,
                        ssl=ctx,
                        server_hostname="localhost" if ctx else None,
                    ),
                    left(),
                )
            except (OSError, TimeoutError) as e:
                note(type(e).__name__)
                return None
            alpn = getattr(proto, "alpn", None)
            if alpn is None and ctx is not None:
                sslobj = proto.transport.get_extra_info("ssl_object")
                alpn = sslobj.selected_alpn_protocol() if sslobj is not None else ""
            if (alpn or "") != want_alpn:
                note(f"ALPN {alpn!r}")
                proto.transport.close()
                return None
            return proto

        if mode == "h2":
            authority = f"localhost:{port}".encode()
            conns: list[H2Client] = []

            async def connect_one() -> None:
                for attempt in range(4):
                    if loop.time() > deadline:
                        return
                    if attempt:
                        stats["retries"] += 1
                        await asyncio.sleep(0.1 * attempt)
                    async with sem:
                        proto = await dial(lambda: H2Client(self, authority))
                    if proto is not None:
                        conns.append(proto)
                        return

            await asyncio.gather(*(connect_one() for _ in range(int(msg["conns"]))))
            self.h2conns.extend(conns)
            stats["conns"] = len(conns)
            bpath = path.encode()

            async def stream_one(i: int) -> None:
                for attempt in range(4):
                    live = [c for c in conns if c.open]
                    if not live or loop.time() > deadline:
                        break
                    if attempt:
                        stats["retries"] += 1
                        await asyncio.sleep(0.1 * attempt)
                    c = live[i % len(live)]
                    async with sem:
                        fut = c.open_stream(bpath)
                        try:
                            status = await asyncio.wait_for(asyncio.shield(fut), left())
                        except TimeoutError:
                            note("TimeoutError")
                            continue
                    note(str(status))
                    if status == 200:
                        stats["ok"] += 1
                        return
                stats["failed"] += 1

            await asyncio.gather(*(stream_one(i) for i in range(n)))
        else:
            req = (
                f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
            )

            async def one(i: int) -> None:
                for attempt in range(4):
                    if loop.time() > deadline:
                        break
                    if attempt:
                        stats["retries"] += 1
                        await asyncio.sleep(0.1 * attempt)
                    async with sem:
                        proto = await dial(lambda: loadgen.SseClient(self, req))
                        if proto is None:
                            continue
                        try:
                            status = await asyncio.wait_for(proto.headers_done, left())
                        except TimeoutError:
                            status = 0
                    note(str(status))
                    if status == 200:
                        self.sse.append(proto)
                        stats["ok"] += 1
                        stats["conns"] += 1
                        return
                    if proto.transport is not None:
                        proto.transport.close()
                stats["failed"] += 1

            await asyncio.gather(*(one(i) for i in range(n)))
        return {**stats, "statuses": statuses, "seconds": time.monotonic() - started}


def worker_main(conn: Connection) -> None:
    """Entry point of a forked load-generator process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (fork)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    loadgen.raise_nofile()
    uvloop.run(H2Worker(conn).serve())


# -- the orchestrator --------------------------------------------------------------------------


def start_gripd(
    workdir: Path, origin_port: int, gripd_workers: int, st: Settings, cafile_ca: Any
) -> tuple[Server, int]:
    """A fresh gripd with an https port whose default certificate comes from ``cafile_ca``."""
    (https_port,) = free_ports(1)
    # (a start retried on a taken port carries the certificates along: start_server copies them)
    install_default_cert(cafile_ca, workdir, https_port)
    # Streams and connections are split per client process, so the busiest connection carries
    # ceil(streams of a client / its connections). gripd treats a stream over the limit as a
    # connection error (GOAWAY), which would drop every stream of that connection.
    per_conn = max(
        math.ceil(k / max(1, c))
        for k, c in zip(
            split(st.streams, st.clients), split(st.h2_connections, st.clients), strict=True
        )
    )
    max_streams = st.h2_max_streams or max(100, per_conn + 10)
    conf = merge_conf(
        NO_RATE_LIMIT,
        {
            "runner": {"https_ports": f"127.0.0.1:{https_port}"},
            "gripd": {
                "workers": str(gripd_workers),
                "http2_max_streams": str(max_streams),
            },
        },
    )
    server = start_server("gripd", workdir, [f"* 127.0.0.1:{origin_port}"], conf=conf, timeout=30)
    return server, https_port


def log_problems(text: str) -> tuple[int, list[str]]:
    """Lines of gripd's log at level WARN or above, and tracebacks."""
    bad = [
        line
        for line in text.splitlines()
        if re.match(r"\[(ERR|ERROR|WARN|WARNING|CRIT)", line) or "Traceback" in line
        # The start-up note on client_maxconn against the open-file limit is expected here.
        if "client_maxconn=" not in line
    ]
    return len(bad), bad[:5]


def profile_start(
    out: Path | None, server: Server, seconds: float
) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` (raw collapsed stacks) of gripd's tree, or None without ``--profile``."""
    if out is None:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(spy), "record", "--pid", str(server.proc.pid), "--subprocesses"]
    cmd += ["--format", "raw", "--rate", "200", "--duration", str(math.ceil(seconds))]
    return subprocess.Popen(
        [*cmd, "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_mode(
    mode: str,
    st: Settings,
    origin: tuple[int, int],
    workdir: Path,
    gripd_workers: int,
    ca: Any,
    cafile: Path,
    profile: Path | None,
) -> list[Row]:
    """One mode on a fresh gripd: connect, warm up, publish, drain; the rows of its column."""
    origin_port, origin_pid = origin
    server, https_port = start_gripd(workdir, origin_port, gripd_workers, st, ca)
    workers = Workers(st.clients, worker_main)
    try:
        return measure(mode, st, server, https_port, workers, cafile, origin_pid, profile)
    finally:
        workers.close()
        server.stop()


def measure(
    mode: str,
    st: Settings,
    server: Server,
    https_port: int,
    workers: Workers,
    cafile: Path,
    origin_pid: int,
    profile: Path | None,
) -> list[Row]:
    n = st.streams
    rows: list[Row] = []
    time.sleep(0.5)
    rss0 = server.rss_bytes()
    cpu0 = server.cpu_seconds()
    workers.mark()
    parts = split(n, st.clients)
    conns = split(st.h2_connections, st.clients)
    inflight = split(st.inflight, st.clients)
    t0 = time.monotonic()
    port = server.http_port if mode == "h1" else https_port
    base = {"op": "connect", "mode": mode, "port": port, "path": "/stream/fan", "deadline": 300}
    base["cafile"] = str(cafile)
    msgs = [
        {**base, "n": k, "conns": c, "inflight": max(1, f)}
        for k, c, f in zip(parts, conns, inflight, strict=True)
    ]
    res = workers.call(msgs, timeout=330)
    connect_s = time.monotonic() - t0
    ok = sum(r["ok"] for r in res)
    statuses: Counter[str] = Counter()
    for r in res:
        statuses.update(r["statuses"])
    rows.append(("held streams ok / asked", f"{ok} / {n}"))
    rows.append(("TCP connections", str(sum(r["conns"] for r in res))))
    rows.append((f"connect time s (≤{st.inflight} in flight)", f"{connect_s:.1f}"))
    rows.append(("connect statuses", json.dumps(statuses, sort_keys=True)))
    rows.append(("connect retries", str(sum(r["retries"] for r in res))))
    warm = 0
    for _ in range(60):  # publish until every stream saw one (its subscription exists)
        publish_http(server.control_port, [publish_item("http-stream", "w")])
        time.sleep(0.5)
        warm = sum(r["warm"] for r in workers.all({"op": "warm"}))
        if warm >= ok:
            break
    rows.append(("subscribed after warm-up", str(warm)))
    time.sleep(2.0)  # idle
    rss = server.rss_bytes()
    rows.append(("gripd RSS baseline MiB", f"{rss0 / 2**20:.1f}"))
    rows.append(("gripd RSS with N held MiB", f"{rss / 2**20:.1f}"))
    rows.append(("gripd RSS per held stream KiB", f"{(rss - rss0) / max(1, ok) / 1024:.2f}"))
    rows.append(("gripd CPU s (connect + warm-up)", f"{server.cpu_seconds() - cpu0:.2f}"))
    rows.append(("loadgen CPU s (connect + warm-up)", f"{workers.cpu():.2f}"))

    workers.all({"op": "reset"})
    cpu1 = server.cpu_seconds()
    ocpu1 = cpu_of(origin_pid)
    spy = profile_start(profile, server, st.messages * st.interval + 3)
    load = Path("/proc/loadavg").read_text().split()[0]
    workers.mark()
    wall0 = time.monotonic()
    t_pub0 = time.monotonic_ns()
    pub_err = 0
    for i in range(st.messages):
        delay = (t_pub0 + int(i * st.interval * 1e9) - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        status, _ = publish_http(server.control_port, [publish_item("http-stream", f"m{i}")])
        pub_err += status != 200
    publish_s = (time.monotonic_ns() - t_pub0) / 1e9
    expected = st.messages * ok
    d = drain(workers, expected)
    gripd_cpu = server.cpu_seconds() - cpu1
    wall = time.monotonic() - wall0
    lg_cpu = workers.cpu()
    busiest = max(b - a for a, b in zip(workers.cpu_start, workers.cpu_last, strict=True))
    if spy is not None:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)
    received = d["received"]
    span = (d["last_ns"] - t_pub0) / 1e9 if d["last_ns"] else float("nan")
    final = workers.all({"op": "fan"})
    rows.append(("messages published (interval s)", f"{st.messages} ({st.interval})"))
    rows.append(("publish errors", str(pub_err)))
    rows.append(("publish wall time s", f"{publish_s:.2f}"))
    rows.append(("host load average (1 min) before publishing", load))
    rows.append(("deliveries received / expected", f"{received} / {expected}"))
    rows.append(("deliveries lost", str(expected - received)))
    rows.append(("deliveries/s (first publish → last receive)", f"{received / span:,.0f}"))
    rows.extend(latency_rows(d["lat"]))
    rows.append(("streams still held after drain", f"{d['open']} / {ok}"))
    rows.append(("deliveries per client read", f"{received / max(1, d['reads']):.2f}"))
    rows.append(("gripd CPU s (publish phase)", f"{gripd_cpu:.2f}"))
    rows.append(("gripd CPU s per 1k deliveries", f"{gripd_cpu / max(1, received) * 1000:.4f}"))
    # Well under 100 % × workers while deliveries were pending: gripd waited for a core.
    rows.append(
        (
            "gripd CPU, % of one core (first publish → last receive)",
            f"{100 * gripd_cpu / span:.0f} %",
        )
    )
    rows.append((f"loadgen CPU s (publish phase, {st.clients} processes)", f"{lg_cpu:.2f}"))
    rows.append(("busiest loadgen process, % of one core", f"{100 * busiest / wall:.0f} %"))
    rows.append(("origin CPU s (publish phase)", f"{cpu_of(origin_pid) - ocpu1:.2f}"))
    if mode == "h2":
        codes: Counter[str] = Counter()
        for r in final:
            codes.update(r["h2_goaway_codes"])
        rows.append(
            (
                "GOAWAY / RST_STREAM / streams ended by gripd",
                f"{sum(r['h2_goaway'] for r in final)} {json.dumps(codes)} / "
                f"{sum(r['h2_rst'] for r in final)} / {sum(r['h2_ended'] for r in final)}",
            )
        )
    rows.append(("client parse errors", str(sum(r["parse_errors"] for r in final))))
    count, sample = log_problems(server.log_text())
    rows.append(("gripd log: error/warning lines", str(count)))
    for line in sample:
        print(f"  gripd log: {line[:300]}", file=sys.stderr)
    return rows


RATIOS = (
    ("deliveries/s", "deliveries/s (first publish → last receive)"),
    ("gripd CPU s per 1k deliveries", "gripd CPU s per 1k deliveries"),
    ("gripd RSS per held stream", "gripd RSS per held stream KiB"),
    ("latency p50", "latency p50 ms"),
    ("latency p99", "latency p99 ms"),
    ("connect time", "connect time s"),
)


def number(text: str) -> float:
    m = re.match(r"-?[\d,]*\.?\d+", text.strip())
    return float(m.group(0).replace(",", "")) if m else float("nan")


def lookup(rows: dict[str, str], prefix: str) -> str:
    """The value of the first metric whose name starts with ``prefix``."""
    return next((v for k, v in rows.items() if k.startswith(prefix)), "")


def table(results: dict[str, list[Row]]) -> str:
    """The modes side by side, then the ratios of HTTP/2 to each HTTP/1.1 mode."""
    present = [m for m in MODES if m in results]
    out = ["| metric | " + " | ".join(TITLES[m] for m in present) + " |"]
    out.append("|---|" + "---|" * len(present))
    metrics: list[str] = []
    for m in present:
        for k, _ in results[m]:
            if k not in metrics:
                metrics.append(k)
    for k in metrics:
        out.append(f"| {k} | " + " | ".join(dict(results[m]).get(k, "") for m in present) + " |")
    if "h2" in results and len(present) > 1:
        others = [m for m in present if m != "h2"]
        out.append("")
        out.append("| ratio | " + " | ".join(f"h2 / {TITLES[m]}" for m in others) + " |")
        out.append("|---|" + "---|" * len(others))
        h2v = dict(results["h2"])
        for label, key in RATIOS:
            vals = []
            for m in others:
                a, b = number(lookup(h2v, key)), number(lookup(dict(results[m]), key))
                vals.append(f"{a / b:.2f}×" if b and not math.isnan(a / b) else "n/a")
            out.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gripd SSE fan-out: HTTP/2 vs HTTP/1.1")
    ap.add_argument("--streams", type=int, help="held SSE streams N (10,000)")
    ap.add_argument("--h2-connections", type=int, help="HTTP/2 connections carrying them (100)")
    ap.add_argument("--messages", type=int, help="messages published (20)")
    ap.add_argument("--interval", type=float, help="seconds between publishes (0.05)")
    ap.add_argument("--gripd-workers", default="1", help="[gripd] workers, or a list: 1,2")
    ap.add_argument("--clients", type=int, help="load-generator processes (2)")
    ap.add_argument("--inflight", type=int, help="connects/streams in flight, all clients (50)")
    ap.add_argument(
        "--h2-max-streams",
        type=int,
        help="[gripd] http2_max_streams (default: streams per busiest connection + 10, min 100)",
    )
    ap.add_argument(
        "--mode", choices=MODES, action="append", help="run only this mode (repeatable)"
    )
    ap.add_argument("--quick", action="store_true", help="1,000 streams on 10 connections")
    ap.add_argument("--workdir", type=Path, help="keep every gripd's config and log here")
    ap.add_argument(
        "--profile", type=Path, help="directory: py-spy raw stacks of gripd's publish phase"
    )
    args = ap.parse_args(argv)
    st = Settings(streams=1000, h2_connections=10, messages=10) if args.quick else Settings()
    for name in ("streams", "h2_connections", "messages", "clients", "inflight", "h2_max_streams"):
        if getattr(args, name):
            setattr(st, name, getattr(args, name))
    if args.interval is not None:
        st.interval = args.interval
    if not gripd_runnable():
        print("gripd/__main__.py missing", file=sys.stderr)
        return 2
    modes = list(dict.fromkeys(args.mode or MODES))
    if "h2" in modes and st.h2_connections < st.clients:
        ap.error("--h2-connections must be at least --clients (each client opens its own)")
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, run._on_sigterm)
    origin, origin_port = run.start_origin()
    started = dt.datetime.now(dt.UTC)
    text = ""
    try:
        with tempfile.TemporaryDirectory(prefix="gripd-h2fan-") as tmp:
            workdir = args.workdir.resolve() if args.workdir else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            ca = make_ca()
            cafile = ca_file(ca, workdir)
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            for w in (int(x) for x in args.gripd_workers.split(",")):
                results: dict[str, list[Row]] = {}
                for mode in modes:
                    print(f"[workers={w}] {mode} ...", file=sys.stderr, flush=True)
                    spy = args.profile / f"w{w}-{mode}.txt" if args.profile else None
                    results[mode] = run_mode(
                        mode,
                        st,
                        (origin_port, origin.pid),
                        workdir / f"w{w}-{mode}",
                        w,
                        ca,
                        cafile,
                        spy,
                    )
                text += f"\n### gripd workers = {w}\n\n" + table(results)
    finally:
        origin.terminate()
        origin.wait(10)
    cmd = "python bench/h2fanout.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"## {started:%Y-%m-%d %H:%M} UTC — `{cmd.strip()}`\n\n{machine()}; {st}; "
        f"loadavg at end {Path('/proc/loadavg').read_text().split()[:3]}\n"
    )
    print(header + text)
    outdir = BENCH / "out"
    outdir.mkdir(exist_ok=True)
    with open(outdir / "h2fanout.md", "a") as f:
        f.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

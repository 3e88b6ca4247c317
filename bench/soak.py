"""gripd soak run: bounded churn against one gripd, sampling its RSS and open descriptors.

Starts ``bench/origin.py`` (stream holds, response holds, WebSocket-over-HTTP and a GRIP
WebSocket origin) and one gripd on loopback from a generated pushpin.conf
(``tests.support.procs.start_server``), then runs a mixed client load until ``--duration`` ends:

- SSE stream holds, long-polls (re-polled on the same connection), WebSocket-over-HTTP and GRIP
  WebSocket clients that subscribe, receive and disconnect normally;
- clients that reset the connection (``SO_LINGER`` 0, then close: an RST);
- slow readers with a tiny receive buffer that never read, on channels that get large messages,
  so the slow-client policy (``client_write_buffer_max``) applies;
- clients that send part of a request head and stall (``client_header_timeout`` reaps them);
- pipelined requests, some long enough to hit ``client_pipeline_max``, some followed by an idle
  keep-alive wait (``client_idle_timeout`` reaps them);
- a publisher posting to the HTTP control API at a steady rate over many channels, including
  out-of-order ``prev-id`` items (sequencer buffers) and a few duplicate ids.

Every ``--interval`` seconds it prints gripd's VmRSS (/proc/<pid>/status), its open descriptors
(/proc/<pid>/fd) and the clients' counters. At the end it stops the load, waits for gripd's
descriptors to drain, checks gripd still works, and prints a verdict. Exit status: 0 when RSS and
descriptors stayed flat, 1 when they grew (or gripd died, logged a traceback, or stopped
delivering), 2 when the run could not be set up.

Flatness: the samples after ``--warmup`` (a quarter of the run, at most 150 s: gripd's RSS grows
for the first two minutes or so, then levels off) are split into thirds; the last third's
maximum must not exceed the first third's maximum by more than ``--rss-tolerance`` (10 %) + 2 MiB
for RSS and ``--fd-tolerance`` (20 %) + 16 for descriptors. After the load stops, descriptors must
come back to within 16 of the count before the load.

Everything is bounded: the run by ``--duration``, each client by a per-kind lifetime and a hard
cap, the drain by a timeout; at most ``--scale`` x ~220 concurrent client connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from tests.support.procs import Server, raise_nofile_limit, start_server  # noqa: E402

MiB = 1024 * 1024
#: Extra descriptors allowed after the drain (origin keep-alive pool, listeners' churn).
FD_DRAIN_SLACK = 16
#: Hard cap on any single client's life, whatever its kind (seconds).
CLIENT_CAP = 120.0
#: Channels for the slow readers. Each gets a BIG_MESSAGE item 10/BIG_CHANNELS times a second:
#: 160 KiB/s, enough to fill the ~3 MiB the kernel buffers for a non-reading loopback peer and
#: then ``client_write_buffer_max`` within a slow reader's life.
BIG_CHANNELS = 2
BIG_MESSAGE = 32768


@dataclass
class Opts:
    """Command-line options."""

    duration: float
    interval: float
    warmup: float
    rate: float
    channels: int
    scale: float
    rss_tolerance: float
    fd_tolerance: float
    header_timeout: float
    idle_timeout: float
    workdir: Path | None
    conf: list[str]
    seed: int


@dataclass
class Sample:
    t: float
    rss: int
    fds: int


@dataclass
class Ctx:
    """Shared state of one run."""

    port: int
    control_port: int
    opts: Opts
    deadline: float
    stats: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)

    def channel(self) -> str:
        return f"c{self.rng.randrange(self.opts.channels)}"


# --- small HTTP / WebSocket helpers ---------------------------------------------------------------


async def connect(
    port: int, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A loopback TCP connection; ``rcvbuf`` shrinks SO_RCVBUF before connecting."""
    if rcvbuf is None:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10
        )
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER on with a 0 timeout, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close(writer: asyncio.StreamWriter) -> None:
    """A normal close (FIN), waiting at most 2 s."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def read_head(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of one response head."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """One whole response with a Content-Length or chunked body (no body for 1xx/204/304)."""
    status, headers = await read_head(reader, timeout)
    if status in (204, 304) or status < 200:
        return status, b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        return status, await asyncio.wait_for(reader.readexactly(n), timeout)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        for _ in range(10_000):
            size = int((await asyncio.wait_for(reader.readline(), timeout)).split(b";")[0], 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
            if size == 0:
                return status, body
            body += chunk[:-2]
        raise ValueError("too many chunks")
    return status, await asyncio.wait_for(reader.read(1 << 20), timeout)


def request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\n{extra}\r\n".encode()


def ws_request(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return request(
        path,
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
    )


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (payload < 126 bytes here)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def ws_read_frame(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), timeout)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
    elif n == 127:
        n = struct.unpack("!Q", await asyncio.wait_for(reader.readexactly(8), timeout))[0]
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(n), timeout)


# --- client kinds ---------------------------------------------------------------------------------


async def sse_client(ctx: Ctx) -> None:
    """Subscribe to a stream hold, read for 2-15 s, close normally."""
    reader, writer = await connect(ctx.port)
    try:
        writer.write(request(f"/stream/{ctx.channel()}"))
        status, _ = await read_head(reader, 10)
        ctx.stats[f"sse {status}"] += 1
        end = time.monotonic() + ctx.rng.uniform(2, 15)
        while (left := end - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not data:
                ctx.stats["sse closed by server"] += 1
                break
            ctx.stats["events"] += data.count(b"data:")
    finally:
        await close(writer)


async def lp_client(ctx: Ctx) -> None:
    """Long-poll up to 3 times on one keep-alive connection; give up on a poll after 3-20 s."""
    reader, writer = await connect(ctx.port)
    try:
        channel = ctx.channel()
        for _ in range(3):
            writer.write(request(f"/lp/{channel}"))
            try:
                status, _ = await read_response(reader, ctx.rng.uniform(3, 20))
            except TimeoutError:
                ctx.stats["lp abandoned"] += 1
                return
            ctx.stats[f"lp {status}"] += 1
            if status != 200:
                return
    finally:
        await close(writer)


async def ws_client(ctx: Ctx, prefix: str) -> None:
    """A WebSocket on ``prefix`` (``woh`` or ``wsg``): read 2-15 s, then a clean close."""
    reader, writer = await connect(ctx.port)
    try:
        writer.write(ws_request(f"/{prefix}/{ctx.channel()}"))
        status, _ = await read_head(reader, 10)
        ctx.stats[f"{prefix} {status}"] += 1
        if status != 101:
            return
        end = time.monotonic() + ctx.rng.uniform(2, 15)
        while (left := end - time.monotonic()) > 0:
            try:
                op, payload = await ws_read_frame(reader, left)
            except TimeoutError:
                break
            if op == 0x8:
                ctx.stats[f"{prefix} closed by server"] += 1
                return
            if op == 0x9:
                writer.write(ws_frame(0xA, payload[:125]))
            elif op in (0x1, 0x2):
                ctx.stats["ws messages"] += 1
        writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
        for _ in range(100):  # wait for the server's close frame (bounded)
            op, _ = await ws_read_frame(reader, 5)
            if op == 0x8:
                ctx.stats[f"{prefix} clean close"] += 1
                break
    finally:
        await close(writer)


async def rst_client(ctx: Ctx) -> None:
    """Open a stream hold, long-poll or WebSocket and reset it after 0-3 s."""
    reader, writer = await connect(ctx.port)
    kind = ctx.rng.choice(["stream", "lp", "woh"])
    ch = ctx.channel()
    try:
        writer.write(ws_request(f"/woh/{ch}") if kind == "woh" else request(f"/{kind}/{ch}"))
        if kind != "lp":
            await read_head(reader, 10)
        await asyncio.sleep(ctx.rng.uniform(0, 3))
    finally:
        reset(writer)
    ctx.stats["rst sent"] += 1


async def slow_client(ctx: Ctx) -> None:
    """Subscribe to a large-message channel with a 4 KiB receive buffer and never read for
    30-60 s, then reset. The server's send buffer fills and the slow-client policy applies."""
    _, writer = await connect(ctx.port, rcvbuf=4096)
    try:
        writer.write(request(f"/stream/big{ctx.rng.randrange(BIG_CHANNELS)}"))
        await asyncio.sleep(ctx.rng.uniform(30, 60))
        # A closed-by-server connection (slow_client_policy=close) reads EOF eventually.
        ctx.stats["slow done"] += 1
    finally:
        reset(writer)


async def stall_client(ctx: Ctx) -> None:
    """Send half a request head and stall; expect 408 and a close within the header timeout."""
    reader, writer = await connect(ctx.port)
    try:
        writer.write(b"GET /stream/x HTTP/1.1\r\nHost: soak\r\nX-Partial: ")
        limit = ctx.opts.header_timeout * 3 + 5
        try:
            data = await asyncio.wait_for(reader.read(4096), limit)
        except TimeoutError:
            ctx.stats["stall not reaped"] += 1
            return
        if data.startswith(b"HTTP/1.1 408"):
            ctx.stats["stall 408"] += 1
        elif not data:
            ctx.stats["stall closed"] += 1
        else:
            ctx.stats["stall other"] += 1
    finally:
        await close(writer)


async def pipeline_client(ctx: Ctx) -> None:
    """Pipeline 2-48 requests (sometimes a long-poll first), read every answer; a third of the
    time then wait for the keep-alive idle close."""
    reader, writer = await connect(ctx.port)
    try:
        n = ctx.rng.choice([2, 4, 8, 48])
        reqs = [request("/pass")] * n
        if ctx.rng.random() < 0.2:
            reqs[0] = request(f"/lp/{ctx.channel()}")
        writer.write(b"".join(reqs))
        for i in range(n):
            try:
                status, _ = await read_response(reader, 30)
            except TimeoutError:
                # Which shape stalls, for the report (a long-poll first waits for a publish).
                lp = "lp first" if reqs[0] != reqs[-1] else "pass only"
                ctx.stats[f"pipe stalled: {n} requests, {lp}, after {i} responses"] += 1
                raise
            ctx.stats[f"pipe {status}"] += 1
        ctx.stats["pipe batches"] += 1
        if ctx.rng.random() < 0.33:
            try:
                data = await asyncio.wait_for(reader.read(4096), ctx.opts.idle_timeout * 2 + 5)
            except TimeoutError:
                ctx.stats["idle not reaped"] += 1
                return
            ctx.stats["idle closed" if not data else "idle other"] += 1
    finally:
        await close(writer)


KINDS: dict[str, tuple[int, Callable[[Ctx], Awaitable[None]]]] = {
    # kind: (concurrent clients at --scale 1, coroutine)
    "sse": (80, sse_client),
    "lp": (40, lp_client),
    "woh": (25, lambda c: ws_client(c, "woh")),
    "wsg": (10, lambda c: ws_client(c, "wsg")),
    "rst": (20, rst_client),
    "slow": (10, slow_client),
    "stall": (10, stall_client),
    "pipe": (15, pipeline_client),
}


async def slot(ctx: Ctx, kind: str, fn: Callable[[Ctx], Awaitable[None]]) -> None:
    """One concurrent client of ``kind``, reconnecting until the deadline."""
    await asyncio.sleep(ctx.rng.uniform(0, 5))  # stagger the start
    while time.monotonic() < ctx.deadline:
        try:
            await asyncio.wait_for(fn(ctx), CLIENT_CAP)
            ctx.stats[f"{kind} ok"] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
            ctx.stats[f"{kind} error {type(e).__name__}"] += 1
            await asyncio.sleep(0.5)
        await asyncio.sleep(ctx.rng.uniform(0, 0.5))


# --- publisher ------------------------------------------------------------------------------------


async def post_publish(port: int, items: list[dict[str, object]]) -> int:
    """One ``POST /publish/``; the control API answers one request per connection (F28)."""
    body = json.dumps({"items": items}).encode()
    reader, writer = await connect(port)
    try:
        writer.write(
            b"POST /publish/ HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        status, _ = await read_response(reader, 10)
        return status
    finally:
        await close(writer)


async def publisher(ctx: Ctx) -> None:
    """POST a batch to ``/publish/`` ten times a second: ``--rate`` items over the channels,
    plus one large item to a slow readers' channel. It goes on after the deadline, until the
    last clients are done (``run`` cancels it), so their long-polls still get answers."""
    per_batch = max(1, round(ctx.opts.rate / 10))
    seq = 0
    big = "x" * BIG_MESSAGE
    next_at = time.monotonic()
    while time.monotonic() < ctx.deadline + CLIENT_CAP + 10:
        next_at += 0.1
        items: list[dict[str, object]] = []
        for _ in range(per_batch):
            seq += 1
            item: dict[str, object] = {
                "channel": ctx.channel(),
                "id": f"s{seq}",
                "formats": {
                    "http-stream": {"content": f"data: {seq}\n\n"},
                    "http-response": {"body": f"{seq}\n"},
                    "ws-message": {"content": str(seq)},
                },
            }
            if seq % 50 == 0:  # out of order: buffered by the sequencer until message_wait
                item["prev-id"] = f"missing{seq}"
            if seq % 97 == 0:  # a duplicate id: dropped by the id cache
                item["id"] = f"s{seq - 1}"
            items.append(item)
        items.append(
            {
                "channel": f"big{seq % BIG_CHANNELS}",
                "formats": {"http-stream": {"content": f"data: {big}\n\n"}},
            }
        )
        try:
            status = await post_publish(ctx.control_port, items)
            ctx.stats[f"publish {status}"] += 1
            ctx.stats["items published"] += len(items)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
            ctx.stats[f"publish error {type(e).__name__}"] += 1
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


# --- sampling and verdict -------------------------------------------------------------------------


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


SHOWN = ("sse ok", "lp 200", "woh 101", "wsg 101", "rst sent", "stall 408", "pipe batches")


def row(t: float, s: Sample, stats: Counter[str], prev: Counter[str]) -> str:
    d = stats - prev
    errors = sum(v for k, v in d.items() if " error " in k)
    cells = [f"{t:6.0f}", f"{s.rss / MiB:8.1f}", f"{s.fds:5d}"]
    cells += [f"{d[k]:6d}" for k in SHOWN]
    cells += [f"{d['events'] + d['ws messages']:7d}", f"{d['items published']:6d}", f"{errors:4d}"]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "|  t (s) | RSS MiB |   fds |    sse |     lp |    woh |    wsg |    rst | stall408 |  pipe |"
    " recvd |  items | errs |"
)


async def sampler(ctx: Ctx, pid: int, start: float, samples: list[Sample]) -> None:
    """Every ``interval`` s: one sample and one table row (counters are per interval)."""
    print(HEADER)
    print("|" + "---|" * 13)
    prev: Counter[str] = Counter()
    n = 0
    while time.monotonic() < ctx.deadline:
        n += 1
        await asyncio.sleep(max(0.0, start + n * ctx.opts.interval - time.monotonic()))
        t = time.monotonic() - start
        try:
            s = Sample(t, rss_of(pid), fds_of(pid))
        except OSError:
            print("gripd is gone")
            return
        samples.append(s)
        print(row(t, s, ctx.stats, prev), flush=True)
        prev = Counter(ctx.stats)


def flat(
    samples: list[Sample], warmup: float, rss_tol: float, fd_tol: float
) -> tuple[bool, list[str]]:
    """Compare the last third's maxima with the first third's, after ``warmup``."""
    after = [s for s in samples if s.t >= warmup]
    if len(after) < 3:
        return False, [f"only {len(after)} samples after the warm-up: run longer"]
    k = len(after) // 3
    first, last = after[:k], after[-k:]
    r0, r1 = max(s.rss for s in first), max(s.rss for s in last)
    f0, f1 = max(s.fds for s in first), max(s.fds for s in last)
    r_lim = r0 * (1 + rss_tol) + 2 * MiB
    f_lim = f0 * (1 + fd_tol) + 16
    ok_r, ok_f = r1 <= r_lim, f1 <= f_lim
    lines = [
        f"RSS max: first third {r0 / MiB:.1f} MiB, last third {r1 / MiB:.1f} MiB "
        f"(limit {r_lim / MiB:.1f}): {'flat' if ok_r else 'GREW'}",
        f"fds max: first third {f0}, last third {f1} (limit {f_lim:.0f}): "
        f"{'flat' if ok_f else 'GREW'}",
    ]
    # Information only: the least-squares RSS slope after the warm-up.
    ts = [s.t for s in after]
    mt, mr = sum(ts) / len(ts), sum(s.rss for s in after) / len(after)
    var = sum((t - mt) ** 2 for t in ts)
    slope = sum((s.t - mt) * (s.rss - mr) for s in after) / var if var else 0.0
    lines.append(f"RSS trend after the warm-up: {slope * 60 / MiB:+.2f} MiB/min (not judged)")
    return ok_r and ok_f, lines


async def drain(pid: int, baseline: int, timeout: float) -> int:
    """Wait until gripd's descriptors are back near ``baseline``; return the last count."""
    end = time.monotonic() + timeout
    n = fds_of(pid)
    while time.monotonic() < end and n > baseline + FD_DRAIN_SLACK:
        await asyncio.sleep(1)
        n = fds_of(pid)
    return n


async def still_works(port: int, control_port: int) -> bool:
    """One SSE subscriber gets one published message."""
    reader, writer = await connect(port)
    try:
        writer.write(request("/stream/final-check"))
        await read_head(reader, 10)
        for _ in range(20):  # the subscription is made after the head is sent; retry the publish
            item: dict[str, object] = {
                "channel": "final-check",
                "formats": {"http-stream": {"content": "data: ok\n\n"}},
            }
            await post_publish(control_port, [item])
            with contextlib.suppress(TimeoutError):
                if b"data: ok" in await asyncio.wait_for(reader.read(4096), 0.5):
                    return True
        return False
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        return False
    finally:
        await close(writer)


async def run(server: Server, opts: Opts) -> int:
    pid = server.proc.pid
    await asyncio.sleep(1)
    baseline = fds_of(pid)
    start = time.monotonic()
    ctx = Ctx(server.http_port, server.control_port, opts, start + opts.duration)
    ctx.rng.seed(opts.seed)
    samples: list[Sample] = [Sample(0.0, rss_of(pid), baseline)]
    total = sum(max(1, round(n * opts.scale)) for n, _ in KINDS.values())
    print(
        f"gripd pid {pid}, {opts.duration:.0f} s, {total} concurrent clients, "
        f"{opts.rate:.0f} items/s over {opts.channels} channels; baseline RSS "
        f"{samples[0].rss / MiB:.1f} MiB, {baseline} fds"
    )
    pub = asyncio.create_task(publisher(ctx))
    tasks = [asyncio.create_task(sampler(ctx, pid, start, samples))]
    for kind, (n, fn) in KINDS.items():
        tasks += [
            asyncio.create_task(slot(ctx, kind, fn)) for _ in range(max(1, round(n * opts.scale)))
        ]
    # Clients finish their current connection after the deadline (each is capped at CLIENT_CAP).
    _, pending = await asyncio.wait(tasks, timeout=opts.duration + CLIENT_CAP + 10)
    pending.add(pub)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

    print("\nclient counters:")
    for k, v in sorted(ctx.stats.items()):
        print(f"  {k}: {v}")
    failures: list[str] = []
    if server.proc.poll() is not None:
        print(f"gripd exited with status {server.proc.returncode}")
        return 1
    ok, lines = flat(samples, opts.warmup, opts.rss_tolerance, opts.fd_tolerance)
    print("\nverdict:")
    for line in lines:
        print("  " + line)
    if not ok:
        failures.append("growth")
    drain_for = opts.header_timeout + opts.idle_timeout + 20
    after = await drain(pid, baseline, drain_for)
    drained = after <= baseline + FD_DRAIN_SLACK
    print(
        f"  fds after the load stopped: {after} (baseline {baseline}, allowed +{FD_DRAIN_SLACK}, "
        f"waited up to {drain_for:.0f} s): {'ok' if drained else 'NOT RELEASED'}"
    )
    if not drained:
        failures.append("fds not released")
    works = await still_works(server.http_port, server.control_port)
    print(f"  gripd still delivers: {'yes' if works else 'NO'}")
    if not works:
        failures.append("no delivery")
    log = server.log_text()
    levels = Counter(m.group(1) for m in re.finditer(r"^\[(ERR|WARN)\]", log, re.M))
    tracebacks = log.count("Traceback (most recent call last)")
    print(f"  gripd log: {levels['ERR']} [ERR], {levels['WARN']} [WARN], {tracebacks} tracebacks")
    warn_kinds = Counter(
        re.sub(r"\d+", "N", m.group(1))[:80]
        for m in re.finditer(r"^\[(?:ERR|WARN)\] \S+ \S+ (.*)$", log, re.M)
    )
    for msg, n in warn_kinds.most_common(8):
        print(f"    {n:6d}  {msg}")
    if tracebacks:
        failures.append("tracebacks in the log")
    mine = sum(v for k, v in ctx.stats.items() if " error " in k)
    print(f"  client-side errors: {mine}")
    # Not part of the verdict (they are behaviour, not leaks), but a soak should show them.
    st = ctx.stats
    print(
        f"  stalled heads: {st['stall 408']} got 408, {st['stall closed']} closed without "
        f"an answer, {st['stall not reaped']} not reaped within {opts.header_timeout * 3 + 5:.0f} s"
    )
    print(
        f"  idle keep-alive waits: {st['idle closed']} closed by gripd, "
        f"{st['idle not reaped']} not closed within {opts.idle_timeout * 2 + 5:.0f} s"
    )
    slow = sum(n for m, n in warn_kinds.items() if "publish queue at max" in m)
    print(f"  slow-client policy log lines: {slow}")
    print(f"\nRESULT: {'FAIL (' + ', '.join(failures) + ')' if failures else 'PASS'}")
    return 1 if failures else 0


def parse_args(argv: list[str] | None) -> Opts:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument(
        "--warmup",
        type=float,
        help="seconds ignored by the verdict (default: a quarter, at most 150)",
    )
    ap.add_argument("--rate", type=float, default=40.0, help="published items per second")
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the client counts")
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ap.add_argument("--fd-tolerance", type=float, default=0.20)
    ap.add_argument("--header-timeout", type=float, default=5.0, help="client_header_timeout")
    ap.add_argument("--idle-timeout", type=float, default=10.0, help="client_idle_timeout")
    ap.add_argument("--workdir", type=Path, help="keep gripd's config and log here")
    ap.add_argument(
        "--conf", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override"
    )
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    warmup = a.warmup if a.warmup is not None else min(150.0, a.duration / 4)
    return Opts(
        a.duration, a.interval, warmup, a.rate, a.channels, a.scale, a.rss_tolerance,
        a.fd_tolerance, a.header_timeout, a.idle_timeout, a.workdir, a.conf, a.seed,
    )  # fmt: skip


def conf_for(opts: Opts) -> dict[str, dict[str, str]]:
    """Overrides on top of the shipped pushpin.conf. The TTLs are shortened (60/120 s by
    default) so TTL-bound structures reach their steady size well inside the warm-up."""
    conf: dict[str, dict[str, str]] = {
        "global": {"stats_connection_ttl": "30"},
        "handler": {
            "id_cache_ttl": "20",
            "subscription_linger": "20",
            "stats_subscription_ttl": "20",
            "message_wait": "2000",
        },
        "gripd": {
            "client_header_timeout": str(opts.header_timeout),
            "client_idle_timeout": str(opts.idle_timeout),
            "client_write_buffer_max": "65536",
            "slow_client_policy": "drop",
        },
    }
    for item in opts.conf:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--conf wants SECTION.KEY=VALUE, got {item!r}")
        conf.setdefault(section, {})[name] = value
    return conf


def start_origin() -> tuple[subprocess.Popen[bytes], int]:
    """``bench/origin.py`` on a free loopback port."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "origin.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    m = re.match(r"PORT (\d+)", proc.stdout.readline().decode())
    if not m:
        proc.kill()
        raise RuntimeError("bench origin did not start")
    return proc, int(m.group(1))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    raise_nofile_limit()
    # SIGTERM unwinds like Ctrl-C so gripd and the origin are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    origin, oport = start_origin()
    try:
        with contextlib.ExitStack() as stack:
            workdir = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            routes = [f"*,path_beg=/woh 127.0.0.1:{oport},over_http", f"* 127.0.0.1:{oport}"]
            try:
                server = start_server("gripd", workdir, routes, conf=conf_for(opts))
            except Exception as e:  # any start failure is a setup error
                print(f"could not start gripd: {e}", file=sys.stderr)
                return 2
            with server:
                print(f"config and log: {workdir}")
                try:
                    import uvloop
                except ImportError:
                    return asyncio.run(run(server, opts))
                return uvloop.run(run(server, opts))
    finally:
        origin.terminate()
        try:
            origin.wait(10)
        except subprocess.TimeoutExpired:
            origin.kill()


if __name__ == "__main__":
    sys.exit(main())

"""gripd history benchmark: what storing per-channel history costs, and how fast clients resume.

Usage: ``python bench/history.py [--only publish|memory|resume] [--quick] [--gripd-workers 1,2]``;
see bench/README.md. Every configuration gets a fresh gripd (and, for the Redis rows, its own
``redis-server`` on 127.0.0.1 through tests/support/redis.py); the origin and the table layout
are bench/run.py's. Scenarios:

- ``publish``: S SSE subscribers, one per channel ``c<i>``; K items with an ``id`` published
  round-robin over those channels, once through the HTTP control API in batches, once pushed
  into the ZeroMQ PULL socket; with ``history_size`` 0 and 100, in memory and on the Redis bus.
  Reported: gripd CPU s per 1k items (and redis-server's), and the ratio history on / off.
- ``memory``: 100 channels x 1,000 items of about 100 bytes stored (``history_size = 1000``,
  ``history_ttl = 0``), no subscribers: gripd's RSS (whole process tree) before and after, and
  Redis's ``used_memory``, per item; the same with history off as the control.
- ``resume``: items ``r<c>-0`` .. ``r<c>-100`` stored per channel, then N SSE clients reconnect
  at once (at most 50 connects in flight) with ``Last-Event-ID: r<c>-0``, 100 items behind;
  when every client has its replay, one live item per channel is published. Reported: the time
  from the first reconnect until every client had the replay and the live item, and
  deliveries/s over that window.

The clients are this module's own (forked uvloop processes, driven like bench/loadgen.py's
workers through ``run.Workers``): the load generator's SSE client neither sends
``Last-Event-ID`` nor parses events with an ``id:`` line. Results are printed as markdown and
appended to ``bench/out/history.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import httptools
import loadgen
import run  # bench/run.py; puts the repo root and bench/ on sys.path
import uvloop
from run import BENCH, Row, Workers, cpu_of, machine, split, start_origin, table
from scaleout import redis_version

from tests.support.procs import (
    NO_RATE_LIMIT,
    Server,
    gripd_runnable,
    merge_conf,
    publish_http,
    raise_nofile_limit,
    start_server,
)
from tests.support.redis import RedisServer

SCENARIOS = ("publish", "memory", "resume")
#: ``--conf section.key=value`` settings added to every configuration.
EXTRA_CONF: dict[str, dict[str, str]] = {}
INFLIGHT = 50  # connects in flight (the harness's Pushpin-safe ramp)
PAD = "x" * 64  # makes an event about 100 bytes: "id: <id>\ndata: <seq> <pad>\n\n"


# -- the client side (forked processes) ------------------------------------------------------


class HistClient(asyncio.Protocol):
    """One SSE stream: counts events (``\\n\\n``), remembers the first and last ``id:`` seen,
    the ``Gripd-History`` header and the time of its last event."""

    def __init__(self, worker: HistWorker, request: bytes, ch: int) -> None:
        self.worker = worker
        self.request = request
        self.ch = ch  # the client's channel number
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.history = "none"
        self.headers_done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.events = 0
        self.tail = b""
        self.first_id = b""
        self.last_id = b""
        self.last_ns = 0
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.worker.parse_errors += 1
            if self.transport is not None:
                self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"gripd-history":
            self.history = value.decode(errors="replace")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.headers_done.done():
            self.headers_done.set_result(self.status)

    def on_body(self, body: bytes) -> None:
        data = self.tail + body
        n = data.count(b"\n\n")
        self.tail = b"\n" if data.endswith(b"\n") and not data.endswith(b"\n\n") else b""
        if n == 0:
            return
        self.events += n
        self.worker.received += n
        self.last_ns = time.monotonic_ns()
        last = data.rfind(b"id: ")
        if last >= 0:
            self.last_id = data[last + 4 : data.find(b"\n", last)]
            if not self.first_id:
                first = data.find(b"id: ")
                self.first_id = data[first + 4 : data.find(b"\n", first)]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.headers_done.done():
            self.headers_done.set_result(0)

    def exact(self, events: int, first_id: str, last_id: str) -> bool:
        """Exactly ``events`` events, from ``first_id`` to ``last_id`` (``{ch}`` = channel)."""
        return (
            self.events == events
            and self.first_id.decode() == first_id.format(ch=self.ch)
            and self.last_id.decode() == last_id.format(ch=self.ch)
        )


class HistWorker(loadgen.Worker):
    """A load-generator process holding ``HistClient`` streams. Ops: ``open``, ``stats``,
    ``reset``, ``warm`` (what ``run.Workers.mark``/``cpu`` call), ``close``."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.clients: list[HistClient] = []

    async def serve(self) -> None:
        while True:
            msg = await self.recv()
            op = msg["op"]
            reply: dict[str, Any]
            if op == "open":
                reply = await self.open_streams(msg)
            elif op == "warm":
                cs = self.clients
                reply = {"warm": sum(1 for c in cs if c.open and c.events > 0)}
            elif op == "reset":
                self.received = 0
                for c in self.clients:
                    c.events = 0
                    c.last_ns = 0
                reply = {}
            elif op == "stats":
                target = int(msg.get("target", 1))
                cs = self.clients
                reply = {
                    "received": self.received,
                    "done": sum(1 for c in cs if c.events >= target),
                    "last_ns": max((c.last_ns for c in cs), default=0),
                    "open": sum(1 for c in cs if c.open),
                    "parse_errors": self.parse_errors,
                }
                first_id, last_id = msg.get("first_id"), msg.get("last_id")
                if first_id is not None and last_id is not None:
                    reply["exact"] = sum(1 for c in cs if c.exact(target, first_id, last_id))
            elif op == "close":
                for c in self.clients:
                    if c.transport is not None:
                        c.transport.abort()
                self.clients.clear()
                self.conn.send({"cpu": time.process_time()})
                return
            else:
                reply = {"error": f"unknown op {op}"}
            reply["cpu"] = time.process_time()
            self.conn.send(reply)

    async def open_streams(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Open ``n`` streams, at most ``inflight`` connects pending, each waiting for its
        response head. Client ``first + i`` is on channel ``ch = (first + i) % channels``;
        ``path`` and ``last_id`` (optional: sent as ``Last-Event-ID``) are formatted with it."""
        loop = asyncio.get_running_loop()
        port = int(msg["port"])
        first = int(msg.get("first", 0))
        channels = max(1, int(msg.get("channels", 1)))
        deadline = loop.time() + float(msg.get("deadline", 300))
        sem = asyncio.Semaphore(int(msg["inflight"]))
        statuses: dict[str, int] = {}
        history: dict[str, int] = {}
        ok = 0

        def request(ch: int) -> bytes:
            head = f"GET {msg['path'].format(ch=ch)} HTTP/1.1\r\nHost: bench\r\n"
            head += "Accept: text/event-stream\r\n"
            if msg.get("last_id") is not None:
                head += f"Last-Event-ID: {msg['last_id'].format(ch=ch)}\r\n"
            return (head + "\r\n").encode()

        async def one(i: int) -> None:
            nonlocal ok
            ch = (first + i) % channels
            key = "timeout"
            async with sem:
                try:
                    _, proto = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: HistClient(self, request(ch), ch), "127.0.0.1", port
                        ),
                        max(0.1, deadline - loop.time()),
                    )
                    status = await asyncio.wait_for(
                        proto.headers_done, max(0.1, deadline - loop.time())
                    )
                    key = str(status)
                    if status == 200:
                        ok += 1
                        self.clients.append(proto)
                        history[proto.history] = history.get(proto.history, 0) + 1
                except (OSError, TimeoutError) as e:
                    key = type(e).__name__
            statuses[key] = statuses.get(key, 0) + 1

        started = time.monotonic_ns()
        await asyncio.gather(*(one(i) for i in range(int(msg["n"]))))
        return {
            "ok": ok,
            "statuses": statuses,
            "history": history,
            "started_ns": started,
            "ended_ns": time.monotonic_ns(),
        }


def hist_worker_main(conn: Connection) -> None:
    """Entry point of a forked client process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (fork)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    loadgen.raise_nofile()
    uvloop.run(HistWorker(conn).serve())


class Clients(Workers):
    """``run.Workers`` (call/all/mark/cpu/close) over ``HistWorker`` processes."""

    def __init__(self, count: int) -> None:
        super().__init__(count, hist_worker_main)

    def open(
        self, port: int, path: str, n: int, channels: int, last_id: str | None = None
    ) -> dict[str, Any]:
        """Open ``n`` streams split over the processes; summed counts and the time span."""
        parts = split(n, len(self.conns))
        inflight = split(INFLIGHT, len(self.conns))
        msgs = [
            {
                "op": "open",
                "port": port,
                "path": path,
                "n": k,
                "first": sum(parts[:i]),
                "channels": channels,
                "inflight": max(1, f),
                "last_id": last_id,
                "deadline": 300,
            }
            for i, (k, f) in enumerate(zip(parts, inflight, strict=True))
        ]
        res = self.call(msgs, timeout=330)
        out: dict[str, Any] = {"ok": sum(r["ok"] for r in res), "statuses": {}, "history": {}}
        for r in res:
            for key in ("statuses", "history"):
                for k, v in r[key].items():
                    out[key][k] = out[key].get(k, 0) + v
        out["ended_ns"] = max(r["ended_ns"] for r in res)
        return out

    def stats(self, target: int = 1, **extra: Any) -> dict[str, Any]:
        res = self.all({"op": "stats", "target": target, **extra})
        out: dict[str, Any] = {k: sum(r[k] for r in res) for k in ("received", "done", "open")}
        out["last_ns"] = max(r["last_ns"] for r in res)
        out["parse_errors"] = sum(r["parse_errors"] for r in res)
        if "first_id" in extra:
            out["exact"] = sum(r["exact"] for r in res)
        return out

    def drain(self, expected: int, limit: float = 60.0) -> dict[str, Any]:
        """Poll until ``expected`` events arrived in all, or nothing moved for 2 s (at most
        ``limit`` s)."""
        return self.wait(1, 0, expected, limit=limit, still=2.0)

    def wait(
        self, target: int, clients: int, expected: int = 0, limit: float = 60.0, still: float = 5.0
    ) -> dict[str, Any]:
        """Poll until ``clients`` streams have ``target`` events each and ``expected`` events
        arrived in all, or nothing moved for ``still`` s (at most ``limit`` s)."""
        end = time.monotonic() + limit
        st = self.stats(target)
        received, moved = st["received"], time.monotonic()
        while time.monotonic() < end and (st["done"] < clients or st["received"] < expected):
            time.sleep(0.05)
            st = self.stats(target)
            if st["received"] != received:
                received, moved = st["received"], time.monotonic()
            elif time.monotonic() - moved > still:
                break
        return st


# -- publishing ------------------------------------------------------------------------------


def item(channel: str, iid: str | None, tag: str) -> dict[str, Any]:
    """An ``http-stream`` item of about 100 bytes, its id (if any) in the event's ``id:`` line."""
    head = f"id: {iid}\n" if iid is not None else ""
    content = f"{head}data: {tag} {PAD}\n\n"
    out: dict[str, Any] = {"channel": channel, "formats": {"http-stream": {"content": content}}}
    if iid is not None:
        out["id"] = iid
    return out


def publish_batches(port: int, items: list[dict[str, Any]], batch: int) -> int:
    """POST the items ``batch`` at a time; the number of non-200 answers."""
    errors = 0
    for start in range(0, len(items), batch):
        status, _ = publish_http(port, items[start : start + batch], timeout=30)
        errors += status != 200
    return errors


def push_main(argv: list[str]) -> int:
    """``history.py push --port P --count K --channels S --prefix X``: a PUSH socket sends K
    ``J``+JSON items with ids round-robin over ``c<i>`` as fast as it takes them (the pusher
    of bench/zmqpush.py, with ids), then prints ``{"sent", "cpu", "error"}``."""
    import zmq
    import zmqpush

    ap = argparse.ArgumentParser(prog="history.py push")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--channels", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args(argv)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.LINGER, 30_000)
    sock.setsockopt(zmq.SNDTIMEO, 30_000)  # bound every send: a stalled peer ends the run
    sock.connect(f"tcp://127.0.0.1:{args.port}")
    time.sleep(0.3)  # let the connection come up
    first_ns = time.monotonic_ns()
    sent, error = 0, ""
    for j in range(args.count):
        msg = item(f"c{j % args.channels}", f"{args.prefix}{j}", f"m{j}")
        try:
            sock.send(zmqpush.encode(msg, "J"))
        except zmq.Again:
            error = f"send timed out after {sent} items"
            break
        sent += 1
    sock.close()
    ctx.term()
    result = {"sent": sent, "first_ns": first_ns, "cpu": time.process_time(), "error": error}
    print(json.dumps(result), flush=True)
    return 0


def zmq_push(port: int, count: int, channels: int, prefix: str) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "push", "--port", str(port)]
    argv += ["--count", str(count), "--channels", str(channels), "--prefix", prefix]
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    lines = proc.stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"pusher failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


# -- deployments -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One column: the store (memory or Redis) and ``history_size``."""

    label: str
    redis: bool
    size: int
    ttl: int = 300


@dataclass
class Deployment:
    server: Server
    redis: RedisServer | None

    def cpu(self) -> tuple[float, float]:
        """(gripd's whole tree, redis-server) CPU seconds so far."""
        r = cpu_of(self.redis.pid) if self.redis is not None and self.redis.running else 0.0
        return self.server.cpu_seconds(), r

    def redis_info(self) -> tuple[int, int]:
        """Redis's ``used_memory`` and the length of channel ``m0``'s stream."""
        import redis

        assert self.redis is not None
        client = redis.Redis(host=self.redis.host, port=self.redis.port, socket_timeout=10)
        try:
            return int(client.info("memory")["used_memory"]), int(client.xlen("gripd:h:m0"))
        finally:
            client.close()


@contextmanager
def deploy(cfg: Config, workdir: Path, origin_port: int, workers: int) -> Iterator[Deployment]:
    """Start Redis (for a Redis config) and one gripd; stop both (by PID) on the way out."""
    redis: RedisServer | None = None
    server: Server | None = None
    try:
        gripd = {
            "workers": str(workers),
            "history_size": str(cfg.size),
            "history_ttl": str(cfg.ttl),
        }
        if cfg.redis:
            redis = RedisServer(workdir / "redis")
            redis.start()
            gripd["bus"] = redis.url
        conf = merge_conf(merge_conf(NO_RATE_LIMIT, EXTRA_CONF), {"gripd": gripd})
        server = start_server(
            "gripd", workdir / "gripd", [f"* 127.0.0.1:{origin_port}"], conf=conf, timeout=30
        )
        yield Deployment(server, redis)
    finally:
        if server is not None:
            server.stop()
        if redis is not None:
            redis.stop()


def per_1k(cpu: float, count: int) -> float:
    return cpu / (count / 1000) if count > 0 else float("nan")


# -- scenario: publish cost ------------------------------------------------------------------


@dataclass
class Sizes:
    subscribers: int = 1000
    items: int = 50_000
    batch: int = 100
    prefill: int = 100  # items per channel published before measuring (fills the history)
    repeat: int = 3
    mem_channels: int = 100
    mem_items: int = 1000
    resume_clients: int = 1000
    resume_channels: int = 1
    behind: int = 100


def run_publish(dep: Deployment, clients: Clients, sz: Sizes, rnd: int) -> dict[str, float]:
    """One measurement: S subscribers on ``c<i>``, K items through HTTP, then K through ZeroMQ.
    Returns the numbers (CPU per 1k items etc.) by name."""
    s = dep.server
    opened = clients.open(s.http_port, "/stream/c{ch}", sz.subscribers, sz.subscribers)
    ok = opened["ok"]
    warm = [item(f"c{i}", None, "w") for i in range(sz.subscribers)]
    for _ in range(30):  # warm-up: every stream got an event, so every subscription exists
        publish_batches(s.control_port, warm, 500)
        time.sleep(0.3)
        if clients.stats(1)["done"] >= ok:
            break
    out: dict[str, float] = {"subscribers": ok}
    if sz.prefill:  # steady state: every channel's history is full before measuring
        pre = [
            item(f"c{j % sz.subscribers}", f"p{rnd}-{j}", f"p{j}")
            for j in range(sz.prefill * sz.subscribers)
        ]
        clients.all({"op": "reset"})
        publish_batches(s.control_port, pre, 500)
        clients.drain(sum(1 for j in range(len(pre)) if j % sz.subscribers < ok))
    for phase in ("http", "zmq"):
        clients.all({"op": "reset"})
        time.sleep(0.5)
        g0, r0 = dep.cpu()
        clients.mark()
        prefix = f"{phase}{rnd}-"
        if phase == "http":
            items = [
                item(f"c{j % sz.subscribers}", f"{prefix}{j}", f"m{j}") for j in range(sz.items)
            ]
            t0 = time.monotonic()
            out["http errors"] = publish_batches(s.control_port, items, sz.batch)
            sent = sz.items
        else:
            push = zmq_push(s.zmq_pull_port, sz.items, sz.subscribers, prefix)
            sent = int(push["sent"])
            out["zmq sent"] = sent
            if push.get("error"):
                print(f"pusher: {push['error']}", file=sys.stderr)
            t0 = push["first_ns"] / 1e9
            out["pusher CPU s"] = float(push["cpu"])
        expected = sum(1 for j in range(sent) if j % sz.subscribers < ok)
        st = clients.drain(expected)
        g1, r1 = dep.cpu()
        span = (st["last_ns"] / 1e9 - t0) if st["last_ns"] else float("nan")
        out[f"{phase} received"] = st["received"]
        out[f"{phase} lost"] = expected - st["received"]
        out[f"{phase} items/s"] = st["received"] / span if span > 0 else float("nan")
        out[f"{phase} gripd CPU/1k"] = per_1k(g1 - g0, sent)
        if dep.redis is not None:
            out[f"{phase} redis CPU/1k"] = per_1k(r1 - r0, sent)
            out[f"{phase} gripd+redis CPU/1k"] = per_1k(g1 - g0 + r1 - r0, sent)
        out[f"{phase} loadgen CPU s"] = clients.cpu()
    return out


def publish_scenario(
    configs: list[Config], sz: Sizes, origin_port: int, workdir: Path, workers: int
) -> dict[str, list[Row]]:
    """Every config ``repeat`` times, interleaved (off, on, off, on, ...); medians reported."""
    runs: dict[str, list[dict[str, float]]] = {c.label: [] for c in configs}
    for rnd in range(sz.repeat):
        for cfg in configs:
            print(f"[w={workers}] publish {cfg.label} round {rnd + 1}", file=sys.stderr, flush=True)
            clients = Clients(2)
            try:
                with deploy(cfg, workdir / f"pub-{rnd}-{cfg.label}", origin_port, workers) as dep:
                    runs[cfg.label].append(run_publish(dep, clients, sz, rnd))
            except Exception as e:  # record and go on
                print(f"publish {cfg.label} failed: {e}", file=sys.stderr)
                runs[cfg.label].append({"error": float("nan")})
            finally:
                clients.close()
    results: dict[str, list[Row]] = {}
    for cfg in configs:
        rs = [r for r in runs[cfg.label] if "error" not in r]
        rows: list[Row] = [("rounds ok / run", f"{len(rs)} / {len(runs[cfg.label])}")]
        if rs:
            for key in rs[0]:
                vals = [r[key] for r in rs]
                med = statistics.median(vals)
                fmt = "{:.4f}" if "CPU/1k" in key else "{:,.0f}" if "/s" in key else "{:g}"
                fmt = "{:.2f}" if "CPU s" in key else fmt
                each = " / ".join(fmt.format(v) for v in vals)
                rows.append((f"{key} (median; each)", f"{fmt.format(med)} ({each})"))
        results[cfg.label] = rows
    return results


def ratio_rows(results: dict[str, list[Row]], pairs: list[tuple[str, str]]) -> list[Row]:
    """history on / off of the median CPU per 1k items, for each (off, on) pair of labels."""
    rows: list[Row] = []
    for off, on in pairs:
        if off not in results or on not in results:
            continue
        a, b = dict(results[off]), dict(results[on])
        for metric in (
            "http gripd CPU/1k",
            "zmq gripd CPU/1k",
            "http gripd+redis CPU/1k",
            "zmq gripd+redis CPU/1k",
        ):
            key = f"{metric} (median; each)"
            if key in a and key in b:
                x, y = float(a[key].split()[0]), float(b[key].split()[0])
                if x > 0:
                    rows.append((f"{on} / {off}: {metric}", f"{y / x:.2f}×"))
    return rows


# -- scenario: memory per stored item --------------------------------------------------------


def each_config(
    what: str,
    configs: list[Config],
    run_one: Callable[[Deployment], list[Row]],
    origin_port: int,
    workdir: Path,
    workers: int,
) -> dict[str, list[Row]]:
    """``run_one`` on a fresh deployment of each config; a failure becomes an ``error`` row."""
    results: dict[str, list[Row]] = {}
    for cfg in configs:
        print(f"[w={workers}] {what} {cfg.label}", file=sys.stderr, flush=True)
        try:
            with deploy(cfg, workdir / f"{what}-{cfg.label}", origin_port, workers) as dep:
                results[cfg.label] = run_one(dep)
        except Exception as e:
            print(f"{what} {cfg.label} failed: {e}", file=sys.stderr)
            results[cfg.label] = [("error", f"{type(e).__name__}: {e}".splitlines()[0][:200])]
    return results


def run_memory(dep: Deployment, sz: Sizes) -> list[Row]:
    """Store ``mem_channels`` x ``mem_items`` items; RSS (and Redis memory) before and after."""
    s, count = dep.server, sz.mem_channels * sz.mem_items
    # Warm-up on other channels: code paths, buffers and the first allocations.
    publish_batches(s.control_port, [item(f"w{j % 50}", f"w{j}", "w") for j in range(5000)], 500)
    time.sleep(1.5)
    rss0, (used0, _) = s.rss_bytes(), dep.redis_info() if dep.redis else (0, 0)
    items = [item(f"m{j % sz.mem_channels}", f"m{j}", f"m{j}") for j in range(count)]
    errors = publish_batches(s.control_port, items, 500)
    time.sleep(2.0)
    rss1 = s.rss_bytes()
    rows: list[Row] = [("items published (channels × items)", f"{count:,}")]
    rows.append(("publish errors", str(errors)))
    rows.append(("gripd RSS before / after MiB", f"{rss0 / 2**20:.1f} / {rss1 / 2**20:.1f}"))
    rows.append(("gripd RSS delta per item, bytes", f"{(rss1 - rss0) / count:.0f}"))
    if dep.redis is not None:
        used1, xlen = dep.redis_info()
        rows.append(
            ("Redis used_memory before / after MiB", f"{used0 / 2**20:.1f} / {used1 / 2**20:.1f}")
        )
        rows.append(("Redis used_memory delta per item, bytes", f"{(used1 - used0) / count:.0f}"))
        rows.append(("stored in channel m0 (XLEN)", str(xlen)))
    rows.append(("replayed to a client resuming from m0's first item", replayed(s, sz)))
    return rows


def replayed(s: Server, sz: Sizes) -> str:
    """Checks what was stored: one SSE client resumes channel ``m0`` from its first item and
    should be sent the channel's other items. Its response header is shown too."""
    clients = Clients(1)
    try:
        opened = clients.open(s.http_port, "/stream/m0", 1, 1, last_id="m0")
        want = sz.mem_items - 1
        st = clients.wait(want, 1, limit=20.0)
        head = ",".join(opened["history"]) or "no response"
        return f"{st['received']} (expected {want} with history on; {head})"
    finally:
        clients.close()


# -- scenario: resume ------------------------------------------------------------------------


def run_resume(dep: Deployment, sz: Sizes, origin_pid: int) -> list[Row]:
    """Items r<ch>-0 .. r<ch>-<behind> stored per channel; clients resume from r<ch>-0."""
    clients = Clients(2)
    try:
        return resume_rows(dep, clients, sz, origin_pid)
    finally:
        clients.close()


def resume_rows(dep: Deployment, clients: Clients, sz: Sizes, origin_pid: int) -> list[Row]:
    s = dep.server
    n, chans, behind = sz.resume_clients, sz.resume_channels, sz.behind
    stored = [item(f"r{c}", f"r{c}-{k}", f"r{k}") for k in range(behind + 1) for c in range(chans)]
    publish_batches(s.control_port, stored, 500)
    time.sleep(1.0)
    g0, r0 = dep.cpu()
    o0 = cpu_of(origin_pid)
    clients.mark()
    t0 = time.monotonic_ns()
    opened = clients.open(s.http_port, "/stream/r{ch}", n, chans, last_id="r{ch}-0")
    ok = opened["ok"]
    replayed = clients.wait(behind, ok)
    t_replayed = replayed["last_ns"]
    live = [item(f"r{c}", f"r{c}-{behind + 1}", "live") for c in range(chans)]
    t_live = time.monotonic_ns()
    publish_http(s.control_port, live)
    done = clients.wait(behind + 1, ok)
    g1, r1 = dep.cpu()
    exact = clients.stats(behind + 1, first_id="r{ch}-1", last_id=f"r{{ch}}-{behind + 1}")
    window = (done["last_ns"] - t0) / 1e9
    rows: list[Row] = [
        ("clients resumed ok / asked (channels)", f"{ok} / {n} ({chans})"),
        ("statuses", json.dumps(opened["statuses"], sort_keys=True)),
        ("Gripd-History header", json.dumps(opened["history"], sort_keys=True)),
        (f"clients with all {behind} replayed", str(replayed["done"])),
        (f"clients with all {behind} + 1 live", str(done["done"])),
        ("clients with exactly those, in order", str(exact["exact"])),
        ("deliveries received / expected", f"{done['received']} / {n * (behind + 1)}"),
        ("reconnect phase s (all heads received)", f"{(opened['ended_ns'] - t0) / 1e9:.2f}"),
        ("all replays received s", f"{(t_replayed - t0) / 1e9:.2f}" if t_replayed else "n/a"),
        ("live item: publish → last client ms", f"{(done['last_ns'] - t_live) / 1e6:.0f}"),
        ("window s (first reconnect → last live)", f"{window:.2f}"),
        ("deliveries/s over the window", f"{done['received'] / window:,.0f}"),
        ("gripd CPU s", f"{g1 - g0:.2f}"),
        ("redis-server CPU s", f"{r1 - r0:.2f}" if dep.redis else "n/a"),
        ("client CPU s (2 processes)", f"{clients.cpu():.2f}"),
        ("origin CPU s", f"{cpu_of(origin_pid) - o0:.2f}"),
    ]
    return rows


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["push"]:
        return push_main(args_in[1:])
    ap = argparse.ArgumentParser(description="gripd history benchmark (see bench/README.md)")
    ap.add_argument("--only", choices=SCENARIOS, action="append", help="run only this scenario")
    ap.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    ap.add_argument("--gripd-workers", default="1", help="[gripd] workers, or a list: 1,2")
    ap.add_argument("--no-redis", action="store_true", help="memory store only")
    ap.add_argument("--redis-only", action="store_true", help="Redis store only")
    ap.add_argument("--subscribers", type=int, help="publish: subscribers = channels (1,000)")
    ap.add_argument("--items", type=int, help="publish: items per phase (20,000)")
    ap.add_argument("--batch", type=int, help="publish: items per HTTP publish (100)")
    ap.add_argument("--repeat", type=int, help="publish: rounds per config (3)")
    ap.add_argument(
        "--prefill", type=int, help="publish: items per channel published first (100; 0: none)"
    )
    ap.add_argument("--resume-clients", type=int, help="resume: clients (1,000)")
    ap.add_argument("--resume-channels", type=int, help="resume: channels (1)")
    ap.add_argument("--workdir", type=Path, help="keep configs and logs here")
    ap.add_argument(
        "--conf", action="append", default=[], help="section.key=value for every config"
    )
    args = ap.parse_args(args_in)
    for setting in args.conf:
        key, _, value = setting.partition("=")
        section, _, name = key.partition(".")
        EXTRA_CONF.setdefault(section, {})[name] = value
    sz = Sizes()
    if args.quick:
        sz = Sizes(
            subscribers=200, items=5000, repeat=1, prefill=20, mem_items=200, resume_clients=200
        )
    for name in ("subscribers", "items", "batch", "repeat", "resume_clients", "resume_channels"):
        if getattr(args, name):
            setattr(sz, name, getattr(args, name))
    if args.prefill is not None:
        sz.prefill = args.prefill
    if not gripd_runnable():
        print("gripd/__main__.py missing", file=sys.stderr)
        return 2
    stores = [False, True]
    if args.no_redis:
        stores = [False]
    elif args.redis_only:
        stores = [True]
    names = list(dict.fromkeys(args.only or SCENARIOS))
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, run._on_sigterm)
    origin, origin_port = start_origin()
    started = dt.datetime.now(dt.UTC)
    text = ""
    try:
        with tempfile.TemporaryDirectory(prefix="gripd-history-") as tmp:
            workdir = args.workdir.resolve() if args.workdir else Path(tmp)
            for w in (int(x) for x in args.gripd_workers.split(",")):
                text += run_all(names, stores, sz, (origin_port, origin.pid), workdir / f"w{w}", w)
    finally:
        origin.terminate()
        origin.wait(10)
    cmd = "python bench/history.py " + " ".join(args_in)
    header = (
        f"## {started:%Y-%m-%d %H:%M} UTC — `{cmd.strip()}`\n\n{machine()}; "
        f"redis-server {redis_version()}; {sz}\n"
    )
    print(header + text)
    outdir = BENCH / "out"
    outdir.mkdir(exist_ok=True)
    with open(outdir / "history.md", "a") as f:
        f.write(header + text + "\n")
    return 0


def run_all(
    names: list[str],
    stores: list[bool],
    sz: Sizes,
    origin: tuple[int, int],
    workdir: Path,
    w: int,
) -> str:
    """The asked scenarios for gripd ``workers = w``, as markdown."""
    origin_port = origin[0]

    def where(redis: bool) -> str:
        return "Redis" if redis else "memory"

    out = f"\n### gripd workers = {w}\n"
    if "publish" in names:
        cfgs = [Config(f"{where(r)}, size {k}", r, k) for r in stores for k in (0, 100)]
        res = publish_scenario(cfgs, sz, origin_port, workdir, w)
        pairs = [(cfgs[i].label, cfgs[i + 1].label) for i in range(0, len(cfgs), 2)]
        res["ratio"] = ratio_rows(res, pairs)
        out += table(
            {k: {"publish": v} for k, v in res.items() if k != "ratio"}, list(res)[:-1], ["publish"]
        )
        out += "\n" + "\n".join(f"- {m}: {v}" for m, v in res["ratio"]) + "\n"
    if "memory" in names:
        cfgs = [Config(f"{where(r)}, size {k}", r, k, 0) for r in stores for k in (0, sz.mem_items)]
        res = each_config("memory", cfgs, lambda d: run_memory(d, sz), origin_port, workdir, w)
        out += table({k: {"memory": v} for k, v in res.items()}, list(res), ["memory"])
    if "resume" in names:
        cfgs = [Config(f"{where(r)}, size {2 * sz.behind}", r, 2 * sz.behind) for r in stores]
        res = each_config(
            "resume", cfgs, lambda d: run_resume(d, sz, origin[1]), origin_port, workdir, w
        )
        out += table({k: {"resume": v} for k, v in res.items()}, list(res), ["resume"])
    return out


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())

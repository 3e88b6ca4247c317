"""gripd vs Pushpin 1.36 benchmark: fan-out, RSS per held connection, long-poll, pass-through,
WebSocket fan-out (over HTTP and through a GRIP WebSocket origin) and ZeroMQ PULL ingestion.

Usage: ``python bench/run.py [--only NAME] [--impl gripd|pushpin|both] [--quick]``; see
bench/README.md. Every server is started by ``tests.support.procs.start_server`` from the same
generated pushpin.conf (Debian's shipped values) with ``message_rate``/``message_hwm`` = -1
(unlimited, F34), one implementation after the other, each scenario on a fresh server. Results
are printed as a markdown table and appended to ``bench/out/results.md``.
"""

from __future__ import annotations

import argparse
import array
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

from tests.support.procs import (  # noqa: E402
    NO_RATE_LIMIT,
    Impl,
    Server,
    gripd_runnable,
    merge_conf,
    publish_http,
    pushpin_installed,
    raise_nofile_limit,
    start_server,
)

SCENARIOS = ("fanout", "rss", "longpoll", "passthrough", "wsoh", "wsgrip", "zmq", "channels")
#: What a plain run (no --only) runs; the WebSocket, ZeroMQ and channels scenarios are asked
#: for by name.
DEFAULT_SCENARIOS = ("fanout", "rss", "longpoll", "passthrough")
Row = tuple[str, str]  # (metric, value)


@dataclass
class Settings:
    """Sizes for one run; ``--quick`` shrinks them."""

    connections: int = 10_000
    messages: int = 20
    interval: float = 0.05
    inflight: int = 50
    workers: int = 2
    lp_clients: int = 100
    lp_seconds: float = 10.0
    lp_settle_ms: int = 10
    wrk_seconds: int = 10
    wrk_connections: int = 50
    zmq_clients: int = 1000
    zmq_items: int = 50_000
    zmq_fan_items: int = 200
    zmq_format: str = "J"
    ch_clients: int = 10_000
    ch_items: int = 30_000
    ch_concurrency: int = 16
    ch_batch: int = 1
    control_keep_alive: bool = False  # gripd only: [gripd] control_keep_alive
    quick: bool = False
    extra_conf: dict[str, dict[str, str]] = field(default_factory=dict)


class Workers:
    """Forked load-generator processes (bench/loadgen.py, or ``target``) driven over pipes."""

    def __init__(self, count: int, target: Callable[[Connection], None] | None = None) -> None:
        ctx = mp.get_context("fork")
        self.conns: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=target or loadgen.worker_main, args=(child,), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.cpu_start = [0.0] * count
        self.cpu_last = [0.0] * count

    def call(self, msgs: list[dict[str, Any]], timeout: float = 300.0) -> list[dict[str, Any]]:
        for c, m in zip(self.conns, msgs, strict=True):
            c.send(m)
        out: list[dict[str, Any]] = []
        for i, c in enumerate(self.conns):
            if not c.poll(timeout):
                raise TimeoutError(f"load generator {i} did not answer {msgs[i]['op']}")
            r: dict[str, Any] = c.recv()
            self.cpu_last[i] = float(r.get("cpu", self.cpu_last[i]))
            out.append(r)
        return out

    def all(self, msg: dict[str, Any], timeout: float = 300.0) -> list[dict[str, Any]]:
        return self.call([msg] * len(self.conns), timeout)

    def mark(self) -> None:
        """Start a CPU-time measurement window."""
        self.all({"op": "warm"})
        self.cpu_start = list(self.cpu_last)

    def cpu(self) -> float:
        """Load-generator CPU seconds since ``mark``."""
        self.all({"op": "warm"})
        return sum(b - a for a, b in zip(self.cpu_start, self.cpu_last, strict=True))

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send({"op": "close"})
                c.poll(10)
            except (OSError, EOFError):
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def pct(samples: array.array[int], q: float) -> float:
    """Percentile ``q`` (0-100) in milliseconds of nanosecond samples; NaN when empty."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q / 100))] / 1e6


def start_origin() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "origin.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.match(r"PORT (\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"bench origin did not start: {line!r}")
    return proc, int(m.group(1))


def cpu_of(pid: int) -> float:
    from tests.support.procs import tree_cpu_seconds

    return tree_cpu_seconds(pid)


# The held-connection scenarios: (loadgen op, client path, publish format, extra routes).
# ``wsoh`` subscribes through WebSocket-over-HTTP (F40/F41), ``wsgrip`` through a GRIP WebSocket
# origin that sends one ``c:`` subscribe frame and never reads again (F37-F39).
HELD: dict[str, tuple[str, str, str]] = {
    "fanout": ("sse", "/stream/fan", "http-stream"),
    "rss": ("sse", "/stream/fan", "http-stream"),
    "wsoh": ("ws", "/woh/fan", "ws-message"),
    "wsgrip": ("ws", "/wsg/fan", "ws-message"),
}


def publish_item(fmt: str, tag: str, channel: str = "fan") -> dict[str, Any]:
    """One publish item whose content is ``<tag> <monotonic_ns>`` in the given format (F30)."""
    if fmt == "ws-message":
        return {"channel": channel, "formats": {"ws-message": {"content": f"{tag} {_now()}"}}}
    content = f"data: {tag} {_now()}\n\n"
    return {"channel": channel, "formats": {"http-stream": {"content": content}}}


def _now() -> int:
    return time.monotonic_ns()


def connect_held(
    server: Server,
    workers: Workers,
    st: Settings,
    op: str,
    path: str,
    n: int,
    fmt: str,
    *,
    spread: Sequence[Server] = (),
) -> tuple[list[Row], int]:
    """Open ``n`` held connections (≤ ``st.inflight`` connects in flight), warm up, measure RSS.

    The warm-up publishes ``w`` on channel ``fan`` until every connection saw it, so every
    subscription exists before anything is measured. Returns the rows and the connected count.
    ``spread``: servers to split the connections over evenly, one after the other (``{i}``
    numbers them across all), with RSS summed over them; default ``server`` alone. The warm-up
    always publishes to ``server``."""
    rows: list[Row] = []
    targets = list(spread) or [server]
    time.sleep(0.5)
    baseline = sum(s.rss_bytes() for s in targets)
    inflight = split(st.inflight, len(workers.conns))
    cpu0 = sum(s.cpu_seconds() for s in targets)
    t0 = time.monotonic()
    res: list[dict[str, Any]] = []
    start = 0
    for target, share in zip(targets, split(n, len(targets)), strict=True):
        parts = split(share, len(workers.conns))
        firsts = [start + sum(parts[:i]) for i in range(len(parts))]
        start += share
        res += workers.call(
            [
                {
                    "op": op,
                    "port": target.http_port,
                    "path": path,
                    "n": k,
                    "first": first,
                    "inflight": max(1, f),
                    "deadline": 300,
                }
                for k, f, first in zip(parts, inflight, firsts, strict=True)
            ],
            timeout=330,
        )
    connect_s = time.monotonic() - t0
    connect_cpu = sum(s.cpu_seconds() for s in targets) - cpu0
    ok = sum(r["ok"] for r in res)
    statuses: dict[str, int] = {}
    for r in res:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    rows.append(("held connections ok / asked", f"{ok} / {n}"))
    rows.append((f"connect time s (≤{st.inflight} in flight)", f"{connect_s:.1f}"))
    rows.append(("connect statuses", json.dumps(statuses, sort_keys=True)))
    rows.append(("connect retries", str(sum(r["retries"] for r in res))))
    # The rate is the load generator's pace or the server's, whichever is slower: the server's
    # CPU per subscription (and its share of a core while connecting) tells which.
    rows.append(("new subscriptions/s (connect phase)", f"{ok / max(connect_s, 1e-9):,.0f}"))
    rows.append(("server CPU s over the connects", f"{connect_cpu:.2f}"))
    rows.append(("server CPU ms per new subscription", f"{1000 * connect_cpu / max(1, ok):.3f}"))
    # Warm-up: publish until every connection saw one (the subscription exists), bounded.
    warm = 0
    for _ in range(60):
        publish_http(server.control_port, [publish_item(fmt, "w")])
        time.sleep(0.5)
        warm = sum(r["warm"] for r in workers.all({"op": "warm"}))
        if warm >= ok:
            break
    rows.append(("subscribed after warm-up", str(warm)))
    time.sleep(2.0)  # idle
    rss = sum(s.rss_bytes() for s in targets)
    rows.append(("server RSS baseline MiB", f"{baseline / 2**20:.1f}"))
    rows.append(("server RSS with N held MiB", f"{rss / 2**20:.1f}"))
    rows.append(("RSS per held connection KiB", f"{(rss - baseline) / max(1, ok) / 1024:.2f}"))
    return rows, ok


def drain(workers: Workers, expected: int) -> dict[str, Any]:
    """Wait until ``expected`` deliveries arrived, or nothing arrived for 5 s (at most 60 s);
    return the summed counts, the latency samples and the first/last receive times."""
    received = 0
    last_change = time.monotonic()
    drain_end = time.monotonic() + 60
    while time.monotonic() < drain_end and received < expected:
        time.sleep(0.25)
        now_received = sum(r["received"] for r in workers.all({"op": "fan"}))
        if now_received != received:
            received, last_change = now_received, time.monotonic()
        elif time.monotonic() - last_change > 5:
            break
    final = workers.all({"op": "fan_collect"})
    lat: array.array[int] = array.array("q")
    for r in final:
        lat.frombytes(r["lat"])
    out: dict[str, Any] = {
        "received": sum(r["received"] for r in final),
        "lat": lat,
        "last_ns": max((r["last_ns"] for r in final), default=0),
        "first_ns": min((r["first_ns"] for r in final if r["first_ns"]), default=0),
        "open": sum(r["open"] for r in final),
    }
    for key in ("ws_masked", "ws_other", "ws_fragments", "ws_closes", "parse_errors", "reads"):
        out[key] = sum(int(r.get(key, 0)) for r in final)
    codes: dict[str, int] = {}
    for r in final:
        for k, v in r.get("ws_close_codes", {}).items():
            codes[k] = codes.get(k, 0) + v
    out["ws_close_codes"] = codes
    return out


def latency_rows(lat: array.array[int]) -> list[Row]:
    return [
        ("latency p50 ms", f"{pct(lat, 50):.1f}"),
        ("latency p99 ms", f"{pct(lat, 99):.1f}"),
        ("latency max ms", f"{(max(lat) / 1e6 if lat else float('nan')):.1f}"),
    ]


def run_held(
    server: Server, workers: Workers, st: Settings, name: str, origin_pid: int
) -> list[Row]:
    """fanout/rss/wsoh/wsgrip: connect N clients on channel ``fan``, measure RSS, publish M."""
    op, path, fmt = HELD[name]
    cpu0 = server.cpu_seconds()
    workers.mark()
    rows, ok = connect_held(server, workers, st, op, path, st.connections, fmt)
    if name == "rss":
        rows.append(("server CPU s (connect+idle)", f"{server.cpu_seconds() - cpu0:.2f}"))
        rows.append(("loadgen CPU s", f"{workers.cpu():.2f}"))
        return rows
    workers.all({"op": "reset"})
    cpu1 = server.cpu_seconds()
    ocpu1 = cpu_of(origin_pid)
    workers.mark()
    t_pub0 = time.monotonic_ns()
    pub_err = 0
    for i in range(st.messages):
        due = t_pub0 + int(i * st.interval * 1e9)
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        status, _ = publish_http(server.control_port, [publish_item(fmt, f"m{i}")])
        pub_err += status != 200
    publish_s = (time.monotonic_ns() - t_pub0) / 1e9
    expected = st.messages * ok
    d = drain(workers, expected)
    received = d["received"]
    span = (d["last_ns"] - t_pub0) / 1e9 if d["last_ns"] else float("nan")
    rows.append(("messages published (interval s)", f"{st.messages} ({st.interval})"))
    rows.append(("publish errors", str(pub_err)))
    rows.append(("publish wall time s", f"{publish_s:.2f}"))
    rows.append(("deliveries received / expected", f"{received} / {expected}"))
    rows.append(("messages lost", str(expected - received)))
    rows.append(("deliveries/s (first publish → last receive)", f"{received / span:,.0f}"))
    rows.extend(latency_rows(d["lat"]))
    rows.append(("connections still open after drain", f"{d['open']} / {ok}"))
    rows.append(("deliveries per client read", f"{received / max(1, d['reads']):.2f}"))
    if op == "ws":
        rows.append(
            (
                "ws close frames / other / fragments / masked",
                f"{d['ws_closes']} / {d['ws_other']} / {d['ws_fragments']} / {d['ws_masked']}",
            )
        )
        rows.append(("ws close codes seen", json.dumps(d["ws_close_codes"], sort_keys=True)))
    rows.append(("server CPU s (publish phase)", f"{server.cpu_seconds() - cpu1:.2f}"))
    rows.append(("loadgen CPU s (publish phase)", f"{workers.cpu():.2f}"))
    rows.append(("origin CPU s (publish phase)", f"{cpu_of(origin_pid) - ocpu1:.2f}"))
    return rows


def run_push(script: str, *args: object, timeout: float = 150) -> dict[str, Any]:
    """Run a publisher (``bench/<script>``, its own process, ``--name value`` pairs in
    ``args``) and return the JSON line it prints last (its counts and its CPU)."""
    cmd = [sys.executable, str(BENCH / script), *(str(a) for a in args)]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    lines = proc.stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.decode()[-300:]
        raise RuntimeError(f"{script} failed ({proc.returncode}): {tail}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def run_zmq(server: Server, workers: Workers, st: Settings, origin_pid: int) -> list[Row]:
    """ZeroMQ PULL ingestion (F31): ``zmq_clients`` SSE streams, each subscribed to ``fan`` and
    to its own ``c<i>``. Phase "spread": ``zmq_items`` items round-robin over the ``c<i>``
    channels (1 delivery each), which measures ingestion. Phase "fan": ``zmq_fan_items`` items to
    ``fan`` (one delivery per client each). Items are sent flat out from a separate process."""
    n = st.zmq_clients
    rows, ok = connect_held(server, workers, st, "sse", "/stream/fan,c{i}", n, "http-stream")
    for phase, count, channels in (
        ("spread", st.zmq_items, n),
        ("fan", st.zmq_fan_items, 0),
    ):
        workers.all({"op": "reset"})
        cpu1 = server.cpu_seconds()
        workers.mark()
        push = run_push(
            "zmqpush.py",
            *("--port", server.zmq_pull_port, "--count", count, "--channels", channels),
            *("--format", st.zmq_format),
        )
        expected = push["sent"] * (ok if channels == 0 else 1)
        if channels:
            # Only items whose channel has a connected client can arrive.
            expected = sum(1 for j in range(push["sent"]) if j % channels < ok)
        d = drain(workers, expected)
        received = d["received"]
        t0 = push["first_ns"]
        span = (d["last_ns"] - t0) / 1e9 if d["last_ns"] else float("nan")
        items_done = received / (ok if channels == 0 else 1)
        rows.append(
            (
                f"[{phase}] items sent ({st.zmq_format} encoding) → channels",
                f"{push['sent']} → {channels or 'fan'}",
            )
        )
        if push.get("error"):
            rows.append((f"[{phase}] pusher error", str(push["error"])))
        rows.append((f"[{phase}] pusher send time s", f"{(push['last_ns'] - t0) / 1e9:.2f}"))
        rows.append((f"[{phase}] deliveries received / expected", f"{received} / {expected}"))
        rows.append((f"[{phase}] messages lost", str(expected - received)))
        rows.append((f"[{phase}] items/s (first send → last receive)", f"{items_done / span:,.0f}"))
        rows.append((f"[{phase}] deliveries/s", f"{received / span:,.0f}"))
        rows.extend((f"[{phase}] {m}", v) for m, v in latency_rows(d["lat"]))
        per_read = received / max(1, d["reads"])
        rows.append((f"[{phase}] deliveries per client read", f"{per_read:.2f}"))
        rows.append((f"[{phase}] server CPU s", f"{server.cpu_seconds() - cpu1:.2f}"))
        rows.append((f"[{phase}] loadgen CPU s", f"{workers.cpu():.2f}"))
        rows.append((f"[{phase}] pusher CPU s", f"{push['cpu']:.2f}"))
    return rows


def run_channels(server: Server, workers: Workers, st: Settings) -> list[Row]:
    """Many channels, one HTTP publish per item (F28): ``ch_clients`` SSE streams, each on its
    own ``c<i>`` (and ``fan`` for the warm-up); ``ch_items`` items round-robin over them, one
    ``POST /publish/`` each from ``ch_concurrency`` connections of a separate process
    (connections reused when the server keeps them open)."""
    n = st.ch_clients
    rows, ok = connect_held(server, workers, st, "sse", "/stream/fan,c{i}", n, "http-stream")
    workers.all({"op": "reset"})
    cpu1 = server.cpu_seconds()
    workers.mark()
    push = run_push(
        "httppush.py",
        *("--port", server.control_port, "--count", st.ch_items, "--channels", n),
        *("--concurrency", st.ch_concurrency, "--batch", st.ch_batch),
    )
    expected = sum(1 for j in range(push["ok_items"]) if j % n < ok)
    d = drain(workers, expected)
    cpu = server.cpu_seconds() - cpu1
    received = d["received"]
    t0 = push["first_ns"]
    span = (d["last_ns"] - t0) / 1e9 if d["last_ns"] else float("nan")
    rows.append(("items published → channels", f"{push['sent']} → {n}"))
    rows.append(("items per publish request", str(st.ch_batch)))
    rows.append(
        ("publisher connections (concurrent)", f"{push['connections']} ({st.ch_concurrency})")
    )
    rows.append(("publish answers", json.dumps(push["statuses"], sort_keys=True)))
    if push.get("error"):
        rows.append(("publisher error", str(push["error"])))
    rows.append(("publisher send time s", f"{(push['last_ns'] - t0) / 1e9:.2f}"))
    rows.append(("deliveries received / expected", f"{received} / {expected}"))
    rows.append(("messages lost", str(expected - received)))
    rows.append(("deliveries/s (first publish → last receive)", f"{received / span:,.0f}"))
    rows.extend(latency_rows(d["lat"]))
    rows.append(("server CPU s", f"{cpu:.2f}"))
    rows.append(("server CPU s per 1k items", f"{cpu * 1000 / max(1, push['sent']):.4f}"))
    rows.append(("loadgen CPU s", f"{workers.cpu():.2f}"))
    rows.append(("publisher CPU s", f"{push['cpu']:.2f}"))
    return rows


def run_longpoll(server: Server, workers: Workers, st: Settings, origin_pid: int) -> list[Row]:
    """Scenario 3: each client polls its own channel; a publish releases it; it re-polls."""
    cpu0 = server.cpu_seconds()
    ocpu0 = cpu_of(origin_pid)
    workers.mark()
    parts = split(st.lp_clients, len(workers.conns))
    inflight = split(st.inflight, len(workers.conns))
    res = workers.call(
        [
            {
                "op": "lp",
                "port": server.http_port,
                "control_port": server.control_port,
                "clients": k,
                "duration": st.lp_seconds,
                "settle_ms": st.lp_settle_ms,
                "retry_ms": 250,
                "inflight": max(1, f),
                "prefix": f"lp{i}-",
            }
            for i, (k, f) in enumerate(zip(parts, inflight, strict=True))
        ],
        timeout=st.lp_seconds + 120,
    )
    lat: array.array[int] = array.array("q")
    for r in res:
        lat.frombytes(r["lat"])
    secs = max(r["seconds"] for r in res)
    cycles = sum(r["cycles"] for r in res)

    err_statuses: dict[str, int] = {}
    for r in res:
        for k, v in r["error_statuses"].items():
            err_statuses[k] = err_statuses.get(k, 0) + v

    def total(key: str) -> int:
        return int(sum(r[key] for r in res))

    return [
        ("long-poll clients (own channel each)", str(st.lp_clients)),
        ("publish delay after each poll ms", str(st.lp_settle_ms)),
        ("cycles/s", f"{cycles / secs:,.0f}"),
        ("cycles total", str(cycles)),
        ("cycle time p50 ms (poll sent → response)", f"{pct(lat, 50):.1f}"),
        ("cycle time p99 ms", f"{pct(lat, 99):.1f}"),
        ("publish requests / items", f"{total('publishes')} / {total('items')}"),
        ("items per completed cycle", f"{total('items') / max(1, cycles):.2f}"),
        ("stale / non-200 responses", f"{total('stale')} / {total('errors')}"),
        ("non-200 statuses", json.dumps(err_statuses, sort_keys=True)),
        (
            "publish errors / connect failures / reconnects",
            f"{total('publish_errors')} / {total('connect_failures')} / {total('reconnects')}",
        ),
        ("server CPU s", f"{server.cpu_seconds() - cpu0:.2f}"),
        ("loadgen CPU s", f"{workers.cpu():.2f}"),
        ("origin CPU s", f"{cpu_of(origin_pid) - ocpu0:.2f}"),
    ]


def run_passthrough(server: Server, st: Settings, origin_pid: int) -> list[Row]:
    """Scenario 4: wrk against a non-GRIP path of the fast origin."""
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    url = server.base_url() + "/pass"
    cpu0 = server.cpu_seconds()
    ocpu0 = cpu_of(origin_pid)
    proc = subprocess.Popen(
        [wrk, "-t2", f"-c{st.wrk_connections}", f"-d{st.wrk_seconds}s", "--latency", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace")
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = re.search(r"Socket errors:(.*)", out)
    if rps is None:
        print(out, file=sys.stderr)
    return [
        ("wrk", f"-t2 -c{st.wrk_connections} -d{st.wrk_seconds}s"),
        ("requests/s", f"{float(rps.group(1)):,.0f}" if rps else "n/a"),
        ("latency p50 / p99", f"{p50.group(1) if p50 else '?'} / {p99.group(1) if p99 else '?'}"),
        ("non-2xx", non2xx.group(1) if non2xx else "0"),
        ("socket errors", errs.group(1).strip() if errs else "none"),
        ("server CPU s", f"{server.cpu_seconds() - cpu0:.2f}"),
        ("wrk CPU s", f"{rusage.ru_utime + rusage.ru_stime:.2f}"),
        ("origin CPU s", f"{cpu_of(origin_pid) - ocpu0:.2f}"),
    ]


def run_impl(
    impl: Impl,
    names: list[str],
    st: Settings,
    origin_port: int,
    origin_pid: int,
    workdir: Path,
    *,
    gripd_workers: int | None = None,
    label: str | None = None,
) -> dict[str, list[Row]]:
    conf = merge_conf(NO_RATE_LIMIT, st.extra_conf)
    if gripd_workers is not None:
        conf = merge_conf(conf, {"gripd": {"workers": str(gripd_workers)}})
    if impl == "gripd" and st.control_keep_alive:
        conf = merge_conf(conf, {"gripd": {"control_keep_alive": "true"}})
    label = label or impl
    results: dict[str, list[Row]] = {}
    routes = [f"* 127.0.0.1:{origin_port}"]
    for name in names:
        if name == "rss" and "fanout" in names:
            continue  # the fan-out run measures RSS too
        print(f"[{label}] {name} ...", file=sys.stderr, flush=True)
        scenario_routes = routes
        if name == "wsoh":  # /woh/... goes to the same origin as WebSocket-over-HTTP (F40)
            scenario_routes = [f"*,path_beg=/woh 127.0.0.1:{origin_port},over_http", *routes]
        server = start_server(
            impl, workdir / f"{label}-{name}", scenario_routes, conf=conf, timeout=30
        )
        workers = Workers(st.workers) if name != "passthrough" else None
        try:
            if name in HELD:
                assert workers is not None
                results[name] = run_held(server, workers, st, name, origin_pid)
            elif name == "zmq":
                assert workers is not None
                results[name] = run_zmq(server, workers, st, origin_pid)
            elif name == "channels":
                assert workers is not None
                results[name] = run_channels(server, workers, st)
            elif name == "longpoll":
                assert workers is not None
                results[name] = run_longpoll(server, workers, st, origin_pid)
            else:
                results[name] = run_passthrough(server, st, origin_pid)
        except Exception as e:  # record and go on with the next scenario
            results[name] = [("error", f"{type(e).__name__}: {e}".splitlines()[0][:200])]
            print(f"[{label}] {name} failed: {e}", file=sys.stderr)
        finally:
            if workers is not None:
                workers.close()
            server.stop()
    return results


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc={os.cpu_count()}, CPU: {cpu}, Python {platform.python_version()}"


def table(
    results: dict[str, dict[str, list[Row]]],
    impls: list[str],
    scenarios: Sequence[str] = SCENARIOS,
) -> str:
    out: list[str] = []
    for name in scenarios:
        present = [i for i in impls if name in results.get(i, {})]
        if not present:
            continue
        out.append(f"\n### {name}\n")
        out.append("| metric | " + " | ".join(present) + " |")
        out.append("|---|" + "---|" * len(present))
        metrics: list[str] = []
        for i in present:
            for m, _ in results[i][name]:
                if m not in metrics:
                    metrics.append(m)
        for m in metrics:
            vals = [dict(results[i][name]).get(m, "") for i in present]
            out.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gripd vs Pushpin benchmark (see bench/README.md)")
    ap.add_argument(
        "--only", choices=SCENARIOS, action="append", help="run only this scenario (repeatable)"
    )
    ap.add_argument("--impl", choices=("gripd", "pushpin", "both"), default="both")
    ap.add_argument(
        "--gripd-workers",
        default="1",
        help="gripd's [gripd] workers, or a comma list to compare (e.g. 1,2); default 1",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, < 2 minutes")
    ap.add_argument("--connections", type=int)
    ap.add_argument("--messages", type=int)
    ap.add_argument("--interval", type=float, help="seconds between fan-out publishes")
    ap.add_argument("--workers", type=int, help="load-generator processes")
    ap.add_argument("--lp-clients", type=int)
    ap.add_argument(
        "--lp-settle-ms",
        type=int,
        help="long-poll: ms from a poll to its channel's publish (default 10); it bounds the "
        "rate at about clients / (delay + cycle time)",
    )
    ap.add_argument("--seconds", type=int, help="duration of long-poll and wrk runs")
    ap.add_argument("--workdir", type=Path, help="keep server configs and logs here")
    ap.add_argument("--loglevel", help="[runner] log_level for both servers (default 2)")
    ap.add_argument("--zmq-clients", type=int, help="zmq: SSE subscribers (default 1000)")
    ap.add_argument("--zmq-items", type=int, help="zmq: items spread over the clients' channels")
    ap.add_argument("--zmq-fan-items", type=int, help="zmq: items to the shared channel")
    ap.add_argument("--zmq-format", choices=("J", "T"), help="zmq: J+JSON or T+tnetstring")
    ap.add_argument("--ch-clients", type=int, help="channels: SSE subscribers, one channel each")
    ap.add_argument("--ch-items", type=int, help="channels: items, one HTTP publish each")
    ap.add_argument("--ch-concurrency", type=int, help="channels: publisher connections (16)")
    ap.add_argument("--ch-batch", type=int, help="channels: items per publish request (1)")
    ap.add_argument(
        "--control-keep-alive",
        action="store_true",
        help="gripd: [gripd] control_keep_alive = true (publishers reuse connections)",
    )
    args = ap.parse_args(argv)
    st = Settings()
    if args.quick:
        st = Settings(
            connections=1000,
            messages=10,
            lp_clients=50,
            lp_seconds=5.0,
            wrk_seconds=5,
            zmq_clients=200,
            zmq_items=5000,
            zmq_fan_items=50,
            ch_clients=1000,
            ch_items=5000,
            quick=True,
        )
        if args.only and set(args.only) <= {"wsoh", "wsgrip", "zmq"}:
            st.connections = 200  # the WebSocket quick runs: 200 clients
    st.zmq_clients = args.zmq_clients or st.zmq_clients
    st.zmq_items = args.zmq_items or st.zmq_items
    st.zmq_fan_items = args.zmq_fan_items or st.zmq_fan_items
    st.zmq_format = args.zmq_format or st.zmq_format
    st.ch_clients = args.ch_clients or st.ch_clients
    st.ch_items = args.ch_items or st.ch_items
    st.ch_concurrency = args.ch_concurrency or st.ch_concurrency
    st.ch_batch = args.ch_batch or st.ch_batch
    st.control_keep_alive = args.control_keep_alive
    st.connections = args.connections or st.connections
    st.messages = args.messages or st.messages
    st.interval = args.interval if args.interval is not None else st.interval
    st.workers = args.workers or st.workers
    st.lp_clients = args.lp_clients or st.lp_clients
    if args.lp_settle_ms is not None:
        if args.lp_settle_ms < 0:
            ap.error("--lp-settle-ms must be 0 or more")
        st.lp_settle_ms = args.lp_settle_ms
    if args.seconds:
        st.lp_seconds = float(args.seconds)
        st.wrk_seconds = args.seconds
    if args.loglevel:
        st.extra_conf = {"runner": {"log_level": args.loglevel}}
    names = list(dict.fromkeys(args.only or DEFAULT_SCENARIOS))
    impls: list[Impl] = []
    for impl in ("gripd", "pushpin") if args.impl == "both" else (args.impl,):
        if impl == "gripd" and not gripd_runnable():
            print("gripd/__main__.py missing: skipping gripd", file=sys.stderr)
        elif impl == "pushpin" and not pushpin_installed():
            print("pushpin not installed: skipping pushpin", file=sys.stderr)
        else:
            impls.append(impl)
    if not impls:
        print("nothing to benchmark", file=sys.stderr)
        return 2
    raise_nofile_limit()
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C so servers and the origin are stopped.
    signal.signal(signal.SIGTERM, _on_sigterm)
    origin, origin_port = start_origin()
    results: dict[str, dict[str, list[Row]]] = {}
    labels: list[str] = []
    started = dt.datetime.now(dt.UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="gripd-bench-") as tmp:
            workdir = args.workdir.resolve() if args.workdir else Path(tmp)
            for impl in impls:
                if impl != "gripd":
                    results[impl] = run_impl(impl, names, st, origin_port, origin.pid, workdir)
                    labels.append(impl)
                    continue
                counts = [int(w) for w in args.gripd_workers.split(",")]
                for w in counts:
                    label = "gripd" if len(counts) == 1 else f"gripd w={w}"
                    results[label] = run_impl(
                        impl,
                        names,
                        st,
                        origin_port,
                        origin.pid,
                        workdir,
                        gripd_workers=w,
                        label=label,
                    )
                    labels.append(label)
    finally:
        origin.terminate()
        origin.wait(10)
    cmd = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"## {started:%Y-%m-%d %H:%M} UTC — `{cmd.strip()}`\n\n{machine()}; "
        f"connections={st.connections}, messages={st.messages}, interval={st.interval}, "
        f"lp_clients={st.lp_clients}, zmq clients/items/fan items="
        f"{st.zmq_clients}/{st.zmq_items}/{st.zmq_fan_items}, channels clients/items/"
        f"publishers/batch={st.ch_clients}/{st.ch_items}/{st.ch_concurrency}/{st.ch_batch}, "
        "control_keep_alive="
        f"{st.control_keep_alive}, loadgen workers={st.workers}, "
        f"gripd workers={args.gripd_workers}\n"
    )
    text = header + table(results, labels)
    print(text)
    outdir = BENCH / "out"
    outdir.mkdir(exist_ok=True)
    with open(outdir / "results.md", "a") as f:
        f.write(text + "\n")
    with open(outdir / "results.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "cmd": cmd,
                    "machine": machine(),
                    "settings": st.__dict__,
                    "results": results,
                }
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""gripd scale-out over Redis: what the Redis bus costs and what a second instance brings.

Usage: ``python bench/scaleout.py [--only fanout|channels] [--quick] [--gripd-workers N]``; see
bench/README.md. Setups, measured one after the other in one run, each on fresh servers:

1. one gripd, no bus (the baseline);
2. one gripd with ``[gripd] bus = redis://...`` (every publish makes a Redis round trip);
3. two gripd instances on one Redis, the subscribers split evenly between them, publishing to
   instance A (B's subscribers get everything through Redis).

Scenario ``fanout`` (setups 1-3): N SSE subscribers on channel ``fan``, M messages published
``--interval`` apart through A's HTTP control API. Scenario ``channels`` (setups 1 and 3): S SSE
subscribers each on its own channel, then K items round-robin over those channels pushed flat out
into A's ZeroMQ PULL socket (bench/zmqpush.py). Each setup gets its own ``redis-server`` (started
by tests/support/redis.py on 127.0.0.1) and its own gripd processes; the load generator, the
origin and the helpers are bench/run.py's. Results are printed as a markdown table (one column
per setup) and appended to ``bench/out/scaleout.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import run  # bench/run.py; puts the repo root and bench/ on sys.path
from run import (
    BENCH,
    Row,
    Settings,
    Workers,
    connect_held,
    cpu_of,
    drain,
    latency_rows,
    machine,
    publish_item,
    run_push,
    split,
    start_origin,
    table,
)

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

SCENARIOS = ("fanout", "channels")


@dataclass(frozen=True)
class Setup:
    """One deployment: how many gripd instances, and whether they use the Redis bus."""

    key: str  # short name for work directories
    label: str  # table column
    instances: int
    bus: bool


SINGLE = Setup("single", "1 instance, no bus", 1, False)
SINGLE_BUS = Setup("single-redis", "1 instance + Redis bus", 1, True)
PAIR = Setup("pair-redis", "2 instances + Redis (split)", 2, True)
#: The setups each scenario is measured on.
SETUPS: dict[str, tuple[Setup, ...]] = {
    "fanout": (SINGLE, SINGLE_BUS, PAIR),
    "channels": (SINGLE, PAIR),
}


@dataclass
class Deployment:
    """The processes of one setup: gripd instances (A first) and the Redis server, if any."""

    servers: list[Server]
    redis: RedisServer | None

    def gripd_cpu(self) -> list[float]:
        """CPU seconds so far per instance (each its whole process tree)."""
        return [s.cpu_seconds() for s in self.servers]

    def redis_cpu(self) -> float:
        """CPU seconds so far of redis-server (utime+stime from /proc/<pid>/stat)."""
        return cpu_of(self.redis.pid) if self.redis is not None and self.redis.running else 0.0


def per_1k(cpu: float, count: int) -> str:
    return f"{cpu / (count / 1000):.3f}" if count > 0 else "n/a"


def cpu_rows(
    dep: Deployment, gripd0: list[float], redis0: float, count: int, what: str
) -> list[Row]:
    """gripd CPU (sum, per instance, per 1k ``what``) and redis-server CPU since the marks."""
    used = [b - a for a, b in zip(gripd0, dep.gripd_cpu(), strict=True)]
    rows: list[Row] = [("gripd CPU s (sum over instances)", f"{sum(used):.2f}")]
    rows.append(("gripd CPU s per instance (A / B)", " / ".join(f"{u:.2f}" for u in used)))
    rows.append((f"gripd CPU s per 1k {what}", per_1k(sum(used), count)))
    if dep.redis is None:
        rows.append(("redis-server CPU s", "n/a"))
        rows.append((f"redis-server CPU s per 1k {what}", "n/a"))
    else:
        rcpu = dep.redis_cpu() - redis0
        rows.append(("redis-server CPU s", f"{rcpu:.2f}"))
        rows.append((f"redis-server CPU s per 1k {what}", per_1k(rcpu, count)))
    return rows


def shares(n: int, dep: Deployment) -> str:
    return " / ".join(str(k) for k in split(n, len(dep.servers)))


def run_fanout(dep: Deployment, workers: Workers, st: Settings) -> list[Row]:
    """N subscribers on ``fan`` (split over the instances), M publishes to A's control API."""
    a = dep.servers[0]
    rows, ok = connect_held(
        a, workers, st, "sse", "/stream/fan", st.connections, "http-stream", spread=dep.servers
    )
    rows.insert(0, ("subscribers per instance (A / B)", shares(st.connections, dep)))
    workers.all({"op": "reset"})
    gripd0, redis0 = dep.gripd_cpu(), dep.redis_cpu()
    workers.mark()
    t_pub0 = time.monotonic_ns()
    pub_err = 0
    for i in range(st.messages):
        delay = (t_pub0 + int(i * st.interval * 1e9) - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        status, _ = publish_http(a.control_port, [publish_item("http-stream", f"m{i}")])
        pub_err += status != 200
    expected = st.messages * ok
    d = drain(workers, expected)
    received = d["received"]
    span = (d["last_ns"] - t_pub0) / 1e9 if d["last_ns"] else float("nan")
    rows.append(("messages published to A (interval s)", f"{st.messages} ({st.interval})"))
    rows.append(("publish errors", str(pub_err)))
    rows.append(("deliveries received / expected", f"{received} / {expected}"))
    rows.append(("messages lost", str(expected - received)))
    rows.append(("deliveries/s (first publish → last receive)", f"{received / span:,.0f}"))
    rows.extend(latency_rows(d["lat"]))
    rows.append(("connections still open after drain", f"{d['open']} / {ok}"))
    rows.extend(cpu_rows(dep, gripd0, redis0, received, "deliveries"))
    rows.append(("loadgen CPU s", f"{workers.cpu():.2f}"))
    return rows


def run_channels(dep: Deployment, workers: Workers, st: Settings) -> list[Row]:
    """S subscribers on their own channel ``c<i>`` (split over the instances; each also on
    ``fan`` for the warm-up), K items round-robin over them pushed into A's ZeroMQ PULL."""
    a = dep.servers[0]
    n = st.zmq_clients
    rows, ok = connect_held(
        a, workers, st, "sse", "/stream/fan,c{i}", n, "http-stream", spread=dep.servers
    )
    rows.insert(0, ("subscribers per instance (A / B)", shares(n, dep)))
    workers.all({"op": "reset"})
    gripd0, redis0 = dep.gripd_cpu(), dep.redis_cpu()
    workers.mark()
    push = run_push(
        "zmqpush.py",
        *("--port", a.zmq_pull_port, "--count", st.zmq_items, "--channels", n),
        *("--format", st.zmq_format),
    )
    # Only items whose channel has a connected client can arrive (as in run.py's zmq scenario).
    expected = sum(1 for j in range(push["sent"]) if j % n < ok)
    d = drain(workers, expected)
    received = d["received"]
    t0 = push["first_ns"]
    span = (d["last_ns"] - t0) / 1e9 if d["last_ns"] else float("nan")
    rows.append(("items pushed into A → channels", f"{push['sent']} → {n}"))
    if push.get("error"):
        rows.append(("pusher error", str(push["error"])))
    rows.append(("pusher send time s", f"{(push['last_ns'] - t0) / 1e9:.2f}"))
    rows.append(("deliveries received / expected", f"{received} / {expected}"))
    rows.append(("messages lost", str(expected - received)))
    rows.append(("items/s delivered (first send → last receive)", f"{received / span:,.0f}"))
    rows.extend(latency_rows(d["lat"]))
    rows.extend(cpu_rows(dep, gripd0, redis0, received, "items"))
    rows.append(("loadgen CPU s", f"{workers.cpu():.2f}"))
    rows.append(("pusher CPU s", f"{push['cpu']:.2f}"))
    return rows


def run_setup(
    name: str, setup: Setup, st: Settings, origin_port: int, workdir: Path, gripd_workers: int
) -> list[Row]:
    """Start Redis (if the setup uses it) and the instances, run scenario ``name``, stop them.

    Everything started here is stopped here (by PID), also on Ctrl-C/SIGTERM."""
    base = workdir / f"{name}-{setup.key}"
    redis: RedisServer | None = None
    servers: list[Server] = []
    workers: Workers | None = None
    try:
        conf = merge_conf(NO_RATE_LIMIT, st.extra_conf)
        conf = merge_conf(conf, {"gripd": {"workers": str(gripd_workers)}})
        if setup.bus:
            redis = RedisServer(base / "redis")
            redis.start()
            conf = merge_conf(conf, {"gripd": {"bus": redis.url}})
        for i in range(setup.instances):
            servers.append(
                start_server(
                    "gripd",
                    base / "AB"[i],
                    [f"* 127.0.0.1:{origin_port}"],
                    conf=conf,
                    timeout=30,
                )
            )
        workers = Workers(st.workers)
        dep = Deployment(servers, redis)
        return run_fanout(dep, workers, st) if name == "fanout" else run_channels(dep, workers, st)
    except Exception as e:  # record and go on with the next setup
        print(f"[{setup.label}] {name} failed: {e}", file=sys.stderr)
        return [("error", f"{type(e).__name__}: {e}".splitlines()[0][:200])]
    finally:
        if workers is not None:
            workers.close()
        for s in servers:
            s.stop()
        if redis is not None:
            redis.stop()


def redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    words = out.stdout.decode(errors="replace").split()
    return next((w[2:] for w in words if w.startswith("v=")), "?")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gripd scale-out over Redis (see bench/README.md)")
    ap.add_argument("--only", choices=SCENARIOS, action="append", help="run only this scenario")
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    ap.add_argument("--connections", type=int, help="fanout: subscribers (default 10,000)")
    ap.add_argument("--messages", type=int, help="fanout: messages (default 20)")
    ap.add_argument("--interval", type=float, help="fanout: seconds between publishes (1)")
    ap.add_argument("--channels", type=int, help="channels: subscribers/channels (2,000)")
    ap.add_argument("--items", type=int, help="channels: items pushed (default 20,000)")
    ap.add_argument("--gripd-workers", type=int, default=1, help="[gripd] workers per instance")
    ap.add_argument("--workers", type=int, help="load-generator processes (default 2)")
    ap.add_argument("--workdir", type=Path, help="keep configs and logs here")
    args = ap.parse_args(argv)
    if args.quick:
        st = Settings(
            connections=1000, messages=5, interval=0.5, zmq_clients=500, zmq_items=5000, quick=True
        )
    else:
        st = Settings(
            connections=10_000, messages=20, interval=1.0, zmq_clients=2000, zmq_items=20_000
        )
    st.connections = args.connections or st.connections
    st.messages = args.messages or st.messages
    st.interval = args.interval if args.interval is not None else st.interval
    st.zmq_clients = args.channels or st.zmq_clients
    st.zmq_items = args.items or st.zmq_items
    st.workers = args.workers or st.workers
    names = list(dict.fromkeys(args.only or SCENARIOS))
    if not gripd_runnable():
        print("gripd/__main__.py missing", file=sys.stderr)
        return 2
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    raise_nofile_limit()
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C so every process started is stopped.
    signal.signal(signal.SIGTERM, run._on_sigterm)
    origin, origin_port = start_origin()
    results: dict[str, dict[str, list[Row]]] = {}
    labels: list[str] = []
    started = dt.datetime.now(dt.UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="gripd-scaleout-") as tmp:
            workdir = args.workdir.resolve() if args.workdir else Path(tmp)
            for name in names:
                for setup in SETUPS[name]:
                    print(f"[{setup.label}] {name} ...", file=sys.stderr, flush=True)
                    rows = run_setup(name, setup, st, origin_port, workdir, args.gripd_workers)
                    results.setdefault(setup.label, {})[name] = rows
                    if setup.label not in labels:
                        labels.append(setup.label)
    finally:
        origin.terminate()
        origin.wait(10)
    cmd = "python bench/scaleout.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"## {started:%Y-%m-%d %H:%M} UTC — `{cmd.strip()}`\n\n{machine()}; "
        f"redis-server {redis_version()}; fanout: connections={st.connections}, "
        f"messages={st.messages}, interval={st.interval}; channels: subscribers="
        f"{st.zmq_clients}, items={st.zmq_items}; gripd workers per instance="
        f"{args.gripd_workers}, loadgen workers={st.workers}\n"
    )
    text = header + table(results, labels, SCENARIOS)
    print(text)
    outdir = BENCH / "out"
    outdir.mkdir(exist_ok=True)
    with open(outdir / "scaleout.md", "a") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fan-out to many SSE subscribers, read by a load generator in C (``bench/csse.c``).

The Python load generator of ``bench/run.py`` spends about as much CPU reading a fan-out as
gripd spends sending it, on the same cores, so its latencies are partly its own. This one
compiles ``bench/csse.c`` (gcc) and lets it hold the connections: it costs a fraction of that
per delivery, so the latency a subscriber sees is mostly the server's.

    python bench/cfanout.py [--impl gripd|pushpin|both] [--gripd-workers 1,2]
                            [--connections 10000] [--messages 10] [--interval 1.0]

Per server: connect ``--connections`` clients to ``/stream/fan`` (at most ``--inflight`` connects
in flight), publish warm-up items until every client saw one, wait 2 s, then publish
``--messages`` items ``--interval`` seconds apart over the HTTP control API and wait for every
delivery. Reports the connect rate and the server's CPU per new subscription, the latency of
every delivery (publish → the client's read), and the server's CPU per 1k deliveries. Pushpin
runs with its rate limits off (see ``tests.support.procs.NO_RATE_LIMIT``); the results are
appended to ``bench/out/cfanout.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from run import (  # bench/run.py; puts the repo root and bench/ on sys.path
    BENCH,
    Row,
    machine,
    publish_item,
    start_origin,
    table,
)

from tests.support.procs import (
    NO_RATE_LIMIT,
    Impl,
    gripd_runnable,
    merge_conf,
    publish_http,
    raise_nofile_limit,
    start_server,
)

OUT = BENCH / "out" / "cfanout.md"


def build_client(workdir: Path) -> Path:
    """Compile ``csse.c`` into ``workdir``; raises when there is no C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc or cc) to build bench/csse.c")
    exe = workdir / "csse"
    subprocess.run([cc, "-O2", "-o", str(exe), str(BENCH / "csse.c")], check=True)
    return exe


class Client:
    """The C load generator as a child process; its stdout lines arrive in a queue."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait(self, word: str, timeout: float) -> list[str] | None:
        """The next line starting with ``word``, split; None after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line.split()[:1] == [word]:
                return line.split()
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def run_one(
    impl: Impl,
    label: str,
    workers: int | None,
    exe: Path,
    args: argparse.Namespace,
    origin_port: int,
    workdir: Path,
) -> list[Row]:
    conf = merge_conf(NO_RATE_LIMIT, None)
    if workers is not None:
        conf = merge_conf(conf, {"gripd": {"workers": str(workers)}})
    server = start_server(
        impl, workdir / label, [f"* 127.0.0.1:{origin_port}"], conf=conf, timeout=30
    )
    n, m = args.connections, args.messages
    deadline = 120 + m * args.interval + 60
    client: Client | None = None
    rows: list[Row] = []
    try:
        cpu0 = server.cpu_seconds()
        argv = [str(exe), "127.0.0.1", str(server.http_port), "/stream/fan", str(n)]
        client = Client([*argv, str(args.inflight), str(m), str(deadline)])
        got = client.wait("connected", 300)
        if got is None:
            raise RuntimeError("the clients did not connect within 300 s")
        ok, failed, ms = int(got[1]), int(got[2]), float(got[3])
        connect_cpu = server.cpu_seconds() - cpu0
        rows += [
            ("held connections ok / asked", f"{ok} / {n}"),
            (f"connect time s (≤{args.inflight} in flight)", f"{ms / 1000:.2f}"),
            ("new subscriptions/s (connect phase)", f"{ok / max(ms / 1000, 1e-9):,.0f}"),
            ("server CPU ms per new subscription", f"{1000 * connect_cpu / max(1, ok):.3f}"),
        ]
        warmed = False
        for _ in range(60):  # bounded: 30 s
            publish_http(server.control_port, [publish_item("http-stream", "w")])
            if client.wait("warmed", 0.5) is not None:
                warmed = True
                break
        if not warmed:
            raise RuntimeError("not every client got the warm-up items")
        time.sleep(2.0)
        cpu1 = server.cpu_seconds()
        t0 = time.monotonic()
        errors = 0
        for i in range(m):
            delay = t0 + i * args.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            status, _ = publish_http(server.control_port, [publish_item("http-stream", f"m{i}")])
            errors += status != 200
        done = client.wait("done", deadline)
        if done is None:
            raise RuntimeError("the client did not finish")
        received, expected = int(done[1]), int(done[2])
        p50, p99, mx = (int(x) / 1000 for x in done[3:6])
        client_cpu, still_open = float(done[7]), int(done[8])
        server_cpu = server.cpu_seconds() - cpu1
        rows += [
            ("messages published (interval s), errors", f"{m} ({args.interval}), {errors}"),
            ("deliveries received / expected", f"{received} / {expected}"),
            ("latency p50 / p99 / max ms", f"{p50:.1f} / {p99:.1f} / {mx:.1f}"),
            ("server CPU s (publish phase)", f"{server_cpu:.2f}"),
            ("server CPU s per 1k deliveries", f"{1000 * server_cpu / max(1, received):.4f}"),
            ("client CPU s (whole run)", f"{client_cpu:.2f}"),
            ("connections still open", f"{still_open} / {ok}"),
        ]
        if failed:
            rows.append(("failed connects", str(failed)))
    except Exception as e:  # record and go on with the next server
        rows.append(("error", f"{type(e).__name__}: {e}".splitlines()[0][:200]))
    finally:
        if client is not None:
            client.stop()
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("gripd", "pushpin", "both"), default="gripd")
    ap.add_argument("--gripd-workers", default="1", help="comma list, e.g. 1,2")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--inflight", type=int, default=50)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args(argv)
    if not 1 <= args.connections <= 60_000 or not 0 < args.messages <= 1000:
        ap.error("--connections 1..60000 and --messages 1..1000")
    if args.impl != "pushpin" and not gripd_runnable():
        ap.error("gripd is not runnable from this tree")
    raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="cfanout-"))
    exe = build_client(workdir)
    origin, origin_port = start_origin()
    results: dict[str, dict[str, list[Row]]] = {}
    try:
        impls: list[tuple[Impl, str, int | None]] = []
        if args.impl in ("gripd", "both"):
            for count in (int(x) for x in args.gripd_workers.split(",")):
                impls.append(("gripd", f"gripd w={count}", count))
        if args.impl in ("pushpin", "both"):
            impls.append(("pushpin", "pushpin", None))
        for impl, label, w in impls:
            print(f"[{label}] fan-out ...", file=sys.stderr, flush=True)
            results[label] = {"fanout": run_one(impl, label, w, exe, args, origin_port, workdir)}
    finally:
        origin.kill()
        origin.wait(10)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/cfanout.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"## {when} — `{cmd.strip()}`\n\n{machine()}\n" + table(
        results, list(results), ["fanout"]
    )
    print(text)
    OUT.parent.mkdir(exist_ok=True)
    with OUT.open("a") as f:
        f.write("\n" + text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

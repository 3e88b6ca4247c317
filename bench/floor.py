"""The floor of a Python proxy: how little CPU per request uvloop + httptools can spend.

gripd's pass-through goal is a CPU cost per request. This script measures what the cheapest
possible Python proxy on the same stack costs on the same workload, so that a goal can be set
against it:

- ``relay``: a TCP relay. Each client connection gets its own origin connection and bytes are
  copied both ways as they arrive: no parsing at all. The cost is the event loop, the reads and
  the writes.
- ``http``: the same, plus an ``httptools`` parser on each direction that finds where each
  request and each response ends (a proxy has to know that to do anything with them); the raw
  bytes are still forwarded untouched, with no header rewrite.
- ``gripd``: gripd itself (``workers = 1``) for comparison in the same run.

Each mode is run under ``wrk -t2 -c50`` against ``bench/origin.py``'s ``/pass`` path, the
``passthrough`` scenario of ``bench/run.py``. The report is the proxy process's CPU seconds per
1,000 requests and the request rate. Rounds alternate the modes, since this machine's speed
moves from minute to minute.

    .venv/bin/python bench/floor.py --seconds 8 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))


# --- the two minimal proxies (run in a child process: ``floor.py --serve MODE PORT ORIGIN``) ---


class _Origin(asyncio.Protocol):
    """The origin side of one client connection: bytes back to the client."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.parser: object = None
        if client.parse:
            import httptools

            self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client.origin_ready(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            self.parser.feed_data(data)  # type: ignore[attr-defined]
        self.client.transport.write(data)

    def on_message_complete(self) -> None:
        self.client.responses += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class _Client(asyncio.Protocol):
    """One client connection: bytes on to its own origin connection."""

    def __init__(self, origin_port: int, parse: bool) -> None:
        self.origin_port = origin_port
        self.parse = parse
        self.pending: list[bytes] = []
        self.origin: asyncio.Transport | None = None
        self.responses = 0
        self.parser: object = None
        if parse:
            import httptools

            self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: _Origin(self), "127.0.0.1", self.origin_port)
        )

    def origin_ready(self, transport: asyncio.Transport) -> None:
        self.origin = transport
        for b in self.pending:
            transport.write(b)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            self.parser.feed_data(data)  # type: ignore[attr-defined]
        if self.origin is None:
            self.pending.append(data)
        else:
            self.origin.write(data)

    def on_message_complete(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.origin is not None:
            self.origin.close()


def _write_port(path: str, port: int) -> None:
    Path(path).write_text(str(port))


def serve(mode: str, port_file: str, origin_port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Client(origin_port, mode == "http"), "127.0.0.1", 0, backlog=1024
        )
        port = server.sockets[0].getsockname()[1]
        _write_port(port_file, port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(main())


# --- the driver ---


def _cpu(pid: int) -> float:
    from tests.support.procs import tree_cpu_seconds

    return tree_cpu_seconds(pid)


def _wait_port(path: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"no port in {path}")


def _start(mode: str, origin_port: int, tmp: Path, r: int) -> tuple[int, int, object]:
    """Start one proxy; returns (pid, port, handle to stop it)."""
    if mode == "gripd":
        from tests.support.procs import NO_RATE_LIMIT, merge_conf, start_server

        conf = merge_conf(NO_RATE_LIMIT, {"gripd": {"workers": "1"}})
        server = start_server(
            "gripd", tmp / f"gripd-{r}", [f"* 127.0.0.1:{origin_port}"], conf=conf, timeout=30
        )
        return server.proc.pid, server.http_port, server
    port_file = tmp / f"{mode}.port"
    port_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--serve", mode, str(port_file), str(origin_port)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    return proc.pid, _wait_port(port_file, time.monotonic() + 20), proc


def _stop(handle: object) -> None:
    if isinstance(handle, subprocess.Popen):
        handle.send_signal(signal.SIGTERM)
        try:
            handle.wait(10)
        except subprocess.TimeoutExpired:
            handle.kill()
            handle.wait()
    else:
        handle.stop()  # type: ignore[attr-defined]


def _wrk(port: int, seconds: int, conns: int) -> float:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    out = subprocess.run(
        [wrk, "-t2", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/pass"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    m = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m is None or non2xx is not None or int(m.group(1)) == 0:
        raise RuntimeError(f"wrk failed or got errors:\n{out}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--modes", default="relay,http,gripd", help="comma-separated")
    ap.add_argument("--serve", nargs=3, metavar=("MODE", "PORT_FILE", "ORIGIN_PORT"))
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.serve[0], a.serve[1], int(a.serve[2]))
        return 0

    from bench.run import start_origin

    modes = a.modes.split(",")
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    origin, origin_port = start_origin()
    try:
        with tempfile.TemporaryDirectory(prefix="gripd-floor-") as tmpdir:
            tmp = Path(tmpdir)
            for r in range(a.rounds):
                order = modes if r % 2 == 0 else modes[::-1]
                for mode in order:
                    pid, port, handle = _start(mode, origin_port, tmp, r)
                    try:
                        _wrk(port, 1, a.connections)  # warm-up
                        c0 = _cpu(pid)
                        n = _wrk(port, a.seconds, a.connections)
                        cpu = _cpu(pid) - c0
                    finally:
                        _stop(handle)
                    results[mode].append((cpu / (n / 1000), n / a.seconds))
                    print(
                        f"round {r + 1} {mode:6} {cpu / (n / 1000):.4f} CPU-s per 1k,"
                        f" {n / a.seconds:,.0f} req/s",
                        flush=True,
                    )
    finally:
        os.killpg(origin.pid, signal.SIGTERM)
        origin.wait(10)
    print(f"\nmedians of {a.rounds} rounds, wrk -t2 -c{a.connections} -d{a.seconds}s:")
    print("| proxy | CPU-s per 1k requests | requests/s |")
    print("|---|---|---|")
    for mode, rows in results.items():
        cpu_k = statistics.median(x for x, _ in rows)
        rps = statistics.median(y for _, y in rows)
        print(f"| {mode} | {cpu_k:.4f} | {rps:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

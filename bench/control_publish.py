"""CPU per HTTP publish request on the control API (F28), one POST per connection.

Usage: ``python bench/control_publish.py [--requests M] [--concurrency C] [--runs R]
[--workers W] [--keep-alive [--pipeline K]] [--profile out.txt [--native] [--profile-seconds S]]``.

Starts a real gripd (``tests.support.procs.start_server``, Debian's pushpin.conf values, rate
limiter off) with no subscribers: publishing to channels nobody holds still runs the whole
request path (accept, head and body parsing, validation, the answer, the close, the hand-off to
the publish sink). ``C`` concurrent raw asyncio clients each open a connection, send one
``POST /publish/`` with one ``http-stream`` item on its own channel, read the reply to EOF (the
server closes, ``Connection: close``) and start over, until ``M`` requests are done. gripd's CPU
time (utime+stime of its process tree, from /proc) over the run divided by ``M`` is printed as
CPU-µs per request (user and system apart too); the best of ``R`` runs is the result.
``--keep-alive`` turns on ``[gripd] control_keep_alive`` and each client keeps one connection
for all its requests, sending ``K`` at a time (``--pipeline``, default 1) and reading their
answers by Content-Length before the next ones.
``--profile`` then samples the server (all its processes) with py-spy (``record -r 250 -f
raw``; ``--native`` adds C frames and leaves idle samples out) while requests keep coming, and
prints the top self-time functions and the inclusive share of a few frames on the request path.
``--runs 0`` only profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from tests.support.procs import (  # noqa: E402
    NO_RATE_LIMIT,
    Server,
    merge_conf,
    start_server,
    tree_cpu_times,
)

PY_SPY = Path(sys.executable).parent / "py-spy"  # next to the interpreter: the venv's
REQUEST_TIMEOUT = 10.0  # seconds for one request; a run is also bounded as a whole
_CONTENT_LENGTH = re.compile(rb"(?i)\ncontent-length: *(\d+)")


def request_bytes(port: int, i: int) -> bytes:
    """One publish request as a publisher library sends it (one item, its own channel)."""
    body = json.dumps(
        {"items": [{"channel": f"ch-{i % 10000}", "formats": {"http-stream": {"content": "x\n"}}}]}
    ).encode()
    head = (
        f"POST /publish/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _client(
    port: int, reqs: list[bytes], next_i: list[int], codes: collections.Counter[str]
) -> None:
    while next_i[0] < len(reqs):
        req = reqs[next_i[0]]
        next_i[0] += 1
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), REQUEST_TIMEOUT
        )
        writer.write(req)
        reply = await asyncio.wait_for(reader.read(-1), REQUEST_TIMEOUT)  # to EOF: server closes
        codes[reply[9:12].decode("latin-1", "replace")] += 1
        writer.close()


async def _kept_client(
    port: int,
    reqs: list[bytes],
    next_i: list[int],
    codes: collections.Counter[str],
    pipeline: int,
) -> None:
    """One persistent connection: ``pipeline`` requests at a time, then their answers."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), REQUEST_TIMEOUT
    )
    try:
        while next_i[0] < len(reqs):
            batch = reqs[next_i[0] : next_i[0] + pipeline]
            next_i[0] += len(batch)
            writer.write(b"".join(batch))
            for _ in batch:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
                m = _CONTENT_LENGTH.search(head)
                if m is None:
                    raise RuntimeError(f"an answer without Content-Length: {head!r}")
                length = int(m.group(1))
                await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT)
                codes[head[9:12].decode("latin-1", "replace")] += 1
                if b"\nConnection: close" in head:
                    raise RuntimeError("the server closes: is control_keep_alive on?")
    finally:
        writer.close()


async def _drive(
    port: int, reqs: list[bytes], concurrency: int, limit: float, pipeline: int = 0
) -> collections.Counter[str]:
    """``pipeline`` 0: a connection per request; else persistent connections."""
    codes: collections.Counter[str] = collections.Counter()
    next_i = [0]
    tasks = [
        asyncio.create_task(
            _kept_client(port, reqs, next_i, codes, pipeline)
            if pipeline
            else _client(port, reqs, next_i, codes)
        )
        for _ in range(concurrency)
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), limit)
    return codes


@dataclasses.dataclass
class Run:
    """One run's result: server CPU-µs per request (user, system), wall seconds, statuses."""

    user_us: float
    system_us: float
    wall: float
    codes: collections.Counter[str]

    @property
    def us(self) -> float:
        return self.user_us + self.system_us


def one_run(server: Server, m: int, concurrency: int, pipeline: int = 0) -> Run:
    """Send ``m`` requests and measure the server's CPU time over them (``pipeline``: see
    :func:`_drive`)."""
    reqs = [request_bytes(server.control_port, i) for i in range(m)]
    time.sleep(0.5)  # let start-up work settle
    u0, s0 = tree_cpu_times(server.proc.pid)
    t0 = time.monotonic()
    codes = asyncio.run(_drive(server.control_port, reqs, concurrency, 120.0, pipeline))
    wall = time.monotonic() - t0
    time.sleep(0.3)  # the batched log lines and the hand-off finish
    u1, s1 = tree_cpu_times(server.proc.pid)
    return Run((u1 - u0) * 1e6 / m, (s1 - s0) * 1e6 / m, wall, codes)


def profile(
    server: Server,
    m: int,
    concurrency: int,
    out: Path,
    seconds: int,
    native: bool,
    pipeline: int = 0,
) -> list[tuple[str, int]]:
    """Run py-spy on the server's main process while requests are sent; top self-time frames."""
    cmd = [str(PY_SPY), "record", "-p", str(server.proc.pid), "--subprocesses"]
    cmd += ["-d", str(seconds), "-r", "250"]
    cmd += ["-f", "raw", "-o", str(out), *(["--native"] if native else ["--nonblocking"])]
    spy = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    deadline = time.monotonic() + seconds - 1.5
    while time.monotonic() < deadline:
        one_run(server, m, concurrency, pipeline)
    _, err = spy.communicate(timeout=seconds + 30)
    if not out.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    return top_self(out)


_LINE_NO = re.compile(r":\d+\)$")
#: Frames whose inclusive share is printed: the request path, and (with --native) uvloop's
#: accept and close and the write syscall.
INCLUSIVE = (
    "ControlProtocol.data_received",
    "handle_control_request",
    "ControlProtocol._parse_head",
    "ControlProtocol._write",
    "PublishPipeline.publish",
    "TickLog.flush",
    "UVStreamServer__on_listen",
    "TCPTransport__call_connection_made",
    "UVBaseTransport__call_connection_lost",
    "write",
)


def top_self(path: Path, n: int = 25) -> list[tuple[str, int]]:
    """Self samples per function (line numbers dropped) from a py-spy raw (collapsed) file.

    With ``--native``, samples waiting in ``epoll_pwait`` (the idle loop) are left out, so the
    shares are of busy time; without it the idle loop and uvloop's C code both show as
    ``Runner.run``."""
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_LINE_NO.sub(")", f) for f in stack.split(";")]
        leaf = frames[-1]
        if leaf.startswith(("epoll_pwait ", "epoll_wait ")):
            idle += int(count)
            continue
        self_counts[leaf] += int(count)
        for name in INCLUSIVE:
            if any(f.startswith(name + " ") for f in frames):
                inclusive[name] += int(count)
        total += int(count)
    rows = self_counts.most_common(n)
    print(f"py-spy: {total} busy samples ({idle} idle left out); self time by function")
    for frame, c in rows:
        print(f"{100 * c / total:5.1f}%  {frame}")
    print("inclusive (share of busy samples under the frame):")
    for name in INCLUSIVE:
        print(f"{100 * inclusive[name] / max(total, 1):5.1f}%  {name}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", default="1", help="[gripd] workers (default 1: one process)")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy raw output path")
    ap.add_argument("--profile-seconds", type=int, default=8)
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument(
        "--keep-alive", action="store_true", help="control_keep_alive on, a connection per client"
    )
    ap.add_argument("--pipeline", type=int, default=1, help="with --keep-alive: requests at once")
    args = ap.parse_args(argv)
    pipeline = max(1, args.pipeline) if args.keep_alive else 0

    with tempfile.TemporaryDirectory(prefix="gp-ctl-") as tmp:
        gripd = {"workers": args.workers}
        if args.keep_alive:
            gripd["control_keep_alive"] = "true"
        conf = merge_conf(NO_RATE_LIMIT, {"gripd": gripd})
        server = start_server("gripd", Path(tmp) / "w", [], conf=conf, probe=False)
        try:
            results = []
            for r in range(args.runs):
                run = one_run(server, args.requests, args.concurrency, pipeline)
                results.append(run.us)
                print(
                    f"run {r + 1}: {run.us:.1f} CPU-us/request (user {run.user_us:.1f}, "
                    f"system {run.system_us:.1f}), {args.requests / run.wall:.0f} req/s, "
                    f"codes {dict(run.codes)}"
                )
            mode = f"keep-alive, pipeline {pipeline}" if pipeline else "one per connection"
            if results:
                print(
                    f"best of {args.runs}: {min(results):.1f} CPU-us per publish request "
                    f"(nproc {os.cpu_count()}, workers {args.workers}, "
                    f"{mode})"
                )
            if args.profile is not None:
                profile(
                    server,
                    2000,
                    args.concurrency,
                    args.profile,
                    args.profile_seconds,
                    args.native,
                    pipeline,
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

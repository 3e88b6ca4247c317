"""Wildcard channels benchmark: what matching patterns costs per published item.

Usage: ``python bench/wildcard.py [--items 10000] [--rounds 3] [--patterns 1000,10000]``.

Two parts:

- ``index``: in this process, :meth:`gripd.core.registry.Registry.receivers` over 10,000
  distinct channel names with 0, 1,000 and 10,000 patterns held (and the option off): the
  lookup cost per published item, which must not grow with the number of patterns.
- ``server``: a real gripd (``workers = 1``, no rate limit) with 50 stream holds sharing the
  held channels (``connection_subscription_max`` raised to fit), so every configuration has
  the same connections; ``--items`` items published through the HTTP control
  API in batches of 500, each on its own channel (10,000 distinct channels), every other one
  matching exactly one held pattern ``p<k>.*``. Configurations: the option on with N patterns
  held; the option on with the same number of exact channels held and no pattern (``0
  patterns``); the option on with N patterns held and items on channels none matches (the
  lookup alone); the option off with the same ``p<k>.*`` names held (literal names: nothing
  matches). Reported: gripd CPU seconds per 1,000 items published (median of ``--rounds``),
  and deliveries (events the clients received).

Everything runs on 127.0.0.1; the clients and the origin live in this process (not measured).
Results are printed as markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from gripd.core.registry import Registry  # noqa: E402
from tests.support.origin import Origin, Reply  # noqa: E402
from tests.support.procs import (  # noqa: E402
    NO_RATE_LIMIT,
    Server,
    merge_conf,
    publish_http,
    start_server,
    tree_cpu_seconds,
)

HOLDS = 50  # stream holds; the channels are spread over them (connection_subscription_max)
PER_HOLD = 20  # subscribers per distinct patterns in the index part
BATCH = 500
WAIT = 60.0


# -- the index, in process ------------------------------------------------------------------------


def index_bench(items: int, patterns: list[int]) -> list[tuple[str, float]]:
    """Microseconds per ``receivers()`` call over ``items`` distinct channels."""
    channels = [f"p{i % 20000}.x{i}" if i % 2 == 0 else f"z{i}.x" for i in range(items)]
    rows: list[tuple[str, float]] = []
    for label, wildcard, n in [("option off", False, 1000)] + [
        (f"{n} patterns", True, n) for n in [0, *patterns]
    ]:
        reg = Registry(wildcard=wildcard)
        for k in range(n):
            reg.subscribe(("s", k // PER_HOLD), [f"p{k}.*"])
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for c in channels:
                reg.receivers(c)
            best = min(best, time.perf_counter() - t0)
        rows.append((label, best / items * 1e6))
    return rows


# -- a real server ------------------------------------------------------------------------------


class Reader:
    """One held stream: counts the events (``\\n\\n``) it receives."""

    def __init__(self) -> None:
        self.events = 0
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, path: str) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
        self.writer = writer
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 200"), head
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        while data := await reader.read(65536):
            data = tail + data
            self.events += data.count(b"\n\n")
            tail = data[-1:]

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


def item(channel: str, i: int) -> dict[str, object]:
    return {"channel": channel, "formats": {"http-stream": {"content": f"data: {i}\n\n"}}}


async def server_run(
    origin: Origin,
    workdir: Path,
    label: str,
    on: bool,
    names: list[str],
    items: int,
    rounds: int,
    match: bool = True,
) -> tuple[str, float, int]:
    """CPU s per 1k items (median over rounds) and deliveries per round."""
    per_hold = -(-len(names) // HOLDS)
    holds = [names[i : i + per_hold] for i in range(0, len(names), per_hold)]
    for h, chans in enumerate(holds):
        hdrs = [("Grip-Hold", "stream"), ("Content-Type", "text/event-stream")]
        hdrs += [("Grip-Channel", ", ".join(chans))]
        origin.route("GET", f"/h{h}", Reply(200, hdrs, ""))
    conf = merge_conf(
        NO_RATE_LIMIT,
        {
            "gripd": {"workers": "1", "wildcard_channels": "true" if on else "false"},
            "handler": {
                "update_on_first_subscription": "false",
                "connection_subscription_max": str(per_hold),
            },
        },
    )
    s: Server = await asyncio.to_thread(
        start_server, "gripd", workdir, [f"* 127.0.0.1:{origin.port}"], conf=conf
    )
    readers = [Reader() for _ in holds]
    try:
        for h, r in enumerate(readers):
            await r.open(s.http_port, f"/h{h}")
        await asyncio.sleep(0.5)
        n_pat = len(names)
        per_round: list[float] = []
        deliveries = 0
        for rnd in range(rounds):
            batch = [
                item(f"p{i % n_pat}.x{rnd}.{i}" if match and i % 2 == 0 else f"z{rnd}.{i}.x", i)
                for i in range(items)
            ]
            before_events = sum(r.events for r in readers)
            cpu0 = tree_cpu_seconds(s.proc.pid)
            for start in range(0, items, BATCH):
                status, _ = await asyncio.to_thread(
                    publish_http, s.control_port, batch[start : start + BATCH], 30.0
                )
                assert status == 200, status
            # Everything published has been handled once the control API answered the last
            # batch (the pipeline runs before the reply); let the writes drain, bounded.
            want = items // 2 if match and on and names[0].endswith("*") else 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while sum(r.events for r in readers) - before_events < want:
                if loop.time() > deadline:
                    raise TimeoutError(f"{label}: deliveries did not arrive")
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            per_round.append((tree_cpu_seconds(s.proc.pid) - cpu0) / items * 1000)
            deliveries = sum(r.events for r in readers) - before_events
        return label, statistics.median(per_round), deliveries
    finally:
        for r in readers:
            r.close()
        await asyncio.to_thread(s.stop)


async def server_bench(
    items: int, rounds: int, patterns: list[int]
) -> list[tuple[str, float, int]]:
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="gripd-wildcard-") as tmp:
        async with Origin() as origin:
            n = patterns[0]
            configs: list[tuple[str, bool, list[str], bool]] = [
                (
                    f"option off, {n} literal p<k>.* names",
                    False,
                    [f"p{k}.*" for k in range(n)],
                    True,
                ),
                (
                    f"option on, 0 patterns ({n} exact channels)",
                    True,
                    [f"q{k}" for k in range(n)],
                    True,
                ),
                (
                    f"option on, {n} patterns, no item matches",
                    True,
                    [f"p{k}.*" for k in range(n)],
                    False,
                ),
            ]
            configs += [
                (f"option on, {m} patterns", True, [f"p{k}.*" for k in range(m)], True)
                for m in patterns
            ]
            for i, (label, on, names, match) in enumerate(configs):
                wd = Path(tmp) / f"s{i}"
                rows.append(await server_run(origin, wd, label, on, names, items, rounds, match))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/wildcard.py")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--patterns", default="1000,10000")
    ap.add_argument("--only", choices=("index", "server"))
    args = ap.parse_args(argv)
    patterns = [int(p) for p in args.patterns.split(",")]
    if args.only != "server":
        print("\n### index: Registry.receivers per published item\n")
        print("| configuration | µs per item |")
        print("|---|---|")
        for label, us in index_bench(args.items, patterns):
            print(f"| {label} | {us:.2f} |")
    if args.only != "index":
        print(f"\n### server: {args.items} items on {args.items} channels, gripd workers=1\n")
        print("| configuration | gripd CPU s per 1k items | deliveries per round |")
        print("|---|---|---|")
        for label, cpu, n in asyncio.run(server_bench(args.items, args.rounds, patterns)):
            print(f"| {label} | {cpu:.3f} | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of stats bookkeeping (run: python bench/stats_conns.py).

1. The stats state's connection open and close at 1,000 and 10,000 open connections.
2. One request as Pushpin's stats count it (a stats connection opened and closed), through the
   event fan-out and the stats publisher with nobody subscribed to the stats socket: the cost
   every pass-through request pays with the shipped ``stats_spec``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from gripd.core.config import default_config
from gripd.core.stats import StatsState
from gripd.io.observe.events import EventFanout
from gripd.io.observe.stats import StatsPublisher

for n in (1000, 10000):
    s = StatsState(instance_id="x")
    t0 = time.perf_counter()
    for i in range(n):
        s.connection_opened(str(i), 1.0, route="r" if i % 2 else "")
    for i in range(n):
        s.connection_closed(str(i), 2.0)
    dt = time.perf_counter() - t0
    print(n, f"{dt / (2 * n) * 1e6:.2f} us per open/close")


async def per_request(n: int = 100_000, rounds: int = 5) -> None:
    pub = StatsPublisher(default_config(tempfile.gettempdir()), loop=asyncio.get_running_loop())
    events = EventFanout()
    events.add(pub)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            cid = f"c{i % 50}"  # 50 keep-alive client connections
            events.request_started(cid, "127.0.0.1", "http", "", False)
            events.request_ended(cid)
        best = min(best, time.perf_counter() - t0)
    print(f"per request (start + end, best of {rounds}): {best / n * 1e6:.2f} us")


asyncio.run(per_request())


def long_polls(n: int = 240_000) -> None:
    """A minute of 4,000 long-polls per second on 100 channels: each poll subscribes and, when
    answered, lingers its subscription; the refresh timer runs once a second."""
    import tracemalloc

    s = StatsState(instance_id="x", report_interval=10)
    tracemalloc.start()
    t0 = time.perf_counter()
    for i in range(n):
        t = i / 4000
        ch = f"c{i % 100}"
        s.subscribed("response", ch, t)
        s.unsubscribed("response", ch, t + 0.01)
        if i % 4000 == 0:
            s.tick(t)
    dt = time.perf_counter() - t0
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"long-poll subscribe + linger: {dt / n * 1e6:.2f} us, {mem / 1e6:.1f} MB after a minute")


long_polls()

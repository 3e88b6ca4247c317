"""Cost of the stats state's connection open and close at 1,000 and 10,000 open connections
(run: python bench/stats_conns.py)."""

from __future__ import annotations

import time

from gripd.core.stats import StatsState

for n in (1000, 10000):
    s = StatsState(instance_id="x")
    t0 = time.perf_counter()
    for i in range(n):
        s.connection_opened(str(i), 1.0, route="r" if i % 2 else "")
    for i in range(n):
        s.connection_closed(str(i), 2.0)
    dt = time.perf_counter() - t0
    print(n, f"{dt / (2 * n) * 1e6:.2f} us per open/close")

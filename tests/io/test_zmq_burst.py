"""A large ZeroMQ burst reaches the sink in bounded batches with the event loop running in
between, so client writes of earlier items go out while later ones are still being taken: the
first batch small, the next ones growing while the backlog lasts, up to a bound."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import zmq

from gripd.core.publish import PublishItem
from gripd.core.tnetstring import dumps
from gripd.io.inputs.zmq import DRAIN_BACKLOG_MAX, DRAIN_MAX, ZmqInputs
from tests.io.test_zmq_inputs import T_ITEM, make_config


class TickSink:
    """Records, for every batch, how many loop iterations a ticker task had seen."""

    def __init__(self) -> None:
        self.ticks = 0
        self.batches: list[tuple[int, int]] = []  # (size, ticks at publish)
        self.total = 0
        self.want = 0
        self.done = asyncio.Event()

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.batches.append((len(items), self.ticks))
        self.total += len(items)
        if self.total >= self.want:
            self.done.set()

    async def tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


def send_blocking(s: zmq.Socket[bytes], n: int) -> None:
    """Send ``n`` items while the event loop is blocked, so the whole burst waits at the
    PULL socket before the input takes any of it."""
    frame = b"T" + dumps(T_ITEM)
    for _ in range(n):
        s.send(frame)
    time.sleep(0.5)


async def test_burst_yields_to_the_loop_between_batches() -> None:
    n = 3 * DRAIN_BACKLOG_MAX
    config = make_config()
    sink = TickSink()
    sink.want = n
    inputs = ZmqInputs(config, sink)
    await inputs.start()
    ticker = asyncio.create_task(sink.tick())
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    try:
        s.connect(config.push_in_spec)
        send_blocking(s, n)
        async with asyncio.timeout(20):
            await sink.done.wait()
    finally:
        s.close(linger=0)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await inputs.stop()
        ctx.term()
    sizes = [size for size, _ in sink.batches]
    assert sizes[0] <= DRAIN_MAX  # the burst's first items go out early
    assert max(sizes) == DRAIN_BACKLOG_MAX  # then larger batches, bounded
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes)), sizes
    ticks = [t for _, t in sink.batches]
    # Every batch after the first was taken after the loop ran other work.
    assert all(b > a for a, b in itertools.pairwise(ticks)), ticks

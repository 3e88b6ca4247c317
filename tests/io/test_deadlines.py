"""The deadline queue shared by the control API's header timeouts and the origin client's
response timeouts: one loop timer, deadlines in order, moved deadlines found when reached, and a
bounded queue however many waiters come and go."""

from __future__ import annotations

import asyncio

from gripd.io.deadlines import DeadlineQueue


class Waiter:
    """Records when it was called; ``moved`` gives a later deadline to wait for once."""

    def __init__(self, queue: DeadlineQueue, name: str, log: list[tuple[str, float]]) -> None:
        self.deadline_queued = False
        self.queue = queue
        self.name = name
        self.log = log
        self.moved: float | None = None

    def on_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        if self.moved is not None:
            deadline, self.moved = self.moved, None
            assert self.queue.add(self, deadline)
            return
        self.log.append((self.name, loop.time()))


async def test_deadlines_fire_in_order_and_a_moved_one_later() -> None:
    loop = asyncio.get_running_loop()
    queue = DeadlineQueue(loop)
    log: list[tuple[str, float]] = []
    t0 = loop.time()
    a, b, c = (Waiter(queue, n, log) for n in "abc")
    assert queue.add(a, t0 + 0.05)
    assert queue.add(b, t0 + 0.10)
    assert a.deadline_queued and b.deadline_queued
    assert not queue.add(c, t0 + 0.07)  # earlier than the last one queued: refused
    assert not c.deadline_queued
    a.moved = t0 + 0.15  # reached at 0.05, it waits again, after b
    await asyncio.sleep(0.3)
    assert [n for n, _ in log] == ["b", "a"]
    assert log[0][1] >= t0 + 0.099 and log[1][1] >= t0 + 0.149
    assert not a.deadline_queued and not b.deadline_queued


async def test_gone_waiters_are_dropped_and_the_queue_stays_bounded() -> None:
    loop = asyncio.get_running_loop()
    queue = DeadlineQueue(loop)
    log: list[tuple[str, float]] = []
    t0 = loop.time()
    live = Waiter(queue, "live", log)
    assert queue.add(live, t0 + 0.2)
    for i in range(10_000):
        w = Waiter(queue, f"gone{i}", log)
        assert queue.add(w, t0 + 0.2)
        w.deadline_queued = False  # it went: marked, counted out
        queue.finished()
    assert len(queue._queue) <= 2 * 1 + DeadlineQueue.SWEEP_SLACK + 1
    await asyncio.sleep(0.3)
    assert log == [("live", log[0][1])]  # the gone ones were never called

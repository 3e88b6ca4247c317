"""One loop timer for many deadlines of the same length: :class:`DeadlineQueue`.

The control API's ``client_header_timeout`` gives every connection the same delay, so the
deadlines come in the order they are set: only the earliest needs a timer, and a persistent
connection's next request only moves its deadline. (The origin client keeps a uvloop timer per
exchange: moving its response timeouts onto this queue measured about 7 % more CPU per
pass-through request, the Python bookkeeping costing more than uvloop's C timers.)

Nothing is cancelled when a deadline stops mattering: the waiter keeps its own current
deadline and, when its entry is reached, looks at it (none any more, or a later one, for which
it is queued again). A waiter that is gone is marked (``deadline_queued`` False, then
:meth:`DeadlineQueue.finished`); marked entries are dropped when reached, or in one sweep when
they pile up, so the queue stays bounded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import typing

_LOG = logging.getLogger("gripd.deadlines")


class Waiter(typing.Protocol):
    """What waits in a :class:`DeadlineQueue`."""

    #: In the queue and still counted (cleared by the queue when its entry is reached, or by
    #: the waiter when it goes, with a call to :meth:`DeadlineQueue.finished`).
    deadline_queued: bool

    def on_deadline(self) -> None:
        """Its entry is due: it checks its own current deadline (and may queue itself again)."""


class DeadlineQueue:
    """Deadlines in the order they are set, on one loop timer. :meth:`add` refuses a deadline
    earlier than the last one queued (a delay lowered by a reload, or a waiter queued again
    behind newer ones): that waiter then keeps a timer of its own."""

    __slots__ = ("_firing", "_live", "_loop", "_queue", "_timer")

    SWEEP_SLACK: typing.Final = 1024  # marked entries tolerated beyond twice the live ones

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: collections.deque[tuple[float, Waiter]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._live = 0  # queued entries still waiting for their deadline
        # In _fire: a waiter queued again from its on_deadline is only appended (the one timer
        # is set when _fire is done, and the queue is not swept under it).
        self._firing = False

    def add(self, waiter: Waiter, deadline: float) -> bool:
        """Queue ``waiter`` to be called at ``deadline`` (loop time); False if out of order.
        On True the waiter's ``deadline_queued`` is set."""
        queue = self._queue
        if queue and queue[-1][0] > deadline:
            return False
        queue.append((deadline, waiter))
        waiter.deadline_queued = True
        self._live += 1
        if self._firing:
            return True
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)
        elif len(queue) > 2 * self._live + self.SWEEP_SLACK:
            self._queue = collections.deque(e for e in queue if e[1].deadline_queued)
        return True

    def finished(self) -> None:
        """One queued waiter no longer waits (it cleared its ``deadline_queued``)."""
        self._live -= 1

    def _fire(self) -> None:
        self._timer = None
        queue = self._queue
        # The loop may run a timer up to its clock resolution early; count those as due.
        now = self._loop.time() + 0.001
        self._firing = True
        try:
            while queue:
                deadline, waiter = queue[0]
                if not waiter.deadline_queued:
                    queue.popleft()
                    continue
                if deadline > now:
                    break
                queue.popleft()
                waiter.deadline_queued = False
                self._live -= 1
                try:
                    waiter.on_deadline()
                except Exception:  # one waiter's failure must not stop the others' deadlines
                    _LOG.exception("a deadline's handler failed")
        finally:
            self._firing = False
        if queue:
            self._timer = self._loop.call_at(queue[0][0], self._fire)

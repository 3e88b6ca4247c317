"""The publish rate limiter and high-water mark (F34), sans-I/O.

A port of the behaviour of Pushpin 1.36 ``RateLimiter`` (src/handler/ratelimiter.cpp):

- Actions are queued in buckets by key; each has a weight (Pushpin: one per delivery, or the
  delivery's block count when ``message_block_size`` is set).
- ``rate`` > 0: batches run every ``1000 // rate`` ms with one action each, or for rates of 40/s
  and more every 25 ms with ``ceil(rate * 25 / 1000)`` weight each. Buckets take turns (round
  robin from where the last batch stopped). An action heavier than what is left of the batch
  still runs and its bucket pays the excess back as *debt* in later batches, so the long-run
  rate holds.
- ``rate`` <= 0: unlimited; everything queued runs in the next batch, which is due at once.
- ``hwm`` > 0: an action that would take its bucket's queued weight over ``hwm`` is refused.
  ``hwm`` <= 0: no limit.
- The first batch after an idle period runs at once (or after one interval when
  ``batch_wait``); the timer stops after one batch finds nothing to do.

The driver calls ``add`` and, whenever ``deadline()`` has passed, ``run(now, execute)``, which
calls ``execute(action)`` for each action of the batch (``execute`` returns whether it did
something; a False answer does not count against the rate, as in Pushpin).

One deviation: Qt's ``setInterval`` on an active timer restarts it, so in Pushpin every
``addAction`` during a busy period pushes the next batch back by a full interval (actions
added faster than the interval can stall the queue). Here batches keep their cadence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: Pushpin ``MIN_BATCH_INTERVAL`` (ms).
MIN_BATCH_INTERVAL_MS = 25

A = TypeVar("A")


@dataclass(slots=True)
class _Bucket(Generic[A]):
    actions: deque[tuple[A, int]] = field(default_factory=deque)
    weight: int = 0
    debt: int = 0


class RateLimiter(Generic[A]):
    """Keyed, weighted action queue released at ``rate`` per second (F34)."""

    def __init__(self, rate: int = -1, hwm: int = -1, *, batch_wait: bool = False) -> None:
        self.hwm = hwm
        self.batch_wait = batch_wait
        self.rate = -1
        self.batch_interval = 0.0  # seconds
        self.batch_size = -1  # weight per batch; -1 = unlimited
        self._buckets: dict[str, _Bucket[A]] = {}  # insertion-ordered
        self._last_key: str | None = None
        self._deadline: float | None = None  # when the next batch is due; None = timer off
        self._last_batch_empty = False
        self.set_rate(rate)

    def set_rate(self, rate: int) -> None:
        if rate > 0:
            self.rate = rate
            if rate >= 1000 // MIN_BATCH_INTERVAL_MS:
                interval_ms = MIN_BATCH_INTERVAL_MS
                self.batch_size = (rate * interval_ms + 999) // 1000
            else:
                interval_ms = 1000 // rate
                self.batch_size = 1
            self.batch_interval = interval_ms / 1000.0
        else:
            self.rate = -1
            self.batch_interval = 0.0
            self.batch_size = -1

    @property
    def enabled(self) -> bool:
        """False when neither a rate nor an HWM applies (the driver may then bypass it)."""
        return self.rate > 0 or self.hwm > 0

    def queued_weight(self, key: str | None = None) -> int:
        if key is not None:
            b = self._buckets.get(key)
            return b.weight if b is not None else 0
        return sum(b.weight for b in self._buckets.values())

    def queued_count(self) -> int:
        return sum(len(b.actions) for b in self._buckets.values())

    def deadline(self) -> float | None:
        """When ``run`` should next be called (``now`` units), or None when idle."""
        return self._deadline

    def add(self, key: str, action: A, weight: int, now: float) -> bool:
        """Queue ``action``; False (nothing queued) when it would exceed the HWM."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if self.hwm > 0 and weight > self.hwm:
                return False
            bucket = self._buckets[key] = _Bucket()
        elif self.hwm > 0 and bucket.weight + weight > self.hwm:
            return False
        bucket.actions.append((action, weight))
        bucket.weight += weight
        if self._deadline is None:
            # Idle: process the first batch right away (or after one interval with batch_wait).
            self._deadline = now + (self.batch_interval if self.batch_wait else 0.0)
        elif self.rate <= 0:
            self._deadline = min(self._deadline, now)
        return True

    def run(self, now: float, execute: Callable[[A], bool]) -> None:
        """Process one batch, then schedule the next one (or go idle)."""
        self._process(execute)
        if self.rate > 0:
            if self._buckets or not self._last_batch_empty:
                self._deadline = now + self.batch_interval
            else:
                self._last_batch_empty = False
                self._deadline = None
        else:
            self._deadline = now if self._buckets else None

    def _process(self, execute: Callable[[A], bool]) -> None:
        buckets = self._buckets
        if not buckets:
            self._last_batch_empty = True
            return
        self._last_batch_empty = False
        # Round robin over bucket keys, starting where the previous batch stopped. The ring is
        # a snapshot of the keys (``execute`` may add actions, to existing or new buckets).
        keys = list(buckets)
        start = 0
        if self._last_key is not None and self._last_key in buckets:
            start = keys.index(self._last_key)
        ring = deque(keys[start:] + keys[:start])
        batch_size = self.batch_size
        processed = 0
        while ring and (batch_size < 1 or processed < batch_size):
            key = ring[0]
            bucket = buckets[key]
            if bucket.debt <= 0:
                action, weight = bucket.actions.popleft()
                bucket.weight -= weight
                if execute(action):
                    processed += weight if weight > 1 else 1
                    if batch_size >= 1 and processed > batch_size:
                        bucket.debt += processed - batch_size
            else:
                bucket.debt -= 1
                processed += 1
            if not bucket.actions and bucket.debt <= 0:
                self._last_key = key
                del buckets[key]
                ring.popleft()
            else:
                ring.rotate(-1)
        if ring:
            self._last_key = ring[0]

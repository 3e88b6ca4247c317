"""Instance-wide admission (F3 client_maxconn, F4 max_open_requests) shared by worker processes:
check and count are one step, so racing workers never take more places than the limit."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from typing import Any

import pytest

from gripd.runtime.admission import Admission

WORKERS = 4
LIMIT = 3
CHURN_S = 0.5  # each racer takes and gives back places for this long, all at once


@pytest.fixture
def shared() -> Iterator[Admission]:
    hub = Admission.create(WORKERS)
    yield hub
    hub.close()
    os.close(hub.fd)


def _locked(fd: int, read: Callable[[], int]) -> int:
    """``read()`` under the admission lock. No place is taken meanwhile and releases only
    lower the slots, so the sum read is at most what was held when the lock was taken. An
    unlocked read can add one worker's slot from before its release to another's from after
    the take that release allowed, and see more than was ever held."""
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        return read()
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def _churn(fd: int, index: int, go: Event, out: multiprocessing.Queue[tuple[int, int]]) -> None:
    """Take and give back places as fast as possible; record the most seen held at once."""
    a = Admission(fd, WORKERS, index)
    taken = worst = 0
    go.wait(10)
    end = time.monotonic() + CHURN_S
    while time.monotonic() < end:
        if a.try_open(LIMIT):
            taken += 1
            worst = max(worst, _locked(fd, a.open_requests))
            a.release_open()
        if a.try_connect(LIMIT):
            worst = max(worst, _locked(fd, a.connections))
            a.release_connection()
    out.put((taken, worst))


def _race(target: Callable[..., None], fd: int) -> list[Any]:
    """Run ``target(fd, index, go, out)`` in WORKERS forked processes released at once."""
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[Any] = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=target, args=(fd, i, go, out)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    return results


def test_racing_workers_never_exceed_the_limit(shared: Admission) -> None:
    results = _race(_churn, shared.fd)
    assert all(taken > 0 for taken, _ in results)  # everyone got a place some of the time
    assert max(worst for _, worst in results) <= LIMIT
    assert shared.open_requests() == 0 and shared.connections() == 0  # all given back


def _grab(fd: int, index: int, go: Event, out: multiprocessing.Queue[int]) -> None:
    a = Admission(fd, WORKERS, index)
    go.wait(10)
    out.put(sum(a.try_open(LIMIT) for _ in range(50)))


def test_the_last_place_goes_to_one_worker_only(shared: Admission) -> None:
    assert sum(_race(_grab, shared.fd)) == LIMIT
    assert shared.open_requests() == LIMIT


def test_no_limit_counts_and_a_dead_worker_stops_counting(shared: Admission) -> None:
    w = Admission(shared.fd, WORKERS, 2)
    assert all(w.try_open(-1) for _ in range(5))
    assert w.try_connect(1) and not w.try_connect(1)
    assert shared.open_requests() == 5 and shared.connections() == 1
    shared.reset(2)
    assert shared.open_requests() == 0 and shared.connections() == 0
    w.close()

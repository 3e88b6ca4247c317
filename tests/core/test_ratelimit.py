"""F34 publish rate limiting and HWM (gripd.core.ratelimit), pure, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.ratelimit import RateLimiter


@pytest.mark.parametrize(
    ("rate", "interval_ms", "size"),
    [
        (1, 1000, 1),
        (3, 333, 1),
        (10, 100, 1),
        (39, 25, 1),  # 1000 // 39 == 25
        (40, 25, 1),
        (100, 25, 3),  # ceil(100 * 25 / 1000)
        (2500, 25, 63),  # the shipped message_rate
        (0, 0, -1),
        (-1, 0, -1),
    ],
)
def test_batch_sizing(rate: int, interval_ms: int, size: int) -> None:
    rl: RateLimiter[int] = RateLimiter(rate)
    assert rl.batch_interval == pytest.approx(interval_ms / 1000)
    assert rl.batch_size == size


def drive(rl: RateLimiter[str], until: float) -> list[tuple[float, str]]:
    """Run every due batch up to ``until``; returns (time, action) for each execution."""
    out: list[tuple[float, str]] = []
    while True:
        when = rl.deadline()
        if when is None or when > until:
            return out

        def execute(a: str, t: float = when) -> bool:
            out.append((t, a))
            return True

        rl.run(when, execute)


def test_unlimited_runs_everything_at_once() -> None:
    rl: RateLimiter[str] = RateLimiter(-1)
    for n in range(1000):
        assert rl.add("", str(n), 1, now=5.0)
    assert rl.deadline() == 5.0
    out = drive(rl, 5.0)
    assert [a for _, a in out] == [str(n) for n in range(1000)]
    assert {t for t, _ in out} == {5.0}
    assert rl.deadline() is None


def test_rate_spreads_batches() -> None:
    rl: RateLimiter[str] = RateLimiter(100)  # 3 per 25 ms
    for n in range(10):
        rl.add("", str(n), 1, now=0.0)
    out = drive(rl, 10.0)
    times = [round(t, 3) for t, _ in out]
    assert times == [0.0] * 3 + [0.025] * 3 + [0.05] * 3 + [0.075]
    assert [a for _, a in out] == [str(n) for n in range(10)]  # FIFO
    assert rl.deadline() is None  # idle after one empty batch


def test_timer_stops_only_after_an_empty_batch() -> None:
    rl: RateLimiter[str] = RateLimiter(10)  # 1 per 100 ms
    rl.add("", "a", 1, now=0.0)
    rl.run(0.0, lambda a: True)
    assert rl.deadline() == pytest.approx(0.1)  # keeps ticking once more
    # an action added now waits for that tick instead of running at once
    rl.add("", "b", 1, now=0.05)
    assert rl.deadline() == pytest.approx(0.1)
    rl.run(0.1, lambda a: True)
    rl.run(0.2, lambda a: True)  # empty batch
    assert rl.deadline() is None
    rl.add("", "c", 1, now=7.0)
    assert rl.deadline() == 7.0  # first batch after idle runs at once


def test_batch_wait_delays_the_first_batch() -> None:
    rl: RateLimiter[str] = RateLimiter(10, batch_wait=True)
    rl.add("", "a", 1, now=1.0)
    assert rl.deadline() == pytest.approx(1.1)


def test_heavy_action_runs_then_pays_debt() -> None:
    rl: RateLimiter[str] = RateLimiter(100)  # 3 per batch
    rl.add("", "heavy", 10, now=0.0)
    rl.add("", "light", 1, now=0.0)
    out = drive(rl, 10.0)
    # heavy runs at once; 7 of debt take the next batches (3 + 3 + 1) before light runs
    assert [(round(t, 3), a) for t, a in out] == [(0.0, "heavy"), (0.075, "light")]


def test_hwm_refuses_beyond_queued_weight() -> None:
    rl: RateLimiter[str] = RateLimiter(10, hwm=5)
    assert all(rl.add("", str(n), 1, now=0.0) for n in range(5))
    assert not rl.add("", "x", 1, now=0.0)
    assert rl.add("other", "y", 5, now=0.0)  # HWM is per key
    assert not rl.add("other", "z", 1, now=0.0)
    assert rl.queued_weight("") == 5
    assert rl.queued_weight() == 10
    rl.run(0.0, lambda a: True)  # one batch: 1 from each key
    assert rl.add("", "x", 1, now=0.0)


def test_hwm_off_when_not_positive() -> None:
    rl: RateLimiter[str] = RateLimiter(10, hwm=0)
    assert all(rl.add("", str(n), 1, now=0.0) for n in range(10000))
    assert not RateLimiter[str](-1, -1).enabled
    assert RateLimiter[str](-1, 5).enabled
    assert RateLimiter[str](5, -1).enabled


def test_keys_take_turns() -> None:
    rl: RateLimiter[str] = RateLimiter(10)  # 1 per batch
    for n in range(3):
        rl.add("a", f"a{n}", 1, now=0.0)
    for n in range(3):
        rl.add("b", f"b{n}", 1, now=0.0)
    out = [a for _, a in drive(rl, 10.0)]
    assert out == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_failed_execute_does_not_count() -> None:
    rl: RateLimiter[str] = RateLimiter(100)  # 3 per batch
    for n in range(6):
        rl.add("", str(n), 1, now=0.0)
    ran: list[str] = []

    def execute(a: str) -> bool:
        ran.append(a)
        return int(a) % 2 == 1  # even targets are "gone"

    rl.run(0.0, execute)
    assert ran == ["0", "1", "2", "3", "4", "5"]  # 3 counted, 3 free


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=3000),
    st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=200),
)
def test_long_run_rate_is_respected(rate: int, weights: list[int]) -> None:
    """Weight executed by time T never exceeds one batch per tick plus one action's overshoot,
    and everything queued is eventually executed in order."""
    rl: RateLimiter[str] = RateLimiter(rate)
    for n, w in enumerate(weights):
        assert rl.add("", f"{n}:{w}", w, now=0.0)
    out = drive(rl, 1e9)
    assert [a for _, a in out] == [f"{n}:{w}" for n, w in enumerate(weights)]
    done = 0
    for t, a in out:
        done += int(a.split(":")[1])
        ticks = round(t / rl.batch_interval) + 1
        assert done <= ticks * rl.batch_size + max(weights)
    assert rl.deadline() is None

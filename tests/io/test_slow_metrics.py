"""Slow-client visibility: the per-route drop and close counters and the queued-bytes histogram
(with a bounded route label set), the ``slow_client`` event's way from a worker to the hub, and
``/status/slowest?n=N`` (its limits, its 400s, loopback only, merged over workers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gripd.core.config import default_config
from gripd.core.stats import StatsState
from gripd.io.bus.hub import EventRelay, WorkerLink
from gripd.io.observe import metrics as mx
from gripd.io.observe.events import EventFanout, Events
from gripd.io.observe.metrics import Metrics, slowest_count
from gripd.io.observe.status import SLOWEST_MAX, StatusBoard, StatusReporter, slowest


class Clock:
    """A loop clock the test moves; timers are never fired."""

    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Any) -> Any:
        return type("H", (), {"cancel": lambda self: None})()


class Conn:
    """What :func:`slowest` reads of a client connection; ``dropped`` on a hold's handler."""

    def __init__(self, cid: str, queued: int, dropped: int | None = None) -> None:
        self.id = cid
        self.peer = "127.0.0.1"
        self.queued = queued
        attrs: dict[str, Any] = {"route": type("R", (), {"id": "r1"})()}
        if dropped is not None:
            attrs["dropped"] = dropped
        self.handler = type("H", (), attrs)()
        self.raw_sink = None

    def buffered(self) -> int:
        return self.queued


def metrics() -> tuple[Metrics, StatusBoard, Clock]:
    m = Metrics(default_config("/nonexistent"), stats=StatsState(instance_id="t", now=0.0))
    clock = Clock()
    board = StatusBoard(m, clock)  # type: ignore[arg-type]
    m.status = board
    return m, board, clock


def samples(m: Metrics) -> dict[str, float]:
    body = m.exposition().decode()
    return {
        k: float(v)
        for k, v in (ln.rsplit(" ", 1) for ln in body.splitlines() if ln and ln[0] != "#")
    }


def test_slow_client_counts_by_route_closes_and_queued_bytes() -> None:
    m, _, _ = metrics()
    m.slow_client("r1", 2_000_000, False)
    m.slow_client("r1", 3_000_000, False)
    m.slow_client("r2", 70_000, True)
    got = samples(m)
    assert got['gripd_slow_client_route_drops_total{route="r1"}'] == 2
    assert got['gripd_slow_client_route_drops_total{route="r2"}'] == 1
    assert got['gripd_slow_client_closes_total{route="r2"}'] == 1
    assert 'gripd_slow_client_closes_total{route="r1"}' not in got
    # Every one is also a drop, in the totals Pushpin-era dashboards use.
    assert got["gripd_slow_client_drops_total"] == 3
    assert got['gripd_dropped_total{reason="slow_client"}'] == 3
    assert got["gripd_slow_client_queued_bytes_count"] == 3
    assert got["gripd_slow_client_queued_bytes_sum"] == 5_070_000
    assert got['gripd_slow_client_queued_bytes_bucket{le="65536.0"}'] == 0
    assert got['gripd_slow_client_queued_bytes_bucket{le="262144.0"}'] == 1
    assert got['gripd_slow_client_queued_bytes_bucket{le="2.097152e+06"}'] == 2
    assert got['gripd_slow_client_queued_bytes_bucket{le="4.194304e+06"}'] == 3


def test_route_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mx, "ROUTE_LABELS_MAX", 3)
    m, _, _ = metrics()
    for r in ("a", "b", "c", "d", "e", "a"):
        m.slow_client(r, 1, r == "e")
    got = samples(m)
    drops = {k: v for k, v in got.items() if k.startswith("gripd_slow_client_route_drops_total")}
    assert drops == {
        'gripd_slow_client_route_drops_total{route="a"}': 2,
        'gripd_slow_client_route_drops_total{route="b"}': 1,
        'gripd_slow_client_route_drops_total{route="c"}': 1,
        'gripd_slow_client_route_drops_total{route="(other)"}': 2,
    }
    assert got['gripd_slow_client_closes_total{route="(other)"}'] == 1


def test_fanout_counts_the_drop_once_in_every_sink() -> None:
    """Sinks that only count drops (the status board, stats) see ``dropped("slow_client")``;
    Metrics counts it itself: nobody counts it twice."""
    m, board, _ = metrics()
    plain: list[tuple[str, int]] = []

    class Counting(Events):
        def dropped(self, reason: str, count: int = 1) -> None:
            plain.append((reason, count))

    fan = EventFanout()
    for sink in (m, board, Counting()):
        fan.add(sink)
    fan.slow_client("r1", 10, False)
    fan.slow_client("r1", 10, True)
    assert plain == [("slow_client", 1), ("slow_client", 1)]
    assert board.dropped_by == {"slow_client": 2}
    assert samples(m)["gripd_slow_client_drops_total"] == 2


def test_worker_forwards_one_message_per_drop_and_hub_replays_it() -> None:
    sent: list[tuple[Any, ...]] = []
    link = WorkerLink(sink=None, on_command=lambda msg: None)  # type: ignore[arg-type]
    link.link = type("L", (), {"send": staticmethod(sent.append)})()
    link.slow_client("route-x", 1234, True)
    link.slow_client("route-x", 99, False)
    assert sent == [("ev", "slow", "route-x", 1234, True), ("ev", "slow", "route-x", 99, False)]

    m, board, _ = metrics()
    fan = EventFanout()
    fan.add(m)
    fan.add(board)
    relay = EventRelay(fan)
    for msg in sent:
        relay.handle(1, msg)
    got = samples(m)
    assert got['gripd_slow_client_route_drops_total{route="route-x"}'] == 2
    assert got['gripd_slow_client_closes_total{route="route-x"}'] == 1
    assert got["gripd_slow_client_queued_bytes_count"] == 2
    assert board.dropped_total == 2


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("", 20),
        ("n=1", 1),
        ("n=100", 100),
        ("x=1&n=7", 7),
        ("n=0", "n must be a whole number from 1 to 100 (got 0)"),
        ("n=101", "n must be a whole number from 1 to 100 (got 101)"),
        ("n=-3", "n must be a whole number from 1 to 100"),
        ("n=abc", "n must be a whole number from 1 to 100"),
        ("n=", "n must be a whole number from 1 to 100"),
        ("n=1.5", "n must be a whole number from 1 to 100"),
        ("n=\u0663", "n must be a whole number from 1 to 100"),  # an Arabic-Indic 3
        ("n=99999999999999999999", "n must be a whole number from 1 to 100"),
        ("n=1&n=2", "n must be a whole number from 1 to 100"),
    ],
)
def test_slowest_count(query: str, want: int | str) -> None:
    assert slowest_count(query) == want


def test_slowest_endpoint_answers_merges_and_refuses() -> None:
    m, board, clock = metrics()
    e = {"route": "r", "peer": "127.0.0.1", "transport": "http", "age": 1.0}
    board.worker_report(0, {"slow": [{**e, "id": "a", "queued": 5}], "backed_up": 1})
    clock.now += 1.5  # worker 0's report is 1.5 s old when the page is read
    many = [{**e, "id": f"b{i}", "queued": 1000 - i} for i in range(SLOWEST_MAX)]
    board.worker_report(1, {"slow": many, "backed_up": 250})

    resp = m.answer("/status/slowest?n=3")
    assert (resp.code, dict(resp.headers)["Content-Type"]) == (200, "application/json")
    doc = json.loads(resp.body)
    assert doc["backed_up"] == 251 and doc["interval"] == 2.0
    assert [(c["id"], c["worker"], c["queued"]) for c in doc["connections"]] == [
        ("b0", 1, 1000),
        ("b1", 1, 999),
        ("b2", 1, 998),
    ]
    doc = json.loads(m.answer("/status/slowest?n=100").body)
    assert len(doc["connections"]) == 100
    assert doc["connections"][-1]["id"] == "b99"  # "a" (5 bytes) is the 101st
    doc = json.loads(m.answer("/status/slowest").body)  # 20 by default
    assert len(doc["connections"]) == 20
    # Worker 0's entry, its age brought up to now.
    board.worker_report(1, {"slow": [], "backed_up": 0})
    doc = json.loads(m.answer("/status/slowest?n=5").body)
    assert doc["connections"] == [{**e, "id": "a", "queued": 5, "age": 2.5, "worker": 0}]
    # /status keeps its 10.
    board.worker_report(1, {"slow": many, "backed_up": 250})
    assert len(board.snapshot()["slow"]["top"]) == 10

    bad = m.answer("/status/slowest?n=500")
    assert bad.code == 400 and bad.body == b"n must be a whole number from 1 to 100 (got 500)\n"
    far = m.answer("/status/slowest?n=3", local=False)
    assert far.code == 403
    # Any other path under /status/ is still the exposition, as Pushpin answers every path.
    other = m.answer("/status/slowest/x")
    assert other.code == 200 and b"gripd_slow_client_drops_total" in other.body


def test_reporter_sends_up_to_the_endpoint_limit_with_drops() -> None:
    clock = Clock()
    backed: dict[Any, float] = {Conn(str(i), 10 + i): 90.0 for i in range(SLOWEST_MAX + 20)}
    held = Conn("held", 10_000, dropped=7)
    backed[held] = 99.0
    sent: list[dict[str, Any]] = []
    r = StatusReporter(clock, backed, lambda: {}, sent.append)  # type: ignore[arg-type]
    r.report()
    (report,) = sent
    assert report["backed_up"] == SLOWEST_MAX + 21
    assert len(report["slow"]) == SLOWEST_MAX
    assert report["slow"][0] == {
        "id": "held",
        "route": "r1",
        "peer": "127.0.0.1",
        "transport": "http",
        "queued": 10_000,
        "age": 1.0,
        "dropped": 7,
    }
    assert "dropped" not in slowest(backed, 100.0)[1]  # not a hold: nothing is dropped for it

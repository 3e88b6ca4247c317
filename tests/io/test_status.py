"""The status page's data: the board's counts, rate samples and merged reports, the reporter's
messages, and the two paths the Prometheus endpoint answers with them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gripd.core.config import default_config
from gripd.core.stats import StatsState
from gripd.io.observe import status as st
from gripd.io.observe.metrics import Metrics, _is_local
from gripd.io.observe.status import StatusBoard, StatusReporter, slowest


class Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """A clock the test moves, and timers it fires by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Any, Handle]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Any) -> Handle:
        h = Handle()
        self.timers.append((self.now + delay, fn, h))
        return h

    def fire(self) -> None:
        """Move to the next timer and run it."""
        self.timers.sort(key=lambda t: t[0])
        when, fn, h = self.timers.pop(0)
        self.now = max(self.now, when)
        if not h.cancelled:
            fn()


class Conn:
    """What :func:`slowest` reads of a client connection."""

    def __init__(self, cid: str, queued: int, route: str = "r1", ws: bool = False) -> None:
        self.id = cid
        self.peer = "127.0.0.1"
        self.queued = queued
        self.handler = type("H", (), {"route": type("R", (), {"id": route})()})()
        self.raw_sink = (lambda b: None) if ws else None

    def buffered(self) -> int:
        return self.queued


def board() -> tuple[StatusBoard, Metrics, FakeLoop]:
    cfg = default_config("/nonexistent")
    metrics = Metrics(cfg, stats=StatsState(instance_id="t", now=0.0))
    loop = FakeLoop()
    b = StatusBoard(metrics, loop)  # type: ignore[arg-type]
    metrics.status = b
    return b, metrics, loop


def test_counts_from_events_and_metrics() -> None:
    b, m, _ = board()
    for ev in (m, b):
        ev.connection_opened("1", "p", "http")
        ev.connection_opened("2", "p", "http")
        ev.connection_opened("2", "p", "ws")  # upgraded
        ev.subscribed("a", "stream", True)
        ev.subscribed("a", "response", False)
        ev.subscribed("b", "ws", True)
        ev.unsubscribed("a", "response", False)
        ev.message_received("a", "http")
        ev.delivered("a", None, "http-stream", 3)
        ev.dropped("slow_client", 2)
    doc = b.snapshot()
    assert doc["connections"] == {"http": 1, "ws": 1, "total": 2}
    assert doc["subscriptions"] == {"response": 0, "stream": 1, "ws": 1}
    assert doc["channels"]["count"] == 2
    assert doc["totals"]["published"] == 1
    assert doc["totals"]["delivered"] == 3
    assert doc["totals"]["delivered_by_transport"]["http-stream"] == 3
    assert doc["totals"]["dropped_by_reason"] == {"slow_client": 2}
    assert doc["bus"] == {"kind": "local", "connected": None, "counters": {}}
    assert doc["workers"]["mode"] == "single" and doc["workers"]["count"] == 1
    assert doc["routes"] == {"source": None, "file": None, "entries": 0, "loaded": None}
    m.connection_closed("2")
    b.unsubscribed("b", "ws", True)
    doc = b.snapshot()
    assert doc["connections"] == {"http": 1, "ws": 0, "total": 1}
    assert doc["channels"]["count"] == 1
    json.dumps(doc)  # all of it is JSON


def test_rates_are_sampled_into_a_bounded_ring() -> None:
    b, _, loop = board()
    b.start()  # the baseline
    assert b.snapshot()["rates"]["samples"] == []
    for _ in range(10):
        b.message_received("a", "http")
    b.delivered("a", None, "http-response", 20)
    loop.fire()
    s = b.snapshot()["rates"]["samples"]
    assert len(s) == 1
    assert (s[0]["published"], s[0]["delivered"], s[0]["requests"]) == (2.0, 4.0, 0.0)
    for _ in range(st.SAMPLES + 5):
        loop.fire()
    assert len(b.snapshot()["rates"]["samples"]) == st.SAMPLES
    b.stop()
    assert all(h.cancelled for _, _, h in loop.timers)


def test_top_channels_are_ranked_with_live_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    b, _, loop = board()
    for ch, n in (("a", 1), ("b", 3), ("c", 2)):
        for _ in range(n):
            b.subscribed(ch, "stream", False)
    assert [e["channel"] for e in b.snapshot()["channels"]["top"]] == ["b", "c", "a"]
    b.unsubscribed("b", "stream", False)
    b.unsubscribed("b", "stream", False)
    b.unsubscribed("b", "stream", True)
    # Not ranked again yet, but counts are today's and a channel gone is left out.
    assert b.snapshot()["channels"]["top"] == [
        {"channel": "c", "subscribers": 2},
        {"channel": "a", "subscribers": 1},
    ]
    monkeypatch.setattr(st, "TOP_CHANNELS_SCAN_MAX", 1)
    loop.now += st.TOP_CHANNELS_MAX_AGE
    assert b.snapshot()["channels"]["top"] is None  # too many channels to rank


def test_slowest_reports_most_queued_first() -> None:
    conns = {Conn(str(i), q): 90.0 for i, q in enumerate([10, 500, 30])}
    ws = Conn("9", 200, route="w", ws=True)
    conns[ws] = 99.5  # type: ignore[index]
    out = slowest(conns, 100.0, top=3)  # type: ignore[arg-type]
    assert [e["id"] for e in out] == ["1", "9", "2"]
    assert out[0] == {
        "id": "1",
        "route": "r1",
        "peer": "127.0.0.1",
        "transport": "http",
        "queued": 500,
        "age": 10.0,
    }
    assert out[1]["transport"] == "ws" and out[1]["age"] == 0.5


def test_reporter_sends_changes_only() -> None:
    loop = FakeLoop()
    backed: dict[Any, float] = {}
    routes = {"source": "file", "file": "/r", "entries": 2, "loaded": 1.0}
    sent: list[dict[str, Any]] = []
    r = StatusReporter(loop, backed, lambda: dict(routes), sent.append)  # type: ignore[arg-type]
    r.start()
    assert sent == [{"routes": routes}]
    loop.fire()
    assert len(sent) == 1  # nothing changed, nothing sent
    backed[Conn("5", 1000)] = loop.now
    loop.fire()
    assert sent[-1]["backed_up"] == 1 and sent[-1]["slow"][0]["id"] == "5"
    loop.fire()
    assert len(sent) == 3  # still backed up: reported every interval
    backed.clear()
    loop.fire()
    assert sent[-1] == {"slow": [], "backed_up": 0}  # once, so the board forgets it
    loop.fire()
    assert len(sent) == 4
    routes["entries"] = 3
    r.routes_changed()
    assert sent[-1] == {"routes": {**routes}}
    r.stop()


def test_board_merges_worker_reports() -> None:
    b, _, _ = board()
    e = {"id": "1", "route": "r", "peer": "p", "transport": "http", "age": 1.0}
    b.worker_report(0, {"slow": [{**e, "queued": 5}], "backed_up": 1})
    b.worker_report(1, {"slow": [{**e, "id": "2", "queued": 9}], "backed_up": 4})
    b.worker_report(0, {"routes": {"source": "file", "file": "/r", "entries": 1, "loaded": 5.0}})
    b.worker_report(1, {"routes": {"source": "file", "file": "/r", "entries": 2, "loaded": 6.0}})
    doc = b.snapshot()
    assert doc["slow"]["backed_up"] == 5
    assert [(x["id"], x["worker"]) for x in doc["slow"]["top"]] == [("2", 1), ("1", 0)]
    assert doc["routes"]["entries"] == 2  # the newest load
    b.worker_gone(1)
    assert [x["id"] for x in b.snapshot()["slow"]["top"]] == ["1"]
    b.worker_report(0, {"slow": [], "backed_up": 0})
    assert b.snapshot()["slow"] == {"backed_up": 0, "top": []}


def test_endpoint_paths() -> None:
    b, m, _ = board()
    b.start()
    r = m.answer("/status?x=1")
    assert r.code == 200 and dict(r.headers)["Content-Type"] == "application/json"
    assert json.loads(r.body)["connections"]["total"] == 0
    r = m.answer("/status.html")
    assert r.code == 200 and dict(r.headers)["Content-Type"].startswith("text/html")
    assert b'fetch("status"' in r.body and b"<script src" not in r.body
    for path in ("/", "/metrics", "/status/x"):
        r = m.answer(path)
        assert r.code == 200 and r.body.startswith(b"# HELP request_received")
    for path in ("/status", "/status.html"):
        assert m.answer(path, local=False).code == 403
    assert m.answer("/metrics", local=False).code == 200
    m.status = None  # no board: every path scrapes, as in Pushpin
    assert m.answer("/status").body.startswith(b"# HELP")


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        (("127.0.0.1", 5), True),
        (("127.8.0.2", 5), True),
        (("::1", 5, 0, 0), True),
        (("::ffff:127.0.0.1", 5, 0, 0), True),
        (("10.0.0.1", 5), False),
        (("::ffff:10.0.0.1", 5, 0, 0), False),
        (("2001:db8::1", 5, 0, 0), False),
        ("", True),  # a Unix socket (ipc://)
        (None, True),
    ],
)
def test_only_local_peers_see_the_status(peer: object, local: bool) -> None:
    assert _is_local(peer) is local

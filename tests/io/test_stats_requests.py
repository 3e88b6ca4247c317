"""Per-request stats connections (F43): how ``StatsPublisher`` opens, hands over and closes
them, what the header-bytes estimate counts, and the worker-to-hub forwarding of the events."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gripd.core.config import default_config
from gripd.core.stats import encoded_head_bytes_estimate, header_bytes_estimate
from gripd.io.bus.hub import EventRelay
from gripd.io.observe.events import EventFanout, Events, Transport, requests_observed
from gripd.io.observe.stats import StatsPublisher


def _publisher(tmp_path: Path) -> StatsPublisher:
    cfg = dataclasses.replace(
        default_config(str(tmp_path)), stats_spec="", stats_report_interval=10
    )
    return StatsPublisher(cfg)


async def test_one_stats_connection_per_request(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    pub.request_started("c1", "1.2.3.4", "http", "r1", True)
    first = pub.current_stats_id("c1")
    assert first is not None and pub.check_connection(first)
    conn = pub.state.conns[first]
    assert (conn.peer, conn.route, conn.ssl) == ("1.2.3.4", "r1", True)
    # the next request on the same client connection is another stats connection; a missed
    # end is made up for
    pub.request_started("c1", "1.2.3.4", "http", "r1", False)
    second = pub.current_stats_id("c1")
    assert second is not None and second != first
    assert not pub.check_connection(first) and pub.check_connection(second)
    pub.request_ended("c1")
    assert not pub.check_connection(second) and pub.current_stats_id("c1") is None
    pub.request_ended("c1")  # nothing open: nothing happens


async def test_hold_moves_to_the_empty_route_and_close_ends_it(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    pub.request_started("c2", "5.6.7.8", "http", "r1", False)
    cid = pub.current_stats_id("c2")
    assert cid is not None
    pub.request_held("c2")
    assert pub.state.conns[cid].route == "" and pub.state.conns[cid].peer == "5.6.7.8"
    pub.connection_opened("c3", "127.0.0.1", "http")  # client connections make no packet
    assert pub.current_stats_id("c3") is None
    pub.connection_closed("c2")  # the client went: its open request ends with it
    assert not pub.check_connection(cid)


def test_header_bytes_estimate_is_pushpins() -> None:
    # Pushpin's test: "200" + "OK" + "Content-Type" + "text/plain" + "Content-Length" + "11"
    headers = [("Content-Type", "text/plain"), ("Content-Length", "11")]
    assert header_bytes_estimate(200, "OK", headers) == 43
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
    assert encoded_head_bytes_estimate(head) == 43
    assert encoded_head_bytes_estimate(b"HTTP/1.1 204 No Content\r\n\r\n") == 13
    assert encoded_head_bytes_estimate(b"") == 0


def test_requests_observed_only_with_a_reader(tmp_path: Path) -> None:
    cfg = default_config(str(tmp_path))
    off = dataclasses.replace(cfg, stats_spec="", prometheus_port="")
    assert not requests_observed(off)
    assert requests_observed(dataclasses.replace(off, stats_spec="ipc:///tmp/x"))
    assert requests_observed(dataclasses.replace(off, prometheus_port="127.0.0.1:9"))


class _Record(Events):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request_started(
        self, conn_id: str, peer: str, transport: Transport, route: str, ssl: bool
    ) -> None:
        self.calls.append(("started", conn_id, peer, transport, route, ssl))

    def request_held(self, conn_id: str) -> None:
        self.calls.append(("held", conn_id))

    def request_ended(self, conn_id: str) -> None:
        self.calls.append(("ended", conn_id))

    def counter(self, name: str, count: int, route: str = "") -> None:
        self.calls.append(("counter", name, count, route))


def test_fanout_and_relay_forward_request_events() -> None:
    rec = _Record()
    fan = EventFanout()
    fan.add(rec)
    relay = EventRelay(fan)
    relay.handle(0, ("ev", "rq+", "w0-1", "1.2.3.4", "http", "r1", True))
    relay.handle(0, ("ev", "rqh", "w0-1"))
    relay.handle(0, ("ev", "ctr", "client-content-bytes-sent", 12, ""))
    relay.handle(0, ("ev", "rq-", "w0-1"))
    assert rec.calls == [
        ("started", "w0-1", "1.2.3.4", "http", "r1", True),
        ("held", "w0-1"),
        ("counter", "client-content-bytes-sent", 12, ""),
        ("ended", "w0-1"),
    ]


def test_short_requests_leave_no_refresh_behind() -> None:
    """A stats connection per request: a closed request leaves no scheduled refresh behind,
    and the per-route peak stays right."""
    from gripd.core.stats import StatsState

    s = StatsState(instance_id="gripd_1", report_interval=10)
    s.connection_opened("held", 0.0, route="")
    for n in range(5000):
        s.connection_opened(f"r{n}", 1.0, route="r1")
        s.connection_closed(f"r{n}", 1.0)
    assert sum(len(b) for b in s._buckets.values()) == len(s.conns) == 1
    assert s.has_connection("held") and len(s.conns) == 1
    # the held connection is still refreshed
    assert [p[1]["id"] for p in s.tick(1000.0) if p[0] == "conn"] == ["held"]
    s.connection_opened("a", 2.0, route="r1")
    s.connection_opened("b", 2.0, route="r1")
    s.connection_opened("b", 2.0, route="")  # handed over to the empty route
    assert s.reports["r1"].connections_max >= 2
    s.make_report(3.0)
    assert s._per_route == {"": 2, "r1": 1}
    assert sum(len(b) for b in s._buckets.values()) == 3


def test_long_polls_leave_no_timer_behind() -> None:
    """A long-poll subscribes and lingers once per poll: each move of its subscription's timer
    replaces the previous one (a timer heap kept one stale entry per poll until due), and the
    linger still ends with its ``sub`` ``unavailable`` packet."""
    from gripd.core.stats import StatsState

    s = StatsState(instance_id="gripd_1", report_interval=10)
    for i in range(20_000):
        t = i / 4000
        ch = f"c{i % 100}"
        s.subscribed("response", ch, t)
        s.unsubscribed("response", ch, t + 0.01)
    assert sum(len(b) for b in s._buckets.values()) == len(s.subs) == 100
    # every channel lingers from its last poll (at most 5 s ago); past the 60 s linger they go
    gone = [p for p in s.tick(5.0 + 61.0) if p[0] == "sub" and p[1].get("unavailable")]
    assert len(gone) == 100 and not s.subs and not s._buckets

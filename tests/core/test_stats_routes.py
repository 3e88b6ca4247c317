"""Per-route stats (Pushpin's ``statsRoute``): ``conn`` packets with route and ssl, one report
per route, blocks (``message_block_size``) and the byte/message report counters."""

from __future__ import annotations

from gripd.core.stats import StatsState, blocks_for


def state() -> StatsState:
    return StatsState(instance_id="i", report_interval=10, now=0.0)


def test_conn_packets_carry_route_and_ssl() -> None:
    s = state()
    [(kind, opened)] = s.connection_opened("c1", 1.0, peer="1.2.3.4", ssl=True, route="r1")
    assert kind == "conn"
    assert (opened["route"], opened["ssl"], opened["peer-address"]) == ("r1", True, "1.2.3.4")
    [(_, plain)] = s.connection_opened("c2", 1.0)
    assert "route" not in plain and "ssl" not in plain
    [(_, gone)] = s.connection_closed("c1", 2.0)
    assert gone["route"] == "r1" and gone["unavailable"] is True


def test_one_report_per_route_and_combined_totals() -> None:
    s = state()
    s.connection_opened("a", 1.0, route="r1")
    s.connection_opened("b", 1.0, route="r1")
    s.connection_opened("c", 1.0)
    s.add_counter("client-content-bytes-sent", 5, 1.5, "r1")
    s.message_received(1.5, blocks=2)
    s.delivered("ch", None, "http-stream", 3, 1.6, route="r1", blocks=2)
    assert s.totals.connection_connected == 3
    reports = {str(f.get("route", "")): f for _, f in s.make_report(2.0)}
    assert set(reports) == {"", "r1"}
    r1, base = reports["r1"], reports[""]
    assert (r1["connections"], r1["minutes"], r1["sent"]) == (2, 2, 3)
    assert (r1["blocks-sent"], r1["client-content-bytes-sent"]) == (6, 5)
    assert "blocks-received" not in r1
    assert (base["connections"], base["minutes"], base["received"]) == (1, 1, 1)
    assert base["blocks-received"] == 2 and "blocks-sent" not in base
    # connections stay open: both routes report again, with no new minutes
    again = {str(f.get("route", "")): f for _, f in s.make_report(3.0)}
    assert (again["r1"]["connections"], again["r1"]["minutes"]) == (2, 0)


def test_message_packet_blocks() -> None:
    s = state()
    [(_, with_blocks)] = s.delivered("ch", "1", "ws-message", 4, 1.0, blocks=3)
    assert with_blocks["blocks"] == 12
    [(_, without)] = s.delivered("ch", "2", "ws-message", 4, 1.0)
    assert "blocks" not in without


def test_blocks_for() -> None:
    assert blocks_for(10, -1) == -1
    assert blocks_for(10, 0) == -1
    assert blocks_for(0, 4) == 0
    assert blocks_for(10, 4) == 3
    assert blocks_for(8, 4) == 2


def test_moved_connection_counts_on_its_new_route() -> None:
    """A held request moves to the empty route (Pushpin's handler owns it): its ``conn``
    packet again with no route, the new route's peak counts it, its minute is not counted
    twice, and a packet-less move (nobody listening) changes the counts the same way."""
    s = state()
    s.connection_opened("a", 1.0, route="r1")
    s.connection_opened("b", 1.0, route="r1")
    [(kind, moved)] = s.connection_moved("a", "", 1.5)
    assert kind == "conn" and "route" not in moved and moved["id"] == "a"
    assert s.connection_moved("a", "", 1.6) == []  # already there
    assert s.connection_moved("b", "", 1.6, packet=False) == []
    assert s.connection_moved("gone", "", 1.6) == []
    reports = {str(f.get("route", "")): f for _, f in s.make_report(2.0)}
    assert (reports["r1"]["connections"], reports["r1"]["minutes"]) == (2, 2)
    assert (reports[""]["connections"], reports[""]["minutes"]) == (2, 0)
    [(_, gone)] = s.connection_closed("a", 3.0)
    assert "route" not in gone
    # after a report the peak starts again from the count at the next change (Pushpin's)
    reports = {str(f.get("route", "")): f for _, f in s.make_report(4.0)}
    assert reports[""]["connections"] == 1 and reports["r1"]["connections"] == 0

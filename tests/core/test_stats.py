"""Stats packets and bookkeeping (F43) and the Prometheus totals behind F44.

The wire vectors were captured from a Pushpin 1.36 handler's stats socket (stats_format
tnetstring and json) on loopback; only ``from`` differs from what gripd would send.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core import tnetstring
from gripd.core.errors import ConfigError
from gripd.core.stats import (
    REPORT_COUNTERS,
    Packet,
    PrometheusListen,
    Report,
    StatsState,
    activity_packet,
    conn_gone_packet,
    conn_packet,
    counts_packet,
    default_instance_id,
    encode_packet,
    message_packet,
    parse_prometheus_port,
    report_packet,
    sub_packet,
    unsub_packet,
)

PP = "pushpin-handler_2080"

_REPORT_T = (
    b"report T532:29:client-content-bytes-received,1:0#24:server-messages-received,1:0#4:from,"
    b"20:pushpin-handler_2080,18:http-response-sent,1:0#28:client-header-bytes-received,1:0#"
    b"29:server-content-bytes-received,1:0#24:client-header-bytes-sent,2:54#"
    b"25:server-content-bytes-sent,1:0#20:server-messages-sent,1:0#4:sent,1:0#"
    b"24:client-messages-received,1:0#8:received,1:0#8:duration,4:1862#"
    b"28:server-header-bytes-received,1:0#7:minutes,1:4#25:client-content-bytes-sent,2:32#"
    b"20:client-messages-sent,1:0#11:connections,1:3#24:server-header-bytes-sent,1:0#}"
)


def _report(**kw: int) -> Report:
    r = Report(start=0.0)
    r.connections_max = kw.pop("connections", 0)
    r.minutes = kw.pop("minutes", 0)
    r.received = kw.pop("received", 0)
    r.sent = kw.pop("sent", 0)
    r.http_response_sent = kw.pop("http_response_sent", 0)
    r.counters = {k.replace("_", "-"): v for k, v in kw.items()}
    return r


# (captured tnetstring frame, the same packet built by gripd)
TNET_VECTORS: list[tuple[bytes, Packet]] = [
    (
        b"conn T107:2:id,13:condure:1-0-0,4:from,20:pushpin-handler_2080,12:peer-address,"
        b"9:127.0.0.1,4:type,4:http,3:ttl,3:120#}",
        conn_packet(PP, "condure:1-0-0", type="http", peer="127.0.0.1", ssl=False, ttl=120),
    ),
    (
        b"conn T75:2:id,13:condure:0-0-1,4:from,20:pushpin-handler_2080,11:unavailable,4:true!}",
        conn_gone_packet(PP, "condure:0-0-1"),
    ),
    (
        b"sub T91:4:mode,6:stream,7:channel,1:a,4:from,20:pushpin-handler_2080,"
        b"11:subscribers,1:1#3:ttl,2:60#}",
        sub_packet(PP, "stream", "a", ttl=60, subscribers=1),
    ),
    (
        b"sub T83:4:mode,6:stream,7:channel,1:a,4:from,20:pushpin-handler_2080,"
        b"11:unavailable,4:true!}",
        unsub_packet(PP, "stream", "a"),
    ),
    (
        b"message T99:5:count,1:2#7:channel,1:a,4:from,20:pushpin-handler_2080,"
        b"9:transport,11:http-stream,7:item-id,2:i1,}",
        message_packet(PP, "a", "i1", "http-stream", 2),
    ),
    (
        b"message T86:5:count,1:1#7:channel,1:b,4:from,20:pushpin-handler_2080,"
        b"9:transport,13:http-response,}",
        message_packet(PP, "b", None, "http-response", 1),
    ),
    (b"activity T43:5:count,1:3#4:from,20:pushpin-handler_2080,}", activity_packet(PP, 3)),
    (
        b"counts T56:4:from,20:pushpin-handler_2080,17:requests-received,1:3#}",
        counts_packet(PP, 3),
    ),
]

PJ = "pushpin-handler_3799"
JSON_VECTORS: list[tuple[bytes, Packet]] = [
    (
        b'conn J{"from":"pushpin-handler_3799","id":"condure:1-0-0","peer-address":"127.0.0.1",'
        b'"ttl":120,"type":"http"}',
        conn_packet(PJ, "condure:1-0-0", type="http", peer="127.0.0.1", ssl=False, ttl=120),
    ),
    (
        b'conn J{"from":"pushpin-handler_3799","id":"condure:0-0-1","unavailable":true}',
        conn_gone_packet(PJ, "condure:0-0-1"),
    ),
    (
        b'sub J{"channel":"b","from":"pushpin-handler_3799","mode":"response","subscribers":1,'
        b'"ttl":60}',
        sub_packet(PJ, "response", "b", ttl=60, subscribers=1),
    ),
    (
        b'sub J{"channel":"a","from":"pushpin-handler_3799","mode":"stream","unavailable":true}',
        unsub_packet(PJ, "stream", "a"),
    ),
    (
        b'message J{"channel":"a","count":2,"from":"pushpin-handler_3799","item-id":"i1",'
        b'"transport":"http-stream"}',
        message_packet(PJ, "a", "i1", "http-stream", 2),
    ),
    (
        b'message J{"channel":"b","count":1,"from":"pushpin-handler_3799",'
        b'"transport":"http-response"}',
        message_packet(PJ, "b", None, "http-response", 1),
    ),
    (b'activity J{"count":3,"from":"pushpin-handler_3799"}', activity_packet(PJ, 3)),
    (
        b'counts J{"from":"pushpin-handler_3799","requests-received":3}',
        counts_packet(PJ, 3),
    ),
    (
        b'report J{"client-content-bytes-received":0,"client-content-bytes-sent":9,'
        b'"client-header-bytes-received":0,"client-header-bytes-sent":27,'
        b'"client-messages-received":0,"client-messages-sent":0,"connections":3,"duration":2000,'
        b'"from":"pushpin-handler_3799","http-response-sent":1,"minutes":0,"received":2,"sent":3,'
        b'"server-content-bytes-received":0,"server-content-bytes-sent":0,'
        b'"server-header-bytes-received":0,"server-header-bytes-sent":0,'
        b'"server-messages-received":0,"server-messages-sent":0}',
        report_packet(
            PJ,
            _report(
                connections=3,
                received=2,
                sent=3,
                http_response_sent=1,
                client_header_bytes_sent=27,
                client_content_bytes_sent=9,
            ),
            2.0,
        ),
    ),
]


def _split(frame: bytes) -> tuple[bytes, bytes, bytes]:
    ptype, _, rest = frame.partition(b" ")
    return ptype, rest[:1], rest[1:]


@pytest.mark.parametrize(("captured", "packet"), TNET_VECTORS, ids=lambda v: repr(v)[:30])
def test_tnetstring_matches_pushpin(captured: bytes, packet: Packet) -> None:
    # QVariantHash has no order, so compare the decoded dicts (and type + format byte exactly).
    ours = encode_packet(packet, "tnetstring")
    t1, f1, body1 = _split(captured)
    t2, f2, body2 = _split(ours)
    assert (t2, f2) == (t1, f1) == (t1, b"T")
    assert tnetstring.loads(body2) == tnetstring.loads(body1)
    assert len(body2) == len(body1)


def test_report_tnetstring_matches_pushpin() -> None:
    r = _report(connections=3, minutes=4, client_header_bytes_sent=54, client_content_bytes_sent=32)
    ours = encode_packet(report_packet(PP, r, 1.862), "tnetstring")
    assert tnetstring.loads(_split(ours)[2]) == tnetstring.loads(_split(_REPORT_T)[2])


@pytest.mark.parametrize(("captured", "packet"), JSON_VECTORS, ids=lambda v: repr(v)[:30])
def test_json_is_byte_identical_to_pushpin(captured: bytes, packet: Packet) -> None:
    assert encode_packet(packet, "json") == captured


def test_json_keeps_non_ascii_as_utf8() -> None:
    frame = encode_packet(sub_packet("x", "stream", "caf\u00e9", ttl=60, subscribers=1), "json")
    assert "café".encode() in frame
    assert json.loads(frame[len(b"sub J") :])["channel"] == "café"


@pytest.mark.parametrize(
    ("packet", "present", "absent"),
    [
        (
            conn_packet("f", "i", type="ws", peer="", ssl=True, ttl=5),
            {"ssl", "type"},
            {"peer-address"},
        ),
        (
            conn_packet("", "i", type="http", peer="1.2.3.4", ssl=False, ttl=5),
            set(),
            {"from", "ssl"},
        ),
        (message_packet("f", "c", None, "ws-message", 1, blocks=3), {"blocks"}, {"item-id"}),
        (counts_packet("f", 0), {"from"}, {"requests-received"}),
        (sub_packet("f", "ws", "c", ttl=1, subscribers=-1), {"ttl"}, {"subscribers"}),
    ],
)
def test_optional_fields(packet: Packet, present: set[str], absent: set[str]) -> None:
    keys = set(packet[1])
    assert present <= keys
    assert not (absent & keys)


def test_message_count_never_negative() -> None:
    assert message_packet("f", "c", None, "http-stream", -4)[1]["count"] == 0
    assert activity_packet("f", -1)[1]["count"] == 0


# --- StatsState ---------------------------------------------------------------------------------


def _state(**kw: int) -> StatsState:
    args = {
        "connection_ttl": 120,
        "subscription_ttl": 60,
        "subscription_linger": 60,
        "report_interval": 10,
    }
    args.update(kw)
    return StatsState(instance_id="gripd_1", **args)


def _types(packets: list[Packet]) -> list[tuple[str, bool]]:
    return [(t, bool(f.get("unavailable"))) for t, f in packets]


def test_connection_lifecycle_and_refresh() -> None:
    s = _state()
    [p] = s.connection_opened("gripd_1:1", 0.0, peer="10.0.0.1")
    assert p[0] == "conn"
    assert p[1] == {
        "from": "gripd_1",
        "id": "gripd_1:1",
        "type": "http",
        "peer-address": "10.0.0.1",
        "ttl": 120,
    }
    assert s.has_connection("gripd_1:1")
    assert s.tick(89.9) == []  # refresh due at 3/4 of the ttl
    assert _types(s.tick(90.0)) == [("conn", False)]
    assert s.tick(179.0) == []
    assert _types(s.tick(180.0)) == [("conn", False)]
    assert _types(s.connection_closed("gripd_1:1", 200.0)) == [("conn", True)]
    assert not s.has_connection("gripd_1:1")
    assert s.tick(1000.0) == []  # no refresh after close
    assert s.connection_closed("gripd_1:1", 201.0) == []  # unknown id: nothing


def test_subscription_counts_linger_and_refresh() -> None:
    s = _state()
    [p] = s.subscribed("stream", "a", 0.0)
    assert p == sub_packet("gripd_1", "stream", "a", ttl=60, subscribers=1)
    assert s.subscribed("stream", "a", 1.0) == []  # count change waits for the next tick
    assert s.tick(2.0) == [sub_packet("gripd_1", "stream", "a", ttl=60, subscribers=2)]
    assert s.tick(46.0) == []
    assert s.tick(47.0) == [sub_packet("gripd_1", "stream", "a", ttl=60, subscribers=2)]
    assert s.unsubscribed("stream", "a", 48.0) == []
    assert s.tick(48.5) == [sub_packet("gripd_1", "stream", "a", ttl=60, subscribers=1)]
    # the last stream subscriber leaving is announced at once
    assert s.unsubscribed("stream", "a", 49.0) == [unsub_packet("gripd_1", "stream", "a")]
    assert s.tick(500.0) == []
    assert s.unsubscribed("stream", "a", 501.0) == []  # unknown: nothing


def test_response_mode_unsubscribe_lingers() -> None:
    s = _state(subscription_linger=60)
    s.subscribed("response", "b", 0.0)
    assert s.unsubscribed("response", "b", 10.0) == []
    assert s.tick(69.0) == []
    assert s.tick(70.0) == [unsub_packet("gripd_1", "response", "b")]
    assert ("response", "b") not in s.subs


def test_response_resubscribe_during_linger_announces_at_once() -> None:
    s = _state(subscription_linger=60)
    s.subscribed("response", "b", 0.0)
    s.unsubscribed("response", "b", 10.0)
    assert s.subscribed("response", "b", 20.0) == [
        sub_packet("gripd_1", "response", "b", ttl=60, subscribers=1)
    ]
    assert s.tick(64.0) == []
    # back to normal refreshes (3/4 of 60 s after the resubscribe) ...
    assert s.tick(66.0) == [sub_packet("gripd_1", "response", "b", ttl=60, subscribers=1)]
    assert s.tick(71.0) == []  # ... and the linger expiry (due at 70) was cancelled


def test_modes_are_separate_subscriptions() -> None:
    s = _state()
    s.subscribed("stream", "a", 0.0)
    assert s.subscribed("response", "a", 0.0) == [
        sub_packet("gripd_1", "response", "a", ttl=60, subscribers=1)
    ]
    assert s.unsubscribed("stream", "a", 1.0) == [unsub_packet("gripd_1", "stream", "a")]


def test_message_activity_and_counts() -> None:
    s = _state()
    assert s.request_received(0.0) is True
    assert s.request_received(0.01) is False
    assert s.add_activity("") is False
    assert s.add_activity("r1") is False
    assert s.add_activity("") is False
    assert s.delivered("a", "i1", "http-stream", 2, 0.02) == [
        message_packet("gripd_1", "a", "i1", "http-stream", 2)
    ]
    # activity per route (Pushpin's statsRoute), requests-received in all
    assert s.flush_activity() == [
        activity_packet("gripd_1", 2),
        activity_packet("gripd_1", 1, route="r1"),
        counts_packet("gripd_1", 2),
    ]
    assert s.flush_activity() == []
    assert s.add_activity("r1") is True
    assert s.request_received(1.0) is False


def test_report_replays_pushpin_scenario() -> None:
    # The captured Pushpin run: a probe request, two stream holds and one long-poll, then a
    # publish to each channel (2 stream + 1 response deliveries), the long-poll's connection
    # closes, one stream client leaves. Pushpin reported connections=3 minutes=4, then
    # connections=3 received=2 sent=3 http-response-sent=1, then connections=1.
    s = _state(report_interval=2)
    s.connection_opened("probe", 0.0)
    s.connection_closed("probe", 0.01)
    for cid in ("c1", "c2", "c3"):
        s.request_received(0.5)
        s.connection_opened(cid, 0.5)
    s.request_received(0.0)
    [r1] = s.make_report(2.0)
    assert {k: r1[1][k] for k in ("connections", "minutes", "received", "sent")} == {
        "connections": 3,
        "minutes": 4,
        "received": 0,
        "sent": 0,
    }
    assert r1[1]["duration"] == 2000
    # Pushpin's handler then saw the proxy's conn packets again (an update of the same ids,
    # which re-evaluates the peak without counting a minute); replay that with c1.
    s.connection_opened("c1", 2.2)
    s.message_received(2.5)
    s.message_received(2.5)
    s.delivered("a", "i1", "http-stream", 2, 2.5)
    s.delivered("b", None, "http-response", 1, 2.5)
    s.connection_closed("c2", 2.6)
    s.connection_closed("c1", 3.5)
    [r2] = s.make_report(4.0)
    want = {"connections": 3, "minutes": 0, "received": 2, "sent": 3, "http-response-sent": 1}
    assert {k: r2[1][k] for k in want} == want
    [r3] = s.make_report(6.0)
    assert r3[1]["connections"] == 1 and r3[1]["sent"] == 0
    t = s.totals
    assert (t.request_received, t.connection_minute, t.message_received, t.message_sent) == (
        4,
        4,
        2,
        3,
    )
    assert t.connection_connected == 1
    s.connection_closed("c3", 7.0)
    [r4] = s.make_report(8.0)
    assert r4[1]["connections"] == 0
    assert s.make_report(10.0) == []  # empty report sent once, then quiet
    assert s.totals.connection_connected == 0


def test_report_has_all_1_36_fields() -> None:
    s = _state()
    s.add_counter("client-header-bytes-sent", 54, 0.0)
    [(ptype, fields)] = s.make_report(1.0)
    assert ptype == "report"
    assert set(REPORT_COUNTERS) <= set(fields)
    assert fields["client-header-bytes-sent"] == 54
    assert {"connections", "minutes", "received", "sent", "http-response-sent", "duration"} <= set(
        fields
    )
    assert "blocks-received" not in fields
    with pytest.raises(ValueError):
        s.add_counter("nope", 1, 0.0)


def test_connection_max_is_the_peak_since_last_report() -> None:
    s = _state()
    s.make_report(0.0)
    for i in range(5):
        s.connection_opened(str(i), 1.0)
    for i in range(4):
        s.connection_closed(str(i), 2.0)
    assert s.totals.connection_connected == 5
    [r] = s.make_report(10.0)
    assert r[1]["connections"] == 5
    assert s.totals.connection_connected == 5  # stale until the next change or report
    [r] = s.make_report(20.0)
    assert r[1]["connections"] == 1
    assert s.totals.connection_connected == 1


def test_minutes_count_first_minute_then_whole_minutes() -> None:
    s = _state(connection_ttl=120)
    s.connection_opened("c", 0.0)
    assert s.totals.connection_minute == 1
    s.tick(90.0)  # refresh: floor(90/60) = 1 more minute
    assert s.totals.connection_minute == 2
    s.connection_closed("c", 150.0)  # 150 - 60 = 90 s unaccounted: one more
    assert s.totals.connection_minute == 3


def test_reopening_same_id_does_not_count_another_minute() -> None:
    s = _state()
    s.connection_opened("c", 0.0)
    s.connection_opened("c", 1.0)
    assert s.totals.connection_minute == 1
    assert len(s.conns) == 1


def test_report_interval_zero_turns_report_accounting_off() -> None:
    s = _state(report_interval=0)
    s.connection_opened("c", 0.0)
    s.message_received(0.0)
    s.delivered("a", None, "http-stream", 3, 0.0)
    s.request_received(0.0)
    assert s.make_report(10.0) == []
    t = s.totals
    assert (t.request_received, t.connection_connected, t.connection_minute) == (1, 0, 0)
    assert (t.message_received, t.message_sent) == (0, 0)


def test_default_instance_id() -> None:
    assert default_instance_id(42) == "gripd_42"


# --- properties ---------------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["sub", "unsub"]),
        st.sampled_from(["response", "stream", "ws"]),
        st.sampled_from(["a", "b", "c"]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_subscriber_counts_converge(ops: list[tuple[str, str, str]]) -> None:
    """After any sequence, a tick far enough later leaves one packet per key that tells the
    truth: ``subscribers`` = the live count, or ``unavailable`` once nobody is left."""
    s = _state(subscription_linger=60)
    live: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], Packet] = {}
    now = 0.0
    for op, mode, ch in ops:
        now += 1.0
        key = (mode, ch)
        if op == "sub":
            live[key] = live.get(key, 0) + 1
            out = s.subscribed(mode, ch, now)
        else:
            if live.get(key, 0) > 0:
                live[key] -= 1
            out = s.unsubscribed(mode, ch, now)
        for p in out + s.tick(now):
            last[(str(p[1]["mode"]), str(p[1]["channel"]))] = p
    for p in s.tick(now + 61.0):  # past linger and every pending count change
        last[(str(p[1]["mode"]), str(p[1]["channel"]))] = p
    for key, n in live.items():
        if key not in last:
            continue
        fields = last[key][1]
        if n > 0:
            assert fields["subscribers"] == n
        else:
            assert fields.get("unavailable") is True


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.one_of(st.text(max_size=20), st.integers(-(2**40), 2**40), st.booleans()),
        max_size=8,
    )
)
def test_encode_round_trips(fields: dict[str, str | int | bool]) -> None:
    packet: Packet = ("message", dict(fields))
    t = encode_packet(packet, "tnetstring")
    decoded = tnetstring.loads(t[len(b"message T") :])
    want = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in fields.items()}
    assert decoded == want
    j = encode_packet(packet, "json")
    assert json.loads(j[len(b"message J") :]) == fields


# --- prometheus_port ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("9100", PrometheusListen(None, 9100)),
        ("127.0.0.1:9100", PrometheusListen("127.0.0.1", 9100)),
        (":9100", PrometheusListen(None, 9100)),
        ("[::1]:9100", PrometheusListen("::1", 9100)),
        ("ipc:///tmp/x.sock", PrometheusListen(path="/tmp/x.sock")),
    ],
)
def test_parse_prometheus_port(value: str, want: PrometheusListen) -> None:
    assert parse_prometheus_port(value) == want


@pytest.mark.parametrize("value", ["", "abc", "127.0.0.1:", "1:0", "70000", "ipc://"])
def test_parse_prometheus_port_rejects(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_prometheus_port(value)


def test_delivered_without_a_listener_counts_but_makes_no_packet() -> None:
    """F43: the ``message`` packet is made only when the stats socket has a listener; the
    report's counts are kept either way."""
    s = _state()
    assert s.delivered("a", "i1", "http-stream", 2, 0.0, packet=False) == []
    assert len(s.delivered("a", "i2", "http-stream", 3, 0.0)) == 1
    assert s.totals.message_sent == 5

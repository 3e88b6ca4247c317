"""Prometheus endpoint (F44): Pushpin's five metrics byte for byte, then gripd's own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gripd.core.config import default_config
from gripd.core.stats import StatsState, Totals
from gripd.io.observe.metrics import Metrics, pushpin_exposition
from tests.support.procs import free_ports

PUSHPIN_ZERO = (
    "# HELP request_received Number of requests received\n"
    "# TYPE request_received counter\n"
    "request_received 0\n"
    "# HELP connection_connected Number of concurrent connections\n"
    "# TYPE connection_connected gauge\n"
    "connection_connected 0\n"
    "# HELP connection_minute Number of minutes clients have been connected\n"
    "# TYPE connection_minute counter\n"
    "connection_minute 0\n"
    "# HELP message_received Number of messages received by the publish API\n"
    "# TYPE message_received counter\n"
    "message_received 0\n"
    "# HELP message_sent Number of messages sent to clients\n"
    "# TYPE message_sent counter\n"
    "message_sent 0\n"
)


def test_pushpin_exposition_matches_captured_pushpin() -> None:
    # Scraped from a Pushpin 1.36 handler with prometheus_prefix=pp_ (610 bytes).
    captured = (
        "# HELP pp_request_received Number of requests received\n"
        "# TYPE pp_request_received counter\n"
        "pp_request_received 4\n"
        "# HELP pp_connection_connected Number of concurrent connections\n"
        "# TYPE pp_connection_connected gauge\n"
        "pp_connection_connected 3\n"
        "# HELP pp_connection_minute Number of minutes clients have been connected\n"
        "# TYPE pp_connection_minute counter\n"
        "pp_connection_minute 4\n"
        "# HELP pp_message_received Number of messages received by the publish API\n"
        "# TYPE pp_message_received counter\n"
        "pp_message_received 2\n"
        "# HELP pp_message_sent Number of messages sent to clients\n"
        "# TYPE pp_message_sent counter\n"
        "pp_message_sent 3\n"
    )
    assert len(captured) == 610
    assert pushpin_exposition("pp_", Totals(4, 3, 4, 2, 3)) == captured
    assert pushpin_exposition("", Totals()) == PUSHPIN_ZERO


Scrape = Callable[..., Awaitable[tuple[int, dict[str, str], str]]]
MakeFn = Callable[..., Awaitable[tuple[Metrics, StatsState, Scrape]]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[MakeFn]:
    started: list[Metrics] = []

    async def _make(
        prefix: str = "", port: str | None = None
    ) -> tuple[Metrics, StatsState, Scrape]:
        (p,) = free_ports(1)
        cfg = dataclasses.replace(
            default_config(str(tmp_path)),
            prometheus_port=port if port is not None else f"127.0.0.1:{p}",
            prometheus_prefix=prefix,
        )
        state = StatsState(instance_id="gripd_1", report_interval=10)
        m = Metrics(cfg, stats=state)
        await m.start()
        started.append(m)

        async def scrape(
            path: str = "/metrics", method: str = "GET", **kw: Any
        ) -> tuple[int, dict[str, str], str]:
            async with (
                aiohttp.ClientSession() as s,
                s.request(method, f"http://127.0.0.1:{p}{path}", **kw) as r,
            ):
                return r.status, dict(r.headers), await r.text()

        return m, state, scrape

    yield _make
    for m in started:
        await m.stop()


async def test_scrape_any_path(make: MakeFn) -> None:
    m, _, scrape = await make()
    for path in ("/", "/metrics", "/anything/at/all?x=1"):
        status, headers, body = await scrape(path)
        assert status == 200
        assert headers["Content-Type"] == "text/plain"
        assert headers["Connection"] == "close"
        assert body.startswith(PUSHPIN_ZERO)
    status, _, body = await scrape("/", "POST", data=b"x" * 100)
    assert status == 200 and body.startswith(PUSHPIN_ZERO)
    status, headers, body = await scrape("/", "HEAD")
    assert status == 200 and body == ""
    assert int(headers["Content-Length"]) == len(m.exposition())


async def test_pushpin_values_follow_the_stats_state(make: MakeFn) -> None:
    _, state, scrape = await make(prefix="pp_")
    state.request_received(0.0)
    state.connection_opened("c", 0.0)
    state.message_received(0.0)
    state.delivered("a", None, "http-response", 2, 0.0)
    _, _, body = await scrape()
    lines = [ln for ln in body.splitlines() if ln.startswith("pp_") and " " in ln]
    assert lines[:5] == [
        "pp_request_received 1",
        "pp_connection_connected 1",
        "pp_connection_minute 1",
        "pp_message_received 1",
        "pp_message_sent 2",
    ]


async def test_gripd_metrics(make: MakeFn) -> None:
    m, _, scrape = await make(prefix="pp_")
    m.connection_opened("1", "127.0.0.1", "http")
    m.connection_opened("2", "127.0.0.1", "http")
    m.connection_opened("3", "127.0.0.1", "ws")
    m.connection_closed("2")
    m.connection_closed("unknown")
    m.subscribed("a", "stream", True)
    m.subscribed("a", "response", False)
    m.subscribed("b", "stream", True)
    m.unsubscribed("b", "stream", True)
    m.message_received("a", "zmq-pull")
    m.message_received("a", "zmq-pull")
    m.message_received("a", "http")
    m.delivered("a", None, "http-stream", 7)
    m.dropped("slow_client")
    m.dropped("bad_item", 3)
    m.observe_origin_latency(0.02)
    m.observe_origin_latency(3.0)
    _, _, body = await scrape()
    samples = dict(ln.rsplit(" ", 1) for ln in body.splitlines() if ln and not ln.startswith("#"))
    want = {
        'pp_gripd_connections{transport="http"}': "1.0",
        'pp_gripd_connections{transport="ws"}': "1.0",
        'pp_gripd_subscriptions{mode="stream"}': "1.0",
        'pp_gripd_subscriptions{mode="response"}': "1.0",
        'pp_gripd_subscriptions{mode="ws"}': "0.0",
        "pp_gripd_channels": "1.0",
        'pp_gripd_publish_received_total{source="zmq-pull"}': "2.0",
        'pp_gripd_publish_received_total{source="http"}': "1.0",
        'pp_gripd_publish_received_total{source="command"}': "0.0",
        'pp_gripd_delivered_total{transport="http-stream"}': "7.0",
        'pp_gripd_dropped_total{reason="slow_client"}': "1.0",
        'pp_gripd_dropped_total{reason="bad_item"}': "3.0",
        "pp_gripd_slow_client_drops_total": "1.0",
        "pp_gripd_origin_request_duration_seconds_count": "2.0",
        'pp_gripd_origin_request_duration_seconds_bucket{le="0.025"}': "1.0",
        'pp_gripd_origin_request_duration_seconds_bucket{le="+Inf"}': "2.0",
    }
    assert {k: samples.get(k) for k in want} == want


async def test_invalid_prefix_is_sanitised_for_gripd_metrics(make: MakeFn) -> None:
    _, _, scrape = await make(prefix="my-app.")
    _, _, body = await scrape()
    assert "my-app.request_received 0\n" in body  # Pushpin prints the raw prefix
    assert 'my_app_gripd_connections{transport="http"} 0.0' in body


async def test_ipc_port(tmp_path: Path, make: MakeFn) -> None:
    path = tmp_path / "prom.sock"
    m, _, _ = await make(port=f"ipc://{path}")
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert PUSHPIN_ZERO.encode() in data
    await m.stop()
    assert not path.exists()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    ],
    ids=["no-request-line", "bad-length", "body-too-large", "head-too-large"],
)
async def test_bad_requests_are_closed_without_answer(make: MakeFn, request_bytes: bytes) -> None:
    m, _, scrape = await make()
    port = m.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes)
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        data = b""
    writer.close()
    assert data == b""
    status, _, _ = await scrape()  # and it keeps serving
    assert status == 200


async def test_empty_port_serves_nothing(tmp_path: Path) -> None:
    cfg = dataclasses.replace(default_config(str(tmp_path)), prometheus_port="")
    m = Metrics(cfg, stats=StatsState(instance_id="x"))
    await m.start()
    assert m.port is None
    await m.stop()


async def test_port_in_use_raises(make: MakeFn, tmp_path: Path) -> None:
    m, _, _ = await make()
    cfg = dataclasses.replace(default_config(str(tmp_path)), prometheus_port=f"127.0.0.1:{m.port}")
    other = Metrics(cfg, stats=StatsState(instance_id="x"))
    with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ \(prometheus_port\)"):
        await other.start()


def test_event_series_expose_as_prometheus_client_objects_would() -> None:
    """gripd's per-event series are plain numbers turned into families at scrape time; the text
    is what prometheus_client's Counter/Gauge objects give for the same events (creation times
    aside), including a label value first seen late."""
    import re

    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    m = Metrics(default_config("/tmp"), stats=StatsState(instance_id="x"))
    ref = CollectorRegistry(auto_describe=True)
    conns = Gauge("gripd_connections", "Open client connections", ["transport"], registry=ref)
    subs = Gauge(
        "gripd_subscriptions", "Subscriptions held (subscriber x channel)", ["mode"], registry=ref
    )
    chans = Gauge("gripd_channels", "Channels with local subscribers", registry=ref)
    pubs = Counter(
        "gripd_publish_received", "Publish items received, by input", ["source"], registry=ref
    )
    dels = Counter(
        "gripd_delivered",
        "Items delivered to subscribers, by transport",
        ["transport"],
        registry=ref,
    )
    for t in ("http", "ws"):
        conns.labels(t)
    for mode in ("response", "stream", "ws"):
        subs.labels(mode)
    for src in ("http", "zmq-pull", "zmq-sub", "command"):
        pubs.labels(src)
    for d in ("http-response", "http-stream", "ws-message"):
        dels.labels(d)

    m.connection_opened("1", "p", "http")
    m.connection_opened("2", "p", "ws")
    m.connection_opened("2", "p", "http")  # upgraded the other way: moves
    m.connection_closed("1")
    conns.labels("http").inc(), conns.labels("ws").inc(), conns.labels("ws").dec()
    conns.labels("http").inc(), conns.labels("http").dec()
    m.subscribed("a", "stream", True)
    m.subscribed("a", "response", False)
    m.unsubscribed("a", "response", False)
    subs.labels("stream").inc(), chans.inc()
    subs.labels("response").inc(), subs.labels("response").dec()
    m.message_received("a", "http")
    m.message_received("a", "later-input")
    pubs.labels("http").inc(), pubs.labels("later-input").inc()
    m.delivered("a", None, "http-stream", 5)
    dels.labels("http-stream").inc(5)

    def text(reg: CollectorRegistry, names: tuple[str, ...]) -> str:
        body = generate_latest(reg).decode()
        blocks = [b for b in body.split("# HELP ") if b.startswith(names)]
        return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", "# HELP ".join(["", *blocks]))

    names = (
        "gripd_connections",
        "gripd_subscriptions",
        "gripd_channels",
        "gripd_publish_received",
        "gripd_delivered",
    )
    got, want = text(m.registry, names), text(ref, names)
    assert got == want
    assert 'gripd_publish_received_total{source="later-input"} 1.0' in got


def test_origin_latency_exposes_as_a_prometheus_client_histogram_would() -> None:
    """The origin latency histogram is plain counts made into a family at scrape time; the
    text is a prometheus_client Histogram's for the same observations (creation time aside),
    bounds included (a value equal to a bound counts in that bucket)."""
    import re

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from gripd.io.observe.metrics import LATENCY_BUCKETS, LATENCY_HELP

    m = Metrics(default_config("/tmp"), stats=StatsState(instance_id="x"))
    ref = CollectorRegistry(auto_describe=True)
    name = "gripd_origin_request_duration_seconds"
    h = Histogram(name, LATENCY_HELP, buckets=LATENCY_BUCKETS, registry=ref)
    for v in (0.0, 0.001, 0.005, 0.0051, 0.3, 1.0, 59.9, 61.0, 200.0):
        m.observe_origin_latency(v)
        h.observe(v)

    def text(reg: CollectorRegistry) -> str:
        body = generate_latest(reg).decode()
        blocks = [b for b in body.split("# HELP ") if b.startswith(name)]
        return re.sub(r"_created \S+", "_created T", "# HELP ".join(["", *blocks]))

    assert text(m.registry) == text(ref)
    assert f'{name}_bucket{{le="0.005"}} 3.0' in text(m.registry)

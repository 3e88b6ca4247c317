"""The Prometheus endpoint (F44): Pushpin's five metrics, then gripd's own.

Any request on ``prometheus_port`` (``port``, ``addr:port`` or ``ipc://<path>``) gets ``200``
``text/plain`` with the exposition, and the connection is closed, as Pushpin 1.36 does
(SRC ``src/corelib/statsmanager.cpp`` ``prometheus_requestReady``). Three paths are gripd's
own: ``/status`` (the instance's status as JSON), ``/status.html`` (a page that shows it live)
and ``/status/slowest?n=N`` (the N backed-up connections with the most queued bytes, N from 1
to ``SLOWEST_MAX``), answered by :attr:`Metrics.status` (see :mod:`gripd.io.observe.status`).

Pushpin's five (``request_received``, ``connection_connected``, ``connection_minute``,
``message_received``, ``message_sent``, each with ``prometheus_prefix``) are written by hand,
byte for byte as Pushpin prints them: prometheus-client would add ``_total`` and ``_created``
to counters, which would break dashboards built on Pushpin. Their values are the totals kept by
:class:`gripd.core.stats.StatsState` (Pushpin's ``combinedReport``): ``connection_connected`` is
the most connections seen since the last stats report, and the connection and message values
stay 0 when ``stats_report_interval`` <= 0, as in Pushpin.

gripd's own metrics come after them from a private ``CollectorRegistry`` (no process-global
state) in the standard prometheus-client format, under the same prefix: connections by
transport, subscriptions by mode, channels, publishes received by input, deliveries by
transport, drops by reason, slow-client drops (in all, and, with the connections closed for
being slow, by route: at most ``ROUTE_LABELS_MAX`` route values, then ``OTHER_ROUTE``), the
bytes queued for a slow client each time a message is dropped for it, and the origin request
latency histogram.

When ``[gripd] bus`` names a Redis server the bus's state and counters follow, read from the bus
object at scrape time (:class:`BusCollector`): ``gripd_bus_connected`` and the
``gripd_bus_*_total`` counters. With the in-process bus these series are absent (there is no
connection to watch), so an alert on ``gripd_bus_connected == 0`` never fires for it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from gripd.core.config import Config
from gripd.core.http import HttpResponse, encode_full
from gripd.core.stats import PrometheusListen, StatsState, Totals, parse_prometheus_port
from gripd.io.inputs.zmq import BindError, os_reason, prepare_ipc_path
from gripd.io.netaddr import is_loopback_host
from gripd.io.observe.events import Delivery, Events, Mode, Transport
from gripd.io.observe.status import SLOWEST_MAX

log = logging.getLogger("gripd.metrics")

MAX_REQUEST_HEAD = 8192  # Pushpin's SimpleHttpServer(8192, 8192)
MAX_REQUEST_BODY = 8192
READ_TIMEOUT = 10.0

#: (name, type, help) in Pushpin's order and wording.
PUSHPIN_METRICS: tuple[tuple[str, str, str], ...] = (
    ("request_received", "counter", "Number of requests received"),
    ("connection_connected", "gauge", "Number of concurrent connections"),
    ("connection_minute", "counter", "Number of minutes clients have been connected"),
    ("message_received", "counter", "Number of messages received by the publish API"),
    ("message_sent", "counter", "Number of messages sent to clients"),
)

#: The bus counters: (key of ``RedisBus.counters``, metric name without ``_total``, help).
BUS_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("published", "bus_items_published", "Items this instance sent to the bus (Redis took them)"),
    (
        "received",
        "bus_items_received",
        "Items received from the bus for channels this instance holds",
    ),
    (
        "publish_failed",
        "bus_publish_failed",
        "Items that could not reach Redis and were delivered to this instance's subscribers only",
    ),
    (
        "decode_errors",
        "bus_decode_errors",
        "Messages in a bus channel dropped because they are not valid bus messages",
    ),
    ("reconnects", "bus_reconnects", "Times the bus connected again after losing Redis"),
    ("history_stored", "bus_history_stored", "Items the bus stored in channel history in Redis"),
    (
        "history_write_errors",
        "bus_history_write_errors",
        "Publishes whose items Redis refused to store in history (they were published anyway)",
    ),
    (
        "history_read_errors",
        "bus_history_read_errors",
        "History reads answered as gone because Redis did not answer in time",
    ),
    (
        "history_skipped",
        "bus_history_skipped",
        "Stored history entries skipped because they did not decode",
    ),
)
BUS_CONNECTED_HELP = (
    "1 while the bus is connected to Redis, 0 while it delivers locally only "
    "(absent with the in-process bus)"
)
CONNECTIONS_HELP = "Open client connections"
SUBSCRIPTIONS_HELP = "Subscriptions held (subscriber x channel)"
CHANNELS_HELP = "Channels with local subscribers"
PUBLISHES_HELP = "Publish items received, by input"
DELIVERED_HELP = "Items delivered to subscribers, by transport"

#: Buckets of ``gripd_slow_client_queued_bytes``: 4 KiB to 256 MiB (a connection is over
#: ``client_write_buffer_max``, 1 MiB by default, when it is observed).
QUEUED_BYTES_BUCKETS = tuple(
    float(kib << 10) for kib in (4, 16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536, 262144)
)
#: Distinct ``route`` label values of the slow-client counters; past it, ``OTHER_ROUTE``.
ROUTE_LABELS_MAX = 1000
OTHER_ROUTE = "(other)"

#: The status paths (loopback clients only); every other path is the exposition.
STATUS_PATHS = frozenset({"/status", "/status.html", "/status/slowest"})
SLOWEST_DEFAULT = 20  # connections /status/slowest lists without ?n=

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_HELP = "Time from sending a request to an origin until its response head"


def _metric_name_prefix(prefix: str) -> str:
    """``prefix`` made valid for metric names (Pushpin prints its five with the raw prefix)."""
    clean = re.sub(r"[^A-Za-z0-9_:]", "_", prefix)
    return "_" + clean if clean[:1].isdigit() else clean


def pushpin_exposition(prefix: str, totals: Totals) -> str:
    """Pushpin's five metrics as its handler prints them."""
    values = {
        "request_received": totals.request_received,
        "connection_connected": totals.connection_connected,
        "connection_minute": totals.connection_minute,
        "message_received": totals.message_received,
        "message_sent": totals.message_sent,
    }
    return "".join(
        f"# HELP {prefix}{name} {help_}\n"
        f"# TYPE {prefix}{name} {type_}\n"
        f"{prefix}{name} {values[name]}\n"
        for name, type_, help_ in PUSHPIN_METRICS
    )


class BusCollector:
    """The bus's ``connected`` flag and ``counters``, collected at scrape time.

    ``source()`` gives the bus (or None); a bus without both attributes (the in-process
    :class:`~gripd.io.bus.local.LocalBus`) yields nothing, so its series are absent."""

    def __init__(self, prefix: str, source: Callable[[], object | None]) -> None:
        self.prefix = prefix  # already made valid, ends with ``gripd_``
        self.source = source

    def describe(self) -> list[Metric]:
        """The names this collector may produce (the registry checks them for clashes)."""
        return self._families(False, {})

    def collect(self) -> Iterator[Metric]:
        bus = self.source()
        connected = getattr(bus, "connected", None)
        counters = getattr(bus, "counters", None)
        if not isinstance(connected, bool) or not isinstance(counters, dict):
            return iter(())
        return iter(self._families(connected, counters))

    def _families(self, connected: bool, counters: dict[str, int]) -> list[Metric]:
        out: list[Metric] = [
            GaugeMetricFamily(
                self.prefix + "bus_connected", BUS_CONNECTED_HELP, value=1 if connected else 0
            )
        ]
        for key, name, help_ in BUS_COUNTERS:
            out.append(
                CounterMetricFamily(self.prefix + name, help_, value=int(counters.get(key, 0)))
            )
        return out


class StatusSource(Protocol):
    """What answers ``/status``, ``/status.html`` and ``/status/slowest`` (a
    :class:`~.status.StatusBoard`)."""

    def json(self) -> bytes: ...
    def page(self) -> bytes: ...
    def slowest_json(self, n: int) -> bytes: ...


class _LatencyHistogram:
    """The origin latency histogram as plain counts, made into a family at scrape time: it is
    observed once per proxied request, and prometheus_client's Histogram takes a lock per
    observation (1.2 % of gripd's CPU on pass-through). Same exposition, ``_created`` included."""

    def __init__(self, name: str, buckets: tuple[float, ...], now: float) -> None:
        self.name = name
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, the last one +Inf
        self.sum = 0.0
        self.created = now

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def describe(self) -> list[Metric]:
        return self.collect()

    def collect(self) -> list[Metric]:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            # ``le`` as prometheus_client writes these bounds ("0.005", "1.0", "+Inf")
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
        family = HistogramMetricFamily(self.name, LATENCY_HELP, buckets=buckets, sum_value=self.sum)
        family.samples.append(Sample(self.name + "_created", {}, self.created))
        return [family]


class _EventCounts:
    """gripd's per-event series (connections, subscriptions, channels, publishes received,
    deliveries) kept as plain numbers and turned into metric families at scrape time.

    prometheus_client's metric objects take a lock on every ``inc``/``dec`` and another in
    ``labels()``: about 3 % of gripd's CPU on the long-poll path, where each poll moves five of
    these series. The exposition is the same as those objects gave (names, help, label order,
    the counters' ``_created`` series)."""

    def __init__(self, prefix: str, now: float) -> None:
        self.prefix = prefix
        self.connections: dict[str, int] = {"http": 0, "ws": 0}  # by transport
        self.subscriptions: dict[str, int] = {"response": 0, "stream": 0, "ws": 0}  # by mode
        self.channels = 0
        self.publishes: dict[str, int] = dict.fromkeys(
            ("http", "zmq-pull", "zmq-sub", "command"), 0
        )
        self.deliveries: dict[str, int] = dict.fromkeys(
            ("http-response", "http-stream", "ws-message"), 0
        )
        # a counter series' creation time, as prometheus_client reports it
        self.created: dict[tuple[str, str], float] = {
            **{("p", k): now for k in self.publishes},
            **{("d", k): now for k in self.deliveries},
        }

    def describe(self) -> list[Metric]:
        return self.collect()

    def collect(self) -> list[Metric]:
        p = self.prefix
        conns = GaugeMetricFamily(p + "connections", CONNECTIONS_HELP, labels=["transport"])
        for k, v in self.connections.items():
            conns.add_metric([k], v)
        subs = GaugeMetricFamily(p + "subscriptions", SUBSCRIPTIONS_HELP, labels=["mode"])
        for k, v in self.subscriptions.items():
            subs.add_metric([k], v)
        channels = GaugeMetricFamily(p + "channels", CHANNELS_HELP, value=self.channels)
        return [
            conns,
            subs,
            channels,
            self._counter("publish_received", PUBLISHES_HELP, "source", "p", self.publishes),
            self._counter("delivered", DELIVERED_HELP, "transport", "d", self.deliveries),
        ]

    def _counter(
        self, name: str, help_: str, label: str, kind: str, values: dict[str, int]
    ) -> Metric:
        family = CounterMetricFamily(self.prefix + name, help_, labels=[label])
        created = self.created
        for k, v in values.items():
            family.add_metric([k], v, created=created.get((kind, k)))
        return family

    def count(self, kind: str, values: dict[str, int], label: str, n: int, now: float) -> None:
        """Add ``n`` to a counter series, noting when a new label value's series began."""
        if label not in values:
            values[label] = 0
            self.created[(kind, label)] = now
        values[label] += n


class Metrics(Events):
    """Prometheus metrics as an ``Events`` sink plus the HTTP endpoint serving them.

    ``stats`` is the state whose totals give Pushpin's five metrics; its owner (normally the
    :class:`gripd.io.observe.stats.StatsPublisher`) feeds it events and drives its timers.
    """

    def __init__(self, config: Config, *, stats: StatsState) -> None:
        self.config = config
        self.stats = stats
        # The instance's bus (``connected``, ``counters`` when it is Redis), set by the runtime.
        self.bus: object | None = None
        self.prefix = config.prometheus_prefix
        self.registry = CollectorRegistry(auto_describe=True)
        p = _metric_name_prefix(self.prefix) + "gripd_"
        reg = self.registry
        self.counts = _EventCounts(p, time.time())
        reg.register(self.counts)
        self.drops = Counter(p + "dropped", "Items or deliveries dropped", ["reason"], registry=reg)
        self.slow_clients = Counter(
            p + "slow_client_drops",
            "Deliveries dropped because the client could not keep up",
            registry=reg,
        )
        self.slow_route_drops = Counter(
            p + "slow_client_route_drops",
            "Messages dropped for clients that could not keep up, by route",
            ["route"],
            registry=reg,
        )
        self.slow_route_closes = Counter(
            p + "slow_client_closes",
            "Client connections closed because they could not keep up "
            "(slow_client_policy = close), by route",
            ["route"],
            registry=reg,
        )
        self.slow_queued = Histogram(
            p + "slow_client_queued_bytes",
            "Bytes queued for a client connection when a message was dropped for it",
            buckets=QUEUED_BYTES_BUCKETS,
            registry=reg,
        )
        self._slow_routes: set[str] = set()  # route label values in use (bounded)
        self.origin_latency = _LatencyHistogram(
            p + "origin_request_duration_seconds", LATENCY_BUCKETS, time.time()
        )
        reg.register(self.origin_latency)
        reg.register(BusCollector(p, lambda: self.bus))
        self._conn_transport: dict[str, str] = {}
        # Answers /status and /status.html when set (by the runtime); else every path scrapes.
        self.status: StatusSource | None = None
        self._server: asyncio.Server | None = None
        self._unix_path: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, ipc: bool | None = None) -> None:
        """Listen on ``prometheus_port`` (nothing when it is empty). ``ipc`` False/True: only
        if it is a TCP port/``ipc://`` path (the app binds TCP first), None: always."""
        value = self.config.prometheus_port
        if not value or self._server is not None:
            return
        where: PrometheusListen = parse_prometheus_port(value)
        if ipc is not None and (where.path is not None) != ipc:
            return
        address = value if where.path is not None else f"{where.host or '*'}:{where.port}"
        try:
            if where.path is not None:
                # A unix server unlinks an existing socket file: never one a live process owns.
                prepare_ipc_path(where.path, value, "prometheus_port")
                self._server = await asyncio.start_unix_server(
                    self._serve, where.path, limit=MAX_REQUEST_HEAD
                )
                self._unix_path = where.path
            else:
                self._server = await asyncio.start_server(
                    self._serve,
                    host=where.host,
                    port=where.port,
                    reuse_address=True,
                    limit=MAX_REQUEST_HEAD,
                )
        except BindError:
            raise
        except OSError as e:
            # Pushpin logs this and carries on; a gripd that can't be scraped should say so loudly.
            raise BindError(address, "prometheus_port", os_reason(e)) from None
        log.info("prometheus metrics on %s", value)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
            self._unix_path = None

    @property
    def port(self) -> int | None:
        """The bound TCP port (useful when configured as 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return int(name[1]) if isinstance(name, tuple) else None

    # -- exposition --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The whole scrape body."""
        head = pushpin_exposition(self.prefix, self.stats.totals).encode()
        return head + generate_latest(self.registry)

    def observe_origin_latency(self, seconds: float) -> None:
        """Record one origin request's latency (request sent → response head received)."""
        self.origin_latency.observe(seconds)

    def answer(self, target: str, *, local: bool = True) -> HttpResponse:
        """The response for a request target: the status page, its JSON and the slowest
        connections at their paths, the exposition at any other (Pushpin answers every path
        with it). The status shows peers, channels and routes, so only ``local`` clients
        (loopback, or the ``ipc://`` socket) get it, wherever the port listens; scrapers from
        elsewhere still get metrics."""
        path, _, query = target.partition("?")
        status = self.status
        if status is None or path not in STATUS_PATHS:
            return HttpResponse(200, "OK", [("Content-Type", "text/plain")], self.exposition())
        if not local:
            body = b"The status page is served to loopback clients only.\n"
            return HttpResponse(403, "Forbidden", [("Content-Type", "text/plain")], body)
        if path == "/status.html":
            headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")]
            return HttpResponse(200, "OK", headers, status.page())
        json_headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if path == "/status":
            return HttpResponse(200, "OK", json_headers, status.json())
        n = slowest_count(query)
        if isinstance(n, str):
            body = n.encode() + b"\n"
            return HttpResponse(400, "Bad Request", [("Content-Type", "text/plain")], body)
        return HttpResponse(200, "OK", json_headers, status.slowest_json(n))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            if req is not None:
                method, target = req
                resp = self.answer(target, local=_is_local(writer.get_extra_info("peername")))
                writer.write(encode_full(resp, method=method, keep_alive=False))
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a scrape must never take the proxy down
            log.exception("prometheus: error answering a scrape")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- Events ------------------------------------------------------------------------------

    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        old = self._conn_transport.get(conn_id)
        counts = self.counts.connections
        if old is not None:
            counts[old] -= 1
        self._conn_transport[conn_id] = transport
        counts[transport] = counts.get(transport, 0) + 1

    def connection_closed(self, conn_id: str) -> None:
        transport = self._conn_transport.pop(conn_id, None)
        if transport is not None:
            self.counts.connections[transport] -= 1

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        subs = self.counts.subscriptions
        subs[mode] = subs.get(mode, 0) + 1
        if first:
            self.counts.channels += 1

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        subs = self.counts.subscriptions
        subs[mode] = subs.get(mode, 0) - 1
        if last:
            self.counts.channels -= 1

    def message_received(self, channel: str, source: str, blocks: int = -1) -> None:
        c = self.counts
        if source in c.publishes:
            c.publishes[source] += 1
        else:
            c.count("p", c.publishes, source, 1, time.time())

    def delivered(
        self, channel: str, item_id: str | None, transport: Delivery, count: int, blocks: int = -1
    ) -> None:
        c = self.counts
        if transport in c.deliveries:
            c.deliveries[transport] += count
        else:
            c.count("d", c.deliveries, transport, count, time.time())

    def dropped(self, reason: str, count: int = 1) -> None:
        self.drops.labels(reason).inc(count)
        if reason == "slow_client":
            self.slow_clients.inc(count)

    def slow_client(self, route: str, queued: int, closed: bool) -> None:
        self.dropped("slow_client")
        label = self._route_label(route)
        self.slow_route_drops.labels(label).inc()
        if closed:
            self.slow_route_closes.labels(label).inc()
        self.slow_queued.observe(queued)

    def _route_label(self, route: str) -> str:
        """``route``, or ``OTHER_ROUTE`` once ``ROUTE_LABELS_MAX`` other routes have a series
        (routes come from a file that can change: the label set stays bounded)."""
        routes = self._slow_routes
        if route in routes:
            return route
        if len(routes) >= ROUTE_LABELS_MAX:
            return OTHER_ROUTE
        routes.add(route)
        return route


def slowest_count(query: str) -> int | str:
    """``n`` of ``/status/slowest?n=N`` (``SLOWEST_DEFAULT`` without it), or the reason it is
    not usable: it must be one whole number from 1 to ``SLOWEST_MAX``."""
    try:
        values = parse_qs(query, keep_blank_values=True, strict_parsing=False).get("n")
    except ValueError:
        values = None
    if not values:
        return SLOWEST_DEFAULT
    text = values[0]
    if len(values) != 1 or not text.isascii() or not text.isdigit() or len(text) > 6:
        return f"n must be a whole number from 1 to {SLOWEST_MAX}"
    n = int(text)
    if not 1 <= n <= SLOWEST_MAX:
        return f"n must be a whole number from 1 to {SLOWEST_MAX} (got {n})"
    return n


def _is_local(peer: object) -> bool:
    """A loopback TCP peer, or a Unix socket one (whose peer name is not an address pair)."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return True
    return is_loopback_host(peer[0])


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """Read one request head (and a small body); its method and target, or None when it is
    unusable."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return None
    if len(head) > MAX_REQUEST_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
    if length < 0 or length > MAX_REQUEST_BODY:
        return None
    if length:
        await reader.readexactly(length)
    return parts[0], parts[1]

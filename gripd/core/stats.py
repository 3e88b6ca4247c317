"""Stats packets (F43) and the bookkeeping behind them and the Prometheus totals (F44).

Pure: every method takes ``now`` (seconds, any monotonic origin) and returns the packets to
publish; the adapter (``gripd.io.observe.stats``) owns the socket and the timers.

Behaviour follows Pushpin 1.36's ``StatsManager`` (SRC ``src/corelib/statsmanager.cpp``,
``src/corelib/packet/statspacket.cpp``), checked against packets captured from a running
Pushpin 1.36 handler:

- Wire format: one frame ``<type> T<tnetstring>``, or ``<type> J<json>`` with the keys sorted and
  no spaces (Qt's ``QJsonDocument::Compact`` of a ``QJsonObject``).
- ``conn`` on open and on every refresh; ``{id, unavailable}`` on close.
- ``sub`` when a (mode, channel) gains its first subscriber, when the subscriber count changes (at
  the next refresh tick, not at once), on every refresh; ``{mode, channel, unavailable}`` when the
  last one leaves - after ``subscription_linger`` for ``response`` mode (a long-poller likely
  comes back), at once for the others.
- A refresh is due ``3/4 * ttl`` after the last one (``SHOULD_PROCESS_TIME``).
- ``message`` per delivery batch per transport; ``activity``/``counts`` are summed and flushed
  ``ACTIVITY_DELAY`` after the first unflushed request.
- ``report`` every ``stats_report_interval``: ``connections`` is the most connections seen since
  the previous report, ``minutes`` counts each connection's first minute at once and then whole
  minutes as they pass. A report that is empty after being sent is dropped until new activity, so
  an idle proxy goes quiet. All report accounting is off when the interval is <= 0 (as Pushpin).

gripd has one stats instance (no proxy/handler split). Connections, counters and deliveries
may name a route (the route ``id``, as Pushpin's ``statsRoute``): ``conn`` packets then carry it
and each route gets its own ``report`` (Pushpin's per-route ``Report``); the Prometheus totals
are the sum over routes (its ``combinedReport``). Without a route, everything is counted under
the empty route.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from gripd.core import tnetstring
from gripd.core.errors import ConfigError
from gripd.core.publish import PublishItem

StatsFormat = Literal["tnetstring", "json"]
#: Field values a stats packet may hold.
Value = str | bytes | int | bool
#: ``(type, fields)``; ``type`` is ``conn``, ``sub``, ``message``, ``activity``, ``counts``,
#: ``report``. Field order is Pushpin's ``toVariant`` order (it only matters for tnetstring bytes).
Packet = tuple[str, dict[str, Value]]

ACTIVITY_DELAY = 0.1  # ACTIVITY_TIMEOUT, 100 ms
REFRESH_INTERVAL = 1.0  # the refresh timer of statsmanager.cpp
MINUTE = 60.0

#: The twelve byte/message counters every 1.36 report carries (always present, 0 when unused).
REPORT_COUNTERS: tuple[str, ...] = (
    "client-header-bytes-received",
    "client-header-bytes-sent",
    "client-content-bytes-received",
    "client-content-bytes-sent",
    "client-messages-received",
    "client-messages-sent",
    "server-header-bytes-received",
    "server-header-bytes-sent",
    "server-content-bytes-received",
    "server-content-bytes-sent",
    "server-messages-received",
    "server-messages-sent",
)


# --- encoding -----------------------------------------------------------------------------------


def encode_packet(packet: Packet, fmt: StatsFormat = "tnetstring") -> bytes:
    """The single ZeroMQ frame for ``packet``: ``<type> T<tnetstring>`` or ``<type> J<json>``."""
    ptype, fields = packet
    if fmt == "json":
        obj = {
            k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return ptype.encode() + b" J" + text.encode()
    return ptype.encode() + b" T" + tnetstring.dumps(fields)


# --- packet builders (statspacket.cpp toVariant) -------------------------------------------------


def _head(from_: str, route: str) -> dict[str, Value]:
    d: dict[str, Value] = {}
    if from_:
        d["from"] = from_
    if route:
        d["route"] = route
    return d


def conn_packet(
    from_: str, conn_id: str, *, type: str, peer: str, ssl: bool, ttl: int, route: str = ""
) -> Packet:
    """``conn``: a connection is there (sent on open and on each refresh)."""
    d = _head(from_, route)
    d["id"] = conn_id
    d["type"] = "ws" if type == "ws" else "http"
    if peer:
        d["peer-address"] = peer
    if ssl:
        d["ssl"] = True
    d["ttl"] = ttl
    return ("conn", d)


def conn_gone_packet(from_: str, conn_id: str, *, route: str = "") -> Packet:
    """``conn`` with ``unavailable``: the connection closed."""
    d = _head(from_, route)
    d["id"] = conn_id
    d["unavailable"] = True
    return ("conn", d)


def sub_packet(from_: str, mode: str, channel: str, *, ttl: int, subscribers: int) -> Packet:
    """``sub``: (mode, channel) has ``subscribers`` local subscribers."""
    d = _head(from_, "")
    d["mode"] = mode
    d["channel"] = channel
    d["ttl"] = ttl
    if subscribers >= 0:
        d["subscribers"] = subscribers
    return ("sub", d)


def unsub_packet(from_: str, mode: str, channel: str) -> Packet:
    """``sub`` with ``unavailable``: nobody holds (mode, channel) any more."""
    d = _head(from_, "")
    d["mode"] = mode
    d["channel"] = channel
    d["unavailable"] = True
    return ("sub", d)


def message_packet(
    from_: str,
    channel: str,
    item_id: str | None,
    transport: str,
    count: int,
    *,
    blocks: int = -1,
) -> Packet:
    """``message``: an item went to ``count`` subscribers over ``transport``."""
    d = _head(from_, "")
    d["channel"] = channel
    if item_id is not None:
        d["item-id"] = item_id
    d["count"] = max(count, 0)
    if blocks >= 0:
        d["blocks"] = blocks
    d["transport"] = transport
    return ("message", d)


def activity_packet(from_: str, count: int, *, route: str = "") -> Packet:
    """``activity``: ``count`` billable actions (requests) since the last one."""
    d = _head(from_, route)
    d["count"] = max(count, 0)
    return ("activity", d)


def counts_packet(from_: str, requests_received: int) -> Packet:
    """``counts``: requests received since the last one (Pushpin's handler forwards these)."""
    d = _head(from_, "")
    if requests_received > 0:
        d["requests-received"] = requests_received
    return ("counts", d)


@dataclass(slots=True)
class Report:
    """One route's report accumulator (statsmanager.cpp ``Report``); ``start`` in seconds."""

    start: float
    connections_max: int = 0
    connections_max_stale: bool = True
    minutes: int = 0
    received: int = 0
    sent: int = 0
    http_response_sent: int = 0
    blocks_received: int = -1
    blocks_sent: int = -1
    counters: dict[str, int] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return (
            self.connections_max == 0
            and self.minutes == 0
            and self.received == 0
            and self.sent == 0
            and self.http_response_sent == 0
            and self.blocks_received <= 0
            and self.blocks_sent <= 0
            and not any(self.counters.values())
        )


def report_packet(from_: str, report: Report, now: float, *, route: str = "") -> Packet:
    """``report`` for ``report`` as of ``now`` (``duration`` in ms since its start)."""
    d = _head(from_, route)
    d["connections"] = report.connections_max
    d["minutes"] = report.minutes
    d["received"] = report.received
    d["sent"] = report.sent
    d["http-response-sent"] = report.http_response_sent
    if report.blocks_received >= 0:
        d["blocks-received"] = report.blocks_received
    if report.blocks_sent >= 0:
        d["blocks-sent"] = report.blocks_sent
    d["duration"] = max(round((now - report.start) * 1000), 0)
    for name in REPORT_COUNTERS:
        d[name] = report.counters.get(name, 0)
    return ("report", d)


# --- bookkeeping --------------------------------------------------------------------------------


@dataclass(slots=True)
class Totals:
    """What Pushpin's Prometheus endpoint shows (its ``combinedReport``; F44)."""

    request_received: int = 0
    connection_connected: int = 0
    connection_minute: int = 0
    message_received: int = 0
    message_sent: int = 0


@dataclass(slots=True, init=False)
class _Conn:
    id: str
    type: str
    peer: str
    ssl: bool
    last_report: float
    route: str
    due: int  # the second of its next refresh (its bucket in StatsState._buckets)

    # An explicit __init__ (init=False): a compiled build (mypyc) compiles it; the one the
    # dataclass decorator generates stays interpreted and cost ~5x more per object.
    def __init__(
        self,
        id: str,
        type: str,
        peer: str,
        ssl: bool,
        last_report: float,
        route: str = "",
        due: int = -1,
    ) -> None:
        self.id = id
        self.type = type
        self.peer = peer
        self.ssl = ssl
        self.last_report = last_report
        self.route = route
        self.due = due


@dataclass(slots=True, init=False)
class _Sub:
    mode: str
    channel: str
    count: int
    lingering: bool
    due: int  # the second of its next refresh or linger expiry (StatsState._buckets)

    def __init__(
        self, mode: str, channel: str, count: int, lingering: bool = False, due: int = -1
    ) -> None:  # explicit: see _Conn
        self.mode = mode
        self.channel = channel
        self.count = count
        self.lingering = lingering
        self.due = due


class StatsState:
    """Connections, subscriptions and the report, as Pushpin's StatsManager keeps them.

    ``ttl`` and ``linger`` values are whole seconds as in pushpin.conf; ``report_interval`` <= 0
    turns report accounting off (and with it the Prometheus connection/message totals).
    """

    def __init__(
        self,
        *,
        instance_id: str,
        connection_ttl: int = 120,
        subscription_ttl: int = 60,
        subscription_linger: int = 60,
        report_interval: int = 10,
        now: float = 0.0,
    ) -> None:
        self.instance_id = instance_id
        self.connection_ttl = connection_ttl
        self.subscription_ttl = subscription_ttl
        self.subscription_linger = subscription_linger
        self.report_interval = report_interval
        self.conns: dict[str, _Conn] = {}
        self._per_route: dict[str, int] = {}  # open connections by route (kept with conns)
        self.subs: dict[tuple[str, str], _Sub] = {}
        self.reports: dict[str, Report] = {}  # route -> its report
        self.totals = Totals()
        self.activity: dict[str, int] = {}  # route -> billable actions since the last flush
        self.requests = 0
        # Connections (by id) and subscriptions (by (mode, channel)) by the second of their next
        # refresh or linger expiry. A connection is a request (as in Pushpin) and a long-poll
        # subscribes and lingers once per poll, so most entries are moved or removed long
        # before they are due: each move is O(1) and leaves nothing behind (a heap of
        # timers left one stale entry per request and per poll, ~110 MB after a minute of
        # 4,000 long-polls per second).
        self._buckets: dict[int, dict[str | tuple[str, str], _Conn | _Sub]] = {}
        self._start = now

    # -- scheduling --------------------------------------------------------------------------

    def _schedule(
        self, key: str | tuple[str, str], obj: _Conn | _Sub, due: float, soon: bool = False
    ) -> None:
        """Due at ``due`` (rounded up: never early, at most one refresh tick late), or with
        ``soon`` at the next tick."""
        self._unschedule(key, obj)
        self._bucket_add(key, obj, due, soon)

    def _bucket_add(
        self, key: str | tuple[str, str], obj: _Conn | _Sub, due: float, soon: bool = False
    ) -> None:
        """:meth:`_schedule` for an object that has no timer yet."""
        k = obj.due = int(due) if soon else -int(-due // 1)
        bucket = self._buckets.get(k)
        if bucket is None:
            bucket = self._buckets[k] = {}
        bucket[key] = obj

    def _unschedule(self, key: str | tuple[str, str], obj: _Conn | _Sub) -> None:
        bucket = self._buckets.get(obj.due)
        if bucket is not None and bucket.pop(key, None) is not None and not bucket:
            del self._buckets[obj.due]

    @property
    def _reporting(self) -> bool:
        return self.report_interval > 0

    @property
    def report(self) -> Report | None:
        """The report of the empty route (where route-less accounting goes)."""
        return self.reports.get("")

    def _get_report(self, now: float, route: str = "") -> Report:
        r = self.reports.get(route)
        if r is None:
            r = self.reports[route] = Report(start=now)
        return r

    def _route_count(self, route: str, delta: int) -> None:
        """Open connections on ``route`` change by ``delta`` (a route at 0 has no entry)."""
        per = self._per_route
        n = per.get(route, 0) + delta
        if n:
            per[route] = n
        else:
            del per[route]

    def _pop_conn(self, conn_id: str) -> _Conn | None:
        c = self.conns.pop(conn_id, None)
        if c is not None:
            self._route_count(c.route, -1)
        return c

    def _update_connections_max(self, now: float, route: str = "") -> None:
        """Per open and close: constant time (a count per route, and the total adjusted by
        the change), not a walk over every open connection."""
        r = self._get_report(now, route)
        n = self._per_route.get(route, 0)
        before = r.connections_max
        if r.connections_max_stale:
            r.connections_max = n
            r.connections_max_stale = False
        else:
            r.connections_max = max(r.connections_max, n)
        self.totals.connection_connected += r.connections_max - before

    def _add_minutes(self, mins: int, now: float, route: str = "") -> None:
        self._get_report(now, route).minutes += mins
        self.totals.connection_minute += mins

    def _update_minutes(self, c: _Conn, now: float) -> None:
        mins = int((now - c.last_report) // MINUTE)
        if mins > 0:
            c.last_report += mins * MINUTE  # only advance by what was counted
            self._add_minutes(mins, now, c.route)

    # -- connections -------------------------------------------------------------------------

    def connection_opened(
        self,
        conn_id: str,
        now: float,
        *,
        type: str = "http",
        peer: str = "",
        ssl: bool = False,
        route: str = "",
        packet: bool = True,
    ) -> list[Packet]:
        """A connection opened: its ``conn`` packet (none with ``packet`` False: nobody reads
        it); counts its first minute at once. An open ``conn_id`` is replaced (Pushpin: a
        request handed back for a retry)."""
        old = self._pop_conn(conn_id)
        if old is not None:
            self._unschedule(conn_id, old)
        c = _Conn(conn_id, type, peer, ssl, old.last_report if old else now, route)
        self.conns[conn_id] = c
        self._route_count(route, 1)
        self._bucket_add(conn_id, c, now + self._conn_interval)
        if self._reporting:
            if old is not None and old.route != route:
                self._update_connections_max(now, old.route)
            self._update_connections_max(now, route)
            if old is None:  # minutes are rounded up: count one now (not when replacing)
                self._add_minutes(1, now, route)
        return [self._conn_packet(c)] if packet else []

    def connection_moved(
        self, conn_id: str, route: str, now: float, packet: bool = True
    ) -> list[Packet]:
        """An open connection now counts on ``route`` (a held request moves to the handler's
        empty route): its ``conn`` packet again, as when Pushpin replaces a connection."""
        c = self.conns.get(conn_id)
        if c is None or c.route == route:
            return []
        old = c.route
        self._route_count(old, -1)
        self._route_count(route, 1)
        c.route = route
        if self._reporting:
            r = self.reports.get(old)
            if r is None or r.connections_max_stale:  # else leaving cannot raise the max
                self._update_connections_max(now, old)
            self._update_connections_max(now, route)
        return [self._conn_packet(c)] if packet else []

    def connection_closed(self, conn_id: str, now: float, packet: bool = True) -> list[Packet]:
        """A connection closed: ``conn`` with ``unavailable`` (nothing for an unknown id, or
        with ``packet`` False)."""
        c = self._pop_conn(conn_id)
        if c is None:
            return []
        self._unschedule(conn_id, c)
        if self._reporting:
            self._update_minutes(c, now)
            r = self.reports.get(c.route)
            if r is None or r.connections_max_stale:  # else a close cannot raise the max
                self._update_connections_max(now, c.route)
        return [conn_gone_packet(self.instance_id, conn_id, route=c.route)] if packet else []

    def has_connection(self, conn_id: str) -> bool:
        """Whether ``conn_id`` is open (Pushpin answers ``conncheck`` from this, F42)."""
        return conn_id in self.conns

    def _conn_packet(self, c: _Conn) -> Packet:
        return conn_packet(
            self.instance_id,
            c.id,
            type=c.type,
            peer=c.peer,
            ssl=c.ssl,
            ttl=self.connection_ttl,
            route=c.route,
        )

    @property
    def _conn_interval(self) -> float:
        return self.connection_ttl * 0.75  # SHOULD_PROCESS_TIME

    @property
    def _sub_interval(self) -> float:
        return self.subscription_ttl * 0.75

    # -- subscriptions -----------------------------------------------------------------------

    def subscribed(self, mode: str, channel: str, now: float) -> list[Packet]:
        """One more subscriber of (mode, channel)."""
        key = (mode, channel)
        s = self.subs.get(key)
        if s is None:
            s = self.subs[key] = _Sub(mode, channel, 1)
            self._schedule(key, s, now + self._sub_interval)
            return [self._sub_packet(s)]
        return self._set_count(s, s.count + 1, now)

    def unsubscribed(self, mode: str, channel: str, now: float) -> list[Packet]:
        """One subscriber of (mode, channel) left."""
        s = self.subs.get((mode, channel))
        if s is None or s.count <= 0:
            return []
        if s.count > 1:
            return self._set_count(s, s.count - 1, now)
        s.count = 0
        if mode == "response":
            # linger the unsubscribe in case the client long-polls again
            s.lingering = True
            self._schedule((mode, channel), s, now + self.subscription_linger)
            return []
        return self._remove_sub(s)

    def _set_count(self, s: _Sub, count: int, now: float) -> list[Packet]:
        old = s.count
        s.count = count
        if s.lingering:  # back from linger: announce at once
            s.lingering = False
            self._schedule((s.mode, s.channel), s, now + self._sub_interval)
            return [self._sub_packet(s)]
        if count != old:  # announce the new count at the next refresh tick
            self._schedule((s.mode, s.channel), s, now, soon=True)
        return []

    def _remove_sub(self, s: _Sub) -> list[Packet]:
        key = (s.mode, s.channel)
        del self.subs[key]
        self._unschedule(key, s)
        return [unsub_packet(self.instance_id, s.mode, s.channel)]

    def _sub_packet(self, s: _Sub) -> Packet:
        return sub_packet(
            self.instance_id, s.mode, s.channel, ttl=self.subscription_ttl, subscribers=s.count
        )

    # -- messages and activity ---------------------------------------------------------------

    def message_received(self, now: float, blocks: int = -1) -> None:
        """A publish item arrived (counted whether or not anyone holds its channel), under the
        empty route as Pushpin does; ``blocks`` as :func:`blocks_for`, -1 when not counted."""
        if self._reporting:
            r = self._get_report(now)
            r.received += 1
            if blocks > 0:
                r.blocks_received = max(r.blocks_received, 0) + blocks
            self.totals.message_received += 1

    def delivered(
        self,
        channel: str,
        item_id: str | None,
        transport: str,
        count: int,
        now: float,
        *,
        route: str = "",
        blocks: int = -1,
        packet: bool = True,
    ) -> list[Packet]:
        """An item went to ``count`` subscribers (of ``route``) over ``transport``: its
        ``message`` packet, whose ``blocks`` is ``blocks * count`` when blocks are counted
        (none without ``packet``: nobody listens to the stats socket)."""
        if self._reporting and count > 0:
            r = self._get_report(now, route)
            r.sent += count
            if transport == "http-response":
                r.http_response_sent += count
            if blocks > 0:
                r.blocks_sent = max(r.blocks_sent, 0) + blocks * count
            self.totals.message_sent += count
        if not packet:
            return []
        total = blocks * count if blocks != -1 else -1
        return [message_packet(self.instance_id, channel, item_id, transport, count, blocks=total)]

    def request_received(self, now: float) -> bool:
        """A request arrived (``requests-received``). True when this starts a new batch, i.e.
        the caller should call :meth:`flush_activity` ``ACTIVITY_DELAY`` later."""
        start = not self.activity and self.requests == 0
        self.requests += 1
        self.totals.request_received += 1
        return start

    def add_activity(self, route: str, count: int = 1) -> bool:
        """Billable actions on ``route`` (Pushpin counts one per request or WebSocket as it
        is routed). True when this starts a new batch, as :meth:`request_received`."""
        activity = self.activity
        start = not activity and self.requests == 0
        activity[route] = activity.get(route, 0) + count
        return start

    def add_counter(self, name: str, count: int, now: float, route: str = "") -> None:
        """Add to one of :data:`REPORT_COUNTERS` (bytes/messages to clients and origins)."""
        if name not in REPORT_COUNTERS:
            raise ValueError(f"unknown stats counter: {name}")
        if self._reporting:
            r = self._get_report(now, route)
            r.counters[name] = r.counters.get(name, 0) + count

    def flush_activity(self) -> list[Packet]:
        """The pending ``activity`` and ``counts`` packets."""
        out = [
            activity_packet(self.instance_id, n, route=route) for route, n in self.activity.items()
        ]
        if self.requests:
            out.append(counts_packet(self.instance_id, self.requests))
        self.activity = {}
        self.requests = 0
        return out

    # -- timers ------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Packet]:
        """Refreshes and linger expiries due at ``now`` (call every ``REFRESH_INTERVAL``)."""
        out: list[Packet] = []
        buckets = self._buckets
        for k in sorted(k for k in buckets if k <= now):  # a key per second of the longest ttl
            for key, obj in buckets.pop(k).items():
                if isinstance(obj, _Conn):
                    self._schedule(key, obj, now + self._conn_interval)
                    if self._reporting:
                        self._update_minutes(obj, now)
                    out.append(self._conn_packet(obj))
                elif obj.lingering:
                    obj.due = -1  # popped with its bucket
                    out.extend(self._remove_sub(obj))
                else:
                    self._schedule(key, obj, now + self._sub_interval)
                    out.append(self._sub_packet(obj))
        return out

    def make_report(self, now: float) -> list[Packet]:
        """One ``report`` packet per route (none for a route while nothing happened on it since
        an empty one was sent)."""
        if not self._reporting:
            return []
        out: list[Packet] = []
        for route, r in list(self.reports.items()):
            if r.connections_max_stale:
                self._update_connections_max(now, route)
            out.append(report_packet(self.instance_id, r, now, route=route))
            r.start = now
            r.connections_max_stale = True
            r.minutes = r.received = r.sent = r.http_response_sent = 0
            r.blocks_received = r.blocks_sent = -1
            r.counters.clear()
            if r.is_empty():
                del self.reports[route]
        self.totals.connection_connected = sum(x.connections_max for x in self.reports.values())
        return out


def blocks_for(size: int, block_size: int) -> int:
    """Pushpin's ``blocksForData``: ``size`` in ``message_block_size`` blocks (rounded up), or
    -1 when block counting is off (``block_size`` <= 0)."""
    if block_size <= 0:
        return -1
    return (size + block_size - 1) // block_size


def item_blocks(item: PublishItem, block_size: int) -> int:
    """Blocks of a published item for stats (Pushpin's ``largestBlocks``): its ``size`` when
    the publisher gave one, else its largest format's body; -1 when block counting is off."""
    if block_size <= 0:
        return -1
    if item.size is not None:
        return blocks_for(item.size, block_size)
    sizes = []
    if item.http_response is not None:
        sizes.append(len(item.http_response.body or b""))
    if item.http_stream is not None:
        sizes.append(len(item.http_stream.content))
    if item.ws_message is not None:
        sizes.append(len(item.ws_message.content))
    return blocks_for(max(sizes), block_size) if sizes else -1


def delivery_blocks(size: int | None, body: bytes | None, block_size: int) -> int:
    """Blocks of one delivery of an item's format: its ``size`` when the publisher gave one,
    else the format's body (Pushpin counts a ``body-patch`` as empty); -1 when off."""
    if block_size <= 0:
        return -1
    return blocks_for(size if size is not None else len(body or b""), block_size)


def default_instance_id(pid: int) -> str:
    """gripd's ``from`` value, ``gripd_<pid>`` (Pushpin: ``pushpin-handler_<pid>``)."""
    return f"gripd_{pid}"


@dataclass(frozen=True, slots=True)
class PrometheusListen:
    """Where the metrics endpoint listens: ``host``/``port``, or a UNIX socket ``path``."""

    host: str | None = None
    port: int = 0
    path: str | None = None


def parse_prometheus_port(value: str) -> PrometheusListen:
    """``prometheus_port`` (F44): ``port``, ``addr:port`` or ``ipc://<path>``.

    Raises ConfigError for a port that is not a number in 1-65535 (Pushpin would silently listen
    on port 0, i.e. anywhere)."""
    value = value.strip()
    if value.startswith("ipc://"):
        path = value[len("ipc://") :]
        if not path:
            raise ConfigError(f"prometheus_port: empty ipc path: {value!r}")
        return PrometheusListen(path=path)
    host: str | None = None
    port_s = value
    pos = value.rfind(":")
    if pos >= 0:
        host, port_s = value[:pos], value[pos + 1 :]
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        host = host or None
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"prometheus_port: bad port: {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"prometheus_port: bad port: {value!r}")
    return PrometheusListen(host=host, port=port)


def header_bytes_estimate(code: int, reason: str, headers: list[tuple[str, str]]) -> int:
    """Pushpin's ``estimateResponseHeaderBytes`` (``client-header-bytes-sent``): the status
    code's digits, the reason and every header name and value, without separators."""
    return len(str(code)) + len(reason) + sum(len(k) + len(v) for k, v in headers)


def encoded_head_bytes_estimate(head: bytes) -> int:
    """:func:`header_bytes_estimate` of an encoded ``HTTP/1.x`` response head (status line and
    header lines, each ending in CRLF, then the empty line)."""
    lines = head.count(b"\r\n") - 1  # status line and header lines
    if lines < 1:
        return 0
    # "HTTP/1.1 " and the space after the code, then ": " on each header line, and every CRLF
    return len(head) - 10 - 2 * (lines - 1) - 2 * (lines + 1)

"""The live status page's data: what ``GET /status`` returns on the Prometheus port.

Two halves, so that answering a request never walks the connections:

- :class:`StatusReporter` runs in every process that serves clients (the single process, or
  each worker). Every ``REPORT_INTERVAL`` seconds, while some client connection is backed up,
  it sends the ``SLOWEST_MAX`` connections with the most queued bytes, and the routes it loaded,
  to the :class:`StatusBoard` (directly in a single process, as a ``status`` message over the
  link from a worker). A connection is *backed up* while its transport is paused for writing
  (more than the listener's write high-water mark waits for the client): the listener keeps
  those in :attr:`gripd.io.listener.flusher.Flusher.backed_up`, so the set is small and costs
  nothing while clients keep up.
- :class:`StatusBoard` lives once per instance (next to Prometheus, in the single process or in
  the hub). It is an ``Events`` sink for the channel and publish counts, reads the connection
  counts the Prometheus metrics keep, samples its counters every ``SAMPLE_INTERVAL`` seconds
  into a ring buffer of ``SAMPLES`` entries (the rate chart), and keeps the latest reports.
  :meth:`StatusBoard.snapshot` only reads these: a request costs the same whatever the load
  (the busiest channels are ranked at most every ``TOP_CHANNELS_MAX_AGE`` seconds, and only
  while there are at most ``TOP_CHANNELS_SCAN_MAX`` channels). ``/status`` shows the
  ``SLOW_TOP`` slowest connections of the instance, ``/status/slowest?n=N``
  (:meth:`StatusBoard.slowest_json`) up to ``SLOWEST_MAX``.

Nothing of this runs unless ``prometheus_port`` is set, except the backed-up set itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import importlib.resources
import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gripd import __version__, build
from gripd.io.observe.events import Delivery, Events, Mode

if TYPE_CHECKING:
    from gripd.io.listener.conn import ClientConn
    from gripd.io.observe.metrics import Metrics

SAMPLE_INTERVAL = 5.0  # seconds between two samples of the counters (the chart's step)
SAMPLES = 120  # samples kept: ten minutes at SAMPLE_INTERVAL
REPORT_INTERVAL = 2.0  # seconds between two slow-connection reports from a serving process
SLOW_TOP = 10  # connections shown in /status (per instance)
SLOWEST_MAX = 100  # connections reported per process, and the most /status/slowest lists
TOP_CHANNELS = 5  # channels shown with their subscriber counts
TOP_CHANNELS_SCAN_MAX = 10_000  # above this many channels the top list is not computed
TOP_CHANNELS_MAX_AGE = 2.0  # seconds a computed top list is shown before it is computed again

Report = dict[str, Any]  # what a serving process sends: {"slow": [...], "routes": {...}}
Snapshot = dict[str, Any]  # the /status JSON document


def _route_id(conn: ClientConn) -> str:
    """The route of the request the connection serves now (a hold, a session), or ""."""
    route = getattr(conn.handler, "route", None)
    rid = getattr(route, "id", None)
    return rid if isinstance(rid, str) else ""


def slowest(
    backed_up: Mapping[ClientConn, float], now: float, top: int = SLOW_TOP
) -> list[dict[str, Any]]:
    """The ``top`` backed-up connections with the most queued bytes, as report entries; a
    connection that serves a hold (stream, WebSocket) also says how many messages it missed."""
    conns = heapq.nlargest(top, backed_up, key=lambda c: c.buffered())
    out: list[dict[str, Any]] = []
    for c in conns:
        entry: dict[str, Any] = {
            "id": c.id,
            "route": _route_id(c),
            "peer": c.peer,
            "transport": "ws" if c.raw_sink is not None else "http",
            "queued": c.buffered(),
            "age": round(max(now - backed_up[c], 0.0), 1),
        }
        dropped = getattr(c.handler, "dropped", None)
        if isinstance(dropped, int):
            entry["dropped"] = dropped
        out.append(entry)
    return out


class StatusReporter:
    """A serving process's part: reports its slowest connections and its routes.

    ``routes()`` gives ``{"file", "entries", "loaded"}``; ``send`` takes a report. A report is
    sent when the routes changed, and every ``interval`` while connections are backed up (and
    once more when none is left, so the board forgets them)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        backed_up: Mapping[ClientConn, float],
        routes: Callable[[], dict[str, Any]],
        send: Callable[[Report], None],
        *,
        interval: float = REPORT_INTERVAL,
    ) -> None:
        self.loop = loop
        self.backed_up = backed_up
        self.routes = routes
        self.send = send
        self.interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._slow_sent = False
        self._routes_sent: dict[str, Any] | None = None

    def start(self) -> None:
        if self._timer is None:
            self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def routes_changed(self) -> None:
        """The routes were (re)loaded: report them now rather than at the next tick."""
        if self._timer is not None:
            self.report()

    def report(self) -> None:
        """Send what changed (nothing when nothing did)."""
        out: Report = {}
        if self.backed_up or self._slow_sent:
            out["slow"] = slowest(self.backed_up, self.loop.time(), SLOWEST_MAX)
            out["backed_up"] = len(self.backed_up)
            self._slow_sent = bool(self.backed_up)
        routes = self.routes()
        if routes != self._routes_sent:
            out["routes"] = routes
            self._routes_sent = routes
        if out:
            self.send(out)

    def _tick(self) -> None:
        self._timer = self.loop.call_later(self.interval, self._tick)
        self.report()


class StatusBoard(Events):
    """The instance's status: counters, sampled rates and the serving processes' reports.

    The runtime sets ``workers`` (with workers, the hub's view of them) and feeds reports with
    :meth:`worker_report`; ``metrics`` gives the open connections and the bus."""

    def __init__(self, metrics: Metrics, loop: asyncio.AbstractEventLoop) -> None:
        self.metrics = metrics
        self.loop = loop
        self.started = time.time()
        self.build = build.describe()  # read once: it walks the package's files
        self.workers: Callable[[], dict[str, Any]] = self._single_process
        self.subscriptions: dict[str, int] = {"response": 0, "stream": 0, "ws": 0}
        self.channel_subs: dict[str, int] = {}
        self.published = 0
        self.delivered_by: dict[str, int] = {"http-response": 0, "http-stream": 0, "ws-message": 0}
        self.delivered_total = 0
        self.dropped_by: dict[str, int] = {}
        self.dropped_total = 0
        # (unix time, published/s, delivered/s, requests/s) per SAMPLE_INTERVAL
        self.samples: deque[tuple[float, float, float, float]] = deque(maxlen=SAMPLES)
        self.top_channels: list[str] | None = []  # names; None: too many channels to rank
        self._top_at = -1e9  # loop time of the last top_channels
        # worker -> (its slowest connections, how many are backed up, loop time of the report)
        self.slow: dict[int, tuple[list[dict[str, Any]], int, float]] = {}
        self.routes: dict[int, dict[str, Any]] = {}  # worker -> its last routes report
        self._last: tuple[float, int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._page: bytes | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start sampling (the first sample is the baseline of the first rate); the page is read
        now, at start, so that no request waits on the disk."""
        if self._page is None:
            self._page = load_page()
        if self._timer is None:
            self.sample()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sample(self) -> None:
        """Take one sample of the counters (the rates since the previous one)."""
        self._timer = self.loop.call_later(SAMPLE_INTERVAL, self.sample)
        now = self.loop.time()
        cur = (now, self.published, self.delivered_total, self._requests())
        last = self._last
        self._last = cur
        if last is not None and now > last[0]:
            dt = now - last[0]
            self.samples.append(
                (
                    round(time.time(), 1),
                    round((cur[1] - last[1]) / dt, 2),
                    round((cur[2] - last[2]) / dt, 2),
                    round((cur[3] - last[3]) / dt, 2),
                )
            )

    def _top(self) -> list[dict[str, Any]] | None:
        """The busiest channels with their subscribers now. Which ones is decided at most every
        ``TOP_CHANNELS_MAX_AGE`` seconds, and never over more than ``TOP_CHANNELS_SCAN_MAX``
        channels (None then: not worth a pause of the event loop)."""
        now = self.loop.time()
        subs = self.channel_subs
        if now - self._top_at >= TOP_CHANNELS_MAX_AGE:
            self._top_at = now
            if len(subs) > TOP_CHANNELS_SCAN_MAX:
                self.top_channels = None
            else:
                self.top_channels = heapq.nlargest(TOP_CHANNELS, subs, key=subs.__getitem__)
        if self.top_channels is None:
            return None
        names = sorted((ch for ch in self.top_channels if ch in subs), key=lambda c: -subs[c])
        return [{"channel": ch, "subscribers": subs[ch]} for ch in names]

    def _requests(self) -> int:
        return self.metrics.stats.totals.request_received

    # -- reports from the serving processes --------------------------------------------------

    def worker_report(self, worker: int, report: Report) -> None:
        """A serving process's report (see :class:`StatusReporter`)."""
        if "slow" in report:
            slow = list(report["slow"])
            if slow:
                count = int(report.get("backed_up", len(slow)))
                self.slow[worker] = (slow, count, self.loop.time())
            else:
                self.slow.pop(worker, None)
        if "routes" in report:
            self.routes[worker] = dict(report["routes"])

    def worker_gone(self, worker: int) -> None:
        """A worker exited: its connections are gone (its routes report stays until the new
        one loads its own)."""
        self.slow.pop(worker, None)

    # -- Events ------------------------------------------------------------------------------

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        self.subscriptions[mode] = self.subscriptions.get(mode, 0) + 1
        subs = self.channel_subs
        subs[channel] = subs.get(channel, 0) + 1

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        self.subscriptions[mode] = max(self.subscriptions.get(mode, 0) - 1, 0)
        subs = self.channel_subs
        n = subs.get(channel, 0) - 1
        if n > 0:
            subs[channel] = n
        else:
            subs.pop(channel, None)

    def message_received(self, channel: str, source: str, blocks: int = -1) -> None:
        self.published += 1

    def delivered(
        self, channel: str, item_id: str | None, transport: Delivery, count: int, blocks: int = -1
    ) -> None:
        self.delivered_by[transport] = self.delivered_by.get(transport, 0) + count
        self.delivered_total += count

    def dropped(self, reason: str, count: int = 1) -> None:
        self.dropped_by[reason] = self.dropped_by.get(reason, 0) + count
        self.dropped_total += count

    # -- the document ------------------------------------------------------------------------

    def _single_process(self) -> dict[str, Any]:
        up = round(time.time() - self.started, 1)
        proc = {"index": 0, "pid": os.getpid(), "restarts": 0, "up": up, "alive": True}
        return {"mode": "single", "pid": os.getpid(), "count": 1, "processes": [proc]}

    def _routes(self) -> dict[str, Any]:
        """The newest routes report (workers load the same file; the last load wins)."""
        reports: list[dict[str, Any]] = list(self.routes.values())
        if not reports:
            return {"source": None, "file": None, "entries": 0, "loaded": None}
        newest: dict[str, Any] = max(reports, key=lambda r: float(r.get("loaded") or 0.0))
        return dict(newest)

    def _bus(self) -> dict[str, Any]:
        bus = self.metrics.bus
        connected = getattr(bus, "connected", None)
        counters = getattr(bus, "counters", None)
        if isinstance(connected, bool) and isinstance(counters, dict):
            return {"kind": "redis", "connected": connected, "counters": dict(counters)}
        return {"kind": "local", "connected": None, "counters": {}}

    def _slowest(self, top: int = SLOW_TOP) -> tuple[list[dict[str, Any]], int]:
        """The instance's ``top`` slowest connections (as last reported, their age brought up
        to now) and how many are backed up."""
        now = self.loop.time()
        merged: list[dict[str, Any]] = []
        total = 0
        for worker, (entries, count, at) in self.slow.items():
            total += count
            since = max(now - at, 0.0)
            merged.extend(
                {**e, "age": round(float(e.get("age", 0.0)) + since, 1), "worker": worker}
                for e in entries
            )
        merged.sort(key=lambda e: e.get("queued", 0), reverse=True)
        return merged[:top], total

    def snapshot(self) -> Snapshot:
        """The whole ``/status`` document, from counters and precomputed samples only."""
        conns = dict(self.metrics.counts.connections)
        slow, backed_up = self._slowest()
        return {
            "version": __version__,
            "build": self.build,
            "time": round(time.time(), 3),
            "uptime": round(time.time() - self.started, 1),
            "connections": {**conns, "total": sum(conns.values())},
            "subscriptions": dict(self.subscriptions),
            "channels": {"count": len(self.channel_subs), "top": self._top()},
            "totals": {
                "requests": self._requests(),
                "published": self.published,
                "delivered": self.delivered_total,
                "delivered_by_transport": dict(self.delivered_by),
                "dropped": self.dropped_total,
                "dropped_by_reason": dict(self.dropped_by),
            },
            "rates": {
                "interval": SAMPLE_INTERVAL,
                "window": SAMPLE_INTERVAL * SAMPLES,
                "samples": [
                    {"t": t, "published": p, "delivered": d, "requests": r}
                    for t, p, d, r in self.samples
                ],
            },
            "slow": {"backed_up": backed_up, "top": slow},
            "routes": self._routes(),
            "bus": self._bus(),
            "workers": self.workers(),
        }

    def json(self) -> bytes:
        return json.dumps(self.snapshot(), separators=(",", ":")).encode()

    def slowest_json(self, n: int) -> bytes:
        """``/status/slowest?n=N``: the instance's ``n`` slowest connections (at most
        ``SLOWEST_MAX``), from the last reports only."""
        top, backed_up = self._slowest(max(1, min(n, SLOWEST_MAX)))
        doc = {
            "time": round(time.time(), 3),
            "interval": REPORT_INTERVAL,
            "backed_up": backed_up,
            "connections": top,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def page(self) -> bytes:
        """The self-contained HTML page (shipped in the package, read once)."""
        if self._page is None:
            self._page = load_page()
        return self._page


def load_page() -> bytes:
    """``status_page.html`` from the package."""
    res = importlib.resources.files(__package__ or "gripd.io.observe").joinpath("status_page.html")
    with contextlib.suppress(OSError):
        return res.read_bytes()
    return b"<!doctype html><title>gripd status</title><p>status page missing; see /status\n"

"""The worker-hub bus: one instance's hub process and its worker processes.

The hub owns the publish inputs; each worker owns client connections and their subscriptions.
They talk over one Unix socket pair per worker, in length-prefixed pickle frames (both ends are
this program, started by the hub, so pickle is safe here; it is never used for anything read
from the network). Everything one side writes in one loop tick goes out as one frame.

The publish pipeline (dedup, sequencing, rate limit: F32–F34) runs once, in the hub, on the
instance's channel interest, exactly as in a single process; workers get its output. The
sequencer's last ids are replicated to every worker (``lid`` messages, sent before the items
that set them), because a worker checks a new hold's prev-id against them (F23, F26) at once.

Worker -> hub: ``("gained", [channels])`` / ``("lost", [channels])`` (the worker's channel
interest, so the hub sends a channel's items only to workers that hold it), ``("ev", ...)``
(connections, subscriptions, deliveries and drops, for the instance's stats and metrics and
the instance's channel interest; see :class:`WorkerLink`), ``("forget", channel)`` (a hold saw
an inconsistent last id), ``("ready", error)`` once its listeners are bound, ``("status",
report)`` (its slowest connections and its routes, for the status page: see
:class:`gripd.io.observe.status.StatusReporter`).

Hub -> worker: ``("items", source, [PublishItem])``, ``("lid", channel, id | None)``,
``("lidclear",)``, ``("lidset", [(channel, id)])`` (everything known, to a new worker),
``("recover",)``, ``("refresh", args)``, ``("stop",)``.

A worker that reads too slowly does not grow the hub's memory: past ``WORKER_WRITE_MAX`` queued
bytes the hub drops items for that worker (logged and counted) until it catches up.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

from gripd.core.history import HistoryPolicy, Replay
from gripd.core.publish import PublishItem
from gripd.core.sequencer import LAST_IDS_MAX, LastIds
from gripd.core.wildcard import PrefixIndex, is_pattern, stem
from gripd.io.bus.base import BusSink
from gripd.io.observe.events import Delivery, Events, Mode, Transport

log = logging.getLogger("gripd.bus")

_LEN = struct.Struct("!I")
FRAME_MAX = 1 << 30  # a frame bigger than this is a bug, not a message
WORKER_WRITE_MAX = 64 << 20  # bytes queued to one worker before its items are dropped
COUNTS_INTERVAL = 0.1  # seconds a worker gathers request counts and origin latencies

Message = tuple[Any, ...]
READS_PENDING_MAX = 10_000  # history reads a worker waits on at once (WorkerLink.read)


class FrameLink(asyncio.Protocol):
    """Length-prefixed pickle frames over a stream socket; messages written in one tick are
    batched into one frame (a list of messages)."""

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_lost: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[Message] = []
        self._flush_armed = False
        self.closed = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > FRAME_MAX:
                log.error("bus: oversized frame (%d bytes) from peer; closing the link", size)
                self.close()
                return
            if n - pos - 4 < size:
                break
            frame = bytes(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
            for msg in pickle.loads(frame):
                try:
                    self.on_message(msg)
                except Exception:  # one bad message must not stop the link
                    log.exception("bus: handling %r failed", msg[0] if msg else msg)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.on_lost()

    # -- sending -----------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue ``msg``; it goes out with everything else sent in this tick."""
        if self.closed:
            return
        self._out.append(msg)
        if not self._flush_armed:
            self._flush_armed = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_armed = False
        out, self._out = self._out, []
        t = self.transport
        if not out or t is None or self.closed:
            return
        data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        t.write(_LEN.pack(len(data)) + data)

    def buffered(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None else 0

    def close(self) -> None:
        if self.transport is not None:
            self.flush()
            self.transport.close()


async def open_link(
    sock: socket.socket,
    on_message: Callable[[Message], None],
    on_lost: Callable[[], None],
) -> FrameLink:
    """Wrap a connected Unix stream socket in a :class:`FrameLink`."""
    loop = asyncio.get_running_loop()
    link = FrameLink(on_message, on_lost, loop)
    await loop.create_unix_connection(lambda: link, sock=sock)
    return link


# --- the hub side --------------------------------------------------------------------------------


class HubRouter:
    """Routes published items to the workers that hold their channels.

    It stands where a single process's engine stands: after the pipeline. Which worker holds
    which channel comes from the workers' ``gained``/``lost``; the instance-wide interest the
    pipeline, the ZeroMQ SUB socket and the bus need is the hub's own tracker, fed by the
    forwarded subscription events (:class:`EventRelay`).

    With ``wildcard`` (``[gripd] wildcard_channels``) a worker may hold a pattern
    (``news.*``): an item goes to the workers holding its channel and to those holding a
    pattern that matches it, once each (the worker's engine delivers it once per subscriber)."""

    def __init__(self, *, wildcard: bool = False) -> None:
        self.links: dict[int, FrameLink] = {}
        self.interest: dict[str, set[int]] = {}  # channel -> workers holding it
        self.wildcard = wildcard
        self.patterns: PrefixIndex[str] = PrefixIndex()  # stem -> patterns held (wildcard)
        self.dropped: dict[int, int] = {}  # items dropped per worker (slow reader)
        self.on_drop: Callable[[int], None] | None = None  # count of items dropped
        self.received: Callable[[PublishItem, str], None] | None = None

    def attach(self, index: int, link: FrameLink) -> None:
        self.links[index] = link

    def detach(self, index: int) -> None:
        """Worker ``index`` is gone: it holds nothing any more."""
        self.links.pop(index, None)
        self.dropped.pop(index, None)
        lost = [ch for ch, ws in self.interest.items() if index in ws]
        self.lost(index, lost)

    def gained(self, index: int, channels: list[str]) -> None:
        interest = self.interest
        for ch in channels:
            holders = interest.get(ch)
            if holders is None:
                interest[ch] = {index}
                if self.wildcard and is_pattern(ch):
                    self.patterns.add(stem(ch), ch)
            else:
                holders.add(index)

    def lost(self, index: int, channels: list[str]) -> None:
        interest = self.interest
        for ch in channels:
            holders = interest.get(ch)
            if holders is None or index not in holders:
                continue
            holders.discard(index)
            if not holders:
                del interest[ch]
                if self.wildcard and is_pattern(ch):
                    self.patterns.remove(stem(ch), ch)

    # BusSink
    def publish(self, items: list[PublishItem], *, source: str) -> None:
        """Send each item to the workers holding its channel, keeping the batch's order."""
        if self.received is not None:
            for item in items:
                self.received(item, source)
        interest = self.interest
        patterns = self.patterns
        per: dict[int, list[PublishItem]] = {}
        for item in items:
            holders = interest.get(item.channel)
            if patterns:
                matched = patterns.match(item.channel)
                if matched:  # one new set, only when some pattern covers the channel
                    union = set(holders) if holders else set()
                    for p in matched:
                        union.update(interest[p])
                    holders = union
            if not holders:
                continue
            for w in holders:
                lst = per.get(w)
                if lst is None:
                    per[w] = [item]
                else:
                    lst.append(item)
        for w, lst in per.items():
            link = self.links.get(w)
            if link is None:
                continue
            if link.buffered() > WORKER_WRITE_MAX:
                n = self.dropped.get(w, 0)
                self.dropped[w] = n + len(lst)
                if self.on_drop is not None:
                    self.on_drop(len(lst))
                if n == 0 or (n + len(lst)) // 1000 > n // 1000:
                    log.warning(
                        "worker %d is not reading (%d bytes queued): dropped %d item(s) so far",
                        w,
                        link.buffered(),
                        n + len(lst),
                    )
                continue
            link.send(("items", source, lst))

    def broadcast(self, msg: Message) -> None:
        for link in self.links.values():
            link.send(msg)

    def recover(self) -> None:
        """F27 ``recover`` after the pipeline forgot its last ids: every worker retries."""
        self.broadcast(("recover",))

    def send_to_holders(self, channel: str, msg: Message) -> None:
        """``msg`` to every worker holding ``channel`` now."""
        for w in self.interest.get(channel, ()):
            link = self.links.get(w)
            if link is not None:
                link.send(msg)


class BroadcastLastIds(LastIds):
    """The hub sequencer's last ids; every change goes to every worker's replica."""

    __slots__ = ("router",)

    def __init__(self, router: HubRouter, max_size: int = LAST_IDS_MAX) -> None:
        super().__init__(max_size)
        self.router = router

    def set(self, channel: str, item_id: str) -> None:
        super().set(channel, item_id)
        self.router.broadcast(("lid", channel, item_id))

    def remove(self, channel: str) -> None:
        if channel in self:
            super().remove(channel)
            self.router.broadcast(("lid", channel, None))

    def clear(self) -> None:
        super().clear()
        self.router.broadcast(("lidclear",))


# --- the worker side -----------------------------------------------------------------------------


class WorkerLink(Events):
    """A worker's end: the bus (interest out, items in) and the events forwarded to the hub.

    Items from the hub go to ``sink`` (the worker's pipeline). ``on_command`` gets
    ``recover``, ``refresh`` and ``stop`` messages."""

    def __init__(self, sink: BusSink, on_command: Callable[[Message], None]) -> None:
        self.sink = sink
        self.on_command = on_command
        self.link: FrameLink | None = None
        self.last_ids = LastIdReplica(self)
        self._reqs = 0  # requests received since the last tick
        self._latencies: list[float] = []  # origin latencies since the last tick
        # Connection and request events (stats, F43), sent together every COUNTS_INTERVAL,
        # or before any other message so that the hub sees every event in order.
        self._conn_events: list[Message] = []
        self._counts_armed = False
        self._reads: dict[int, Callable[[Replay], None]] = {}  # history reads awaiting the hub
        self._read_n = 0
        self._policies: dict[str, HistoryPolicy] = {}  # sent to the hub already (bounded)

    def attach(self, link: FrameLink) -> None:
        self.link = link

    def on_message(self, msg: Message) -> None:
        kind = msg[0]
        if kind == "items":
            self.sink.publish(msg[2], source=msg[1])
        elif kind == "lid":
            self.last_ids.apply(msg[1], msg[2])
        elif kind == "lidclear":
            self.last_ids.clear()
        elif kind == "lidset":
            for channel, item_id in msg[1]:
                self.last_ids.apply(channel, item_id)
        elif kind == "hrep":
            done = self._reads.pop(msg[1], None)
            if done is not None:
                done(Replay(msg[2], tuple(msg[3]), msg[4], frozenset(msg[5])))
        else:
            self.on_command(msg)

    def _send(self, msg: Message) -> None:
        if self.link is not None:
            if self._conn_events:
                self._flush_conn_events()
            self.link.send(msg)

    def _conn_event(self, ev: Message) -> None:
        self._conn_events.append(ev)
        self._arm_counts()

    def _flush_conn_events(self) -> None:
        evs, self._conn_events = self._conn_events, []
        if self.link is not None and evs:
            self.link.send(("ev", "batch", evs))

    # Bus
    def publish(self, items: list[PublishItem], *, source: str) -> None:
        """Workers have no publish inputs (the hub has them); delivered here, unprocessed."""
        self.sink.publish(items, source=source)

    def subscribe(self, channel: str) -> None:
        self._send(("gained", [channel]))

    def unsubscribe(self, channel: str) -> None:
        self._send(("lost", [channel]))

    # HistoryReader: the history lives where the pipeline is, in the hub. The hub handles this
    # worker's messages in order, so a read sent after the hold's subscription sees every item
    # that will not reach the hold live.
    def read(
        self, channel: str, after: str | None, limit: int, done: Callable[[Replay], None]
    ) -> None:
        if self.link is None:
            done(Replay("gone"))
            return
        reads = self._reads
        if len(reads) >= READS_PENDING_MAX:
            # The hub answers every read (a Redis read within its timeout); a backlog this long
            # means a lost link: the oldest waiter gets "gone" (its hold has timed out anyway).
            reads.pop(next(iter(reads)))(Replay("gone"))
        self._read_n += 1
        reads[self._read_n] = done
        self._send(("hread", self._read_n, channel, after, limit))

    def set_policy(self, channel: str, policy: HistoryPolicy) -> None:
        pol = self._policies
        if pol.get(channel) == policy:
            return
        if len(pol) >= LAST_IDS_MAX:
            pol.clear()
        pol[channel] = policy
        self._send(("hpol", channel, policy.size, policy.ttl))

    # InterestListener
    def gained(self, channel: str) -> None:
        self.subscribe(channel)

    def lost(self, channel: str) -> None:
        self.unsubscribe(channel)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.link is not None:
            self._flush_conn_events()
            self.link.flush()

    # Events, forwarded (``message_received`` is counted once, by the hub)
    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        self._conn_event(("ev", "open", conn_id, peer, transport))

    def connection_closed(self, conn_id: str) -> None:
        self._conn_event(("ev", "close", conn_id))

    def request_started(
        self, conn_id: str, peer: str, transport: Transport, route: str, ssl: bool
    ) -> None:
        self._conn_event(("ev", "rq+", conn_id, peer, transport, route, ssl))

    def request_held(self, conn_id: str) -> None:
        self._conn_event(("ev", "rqh", conn_id))

    def request_ended(self, conn_id: str) -> None:
        self._conn_event(("ev", "rq-", conn_id))

    def counter(self, name: str, count: int, route: str = "") -> None:
        self._conn_event(("ev", "ctr", name, count, route))

    def activity(self, route: str, count: int = 1) -> None:
        self._conn_event(("ev", "act", route, count))

    def request_received(self) -> None:
        # Per request, so counted here and sent every COUNTS_INTERVAL (pass-through's hot path).
        self._reqs += 1
        self._arm_counts()

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        self._send(("ev", "sub", channel, mode))

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        self._send(("ev", "unsub", channel, mode))

    def delivered(
        self, channel: str, item_id: str | None, transport: Delivery, count: int, blocks: int = -1
    ) -> None:
        self._send(("ev", "deliv", channel, item_id, transport, count, blocks))

    def dropped(self, reason: str, count: int = 1) -> None:
        self._send(("ev", "drop", reason, count))

    def slow_client(self, route: str, queued: int, closed: bool) -> None:
        # One message for the drop and its route (the hub's sinks count the drop from it).
        self._send(("ev", "slow", route, queued, closed))

    def observe_origin_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        self._arm_counts()

    def _arm_counts(self) -> None:
        # Every COUNTS_INTERVAL, not every tick: a frame per tick would wake the hub
        # thousands of times a second under pass-through load, for two counters.
        if not self._counts_armed and self.link is not None:
            self._counts_armed = True
            self.link.loop.call_later(COUNTS_INTERVAL, self._send_counts)

    def _send_counts(self) -> None:
        self._counts_armed = False
        self._flush_conn_events()
        if self._reqs:
            self._send(("ev", "req", self._reqs))
            self._reqs = 0
        if self._latencies:
            self._send(("ev", "lat", self._latencies))
            self._latencies = []

    def forget(self, channel: str) -> None:
        """A hold found ``channel``'s last id inconsistent: the hub's sequencer forgets it."""
        self._send(("forget", channel))

    def report_status(self, report: dict[str, Any]) -> None:
        """This worker's part of the status page (slowest connections, routes) to the hub."""
        self._send(("status", report))

    def woh_opened(self, cid: str) -> None:
        self._send(("ev", "woh+", cid))

    def woh_closed(self, cid: str) -> None:
        self._send(("ev", "woh-", cid))


class LastIdReplica:
    """A worker's copy of the hub sequencer's last ids, for prev-id checks at hold start (F23,
    F26); forgetting one (an inconsistent hold) forgets it in the hub too."""

    __slots__ = ("_ids", "_link")

    def __init__(self, link: WorkerLink) -> None:
        self._ids = LastIds()
        self._link = link

    def last_id(self, channel: str) -> str | None:
        return self._ids.get(channel)

    def forget_last_id(self, channel: str) -> None:
        self._ids.remove(channel)
        self._link.forget(channel)

    def apply(self, channel: str, item_id: str | None) -> None:
        if item_id is None:
            self._ids.remove(channel)
        else:
            self._ids.set(channel, item_id)

    def clear(self) -> None:
        self._ids.clear()


class EventRelay:
    """The hub's end of forwarded events: replays them into the instance's ``Events`` with
    instance-wide ``first``/``last`` flags, and remembers what each worker holds so that a
    worker's death closes its connections and subscriptions in stats and metrics."""

    def __init__(
        self,
        events: Events,
        latency: Callable[[float], None] | None = None,
        tracker: Any = None,
    ) -> None:
        self.events = events
        self.latency = latency
        self.tracker = tracker  # the instance's ChannelTracker: subscribed / unsubscribed
        # Called when the instance gains a channel (for the first-subscription update, F22).
        self.on_gained: Callable[[str, str], None] | None = None
        self.subs: dict[tuple[str, str], int] = {}  # (channel, mode) -> subscribers
        self.channel_subs: dict[str, int] = {}  # channel -> subscribers of any mode
        self.conns: dict[int, dict[str, None]] = {}  # worker -> its open connection ids
        self.worker_subs: dict[int, dict[tuple[str, str], int]] = {}
        self.woh: dict[str, int] = {}  # WebSocket-over-HTTP connection id -> worker

    def handle(self, worker: int, ev: Message) -> None:
        kind = ev[1]
        events = self.events
        if kind == "deliv":
            events.delivered(ev[2], ev[3], ev[4], ev[5], ev[6])
        elif kind == "sub":
            self._sub(worker, ev[2], ev[3])
        elif kind == "unsub":
            self._unsub(worker, ev[2], ev[3])
        elif kind == "open":
            self.conns.setdefault(worker, {})[ev[2]] = None
            events.connection_opened(ev[2], ev[3], ev[4])
        elif kind == "close":
            self.conns.get(worker, {}).pop(ev[2], None)
            events.connection_closed(ev[2])
        elif kind == "req":
            for _ in range(ev[2]):
                events.request_received()
        elif kind == "batch":
            for e in ev[2]:
                self.handle(worker, e)
        elif kind == "rq+":
            events.request_started(ev[2], ev[3], ev[4], ev[5], ev[6])
        elif kind == "rqh":
            events.request_held(ev[2])
        elif kind == "rq-":
            events.request_ended(ev[2])
        elif kind == "ctr":
            events.counter(ev[2], ev[3], ev[4])
        elif kind == "act":
            events.activity(ev[2], ev[3])
        elif kind == "drop":
            events.dropped(ev[2], ev[3])
        elif kind == "slow":
            events.slow_client(ev[2], ev[3], ev[4])
        elif kind == "woh+":
            self.woh[ev[2]] = worker
        elif kind == "woh-" and self.woh.get(ev[2]) == worker:
            del self.woh[ev[2]]
        elif kind == "lat" and self.latency is not None:
            for seconds in ev[2]:
                self.latency(seconds)

    def _sub(self, worker: int, channel: str, mode: Mode) -> None:
        key = (channel, mode)
        self.subs[key] = self.subs.get(key, 0) + 1
        mine = self.worker_subs.setdefault(worker, {})
        mine[key] = mine.get(key, 0) + 1
        n = self.channel_subs.get(channel, 0)
        self.channel_subs[channel] = n + 1
        gained = self.tracker is not None and self.tracker.subscribed(channel, mode)
        if gained and self.on_gained is not None:
            self.on_gained(channel, mode)
        self.events.subscribed(channel, mode, n == 0)

    def _unsub(self, worker: int, channel: str, mode: Mode) -> None:
        key = (channel, mode)
        mine = self.worker_subs.get(worker, {})
        if not mine.get(key):
            return
        mine[key] -= 1
        if not mine[key]:
            del mine[key]
        self.subs[key] -= 1
        if not self.subs[key]:
            del self.subs[key]
        n = self.channel_subs[channel] - 1
        if n:
            self.channel_subs[channel] = n
        else:
            del self.channel_subs[channel]
        if self.tracker is not None:
            self.tracker.unsubscribed(channel, mode)
        self.events.unsubscribed(channel, mode, n == 0)

    def has_channel(self, channel: str) -> bool:
        """Whether any worker has a subscriber of ``channel`` now (no linger)."""
        return channel in self.channel_subs

    def worker_gone(self, worker: int) -> None:
        """Close in stats what the dead worker held."""
        for key, n in list(self.worker_subs.get(worker, {}).items()):
            for _ in range(n):
                self._unsub(worker, key[0], key[1])  # type: ignore[arg-type]
        self.worker_subs.pop(worker, None)
        for conn_id in list(self.conns.pop(worker, {})):
            self.events.connection_closed(conn_id)
        for cid in [c for c, w in self.woh.items() if w == worker]:
            del self.woh[cid]

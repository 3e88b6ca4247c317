"""The stats PUB socket (F43): turns engine and listener events into Pushpin's stats packets.

``StatsPublisher`` is an :class:`~gripd.io.observe.events.Events` sink. The bookkeeping is the pure
:class:`gripd.core.stats.StatsState`; this adapter owns the clock (``loop.time()``), the three
timers Pushpin's StatsManager has (refresh every second, report every
``stats_report_interval``, activity flush 100 ms after the first request) and the PUB socket.

The state is kept even when ``stats_spec`` is empty, because the Prometheus endpoint (F44) reads
its totals (``Metrics(..., stats=publisher.state)``), as Pushpin creates its StatsManager when
either a stats spec or a Prometheus port is set.

- ``from`` is ``gripd_<pid>`` (Pushpin's handler says ``pushpin-handler_<pid>``; no consumer we
  know parses it, and claiming to be Pushpin would mislead whoever reads the stream).
- As Pushpin, a stats connection is a *request* (``request_started`` .. ``request_ended``):
  ``conn`` with its route, the X-Forwarded-For-derived ``peer-address`` and ``ssl``, gone when
  the response ends or the client connection closes. Its id is ``<from>:<conn id>-<n>``
  (Pushpin: ``<condure id>:<request id>``); ``conncheck`` (F42) is asked with it: pass
  :meth:`StatsPublisher.check_connection`. The client connection events themselves
  (``connection_opened``) make no packet.
- ``blocks`` (``message_block_size``) and the byte/message report counters are fed through
  :meth:`StatsPublisher.delivered`, :meth:`StatsPublisher.message_received` (``blocks``) and
  :meth:`StatsPublisher.counter`.
- The PUB socket is a plain (non-asyncio) pyzmq socket sent with NOBLOCK: PUB never blocks, it
  drops at the high-water mark (200000, Pushpin's OUT_HWM), so a slow stats reader can't stall
  the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import os

import zmq

from gripd.core.config import Config
from gripd.core.stats import (
    ACTIVITY_DELAY,
    REFRESH_INTERVAL,
    Packet,
    StatsFormat,
    StatsState,
    default_instance_id,
    encode_packet,
)
from gripd.io.inputs.zmq import BindError, in_phase, is_ipc, prepare_ipc_path, zmq_reason
from gripd.io.observe.events import Delivery, Events, Mode, Transport

log = logging.getLogger("gripd.stats")

OUT_HWM = 200_000


class StatsPublisher(Events):
    """Publishes stats packets on ``config.stats_spec`` and keeps the stats state."""

    def __init__(
        self,
        config: Config,
        *,
        instance_id: str | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.instance_id = instance_id or default_instance_id(os.getpid())
        self.format: StatsFormat = "json" if config.stats_format == "json" else "tnetstring"
        self.refresh_interval = refresh_interval
        self.state = StatsState(
            instance_id=self.instance_id,
            connection_ttl=config.stats_connection_ttl,
            subscription_ttl=config.stats_subscription_ttl,
            subscription_linger=config.subscription_linger,
            report_interval=config.stats_report_interval,
            now=self.loop.time(),
        )
        self.sent = 0  # packets handed to the socket
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._refresh_timer: asyncio.TimerHandle | None = None
        self._report_timer: asyncio.TimerHandle | None = None
        self._activity_timer: asyncio.TimerHandle | None = None
        self._running = False
        self._topics: set[bytes] = set()
        self._topics_checked = -1.0
        self._open: dict[str, str] = {}  # client connection id -> its open request's stats id
        self._seq = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, ipc: bool | None = None) -> None:
        """Bind the PUB socket (when ``stats_spec`` is set) and start the timers.

        ``ipc`` False/True: bind only if ``stats_spec`` is a TCP/``ipc://`` endpoint (the app
        binds TCP first, so a second instance never takes a live instance's stats path);
        the timers start in the last phase (True or None)."""
        spec = self.config.stats_spec
        if spec and self._sock is None and in_phase(spec, ipc):
            self._bind(spec)
        if ipc is not False and not self._running:
            self._running = True
            self._arm_refresh()
            if self.config.stats_report_interval > 0:
                self._arm_report()

    def _bind(self, spec: str) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # XPUB, not PUB: it tells us whether anyone listens, so packets nobody subscribed
        # to are not even encoded (a per-publish cost otherwise, measured in bench/).
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, OUT_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if is_ipc(spec):
                prepare_ipc_path(spec[len("ipc://") :], spec, "stats_spec")
            try:
                sock.bind(spec)
            except zmq.ZMQError as e:
                raise BindError(spec, "stats_spec", zmq_reason(e)) from None
        except OSError:
            sock.close(0)
            ctx.term()
            raise
        self._ctx, self._sock = ctx, sock
        log.info("stats on %s (%s)", spec, self.format)

    async def stop(self) -> None:
        """Stop the timers and close the socket (pending packets are dropped, linger 0)."""
        self._running = False
        for t in (self._refresh_timer, self._report_timer, self._activity_timer):
            if t is not None:
                t.cancel()
        self._refresh_timer = self._report_timer = self._activity_timer = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # -- timers ------------------------------------------------------------------------------

    def _arm_refresh(self) -> None:
        if self._running:
            self._refresh_timer = self.loop.call_later(self.refresh_interval, self._on_refresh)

    def _arm_report(self) -> None:
        if self._running:
            interval = float(self.config.stats_report_interval)
            self._report_timer = self.loop.call_later(interval, self._on_report)

    def _on_refresh(self) -> None:
        self._send(self.state.tick(self.loop.time()))
        self._arm_refresh()

    def _on_report(self) -> None:
        self._send(self.state.make_report(self.loop.time()))
        self._arm_report()

    def _on_activity(self) -> None:
        self._activity_timer = None
        self._send(self.state.flush_activity())

    # -- output ------------------------------------------------------------------------------

    def _listeners(self, sock: zmq.Socket[bytes], now: float | None = None) -> set[bytes]:
        """Topics subscribed on the XPUB socket (read at most every 50 ms)."""
        if now is None:
            now = self.loop.time()
        if now - self._topics_checked >= 0.05:
            self._topics_checked = now
            while True:
                try:
                    msg = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    break
                if msg[:1] == b"\x01":
                    self._topics.add(msg[1:])
                elif msg[:1] == b"\x00":
                    self._topics.discard(msg[1:])
        return self._topics

    def _listened(self, now: float) -> bool:
        """Whether anyone subscribed to the stats socket (packets are made only then)."""
        sock = self._sock
        return sock is not None and bool(self._listeners(sock, now))

    def _send(self, packets: list[Packet]) -> None:
        sock = self._sock
        if sock is None or not packets:
            return
        topics = self._listeners(sock)
        if not topics:
            return
        for p in packets:
            kind = p[0].encode() + b" "
            if not any(kind.startswith(t) or t.startswith(kind) for t in topics):
                continue
            frame = encode_packet(p, self.format)
            try:
                sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                continue  # at the HWM PUB drops; so do we
            except zmq.ZMQError as e:
                log.warning("stats: send failed: %s", e)
                continue
            self.sent += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("stats: OUT %s", frame[:200])

    # -- identity ----------------------------------------------------------------------------

    def check_connection(self, cid: str) -> bool:
        """Whether ``cid`` (a stats connection id) is still open (F42 ``conncheck``)."""
        return self.state.has_connection(cid)

    # -- Events ------------------------------------------------------------------------------

    def request_started(
        self, conn_id: str, peer: str, transport: Transport, route: str, ssl: bool
    ) -> None:
        """Open the stats connection of connection ``conn_id``'s current request (ends the
        previous one if its end was not reported)."""
        now = self.loop.time()
        state = self.state
        want = self._listened(now)
        prev = self._open.pop(conn_id, None)
        if prev is not None:
            self._send(state.connection_closed(prev, now, want))
        if state.add_activity(route):
            self._arm_activity()
        self._seq += 1
        cid = f"{self.instance_id}:{conn_id}-{self._seq}"
        self._open[conn_id] = cid
        packets = state.connection_opened(
            cid, now, type=transport, peer=peer, ssl=ssl, route=route, packet=want
        )
        if packets:
            self._send(packets)

    def request_held(self, conn_id: str) -> None:
        """A hold took the request over: from now on it counts on the empty route, as in
        Pushpin, where the handler (which has no route) owns held requests."""
        cid = self._open.get(conn_id)
        if cid is not None:
            now = self.loop.time()
            packets = self.state.connection_moved(cid, "", now, self._listened(now))
            if packets:
                self._send(packets)

    def request_ended(self, conn_id: str) -> None:
        cid = self._open.pop(conn_id, None)
        if cid is not None:
            now = self.loop.time()
            packets = self.state.connection_closed(cid, now, self._listened(now))
            if packets:
                self._send(packets)

    def connection_closed(self, conn_id: str) -> None:
        """The TCP connection went: its request, if one is open, ends with it."""
        self.request_ended(conn_id)

    def current_stats_id(self, conn_id: str) -> str | None:
        """The stats id of connection ``conn_id``'s open request (the id ``conncheck`` is
        asked with; read by tests, which have no stats subscriber to learn it from)."""
        return self._open.get(conn_id)

    def request_received(self) -> None:
        if self.state.request_received(self.loop.time()):
            self._arm_activity()

    def _arm_activity(self) -> None:
        if self._running and self._activity_timer is None:
            self._activity_timer = self.loop.call_later(ACTIVITY_DELAY, self._on_activity)

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        self._send(self.state.subscribed(mode, channel, self.loop.time()))

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        self._send(self.state.unsubscribed(mode, channel, self.loop.time()))

    def message_received(self, channel: str, source: str, blocks: int = -1) -> None:
        self.state.message_received(self.loop.time(), blocks)

    def delivered(
        self,
        channel: str,
        item_id: str | None,
        transport: Delivery,
        count: int,
        blocks: int = -1,
        *,
        route: str = "",
    ) -> None:
        now = self.loop.time()
        packets = self.state.delivered(
            channel,
            item_id,
            transport,
            count,
            now,
            route=route,
            blocks=blocks,
            packet=self._listened(now),  # a packet only for a listener (the usual: none)
        )
        if packets:
            self._send(packets)

    def activity(self, route: str, count: int = 1) -> None:
        if self.state.add_activity(route, count):
            self._arm_activity()

    def counter(self, name: str, count: int, route: str = "") -> None:
        """Add to a report counter (``client-content-bytes-sent``, ...; ``REPORT_COUNTERS``)."""
        self.state.add_counter(name, count, self.loop.time(), route)

"""Observation hooks: what the listener and the engine report as it happens.

Stats (F43), Prometheus metrics (F44) and the ZeroMQ SUB socket's channel interest (F31) all
need to know when connections come and go, when a channel gains its first or loses its last
subscriber, and what was published and delivered. They subclass ``Events`` and are combined
with ``EventFanout``; the default does nothing, so the hot paths pay one method call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from gripd.core.config import Config

Transport = Literal["http", "ws"]
Mode = Literal["response", "stream", "ws"]
Delivery = Literal["http-response", "http-stream", "ws-message"]


@mypyc_attr(allow_interpreted_subclasses=True)
class Events:
    """No-op hooks; override what you need."""

    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        """A client connection was accepted (``transport`` may later change to ws)."""

    def connection_closed(self, conn_id: str) -> None:
        """A client connection ended."""

    def request_received(self) -> None:
        """A client request head was parsed (F44 ``request_received``)."""

    def request_started(
        self, conn_id: str, peer: str, transport: Transport, route: str, ssl: bool
    ) -> None:
        """A request on connection ``conn_id`` went to its route: Pushpin's stats count it as
        a connection (``peer`` is the logical client address, F16; ``route`` its id or "")."""

    def request_held(self, conn_id: str) -> None:
        """The current request of ``conn_id`` is now held: Pushpin's handler counts it from
        here on the empty route."""

    def request_ended(self, conn_id: str) -> None:
        """The current request of connection ``conn_id`` ended (its response is complete)."""

    def counter(self, name: str, count: int, route: str = "") -> None:
        """Add to a stats report counter (``client-content-bytes-sent``, ...)."""

    def activity(self, route: str, count: int = 1) -> None:
        """Billable actions besides requests (stats ``activity``): a keep-alive sent."""

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        """A hold subscribed ``channel``; ``first`` when no local subscriber had it before."""

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        """A hold left ``channel``; ``last`` when no local subscriber remains."""

    def message_received(self, channel: str, source: str, blocks: int = -1) -> None:
        """A publish item arrived from ``source`` (http, zmq-pull, zmq-sub, command);
        ``blocks``: its largest format in ``message_block_size`` blocks, -1 when not counted."""

    def delivered(
        self, channel: str, item_id: str | None, transport: Delivery, count: int, blocks: int = -1
    ) -> None:
        """An item went to ``count`` subscribers of one transport (``blocks``: one delivery
        in ``message_block_size`` blocks, -1 when off)."""

    def dropped(self, reason: str, count: int = 1) -> None:
        """Deliveries or items were dropped, e.g. ``slow_client``, ``bad_item``."""

    def slow_client(self, route: str, queued: int, closed: bool) -> None:
        """One message was dropped for a client of ``route`` with ``queued`` bytes waiting;
        ``closed`` when its connection is being closed for it (``slow_client_policy=close``).

        It is also a ``dropped("slow_client")``: by default it calls that, so a sink that
        only counts drops needs nothing more; a sink that overrides it counts the drop itself.
        """
        self.dropped("slow_client")


#: Hooks called per request or per item: :class:`EventFanout` binds them straight to the one
#: sink that implements them (or to nothing), instead of a loop over every sink per call.
_DIRECT = (
    "connection_opened",
    "connection_closed",
    "request_received",
    "request_started",
    "request_held",
    "request_ended",
    "counter",
    "activity",
    "subscribed",
    "unsubscribed",
    "message_received",
    "delivered",
)


def _ignore(*args: object) -> None:
    pass


class EventFanout(Events):
    """Calls every registered ``Events`` in order."""

    def __init__(self) -> None:
        self.sinks: list[Events] = []

    def add(self, sink: Events) -> None:
        self.sinks.append(sink)
        # In the compiled build (mypyc) instances have no __dict__ to bind methods in; the
        # methods below, compiled too, loop over the sinks at about the cost of one call.
        if hasattr(self, "__dict__"):
            self._bind_direct()

    def _bind_direct(self) -> None:
        for name in _DIRECT:
            base = getattr(Events, name)
            impls = [s for s in self.sinks if getattr(type(s), name, base) is not base]
            if len(impls) == 1:
                setattr(self, name, getattr(impls[0], name))
            elif not impls:
                setattr(self, name, _ignore)
            elif name in vars(self):
                delattr(self, name)  # the loop below, over every sink

    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        for s in self.sinks:
            s.connection_opened(conn_id, peer, transport)

    def connection_closed(self, conn_id: str) -> None:
        for s in self.sinks:
            s.connection_closed(conn_id)

    def request_received(self) -> None:
        for s in self.sinks:
            s.request_received()

    def request_started(
        self, conn_id: str, peer: str, transport: Transport, route: str, ssl: bool
    ) -> None:
        for s in self.sinks:
            s.request_started(conn_id, peer, transport, route, ssl)

    def request_held(self, conn_id: str) -> None:
        for s in self.sinks:
            s.request_held(conn_id)

    def request_ended(self, conn_id: str) -> None:
        for s in self.sinks:
            s.request_ended(conn_id)

    def counter(self, name: str, count: int, route: str = "") -> None:
        for s in self.sinks:
            s.counter(name, count, route)

    def activity(self, route: str, count: int = 1) -> None:
        for s in self.sinks:
            s.activity(route, count)

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        for s in self.sinks:
            s.subscribed(channel, mode, first)

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        for s in self.sinks:
            s.unsubscribed(channel, mode, last)

    def message_received(self, channel: str, source: str, blocks: int = -1) -> None:
        for s in self.sinks:
            s.message_received(channel, source, blocks)

    def delivered(
        self, channel: str, item_id: str | None, transport: Delivery, count: int, blocks: int = -1
    ) -> None:
        for s in self.sinks:
            s.delivered(channel, item_id, transport, count, blocks)

    def dropped(self, reason: str, count: int = 1) -> None:
        for s in self.sinks:
            s.dropped(reason, count)

    def slow_client(self, route: str, queued: int, closed: bool) -> None:
        for s in self.sinks:
            s.slow_client(route, queued, closed)


def requests_observed(config: Config) -> bool:
    """Whether per-request stats events have a reader: the stats socket or the Prometheus
    endpoint (its connection figures are Pushpin's, per request). Without either, callers skip
    ``request_started``/``request_ended``/``counter`` and pay nothing per request."""
    return bool(config.stats_spec or config.prometheus_port)

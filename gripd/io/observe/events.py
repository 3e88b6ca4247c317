"""Observation hooks: what the listener and the engine report as it happens.

Stats (F43), Prometheus metrics (F44) and the ZeroMQ SUB socket's channel interest (F31) all
need to know when connections come and go, when a channel gains its first or loses its last
subscriber, and what was published and delivered. They subclass ``Events`` and are combined
with ``EventFanout``; the default does nothing, so the hot paths pay one method call.
"""

from __future__ import annotations

from typing import Literal

Transport = Literal["http", "ws"]
Mode = Literal["response", "stream", "ws"]
Delivery = Literal["http-response", "http-stream", "ws-message"]


class Events:
    """No-op hooks; override what you need."""

    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        """A client connection was accepted (``transport`` may later change to ws)."""

    def connection_closed(self, conn_id: str) -> None:
        """A client connection ended."""

    def request_received(self) -> None:
        """A client request head was parsed (F44 ``request_received``)."""

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        """A hold subscribed ``channel``; ``first`` when no local subscriber had it before."""

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        """A hold left ``channel``; ``last`` when no local subscriber remains."""

    def message_received(self, channel: str, source: str) -> None:
        """A publish item arrived from ``source`` (http, zmq-pull, zmq-sub, command)."""

    def delivered(self, channel: str, item_id: str | None, transport: Delivery, count: int) -> None:
        """An item went to ``count`` subscribers of one transport."""

    def dropped(self, reason: str, count: int = 1) -> None:
        """Deliveries or items were dropped, e.g. ``slow_client``, ``bad_item``."""

    def slow_client(self, route: str, queued: int, closed: bool) -> None:
        """One message was dropped for a client of ``route`` with ``queued`` bytes waiting;
        ``closed`` when its connection is being closed for it (``slow_client_policy=close``).

        It is also a ``dropped("slow_client")``: by default it calls that, so a sink that
        only counts drops needs nothing more; a sink that overrides it counts the drop itself.
        """
        self.dropped("slow_client")


class EventFanout(Events):
    """Calls every registered ``Events`` in order."""

    def __init__(self) -> None:
        self.sinks: list[Events] = []

    def add(self, sink: Events) -> None:
        self.sinks.append(sink)

    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        for s in self.sinks:
            s.connection_opened(conn_id, peer, transport)

    def connection_closed(self, conn_id: str) -> None:
        for s in self.sinks:
            s.connection_closed(conn_id)

    def request_received(self) -> None:
        for s in self.sinks:
            s.request_received()

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        for s in self.sinks:
            s.subscribed(channel, mode, first)

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        for s in self.sinks:
            s.unsubscribed(channel, mode, last)

    def message_received(self, channel: str, source: str) -> None:
        for s in self.sinks:
            s.message_received(channel, source)

    def delivered(self, channel: str, item_id: str | None, transport: Delivery, count: int) -> None:
        for s in self.sinks:
            s.delivered(channel, item_id, transport, count)

    def dropped(self, reason: str, count: int = 1) -> None:
        for s in self.sinks:
            s.dropped(reason, count)

    def slow_client(self, route: str, queued: int, closed: bool) -> None:
        for s in self.sinks:
            s.slow_client(route, queued, closed)

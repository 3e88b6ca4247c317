"""The bus: how published items travel from the publish inputs to every subscriber.

Publishing flows one way. An input (control API, ZeroMQ, command socket) hands a batch to
:meth:`Bus.publish`; the bus carries it to every place that holds subscribers and hands it to
each place's local :class:`BusSink` (the publish pipeline: dedup, sequencing, rate limit, then
the engine). Each place tells its bus which channels it wants with :meth:`Bus.subscribe` and
:meth:`Bus.unsubscribe` (driven by channel interest, after the linger).

Implementations:

- :class:`gripd.io.bus.local.LocalBus`: one process; publish is a direct call.
- :class:`gripd.io.bus.hub.HubRouter` / :class:`~gripd.io.bus.hub.WorkerLink`: the worker
  processes of one instance; the hub routes each item only to the workers that hold its
  channel.
- :class:`gripd.io.bus.redis.RedisBus`: many instances sharing channels through Redis.

Every implementation passes the same contract tests (``tests/io/test_bus_contract.py``):
items published for a subscribed channel reach the sink once, in publish order per channel;
items for channels nobody subscribed to do not; unsubscribing stops delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gripd.core.publish import PublishItem


class BusSink(Protocol):
    """The local receiver of items from the bus (the publish pipeline)."""

    def publish(self, items: list[PublishItem], *, source: str) -> None: ...


class Bus(Protocol):
    """Publish to every subscriber anywhere; subscribe this place to channels."""

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        """Send ``items`` (one input's batch, in order) to every place that wants them."""

    def subscribe(self, channel: str) -> None:
        """This place now wants items for ``channel``."""

    def unsubscribe(self, channel: str) -> None:
        """This place no longer wants items for ``channel``."""

    def gained(self, channel: str) -> None:
        """Channel interest gained (the tracker's listener call): same as :meth:`subscribe`."""

    def lost(self, channel: str) -> None:
        """Channel interest lost (after the linger): same as :meth:`unsubscribe`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BusEntry:
    """What the publish inputs are handed: ``publish`` goes onto the bus, ``recover`` (F27, a
    per-instance command) to this instance's holds."""

    __slots__ = ("bus", "recover")

    def __init__(self, bus: Bus, recover: Callable[[], None]) -> None:
        self.bus = bus
        self.recover = recover

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.bus.publish(items, source=source)

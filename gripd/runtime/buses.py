"""Choosing the bus from the configuration (``[gripd] bus``)."""

from __future__ import annotations

import uuid

from gripd.core.config import Config
from gripd.io.bus.base import Bus, BusSink
from gripd.io.bus.local import LocalBus


def make_bus(config: Config, sink: BusSink) -> Bus:
    """The in-process bus, or the Redis bus when ``bus`` names a Redis server."""
    if not config.bus:
        return LocalBus(sink)
    from gripd.io.bus.redis import RedisBus  # imported only when used

    bus: Bus = RedisBus(sink, config.bus, node_id=uuid.uuid4().hex[:12])
    return bus

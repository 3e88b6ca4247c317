"""Choosing the bus from the configuration (``[gripd] bus``)."""

from __future__ import annotations

import uuid

from gripd.core.config import Config, parse_bus_url
from gripd.io.bus.base import Bus, BusSink
from gripd.io.bus.local import LocalBus


def make_bus(config: Config, sink: BusSink) -> Bus:
    """The in-process bus, or the Redis bus when ``bus`` names a Redis server."""
    if not config.bus:
        return LocalBus(sink)
    from gripd.io.bus.redis import RedisBus  # imported only when used

    # Redis pub/sub ignores the database number, so it goes into the channel names: instances
    # on different databases of one server do not see each other's channels.
    db = parse_bus_url(config.bus)[3]
    prefix = "gripd:" if db == 0 else f"gripd:{db}:"
    bus: Bus = RedisBus(sink, config.bus, node_id=uuid.uuid4().hex[:12], key_prefix=prefix)
    return bus

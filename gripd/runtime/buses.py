"""Choosing the bus from the configuration (``[gripd] bus``)."""

from __future__ import annotations

import asyncio
import uuid

from gripd.core.config import Config
from gripd.core.config_gripd import parse_bus_url
from gripd.core.history import OFF, HistoryPolicy, MemoryHistory
from gripd.io.bus.base import Bus, BusSink
from gripd.io.bus.local import LocalBus
from gripd.io.handler.history import HistoryReader, LocalHistory
from gripd.io.handler.pipeline import PublishPipeline


def make_bus(config: Config, sink: BusSink) -> Bus:
    """The in-process bus, or the Redis bus when ``bus`` names a Redis server (storing channel
    history in Redis when ``history_size`` is on, or once a route's own history policy reaches
    the bus: instances that share a bus should share their history settings)."""
    if not config.bus:
        return LocalBus(sink)
    from gripd.io.bus.redis import RedisBus  # imported only when used

    # Redis pub/sub ignores the database number, so it goes into the channel names: instances
    # on different databases of one server do not see each other's channels.
    db = parse_bus_url(config.bus)[3]
    prefix = "gripd:" if db == 0 else f"gripd:{db}:"
    bus: Bus = RedisBus(
        sink,
        config.bus,
        node_id=uuid.uuid4().hex[:12],
        key_prefix=prefix,
        wildcard=config.wildcard_channels,
        history=HistoryPolicy(config.history_size, config.history_ttl)
        if config.history_size > 0
        else OFF,
    )
    return bus


def make_history(
    config: Config, bus: Bus, pipeline: PublishPipeline, loop: asyncio.AbstractEventLoop
) -> HistoryReader:
    """Where this instance keeps channel history: in Redis when the bus is Redis (the bus stores
    items as it publishes them), else in memory, appended to by the pipeline. With history off
    everywhere the store exists but stays empty and costs one check per published batch."""
    remote: HistoryReader | None = getattr(bus, "history", None)
    if remote is not None:
        return remote
    store = MemoryHistory(
        HistoryPolicy(config.history_size, config.history_ttl), config.history_channels_max
    )
    local = LocalHistory(store, loop)
    pipeline.history = local
    local.start()
    return local

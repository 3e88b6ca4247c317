"""The in-process bus (the default): publishing is a direct call into the local pipeline."""

from __future__ import annotations

from gripd.core.publish import PublishItem
from gripd.io.bus.base import BusSink


class LocalBus:
    """Hands every batch straight to the sink.

    Items for channels nobody holds go to the sink too: the pipeline records their ids for
    dedup (F33) and drops them at the engine, exactly as a single Pushpin does."""

    def __init__(self, sink: BusSink) -> None:
        self.sink = sink

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.sink.publish(items, source=source)

    def subscribe(self, channel: str) -> None:
        """Nothing to do: every item is delivered locally."""

    def unsubscribe(self, channel: str) -> None:
        """Nothing to do: every item is delivered locally."""

    # InterestListener, so the bus can be registered with the channel tracker directly.
    def gained(self, channel: str) -> None:
        self.subscribe(channel)

    def lost(self, channel: str) -> None:
        self.unsubscribe(channel)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

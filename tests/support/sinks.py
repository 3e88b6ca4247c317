"""A publish sink for tests: records every batch handed to it, with its source, and can be
waited on. It stands in for the publish pipeline behind an input (control API, ZeroMQ, command
socket) or a bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gripd.core.publish import PublishItem


class RecordingSink:
    """``calls`` holds each ``publish`` as (items, source); ``fail`` makes ``publish`` raise
    after recording (an input must survive a sink's bug)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[PublishItem], str]] = []
        self.changed = asyncio.Event()
        self.fail = False

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.calls.append((items, source))
        self.changed.set()
        if self.fail:
            raise RuntimeError("sink broke")

    def recover(self) -> None:
        pass

    @property
    def items(self) -> list[PublishItem]:
        return [i for batch, _ in self.calls for i in batch]

    async def wait_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Until ``done()`` holds after some publish (TimeoutError after ``timeout`` s)."""
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    async def wait_items(self, n: int, timeout: float = 5.0) -> list[PublishItem]:
        """Every item, once there are at least ``n``."""
        await self.wait_until(lambda: len(self.items) >= n, timeout)
        return self.items

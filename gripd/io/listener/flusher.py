"""The per-loop write coalescer: :class:`Flusher` gathers the connections (HTTP/1.1 ones and
HTTP/2 ones) that queued writes during a loop tick and flushes each once at its end, so a
fan-out costs one syscall per connection per tick whatever the number of messages (DESIGN
"hot paths"). It also keeps the connections paused for writing, for the status page.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gripd.io.listener.conn import ClientConn, Flushable

__all__ = ["Flusher"]


class Flusher:
    """Coalesces queued writes of many connections into one flush per loop tick; ``backed_up``:
    the connections paused for writing, since when (the status page's slowest, unwalked)."""

    __slots__ = ("_dirty", "_loop", "_scheduled", "backed_up")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self.backed_up: dict[ClientConn, float] = {}

    def mark(self, conn: Flushable) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

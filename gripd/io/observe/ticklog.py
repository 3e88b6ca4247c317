"""Cheap info lines for the hot paths: one per publish, subscription and proxied request.

Pushpin logs those at info (F53), and so does gripd. With the standard ``logging`` machinery
each line cost ~10 µs (a ``LogRecord``, a lock, a write): a third of gripd's CPU when ingesting
ZeroMQ items (CHANGELOG.md, 2026-11-28). ``TickLog`` keeps the same line format but formats the
timestamp once and writes all the lines of one loop tick with one call. Anything that is not a
plain stream handler (or a changed level) falls back to ``logging``.
"""

from __future__ import annotations

import asyncio
import logging
import time


class TickLog:
    """Info lines for one logger name, written once per loop tick."""

    __slots__ = ("_lines", "_loop", "_scheduled", "logger", "name")

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.logger = logging.getLogger(name)
        self._loop = loop
        self._lines: list[str] = []
        self._scheduled = False

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def info(self, msg: str) -> None:
        """Queue one line; the caller formats ``msg`` (only when ``enabled()``)."""
        self._lines.append(msg)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        lines, self._lines = self._lines, []
        if not lines:
            return
        handlers = logging.getLogger().handlers
        streams = [h for h in handlers if type(h) in (logging.StreamHandler, logging.FileHandler)]
        if len(streams) != len(handlers) or not streams or self.logger.handlers:
            for m in lines:
                self.logger.info("%s", m)
            return
        now = time.time()
        ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        prefix = f"[INFO] {ts}.{int(now * 1000) % 1000:03d} [{self.name}] "
        text = "".join(prefix + m + "\n" for m in lines)
        for h in streams:
            h.acquire()
            try:
                stream = getattr(h, "stream", None)
                if stream is not None:
                    stream.write(text)
                    stream.flush()
            finally:
                h.release()

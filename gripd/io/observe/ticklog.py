"""Cheap info lines for the hot paths: one per publish, subscription and proxied request.

Pushpin logs those at info (F53), and so does gripd. With the standard ``logging`` machinery
each line cost ~10 µs (a ``LogRecord``, a lock, a write): a third of gripd's CPU when ingesting
ZeroMQ items (CHANGELOG.md, 2026-11-28). ``TickLog`` keeps the same line format but formats each
millisecond's timestamp once and writes the lines of ``FLUSH_DELAY`` seconds with one call (or
sooner, once ``FLUSH_LINES`` are waiting): with one publish request per loop tick, a write and a
flush per tick were a quarter of the publish path's CPU. Each line keeps the time it was queued.
Only stream and file handlers whose formatter declares that it writes these lines
(``pushpin_lines = True``) are written to directly; with any other handler (JSON logs, a test's
capture) or a logger-level handler, the lines go through ``logging``.
"""

from __future__ import annotations

import asyncio
import logging
import time

# Seconds a queued line may wait before it is written, and lines that make it written at once.
FLUSH_DELAY = 0.05
FLUSH_LINES = 512


class TickLog:
    """Info lines for one logger name, written together every ``FLUSH_DELAY`` seconds."""

    __slots__ = ("_lines", "_loop", "_scheduled", "logger", "name")

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.logger = logging.getLogger(name)
        self._loop = loop
        self._lines: list[tuple[float, str]] = []
        self._scheduled: asyncio.TimerHandle | None = None

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def info(self, msg: str) -> None:
        """Queue one line; the caller formats ``msg`` (only when ``enabled()``)."""
        lines = self._lines
        lines.append((time.time(), msg))
        if self._scheduled is None:
            self._scheduled = self._loop.call_later(FLUSH_DELAY, self.flush)
        elif len(lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        handlers = logging.getLogger().handlers
        streams = [
            h
            for h in handlers
            if isinstance(h, logging.StreamHandler) and getattr(h.formatter, "pushpin_lines", False)
        ]
        if len(streams) != len(handlers) or not streams or self.logger.handlers:
            logger = self.logger
            for at, m in lines:  # each record keeps the time its line was queued
                rec = logger.makeRecord(logger.name, logging.INFO, "", 0, "%s", (m,), None)
                rec.created = at
                rec.msecs = (at - int(at)) * 1000
                logger.handle(rec)
            return
        # Pieces joined once: each line's prefix carries the previous line's newline, so a
        # line costs two appends and no string of its own (the first newline is cut off).
        out: list[str] = []
        ms = -1
        prefix = ""
        name = self.name
        for at, m in lines:
            t = int(at * 1000)
            if t != ms:  # one strftime per millisecond
                ms = t
                ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
                prefix = f"\n[INFO] {ts}.{t % 1000:03d} [{name}] "
            out.append(prefix)
            out.append(m)
        out.append("\n")
        text = "".join(out)[1:]
        for h in streams:
            h.acquire()
            try:
                stream = getattr(h, "stream", None)
                if stream is not None:
                    stream.write(text)
                    stream.flush()
            finally:
                h.release()

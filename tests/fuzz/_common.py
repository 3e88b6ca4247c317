"""Helpers shared by the fuzz targets: input splitting, a fake transport, a log trap."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from gripd.core.headers import Headers


def flags_and_rest(data: bytes) -> tuple[int, bytes]:
    """The first byte as option flags (0 when empty) and the rest as the input proper."""
    return (data[0], data[1:]) if data else (0, b"")


_CHUNKS = (0, 1, 2, 3, 5, 8, 13, 64)


def chunked(data: bytes, selector: int) -> list[bytes]:
    """``data`` cut into equal pieces of a size picked by ``selector`` (0: one piece), so the
    parsers' handling of reads that end anywhere is fuzzed too."""
    size = _CHUNKS[selector % len(_CHUNKS)]
    if size == 0 or not data:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


def parse_head(raw: bytes) -> Headers:
    """``Name: value`` lines (LF or CRLF) as latin-1 header pairs, as httptools hands them over;
    a line without a colon becomes a header with an empty value."""
    out: Headers = []
    for line in raw.split(b"\n"):
        line = line.removesuffix(b"\r")
        if not line:
            continue
        name, _, value = line.partition(b":")
        out.append((name.decode("latin-1"), value.lstrip(b" \t").decode("latin-1")))
    return out


def split_head_body(data: bytes) -> tuple[Headers, bytes]:
    """Headers up to the first blank line, the body after it (no blank line: no body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(sep)
        if found:
            return parse_head(head), body
    return parse_head(data), b""


def same(a: Any, b: Any) -> bool:
    """Structural equality where NaN equals NaN (for comparing two decoders' results)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class FakeTransport(asyncio.Transport):
    """Records writes, and whether (and how) the protocol closed it."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__()
        self.writes: list[tuple[str, bytes]] = []
        self.tag = "conn"  # who is writing: set by the stubs around their own writes
        self.closed = False
        self.aborted = False
        self.eof = False  # write_eof: the write side is shut (a lingering close)
        self.paused = False
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: Any) -> None:
        assert not self.closed and not self.aborted and not self.eof, "write after close"
        self.writes.append((self.tag, bytes(data)))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class _Handle(asyncio.TimerHandle):
    """A real ``asyncio.TimerHandle`` (the compiled build checks the types it is given), run by
    :class:`FakeLoop`."""

    __slots__ = ()

    def __init__(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...], loop: FakeLoop
    ) -> None:
        super().__init__(when, callback, args, loop)

    def run(self) -> None:
        if not self._cancelled:  # type: ignore[attr-defined]
            self._callback(*self._args)  # type: ignore[attr-defined]


class FakeLoop(asyncio.AbstractEventLoop):
    """The few event-loop calls the adapters make (``time``, ``call_soon``, ``call_at``,
    ``call_later``), run by hand: ``run_ready()`` is one loop tick, ``fire_timers()`` lets the
    clock jump to each pending timer. Bounded, so a callback storm is a find, not a hang. A
    subclass of the real base class, as the compiled build wants."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.ready: list[_Handle] = []
        self.timers: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def get_debug(self) -> bool:
        return False

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def call_soon(self, callback: Callable[..., object], *args: Any, context: Any = None) -> Any:
        h = _Handle(self.now, callback, args, self)
        self.ready.append(h)
        return h

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> Any:
        h = _Handle(when, callback, args, self)
        self.timers.append(h)
        return h

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> Any:
        return self.call_at(self.now + delay, callback, *args)

    def create_task(self, coro: Any, **kw: Any) -> Any:
        coro.close()
        raise AssertionError("a task was started (a replay, or a connect)")

    def run_ready(self) -> None:
        for _ in range(10_000):
            if not self.ready:
                return
            self.ready.pop(0).run()
        raise AssertionError("call_soon callbacks keep rescheduling themselves")

    def fire_timers(self) -> None:
        for _ in range(1000):
            self.run_ready()
            live = [h for h in self.timers if not h.cancelled()]
            if not live:
                self.timers = []
                return
            h = min(live, key=lambda x: x.when())
            self.timers = [x for x in live if x is not h]
            self.now = max(self.now, h.when())
            h.run()
        raise AssertionError("timers keep rearming")


class LogTrap(logging.Handler):
    """Collects records at ERROR or above from one logger (an internal error is a find)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogTrap:
        self.records = []
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)

    def check(self) -> None:
        if self.records:
            r = self.records[0]
            detail = logging.Formatter().formatException(r.exc_info) if r.exc_info else ""
            cause = r.exc_info[1] if r.exc_info else None
            raise AssertionError(f"logged {r.levelname}: {r.getMessage()}\n{detail}") from cause

"""History where the publish pipeline runs: the in-memory store on the event loop's clock, and
the interface holds read it through (in a worker, over the link to the hub; with the Redis bus,
from Redis).

What resuming means for each transport, and the seam between replay and live items, is in
:class:`ResumeState` and the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import parse_qsl

from gripd.core.history import OFF, HistoryPolicy, MemoryHistory, Replay
from gripd.core.publish import PublishItem

if TYPE_CHECKING:
    from gripd.core.config import Config
    from gripd.core.http import HttpResponse
    from gripd.core.routes import Route
    from gripd.io.listener.request import Request

EXPIRE_INTERVAL: Final = 5.0  # seconds between sweeps of items past history_ttl
RESUME_BUFFER_MAX: Final = 10_000  # live items one client's resume holds back, at most
RESUME_ID_MAX: Final = 1024  # a longer Last-Event-ID cannot be a stored id: treated as unknown
GONE_HEADER: Final = "Gripd-History"  # "resumed" or "gone" on a stream that asked to resume

ReplayDone = Callable[[Replay], None]


class HistoryReader(Protocol):
    """Reads a channel's history. ``read`` answers through ``done`` (at once, or later when the
    store is remote) and must include every stored item that will not also reach the reader
    live; ``after`` None means the newest ``limit`` items."""

    def read(self, channel: str, after: str | None, limit: int, done: ReplayDone) -> None: ...
    def set_policy(self, channel: str, policy: HistoryPolicy) -> None: ...


def route_policy(route: Route, config: Config) -> HistoryPolicy:
    """The history of channels a route's responses subscribe to: its own options, else the
    ``[gripd]`` defaults."""
    size = route.history_size if route.history_size is not None else config.history_size
    ttl = route.history_ttl if route.history_ttl is not None else config.history_ttl
    return HistoryPolicy(size, float(ttl)) if size > 0 else OFF


def resume_id(req: Request) -> str | None:
    """The id a reconnecting SSE client last saw: ``Last-Event-ID`` (what ``EventSource`` sends),
    else a ``last_event_id`` query parameter (for clients that cannot set headers)."""
    for k, v in req.headers:
        if len(k) == 13 and k.lower() == "last-event-id":
            return v[: RESUME_ID_MAX + 1]
    q = req.url.find("?")
    if q != -1 and "last_event_id=" in req.url:
        for k, v in parse_qsl(req.url[q + 1 :], keep_blank_values=True):
            if k == "last_event_id":
                return v[: RESUME_ID_MAX + 1]
    return None


def whole(r: Replay, limit: int) -> Replay:
    """``r`` if it reaches the newest stored item; a replay cut at ``limit`` would leave a gap
    before the live items, so it counts as ``gone`` (never skip silently)."""
    if r.status == "ok" and len(r.items) >= limit and r.items[-1].id != r.top:
        return Replay("gone", (), r.top, r.known)
    return r


class LocalHistory:
    """The in-memory store with a clock and a sweep timer: appended to by the pipeline, read
    by the holds of this process or (in the hub) by the workers' requests."""

    def __init__(self, store: MemoryHistory, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None

    def set_default(self, policy: HistoryPolicy) -> None:
        """A config reload changed ``history_size``/``history_ttl``."""
        self.store.set_default(policy)

    def start(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(EXPIRE_INTERVAL, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        self.store.expire(self.loop.time())
        self._timer = self.loop.call_later(EXPIRE_INTERVAL, self._sweep)

    def append(self, items: list[PublishItem]) -> None:
        self.store.append(items, self.loop.time())

    def read(self, channel: str, after: str | None, limit: int, done: ReplayDone) -> None:
        now = self.loop.time()
        store = self.store
        if after is None:
            done(store.latest(channel, limit, now))
        else:
            done(store.after(channel, after, limit, now))

    def set_policy(self, channel: str, policy: HistoryPolicy) -> None:
        self.store.set_policy(channel, policy)


class ResumeState:
    """A stream hold that is being resumed. Until the replay is sent nothing else is written
    (not even the response head, which says whether resuming worked): live items wait in
    ``buffer``. Afterwards, live items the store already had when it was read (``skip``:
    (channel, id) pairs, see :attr:`Replay.known`) are dropped until the first newer one: an
    item can reach a hold after the store has it (a rate-limited publish, a remote store).
    """

    __slots__ = (
        "buffer",
        "channels",
        "finish",
        "last_id",
        "response",
        "results",
        "skip",
        "timer",
    )

    def __init__(
        self, last_id: str, channels: list[str], response: HttpResponse | None = None
    ) -> None:
        self.last_id = last_id
        self.channels = channels
        self.response = response  # the origin's response, written when the replay is ready
        self.results: dict[str, Replay] = {}
        self.buffer: list[PublishItem] | None = []
        self.skip: set[tuple[str, str]] = set()
        self.timer: asyncio.TimerHandle | None = None
        # Ends the wait without the replay (the engine sets it): when the buffer is full.
        self.finish: Callable[[], None] | None = None

    def end(self) -> list[PublishItem]:
        """The wait is over (answered, timed out or full): what was held back, in order."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        buffer, self.buffer = self.buffer or [], None
        return buffer

    def hold_back(self, item: PublishItem) -> bool:
        """True when ``item`` is not to be delivered now (buffered or already replayed)."""
        buf = self.buffer
        if buf is not None:
            buf.append(item)
            if len(buf) >= RESUME_BUFFER_MAX and self.finish is not None:
                self.finish()  # no more waiting: what arrived goes out now, in order
            return True
        iid = item.id
        if iid is None:
            return False
        if (item.channel, iid) in self.skip:
            return True
        self.skip.clear()  # live items are newer than the replay from here on
        return False

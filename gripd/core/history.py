"""Per-channel history: the last published items of a channel, so a client that reconnects
can be sent what it missed (SSE ``Last-Event-ID``, a long-poll ``prev-id``, a WebSocket
subscribe with a last id) without a round trip to the origin.

Pushpin stores nothing; with history off (the default, ``history_size = 0``) gripd stores
nothing either. Only items that carry an ``id`` are stored: the id is the position a client
resumes from. Items without an id are delivered live and never replayed.

This module is the in-memory store (one instance; with workers it lives in the hub) and the
shared vocabulary (:class:`HistoryPolicy`, :class:`Replay`). Time is passed in (seconds on any
monotonic clock the caller keeps using).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final, Literal

from gripd.core.publish import PublishItem

READ_LIMIT_MAX: Final = 1000  # the most items one read returns (a larger limit is capped)

ReplayStatus = Literal["ok", "gone", "off"]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of a channel to keep: ``size`` items (0 = no history), each for ``ttl`` seconds
    (0 = no age limit)."""

    size: int = 0
    ttl: float = 0.0

    @property
    def on(self) -> bool:
        return self.size > 0


OFF: Final = HistoryPolicy()


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer to "what came after ``last_id``": ``ok`` with the items after it (oldest first,
    possibly none), ``gone`` when the id is not in the history (trimmed, expired, or never
    seen: the client cannot be resumed exactly), ``off`` when the channel keeps no history."""

    status: ReplayStatus
    items: tuple[PublishItem, ...] = ()
    top: str | None = None  # the newest stored id, when there is one
    # Every id stored when the read ran. A live item with one of these ids reached the store
    # before the read, so the client has it (at or before its last id, or in ``items``): a
    # resuming reader drops it. Items can reach a hold later than the store (a rate-limited
    # publish, another instance's copy through Redis), so the replayed ids alone are not enough.
    known: frozenset[str] = frozenset()


def gone_event(name: str, last_id: str) -> bytes:
    """The SSE event a resuming stream gets when its id is no longer stored
    (``history_gone_event``): the event name, and the id the client sent as data (line breaks
    removed, so it stays one event)."""
    asked = last_id.replace("\r", "").replace("\n", "")
    return f"event: {name}\ndata: {asked}\n\n".encode()


class _Channel:
    __slots__ = ("entries", "ids", "policy", "seq")

    def __init__(self, policy: HistoryPolicy) -> None:
        self.policy = policy
        # (sequence number, stored at, item); ids maps an item id to its newest sequence number
        self.entries: deque[tuple[int, float, PublishItem]] = deque()
        self.ids: dict[str, int] = {}
        self.seq = 0

    def trim(self, now: float) -> None:
        e = self.entries
        ids = self.ids
        size = self.policy.size
        ttl = self.policy.ttl
        while e and (len(e) > size or (ttl > 0 and now - e[0][1] >= ttl)):
            seq, _, item = e.popleft()
            if item.id is not None and ids.get(item.id) == seq:
                del ids[item.id]


class MemoryHistory:
    """Stored items of every channel with history, bounded by ``channels_max`` channels (the
    channel appended to least recently is forgotten first) and each channel's policy."""

    def __init__(self, default: HistoryPolicy, channels_max: int) -> None:
        self.default = default
        self.channels_max = channels_max
        self._overrides: dict[str, HistoryPolicy] = {}
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self.stored = 0  # items appended, over the store's life (a counter for metrics)
        # Whether anything can be stored at all (the default or some route's policy is on):
        # with history off, appending costs one attribute check per batch.
        self.active = default.on

    def policy(self, channel: str) -> HistoryPolicy:
        return self._overrides.get(channel, self.default)

    def set_default(self, policy: HistoryPolicy) -> None:
        """A config reload changed ``history_size``/``history_ttl``: channels without a route's
        own settings take ``policy`` (a smaller size trims at the channel's next append)."""
        old, self.default = self.default, policy
        for name, ch in self._channels.items():
            if name not in self._overrides and ch.policy == old:
                ch.policy = policy
        self.active = policy.on or any(p.on for p in self._overrides.values())

    def set_policy(self, channel: str, policy: HistoryPolicy) -> None:
        """A route's own history settings apply to ``channel`` (learnt when a client of that
        route subscribes). Bounded like the channels: the oldest override is forgotten."""
        ov = self._overrides
        if ov.get(channel) == policy:
            return
        ov.pop(channel, None)
        ov[channel] = policy
        if len(ov) > self.channels_max:
            del ov[next(iter(ov))]
        ch = self._channels.get(channel)
        if ch is not None:
            ch.policy = policy
        if policy.on:
            self.active = True

    def append(self, items: list[PublishItem], now: float) -> None:
        """Store the items of a published batch that carry an id, in order."""
        if not self.active:
            return
        chans = self._channels
        for item in items:
            iid = item.id
            if iid is None:
                continue
            name = item.channel
            ch = chans.get(name)
            if ch is None:
                policy = self.policy(name)
                if not policy.on:
                    continue
                ch = chans[name] = _Channel(policy)
                if len(chans) > self.channels_max:
                    chans.popitem(last=False)
            else:
                chans.move_to_end(name)
                if not ch.policy.on:
                    continue
            ch.seq += 1
            ch.entries.append((ch.seq, now, item))
            ch.ids[iid] = ch.seq
            ch.trim(now)
            self.stored += 1

    def after(self, channel: str, last_id: str, limit: int, now: float) -> Replay:
        """The items stored after ``last_id`` on ``channel``, oldest first, at most ``limit``
        (capped at :data:`READ_LIMIT_MAX`)."""
        ch = self._channels.get(channel)
        if ch is None:
            return Replay("gone" if self.policy(channel).on else "off")
        ch.trim(now)
        e = ch.entries
        top = e[-1][2].id if e else None
        seq = ch.ids.get(last_id)
        if seq is None:
            return Replay("gone", (), top, frozenset(ch.ids))
        first = seq - e[0][0] + 1 if e else 0  # entries are numbered without gaps
        limit = max(0, min(limit, READ_LIMIT_MAX))
        items = tuple(e[i][2] for i in range(first, min(len(e), first + limit)))
        return Replay("ok", items, top, frozenset(ch.ids))

    def latest(self, channel: str, limit: int, now: float) -> Replay:
        """The newest ``limit`` stored items of ``channel``, oldest first (the read API with no
        ``after``)."""
        ch = self._channels.get(channel)
        if ch is None:
            return Replay("ok" if self.policy(channel).on else "off")
        ch.trim(now)
        e = ch.entries
        limit = max(0, min(limit, READ_LIMIT_MAX))
        n = len(e)
        items = tuple(e[i][2] for i in range(max(0, n - limit), n))
        return Replay("ok", items, e[-1][2].id if e else None)

    def expire(self, now: float) -> None:
        """Drop what has outlived its ttl, and channels left empty (call every few seconds)."""
        chans = self._channels
        for name in [n for n, ch in chans.items() if ch.policy.ttl > 0]:
            ch = chans[name]
            ch.trim(now)
            if not ch.entries:
                del chans[name]

    def channel_count(self) -> int:
        return len(self._channels)

    def item_count(self) -> int:
        return sum(len(ch.entries) for ch in self._channels.values())

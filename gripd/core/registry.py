"""The subscription registry: which subscribers hold which channels.

Pure bookkeeping, no I/O: the engine asks it who gets a published item and tells it when a
subscriber comes or goes. A subscriber is any hashable object; the registry never calls it.
``first``/``last`` results let the caller react to a channel's first subscriber or last leaver
(ZeroMQ SUB interest, subscription stats, the first-subscription update of F22).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from gripd.core.wildcard import PrefixIndex, is_pattern, stem


class Registry:
    """Channel -> subscribers, and subscriber -> channels.

    With ``wildcard`` (``[gripd] wildcard_channels``), a subscription to a pattern
    (``news.*``) is also kept in a prefix index, and :meth:`receivers` adds its subscribers to
    those of every channel it matches."""

    __slots__ = ("_by_channel", "_by_sub", "_patterns", "wildcard")

    def __init__(self, *, wildcard: bool = False) -> None:
        self._by_channel: dict[str, dict[Hashable, None]] = {}
        self._by_sub: dict[Hashable, list[str]] = {}
        self.wildcard = wildcard
        self._patterns: PrefixIndex[Hashable] = PrefixIndex()

    def subscribe(self, sub: Hashable, channels: Iterable[str]) -> list[str]:
        """Add ``sub`` to ``channels``; returns the channels that had no subscriber before."""
        new: list[str] = []
        mine = self._by_sub.setdefault(sub, [])
        for ch in channels:
            members = self._by_channel.get(ch)
            if members is None:
                members = self._by_channel[ch] = {}
                new.append(ch)
            if sub not in members:
                members[sub] = None
                mine.append(ch)
                if self.wildcard and is_pattern(ch):
                    self._patterns.add(stem(ch), sub)
        return new

    def unsubscribe(self, sub: Hashable, channels: Iterable[str] | None = None) -> list[str]:
        """Remove ``sub`` from ``channels`` (all of its channels when None); returns the
        channels that now have no subscriber."""
        mine = self._by_sub.get(sub)
        if mine is None:
            return []
        drop = list(mine) if channels is None else [c for c in channels if c in mine]
        emptied: list[str] = []
        for ch in drop:
            members = self._by_channel.get(ch)
            if members is not None:
                members.pop(sub, None)
                if self.wildcard and is_pattern(ch):
                    self._patterns.remove(stem(ch), sub)
                if not members:
                    del self._by_channel[ch]
                    emptied.append(ch)
            mine.remove(ch)
        if not mine:
            del self._by_sub[sub]
        return emptied

    def subscribers(self, channel: str) -> list[Hashable]:
        """A snapshot of ``channel``'s subscribers, in subscription order."""
        members = self._by_channel.get(channel)
        return list(members) if members else []

    def receivers(self, channel: str) -> list[Hashable]:
        """Who gets an item published on ``channel``: its subscribers, then those of the
        patterns matching it; each subscriber once, however many of its subscriptions match."""
        members = self._by_channel.get(channel)
        patterns = self._patterns
        if not patterns:
            return list(members) if members else []
        matched = patterns.match(channel)
        if not matched:
            return list(members) if members else []
        if not members:
            return matched
        out = dict(members)
        out.update(dict.fromkeys(matched))
        return list(out)

    def channels(self) -> list[str]:
        """A snapshot of every channel that has a subscriber."""
        return list(self._by_channel)

    def channels_of(self, sub: Hashable) -> list[str]:
        return list(self._by_sub.get(sub, ()))

    def has_channel(self, channel: str) -> bool:
        return channel in self._by_channel

    def channel_count(self) -> int:
        return len(self._by_channel)

    def subscriber_count(self) -> int:
        return len(self._by_sub)

"""Wildcard channel patterns (``[gripd] wildcard_channels``): syntax and a prefix index.

With the option on, a channel name that ends in ``*`` is a *pattern*: it matches every channel
whose name starts with the part before the ``*`` (``news.*`` matches ``news.a`` and
``news.a.b``, not ``news`` nor ``sports.a``). A ``*`` anywhere else, or a name that is only
``*``, is an error. With the option off nothing here is used: ``*`` is an ordinary character
of a channel name, as in Pushpin.

:class:`PrefixIndex` answers "which patterns match this channel" by looking up the channel's
prefixes, only at the lengths some pattern has: the cost per publish is bounded by the
channel's length, not by the number of patterns held.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

WILDCARD = "*"

T = TypeVar("T", bound=Hashable)


def is_pattern(name: str) -> bool:
    """Whether ``name`` is a pattern (ends in ``*``); meaningful only with the option on."""
    return name.endswith(WILDCARD)


def pattern_error(name: str) -> str | None:
    """Why ``name`` is not a valid channel name under ``wildcard_channels``, or None."""
    star = name.find(WILDCARD)
    if star < 0:
        return None
    if star != len(name) - 1:
        return f'channel "{name}": "*" may only end a wildcard channel name'
    if star == 0:
        return 'channel "*": a wildcard channel needs a prefix before "*"'
    return None


def stem(pattern: str) -> str:
    """The prefix a pattern matches (``news.*`` -> ``news.``)."""
    return pattern[:-1]


def first_match(names: Iterable[str], channel: str) -> str | None:
    """The first pattern of ``names`` that covers ``channel`` (a hold's filters for an item
    that reached it through a pattern are those of the pattern named first)."""
    for name in names:
        if is_pattern(name) and channel.startswith(stem(name)):
            return name
    return None


def item_filters(
    channels: Sequence[str], filters: Mapping[str, list[str]], channel: str, wildcard: bool
) -> list[str] | None:
    """The filters (F35) of a subscriber holding ``channels`` for an item on ``channel``:
    those given with ``channel`` itself when it is held, else (``wildcard``) those of the first
    held pattern covering it. ``filters`` holds only channels that have some, so it is never
    searched for a pattern itself: that would take a pattern's filters for a channel the
    subscriber holds plainly, or a later pattern's filters over an earlier one without any."""
    if channel in channels or not wildcard:
        return filters.get(channel)
    key = first_match(channels, channel)
    return filters.get(key) if key is not None else None


class PrefixIndex(Generic[T]):
    """Prefix -> members (insertion-ordered), and the lookup of every member whose prefix
    starts a given channel name. Members are counted once per (prefix, member)."""

    __slots__ = ("_by_prefix", "_lengths", "_sorted")

    def __init__(self) -> None:
        self._by_prefix: dict[str, dict[T, None]] = {}
        self._lengths: dict[int, int] = {}  # prefix length -> prefixes of that length
        self._sorted: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def add(self, prefix: str, member: T) -> bool:
        """Add ``member`` under ``prefix``; True when the prefix was new."""
        members = self._by_prefix.get(prefix)
        if members is None:
            self._by_prefix[prefix] = {member: None}
            n = len(prefix)
            count = self._lengths.get(n, 0)
            self._lengths[n] = count + 1
            if not count:
                self._sorted = tuple(sorted(self._lengths))
            return True
        members[member] = None
        return False

    def remove(self, prefix: str, member: T) -> bool:
        """Remove ``member`` from ``prefix``; True when the prefix has no member left."""
        members = self._by_prefix.get(prefix)
        if members is None or member not in members:
            return False
        del members[member]
        if members:
            return False
        del self._by_prefix[prefix]
        n = len(prefix)
        count = self._lengths[n] - 1
        if count:
            self._lengths[n] = count
        else:
            del self._lengths[n]
            self._sorted = tuple(sorted(self._lengths))
        return True

    def members(self, prefix: str) -> list[T]:
        members = self._by_prefix.get(prefix)
        return list(members) if members else []

    def matching_prefixes(self, channel: str) -> Iterator[str]:
        """The held prefixes that start ``channel``, shortest first."""
        by_prefix = self._by_prefix
        size = len(channel)
        for n in self._sorted:
            if n > size:
                break
            p = channel[:n]
            if p in by_prefix:
                yield p

    def match(self, channel: str) -> list[T]:
        """Every member of every prefix that starts ``channel`` (a member under two matching
        prefixes is listed once), shortest prefix first."""
        by_prefix = self._by_prefix
        if not by_prefix:
            return []
        out: dict[T, None] = {}
        size = len(channel)
        for n in self._sorted:
            if n > size:
                break
            members = by_prefix.get(channel[:n])
            if members:
                out.update(members)
        return list(out)

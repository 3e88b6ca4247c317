"""Channel interest: which channels have local subscribers, by mode, with the one linger.

A channel is *interesting* while it has a subscriber, and for ``subscription_linger`` seconds
after its last long-poll (``response``) subscriber left: Pushpin keeps such a channel
subscribed "in case the client long-polls again" (F22), so its last-id survives between polls
(F32) and its ZeroMQ SUB subscription is not dropped and re-made on every poll (F31).

``ChannelInterest`` is the one place that decides this. It is pure: callers pass the time in
and get back whether the channel was *gained* (became interesting) or which channels were
*lost*. Sequencing, the ZeroMQ SUB socket and the bus consume gained/lost; the rate limiter
reads the per-mode counts.

With ``wildcard`` (``[gripd] wildcard_channels``) a pattern (``news.*``) is counted like any
channel, and the interesting patterns are also kept in a prefix index: :meth:`matching` lists
the patterns an actual channel matches (the rate limiter weighs their subscribers too).
"""

from __future__ import annotations

from collections import OrderedDict

from gripd.core.wildcard import PrefixIndex, is_pattern, stem

#: Subscription modes, in the order of the per-mode counts.
MODES: tuple[str, ...] = ("response", "stream", "ws")
_INDEX = {m: i for i, m in enumerate(MODES)}


class ChannelInterest:
    """Per-channel subscriber counts by mode, and lingering channels with their expiry."""

    __slots__ = ("_counts", "_lingering", "_patterns", "linger", "wildcard")

    def __init__(self, linger: float, *, wildcard: bool = False) -> None:
        self.linger = float(linger)
        self.wildcard = wildcard
        self._counts: dict[str, list[int]] = {}  # channel -> [response, stream, ws]
        self._lingering: OrderedDict[str, float] = OrderedDict()  # channel -> expiry, in order
        self._patterns: PrefixIndex[str] = PrefixIndex()  # interesting patterns, by stem

    def matching(self, channel: str) -> list[str]:
        """The interesting patterns that match ``channel`` (none without ``wildcard``)."""
        return self._patterns.match(channel) if self._patterns else []

    def has_patterns(self) -> bool:
        return bool(self._patterns)

    def _gained(self, channel: str) -> None:
        if self.wildcard and is_pattern(channel):
            self._patterns.add(stem(channel), channel)

    def _lost(self, channel: str) -> None:
        if self.wildcard and is_pattern(channel):
            self._patterns.remove(stem(channel), channel)

    def __contains__(self, channel: object) -> bool:
        """Whether ``channel`` is interesting (has subscribers or lingers)."""
        return channel in self._counts or channel in self._lingering

    def __len__(self) -> int:
        return len(self._counts.keys() | self._lingering.keys())

    def channels(self) -> list[str]:
        """Every interesting channel."""
        return list(self._counts) + [c for c in self._lingering if c not in self._counts]

    def counts(self, channel: str) -> list[int] | None:
        """Subscribers of ``channel`` by mode (``MODES`` order); None when it has none. The
        list is live: read it, do not keep it."""
        return self._counts.get(channel)

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._counts

    def add(self, channel: str, mode: str) -> bool:
        """A subscriber of ``mode`` joined ``channel``; True when the channel was gained."""
        gained = channel not in self
        counts = self._counts.get(channel)
        if counts is None:
            counts = self._counts[channel] = [0, 0, 0]
        counts[_INDEX[mode]] += 1
        if mode == "response":
            self._lingering.pop(channel, None)  # a new long-poll ends the linger
        if gained:
            self._gained(channel)
        return gained

    def remove(self, channel: str, mode: str, now: float) -> bool:
        """A subscriber of ``mode`` left ``channel``; True when the channel was lost now.

        When the last ``response`` subscriber leaves and ``linger`` > 0, the channel lingers
        until ``now + linger`` (see :meth:`expire`); when the last subscriber of another mode
        leaves and none remains, the channel is lost at once, lingering or not."""
        counts = self._counts.get(channel)
        if counts is None:
            return False
        i = _INDEX[mode]
        if counts[i] > 0:
            counts[i] -= 1
        if counts[i]:
            return False
        if not any(counts):
            del self._counts[channel]
        if mode == "response" and self.linger > 0:
            if channel not in self._lingering:
                self._lingering[channel] = now + self.linger
            return False
        if channel in self._counts:
            return False
        # The last subscriber of another mode left: the channel goes now, even if a long-poll
        # left it lingering earlier (Pushpin removes the subscription at once here).
        self._lingering.pop(channel, None)
        self._lost(channel)
        return True

    def deadline(self) -> float | None:
        """When the oldest linger expires, or None when nothing lingers."""
        for when in self._lingering.values():
            return when
        return None

    def expire(self, now: float) -> list[str]:
        """Lingers that ended by ``now``; returns the channels lost with them."""
        lost: list[str] = []
        lingering = self._lingering
        while lingering:
            channel, when = next(iter(lingering.items()))
            if when > now:
                break
            del lingering[channel]
            if channel not in self._counts:
                lost.append(channel)
                self._lost(channel)
        return lost

    def clear(self) -> list[str]:
        """Forget everything; returns the channels that were interesting."""
        lost = self.channels()
        self._counts.clear()
        self._lingering.clear()
        self._patterns = PrefixIndex()
        return lost

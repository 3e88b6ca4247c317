"""The local channel-interest tracker: :class:`~gripd.core.interest.ChannelInterest` on a clock.

The engine reports every subscription here (and nowhere else); the tracker tells its
listeners when a channel is gained or lost, with the one linger timer. Listeners: the publish
pipeline (sequencing state, F32), the ZeroMQ SUB socket (F31) and the bus (which channels this
process wants from other processes or instances).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gripd.core.interest import ChannelInterest

log = logging.getLogger("gripd.channels")


class InterestListener(Protocol):
    """Told when a channel becomes interesting here and when it stops being so."""

    def gained(self, channel: str) -> None: ...

    def lost(self, channel: str) -> None: ...


class ChannelTracker:
    """Owns the channel interest of one process and its linger timer."""

    def __init__(
        self,
        linger: float,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        wildcard: bool = False,
    ) -> None:
        self.interest = ChannelInterest(linger, wildcard=wildcard)
        self._loop = loop
        self.listeners: list[InterestListener] = []
        self._timer: asyncio.TimerHandle | None = None
        self._when: float | None = None
        self._stopped = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def add_listener(self, listener: InterestListener) -> None:
        self.listeners.append(listener)

    def __contains__(self, channel: object) -> bool:
        return channel in self.interest

    def subscribed(self, channel: str, mode: str) -> bool:
        """A subscriber joined; True (and listeners told) when the channel was gained."""
        if not self.interest.add(channel, mode):
            return False
        for listener in self.listeners:
            listener.gained(channel)
        return True

    def unsubscribed(self, channel: str, mode: str) -> None:
        if self.interest.remove(channel, mode, self.loop.time()):
            self._lose([channel])
        else:
            self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._when = None

    def _lose(self, channels: list[str]) -> None:
        for channel in channels:
            for listener in self.listeners:
                try:
                    listener.lost(channel)
                except Exception:  # one listener's bug must not keep the others uninformed
                    log.exception("channel %s: interest listener failed", channel)

    def _arm(self) -> None:
        when = self.interest.deadline()
        if when is None or self._stopped or when == self._when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._when = when
        self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = self._when = None
        self._lose(self.interest.expire(self.loop.time()))
        self._arm()

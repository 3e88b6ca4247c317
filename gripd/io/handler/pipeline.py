"""The publish pipeline: dedup (F33) -> sequencing (F32) -> rate limit/HWM (F34) -> engine.

Every publish input (HTTP control API, ZeroMQ PULL/SUB, the command socket) hands its items to
``PublishPipeline.publish`` instead of the engine, as Pushpin's ``handlePublishItem`` feeds its
``Sequencer`` whose ready items go through the ``RateLimiter`` (src/handler/engine.cpp).

What "the channel has local subscribers" means for sequencing is Pushpin's ``cs.subs``: the
channel interest of :class:`~gripd.io.handler.channels.ChannelTracker` (a channel joins on any
subscription and leaves when its last subscriber is gone, lingering ``subscription_linger``
seconds after its last long-poll, so last-ids survive between polls). The pipeline is one of the
tracker's listeners: a lost channel's waiting items are discarded and its last-id forgotten.

Rate limiting differs from Pushpin in granularity, not in rate: Pushpin queues one action per
(subscriber, format) keyed by the subscriber's route id; the engine here delivers whole items,
so an item is queued once with the weight of all its deliveries (subscribers of each format it
carries, times its block count when ``message_block_size`` > 0) under a single key. The long-run
deliveries/s are the same; the deliveries of one item are not spread over batches, and per-route
fairness is not modelled. HWM: an item is dropped, as a whole, when Pushpin would have dropped
at least one of its deliveries; an item alone in the queue is always accepted. Items nobody
would receive bypass the queue.

Wildcard channels (``[gripd] wildcard_channels``): an item on a channel that only a pattern
(``news.*``) holds is not sequenced by prev-id (the sequencer keeps state only for channels
held as such, so a pattern matching many channels cannot grow it) but is delivered, and weighs
on the rate limiter by the pattern's subscribers.

Two timers at most (``loop.call_at``), one each for the sequencer's 1 s expiry tick and the
limiter's next batch; none per item (the linger timer is the tracker's).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gripd.core.config import Config
from gripd.core.publish import PublishItem
from gripd.core.ratelimit import RateLimiter
from gripd.core.sequencer import EXPIRE_INTERVAL, Sequencer
from gripd.core.stats import delivery_blocks
from gripd.io.handler.channels import ChannelTracker
from gripd.io.handler.history import LocalHistory
from gripd.io.observe.events import Events

_LOG = logging.getLogger("gripd.pipeline")

#: Drop reasons this module adds to the sequencer's (counter keys, ``Events.dropped`` reasons).
DROP_HWM = "hwm"
#: Items waiting for the rate limiter when ``message_rate`` is set and ``message_hwm`` is not
#: (Pushpin queues without limit then). Past it an item is dropped as over the HWM, so a
#: publisher faster than the rate cannot grow memory without bound.
RATE_QUEUE_MAX = 100_000
DROP_UNSUBSCRIBED = "seq_unsubscribed"

_Action = tuple[PublishItem, str]


class PipelineEngine(Protocol):
    """What the pipeline needs from the engine (``gripd.io.handler.engine.Engine`` fits)."""

    def publish(self, items: list[PublishItem], *, source: str) -> None: ...

    def recover(self) -> None: ...


class PublishPipeline:
    """Implements the ``PublishSink`` protocol in front of the engine; listens to channel
    interest (``channels``: the process's tracker; a private one when None, for tests)."""

    def __init__(
        self,
        config: Config,
        engine: PipelineEngine,
        *,
        channels: ChannelTracker | None = None,
        sequencer: Sequencer | None = None,
        events_out: Events | None = None,
        logger: logging.Logger | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.engine = engine
        self.events_out = events_out or Events()
        self.log = logger or _LOG
        self._loop = loop
        self.sequencer = sequencer or Sequencer(
            message_wait_ms=config.message_wait, id_cache_ttl=config.id_cache_ttl
        )
        if channels is None:
            channels = ChannelTracker(config.subscription_linger, loop)
        self.channels = channels
        self.interest = channels.interest
        channels.add_listener(self)
        # The HWM is checked here (item granularity, see the module doc), not by the limiter.
        self.limiter: RateLimiter[_Action] = RateLimiter(config.message_rate, -1)
        self.reconfigure(config, sequencer=False)
        self.counters: dict[str, int] = {}  # drops by reason
        self._sources: dict[int, str] = {}  # id(waiting item) -> its input, while it waits
        self._seq_timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        self._rate_when: float | None = None
        self._stopped = False
        # Where accepted items are kept for resuming clients (in memory; None with the Redis
        # bus, which stores them in Redis as they are published).
        self.history: LocalHistory | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = self._loop or asyncio.get_running_loop()
        self._stopped = False

    async def stop(self) -> None:
        """Cancel the timers; items still waiting or queued are discarded."""
        self._stopped = True
        for h in (self._seq_timer, self._rate_timer):
            if h is not None:
                h.cancel()
        self._seq_timer = self._rate_timer = None
        self._rate_when = None

    def reconfigure(self, config: Config, *, sequencer: bool = True) -> None:
        """F34/F35 settings, at start and on a config reload: the rate, the HWM, the block
        size and (``sequencer``) ``message_wait``/``id_cache_ttl``. Queued items keep their
        place."""
        self.hwm = config.message_hwm
        self.block_size = config.message_block_size
        self.limiter.set_rate(config.message_rate)
        self.limited = config.message_rate > 0 or config.message_hwm > 0
        if sequencer:
            self.sequencer.configure(config.message_wait, config.id_cache_ttl)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- PublishSink -------------------------------------------------------------------------

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        """Run ``items`` (one input's batch, in order) through dedup, sequencing, rate limit."""
        now = self.loop.time()
        seq = self.sequencer
        subs = self.interest
        ready: list[_Action] = []
        for item in items:
            out, reason = seq.add(item, seq=not item.no_seq and item.channel in subs, now=now)
            if reason is not None:
                self._drop(reason, 1)
                self.log.debug(
                    "sequencer: channel=%s id=%s dropped: %s", item.channel, item.id, reason
                )
                continue
            if not out:  # waits for its prev-id
                self._sources[id(item)] = source
                self._arm_seq_timer()
                continue
            sources = self._sources
            for it in out:
                ready.append((it, sources.pop(id(it), source) if sources else source))
        if ready:
            self._deliver(ready, now)

    def recover(self) -> None:
        """F27 ``recover``: Pushpin forgets every last-id, then retries the holds."""
        self.sequencer.clear_last_ids()
        self.engine.recover()

    # -- hold-side helpers (F22/F35) -----------------------------------------------------------

    def last_id(self, channel: str) -> str | None:
        return self.sequencer.last_id(channel)

    def forget_last_id(self, channel: str) -> None:
        self.sequencer.forget_last_id(channel)

    def has_subscribers(self, channel: str) -> bool:
        """Whether items for ``channel`` are sequenced now (Pushpin ``cs.subs``)."""
        return channel in self.interest

    # -- delivery ----------------------------------------------------------------------------

    def _deliver(self, ready: list[_Action], now: float) -> None:
        # Items are stored for history in the order they come out of sequencing (items for no
        # subscriber skip the rate limiter's queue, so delivery order is no order to store
        # by), all but those the hwm drops: they are never delivered.
        history = self.history
        if history is not None and not history.store.active:
            history = None
        if not self.limited:
            if history is not None:
                history.append([a[0] for a in ready])
            self._publish(ready)
            return
        limiter = self.limiter
        hwm = self.hwm
        direct: list[_Action] = []
        kept: list[PublishItem] = []
        for action in ready:
            weight = self._weight(action[0])
            if weight <= 0:
                direct.append(action)  # nobody receives it; Pushpin queues nothing either
                kept.append(action[0])
                continue
            if hwm > 0 and limiter.queued_weight("") + min(weight, hwm) > hwm:
                self._drop(DROP_HWM, weight)
                self.log.warning("exceeded publish hwm (%d), dropping message", hwm)
                continue
            if hwm <= 0 and limiter.queued_count() >= RATE_QUEUE_MAX:
                self._drop(DROP_HWM, weight)
                self.log.warning(
                    "rate limiter queue full (%d items, message_hwm unset), dropping message",
                    RATE_QUEUE_MAX,
                )
                continue
            limiter.add("", action, weight, now)
            kept.append(action[0])
        if history is not None:
            history.append(kept)
        if direct:
            self._publish(direct)
        self._arm_rate_timer()

    def _weight(self, item: PublishItem) -> int:
        """Deliveries this item would make now (x blocks with ``message_block_size``). With
        ``wildcard_channels`` the subscribers of the patterns matching the channel count too
        (a subscriber of both the channel and a pattern is counted twice: an upper bound)."""
        interest = self.interest
        counts = interest.counts(item.channel)
        if interest.has_patterns():
            for pattern in interest.matching(item.channel):
                more = interest.counts(pattern)
                if more is not None:
                    counts = [a + b for a, b in zip(counts or (0, 0, 0), more, strict=True)]
        if counts is None:
            return 0
        total = 0
        hr, hs, ws = item.http_response, item.http_stream, item.ws_message
        if counts[0] and hr is not None:
            total += counts[0] * self._blocks(item, hr.body)
        if counts[1] and hs is not None:
            total += counts[1] * self._blocks(item, hs.content)
        if counts[2] and ws is not None:
            total += counts[2] * self._blocks(item, ws.content)
        return total

    def _blocks(self, item: PublishItem, body: bytes | None) -> int:
        """Pushpin's weight of one delivery: its block count, or 1 when block sizes are off."""
        blocks = delivery_blocks(item.size, body, self.block_size)
        return 1 if blocks < 0 else blocks

    def _publish(self, actions: list[_Action]) -> None:
        """Hand items to the engine, one call per run of items from the same input."""
        engine = self.engine
        start = 0
        for i in range(1, len(actions) + 1):
            if i == len(actions) or actions[i][1] != actions[start][1]:
                engine.publish([a[0] for a in actions[start:i]], source=actions[start][1])
                start = i

    def _drop(self, reason: str, count: int) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + count
        self.events_out.dropped(reason, count)

    # -- timers ------------------------------------------------------------------------------

    def _arm_seq_timer(self) -> None:
        # Pushpin starts a 1 s repeating check when the first item starts waiting.
        if self._seq_timer is None and not self._stopped:
            self._seq_timer = self.loop.call_later(EXPIRE_INTERVAL, self._seq_tick)

    def _seq_tick(self) -> None:
        self._seq_timer = None
        try:
            now = self.loop.time()
            released = self.sequencer.expire(now)
            if released:
                for it in released:
                    self.log.debug("timing out item channel=[%s] id=[%s]", it.channel, it.id)
                src = self._sources
                self._deliver([(it, src.pop(id(it), "timeout")) for it in released], now)
        except Exception:  # a timer must never die
            self.log.exception("pipeline: sequencer expiry failed")
        if self.sequencer.has_pending():
            self._arm_seq_timer()

    def _arm_rate_timer(self) -> None:
        when = self.limiter.deadline()
        if when == self._rate_when:
            return
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self._rate_when = when
        if when is not None and not self._stopped:
            self._rate_timer = self.loop.call_at(when, self._rate_tick)

    def _rate_tick(self) -> None:
        self._rate_timer = None
        self._rate_when = None
        batch: list[_Action] = []

        def execute(action: _Action) -> bool:
            batch.append(action)
            return True

        try:
            self.limiter.run(self.loop.time(), execute)
            if batch:
                self._publish(batch)
        except Exception:
            self.log.exception("pipeline: rate-limited delivery failed")
        self._arm_rate_timer()

    # -- channel interest (InterestListener) ----------------------------------------------

    def gained(self, channel: str) -> None:
        """Nothing to do: the sequencer starts keeping the channel's state on its next item."""

    def lost(self, channel: str) -> None:
        discarded = self.sequencer.channel_removed(channel)
        for it in discarded:
            self._sources.pop(id(it), None)
        if discarded:
            self._drop(DROP_UNSUBSCRIBED, len(discarded))

"""Publish sequencing by ``prev-id`` (F32) and the id dedup cache (F33), sans-I/O.

Behaviour follows Pushpin 1.36 ``Sequencer`` and ``PublishLastIds`` (src/handler/sequencer.cpp,
publishlastids.cpp) step by step:

- Dedup first, for every item with an ``id`` when ``id_cache_ttl`` > 0, whether or not it will
  be sequenced: an item whose (channel, id) was seen less than ``id_cache_ttl`` seconds ago is
  dropped silently; the first sighting's expiry is not extended.
- Only items with ``seq`` (no ``no-seq`` and the channel has local subscribers; the caller
  decides) are sequenced. Others pass through untouched and leave the last-id alone.
- A sequenced item whose ``prev-id`` differs from the channel's known last-id waits, keyed by
  its ``prev-id`` (one per prev-id, at most 100 per channel; extra ones are dropped). When an
  item is delivered, the chain of waiting items continuing from its id follows it in order.
- Waiting items are released, oldest first, once they are ``message_wait`` ms old (Pushpin
  checks every second: the driver calls ``expire(now)`` on its own 1 s tick).
- Delivering a sequenced item sets the channel's last-id to its id, or forgets it when the item
  has no id. At most 1,000,000 last-ids are kept; the least recently *set* one is evicted
  (reads do not refresh, as in Pushpin).

Time is passed in as ``now`` in seconds (any monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from gripd.core.publish import PublishItem

#: Pushpin ``CHANNEL_PENDING_MAX``: waiting items per channel.
CHANNEL_PENDING_MAX = 100
#: Pushpin ``EXPIRE_INTERVAL``: how often (seconds) waiting items are checked for release.
EXPIRE_INTERVAL = 1.0
#: Pushpin ``PublishLastIds(1000000)``: channels whose last-id is remembered.
LAST_IDS_MAX = 1_000_000
#: (channel, id) pairs kept for dedup (F33). Pushpin bounds its cache by TTL only; gripd also
#: bounds it by count, evicting the oldest sighting first, so a publisher of unique ids at a
#: high rate cannot grow memory without bound (the dedup window then shortens).
ID_CACHE_MAX = 1_000_000

#: Drop reasons returned by ``Sequencer.add`` (also the counter keys in the pipeline).
DROP_DUPLICATE_ID = "duplicate_id"
DROP_SAME_PREV_ID = "seq_same_prev_id"
DROP_PENDING_FULL = "seq_pending_full"

#: ``add`` result: (items now ready, in delivery order; drop reason or None).
AddResult = tuple[list[PublishItem], str | None]


@mypyc_attr(allow_interpreted_subclasses=True)
class LastIds:
    """Channel -> last published id, bounded, evicting the least recently set (LRU on write)."""

    __slots__ = ("_ids", "max")

    def __init__(self, max_size: int = LAST_IDS_MAX) -> None:
        self.max = max_size
        self._ids: OrderedDict[str, str] = OrderedDict()

    def get(self, channel: str) -> str | None:
        return self._ids.get(channel)

    def set(self, channel: str, item_id: str) -> None:
        ids = self._ids
        if channel in ids:
            ids[channel] = item_id
            ids.move_to_end(channel)
            return
        while ids and len(ids) >= self.max:
            ids.popitem(last=False)
        ids[channel] = item_id

    def remove(self, channel: str) -> None:
        self._ids.pop(channel, None)

    def items(self) -> list[tuple[str, str]]:
        """Every (channel, last id), least recently set first."""
        return list(self._ids.items())

    def clear(self) -> None:
        self._ids.clear()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, channel: object) -> bool:
        return channel in self._ids


@dataclass(slots=True)
class _Pending:
    time: float
    item: PublishItem
    token: int  # key in the time-ordered index


class Sequencer:
    """F32/F33 state for one publish pipeline. All methods are O(1) amortised per item."""

    __slots__ = (
        "_by_channel",
        "_by_time",
        "_dedup",
        "_next_token",
        "id_cache_max",
        "id_cache_ttl",
        "last_ids",
        "message_wait",
        "pending_max",
    )

    def configure(self, message_wait_ms: int, id_cache_ttl: int) -> None:
        """F35 ``message_wait`` and ``id_cache_ttl`` (at start, and on a config reload; what
        waits keeps its place)."""
        self.message_wait = message_wait_ms / 1000.0
        self.id_cache_ttl = id_cache_ttl

    def __init__(
        self,
        *,
        message_wait_ms: int = 5000,
        id_cache_ttl: int = 0,
        id_cache_max: int = ID_CACHE_MAX,
        last_ids_max: int = LAST_IDS_MAX,
        pending_max: int = CHANNEL_PENDING_MAX,
    ) -> None:
        self.configure(message_wait_ms, id_cache_ttl)
        self.id_cache_max = id_cache_max
        self.pending_max = pending_max
        self.last_ids = LastIds(last_ids_max)
        # channel -> prev-id -> waiting item
        self._by_channel: dict[str, dict[str, _Pending]] = {}
        # token -> (channel, prev-id), in arrival order (== time order: ``now`` never decreases)
        self._by_time: OrderedDict[int, tuple[str, str]] = OrderedDict()
        # (channel, id) -> expiry time, in insertion order (== expiry order: the TTL is fixed)
        self._dedup: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._next_token = 0

    # -- adding ----------------------------------------------------------------------------

    def add(self, item: PublishItem, *, seq: bool, now: float) -> AddResult:
        """Take one published item; return the items ready for delivery and a drop reason.

        ``seq`` is Pushpin's condition ``!item.noSeq && channel has local subscribers``.
        The result is ``([], None)`` when the item was buffered to wait for its predecessor.
        """
        if self.id_cache_ttl > 0:
            dedup = self._dedup
            while dedup:
                key, expires = next(iter(dedup.items()))
                if expires > now:
                    break
                del dedup[key]
            if item.id is not None:
                key = (item.channel, item.id)
                if key in dedup:
                    return [], DROP_DUPLICATE_ID  # seen within the TTL (F33)
                if len(dedup) >= self.id_cache_max:
                    dedup.popitem(last=False)  # the oldest sighting
                dedup[key] = now + self.id_cache_ttl

        if not seq:
            return [item], None

        channel = item.channel
        last_id = self.last_ids.get(channel)
        prev_id = item.prev_id
        if last_id is not None and prev_id is not None and last_id != prev_id:
            waiting = self._by_channel.get(channel)
            if waiting is None:
                waiting = self._by_channel[channel] = {}
            if prev_id in waiting:
                return [], DROP_SAME_PREV_ID
            if len(waiting) >= self.pending_max:
                return [], DROP_PENDING_FULL
            token = self._next_token
            self._next_token = token + 1
            waiting[prev_id] = _Pending(now, item, token)
            self._by_time[token] = (channel, prev_id)
            return [], None

        out: list[PublishItem] = []
        self._send(item, out)
        return out, None

    def _send(self, item: PublishItem, out: list[PublishItem]) -> None:
        """Deliver ``item`` and the chain of waiting items that continues from its id."""
        channel = item.channel
        last_ids = self.last_ids
        if item.id is not None:
            last_ids.set(channel, item.id)
        else:
            last_ids.remove(channel)
        out.append(item)
        waiting = self._by_channel.get(channel)
        if waiting is None:
            return
        next_id = item.id
        while next_id is not None and waiting:
            p = waiting.pop(next_id, None)
            if p is None:
                break
            del self._by_time[p.token]
            nxt = p.item
            if nxt.id is not None:
                last_ids.set(channel, nxt.id)
            else:
                last_ids.remove(channel)
            out.append(nxt)
            next_id = nxt.id
        if not waiting:
            del self._by_channel[channel]

    # -- time ------------------------------------------------------------------------------

    def expire(self, now: float) -> list[PublishItem]:
        """Release every item that has waited ``message_wait`` or longer, oldest first, each
        followed by its chain; returns them in delivery order."""
        out: list[PublishItem] = []
        threshold = now - self.message_wait
        by_time = self._by_time
        while by_time:
            token, (channel, prev_id) = next(iter(by_time.items()))
            waiting = self._by_channel[channel]
            p = waiting[prev_id]
            if p.time > threshold:
                break
            del by_time[token]
            del waiting[prev_id]
            if not waiting:
                del self._by_channel[channel]
            self._send(p.item, out)
        return out

    def next_deadline(self) -> float | None:
        """When the oldest waiting item becomes releasable (``now`` units), or None."""
        if not self._by_time:
            return None
        channel, prev_id = self._by_time[next(iter(self._by_time))]
        return self._by_channel[channel][prev_id].time + self.message_wait

    def has_pending(self) -> bool:
        return bool(self._by_time)

    def pending_count(self, channel: str | None = None) -> int:
        if channel is None:
            return len(self._by_time)
        return len(self._by_channel.get(channel, ()))

    # -- subscriptions -----------------------------------------------------------------------

    def channel_removed(self, channel: str) -> list[PublishItem]:
        """The channel lost its local subscribers: discard its waiting items (Pushpin drops
        them undelivered) and forget its last-id. Returns the discarded items."""
        self.last_ids.remove(channel)
        waiting = self._by_channel.pop(channel, None)
        if not waiting:
            return []
        for p in waiting.values():
            del self._by_time[p.token]
        return [p.item for p in waiting.values()]

    def last_id(self, channel: str) -> str | None:
        """The channel's last delivered id (F35 ``build-id``, hold-side prev-id checks)."""
        return self.last_ids.get(channel)

    def forget_last_id(self, channel: str) -> None:
        """Drop one channel's last-id (Pushpin does so on a hold's last-ID inconsistency)."""
        self.last_ids.remove(channel)

    def clear_last_ids(self) -> None:
        """F27 ``recover``: forget every last-id (waiting items stay)."""
        self.last_ids.clear()

    def dedup_size(self) -> int:
        return len(self._dedup)

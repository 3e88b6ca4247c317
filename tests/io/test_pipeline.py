"""The publish pipeline (F32, F33, F34) on a real event loop with a fake engine."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import gripd.io.handler.pipeline as pipeline_mod
from gripd.core.config import Config, default_config
from gripd.core.history import HistoryPolicy, MemoryHistory
from gripd.core.publish import (
    HttpResponseFormat,
    HttpStreamFormat,
    PublishItem,
    WsMessageFormat,
)
from gripd.io.handler.history import LocalHistory
from gripd.io.handler.pipeline import PublishPipeline
from gripd.io.observe.events import Events


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[list[PublishItem], str]] = []
        self.times: list[float] = []
        self.recovered = 0

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.calls.append((list(items), source))
        self.times.extend(asyncio.get_running_loop().time() for _ in items)

    def recover(self) -> None:
        self.recovered += 1

    @property
    def ids(self) -> list[str | None]:
        return [i.id for items, _ in self.calls for i in items]


class Recorder(Events):
    def __init__(self) -> None:
        self.drops: list[tuple[str, int]] = []

    def dropped(self, reason: str, count: int = 1) -> None:
        self.drops.append((reason, count))


def item(
    id_: str | None,
    prev: str | None = None,
    ch: str = "c",
    *,
    no_seq: bool = False,
    fmt: str = "stream",
    size: int | None = None,
) -> PublishItem:
    p = PublishItem(channel=ch, id=id_, prev_id=prev, no_seq=no_seq, size=size)
    body = f"{id_}\n".encode()
    if fmt == "stream":
        p.http_stream = HttpStreamFormat(content=body)
    elif fmt == "response":
        p.http_response = HttpResponseFormat(body=body)
    else:
        p.ws_message = WsMessageFormat(content=body)
    return p


def config(**kw: Any) -> Config:
    base: dict[str, Any] = {
        "message_rate": -1,
        "message_hwm": -1,
        "message_wait": 5000,
        "id_cache_ttl": 0,
    }
    base.update(kw)
    return dataclasses.replace(default_config("."), **base)


Make = Callable[..., PublishPipeline]


@pytest.fixture
async def make(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Make]:
    # Expiry is checked every 50 ms instead of Pushpin's 1 s, to keep the tests short.
    monkeypatch.setattr(pipeline_mod, "EXPIRE_INTERVAL", 0.05)
    made: list[PublishPipeline] = []

    def _make(engine: FakeEngine, events: Events | None = None, **kw: Any) -> PublishPipeline:
        p = PublishPipeline(config(**kw), engine, events_out=events)
        made.append(p)
        return p

    yield _make
    for p in made:
        await p.stop()


async def test_passes_items_through_by_default(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng)
    await p.start()
    p.publish([item("1"), item("2")], source="http")
    assert eng.calls == [([item("1"), item("2")], "http")]  # synchronously, one call


async def test_reorders_only_with_subscribers(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng)
    await p.start()
    # no subscriber: not sequenced, delivered as it comes, and no last-id is recorded
    p.publish([item("1"), item("3", "2")], source="http")
    assert eng.ids == ["1", "3"]
    assert p.last_id("c") is None
    p.channels.subscribed("c", "stream")
    assert p.has_subscribers("c")
    eng.calls.clear()
    p.publish([item("1")], source="http")  # first message on the channel: delivered
    p.publish([item("3", "2")], source="zmq-pull")
    p.publish([item("4", "3")], source="http")
    assert eng.ids == ["1"]
    p.publish([item("2", "1")], source="command")
    assert eng.ids == ["1", "2", "3", "4"]
    # each item keeps the source it came from
    assert [(i.id, s) for items, s in eng.calls for i in items] == [
        ("1", "http"),
        ("2", "command"),
        ("3", "zmq-pull"),
        ("4", "http"),
    ]


async def test_no_seq_bypasses_reordering(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item("1"), item("3", "2", no_seq=True)], source="http")
    assert eng.ids == ["1", "3"]
    assert p.last_id("c") == "1"


async def test_gap_released_after_message_wait(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_wait=200)
    await p.start()
    p.channels.subscribed("c", "stream")
    loop = asyncio.get_running_loop()
    p.publish([item("1")], source="http")
    t0 = loop.time()
    p.publish([item("3", "2")], source="http")
    await asyncio.sleep(0.1)
    assert eng.ids == ["1"]
    await asyncio.sleep(0.3)
    assert eng.ids == ["1", "3"]
    assert 0.2 <= eng.times[-1] - t0 < 0.35  # message_wait plus at most one expiry tick
    assert p.last_id("c") == "3"


async def test_unsubscribe_discards_waiting_and_forgets_last_id(make: Make) -> None:
    eng = FakeEngine()
    rec = Recorder()
    p = make(eng, rec, message_wait=100)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item("1"), item("3", "2")], source="http")
    p.channels.unsubscribed("c", "stream")
    assert not p.has_subscribers("c")
    assert p.last_id("c") is None
    assert p.counters == {"seq_unsubscribed": 1}
    assert rec.drops == [("seq_unsubscribed", 1)]
    await asyncio.sleep(0.3)
    assert eng.ids == ["1"]  # the waiting item was never delivered


async def test_long_poll_channel_lingers(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, subscription_linger=1)
    await p.start()
    p.channels.subscribed("c", "response")
    p.publish([item("1", fmt="response")], source="http")
    p.channels.unsubscribed("c", "response")
    # between polls the channel still counts as subscribed, so its last-id survives
    assert p.has_subscribers("c")
    assert p.last_id("c") == "1"
    p.channels.subscribed("c", "response")  # polls again: the linger ends
    p.channels.unsubscribed("c", "response")
    await asyncio.sleep(0.5)
    assert p.has_subscribers("c")
    await asyncio.sleep(0.8)
    assert not p.has_subscribers("c")
    assert p.last_id("c") is None


async def test_stream_leaving_ends_a_lingering_channel(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, subscription_linger=60)
    await p.start()
    p.channels.subscribed("c", "response")
    p.channels.subscribed("c", "stream")
    p.channels.unsubscribed("c", "response")
    assert p.has_subscribers("c")
    p.channels.unsubscribed("c", "stream")  # Pushpin removes the sub at once here
    assert not p.has_subscribers("c")


async def test_other_modes_keep_the_channel(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng)
    await p.start()
    p.channels.subscribed("c", "ws")
    p.channels.subscribed("c", "stream")
    p.channels.unsubscribed("c", "ws")
    assert p.has_subscribers("c")
    p.channels.unsubscribed("c", "stream")
    assert not p.has_subscribers("c")
    p.channels.unsubscribed("c", "stream")  # unbalanced events are ignored


async def test_dedup(make: Make) -> None:
    eng = FakeEngine()
    rec = Recorder()
    p = make(eng, rec, id_cache_ttl=60)
    await p.start()
    p.publish([item("a"), item("a"), item("a", ch="d"), item(None), item(None)], source="http")
    assert eng.ids == ["a", "a", None, None]
    assert p.counters == {"duplicate_id": 1}
    assert rec.drops == [("duplicate_id", 1)]


async def test_sequencer_drops_are_counted(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item("1"), item("3", "2"), item("3x", "2")], source="http")
    assert p.counters == {"seq_same_prev_id": 1}


async def test_rate_limit_spreads_deliveries(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_rate=10)  # one delivery per 100 ms
    await p.start()
    p.channels.subscribed("c", "stream")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    p.publish([item(str(n)) for n in range(4)], source="http")
    assert eng.ids == []  # queued; the first batch runs on the next loop pass
    await asyncio.sleep(0.45)
    assert eng.ids == ["0", "1", "2", "3"]
    gaps = [b - a for a, b in zip(eng.times, eng.times[1:], strict=False)]
    assert eng.times[0] - t0 < 0.05
    assert all(0.09 <= g < 0.2 for g in gaps), gaps


async def test_rate_counts_deliveries_not_items(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_rate=10)
    await p.start()
    for _ in range(3):
        p.channels.subscribed("c", "stream")
    p.publish([item("0"), item("1")], source="http")
    await asyncio.sleep(0.05)
    assert eng.ids == ["0"]  # 3 deliveries: the next item waits 3 batches
    await asyncio.sleep(0.2)
    assert eng.ids == ["0"]
    await asyncio.sleep(0.15)
    assert eng.ids == ["0", "1"]


async def test_items_nobody_receives_skip_the_queue(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_rate=1)
    await p.start()
    p.channels.subscribed("c", "response")
    p.publish([item("s", fmt="stream"), item("w", fmt="ws", ch="c")], source="http")
    assert eng.ids == ["s", "w"]  # no stream or ws subscriber: weight 0


async def test_hwm_drops_with_pushpin_log(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    eng = FakeEngine()
    rec = Recorder()
    p = make(eng, rec, message_rate=1, message_hwm=2)
    await p.start()
    p.channels.subscribed("c", "stream")
    with caplog.at_level(logging.WARNING, logger="gripd.pipeline"):
        p.publish([item(str(n)) for n in range(4)], source="http")
    assert p.counters == {"hwm": 2}
    assert rec.drops == [("hwm", 1), ("hwm", 1)]
    assert caplog.messages == ["exceeded publish hwm (2), dropping message"] * 2
    await asyncio.sleep(0.05)
    assert eng.ids == ["0"]


async def test_rate_without_hwm_queue_is_bounded(
    make: Make, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pushpin queues without limit when message_rate is set and message_hwm is not; gripd caps
    # the queue at RATE_QUEUE_MAX items and drops past it (counted as over the HWM).
    monkeypatch.setattr(pipeline_mod, "RATE_QUEUE_MAX", 3)
    eng = FakeEngine()
    rec = Recorder()
    p = make(eng, rec, message_rate=1, message_hwm=-1)
    await p.start()
    p.channels.subscribed("c", "stream")
    with caplog.at_level(logging.WARNING, logger="gripd.pipeline"):
        p.publish([item(str(n)) for n in range(6)], source="http")
    # "0".."2" fill the queue (the first batch runs on the next timer turn); the rest drop
    assert p.counters == {"hwm": 3}
    assert (
        caplog.messages
        == ["rate limiter queue full (3 items, message_hwm unset), dropping message"] * 3
    )
    await asyncio.sleep(0.05)
    assert eng.ids == ["0"]


async def test_hwm_without_rate_only_bounds_a_burst(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_hwm=3)
    await p.start()
    for _ in range(2):
        p.channels.subscribed("c", "stream")
    # 2 deliveries per item: the second item would make 4 > 3
    p.publish([item("0"), item("1")], source="http")
    assert p.counters == {"hwm": 2}
    await asyncio.sleep(0.01)
    assert eng.ids == ["0"]
    p.publish([item("2")], source="http")  # the queue drained: accepted again
    await asyncio.sleep(0.01)
    assert eng.ids == ["0", "2"]


async def test_an_item_alone_is_never_dropped_by_hwm(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_hwm=2)
    await p.start()
    for _ in range(5):
        p.channels.subscribed("c", "stream")
    p.publish([item("0")], source="http")
    await asyncio.sleep(0.01)
    assert eng.ids == ["0"]
    assert p.counters == {}


async def test_block_size_weights(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_rate=10, message_block_size=10)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item("big", size=25), item("next")], source="http")  # 3 blocks, then 1
    await asyncio.sleep(0.05)
    assert eng.ids == ["big"]
    await asyncio.sleep(0.35)
    assert eng.ids == ["big", "next"]


async def test_recover_clears_last_ids(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item("1")], source="http")
    p.recover()
    assert eng.recovered == 1
    assert p.last_id("c") is None
    p.publish([item("5", "4")], source="http")
    assert eng.ids == ["1", "5"]


async def test_stop_cancels_timers(make: Make) -> None:
    eng = FakeEngine()
    p = make(eng, message_rate=1, message_wait=50)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item("1"), item("2"), item("4", "3")], source="http")
    await p.stop()
    await asyncio.sleep(0.2)
    assert eng.ids == []


async def test_engine_failure_keeps_the_timer_alive(make: Make) -> None:
    class Flaky(FakeEngine):
        def publish(self, items: list[PublishItem], *, source: str) -> None:
            if items[0].id == "0":
                raise RuntimeError("boom")
            super().publish(items, source=source)

    eng = Flaky()
    p = make(eng, message_rate=100)
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item(str(n)) for n in range(5)], source="http")
    await asyncio.sleep(0.2)
    assert eng.ids == ["3", "4"]  # the first batch (3 items) was lost with the error


async def test_history_stores_in_sequencing_order_but_not_hwm_drops(make: Make) -> None:
    """Items for nobody skip the rate limiter's queue, so history stores in the order items
    leave sequencing (not delivery order); an item the hwm drops is never stored."""
    eng = FakeEngine()
    p = make(eng, message_rate=1, message_hwm=2)
    store = MemoryHistory(HistoryPolicy(100, 0), 100)
    p.history = LocalHistory(store, asyncio.get_running_loop())
    await p.start()
    p.channels.subscribed("c", "stream")
    p.publish([item(str(n)) for n in range(4)] + [item("x", ch="free")], source="http")
    assert p.counters == {"hwm": 2}
    assert eng.ids == ["x"]  # delivered at once; "0" waits in the rate limiter's queue
    stored = store.latest("c", 10, 0.0)
    assert [i.id for i in stored.items] == ["0", "1"]  # "2" and "3" were dropped by the hwm
    assert [i.id for i in store.latest("free", 10, 0.0).items] == ["x"]

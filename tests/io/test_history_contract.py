"""The history contract (gripd.io.handler.history.HistoryReader), one suite run against the
in-memory store (LocalHistory over MemoryHistory) and the Redis Streams store of the Redis bus
(RedisHistory, on a real redis-server).

Contract: a channel with history keeps its last ``size`` items that carry an id, each for
``ttl`` seconds; ``read(after=id)`` answers ``ok`` with the items after that id (oldest first,
at most ``limit``), ``gone`` when the id is not kept (trimmed, expired, never seen), ``off``
when the channel keeps no history; ``read(after=None)`` gives the newest ``limit`` items; a
route's policy (``set_policy``) overrides the default for its channels.

Redis only: the stream's order is the order in which subscribers get the items, whoever
published; a read of a channel the bus holds runs only once Redis confirmed the subscription;
an entry that does not decode is skipped, and a key of the wrong type never stops publishing; a
read waits for Redis to come up, and answers ``gone`` if it does not within ``READ_TIMEOUT``; a
flushed script cache and a restarted server (policies set again) are recovered from; with
history off nothing is stored and the plain (S)PUBLISH is sent; a route policy turns history on
at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gripd.core.history import OFF, READ_LIMIT_MAX, HistoryPolicy, MemoryHistory, Replay
from gripd.core.itemwire import encode_items
from gripd.core.publish import HttpStreamFormat, PublishItem
from gripd.io.bus.redis import RedisBus
from gripd.io.bus.redis_history import READ_TIMEOUT
from gripd.io.handler.history import HistoryReader, LocalHistory
from tests.core.test_itemwire import full_item
from tests.support.procs import free_ports
from tests.support.redis import RedisServer, running_redis

#: Seconds any wait in this suite may take before the test fails.
WAIT = 10.0
CH = "news"


def item(n: int | str, channel: str = CH, *, with_id: bool = True) -> PublishItem:
    return PublishItem(
        channel,
        id=str(n) if with_id else None,
        http_stream=HttpStreamFormat(content=f"item {n}\n".encode()),
        meta={"n": str(n)},
    )


def ids(r: Replay) -> list[str | None]:
    return [i.id for i in r.items]


class RecordingSink:
    """A BusSink that keeps what it got, in order."""

    def __init__(self) -> None:
        self.got: list[PublishItem] = []

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.got.extend(items)


async def wait_until(done: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``done`` (the bus's counters and sinks have no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        await asyncio.sleep(0.005)


@dataclass
class Store:
    """One history implementation, set up for a test: ``append`` stores a published batch
    (returns once it is stored), ``history`` is the reader."""

    kind: str
    history: HistoryReader
    append: Callable[[list[PublishItem]], Awaitable[None]]
    bus: RedisBus | None = None
    server: RedisServer | None = None

    async def read(self, channel: str, after: str | None, limit: int = 100) -> Replay:
        fut: asyncio.Future[Replay] = asyncio.get_running_loop().create_future()
        self.history.read(channel, after, limit, fut.set_result)
        async with asyncio.timeout(WAIT):
            return await fut


MakeStore = Callable[..., Awaitable[Store]]


@contextlib.asynccontextmanager
async def memory_stores(tmp_path: Path) -> AsyncIterator[MakeStore]:
    made: list[LocalHistory] = []

    async def make(default: HistoryPolicy = OFF, routes: bool = True) -> Store:
        local = LocalHistory(MemoryHistory(default, 10_000), asyncio.get_running_loop())
        local.start()
        made.append(local)

        async def append(items: list[PublishItem]) -> None:
            local.append(items)

        return Store("memory", local, append)

    try:
        yield make
    finally:
        for local in made:
            local.stop()


@contextlib.asynccontextmanager
async def redis_stores(tmp_path: Path) -> AsyncIterator[MakeStore]:
    buses: list[RedisBus] = []
    with running_redis(tmp_path / "redis") as server:

        async def make(default: HistoryPolicy = OFF, routes: bool = True) -> Store:
            sink = RecordingSink()
            bus = RedisBus(
                sink,
                server.url,
                node_id=f"n{len(buses)}",
                history=default,
                history_routes=routes,
            )
            buses.append(bus)
            await bus.start()
            await bus.settled(WAIT)

            async def append(items: list[PublishItem]) -> None:
                want = bus.counters["published"] + len(items)
                bus.publish(items, source="test")
                await wait_until(lambda: bus.counters["published"] >= want)

            return Store("redis", bus.history, append, bus, server)

        try:
            yield make
        finally:
            for bus in buses:
                await bus.stop()


STORES = {"memory": memory_stores, "redis": redis_stores}


@pytest.fixture(params=sorted(STORES))
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    async with STORES[request.param](tmp_path) as maker:
        yield maker


@pytest.fixture
async def make_redis(tmp_path: Path) -> AsyncIterator[MakeStore]:
    async with redis_stores(tmp_path) as maker:
        yield maker


def client(store: Store) -> aioredis.Redis:
    assert store.server is not None
    return aioredis.Redis(host=store.server.host, port=store.server.port)


# --- the contract, for every store -----------------------------------------------------------


async def test_read_after_an_id_gives_what_came_after_it(make: MakeStore) -> None:
    s = await make(HistoryPolicy(10, 0))
    sent = [item(n) for n in range(1, 6)]
    await s.append(sent[:2])
    await s.append([item("x", "other"), sent[2], item("no-id", with_id=False)])
    await s.append(sent[3:])
    r = await s.read(CH, "2")
    assert (r.status, r.top) == ("ok", "5")
    assert list(r.items) == sent[2:]  # equal in every field, oldest first
    assert ids(await s.read(CH, "4", limit=1)) == ["5"]
    r = await s.read(CH, "5")
    assert (r.status, r.items, r.top) == ("ok", (), "5")
    assert ids(await s.read("other", "x")) == []


async def test_a_read_names_every_id_stored_when_it_ran(make: MakeStore) -> None:
    """``known``: what a resuming reader drops when it arrives live later (it was stored
    before the read, so the client has it already or got it in the replay)."""
    s = await make(HistoryPolicy(10, 0))
    await s.append([item(n) for n in range(1, 7)])
    r = await s.read(CH, "3")
    assert r.known == {str(n) for n in range(1, 7)}
    r = await s.read(CH, "nope")
    assert (r.status, r.known) == ("gone", {str(n) for n in range(1, 7)})


async def test_read_without_after_gives_the_newest(make: MakeStore) -> None:
    s = await make(HistoryPolicy(10, 0))
    await s.append([item(n) for n in range(1, 6)])
    r = await s.read(CH, None, limit=2)
    assert (r.status, ids(r), r.top) == ("ok", ["4", "5"], "5")
    assert ids(await s.read(CH, None)) == ["1", "2", "3", "4", "5"]
    r = await s.read(CH, None, limit=0)
    assert (r.status, r.items, r.top) == ("ok", (), "5")
    r = await s.read("unknown", None)
    assert (r.status, r.items, r.top) == ("ok", (), None)


async def test_a_huge_limit_is_capped(make: MakeStore) -> None:
    s = await make(HistoryPolicy(READ_LIMIT_MAX + 5, 0))
    await s.append([item(n) for n in range(READ_LIMIT_MAX + 5)])
    r = await s.read(CH, "0", limit=10**9)
    assert ids(r) == [str(n) for n in range(1, READ_LIMIT_MAX + 1)]
    assert len((await s.read(CH, None, limit=10**9)).items) == READ_LIMIT_MAX


async def test_trimmed_by_size_is_gone(make: MakeStore) -> None:
    s = await make(HistoryPolicy(3, 0))
    for n in range(1, 6):
        await s.append([item(n)])
    for gone in ("1", "2"):
        r = await s.read(CH, gone)
        assert (r.status, r.items, r.top) == ("gone", (), "5")
    assert ids(await s.read(CH, "3")) == ["4", "5"]
    assert ids(await s.read(CH, None)) == ["3", "4", "5"]


async def test_an_unknown_id_is_gone(make: MakeStore) -> None:
    s = await make(HistoryPolicy(10, 0))
    await s.append([item(1)])
    assert (await s.read(CH, "nope")).status == "gone"
    assert (await s.read(CH, "")).status == "gone"
    r = await s.read("empty", "1")
    assert (r.status, r.top) == ("gone", None)


async def test_a_channel_without_history_is_off(make: MakeStore) -> None:
    s = await make(OFF)
    await s.append([item(1), item(2)])
    assert (await s.read(CH, "1")).status == "off"
    assert (await s.read(CH, None)).status == "off"


async def test_a_route_policy_overrides_the_default(make: MakeStore) -> None:
    s = await make(OFF)
    s.history.set_policy(CH, HistoryPolicy(2, 0))
    s.history.set_policy(CH, HistoryPolicy(2, 0))  # idempotent
    await s.append([item(n) for n in range(1, 4)] + [item(9, "other")])
    r = await s.read(CH, None)
    assert (r.status, ids(r)) == ("ok", ["2", "3"])
    assert (await s.read("other", None)).status == "off"
    # And a route may turn history off where the default keeps it.
    s2 = await make(HistoryPolicy(10, 0))
    s2.history.set_policy("quiet", OFF)
    await s2.append([item(1, "quiet"), item(1, "loud")])
    assert (await s2.read("quiet", None)).status == "off"
    assert ids(await s2.read("loud", None)) == ["1"]


async def test_items_older_than_the_ttl_are_gone(make: MakeStore) -> None:
    s = await make(HistoryPolicy(10, 1.0))
    await s.append([item("a")])
    await asyncio.sleep(0.6)
    await s.append([item("b")])
    await asyncio.sleep(0.6)  # a is 1.2 s old, b 0.6 s
    r = await s.read(CH, None)
    assert (r.status, ids(r)) == ("ok", ["b"])
    assert (await s.read(CH, "a")).status == "gone"
    assert ids(await s.read(CH, "b")) == []
    await asyncio.sleep(0.6)
    assert (await s.read(CH, None)).items == ()
    assert (await s.read(CH, "b")).status == "gone"


# --- Redis only ------------------------------------------------------------------------------


async def test_stream_order_is_the_delivery_order(make_redis: MakeStore) -> None:
    """Two instances publish into one channel at once (single items and batches of several
    items of the channel); the stream holds them in the order a subscriber got them."""
    a = await make_redis(HistoryPolicy(2000, 0))
    b = await make_redis(HistoryPolicy(2000, 0))
    watcher = await make_redis(HistoryPolicy(2000, 0))
    assert a.bus and b.bus and watcher.bus
    watcher.bus.subscribe(CH)
    await watcher.bus.settled(WAIT)
    sink = watcher.bus.sink
    assert isinstance(sink, RecordingSink)

    async def publisher(bus: RedisBus, name: str) -> None:
        for n in range(100):
            if n % 3:
                bus.publish([item(f"{name}{n}")], source="test")
            else:  # several items of the channel in one message, and one without an id
                batch = [item(f"{name}{n}.{k}") for k in range(3)]
                bus.publish([*batch, item(f"{name}{n}.x", with_id=False)], source="test")
            if n % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(publisher(a.bus, "a"), publisher(b.bus, "b"))
    total = 2 * sum(1 if n % 3 else 4 for n in range(100))
    await wait_until(lambda: len(sink.got) == total)
    delivered = [i.id for i in sink.got if i.id is not None]
    r = await watcher.read(CH, None, limit=READ_LIMIT_MAX)
    assert ids(r) == delivered
    assert {i.id[0] for i in sink.got if i.id} == {"a", "b"}
    assert a.bus.counters["history_stored"] + b.bus.counters["history_stored"] == len(delivered)


async def test_a_read_waits_for_the_subscription(
    make_redis: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seam: the read of a channel the bus holds is sent only once Redis confirmed the
    subscription, so replay + live covers every item published meanwhile, with no gap."""
    pub = await make_redis(HistoryPolicy(1000, 0))
    reader = await make_redis(HistoryPolicy(1000, 0))
    assert pub.bus and reader.bus
    pbus, rbus = pub.bus, reader.bus
    sent_subscribed: list[bool] = []  # at each command the reader's bus sends: subscribed?
    command = rbus._command

    def spy(channel: str, cmd: tuple[Any, ...], reply: Callable[[object], None]) -> None:
        sent_subscribed.append(rbus.is_subscribed(CH))
        command(channel, cmd, reply)

    monkeypatch.setattr(rbus, "_command", spy)
    await pub.append([item(0)])
    sink = rbus.sink
    assert isinstance(sink, RecordingSink)
    running = True

    async def publish() -> None:
        n = 1
        while running:
            pbus.publish([item(n)], source="test")
            n += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(publish())
    try:
        await asyncio.sleep(0.05)
        rbus.subscribe(CH)
        replay = await reader.read(CH, "0", READ_LIMIT_MAX)
        await wait_until(lambda: len(sink.got) >= 20)
    finally:
        running = False
        await task
    assert sent_subscribed == [True]
    assert replay.status == "ok" and replay.items
    seen = [int(i.id or "") for i in replay.items]
    seen += [int(i.id or "") for i in sink.got if int(i.id or "") > seen[-1]]
    assert seen == list(range(1, seen[-1] + 1))


async def test_a_malformed_entry_is_skipped(make_redis: MakeStore) -> None:
    s = await make_redis(HistoryPolicy(10, 0))
    assert s.bus
    await s.append([item(1), item(2)])
    r = client(s)
    try:
        key = s.bus.history.stream_key(CH)
        await r.xadd(key, {"i": "bad", "d": b"not a message"})
        await r.xadd(key, {"i": "other", "d": encode_items([item("o", "elsewhere")], "n")})
        await r.xadd(key, {"d": b"no id"})
    finally:
        await r.aclose()
    await s.append([item(3)])
    got = await s.read(CH, "1")
    assert (got.status, ids(got)) == ("ok", ["2", "3"])
    assert s.bus.counters["history_skipped"] == 3
    assert ids(await s.read(CH, "bad")) == ["3"]  # a resume from a bad entry's id still works


async def test_full_item_round_trips(make_redis: MakeStore) -> None:
    it = full_item()
    s = await make_redis(HistoryPolicy(10, 0))
    await s.append([item(0, it.channel), it])
    r = await s.read(it.channel, "0")
    assert r.items == (it,)


async def test_ttl_expires_the_stream_key(make_redis: MakeStore) -> None:
    s = await make_redis(HistoryPolicy(10, 30.0))
    assert s.bus
    s.history.set_policy("forever", HistoryPolicy(10, 0))
    await s.append([item(1), item(1, "forever")])
    r = client(s)
    try:
        assert 0 < await r.pttl(s.bus.history.stream_key(CH)) <= 30_000
        assert await r.pttl(s.bus.history.stream_key("forever")) == -1
        policy_ttl = await r.pttl(s.bus.history.policy_key("forever"))
        assert policy_ttl > 3_600_000
        assert await r.exists(s.bus.history.policy_key(CH)) == 0
    finally:
        await r.aclose()


async def test_only_items_with_an_id_and_history_on_reach_redis(make_redis: MakeStore) -> None:
    off = await make_redis(OFF, routes=False)
    on = await make_redis(HistoryPolicy(10, 0))
    await off.append([item(1, "a"), item(2, "a")])
    await on.append([item(1, "b", with_id=False)])
    assert (await off.read("a", None)).status == "off"
    r = client(on)
    try:
        assert await r.keys("*") == []
        stats = await r.info("commandstats")
    finally:
        await r.aclose()
    assert "cmdstat_evalsha" not in stats  # plain (S)PUBLISH both times
    assert on.bus and off.bus and off.bus.counters["history_stored"] == 0


async def test_set_policy_is_sent_once(make_redis: MakeStore) -> None:
    s = await make_redis(OFF)
    assert s.bus
    for _ in range(5):
        s.history.set_policy(CH, HistoryPolicy(3, 10))
    s.history.set_policy("other", HistoryPolicy(3, 10))
    await s.append([item(1)])
    r = client(s)
    try:
        stats = await r.info("commandstats")
        assert await r.get(s.bus.history.policy_key(CH)) == b"3 10000"
    finally:
        await r.aclose()
    assert stats["cmdstat_set"]["calls"] == 2


async def test_unreachable_redis_answers_gone_in_bounded_time() -> None:
    port = free_ports(1)[0]
    bus = RecordingSink()
    rb = RedisBus(bus, f"redis://127.0.0.1:{port}", node_id="x", history=HistoryPolicy(10, 0))
    await rb.start()
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        fut: asyncio.Future[Replay] = loop.create_future()
        rb.history.read(CH, "1", 10, fut.set_result)
        async with asyncio.timeout(READ_TIMEOUT + 2):
            r = await fut
        assert r.status == "gone"
        assert loop.time() - began >= READ_TIMEOUT * 0.9  # it waited for Redis, bounded
        assert rb.counters["history_read_errors"] == 1
    finally:
        await rb.stop()


async def test_a_flushed_script_cache_is_recovered(make_redis: MakeStore) -> None:
    s = await make_redis(HistoryPolicy(10, 0))
    assert s.bus
    await s.append([item(1)])
    r = client(s)
    try:
        await r.script_flush()
    finally:
        await r.aclose()
    s.bus.publish([item(2)], source="test")  # lost the scripts: reconnects, loads them again
    await wait_until(lambda: s.bus is not None and s.bus.counters["reconnects"] == 1)
    await s.bus.settled(WAIT)
    await s.append([item(3)])
    assert ids(await s.read(CH, "1")) == ["3"]


async def test_policies_are_set_again_after_a_restart(make_redis: MakeStore) -> None:
    s = await make_redis(OFF)
    assert s.bus and s.server
    s.history.set_policy(CH, HistoryPolicy(2, 0))
    await s.append([item(1)])
    s.server.restart()  # an empty server
    await wait_until(lambda: s.bus is not None and s.bus.counters["reconnects"] == 1)
    await s.bus.settled(WAIT)
    await s.append([item(n) for n in range(2, 5)])
    assert ids(await s.read(CH, None)) == ["3", "4"]


async def test_a_stream_key_of_another_type_does_not_stop_publishing(
    make_redis: MakeStore,
) -> None:
    s = await make_redis(HistoryPolicy(10, 0))
    assert s.bus
    s.bus.subscribe(CH)
    await s.bus.settled(WAIT)
    r = client(s)
    try:
        await r.set(s.bus.history.stream_key(CH), b"not a stream")
        await r.sadd(s.bus.history.policy_key("other"), b"not a policy")
    finally:
        await r.aclose()
    await s.append([item(1), item(2), item(1, "other")])
    sink = s.bus.sink
    assert isinstance(sink, RecordingSink)
    await wait_until(lambda: len(sink.got) == 2)  # published all the same, through Redis
    assert s.bus.counters["history_write_errors"] == 1
    assert s.bus.counters["publish_failed"] == 0
    assert (await s.read(CH, "1")).status == "gone"
    assert s.bus.counters["history_read_errors"] == 1
    assert ids(await s.read("other", None)) == ["1"]  # a bad policy key: the default applies


async def test_large_histories_keep_exactly_size_items(make: MakeStore) -> None:
    """Past 1000 items Redis trims in blocks; what a read sees is still the last ``size``."""
    s = await make(HistoryPolicy(1000, 0))
    for n in range(0, 1150, 50):
        await s.append([item(k) for k in range(n, n + 50)])
    assert (await s.read(CH, "149")).status == "gone"
    r = await s.read(CH, "150", limit=READ_LIMIT_MAX)
    assert ids(r) == [str(k) for k in range(151, 1150)]
    assert ids(await s.read(CH, None, limit=READ_LIMIT_MAX))[0] == "150"


async def test_a_route_policy_turns_history_on_where_it_was_off(make_redis: MakeStore) -> None:
    """Routes reloaded with history options: the instance stores from then on."""
    s = await make_redis(OFF, routes=False)
    assert s.bus
    await s.append([item(1)])
    assert (await s.read(CH, None)).status == "off"
    s.history.set_policy("other", OFF)  # an off policy changes nothing
    assert (await s.read(CH, None)).status == "off"
    s.history.set_policy(CH, HistoryPolicy(5, 0))
    await s.append([item(2), item(3)])
    assert ids(await s.read(CH, "2")) == ["3"]
    assert (await s.read("other", None)).status == "off"
    assert s.bus.counters["reconnects"] == 0


async def test_a_read_waits_for_redis_to_come_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    bus = RedisBus(RecordingSink(), server.url, node_id="late", history=HistoryPolicy(10, 0))
    await bus.start()  # Redis is not there yet: the bus retries in the background
    try:
        fut: asyncio.Future[Replay] = asyncio.get_running_loop().create_future()
        bus.history.read(CH, None, 10, fut.set_result)
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(READ_TIMEOUT + 2):
            r = await fut
        assert (r.status, r.items) == ("ok", ())
        assert bus.counters["history_read_errors"] == 0
    finally:
        await bus.stop()
        server.stop()

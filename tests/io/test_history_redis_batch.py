"""History writes on the Redis bus, batch by batch (gripd.io.bus.redis_history): the messages of
one published batch go through one script call (several past ``GROUP_MAX`` channels or
``GROUP_ITEMS_MAX`` items), which stores and publishes each of them, on a real redis-server.

Every message of a batch is stored and delivered exactly once, whatever its place in its call
(also when the batch is longer than one pipelined write); a message Redis refuses to publish is
delivered here, once, while the others of its call go through Redis; the pipeline packer keeps
the order and packs plain commands as redis-py does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from gripd.core.history import READ_LIMIT_MAX, HistoryPolicy
from gripd.core.publish import PublishItem
from gripd.io.bus.redis import PIPELINE_MAX, RedisBus
from gripd.io.bus.redis_history import GROUP_ITEMS_MAX, GROUP_MAX, pack_pipeline
from tests.io.test_history_contract import (
    WAIT,
    MakeStore,
    RecordingSink,
    Store,
    client,
    ids,
    item,
    redis_stores,
    wait_until,
)
from tests.support.redis import running_redis


@pytest.fixture
async def make_redis(tmp_path: Path) -> AsyncIterator[MakeStore]:
    async with redis_stores(tmp_path) as maker:
        yield maker


async def evalsha_calls(store: Store) -> int:
    r = client(store)
    try:
        stats = await r.info("commandstats")
    finally:
        await r.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def batch_of(channels: int, tag: str) -> list[PublishItem]:
    """One item with an id on channels 0, 3, ...; two on 1, 4, ...; one without on 2, 5, ..."""
    out: list[PublishItem] = []
    for c in range(channels):
        ch = f"c{c}"
        if c % 3 == 0:
            out.append(item(f"{tag}{c}", ch))
        elif c % 3 == 1:
            out += [item(f"{tag}{c}a", ch), item(f"{tag}{c}b", ch)]
        else:
            out.append(item(f"{tag}{c}", ch, with_id=False))
    return out


async def test_every_message_of_a_long_batch_is_stored_and_delivered_once(
    make_redis: MakeStore,
) -> None:
    channels = GROUP_MAX * 2 + 50
    s = await make_redis(HistoryPolicy(10, 60.0))
    bus = s.bus
    assert bus is not None
    for c in range(channels):
        bus.subscribe(f"c{c}")
    await bus.settled(WAIT)
    sink = bus.sink
    assert isinstance(sink, RecordingSink)
    before = await evalsha_calls(s)
    # Two batches queued before the sender runs: more messages than one pipelined write, so
    # the write's end falls inside a script call.
    assert 2 * channels > PIPELINE_MAX
    first, second = batch_of(channels, "x"), batch_of(channels, "y")
    bus.publish(first, source="test")
    bus.publish(second, source="test")
    want = first + second
    await wait_until(lambda: len(sink.got) >= len(want))
    assert Counter(i.id or i.meta["n"] for i in sink.got) == Counter(
        i.id or i.meta["n"] for i in want
    )
    for c in (0, 1, 2):  # per channel, in publish order
        ch = f"c{c}"
        assert [i for i in sink.got if i.channel == ch] == [i for i in want if i.channel == ch]
    with_id = sum(1 for i in want if i.id is not None)
    assert bus.counters["history_stored"] == with_id
    assert bus.counters["history_write_errors"] == 0
    assert bus.counters["publish_failed"] == 0
    assert bus.counters["published"] == len(want)
    # ceil(channels / GROUP_MAX) calls per batch
    assert await evalsha_calls(s) - before == 2 * -(-channels // GROUP_MAX)
    assert ids(await s.read("c1", None)) == ["x1a", "x1b", "y1a", "y1b"]
    assert ids(await s.read(f"c{channels - 2}", "x" + str(channels - 2) + "a")) == [
        f"x{channels - 2}b",
        f"y{channels - 2}a",
        f"y{channels - 2}b",
    ]
    assert (await s.read("c2", None)).items == ()  # no id: not stored


async def test_a_call_holds_at_most_group_items_max_items(make_redis: MakeStore) -> None:
    s = await make_redis(HistoryPolicy(GROUP_ITEMS_MAX, 0))
    assert s.bus is not None
    before = await evalsha_calls(s)
    per = GROUP_ITEMS_MAX // 2 + 1  # two channels' items do not fit in one call
    batch = [item(f"{c}-{k}", f"big{c}") for c in range(3) for k in range(per)]
    await s.append(batch)
    assert await evalsha_calls(s) - before == 3
    assert s.bus.counters["history_stored"] == 3 * per
    got = await s.read("big2", None, limit=READ_LIMIT_MAX)
    assert ids(got) == [f"2-{k}" for k in range(per)]


async def test_a_refused_publish_is_delivered_here_once(tmp_path: Path) -> None:
    """An ACL that forbids one channel: its message is delivered locally (counted in
    ``publish_failed``), the others of the same call go through Redis."""
    with running_redis(tmp_path / "redis") as server:
        admin = aioredis.Redis(host=server.host, port=server.port)
        try:
            await admin.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", "pub", "on", ">pw", "~*", "resetchannels", "&gripd:ok*", "+@all"
            )
        finally:
            await admin.aclose()
        sink = RecordingSink()
        bus = RedisBus(
            sink,
            f"redis://pub:pw@{server.host}:{server.port}",
            node_id="n0",
            history=HistoryPolicy(10, 0),
        )
        await bus.start()
        try:
            await bus.settled(WAIT)
            for ch in ("ok1", "ok2"):
                bus.subscribe(ch)
            await bus.settled(WAIT)
            batch = [item(1, "ok1"), item(2, "secret"), item(3, "ok2")]
            bus.publish(batch, source="test")
            await wait_until(lambda: len(sink.got) >= 3)
            assert sorted(i.id or "" for i in sink.got) == ["1", "2", "3"]
            assert bus.counters["publish_failed"] == 1
            assert bus.counters["published"] == 2
            assert bus.counters["received"] == 2  # ok1 and ok2 came back through Redis
            assert bus.counters["history_stored"] == 3  # stored before the refused publish
        finally:
            await bus.stop()


def test_pack_pipeline_keeps_order_and_packs_tuples_like_redis_py() -> None:
    conn = Connection()
    cmds: list[tuple[Any, ...] | bytes | int] = [
        (b"PUBLISH", b"k1", b"v1"),
        b"*1\r\n$4\r\nPING\r\n",
        1,
        2,
        (b"GET", b"k2"),
    ]
    packed = b"".join(pack_pipeline(conn, cmds))
    want = b"".join(conn.pack_commands([(b"PUBLISH", b"k1", b"v1")]))
    want += b"*1\r\n$4\r\nPING\r\n" + b"".join(conn.pack_commands([(b"GET", b"k2")]))
    assert packed == want
    plain: list[tuple[Any, ...] | bytes | int] = [(b"PUBLISH", b"k", b"v")]
    assert pack_pipeline(conn, plain) == conn.pack_commands([(b"PUBLISH", b"k", b"v")])

"""RedisBus against a real redis-server: outages (killed mid-stream, down at start), garbage on
the channel, a password, PUBLISH mode, and subscribe coalescing. The behaviour every bus shares
is in test_bus_contract.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gripd.core.config import default_config
from gripd.core.itemwire import encode_items
from gripd.core.publish import HttpStreamFormat, PublishItem
from gripd.io.bus.redis import RedisBus
from gripd.runtime.buses import make_bus
from tests.io.test_bus_contract import RecordingSink
from tests.support.redis import RedisServer, redis_server, running_redis

__all__ = ["redis_server"]  # the fixture, imported for the tests below

#: Bound on any wait here; reconnecting waits for the backoff (at most 5 s) on top.
WAIT = 15.0


def _item(channel: str, n: int) -> PublishItem:
    return PublishItem(channel=channel, id=str(n), http_stream=HttpStreamFormat(content=b"%d" % n))


class Pair:
    """Two buses "a" and "b" on one server, both subscribed to ``channels``."""

    def __init__(self, url: str, **kw: object) -> None:
        self.sa, self.sb = RecordingSink(), RecordingSink()
        self.a = RedisBus(self.sa, url, node_id="a", **kw)  # type: ignore[arg-type]
        self.b = RedisBus(self.sb, url, node_id="b", **kw)  # type: ignore[arg-type]

    async def start(self, *channels: str) -> None:
        for bus in (self.a, self.b):
            await bus.start()
            for c in channels:
                bus.subscribe(c)

    async def settled(self) -> None:
        await self.a.settled(WAIT)
        await self.b.settled(WAIT)

    async def stop(self) -> None:
        await self.a.stop()
        await self.b.stop()


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[Pair]:
    p = Pair(redis_server.url)
    await p.start("c")
    await p.settled()
    try:
        yield p
    finally:
        await p.stop()


def _ids(sink: RecordingSink, channel: str = "c") -> list[str | None]:
    return [i.id for _, i in sink.of(channel)]


async def test_killed_mid_stream_then_restarted(
    pair: Pair, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is down, A's own subscribers still get every item, once and in order;
    the failures are counted; after a restart on the same port both reconnect, resubscribe,
    and A's publishes reach B again."""
    caplog.set_level(logging.INFO, logger="gripd.bus")
    sent = [str(n) for n in range(50)]
    pair.a.publish([_item("c", n) for n in range(50)], source="http")
    await pair.sb.wait_until(lambda: len(pair.sb.got) == 50)  # the stream flows through Redis
    for n in range(50, 300):
        if n == 100:
            redis_server.kill()
        pair.a.publish([_item("c", n)], source="http")
        sent.append(str(n))
        if n % 5 == 0:
            await asyncio.sleep(0.002)
    await pair.sa.wait_until(lambda: len(pair.sa.got) >= 300)
    assert _ids(pair.sa) == sent
    assert not pair.a.connected
    assert pair.a.counters["publish_failed"] >= 150  # at least everything after the kill
    got_b = _ids(pair.sb)
    assert len(got_b) >= 50
    assert got_b == sent[: len(got_b)]  # B got a prefix: what went through before the kill
    assert "unreachable" in caplog.text or "lost" in caplog.text

    redis_server.start()
    await pair.settled()
    assert pair.a.counters["reconnects"] >= 1 and pair.b.counters["reconnects"] >= 1
    assert "reachable again" in caplog.text
    pair.a.publish([_item("c", 1000)], source="http")
    await pair.sb.wait_until(lambda: "1000" in _ids(pair.sb))
    await pair.sa.wait_until(lambda: "1000" in _ids(pair.sa))
    assert _ids(pair.sa) == [*sent, "1000"]  # once: back through Redis, not also locally
    assert pair.b.counters["received"] == len(_ids(pair.sb))


async def test_unreachable_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """start() returns at once with nothing listening (the first attempt is refused);
    publishes are delivered locally and counted; once Redis comes up the bus connects and goes
    through it."""
    caplog.set_level(logging.INFO, logger="gripd.bus")
    server = RedisServer(tmp_path / "redis")  # a free port, not started yet
    sink, sink_b = RecordingSink(), RecordingSink()
    a = RedisBus(sink, server.url, node_id="a")
    b = RedisBus(sink_b, server.url, node_id="b")
    try:
        await asyncio.wait_for(a.start(), 1.0)
        a.subscribe("c")
        a.publish([_item("c", 1)], source="http")
        assert _ids(sink) == ["1"]
        assert a.counters["publish_failed"] == 1
        await asyncio.sleep(0.3)  # a few failed attempts
        assert not a.connected
        lines = [r.getMessage() for r in caplog.records if "unreachable (" in r.getMessage()]
        assert len(lines) == 1, lines  # one loud line, not one per retry
        assert lines[0].startswith(f"bus: redis://127.0.0.1:{server.port} unreachable (")
        assert lines[0].endswith("delivering locally only, retrying")

        server.start()
        await a.settled(WAIT)
        await b.start()
        b.subscribe("c")
        await b.settled(WAIT)
        a.publish([_item("c", 2)], source="http")
        await sink_b.wait_until(lambda: _ids(sink_b) == ["2"])
        await sink.wait_until(lambda: _ids(sink) == ["1", "2"])
        assert a.counters["published"] == 1
        assert a.counters["reconnects"] == 0  # the first connection is not a reconnect
    finally:
        await a.stop()
        await b.stop()
        server.stop()


async def test_start_returns_connected_when_redis_is_up(redis_server: RedisServer) -> None:
    """start() waits for the first attempt: the instance is on the bus before it takes
    publishes, so the first one goes through Redis."""
    sink = RecordingSink()
    bus = RedisBus(sink, redis_server.url, node_id="a")
    try:
        await asyncio.wait_for(bus.start(), WAIT)
        assert bus.connected
        bus.publish([_item("c", 1)], source="http")
        assert bus.counters["publish_failed"] == 0
    finally:
        await bus.stop()


async def test_start_is_bounded_when_redis_does_not_answer() -> None:
    """A server that takes the connection and never answers: start() gives up waiting after
    its bound and the bus delivers locally meanwhile."""

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # never answers; closed at the end

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = RecordingSink()
    bus = RedisBus(sink, f"redis://127.0.0.1:{port}", node_id="a")
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        await asyncio.wait_for(bus.start(wait=0.3), WAIT)
        assert 0.25 <= loop.time() - began < 5.0
        assert not bus.connected
        bus.publish([_item("c", 1)], source="http")
        assert _ids(sink) == ["1"]
    finally:
        await asyncio.wait_for(bus.stop(), WAIT)
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


async def test_stop_does_not_hang_while_unreachable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    bus = RedisBus(RecordingSink(), server.url, node_id="a")
    await bus.start()
    await asyncio.sleep(0.2)
    await asyncio.wait_for(bus.stop(), 3.0)
    assert not bus.connected


async def test_garbage_on_the_channel_is_counted_and_dropped(
    pair: Pair, redis_server: RedisServer
) -> None:
    """Anyone with access to Redis can publish: what does not decode (or names another
    channel) is dropped and counted; the bus goes on."""
    raw = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        await raw.spublish("gripd:c", b"garbage")
        await raw.spublish("gripd:c", b"\x80\x04\x95pickle")
        other = encode_items([_item("elsewhere", 1)], "mallory", source="http", seq=1)
        await raw.spublish("gripd:c", other)
        # A well-formed message from another node is delivered, with its source.
        good = encode_items([_item("c", 7)], "remote", source="zmq", seq=1)
        await raw.spublish("gripd:c", good)
    finally:
        await raw.aclose()
    await pair.sa.wait_until(lambda: _ids(pair.sa) == ["7"])
    assert pair.sa.got[0][0] == "zmq"
    assert pair.a.counters["decode_errors"] == 3
    assert pair.b.counters["decode_errors"] == 3
    assert pair.a.connected and pair.b.connected
    pair.a.publish([_item("c", 8)], source="http")
    await pair.sb.wait_until(lambda: _ids(pair.sb) == ["7", "8"])
    await pair.sa.wait_until(lambda: _ids(pair.sa) == ["7", "8"])


async def test_password_in_url(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis", password="s3cr:et") as server:
        url = f"redis://:s3cr%3Aet@{server.host}:{server.port}/2"
        p = Pair(url)
        try:
            await p.start("c")
            await p.settled()
            assert p.a.url_for_log == f"redis://:***@127.0.0.1:{server.port}/2"
            p.a.publish([_item("c", 1)], source="http")
            await p.sb.wait_until(lambda: _ids(p.sb) == ["1"])
        finally:
            await p.stop()


async def test_wrong_password_is_unreachable_and_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gripd.bus")
    with running_redis(tmp_path / "redis", password="right") as server:
        bus = RedisBus(RecordingSink(), f"redis://:wrong@{server.host}:{server.port}", node_id="a")
        try:
            await bus.start()
            with pytest.raises(TimeoutError):
                await bus.settled(0.5)
            assert not bus.connected
        finally:
            await bus.stop()
    assert "unreachable (" in caplog.text
    assert "wrong" not in caplog.text


async def test_plain_publish_mode(redis_server: RedisServer) -> None:
    """sharded=False: PUBLISH/SUBSCRIBE (what a Redis < 7 gets)."""
    p = Pair(redis_server.url, sharded=False)
    try:
        await p.start("c")
        await p.settled()
        assert p.a.sharded is False
        p.a.publish([_item("c", n) for n in range(5)], source="http")
        await p.sb.wait_until(lambda: len(p.sb.got) == 5)
        assert _ids(p.sb) == [str(n) for n in range(5)]
        await p.sa.wait_until(lambda: len(p.sa.got) == 5)
    finally:
        await p.stop()


async def test_subscribes_of_one_tick_are_one_command(redis_server: RedisServer) -> None:
    bus = RedisBus(RecordingSink(), redis_server.url, node_id="a")
    raw = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        await bus.start()
        await bus.settled(WAIT)
        assert bus.sharded is True  # redis-server >= 7 here
        for n in range(50):
            bus.subscribe(f"c{n}")
        bus.subscribe("c0")  # idempotent
        await bus.settled(WAIT)
        assert all(bus.is_subscribed(f"c{n}") for n in range(50))
        stats = await raw.info("commandstats")
        assert stats["cmdstat_ssubscribe"]["calls"] == 1
        for n in range(50):
            bus.unsubscribe(f"c{n}")
        await bus.settled(WAIT)
        stats = await raw.info("commandstats")
        assert stats["cmdstat_sunsubscribe"]["calls"] == 1
        assert not bus.is_subscribed("c0")
    finally:
        await raw.aclose()
        await bus.stop()


@pytest.mark.parametrize(("url", "prefix"), [("redis://h", "gripd:"), ("redis://h/3", "gripd:3:")])
async def test_database_number_separates_channel_names(url: str, prefix: str) -> None:
    """Redis pub/sub ignores the database, so ``make_bus`` puts its number in the channel names:
    instances on different databases of one server do not share channels."""
    bus = make_bus(replace(default_config("/tmp"), bus=url), RecordingSink())
    assert isinstance(bus, RedisBus)
    assert bus.key_prefix == prefix

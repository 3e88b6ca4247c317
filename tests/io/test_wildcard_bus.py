"""Wildcard channels (``[gripd] wildcard_channels``) on the buses: the hub's routing by pattern,
and the Redis bus's PSUBSCRIBE (escaping, one delivery for a node subscribed both ways, the
option off)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from gripd.core.publish import HttpStreamFormat, PublishItem
from gripd.io.bus.hub import FrameLink, HubRouter, Message
from gripd.io.bus.redis import RedisBus
from tests.io.test_bus_contract import RecordingSink
from tests.support.redis import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, imported for the tests below

WAIT = 15.0


def _item(channel: str, n: int) -> PublishItem:
    return PublishItem(channel=channel, http_stream=HttpStreamFormat(content=b"%d" % n))


# --- the hub -------------------------------------------------------------------------------------


class FakeLink:
    """Collects what the router sends to one worker."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def buffered(self) -> int:
        return 0

    def channels(self) -> list[str]:
        return [i.channel for m in self.sent if m[0] == "items" for i in m[2]]


def _router(wildcard: bool) -> tuple[HubRouter, FakeLink, FakeLink]:
    router = HubRouter(wildcard=wildcard)
    w0, w1 = FakeLink(), FakeLink()
    router.attach(0, cast(FrameLink, w0))
    router.attach(1, cast(FrameLink, w1))
    return router, w0, w1


def test_hub_routes_by_pattern() -> None:
    router, w0, w1 = _router(True)
    router.gained(0, ["news.*"])
    router.gained(1, ["news.x", "n*"])
    items = [_item(c, i) for i, c in enumerate(["news.x", "news.y", "sports.a", "nx"])]
    router.publish(items, source="t")
    assert w0.channels() == ["news.x", "news.y"]
    assert w1.channels() == ["news.x", "news.y", "nx"]  # news.x once, though two match
    router.lost(1, ["n*"])
    router.lost(0, ["news.*"])
    assert not router.patterns
    router.publish([_item("news.y", 9), _item("news.x", 10)], source="t")
    assert w0.channels() == ["news.x", "news.y"]
    assert w1.channels() == ["news.x", "news.y", "nx", "news.x"]


def test_hub_detach_drops_patterns() -> None:
    router, _, _ = _router(True)
    router.gained(0, ["a.*"])
    router.detach(0)
    assert not router.patterns and not router.interest


def test_hub_option_off_star_is_literal() -> None:
    router, w0, _ = _router(False)
    router.gained(0, ["news.*"])
    router.publish([_item("news.a", 1), _item("news.*", 2)], source="t")
    assert w0.channels() == ["news.*"]


# --- Redis -------------------------------------------------------------------------------------


class Pair:
    """Publisher ``a`` and subscriber ``b`` on one server."""

    def __init__(self, url: str, **kw: Any) -> None:
        self.sa, self.sb = RecordingSink(), RecordingSink()
        self.a = RedisBus(self.sa, url, node_id="a", **kw)
        self.b = RedisBus(self.sb, url, node_id="b", **kw)

    async def start(self, *channels: str) -> None:
        for bus in (self.a, self.b):
            await bus.start()
        for c in channels:
            self.b.subscribe(c)
        await self.a.settled(WAIT)
        await self.b.settled(WAIT)

    def got(self) -> list[str]:
        return [i.channel + ":" + i.http_stream.content.decode() for _, i in self.sb.got]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.a.stop()
        await self.b.stop()


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[Pair]:
    p = Pair(redis_server.url, wildcard=True)
    yield p
    await p.stop()


async def _publish_and_mark(p: Pair, items: list[PublishItem]) -> None:
    """Publish ``items`` then a marker on ``zz`` (held exactly), and wait for the marker: what
    has not arrived by then will not (one connection, in order)."""
    if "zz" not in p.b._wanted:
        p.b.subscribe("zz")
        await p.b.settled(WAIT)
    marks = len(p.sb.of("zz"))
    p.a.publish([*items, _item("zz", 0)], source="t")
    await p.sb.wait_until(lambda: len(p.sb.of("zz")) > marks, WAIT)


async def test_redis_pattern_delivery_once(pair: Pair) -> None:
    await pair.start("news.*", "news.x", "n*")
    assert pair.b.sharded is False  # no pattern form in sharded pub/sub
    await _publish_and_mark(
        pair, [_item("sports.a", 1), _item("news.x", 2), _item("news.y", 3), _item("nx", 4)]
    )
    assert pair.got() == ["news.x:2", "news.y:3", "nx:4", "zz:0"]
    assert pair.b.counters["received"] == 4


async def test_redis_pattern_is_escaped(pair: Pair) -> None:
    """``?`` and ``[`` in a pattern's prefix are literal for Redis."""
    await pair.start("a?.*", "[x].*")
    await _publish_and_mark(
        pair, [_item("ab.1", 1), _item("a?.2", 2), _item("x.3", 3), _item("[x].4", 4)]
    )
    assert pair.got() == ["a?.2:2", "[x].4:4", "zz:0"]


async def test_redis_pattern_unsubscribe(pair: Pair) -> None:
    await pair.start("news.*")
    await _publish_and_mark(pair, [_item("news.a", 1)])
    pair.b.unsubscribe("news.*")
    await pair.b.settled(WAIT)
    assert not pair.b._globs  # the glob of a confirmed PUNSUBSCRIBE is forgotten
    await _publish_and_mark(pair, [_item("news.b", 2)])
    assert pair.got() == ["news.a:1", "zz:0", "zz:0"]


async def test_redis_pattern_subscribed_again(pair: Pair) -> None:
    """A pattern dropped and wanted again, with its PUNSUBSCRIBE still unanswered or
    answered, is delivered again (its replies are matched to it throughout)."""
    await pair.start("news.*")
    pair.b.unsubscribe("news.*")
    for _ in range(20):  # until the PUNSUBSCRIBE is sent
        await asyncio.sleep(0)
        if "news.*" not in pair.b._requested:
            break
    pair.b.subscribe("news.*")
    await pair.b.settled(WAIT)
    await _publish_and_mark(pair, [_item("news.a", 1)])
    pair.b.unsubscribe("news.*")
    await pair.b.settled(WAIT)
    pair.b.subscribe("news.*")
    await pair.b.settled(WAIT)
    await _publish_and_mark(pair, [_item("news.b", 2)])
    assert pair.got() == ["news.a:1", "zz:0", "news.b:2", "zz:0"]
    assert pair.b.is_subscribed("news.*")


async def test_redis_option_off_star_is_literal(redis_server: RedisServer) -> None:
    p = Pair(redis_server.url, sharded=False)
    try:
        await p.start("news.*")
        await _publish_and_mark(p, [_item("news.a", 1), _item("news.*", 2)])
        assert p.got() == ["news.*:2", "zz:0"]
    finally:
        await p.stop()


def test_redis_sharded_refused_with_wildcard() -> None:
    with pytest.raises(ValueError, match="pattern"):
        RedisBus(RecordingSink(), "redis://127.0.0.1:1", node_id="x", wildcard=True, sharded=True)


async def test_redis_self_publish_comes_back_once(pair: Pair) -> None:
    """A publish of ``b`` itself on a channel it holds both ways reaches its sink once."""
    await pair.start("news.*", "news.x")
    pair.b.publish([_item("news.x", 1), _item("news.q", 2)], source="t")
    pair.b.subscribe("zz")
    await pair.b.settled(WAIT)
    pair.b.publish([_item("zz", 0)], source="t")
    await pair.sb.wait_until(lambda: any(i.channel == "zz" for _, i in pair.sb.got), WAIT)
    await asyncio.sleep(0.05)
    assert pair.got() == ["news.x:1", "news.q:2", "zz:0"]

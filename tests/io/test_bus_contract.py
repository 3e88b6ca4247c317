"""The bus contract (gripd.io.bus.base), one suite run against every bus implementation.

Contract: items published for a subscribed channel reach the sink of every node that subscribed,
exactly once, in publish order per channel, with their source; subscribing twice is subscribing
once; after unsubscribing, items stop arriving (for buses that route by channel); an item with
every field set arrives equal to what was published (F29, F30).

Each implementation is set up by a *harness factory*: an async function taking the test's
``tmp_path`` and returning a :class:`Harness` (its nodes, whether it filters by channel, how to
wait for subscriptions to take effect, how to close). To run the suite against another bus (the
worker hub), write ``async def hub_harness(tmp_path) -> Harness`` and add it to ``HARNESSES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from gripd.core.publish import HttpStreamFormat, PublishItem
from gripd.io.bus.hub import FrameLink, HubRouter, WorkerLink, open_link
from gripd.io.bus.local import LocalBus
from gripd.io.bus.redis import RedisBus
from tests.core.test_itemwire import full_item
from tests.support.redis import running_redis

#: Seconds any wait in this suite may take before the test fails.
WAIT = 10.0


class RecordingSink:
    """A BusSink that keeps what it got, as (source, item), and can be waited on."""

    def __init__(self) -> None:
        self.got: list[tuple[str, PublishItem]] = []
        self._changed = asyncio.Event()

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.got.extend((source, item) for item in items)
        self._changed.set()

    def of(self, channel: str) -> list[tuple[str, PublishItem]]:
        return [(s, i) for s, i in self.got if i.channel == channel]

    async def wait_until(self, done: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()


class NodeBus(Protocol):
    """The part of a bus the contract drives (gripd.io.bus.base.Bus, minus start/stop)."""

    def publish(self, items: list[PublishItem], *, source: str) -> None: ...

    def subscribe(self, channel: str) -> None: ...

    def unsubscribe(self, channel: str) -> None: ...


@dataclass
class Node:
    """One place holding subscribers: its bus and the sink the bus delivers to."""

    bus: NodeBus
    sink: RecordingSink


@dataclass
class Harness:
    """One bus implementation, set up for a test.

    ``nodes[0]`` is the one the tests publish on; every node's sink must get what it
    subscribed to. ``filters`` is False for a bus that hands every item to its sink whatever
    the subscriptions (LocalBus): the unsubscribe checks are skipped for it. ``settle()``
    returns once every subscribe/unsubscribe made so far is in effect. ``close()`` stops it
    all."""

    nodes: list[Node]
    filters: bool
    settle: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    pass


async def local_harness(tmp_path: Path) -> Harness:
    """LocalBus: one node; publishing is a direct call."""
    sink = RecordingSink()
    bus = LocalBus(sink)
    await bus.start()
    return Harness([Node(bus, sink)], filters=False, settle=_nothing, close=bus.stop)


async def redis_harness(tmp_path: Path) -> Harness:
    """Two RedisBus instances ("a" publishes, "b" too) on one real redis-server."""
    stack = contextlib.ExitStack()
    server = stack.enter_context(running_redis(tmp_path / "redis"))
    nodes = [
        Node(RedisBus(sink, server.url, node_id=n), sink)
        for n, sink in (("a", RecordingSink()), ("b", RecordingSink()))
    ]
    buses = [n.bus for n in nodes if isinstance(n.bus, RedisBus)]
    for bus in buses:
        await bus.start()

    async def settle() -> None:
        for bus in buses:
            await bus.settled(WAIT)

    async def close() -> None:
        for bus in buses:
            await bus.stop()
        stack.close()

    await settle()
    return Harness(nodes, filters=True, settle=settle, close=close)


class _HubNode:
    """One worker of the worker-hub bus, as the contract drives it: subscriptions go out on
    the worker's link; publishing goes into the hub's router (where the hub's pipeline would
    hand its output), whichever node the test publishes on."""

    def __init__(self, router: HubRouter, link: WorkerLink, index: int) -> None:
        self.router = router
        self.link = link
        self.index = index
        self.wanted: set[str] = set()

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.router.publish(items, source=source)

    def subscribe(self, channel: str) -> None:
        self.wanted.add(channel)
        self.link.subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        self.wanted.discard(channel)
        self.link.unsubscribe(channel)


async def hub_harness(tmp_path: Path) -> Harness:
    """The worker-hub bus: a HubRouter and two WorkerLinks over real socket pairs."""
    router = HubRouter()
    nodes: list[Node] = []
    hub_links: list[FrameLink] = []
    for i in range(2):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sink = RecordingSink()
        worker = WorkerLink(sink, lambda msg: None)

        def on_hub(msg: tuple[object, ...], i: int = i) -> None:
            if msg[0] == "gained":
                router.gained(i, msg[1])  # type: ignore[arg-type]
            elif msg[0] == "lost":
                router.lost(i, msg[1])  # type: ignore[arg-type]

        hub_side = await open_link(a, on_hub, lambda: None)
        worker.attach(await open_link(b, worker.on_message, lambda: None))
        router.attach(i, hub_side)
        hub_links.append(hub_side)
        nodes.append(Node(_HubNode(router, worker, i), sink))

    async def settle() -> None:
        async with asyncio.timeout(WAIT):
            while True:
                held = {
                    n.bus.index: {c for c, ws in router.interest.items() if n.bus.index in ws}
                    for n in nodes
                    if isinstance(n.bus, _HubNode)
                }
                if all(
                    held[n.bus.index] == n.bus.wanted for n in nodes if isinstance(n.bus, _HubNode)
                ):
                    return
                await asyncio.sleep(0.005)

    async def close() -> None:
        for link in hub_links:
            link.close()
        for n in nodes:
            if isinstance(n.bus, _HubNode) and n.bus.link.link is not None:
                n.bus.link.link.close()

    return Harness(nodes, filters=True, settle=settle, close=close)


HARNESSES: dict[str, Callable[[Path], Awaitable[Harness]]] = {
    "local": local_harness,
    "redis": redis_harness,
    "hub": hub_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await HARNESSES[request.param](tmp_path)
    try:
        yield h
    finally:
        await h.close()


def _item(channel: str, n: int) -> PublishItem:
    return PublishItem(
        channel=channel, id=f"{channel}-{n}", http_stream=HttpStreamFormat(content=b"%d" % n)
    )


def _subscribe_all(h: Harness, *channels: str) -> None:
    for node in h.nodes:
        for c in channels:
            node.bus.subscribe(c)


async def _fence(h: Harness, channels: list[str]) -> None:
    """Publish one last item per channel and wait until every node has it: per-channel order
    means everything published before it on that channel has arrived too."""
    h.nodes[0].bus.publish([PublishItem(channel=c, id="fence") for c in channels], source="fence")
    for node in h.nodes:
        await node.sink.wait_until(_has_fences(node.sink, channels))


def _has_fences(sink: RecordingSink, channels: list[str]) -> Callable[[], bool]:
    return lambda: all(any(i.id == "fence" for _, i in sink.of(c)) for c in channels)


def _ids(node: Node, channel: str) -> list[str | None]:
    return [i.id for _, i in node.sink.of(channel) if i.id != "fence"]


async def test_items_arrive_once_in_order_per_channel(harness: Harness) -> None:
    """1000 items over 10 channels, interleaved in batches of 1-7 mixing channels and
    sources: each node gets each item once, in publish order per channel, with its source."""
    channels = [f"ch{k}" for k in range(10)]
    _subscribe_all(harness, *channels)
    await harness.settle()
    expected: dict[str, list[tuple[str, str]]] = {c: [] for c in channels}
    batch: list[PublishItem] = []
    sources = ["http", "zmq", "command"]
    for n in range(1000):
        channel = channels[(n * 7 + n // 13) % 10]
        item = _item(channel, n)
        batch.append(item)
        if len(batch) == 1 + n % 7 or n == 999:
            source = sources[n % 3]
            for i in batch:
                expected[i.channel].append((source, i.id or ""))
            harness.nodes[0].bus.publish(batch, source=source)
            batch = []
        if n % 100 == 0:
            await asyncio.sleep(0)  # let the bus work while publishing goes on
    await _fence(harness, channels)
    await asyncio.sleep(0.1)  # a duplicate would arrive after its fence: give it a chance
    for node in harness.nodes:
        for c in channels:
            got = [(s, i.id or "") for s, i in node.sink.of(c) if i.id != "fence"]
            assert got == expected[c], f"channel {c}"
        assert len(node.sink.got) == 1000 + len(channels)


async def test_source_is_preserved(harness: Harness) -> None:
    _subscribe_all(harness, "s")
    await harness.settle()
    harness.nodes[0].bus.publish([_item("s", 1)], source="http")
    harness.nodes[0].bus.publish([_item("s", 2), _item("s", 3)], source="zmq")
    await _fence(harness, ["s"])
    for node in harness.nodes:
        assert [(s, i.id) for s, i in node.sink.of("s")] == [
            ("http", "s-1"),
            ("zmq", "s-2"),
            ("zmq", "s-3"),
            ("fence", "fence"),
        ]


async def test_subscribe_is_idempotent(harness: Harness) -> None:
    for node in harness.nodes:
        node.bus.subscribe("dup")
        node.bus.subscribe("dup")
    await harness.settle()
    for node in harness.nodes:
        node.bus.subscribe("dup")
    await harness.settle()
    harness.nodes[0].bus.publish([_item("dup", 1)], source="http")
    await _fence(harness, ["dup"])
    await asyncio.sleep(0.1)
    for node in harness.nodes:
        assert _ids(node, "dup") == ["dup-1"]
    if not harness.filters:
        return
    for node in harness.nodes:  # one unsubscribe undoes any number of subscribes
        node.bus.unsubscribe("dup")
        node.bus.unsubscribe("dup")
    _subscribe_all(harness, "other")
    await harness.settle()
    harness.nodes[0].bus.publish([_item("dup", 2)], source="http")
    await _fence(harness, ["other"])
    await asyncio.sleep(0.1)
    for node in harness.nodes:
        assert _ids(node, "dup") == ["dup-1"]


async def test_unsubscribe_stops_delivery(harness: Harness) -> None:
    if not harness.filters:
        pytest.skip("this bus hands every item to its sink")
    _subscribe_all(harness, "keep", "drop")
    await harness.settle()
    harness.nodes[0].bus.publish([_item("keep", 1), _item("drop", 1)], source="http")
    await _fence(harness, ["keep", "drop"])
    for node in harness.nodes:
        node.bus.unsubscribe("drop")
    await harness.settle()
    harness.nodes[0].bus.publish(
        [_item("drop", 2), _item("keep", 2), _item("never", 1)], source="http"
    )
    await _fence(harness, ["keep"])
    await asyncio.sleep(0.1)
    for node in harness.nodes:
        assert _ids(node, "keep") == ["keep-1", "keep-2"]
        assert _ids(node, "drop") == ["drop-1"]
        assert node.sink.of("never") == []


async def test_unsubscribe_on_one_node_only(harness: Harness) -> None:
    if not harness.filters or len(harness.nodes) < 2:
        pytest.skip("needs two nodes of a bus that routes by channel")
    _subscribe_all(harness, "c", "f")
    await harness.settle()
    harness.nodes[1].bus.unsubscribe("c")
    await harness.settle()
    harness.nodes[0].bus.publish([_item("c", 1)], source="http")
    await _fence(harness, ["f"])
    await harness.nodes[0].sink.wait_until(lambda: bool(_ids(harness.nodes[0], "c")))
    await asyncio.sleep(0.1)
    assert _ids(harness.nodes[0], "c") == ["c-1"]
    assert _ids(harness.nodes[1], "c") == []


async def test_item_with_every_field_round_trips(harness: Harness) -> None:
    item = full_item()
    _subscribe_all(harness, item.channel)
    await harness.settle()
    harness.nodes[0].bus.publish([item], source="command")
    for node in harness.nodes:
        await node.sink.wait_until(functools.partial(bool, node.sink.got))
        ((source, got),) = node.sink.got
        assert source == "command"
        assert repr(got) == repr(item)

"""The worker-hub bus in one process: ``HubRouter``, ``WorkerLink``, ``FrameLink`` and
``EventRelay`` over real ``socket.socketpair()`` links.

Each fake worker is a ``WorkerLink`` (items into a recording sink, commands into a list) on one
end of a socket pair; the hub end feeds the router and the relay the way
``gripd.runtime.hub.Hub._on_message`` does. Negative checks ("worker 1 got nothing for a") are
made after a marker item on a channel the worker does hold has arrived, so they need no sleep:
the link keeps order, so anything sent before the marker would have arrived before it.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gripd.core.publish import PublishItem
from gripd.io.bus import hub as hubmod
from gripd.io.bus.hub import (
    BroadcastLastIds,
    EventRelay,
    FrameLink,
    HubRouter,
    Message,
    WorkerLink,
    open_link,
)
from gripd.io.observe.events import Delivery, Events, Mode, Transport

TIMEOUT = 5.0


async def until(pred: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``pred`` until true; TimeoutError naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def item(channel: str, n: int | str, pad: int = 0) -> PublishItem:
    return PublishItem(channel=channel, id=str(n), meta={"pad": "x" * pad} if pad else {})


class Sink:
    """A worker's pipeline stand-in: records every batch handed over by the link."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[PublishItem]]] = []

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.batches.append((source, items))

    def ids(self, channel: str | None = None) -> list[str | None]:
        return [i.id for _, b in self.batches for i in b if channel is None or i.channel == channel]

    def channels(self) -> set[str]:
        return {i.channel for _, b in self.batches for i in b}


class Recorder(Events):
    """Every event the relay replays, as tuples."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def connection_opened(self, conn_id: str, peer: str, transport: Transport) -> None:
        self.calls.append(("open", conn_id, peer, transport))

    def connection_closed(self, conn_id: str) -> None:
        self.calls.append(("close", conn_id))

    def request_received(self) -> None:
        self.calls.append(("req",))

    def subscribed(self, channel: str, mode: Mode, first: bool) -> None:
        self.calls.append(("sub", channel, mode, first))

    def unsubscribed(self, channel: str, mode: Mode, last: bool) -> None:
        self.calls.append(("unsub", channel, mode, last))

    def delivered(
        self, channel: str, item_id: str | None, transport: Delivery, count: int, blocks: int = -1
    ) -> None:
        self.calls.append(("deliv", channel, item_id, transport, count))

    def dropped(self, reason: str, count: int = 1) -> None:
        self.calls.append(("drop", reason, count))


class Tracker:
    """The hub's ChannelTracker stand-in: the instance's channel interest, fed by the relay."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def subscribed(self, channel: str, mode: str) -> bool:
        self.calls.append(("sub", channel, mode))
        return True

    def unsubscribed(self, channel: str, mode: str) -> None:
        self.calls.append(("unsub", channel, mode))


class FakeWorker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.sink = Sink()
        self.commands: list[Message] = []
        self.link = WorkerLink(self.sink, self.commands.append)
        self.frames: FrameLink  # the worker's end of the socket pair
        self.hub_end: FrameLink  # the hub's end
        self.hub_lost = False


class Rig:
    """A router, a relay and fake workers connected to them by socket pairs."""

    def __init__(self) -> None:
        self.router = HubRouter()
        self.events = Recorder()
        self.latencies: list[float] = []
        self.tracker = Tracker()
        self.relay = EventRelay(self.events, self.latencies.append, tracker=self.tracker)
        self.workers: list[FakeWorker] = []
        self.hub_msgs: list[tuple[int, Message]] = []

    def _on_hub_message(self, index: int, msg: Message) -> None:
        """What ``Hub._on_message`` does with a worker's message."""
        self.hub_msgs.append((index, msg))
        kind = msg[0]
        if kind == "ev":
            self.relay.handle(index, msg)
        elif kind == "gained":
            self.router.gained(index, msg[1])
        elif kind == "lost":
            self.router.lost(index, msg[1])

    async def add_worker(self) -> FakeWorker:
        w = FakeWorker(len(self.workers))
        hub_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

        def hub_lost() -> None:
            w.hub_lost = True

        w.hub_end = await open_link(hub_sock, lambda m: self._on_hub_message(w.index, m), hub_lost)
        w.frames = await open_link(worker_sock, w.link.on_message, lambda: None)
        w.link.attach(w.frames)
        self.router.attach(w.index, w.hub_end)
        self.workers.append(w)
        return w

    async def gain(self, w: FakeWorker, *channels: str) -> None:
        """Worker ``w`` gains ``channels`` and the hub has seen it."""
        for ch in channels:
            w.link.gained(ch)
        await until(
            lambda: all(w.index in self.router.interest.get(ch, ()) for ch in channels),
            f"worker {w.index} gaining {channels}",
        )

    async def lose(self, w: FakeWorker, *channels: str) -> None:
        for ch in channels:
            w.link.lost(ch)
        await until(
            lambda: all(w.index not in self.router.interest.get(ch, ()) for ch in channels),
            f"worker {w.index} losing {channels}",
        )

    async def events_settled(self, w: FakeWorker, count: int) -> None:
        """Wait until the hub has seen ``count`` events from ``w`` (a ``batch`` message of
        connection events counts as its events)."""

        def seen() -> int:
            return sum(
                len(m[2]) if m[1] == "batch" else 1
                for i, m in self.hub_msgs
                if i == w.index and m[0] == "ev"
            )

        await until(lambda: seen() >= count, f"{count} events from worker {w.index}")

    def close(self) -> None:
        for w in self.workers:
            w.hub_end.close()
            w.frames.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    r.close()
    await asyncio.sleep(0)  # let the transports close


async def _marker(rig: Rig, w: FakeWorker, channel: str, n: int = 0) -> None:
    """Publish a marker item on ``channel`` (held by ``w``) and wait for it at ``w``."""
    rig.router.publish([item(channel, f"marker-{n}")], source="http")
    await until(lambda: f"marker-{n}" in w.sink.ids(channel), f"marker {n} at worker {w.index}")


# --- routing ----------------------------------------------------------------------------------


async def test_items_only_reach_workers_holding_the_channel(rig: Rig) -> None:
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    await rig.gain(w0, "a", "both")
    await rig.gain(w1, "b", "both")
    rig.router.publish(
        [item("a", 1), item("b", 2), item("both", 3), item("nobody", 4)], source="zmq-pull"
    )
    await until(lambda: len(w0.sink.ids()) == 2 and len(w1.sink.ids()) == 2, "both batches")
    # One batch per worker per publish call, with only that worker's channels, in batch order.
    assert [(s, [i.id for i in b]) for s, b in w0.sink.batches] == [("zmq-pull", ["1", "3"])]
    assert [(s, [i.id for i in b]) for s, b in w1.sink.batches] == [("zmq-pull", ["2", "3"])]
    await _marker(rig, w0, "a")
    await _marker(rig, w1, "b")
    assert "nobody" not in w0.sink.channels() | w1.sink.channels()
    assert w0.sink.channels() == {"a", "both"}
    assert w1.sink.channels() == {"b", "both"}


async def test_received_hook_sees_every_item_once(rig: Rig) -> None:
    """``received`` (the hub's ``message_received``, F43/F44) counts items nobody holds too."""
    seen: list[tuple[str, str]] = []
    rig.router.received = lambda it, source: seen.append((it.channel, source))
    w0 = await rig.add_worker()
    await rig.gain(w0, "a")
    rig.router.publish([item("a", 1), item("nobody", 2)], source="command")
    assert seen == [("a", "command"), ("nobody", "command")]


async def test_order_preserved_per_channel_over_1000_items(rig: Rig) -> None:
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    await rig.gain(w0, "a", "b")
    await rig.gain(w1, "b")
    n = 0
    for rnd in range(250):
        # mixed batch sizes, some in the same tick, some across ticks
        rig.router.publish([item("a", n), item("b", n)], source="http")
        rig.router.publish([item("a", n + 1), item("a", n + 2), item("b", n + 1)], source="http")
        rig.router.publish([item("a", n + 3)], source="http")
        rig.router.publish([item("b", n + 2), item("b", n + 3)], source="http")
        n += 4
        if rnd % 7 == 0:
            await asyncio.sleep(0)
    assert n == 1000
    await until(
        lambda: len(w0.sink.ids("b")) == 1000 and len(w1.sink.ids("b")) == 1000, "1000 items on b"
    )
    expected = [str(i) for i in range(1000)]
    assert w0.sink.ids("a") == expected
    assert w0.sink.ids("b") == expected
    assert w1.sink.ids("b") == expected
    assert w1.sink.ids("a") == []


async def test_lost_channel_stops_delivery(rig: Rig) -> None:
    w0 = await rig.add_worker()
    await rig.gain(w0, "a", "m")
    rig.router.publish([item("a", "before")], source="http")
    await until(lambda: w0.sink.ids("a") == ["before"], "item before losing a")
    await rig.lose(w0, "a")
    assert "a" not in rig.router.interest
    rig.router.publish([item("a", "after")], source="http")
    await _marker(rig, w0, "m")
    assert w0.sink.ids("a") == ["before"]


async def test_a_channel_is_routed_while_any_worker_holds_it(rig: Rig) -> None:
    """Routing interest is per worker: the channel stays routed until its last worker loses
    it; duplicate losses change nothing. (The instance's own interest, for the SUB socket and
    the bus, is the hub's tracker, fed by EventRelay.)"""
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    await rig.gain(w0, "a")
    await rig.gain(w1, "a")
    assert rig.router.interest["a"] == {0, 1}
    await rig.lose(w0, "a")
    assert rig.router.interest["a"] == {1}
    await rig.lose(w1, "a")
    assert "a" not in rig.router.interest
    await rig.lose(w1, "a")
    rig.router.lost(0, ["never"])
    assert rig.router.interest == {}


async def test_detach_drops_the_workers_interest(rig: Rig) -> None:
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    await rig.gain(w0, "only0", "shared")
    await rig.gain(w1, "shared", "m1")
    rig.router.detach(0)
    assert "only0" not in rig.router.interest
    assert rig.router.interest["shared"] == {1}
    assert 0 not in rig.router.links
    rig.router.publish([item("shared", "s"), item("only0", "o")], source="http")
    await _marker(rig, w1, "m1")
    assert w1.sink.ids("shared") == ["s"]
    assert w0.sink.batches == []


async def test_broadcast_commands_reach_every_worker(rig: Rig) -> None:
    """``recover`` (F27), ``refresh`` (F42) and ``stop`` go to every worker's ``on_command``."""
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    rig.router.broadcast(("recover",))
    rig.router.broadcast(("refresh", {"channel": "c"}))
    rig.router.broadcast(("stop",))
    want: list[Message] = [("recover",), ("refresh", {"channel": "c"}), ("stop",)]
    await until(lambda: len(w0.commands) == 3 and len(w1.commands) == 3, "three commands each")
    assert w0.commands == want
    assert w1.commands == want
    assert w0.sink.batches == w1.sink.batches == []


async def test_router_recover_broadcasts(rig: Rig) -> None:
    """F27: after the hub's pipeline forgot its last ids, every worker retries its holds."""
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    rig.router.recover()
    await until(lambda: w0.commands == [("recover",)] == w1.commands, "recover at both")


async def test_worker_publish_stays_local(rig: Rig) -> None:
    """A worker has no publish inputs: ``publish`` on its link goes to its own sink as is."""
    w0 = await rig.add_worker()
    w0.link.publish([item("a", 1)], source="http")
    assert w0.sink.ids() == ["1"]
    await asyncio.sleep(0.05)
    assert not any(m[0] in ("publish", "items") for _, m in rig.hub_msgs)


# --- last ids (F23, F26) ------------------------------------------------------------------------


async def test_last_ids_are_replicated_to_every_worker(rig: Rig) -> None:
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    lids = BroadcastLastIds(rig.router)
    lids.set("a", "1")
    lids.set("b", "2")
    lids.set("a", "3")
    await until(lambda: all(w.link.last_ids.last_id("a") == "3" for w in (w0, w1)), "a=3 at both")
    assert [w.link.last_ids.last_id("b") for w in (w0, w1)] == ["2", "2"]
    lids.remove("b")
    lids.remove("never-set")  # nothing to tell
    await until(lambda: all(w.link.last_ids.last_id("b") is None for w in (w0, w1)), "b gone")
    assert lids.get("b") is None and lids.get("a") == "3"
    lids.clear()
    await until(lambda: all(w.link.last_ids.last_id("a") is None for w in (w0, w1)), "cleared")
    assert len(lids) == 0
    # replication is bookkeeping, not a command
    assert w0.commands == w1.commands == []
    assert w0.sink.batches == w1.sink.batches == []


async def test_last_id_arrives_before_the_item_that_set_it(rig: Rig) -> None:
    """A hold started by an item's delivery already sees that item's id as the last id."""
    w0 = await rig.add_worker()
    await rig.gain(w0, "a")
    seen: list[str | None] = []
    sink_publish = w0.sink.publish

    def publish(items: list[PublishItem], *, source: str) -> None:
        seen.append(w0.link.last_ids.last_id("a"))
        sink_publish(items, source=source)

    w0.sink.publish = publish  # type: ignore[method-assign]
    lids = BroadcastLastIds(rig.router)
    for n in range(1, 4):
        lids.set("a", str(n))  # what the pipeline does before handing the item on
        rig.router.publish([item("a", n)], source="http")
    await until(lambda: len(w0.sink.ids("a")) == 3, "three items")
    assert seen == ["1", "2", "3"]


async def test_worker_forget_reaches_the_hub(rig: Rig) -> None:
    """A hold that finds a last id inconsistent forgets it locally and in the hub's sequencer."""
    w0 = await rig.add_worker()
    lids = BroadcastLastIds(rig.router)
    lids.set("a", "1")
    await until(lambda: w0.link.last_ids.last_id("a") == "1", "a=1 at the worker")
    w0.link.last_ids.forget_last_id("a")
    assert w0.link.last_ids.last_id("a") is None
    await until(lambda: ("forget", "a") in [m for _, m in rig.hub_msgs], "forget at the hub")


# --- framing ----------------------------------------------------------------------------------


class _LoopErrors:
    """Records what reaches the loop's exception handler (a protocol callback that raised)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.contexts: list[dict[str, Any]] = []
        self.loop = loop
        self.prev = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, ctx: self.contexts.append(ctx))

    def restore(self) -> None:
        self.loop.set_exception_handler(self.prev)


async def _raw_peer() -> tuple[socket.socket, FrameLink, list[Message], asyncio.Event]:
    """A FrameLink on one end of a socket pair; the other end is a raw non-blocking socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    got: list[Message] = []
    lost = asyncio.Event()
    link = await open_link(theirs, got.append, lost.set)
    return ours, link, got, lost


async def _read_frames(sock: socket.socket, count: int) -> list[list[Message]]:
    """Read exactly ``count`` frames from the raw socket."""
    loop = asyncio.get_running_loop()
    buf = b""
    frames: list[list[Message]] = []
    async with asyncio.timeout(TIMEOUT):
        while len(frames) < count:
            if len(buf) >= 4:
                (size,) = struct.unpack("!I", buf[:4])
                if len(buf) >= 4 + size:
                    frames.append(pickle.loads(buf[4 : 4 + size]))
                    buf = buf[4 + size :]
                    continue
            data = await loop.sock_recv(sock, 65536)
            assert data, "peer closed"
            buf += data
    assert buf == b"", "more bytes than the frames asked for"
    return frames


async def test_sends_in_one_tick_go_out_as_one_frame() -> None:
    ours, link, _, _ = await _raw_peer()
    try:
        for i in range(100):
            link.send(("gained", [f"c{i}"]))
        frames = await _read_frames(ours, 1)
        assert frames == [[("gained", [f"c{i}"]) for i in range(100)]]
        # a later tick is a new frame
        link.send(("lost", ["x"]))
        await asyncio.sleep(0)
        link.send(("lost", ["y"]))
        frames = await _read_frames(ours, 2)
        assert frames == [[("lost", ["x"])], [("lost", ["y"])]]
    finally:
        link.close()
        ours.close()


async def test_split_reads_reassemble_frames() -> None:
    """A frame that arrives a byte at a time is still decoded once, whole."""
    ours, link, got, _ = await _raw_peer()
    payload = pickle.dumps([("gained", ["a"]), ("lost", ["b"])])
    data = struct.pack("!I", len(payload)) + payload
    try:
        for i in range(len(data)):
            ours.send(data[i : i + 1])
            await asyncio.sleep(0)
        await until(lambda: len(got) == 2, "two messages")
        assert got == [("gained", ["a"]), ("lost", ["b"])]
    finally:
        link.close()
        ours.close()


async def test_oversized_frame_closes_the_link_without_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    errors = _LoopErrors(loop)
    ours, link, got, lost = await _raw_peer()
    try:
        with caplog.at_level(logging.ERROR, logger="gripd.bus"):
            ok = pickle.dumps([("gained", ["a"])])
            ours.send(struct.pack("!I", len(ok)) + ok)  # a good frame first: handled
            ours.send(struct.pack("!I", hubmod.FRAME_MAX + 1) + b"\x00" * 16)
            async with asyncio.timeout(TIMEOUT):
                await lost.wait()
        assert got == [("gained", ["a"])]
        assert link.closed
        assert "oversized frame" in caplog.text
        # the peer sees the close
        async with asyncio.timeout(TIMEOUT):
            assert await loop.sock_recv(ours, 100) == b""
        # sending on a closed link is a no-op, not an error
        link.send(("lost", ["a"]))
        link.flush()
        await asyncio.sleep(0.01)
        assert errors.contexts == []
    finally:
        errors.restore()
        link.close()
        ours.close()


async def test_bad_message_does_not_stop_the_link() -> None:
    """A handler that raises for one message is logged; the next messages still arrive."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    got: list[Message] = []

    def on_message(m: Message) -> None:
        if m[0] == "boom":
            raise ValueError("boom")
        got.append(m)

    link = await open_link(theirs, on_message, lambda: None)
    try:
        payload = pickle.dumps([("boom",), ("ok", 1)])
        ours.send(struct.pack("!I", len(payload)) + payload)
        payload = pickle.dumps([("ok", 2)])
        ours.send(struct.pack("!I", len(payload)) + payload)
        await until(lambda: len(got) == 2, "two good messages")
        assert got == [("ok", 1), ("ok", 2)]
        assert not link.closed
    finally:
        link.close()
        ours.close()


def _count_is(sink: Sink, channel: str, n: int) -> Callable[[], bool]:
    return lambda: len(sink.ids(channel)) == n


# --- back pressure ------------------------------------------------------------------------------


async def test_slow_worker_gets_items_dropped_while_the_other_receives(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hubmod, "WORKER_WRITE_MAX", 64 * 1024)
    drops: list[int] = []
    rig.router.on_drop = drops.append  # the hub counts these in stats (``worker_queue``)
    slow, fast = await rig.add_worker(), await rig.add_worker()
    await rig.gain(slow, "a")
    await rig.gain(fast, "a")
    assert slow.frames.transport is not None
    slow.frames.transport.pause_reading()  # the slow worker stops reading its socket
    total = 400
    with caplog.at_level(logging.WARNING, logger="gripd.bus"):
        for n in range(total):
            rig.router.publish([item("a", n, pad=8192)], source="http")
            await asyncio.sleep(0)  # let the link flush: buffered() counts written bytes
            if rig.router.dropped.get(0, 0) >= 50:
                break
            await until(_count_is(fast.sink, "a", n + 1), f"item {n} at fast")
    sent = n + 1
    dropped = rig.router.dropped.get(0, 0)
    assert dropped >= 50, f"nothing dropped after {sent} items ({slow.hub_end.buffered()} queued)"
    assert 1 not in rig.router.dropped
    assert sum(drops) == dropped
    await until(lambda: len(fast.sink.ids("a")) == sent, "every item at the fast worker")
    assert fast.sink.ids("a") == [str(i) for i in range(sent)]
    assert "worker 0 is not reading" in caplog.text
    # the hub's queue for the slow worker stayed bounded (limit + at most one batch over it)
    assert slow.hub_end.buffered() <= 64 * 1024 + 2 * 8192 + 4096
    # once it reads again, it gets what was not dropped, in order, and new items again
    slow.frames.transport.resume_reading()
    await until(lambda: len(slow.sink.ids("a")) == sent - dropped, "the queued items")
    got = [int(x) for x in slow.sink.ids("a") if x is not None]
    assert got == sorted(got)
    await until(lambda: slow.hub_end.buffered() == 0, "the hub queue to drain")
    rig.router.publish([item("a", "later")], source="http")
    await until(lambda: slow.sink.ids("a")[-1:] == ["later"], "a new item at the slow worker")
    assert rig.router.dropped[0] == dropped


# --- the event relay ----------------------------------------------------------------------------


async def test_relay_first_and_last_are_instance_wide(rig: Rig) -> None:
    """F43/F44: each worker thinks its own subscriber is the first; the hub's stats must see
    one first subscription and one last unsubscription per channel."""
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    w0.link.subscribed("a", "stream", True)
    await rig.events_settled(w0, 1)
    w1.link.subscribed("a", "response", True)
    await rig.events_settled(w1, 1)
    w1.link.subscribed("a", "response", False)
    await rig.events_settled(w1, 2)
    w0.link.unsubscribed("a", "stream", True)
    await rig.events_settled(w0, 2)
    w1.link.unsubscribed("a", "response", False)
    w1.link.unsubscribed("a", "response", True)
    await rig.events_settled(w1, 4)
    assert rig.events.calls == [
        ("sub", "a", "stream", True),
        ("sub", "a", "response", False),
        ("sub", "a", "response", False),
        ("unsub", "a", "stream", False),
        ("unsub", "a", "response", False),
        ("unsub", "a", "response", True),
    ]
    assert rig.relay.subs == {} and rig.relay.channel_subs == {}
    # the hub's tracker (the pipeline's and SUB socket's interest, with its linger) sees every
    # subscription, so its own counts make the same first/last decisions
    assert rig.tracker.calls == [
        ("sub", "a", "stream"),
        ("sub", "a", "response"),
        ("sub", "a", "response"),
        ("unsub", "a", "stream"),
        ("unsub", "a", "response"),
        ("unsub", "a", "response"),
    ]


async def test_relay_has_channel_is_instance_wide(rig: Rig) -> None:
    """The SUB socket's exact-name filter asks whether any worker holds a channel (F31)."""
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    assert not rig.relay.has_channel("a")
    w0.link.subscribed("a", "stream", True)
    await rig.events_settled(w0, 1)
    w1.link.subscribed("a", "ws", True)
    await rig.events_settled(w1, 1)
    w0.link.unsubscribed("a", "stream", True)
    await rig.events_settled(w0, 2)
    assert rig.relay.has_channel("a")
    rig.relay.worker_gone(1)
    assert not rig.relay.has_channel("a")
    assert rig.tracker.calls[-1] == ("unsub", "a", "ws")


async def test_relay_ignores_unsubscribe_it_never_saw(rig: Rig) -> None:
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    w0.link.subscribed("a", "stream", True)
    await rig.events_settled(w0, 1)
    w1.link.unsubscribed("a", "stream", True)  # worker 1 never held it
    await rig.events_settled(w1, 1)
    assert rig.events.calls == [("sub", "a", "stream", True)]
    assert rig.relay.channel_subs == {"a": 1}


async def test_relay_forwards_plain_events(rig: Rig) -> None:
    w0 = await rig.add_worker()
    w0.link.connection_opened("1", "127.0.0.1", "http")
    w0.link.request_received()
    w0.link.request_received()
    w0.link.delivered("a", "id1", "http-stream", 3)
    w0.link.dropped("slow_client", 2)
    w0.link.observe_origin_latency(0.25)
    w0.link.observe_origin_latency(0.5)
    w0.link.connection_closed("1")
    await rig.events_settled(w0, 6)
    # Requests and origin latencies are counted per tick and sent after the tick's events.
    assert rig.events.calls == [
        ("open", "1", "127.0.0.1", "http"),
        ("deliv", "a", "id1", "http-stream", 3),
        ("drop", "slow_client", 2),
        ("close", "1"),
        ("req",),
        ("req",),
    ]
    assert rig.latencies == [0.25, 0.5]
    assert rig.relay.conns == {0: {}}


async def test_relay_worker_gone_closes_what_it_held(rig: Rig) -> None:
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    w0.link.connection_opened("1", "127.0.0.1", "http")
    w0.link.connection_opened("3", "127.0.0.1", "http")
    w0.link.connection_opened("5", "127.0.0.1", "ws")
    w0.link.connection_closed("3")
    w0.link.subscribed("a", "stream", True)
    w0.link.subscribed("a", "stream", False)
    w0.link.subscribed("b", "response", True)
    await rig.events_settled(w0, 7)
    w1.link.connection_opened("2", "127.0.0.1", "http")
    w1.link.subscribed("a", "stream", True)
    await rig.events_settled(w1, 2)
    rig.events.calls.clear()
    rig.relay.worker_gone(0)
    closes = [c for c in rig.events.calls if c[0] == "close"]
    unsubs = [c for c in rig.events.calls if c[0] == "unsub"]
    assert sorted(closes) == [("close", "1"), ("close", "5")]
    # worker 1 still holds a: none of worker 0's unsubscriptions from a is the last
    assert sorted(unsubs) == [
        ("unsub", "a", "stream", False),
        ("unsub", "a", "stream", False),
        ("unsub", "b", "response", True),
    ]
    assert rig.relay.channel_subs == {"a": 1}
    assert 0 not in rig.relay.conns and 0 not in rig.relay.worker_subs
    # a late event from the dead worker's link changes nothing
    rig.events.calls.clear()
    rig.relay.handle(0, ("ev", "unsub", "a", "stream"))
    assert rig.events.calls == []
    # worker 1's last one now is the last
    w1.link.unsubscribed("a", "stream", True)
    await rig.events_settled(w1, 3)
    assert rig.events.calls == [("unsub", "a", "stream", True)]


async def test_relay_tracks_woh_connection_ids(rig: Rig) -> None:
    """F42 ``refresh {cid}`` is routed by this map to the worker holding the WebSocket-over-HTTP
    session."""
    w0, w1 = await rig.add_worker(), await rig.add_worker()
    w0.link.woh_opened("x")
    w0.link.woh_opened("y")
    w1.link.woh_opened("z")
    await rig.events_settled(w0, 2)
    await rig.events_settled(w1, 1)
    assert rig.relay.woh == {"x": 0, "y": 0, "z": 1}
    w1.link.woh_closed("x")  # not worker 1's: ignored
    await rig.events_settled(w1, 2)
    assert rig.relay.woh == {"x": 0, "y": 0, "z": 1}
    w0.link.woh_closed("x")
    await rig.events_settled(w0, 3)
    assert rig.relay.woh == {"y": 0, "z": 1}
    rig.relay.worker_gone(0)
    assert rig.relay.woh == {"z": 1}
    # WoH ids are bookkeeping only: no stats event
    assert rig.events.calls == []


async def test_connection_events_are_batched_and_keep_their_order(rig: Rig) -> None:
    """Connection and request events (stats, F43) reach the hub as one message per
    COUNTS_INTERVAL; any other message first sends what is pending, so the hub replays every
    event in the order the worker made it."""
    w0 = await rig.add_worker()
    w0.link.connection_opened("1", "127.0.0.1", "http")
    w0.link.connection_opened("2", "127.0.0.1", "http")
    w0.link.connection_closed("1")
    await rig.events_settled(w0, 3)
    evs = [m for i, m in rig.hub_msgs if i == 0 and m[0] == "ev"]
    assert [m[1] for m in evs] == ["batch"]
    w0.link.connection_opened("3", "127.0.0.1", "http")
    w0.link.subscribed("a", "stream", True)  # sends the pending open first
    w0.link.connection_closed("3")
    await rig.events_settled(w0, 6)
    assert rig.events.calls == [
        ("open", "1", "127.0.0.1", "http"),
        ("open", "2", "127.0.0.1", "http"),
        ("close", "1"),
        ("open", "3", "127.0.0.1", "http"),
        ("sub", "a", "stream", True),
        ("close", "3"),
    ]

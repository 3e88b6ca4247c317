"""ZeroMQ publish inputs (F31): message parsing, and real pyzmq peers on loopback (PUSH → PULL,
PUB/XPUB → SUB), plus publishers nobody here wrote (``pushpin-publish``, pubcontrol, the
encodings of Pushpin's tools/publish.py and tools/publish2.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import tnetstring as tnetstring3
import zmq
import zmq.asyncio

from gripd.core.config import Config, default_config
from gripd.core.tnetstring import dumps
from gripd.io.handler.channels import ChannelTracker
from gripd.io.inputs.zmq import (
    DRAIN_BACKLOG_MAX,
    DRAIN_MAX,
    Drop,
    ZmqInputs,
    parse_pull_message,
    parse_sub_message,
)
from gripd.io.observe.events import Events
from tests.support.procs import free_ports
from tests.support.sinks import RecordingSink

# -- pure parsing --------------------------------------------------------------------------------

ITEM = {"channel": "c", "formats": {"http-stream": {"content": "hi\n"}}}
T_ITEM = {b"channel": b"c", b"formats": {b"http-stream": {b"content": b"hi\n"}}}


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"J" + json.dumps(ITEM).encode(), id="json"),
        pytest.param(b"T" + dumps(T_ITEM), id="T-tnetstring"),
        pytest.param(dumps(T_ITEM), id="bare-tnetstring"),
        pytest.param(tnetstring3.dumps(T_ITEM), id="tnetstring3-order"),
    ],
)
def test_pull_encodings(frame: bytes) -> None:
    item = parse_pull_message([frame])
    assert item.channel == "c"
    assert item.http_stream is not None
    assert item.http_stream.content == b"hi\n"


def test_tnetstring_strings_are_raw_bytes() -> None:
    """In tnetstring items ``content-bin`` is raw (not base64) and bodies are raw bytes."""
    raw = {
        b"channel": b"c",
        b"formats": {
            b"ws-message": {b"content-bin": b"\x00\xff"},
            b"http-response": {b"body": b"\xc3(\n"},
        },
    }
    item = parse_pull_message([b"T" + dumps(raw)])
    assert item.ws_message is not None
    assert (item.ws_message.type, item.ws_message.content) == ("binary", b"\x00\xff")
    assert item.http_response is not None
    assert item.http_response.body == b"\xc3(\n"


def test_json_content_bin_is_base64() -> None:
    obj = {"channel": "c", "formats": {"ws-message": {"content-bin": "AP8="}}}
    item = parse_pull_message([b"J" + json.dumps(obj).encode()])
    assert item.ws_message is not None
    assert item.ws_message.content == b"\x00\xff"


@pytest.mark.parametrize(
    ("payload", "content"),
    [
        (b'J\xef\xbb\xbf{"channel":"c","formats":{"http-stream":{"content":"b"}}}', b"b"),
        (b'J{"channel":"c","formats":{"http-stream":{"content":"c\x01x"}}}', b"c\x01x"),
        (b'J{"channel":"c","formats":{"http-stream":{"content":"s\\ud800"}}}', b"s?"),
        (b'J{"channel":"c","size":.5,"formats":{"http-stream":{"content":"d"}}}', b"d"),
    ],
)
def test_json_is_read_as_pushpins_qt_reads_it(payload: bytes, content: bytes) -> None:
    """F31: ``J`` payloads are read as the control API reads bodies (F28), as Pushpin's Qt
    does: a BOM, raw control characters, lone surrogate escapes and ``.5`` are taken (each
    checked against a running Pushpin 1.36)."""
    item = parse_pull_message([payload])
    assert item.http_stream is not None and item.http_stream.content == content


@pytest.mark.parametrize(
    ("frames", "reason", "message"),
    [
        ([], "bad_frames", "received message with parts != 1"),
        ([b"J{}", b"x"], "bad_frames", "received message with parts != 1"),
        ([b"J{bad"], "bad_json", "received message with invalid format (json parse failed)"),
        ([b"J[1]"], "bad_json", "received message with invalid format (not a valid json object)"),
        ([b'J{"a": NaN}'], "bad_json", "received message with invalid format (json parse failed)"),
        ([b"J\xff"], "bad_json", "received message with invalid format (json parse failed)"),
        ([b""], "bad_tnetstring", "received message with invalid format (tnetstring parse failed)"),
        ([b"Tgarbage"], "bad_tnetstring", "received message with invalid format (tnetstring "),
        ([dumps(T_ITEM) + b"x"], "bad_tnetstring", "received message with invalid format (tnet"),
        ([b"0:~"], "bad_item", "received message with invalid format: publish item object is"),
        (
            [dumps({b"formats": {b"http-stream": {b"content": b"x"}}})],
            "bad_item",
            "received message with invalid format: publish item object does not contain 'channel'",
        ),
        (
            [dumps({b"channel": b"c", b"formats": {b"http-stream": {b"content-bin": b"eA=="}}})],
            "bad_item",
            "received message with invalid format: 'http-stream' does not contain 'content'",
        ),
    ],
)
def test_pull_drops(frames: list[bytes], reason: str, message: str) -> None:
    with pytest.raises(Drop) as ei:
        parse_pull_message(frames)
    assert ei.value.reason == reason
    assert str(ei.value).startswith(message)


def test_sub_channel_frame_wins() -> None:
    item = parse_sub_message([b"frame", b"T" + dumps(T_ITEM)])
    assert item.channel == "frame"
    item = parse_sub_message([b"", b"T" + dumps(T_ITEM)])
    assert item.channel == "c"  # an empty frame leaves the item's own channel


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"c"], "bad_frames"),
        ([b"c", dumps(T_ITEM), b""], "bad_frames"),
        ([b"c", b"J{"], "bad_json"),
        ([b"c", b"1:x"], "bad_tnetstring"),
        ([b"c", dumps({b"formats": {}})], "bad_item"),
    ],
)
def test_sub_drops(frames: list[bytes], reason: str) -> None:
    with pytest.raises(Drop) as ei:
        parse_sub_message(frames)
    assert ei.value.reason == reason


# -- real sockets --------------------------------------------------------------------------------


class DropLog(Events):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def dropped(self, reason: str, count: int = 1) -> None:
        self.reasons.extend([reason] * count)


def make_config(**kw: object) -> Config:
    pull, sub, cmd = free_ports(3)
    base = default_config("/tmp")
    fields: dict[str, object] = {
        "push_in_spec": f"tcp://127.0.0.1:{pull}",
        "push_in_sub_specs": [f"tcp://127.0.0.1:{sub}"],
        "command_spec": f"tcp://127.0.0.1:{cmd}",
        "subscription_linger": 0,
    }
    fields.update(kw)
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


class Rig:
    def __init__(self, inputs: ZmqInputs, sink: RecordingSink, drops: DropLog) -> None:
        self.inputs = inputs
        self.sink = sink
        self.drops = drops
        # Subscriptions reach the SUB socket through the channel tracker, as in the app.
        self.tracker = ChannelTracker(inputs.config.subscription_linger)
        self.tracker.add_listener(inputs)


async def start_rig(config: Config, **kw: object) -> Rig:
    sink, drops = RecordingSink(), DropLog()
    inputs = ZmqInputs(config, sink, events_out=drops, **kw)  # type: ignore[arg-type]
    await inputs.start()
    return Rig(inputs, sink, drops)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = await start_rig(make_config())
    yield r
    await r.inputs.stop()


async def push(ctx: zmq.asyncio.Context, spec: str, *messages: list[bytes]) -> None:
    s = ctx.socket(zmq.PUSH)
    s.linger = 1000
    s.connect(spec)
    for m in messages:
        await s.send_multipart(m)
    s.close()


async def test_push_to_pull_all_encodings(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    spec = rig.inputs.config.push_in_spec
    await push(
        ctx,
        spec,
        [b"J" + json.dumps({**ITEM, "channel": "a"}).encode()],
        [b"T" + dumps({**T_ITEM, b"channel": b"b"})],
        [dumps({**T_ITEM, b"channel": b"c"})],
    )
    items = await rig.sink.wait_items(3)
    assert [i.channel for i in items] == ["a", "b", "c"]
    assert {src for _, src in rig.sink.calls} == {"zmq-pull"}
    assert rig.inputs.received["zmq-pull"] == 3
    assert rig.inputs.counters == {}


async def test_garbage_is_dropped_counted_and_loop_survives(
    rig: Rig, ctx: zmq.asyncio.Context, caplog: pytest.LogCaptureFixture
) -> None:
    spec = rig.inputs.config.push_in_spec
    await push(
        ctx,
        spec,
        [b"J{nope"],
        [b"\x00\xff garbage"],
        [b"a", b"b"],
        [b"J[]"],
        [dumps({b"channel": b"x"})],
        [b"J" + json.dumps(ITEM).encode()],
    )
    items = await rig.sink.wait_items(1)
    assert [i.channel for i in items] == ["c"]
    assert rig.inputs.counters == {
        "bad_json": 2,
        "bad_tnetstring": 1,
        "bad_frames": 1,
        "bad_item": 1,
    }
    assert sorted(rig.drops.reasons) == sorted(
        ["bad_json", "bad_json", "bad_tnetstring", "bad_frames", "bad_item"]
    )
    text = caplog.text
    assert "IN pull: received message with parts != 1, skipping" in text
    assert "IN pull: received message with invalid format (json parse failed), skipping" in text
    assert "no formats specified, skipping" in text


async def test_burst_is_drained_in_batches(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    n = 3000
    frame = b"T" + dumps(T_ITEM)
    await push(ctx, rig.inputs.config.push_in_spec, *([frame] for _ in range(n)))
    await rig.sink.wait_items(n, timeout=20)
    sizes = [len(b) for b, _ in rig.sink.calls]
    assert sizes[0] <= DRAIN_MAX and max(sizes) <= DRAIN_BACKLOG_MAX
    assert len(sizes) < n  # batched, not one call per message


async def test_multipart_messages_in_a_burst_are_dropped_alone(
    rig: Rig, ctx: zmq.asyncio.Context
) -> None:
    """F31: a PULL message of several parts is dropped whole, also when it is taken from a
    queued burst (the non-blocking drain), and the messages around it are kept, in order."""
    n = 400
    messages = [[b"T" + dumps({**T_ITEM, b"channel": b"c%d" % i})] for i in range(n)]
    for k in (50, 200, 399):  # two and three parts, and one at the end
        messages[k] = [messages[k][0], b"x"] + ([b"y"] if k == 200 else [])
    await push(ctx, rig.inputs.config.push_in_spec, *messages)
    await rig.sink.wait_items(n - 3, timeout=20)
    await asyncio.sleep(0.1)
    assert [i.channel for i in rig.sink.items] == [
        f"c{i}" for i in range(n) if i not in (50, 200, 399)
    ]
    assert rig.inputs.counters == {"bad_frames": 3}
    assert len(rig.sink.calls) < n - 3  # most came through the drain, not one wake-up each


async def test_sink_failure_does_not_stop_input(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    rig.sink.fail = True
    frame = b"T" + dumps(T_ITEM)
    await push(ctx, rig.inputs.config.push_in_spec, [frame])
    await rig.sink.wait_items(1)
    rig.sink.fail = False
    await push(ctx, rig.inputs.config.push_in_spec, [frame])
    await rig.sink.wait_items(2)


async def xpub_recv(xpub: zmq.asyncio.Socket, timeout: float = 3.0) -> bytes:
    return bytes(await asyncio.wait_for(xpub.recv(), timeout))


async def no_more(xpub: zmq.asyncio.Socket, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await xpub_recv(xpub, wait)


async def connected_xpub(ctx: zmq.asyncio.Context, spec: str) -> zmq.asyncio.Socket:
    xpub = ctx.socket(zmq.XPUB)
    xpub.linger = 0
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    xpub.connect(spec)
    await asyncio.sleep(0.2)  # let the connection come up before interest changes
    return xpub


async def test_sub_interest_and_exact_channel_filter(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    xpub = await connected_xpub(ctx, rig.inputs.config.push_in_sub_specs[0])
    rig.tracker.subscribed("news", "stream")
    assert await xpub_recv(xpub) == b"\x01news"
    rig.tracker.subscribed("news", "stream")  # a second subscriber changes nothing
    await no_more(xpub)
    payload = b"T" + dumps({b"formats": {b"http-stream": {b"content": b"x"}}})
    # "newsflash" passes ZeroMQ's prefix filter but has no local subscriber of that name.
    await xpub.send_multipart([b"newsflash", payload])
    await xpub.send_multipart([b"news", payload])
    await xpub.send_multipart([b"other", payload])  # not subscribed: ZeroMQ drops it
    items = await rig.sink.wait_items(1)
    await asyncio.sleep(0.2)
    assert [i.channel for i in rig.sink.items] == ["news"]
    assert rig.sink.calls[0][1] == "zmq-sub"
    assert rig.inputs.filtered == 1
    assert items[0].http_stream is not None
    rig.tracker.unsubscribed("news", "stream")
    await no_more(xpub)
    rig.tracker.unsubscribed("news", "stream")
    assert await xpub_recv(xpub) == b"\x00news"
    assert rig.inputs.sub_channels == frozenset()
    xpub.close()


async def test_sub_wrong_frames_dropped(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    xpub = await connected_xpub(ctx, rig.inputs.config.push_in_sub_specs[0])
    rig.tracker.subscribed("c", "ws")
    assert await xpub_recv(xpub) == b"\x01c"
    await xpub.send_multipart([b"c"])
    await xpub.send_multipart([b"c", b"J{", b"extra"])
    await xpub.send_multipart([b"c", b"J{"])
    await xpub.send_multipart([b"c", b"J" + json.dumps(ITEM).encode()])
    await rig.sink.wait_items(1)
    assert rig.inputs.counters == {"bad_frames": 2, "bad_json": 1}
    xpub.close()


async def test_response_unsubscribe_lingers(ctx: zmq.asyncio.Context) -> None:
    r = await start_rig(make_config(subscription_linger=1))
    try:
        xpub = await connected_xpub(ctx, r.inputs.config.push_in_sub_specs[0])
        r.tracker.subscribed("lp", "response")
        assert await xpub_recv(xpub) == b"\x01lp"
        r.tracker.unsubscribed("lp", "response")
        await no_more(xpub, 0.5)  # lingering
        r.tracker.subscribed("lp", "response")  # the client polled again
        r.tracker.unsubscribed("lp", "response")
        await no_more(xpub, 0.7)  # linger restarted: 1 s from the second leave
        assert await xpub_recv(xpub, 2.0) == b"\x00lp"
        # stream holds don't linger
        r.tracker.subscribed("s", "stream")
        assert await xpub_recv(xpub) == b"\x01s"
        r.tracker.unsubscribed("s", "stream")
        assert await xpub_recv(xpub) == b"\x00s"
        xpub.close()
    finally:
        await r.inputs.stop()


async def test_linger_expiry_keeps_interest_if_channel_came_back(
    ctx: zmq.asyncio.Context,
) -> None:
    r = await start_rig(make_config(subscription_linger=1))
    try:
        xpub = await connected_xpub(ctx, r.inputs.config.push_in_sub_specs[0])
        r.tracker.subscribed("x", "response")
        assert await xpub_recv(xpub) == b"\x01x"
        r.tracker.unsubscribed("x", "response")
        r.tracker.subscribed("x", "stream")  # a stream subscriber while it lingers
        await no_more(xpub, 1.5)
        assert r.inputs.sub_channels == frozenset({"x"})
        xpub.close()
    finally:
        await r.inputs.stop()


async def test_interest_before_start_is_applied(ctx: zmq.asyncio.Context) -> None:
    sink = RecordingSink()
    inputs = ZmqInputs(make_config(), sink)
    inputs.gained("early")
    await inputs.start()
    try:
        xpub = await connected_xpub(ctx, inputs.config.push_in_sub_specs[0])
        assert await xpub_recv(xpub) == b"\x01early"
        xpub.close()
    finally:
        await inputs.stop()


async def test_sub_connect_mode(ctx: zmq.asyncio.Context) -> None:
    (port,) = free_ports(1)
    xpub = ctx.socket(zmq.XPUB)
    xpub.linger = 0
    xpub.bind(f"tcp://127.0.0.1:{port}")
    r = await start_rig(
        make_config(push_in_sub_specs=[f"tcp://127.0.0.1:{port}"], push_in_sub_connect=True)
    )
    try:
        r.tracker.subscribed("k", "ws")
        assert await xpub_recv(xpub) == b"\x01k"
        await xpub.send_multipart([b"k", b"J" + json.dumps(ITEM).encode()])
        items = await r.sink.wait_items(1)
        assert items[0].channel == "k"
    finally:
        await r.inputs.stop()
        xpub.close()


async def test_ipc_spec_directory_is_created(ctx: zmq.asyncio.Context) -> None:
    base = tempfile.mkdtemp(prefix="gz", dir="/tmp")
    try:
        path = os.path.join(base, "run", "deeper", "pull")
        cfg = make_config(push_in_spec=f"ipc://{path}", push_in_sub_specs=[])
        r = await start_rig(cfg)
        try:
            assert os.path.exists(path)  # noqa: ASYNC240
            await push(ctx, f"ipc://{path}", [b"T" + dumps(T_ITEM)])
            await r.sink.wait_items(1)
            assert r.inputs.sub is None
        finally:
            await r.inputs.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_stop_releases_ports() -> None:
    cfg = make_config()
    r = await start_rig(cfg)
    await r.inputs.stop()
    r2 = await start_rig(cfg)  # binds the same ports again
    await r2.inputs.stop()


# -- publishers nobody here wrote ----------------------------------------------------------------


def _pushpin_publish() -> str | None:
    exe = shutil.which("pushpin-publish")
    if exe is None and os.environ.get("CI", "").lower() != "true":
        pytest.skip("pushpin-publish not installed")
    return exe


async def test_pushpin_publish_cli_over_zmq(rig: Rig) -> None:
    exe = _pushpin_publish()
    assert exe is not None, "pushpin-publish missing on CI"
    spec = rig.inputs.config.push_in_spec
    cmd = [exe, "chan", "hello", "--spec", spec, "--id", "7", "-H", "X-A: b", "-M", "k=v"]
    proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    (item,) = await rig.sink.wait_items(1)
    assert (item.channel, item.id) == ("chan", "7")
    assert item.meta == {"k": "v"}
    assert item.http_response is not None
    assert item.http_response.body == b"hello\n"
    assert ("X-A", "b") in item.http_response.headers
    assert item.http_stream is not None
    assert item.http_stream.content == b"hello\n"
    assert item.ws_message is not None
    assert item.ws_message.content == b"hello"


async def test_tools_publish_py_encoding(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    """tools/publish.py: a bare tnetstring of a dict of byte strings, from the C encoder."""
    item = {
        b"channel": b"test",
        b"formats": {
            b"http-response": {b"body": b"hi\n", b"code": 201, b"headers": [[b"A", b"b"]]},
            b"http-stream": {b"content": b"hi\n"},
            b"ws-message": {b"content": b"hi"},
        },
        b"id": b"1",
        b"prev-id": b"0",
        b"meta": {b"sender": b"me"},
    }
    await push(ctx, rig.inputs.config.push_in_spec, [tnetstring3.dumps(item)])
    (got,) = await rig.sink.wait_items(1)
    assert (got.channel, got.id, got.prev_id, got.meta) == ("test", "1", "0", {"sender": "me"})
    assert got.http_response is not None
    assert (got.http_response.code, got.http_response.headers) == (201, [("A", "b")])


async def test_tools_publish2_py_xpub(rig: Rig, ctx: zmq.asyncio.Context) -> None:
    """tools/publish2.py: XPUB waits for ``\\x01<channel>``, then sends [channel, tnetstring]
    with no channel in the item."""
    xpub = await connected_xpub(ctx, rig.inputs.config.push_in_sub_specs[0])
    rig.tracker.subscribed("room", "stream")
    assert await xpub_recv(xpub) == b"\x01room"
    item = {b"formats": {b"http-stream": {b"content": b"x\n"}}}
    await xpub.send_multipart([b"room", tnetstring3.dumps(item)])
    (got,) = await rig.sink.wait_items(1)
    assert got.channel == "room"
    xpub.close()


async def test_pubcontrol_zmq_push_client(rig: Rig) -> None:
    """pubcontrol's ZmqPubControlClient with an explicit PUSH URI (PyPI ``pubcontrol``)."""
    import gripcontrol  # type: ignore[import-untyped]
    import pubcontrol  # type: ignore[import-untyped]

    def run() -> None:
        client = pubcontrol.ZmqPubControlClient(None, push_uri=rig.inputs.config.push_in_spec)
        try:
            fmt = gripcontrol.HttpStreamFormat("from pubcontrol\n")
            client.publish("pc", pubcontrol.Item(fmt), blocking=True)
            time.sleep(0.5)  # pubcontrol closes with linger 0: let the message leave
        finally:
            client.close()

    await asyncio.to_thread(run)
    (got,) = await rig.sink.wait_items(1)
    assert got.channel == "pc"
    assert got.http_stream is not None
    assert got.http_stream.content == b"from pubcontrol\n"


async def test_sub_items_can_bypass_the_bus(ctx: zmq.asyncio.Context) -> None:
    """F31 with a shared bus: every instance subscribes to the ZeroMQ publisher itself, so SUB
    items go to ``sub_sink`` (the local pipeline) while PULL items go to ``sink`` (the bus)."""
    local = RecordingSink()
    r = await start_rig(make_config(), sub_sink=local)
    try:
        xpub = await connected_xpub(ctx, r.inputs.config.push_in_sub_specs[0])
        r.tracker.subscribed("news", "stream")
        assert await xpub_recv(xpub) == b"\x01news"
        await xpub.send_multipart([b"news", b"J" + json.dumps(ITEM).encode()])
        await push(ctx, r.inputs.config.push_in_spec, [b"J" + json.dumps(ITEM).encode()])
        assert [i.channel for i in await local.wait_items(1)] == ["news"]
        assert [src for _, src in local.calls] == ["zmq-sub"]
        await r.sink.wait_items(1)
        assert [src for _, src in r.sink.calls] == ["zmq-pull"]
        xpub.close()
    finally:
        await r.inputs.stop()

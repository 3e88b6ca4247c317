"""``[gripd] zmq_max_message_size`` on the ZeroMQ inputs (F31 PULL/SUB, F42 command socket).

ZeroMQ refuses a frame over ``ZMQ_MAXMSGSIZE`` before reading it and drops the sender's
connection: the oversized item never reaches the sink, gripd keeps serving, and the same peer
(which reconnects by itself) or a fresh socket publishes normally afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import zmq
import zmq.asyncio

from gripd.core.config import Config, default_config, load_config
from gripd.core.errors import ConfigError
from gripd.core.tnetstring import dumps, loads
from gripd.io.inputs.command import CommandServer
from gripd.io.inputs.zmq import ZmqInputs
from tests.support.procs import free_ports
from tests.support.sinks import RecordingSink

LIMIT = 4096
BIG = 64 * 1024  # well over LIMIT


async def wait_channel(sink: RecordingSink, channel: str) -> list[str]:
    """Every channel received, once ``channel`` was (TimeoutError otherwise)."""
    await sink.wait_until(lambda: channel in [i.channel for i in sink.items])
    await asyncio.sleep(0.2)  # anything queued behind it
    return [i.channel for i in sink.items]


def make_config(**kw: object) -> Config:
    pull, sub, cmd = free_ports(3)
    fields: dict[str, object] = {
        "push_in_spec": f"tcp://127.0.0.1:{pull}",
        "push_in_sub_specs": [f"tcp://127.0.0.1:{sub}"],
        "command_spec": f"tcp://127.0.0.1:{cmd}",
        "subscription_linger": 0,
        "zmq_max_message_size": LIMIT,
    }
    fields.update(kw)
    return replace(default_config("/tmp"), **fields)  # type: ignore[arg-type]


def json_item(channel: str, size: int) -> bytes:
    """A PULL/SUB payload of about ``size`` bytes for ``channel``."""
    item = {"channel": channel, "formats": {"http-stream": {"content": "x" * size}}}
    return b"J" + json.dumps(item).encode()


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
async def inputs() -> AsyncIterator[tuple[ZmqInputs, RecordingSink]]:
    sink = RecordingSink()
    z = ZmqInputs(make_config(), sink)
    await z.start()
    yield z, sink
    await z.stop()


# -- configuration ---------------------------------------------------------------------------


def _load(text: str) -> Config:
    return load_config(text, path="/etc/gripd/pushpin.conf", read_file=lambda p: "")


def test_setting_default_and_parse() -> None:
    assert _load("").zmq_max_message_size == 10_000_000
    assert _load("[gripd]\nzmq_max_message_size=2048\n").zmq_max_message_size == 2048
    with pytest.raises(ConfigError) as ei:
        _load("[gripd]\nzmq_max_message_size=0\n")  # no "unlimited"
    assert "zmq_max_message_size" in ei.value.message


async def test_sockets_carry_the_limit(inputs: tuple[ZmqInputs, RecordingSink]) -> None:
    z, _ = inputs
    assert z.pull is not None and z.sub is not None
    assert z.pull.getsockopt(zmq.MAXMSGSIZE) == LIMIT
    assert z.sub.getsockopt(zmq.MAXMSGSIZE) == LIMIT


# -- PULL and SUB ----------------------------------------------------------------------------


async def test_pull_refuses_oversized_message(
    inputs: tuple[ZmqInputs, RecordingSink], ctx: zmq.asyncio.Context
) -> None:
    """An oversized PUSH message is not delivered; the same socket, after ZeroMQ reconnects it,
    and a fresh socket both publish normally."""
    z, sink = inputs
    spec = z.config.push_in_spec
    a = ctx.socket(zmq.PUSH)
    a.linger = 1000
    a.connect(spec)
    await a.send(json_item("big", BIG))
    await asyncio.sleep(0.5)  # the refused connection is dropped; let ZeroMQ reconnect
    b = ctx.socket(zmq.PUSH)
    b.linger = 1000
    b.connect(spec)
    await b.send(json_item("fresh", 100))
    assert await wait_channel(sink, "fresh") == ["fresh"]
    await a.send(json_item("again", 100))
    assert await wait_channel(sink, "again") == ["fresh", "again"]
    a.close()
    b.close()


async def test_sub_refuses_oversized_message(
    inputs: tuple[ZmqInputs, RecordingSink], ctx: zmq.asyncio.Context
) -> None:
    z, sink = inputs
    z.gained("c")
    spec = z.config.push_in_sub_specs[0]

    async def publisher() -> zmq.asyncio.Socket:
        xpub = ctx.socket(zmq.XPUB)
        xpub.linger = 1000
        xpub.connect(spec)
        assert await asyncio.wait_for(xpub.recv(), 3) == b"\x01c"  # interest arrived
        return xpub

    a = await publisher()
    await a.send_multipart([b"c", json_item("c", BIG)])
    await asyncio.sleep(0.5)
    b = await publisher()
    await b.send_multipart([b"c", json_item("c", 10)])
    async with asyncio.timeout(5):
        while not sink.items:
            sink.changed.clear()
            await sink.changed.wait()
    await asyncio.sleep(0.2)
    assert [len(i.http_stream.content) for i in sink.items if i.http_stream] == [10]
    a.close()
    b.close()


# -- command socket --------------------------------------------------------------------------


async def test_command_refuses_oversized_request(ctx: zmq.asyncio.Context) -> None:
    """An oversized ``publish`` request gets no answer (its connection is dropped) and
    publishes nothing; a fresh client is answered and publishes."""
    sink = RecordingSink()
    server = CommandServer(
        make_config(), sink=sink, recover=lambda: None, is_connected=lambda _id: False
    )
    await server.start()
    try:
        assert server.sock is not None
        assert server.sock.getsockopt(zmq.MAXMSGSIZE) == LIMIT
        spec = server.config.command_spec

        def publish_req(channel: str, size: int) -> bytes:
            item = {
                b"channel": channel.encode(),
                b"formats": {b"http-stream": {b"content": b"x" * size}},
            }
            return dumps({b"id": b"1", b"method": b"publish", b"args": {b"items": [item]}})

        a = ctx.socket(zmq.REQ)
        a.linger = 0
        a.connect(spec)
        await a.send(publish_req("big", BIG))
        assert not await a.poll(500)  # no reply
        a.close()
        b = ctx.socket(zmq.REQ)
        b.linger = 0
        b.connect(spec)
        await b.send(publish_req("small", 10))
        reply = loads(await asyncio.wait_for(b.recv(), 5))
        assert reply == {b"id": b"1", b"success": True, b"value": None}
        assert await wait_channel(sink, "small") == ["small"]
        b.close()
    finally:
        await server.stop()

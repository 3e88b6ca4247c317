"""The command socket (F42): request handling table, reply bytes, and real REQ/DEALER peers,
including pubcontrol's URI discovery (``get-zmq-uris``) feeding the ZeroMQ inputs (F31)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
import tnetstring as tnetstring3
import zmq
import zmq.asyncio

from gripd.core.config import Config, default_config
from gripd.core.tnetstring import dumps, loads
from gripd.io.inputs.command import CommandServer, error_reply, success_reply
from gripd.io.inputs.zmq import ZmqInputs
from tests.support.procs import free_ports
from tests.support.sinks import RecordingSink


def make_config(**kw: object) -> Config:
    pull, sub, cmd = free_ports(3)
    fields: dict[str, object] = {
        "push_in_spec": f"tcp://127.0.0.1:{pull}",
        "push_in_sub_specs": [f"tcp://127.0.0.1:{sub}"],
        "command_spec": f"tcp://127.0.0.1:{cmd}",
        "subscription_linger": 0,
    }
    fields.update(kw)
    return replace(default_config("/tmp"), **fields)  # type: ignore[arg-type]


class Harness:
    def __init__(self, config: Config, refresh: Any = None) -> None:
        self.sink = RecordingSink()
        self.recovered = 0
        self.connected = {"a:1", "b:2"}
        self.refreshed: list[dict[str, str]] = []
        self.refresh_result = True

        def recover() -> None:
            self.recovered += 1

        def do_refresh(args: dict[str, str]) -> bool:
            self.refreshed.append(args)
            return self.refresh_result

        self.server = CommandServer(
            config,
            sink=self.sink,
            recover=recover,
            is_connected=self.connected.__contains__,
            refresh=do_refresh if refresh else None,
        )

    def call(self, req: object) -> dict[bytes, Any]:
        reply, items = self.server.handle([dumps(req)])
        if items:
            self.sink.publish(items, source="command")
        return reply


@pytest.fixture
def h() -> Harness:
    return Harness(make_config(), refresh=True)


ITEM = {b"channel": b"c", b"formats": {b"http-stream": {b"content": b"x"}}}


@pytest.mark.parametrize(
    ("req", "reply"),
    [
        (
            {b"id": b"1", b"method": b"conncheck", b"args": {b"ids": [b"a:1", b"zz", b"b:2"]}},
            {b"id": b"1", b"success": True, b"value": [b"a:1", b"b:2"]},
        ),
        (
            {b"method": b"conncheck", b"args": {b"ids": [b"a:1", b"a:1"]}},
            {b"success": True, b"value": [b"a:1"]},
        ),
        (
            {b"id": b"2", b"method": b"conncheck", b"args": {b"ids": [b"a:1", 5]}},
            {b"id": b"2", b"success": False, b"condition": b"bad-request"},
        ),
        (
            {b"id": b"2", b"method": b"conncheck"},
            {b"id": b"2", b"success": False, b"condition": b"bad-request"},
        ),
        (
            {b"id": b"3", b"method": b"recover"},
            {b"id": b"3", b"success": True, b"value": None},
        ),
        (
            {b"id": b"4", b"method": b"refresh", b"args": {b"cid": b"a:1"}},
            {b"id": b"4", b"success": True, b"value": None},
        ),
        (
            {b"id": b"4", b"method": b"refresh", b"args": {b"channel": b"ch"}},
            {b"id": b"4", b"success": True, b"value": None},
        ),
        (
            {b"id": b"4", b"method": b"refresh", b"args": {b"cid": 1}},
            {b"id": b"4", b"success": False, b"condition": b"bad-request"},
        ),
        (
            {b"id": b"4", b"method": b"refresh", b"args": {b"channel": [b"x"]}},
            {b"id": b"4", b"success": False, b"condition": b"bad-request"},
        ),
        (
            {b"id": b"4", b"method": b"refresh"},
            {b"id": b"4", b"success": False, b"condition": b"bad-request"},
        ),
        (
            {b"id": b"5", b"method": b"publish", b"args": {b"items": [ITEM]}},
            {b"id": b"5", b"success": True, b"value": None},
        ),
        (
            {b"id": b"5", b"method": b"publish"},
            {
                b"id": b"5",
                b"success": False,
                b"condition": b"bad-request",
                b"value": b"Invalid format: object does not contain 'items'",
            },
        ),
        (
            {b"id": b"5", b"method": b"publish", b"args": {b"items": ITEM}},
            {
                b"id": b"5",
                b"success": False,
                b"condition": b"bad-request",
                b"value": b"Invalid format: object contains 'items' with wrong type",
            },
        ),
        (
            {b"id": b"5", b"method": b"publish", b"args": {b"items": [ITEM, {b"channel": b"c"}]}},
            {
                b"id": b"5",
                b"success": False,
                b"condition": b"bad-request",
                b"value": b"Invalid format: no formats specified",
            },
        ),
        (
            {b"id": b"6", b"method": b"nope"},
            {b"id": b"6", b"success": False, b"condition": b"method-not-found"},
        ),
        (
            {b"id": b"", b"method": b"nope"},  # an empty id is left out, as Pushpin does
            {b"success": False, b"condition": b"method-not-found"},
        ),
        # malformed requests: gripd answers bad-format (Pushpin says nothing; see module doc)
        ({b"id": b"7"}, {b"id": b"7", b"success": False, b"condition": b"bad-format"}),
        ({b"id": 7, b"method": b"recover"}, {b"success": False, b"condition": b"bad-format"}),
        (
            {b"id": b"7", b"method": b"recover", b"args": [1]},
            {b"id": b"7", b"success": False, b"condition": b"bad-format"},
        ),
        ([b"method", b"recover"], {b"success": False, b"condition": b"bad-format"}),
        (None, {b"success": False, b"condition": b"bad-format"}),
    ],
)
def test_requests(h: Harness, req: object, reply: dict[bytes, Any]) -> None:
    assert h.call(req) == reply


def test_side_effects(h: Harness) -> None:
    h.call({b"method": b"recover"})
    assert h.recovered == 1
    h.call({b"method": b"publish", b"args": {b"items": [ITEM, ITEM]}})
    assert [len(b) for b, src in h.sink.calls if src == "command"] == [2]
    h.call({b"method": b"publish", b"args": {b"items": [ITEM, {}]}})  # all or nothing
    assert len(h.sink.calls) == 1
    h.call({b"method": b"refresh", b"args": {b"cid": b"q"}})
    h.call({b"method": b"refresh", b"args": {b"channel": b"ch"}})
    assert h.refreshed == [{"cid": "q"}, {"channel": "ch"}]


def test_refresh_unknown_cid(h: Harness) -> None:
    h.refresh_result = False
    assert h.call({b"method": b"refresh", b"args": {b"cid": b"q"}}) == {
        b"success": False,
        b"condition": b"item-not-found",
    }
    # the channel form ignores per-connection failures (RefreshWorker ignoreErrors_)
    r = h.call({b"method": b"refresh", b"args": {b"channel": b"c"}})
    assert r[b"success"] is True


def test_refresh_without_callback() -> None:
    h = Harness(make_config(), refresh=None)
    r = h.call({b"method": b"refresh", b"args": {b"cid": b"x"}})
    assert r == {b"success": False, b"condition": b"item-not-found"}
    r = h.call({b"method": b"refresh", b"args": {b"channel": b"x"}})
    assert r == {b"success": True, b"value": None}


@pytest.mark.parametrize(
    ("connect", "expected"),
    [(False, ["command", "publish-pull", "publish-sub"]), (True, ["command", "publish-pull"])],
)
def test_get_zmq_uris(connect: bool, expected: list[str]) -> None:
    cfg = make_config(push_in_sub_connect=connect)
    h = Harness(cfg)
    r = h.call({b"id": b"u", b"method": b"get-zmq-uris"})
    assert r[b"success"] is True
    value = r[b"value"]
    assert [k.decode() for k in value] == expected
    assert value[b"command"] == cfg.command_spec.encode()
    assert value[b"publish-pull"] == cfg.push_in_spec.encode()
    if not connect:
        assert value[b"publish-sub"] == cfg.push_in_sub_specs[0].encode()


def test_get_zmq_uris_unconfigured() -> None:
    h = Harness(make_config(push_in_spec="", push_in_sub_specs=[]))
    assert h.call({b"method": b"get-zmq-uris"})[b"value"] == {b"command": mock_spec(h)}


def mock_spec(h: Harness) -> bytes:
    return h.server.config.command_spec.encode()


@pytest.mark.parametrize(
    "content",
    [[], [b"a", b"b"], [b"garbage"], [dumps(ITEM) + b"x"], [b"0:~"]],
)
def test_malformed_frames(h: Harness, content: list[bytes]) -> None:
    reply, items = h.server.handle(content)
    assert reply == {b"success": False, b"condition": b"bad-format"}
    assert items is None


def test_reply_bytes() -> None:
    """Key order id, success, value/condition (ZrpcResponsePacket::toVariant)."""
    assert dumps(success_reply(b"1")) == b"37:2:id,1:1,7:success,4:true!5:value,0:~}"
    assert dumps(error_reply(None, "method-not-found")) == (
        b"50:7:success,5:false!9:condition,16:method-not-found,}"
    )
    assert dumps(error_reply(b"x", "bad-request", "Invalid format: a")) == (
        b"83:2:id,1:x,7:success,5:false!9:condition,11:bad-request,5:value,17:Invalid format: a,}"
    )


# -- real sockets --------------------------------------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
async def served() -> AsyncIterator[Harness]:
    h = Harness(make_config(), refresh=True)
    await h.server.start()
    yield h
    await h.server.stop()


async def req_socket(ctx: zmq.asyncio.Context, spec: str) -> zmq.asyncio.Socket:
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    s.connect(spec)
    return s


async def ask(s: zmq.asyncio.Socket, data: bytes) -> object:
    await s.send(data)
    return loads(await asyncio.wait_for(s.recv(), 5))


async def test_req_client_survives_garbage(served: Harness, ctx: zmq.asyncio.Context) -> None:
    s = await req_socket(ctx, served.server.config.command_spec)
    assert await ask(s, b"garbage") == {b"success": False, b"condition": b"bad-format"}
    assert await ask(s, b"") == {b"success": False, b"condition": b"bad-format"}
    await s.send_multipart([b"a", b"b"])
    assert loads(await asyncio.wait_for(s.recv(), 5)) == {
        b"success": False,
        b"condition": b"bad-format",
    }
    r = await ask(s, dumps({b"id": b"1", b"method": b"get-zmq-uris"}))
    assert isinstance(r, dict)
    assert r[b"success"] is True
    s.close()


async def test_tools_command_py_style(served: Harness, ctx: zmq.asyncio.Context) -> None:
    """tools/command.py: uuid id, args dict, encoded by the C tnetstring module."""
    s = await req_socket(ctx, served.server.config.command_spec)
    rid = str(uuid.uuid4()).encode()
    req = {
        b"id": rid,
        b"method": b"publish",
        b"args": {b"items": [ITEM]},
    }
    assert await ask(s, tnetstring3.dumps(req)) == {b"id": rid, b"success": True, b"value": None}
    items = await served.sink.wait_items(1)
    assert items[0].channel == "c"
    # tools/recover.py
    r = await ask(s, tnetstring3.dumps({b"method": b"recover"}))
    assert r == {b"success": True, b"value": None}
    assert served.recovered == 1
    s.close()


async def test_dealer_pipelined_requests(served: Harness, ctx: zmq.asyncio.Context) -> None:
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    d.connect(served.server.config.command_spec)
    for i in range(5):
        await d.send_multipart([b"", dumps({b"id": str(i).encode(), b"method": b"x"})])
    ids = []
    for _ in range(5):
        frames = await asyncio.wait_for(d.recv_multipart(), 5)
        assert frames[0] == b""
        r = loads(frames[1])
        assert isinstance(r, dict)
        assert r[b"condition"] == b"method-not-found"
        ids.append(r[b"id"])
    assert ids == [b"0", b"1", b"2", b"3", b"4"]
    d.close()


async def test_pubcontrol_discovers_uris_and_publishes() -> None:
    """pubcontrol's ZmqPubControlClient asks get-zmq-uris on the command socket, then publishes
    over PUSH; with require_subscribers it uses publish-sub and waits for SUB interest."""
    import gripcontrol  # type: ignore[import-untyped]
    import pubcontrol  # type: ignore[import-untyped]

    cfg = make_config()
    sink = RecordingSink()
    inputs = ZmqInputs(cfg, sink)
    server = CommandServer(cfg, sink=sink, recover=lambda: None, is_connected=lambda c: False)
    await inputs.start()
    await server.start()
    try:

        def run_push() -> None:
            client = pubcontrol.ZmqPubControlClient(cfg.command_spec)
            try:
                fmt = gripcontrol.HttpStreamFormat("via push\n")
                client.publish("p", pubcontrol.Item(fmt), blocking=True)
                time.sleep(0.5)  # pubcontrol closes with linger 0: let the message leave
            finally:
                client.close()

        await asyncio.to_thread(run_push)
        items = await sink.wait_items(1)
        assert (items[0].channel, items[0].http_stream.content) == (  # type: ignore[union-attr]
            "p",
            b"via push\n",
        )

        inputs.gained("s")
        subs: list[tuple[str, str]] = []

        def run_pub() -> None:
            client = pubcontrol.ZmqPubControlClient(
                cfg.command_spec,
                require_subscribers=True,
                sub_callback=lambda kind, ch: subs.append((kind, ch)),
            )
            try:
                for _ in range(50):  # wait for the forwarded subscription
                    if ("sub", "s") in subs:
                        break
                    time.sleep(0.05)
                fmt = gripcontrol.HttpStreamFormat("via pub\n")
                client.publish("s", pubcontrol.Item(fmt), blocking=True)
                time.sleep(0.5)  # pubcontrol closes with linger 0: let the message leave
            finally:
                client.close()

        await asyncio.to_thread(run_pub)
        items = await sink.wait_items(2)
        assert ("sub", "s") in subs
        assert items[1].channel == "s"
        assert items[1].http_stream is not None
        assert items[1].http_stream.content == b"via pub\n"
    finally:
        await server.stop()
        await inputs.stop()

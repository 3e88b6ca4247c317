"""Many gripd instances on one Redis (``[gripd] bus = redis://...``), end to end.

A real ``redis-server`` (``tests.support.redis``) and real ``python -m gripd`` instances, each a
hub with two workers. A publish into any instance (HTTP control API F28, ZeroMQ PULL F31, the
command socket F42) goes to Redis and from there to every instance holding the channel, whose
pipeline (dedup F33, sequencing F32) hands it to the workers holding it. Subscribers of every
kind are checked: HTTP streams (SSE, F24), long-polls (F22), WebSockets with GRIP control
messages (F38/F39) and WebSocket-over-HTTP (F40/F41).

Before publishing, every test waits until Redis itself reports each instance's subscription to
the channel (``PUBSUB SHARDNUMSUB gripd:<channel>``): a publish racing a subscription may
legitimately miss it. Faults (Redis killed or late, a worker killed, bad input) are in
``test_redis_bus_faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import zmq
import zmq.asyncio
from websockets.asyncio.client import ClientConnection, connect

from gripd.core.tnetstring import dumps, loads
from tests.conftest import TIME_SCALE
from tests.e2e.test_workers import conf as workers_conf
from tests.e2e.test_workers import held_by_worker, metrics, wait_metric, wait_until
from tests.support.e2e import get
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import NO_RATE_LIMIT, Server, publish_http, start_server
from tests.support.rawhttp import RawResponse, open_request
from tests.support.redis import RedisServer, redis_server
from tests.support.wsorigin import WsOrigin

__all__ = ["redis_server"]  # the fixture, used by this module's tests

T = TypeVar("T")

WAIT = 10.0 * TIME_SCALE
KEY_PREFIX = "gripd:"
CONNECTED = "pp_gripd_bus_connected"
PUBLISHED = "pp_gripd_bus_items_published_total"
RECEIVED = "pp_gripd_bus_items_received_total"
FAILED = "pp_gripd_bus_publish_failed_total"
DECODE_ERRORS = "pp_gripd_bus_decode_errors_total"
RECONNECTS = "pp_gripd_bus_reconnects_total"
STREAMS = 'pp_gripd_subscriptions{mode="stream"}'
RESPONSES = 'pp_gripd_subscriptions{mode="response"}'
WEBSOCKETS = 'pp_gripd_subscriptions{mode="ws"}'

Launch = Callable[..., Awaitable[list[Server]]]


# --- instances, Redis, metrics --------------------------------------------------------------------


def bus_conf(url: str, workers: int = 2, **handler: str) -> dict[str, dict[str, str]]:
    """Two workers, the Redis bus, Prometheus (prefix ``pp_``) on an ipc path, no rate limit and
    no F22 first-subscription retry (a retry in flight would miss a publish)."""
    c = workers_conf(workers)
    c["gripd"]["bus"] = url
    c["handler"].update(NO_RATE_LIMIT["handler"])
    c["handler"]["update_on_first_subscription"] = "false"
    c["handler"].update(handler)
    return c


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """``await launch(routes, conf, n=2)``: ``n`` gripd instances started side by side, each
    ready once its hub logged ``started N workers`` (a single process: once it answers) and,
    unless ``connected=False``, once its bus is connected to Redis (an instance waits at most
    2 s for Redis before it starts, which a loaded machine can exceed: a publish before the bus
    is connected is delivered locally only, and not stored); all stopped after the test."""
    servers: list[Server] = []

    async def _launch(
        routes: list[str], c: dict[str, dict[str, str]], n: int = 2, *, connected: bool = True
    ) -> list[Server]:
        first = len(servers)
        dirs = [tmp_path / f"gripd-{first + i}" for i in range(n)]
        results = await asyncio.gather(
            *(asyncio.to_thread(start_server, "gripd", d, routes, conf=c) for d in dirs),
            return_exceptions=True,
        )
        servers.extend(r for r in results if isinstance(r, Server))
        for r in results:
            if isinstance(r, BaseException):
                raise r
        started = [r for r in results if isinstance(r, Server)]
        workers = c["gripd"].get("workers", "2")
        for s in started:
            if workers != "1":
                await wait_until(partial(_workers_started, s, workers), "every worker ready")
        if connected:
            await wait_connected(*started)
        return started

    yield _launch
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


def _workers_started(s: Server, workers: str) -> bool:
    return f"started {workers} workers" in s.log_text()


def redis_call(r: RedisServer, *args: str | bytes) -> Any:
    """One command on a fresh connection to the test's Redis server."""
    with redis.Redis(host=r.host, port=r.port, socket_timeout=2.0) as client:
        return client.execute_command(*args)


async def wait_subscribed(r: RedisServer, channel: str, n: int = 2) -> None:
    """Until Redis has ``n`` subscribers (one per instance) of ``channel``'s bus channel."""

    def count() -> int:
        reply = redis_call(r, "PUBSUB", "SHARDNUMSUB", KEY_PREFIX + channel)
        return int(reply[1])

    seen = -1
    deadline = asyncio.get_running_loop().time() + WAIT
    while (seen := await asyncio.to_thread(count)) != n:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{seen} instances subscribed to {channel!r} in Redis, not {n}")
        await asyncio.sleep(0.05)


async def metric(s: Server, name: str) -> float | None:
    return (await metrics(s)).get(name)


async def wait_metric_ok(
    s: Server, name: str, ok: Callable[[float | None], bool], what: str, within: float = WAIT
) -> float | None:
    """Poll ``s``'s Prometheus endpoint until ``ok(value of name)``; the value."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await metric(s, name)
        if ok(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{name} is {value}; wanted {what}")
        await asyncio.sleep(0.05)


async def wait_connected(*servers: Server, up: bool = True, within: float = WAIT) -> None:
    for s in servers:
        await wait_metric(s, CONNECTED, 1.0 if up else 0.0, within)


# --- publishing through the three inputs ----------------------------------------------------------


def to_tnet(value: Any) -> Any:
    """A JSON-shaped publish item as the tnetstring the ZeroMQ inputs take (str -> bytes)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {to_tnet(k): to_tnet(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_tnet(v) for v in value]
    return value


class Publisher:
    """HTTP control API, ZeroMQ PULL and command socket publishing into given instances (one
    PUSH and one REQ socket per instance, kept, so each input's publishes stay in order)."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self._push: dict[int, zmq.asyncio.Socket] = {}
        self._req: dict[int, zmq.asyncio.Socket] = {}

    async def http(self, s: Server, *items: dict[str, Any]) -> None:
        status, body = await asyncio.to_thread(publish_http, s.control_port, list(items))
        assert (status, body) == (200, "Published\n")

    async def pull(self, s: Server, item: dict[str, Any]) -> None:
        sock = self._push.get(s.zmq_pull_port)
        if sock is None:
            sock = self._push[s.zmq_pull_port] = self.ctx.socket(zmq.PUSH)
            sock.linger = 2000
            sock.connect(f"tcp://127.0.0.1:{s.zmq_pull_port}")
        await sock.send(b"J" + json.dumps(item).encode())

    async def command(self, s: Server, *items: dict[str, Any]) -> None:
        sock = self._req.get(s.command_port)
        if sock is None:
            sock = self._req[s.command_port] = self.ctx.socket(zmq.REQ)
            sock.linger = 0
            sock.connect(f"tcp://127.0.0.1:{s.command_port}")
        req = {b"method": b"publish", b"args": {b"items": [to_tnet(i) for i in items]}}
        await sock.send(dumps(req))
        reply = loads(await asyncio.wait_for(sock.recv(), WAIT))
        assert reply == {b"success": True, b"value": None}

    def close(self) -> None:
        for sock in [*self._push.values(), *self._req.values()]:
            sock.close()
        self.ctx.term()


@pytest.fixture
async def pub() -> AsyncIterator[Publisher]:
    p = Publisher()
    try:
        yield p
    finally:
        p.close()


def item(channel: str, text: str, **extra: Any) -> dict[str, Any]:
    """One item for every subscriber kind: an SSE event, a long-poll body, a WebSocket text."""
    return {
        "channel": channel,
        "formats": {
            "http-stream": {"content": f"data: {text}\n\n"},
            "http-response": {"body": f"{text}\n"},
            "ws-message": {"content": text},
        },
        **extra,
    }


# --- subscribers ----------------------------------------------------------------------------------


@dataclass
class Sub:
    """One subscriber, read in the background: ``got`` is what it received, in order."""

    label: str
    port: int  # its client port (tells which worker holds it)
    close: Callable[[], Awaitable[None]]
    got: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


async def _read_sse(resp: RawResponse, got: list[str]) -> None:
    while True:
        chunk = await resp.read_body_until(b"\n\n", 3600)
        got.extend(m.decode() for m in re.findall(rb"^data: (.*)$", chunk, re.M))


async def _read_ws(ws: ClientConnection, got: list[str]) -> None:
    while True:
        msg = await ws.recv()
        got.append(msg if isinstance(msg, str) else msg.decode())


async def open_sse(s: Server, label: str) -> Sub:
    """``GET /sse``: the origin holds it as a stream on channel ``seq`` (F24)."""
    resp = await open_request(s.http_port, get("/sse"), WAIT)
    assert resp.status == 200
    await resp.read_body_until(b":open\n\n", WAIT)

    async def close() -> None:
        resp.close()

    sub = Sub(label, int(resp.writer.get_extra_info("sockname")[1]), close)
    sub.task = asyncio.create_task(_read_sse(resp, sub.got))
    return sub


async def _ws_sub(ws: ClientConnection, label: str) -> Sub:
    async def close() -> None:
        await ws.close()

    sub = Sub(label, int(ws.local_address[1]), close)
    sub.task = asyncio.create_task(_read_ws(ws, sub.got))
    return sub


async def open_grip_ws(s: Server, label: str, *, wso: WsOrigin, channel: str = "seq") -> Sub:
    """A WebSocket to a GRIP origin that subscribes it to ``channel`` with ``c:`` (F38/F39)."""
    pending = asyncio.ensure_future(
        connect(f"ws://127.0.0.1:{s.http_port}/ws", open_timeout=WAIT, ping_interval=None)
    )
    oc = await wso.next_conn()
    oc.accept_grip()
    ws = await pending
    oc.control(json.dumps({"type": "subscribe", "channel": channel}))
    return await _ws_sub(ws, label)


async def open_woh(s: Server, label: str) -> Sub:
    """A WebSocket-over-HTTP session (F40/F41) the origin subscribes to ``seq`` at OPEN."""
    ws = await connect(f"ws://127.0.0.1:{s.http_port}/woh", open_timeout=WAIT, ping_interval=None)
    assert await asyncio.wait_for(ws.recv(), WAIT) == "welcome"
    return await _ws_sub(ws, label)


def woh_answer(req: RecordedRequest) -> Reply:
    """The WebSocket-over-HTTP origin: OPEN -> OPEN, a ``c:`` subscribe, ``m:welcome``."""
    if not req.body.startswith(b"OPEN\r\n"):
        return Reply(200, [("Content-Type", "application/websocket-events")], b"")
    sub = b"c:" + json.dumps({"type": "subscribe", "channel": "seq"}).encode()
    welcome = b"m:welcome"
    events = (
        b"OPEN\r\n"
        + b"TEXT %x\r\n%s\r\n" % (len(sub), sub)
        + b"TEXT %x\r\n%s\r\n" % (len(welcome), welcome)
    )
    return Reply(
        200,
        [("Content-Type", "application/websocket-events"), ("Sec-WebSocket-Extensions", "grip")],
        events,
    )


def serve_origin(o: Origin) -> None:
    o.route("GET", "/sse", sse_reply("seq"))
    o.route("GET", "/lp", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "lp")], "t\n"))
    o.route("POST", "/woh", woh_answer)


def sse_reply(channel: str) -> Reply:
    headers = [
        ("Content-Type", "text/event-stream"),
        ("Grip-Hold", "stream"),
        ("Grip-Channel", channel),
    ]
    return Reply(200, headers, ":open\n\n")


def routes(o: Origin, wso: WsOrigin | None = None) -> list[str]:
    out = [f"*,path_beg=/woh 127.0.0.1:{o.port},over_http", f"* 127.0.0.1:{o.port}"]
    if wso is not None:
        out.insert(0, f"*,path_beg=/ws 127.0.0.1:{wso.port}")
    return out


async def spread(
    s: Server,
    n: int,
    opener: Callable[[Server, str], Awaitable[T]],
    label: str,
    port_of: Callable[[T], int],
) -> list[T]:
    """Open ``n`` subscribers (``opener(s, label + index)``), then (at most 16) more until both
    workers of ``s`` hold some."""
    out: list[T] = []
    while True:
        held = held_by_worker(s)
        owners = {pid for pid, ports in held.items() for c in out if port_of(c) in ports}
        if len(out) >= n and len(owners) == 2:
            return out
        assert len(out) < n + 16, f"not spread over both workers: {held}"
        out.append(await opener(s, f"{label}{len(out)}"))


async def wait_got(subs: Sequence[Sub], count: int, within: float = WAIT) -> None:
    """Until every subscriber received at least ``count`` messages."""
    deadline = asyncio.get_running_loop().time() + within
    while any(len(x.got) < count for x in subs):
        if asyncio.get_running_loop().time() > deadline:
            short = {x.label: x.got for x in subs if len(x.got) < count}
            raise TimeoutError(f"subscribers short of {count} messages: {short}")
        dead = [x for x in subs if x.task is not None and x.task.done()]
        if dead and dead[0].task is not None:
            raise AssertionError(f"{dead[0].label} stopped reading: {dead[0].task.exception()!r}")
        await asyncio.sleep(0.02)


async def close_subs(subs: Sequence[Sub]) -> None:
    for x in subs:
        if x.task is not None:
            x.task.cancel()
            with contextlib.suppress(BaseException):
                await x.task
        with contextlib.suppress(Exception):
            await x.close()


@contextlib.asynccontextmanager
async def subscribers() -> AsyncIterator[list[Sub]]:
    """A list to put subscribers in; all closed on exit."""
    subs: list[Sub] = []
    try:
        yield subs
    finally:
        await close_subs(subs)


# --- publish anywhere, deliver everywhere ---------------------------------------------------------


async def test_every_input_reaches_every_subscriber_once_in_one_order(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """F24/F28/F31/F38–F42: 2 instances x 2 workers; SSE streams, GRIP WebSockets and
    WebSocket-over-HTTP sessions on both workers of both instances; 60 numbered items on one
    channel published into A (control API, command socket) and B (ZeroMQ PULL, command
    socket). Every subscriber gets every item exactly once.

    The first 30 are paced (each seen by one subscriber before the next is published: they are
    in Redis in publish order), so every subscriber must get exactly 0..29 in order. The other
    30 are sent back to back into both instances, where the order between two instances'
    inputs is Redis's arrival order: every subscriber must see the same order, and each
    input's items in the order that input was given them."""
    async with WsOrigin() as wso, subscribers() as subs:
        serve_origin(origin)
        a, b = await launch(routes(origin, wso), bus_conf(redis_server.url))
        for name, s in (("A", a), ("B", b)):
            subs += await spread(s, 4, open_sse, f"{name}/sse", _port)
            subs += await spread(s, 2, partial(open_grip_ws, wso=wso), f"{name}/ws", _port)
            subs += await spread(s, 2, open_woh, f"{name}/woh", _port)
        for name, s in (("A", a), ("B", b)):
            mine = [x for x in subs if x.label.startswith(name)]
            n_sse = sum("/sse" in x.label for x in mine)
            n_ws = len(mine) - n_sse
            await wait_metric(s, STREAMS, n_sse)
            await wait_metric(s, WEBSOCKETS, n_ws)
        await wait_subscribed(redis_server, "seq")

        inputs: list[tuple[str, Callable[[dict[str, Any]], Awaitable[None]]]] = [
            ("A-http", lambda it: pub.http(a, it)),
            ("B-pull", lambda it: pub.pull(b, it)),
            ("A-command", lambda it: pub.command(a, it)),
            ("B-command", lambda it: pub.command(b, it)),
        ]
        by_input: dict[str, list[str]] = {name: [] for name, _ in inputs}
        for n in range(30):  # paced
            name, send = inputs[n % len(inputs)]
            by_input[name].append(str(n))
            await send(item("seq", str(n)))
            await wait_got(subs[:1], n + 1)
        for n in range(30, 60):  # back to back
            name, send = inputs[n % len(inputs)]
            by_input[name].append(str(n))
            await send(item("seq", str(n)))
        await wait_got(subs, 60)

        paced = [str(n) for n in range(30)]
        for x in subs:
            assert x.got[:30] == paced, x.label
            assert sorted(x.got, key=int) == [str(n) for n in range(60)], (x.label, x.got)
        first = subs[0].got
        assert all(x.got == first for x in subs), {x.label: x.got for x in subs}
        for name, sent in by_input.items():
            assert [v for v in first if v in sent] == sent, name
        for name, s in (("A", a), ("B", b)):
            m = await metrics(s)
            assert m[RECEIVED] == 60, name  # every item came back from Redis, none was local
            assert m[FAILED] == 0 and m[DECODE_ERRORS] == 0, name
        published = (await metrics(a))[PUBLISHED] + (await metrics(b))[PUBLISHED]
        assert published == 60


def _port(sub: Sub) -> int:
    return sub.port


async def open_long_poll(s: Server, query: str, *, origin: Origin) -> RawResponse:
    """A long-poll (F22) on ``lp``, once its request reached the origin."""
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(get(f"/lp?{query}"))
    await wait_until(lambda: any(r.query == query for r in origin.requests_for("/lp")), query)
    return RawResponse(reader, writer)


def _lp_port(resp: RawResponse) -> int:
    return int(resp.writer.get_extra_info("sockname")[1])


async def test_long_polls_of_both_instances_answered_once(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """F22/F31: long-polls held by both workers of both instances are each answered by one
    publish into B's ZeroMQ PULL socket, with exactly that item; a second round of long-polls
    is answered the same way by a publish into A's control API."""
    serve_origin(origin)
    a, b = await launch(routes(origin), bus_conf(redis_server.url))
    polls: dict[str, list[RawResponse]] = {}
    try:
        for rnd, body in enumerate(("first", "second")):
            for name, s in (("A", a), ("B", b)):
                opener = partial(open_long_poll, origin=origin)
                polls[name] = await spread(s, 3, opener, f"{name}{rnd}-", _lp_port)
                await wait_metric(s, RESPONSES, len(polls[name]))
            await wait_subscribed(redis_server, "lp")
            if rnd == 0:
                await pub.pull(b, item("lp", body))
            else:
                await pub.http(a, item("lp", body))
            for name, held in polls.items():
                for p in held:
                    await p.head(WAIT)
                    assert p.status == 200, name
                    assert await p.read_to_end(WAIT) == f"{body}\n".encode(), name
                    p.close()
    finally:
        for held in polls.values():
            for p in held:
                p.close()


# --- sequencing and dedup across instances --------------------------------------------------------


async def _two_with_streams(
    redis_server: RedisServer, launch: Launch, origin: Origin, channel: str, subs: list[Sub]
) -> tuple[Server, Server]:
    """Instances A and B, each with 2 SSE streams on ``channel``, subscribed in Redis."""
    origin.route("GET", "/sse", sse_reply(channel))
    a, b = await launch(routes(origin), bus_conf(redis_server.url))
    for name, s in (("A", a), ("B", b)):
        for i in range(2):
            subs.append(await open_sse(s, f"{name}/sse{i}"))
        await wait_metric(s, STREAMS, 2)
    await wait_subscribed(redis_server, channel)
    return a, b


async def _wait_published(s: Server, at_least: float) -> None:
    """Until ``s``'s bus has had ``at_least`` items taken by Redis."""
    await wait_metric_ok(s, PUBLISHED, lambda v: (v or 0) >= at_least, f">= {at_least}")


async def test_prev_id_order_restored_across_instances(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """F32: ``2`` (prev-id ``1``) is published into B and reaches Redis before ``1`` (prev-id
    ``0``) is published into A; each instance's sequencer holds ``2`` until ``1`` arrives, so
    every subscriber gets 0, 1, 2 (well within ``message_wait``, 5 s, which would release ``2``
    alone)."""
    async with subscribers() as subs:
        a, b = await _two_with_streams(redis_server, launch, origin, "seq", subs)
        await pub.http(a, item("seq", "0", id="0"))
        await wait_got(subs, 1)
        base_b = (await metrics(b))[PUBLISHED]
        await pub.http(b, item("seq", "2", id="2", **{"prev-id": "1"}))
        await _wait_published(b, base_b + 1)  # in Redis, so before "1" everywhere
        await asyncio.sleep(0.1)
        assert all(x.got == ["0"] for x in subs), {x.label: x.got for x in subs}  # held back
        await pub.command(a, item("seq", "1", id="1", **{"prev-id": "0"}))
        await wait_got(subs, 3, within=3.0 * TIME_SCALE)
        for x in subs:
            assert x.got == ["0", "1", "2"], x.label


async def test_same_id_published_into_both_instances_is_delivered_once(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """F33 with Pushpin-style scale-out (the publisher posts every item to every instance):
    with ``id_cache_ttl`` > 0 each instance's pipeline sees both copies come back from Redis
    and drops the second, so every subscriber gets each id once. A sentinel published after
    Redis took both copies shows nothing was left behind."""
    async with subscribers() as subs:
        a, b = await _two_with_streams(redis_server, launch, origin, "seq", subs)
        for n, via in enumerate(("http", "pull", "command")):
            it = item("seq", f"x{n}", id=f"x{n}")
            for s in (a, b):
                if via == "http":
                    await pub.http(s, it)
                elif via == "pull":
                    await pub.pull(s, it)
                else:
                    await pub.command(s, it)
        await _wait_published(a, 3)
        await _wait_published(b, 3)
        await pub.http(b, item("seq", "end", id="end"))
        await wait_got(subs, 4)
        for x in subs:
            assert x.got == ["x0", "x1", "x2", "end"], x.label
        for s in (a, b):
            assert (await metrics(s))[RECEIVED] == 7  # both copies came back; one was dropped


async def test_single_process_and_hub_instances_share_channels(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """A single-process instance (``workers = 1``: inputs, bus and pipeline next to the
    listener) and a hub with two workers on the same Redis deliver each other's publishes; the
    single process exposes the bus metrics too."""
    origin.route("GET", "/sse", sse_reply("mix"))
    (a,) = await launch(routes(origin), bus_conf(redis_server.url, workers=1), n=1)
    (b,) = await launch(routes(origin), bus_conf(redis_server.url), n=1)
    async with subscribers() as subs:
        for name, s in (("A", a), ("B", b)):
            subs += [await open_sse(s, f"{name}/sse{i}") for i in range(2)]
            await wait_metric(s, STREAMS, 2)
        await wait_subscribed(redis_server, "mix")
        await pub.http(a, item("mix", "from-single"))
        await wait_got(subs, 1)
        await pub.command(b, item("mix", "from-hub"))
        await wait_got(subs, 2)
        assert all(x.got == ["from-single", "from-hub"] for x in subs), {
            x.label: x.got for x in subs
        }
        for s in (a, b):
            m = await metrics(s)
            assert (m[CONNECTED], m[RECEIVED], m[PUBLISHED], m[FAILED]) == (1, 2, 1, 0)

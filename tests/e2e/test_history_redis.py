"""History and resume on the Redis bus: two instances (two workers each) share one history in
Redis Streams, so a client resumes on whichever instance it reconnects to.

Items are published into one instance and stored by Redis as they are published; a client that
reconnects to the other instance with ``Last-Event-ID`` gets what it missed there, then live
items, with no gap and no duplicate, even while a publisher keeps running.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.conftest import TIME_SCALE
from tests.e2e.test_history import EVENT, SSE, lp, lp_origin, read_for, sse, woh_origin, ws
from tests.e2e.test_redis_bus import (
    KEY_PREFIX,
    Launch,
    bus_conf,
    launch,
    redis_call,
    wait_subscribed,
)
from tests.e2e.test_workers import wait_until
from tests.support.e2e import get, publish
from tests.support.origin import Origin, Reply
from tests.support.procs import Server
from tests.support.rawhttp import RawResponse, open_request, raw_request
from tests.support.redis import RedisServer, redis_server

__all__ = ["launch", "redis_server"]  # fixtures used by this module's tests

WAIT = 10.0 * TIME_SCALE


def conf(r: RedisServer, size: int = 100) -> dict[str, dict[str, str]]:
    c = bus_conf(r.url)
    c["gripd"]["history_size"] = str(size)
    return c


async def connect(s: Server, path: str = "/events", extra: str = "") -> RawResponse:
    resp = await open_request(s.http_port, get(path, extra), WAIT)
    await resp.head(WAIT)
    await resp.read_body_until(b"retry: 300\n\n", WAIT)
    return resp


async def test_sse_resume_on_the_other_instance(
    launch: Launch, redis_server: RedisServer, origin: Origin
) -> None:
    origin.route("GET", "/events", Reply(200, SSE, "retry: 300\n\n"))
    a, b = await launch([f"* 127.0.0.1:{origin.port}"], conf(redis_server))
    first = await connect(a)
    await wait_subscribed(redis_server, "news", 1)
    await publish(b, [sse(1), sse(2)])
    await first.read_body_until(b"item 2\n\n", WAIT)
    first.close()
    await publish(a, [sse(3), sse(4)])  # missed while away
    again = await connect(b, extra="Last-Event-ID: 2\r\n")
    try:
        assert again.headers["gripd-history"] == "resumed"
        await publish(a, [sse(5)])
        body = await again.read_body_until(b"item 5\n\n", WAIT)
        assert [int(m.group(1)) for m in EVENT.finditer(body)] == [3, 4, 5]
    finally:
        again.close()
    gone = await connect(a, extra="Last-Event-ID: 999\r\n")
    try:
        assert gone.headers["gripd-history"] == "gone"
    finally:
        gone.close()


async def test_long_poll_and_websocket_resume_from_redis(
    launch: Launch, redis_server: RedisServer, origin: Origin
) -> None:
    lp_origin(origin)
    woh_origin(origin, "2")
    routes = [f"*,path_beg=/ws 127.0.0.1:{origin.port},over_http", f"* 127.0.0.1:{origin.port}"]
    a, b = await launch(routes, conf(redis_server))
    items = []
    for n in range(1, 5):
        item = lp(n)
        item["formats"] = {**item["formats"], **ws(n)["formats"]}  # type: ignore[dict-item]
        items.append(item)
    await publish(a, items)
    status, _, body = await raw_request(b.http_port, get("/poll?after=2"), WAIT)
    assert (status, body) == (200, b"item 3\n")  # from Redis, without the origin again
    from websockets.asyncio.client import connect as ws_connect

    async with ws_connect(
        f"ws://127.0.0.1:{b.http_port}/ws", open_timeout=WAIT, ping_interval=None
    ) as client:
        got = [await asyncio.wait_for(client.recv(), WAIT) for _ in range(2)]
        assert got == ["m3", "m4"]
        await wait_subscribed(redis_server, "news", 1)
        await publish(a, [ws(5)])
        assert await asyncio.wait_for(client.recv(), WAIT) == "m5"


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_publish_right_after_start_is_stored(
    launch: Launch, redis_server: RedisServer, origin: Origin, workers: int
) -> None:
    """With Redis up, an instance is on the bus before its inputs take publishes: an item
    published as soon as the control API answers is stored in Redis (and shared), not
    delivered locally only."""
    c = bus_conf(redis_server.url, workers)
    c["gripd"]["history_size"] = "100"
    (a,) = await launch([f"* 127.0.0.1:{origin.port}"], c, n=1, connected=False)
    log = a.log_text()
    assert log.index("bus: connected to") < log.index("control API on"), log
    await publish(a, [lp(1)])

    def stored() -> bool:
        return bool(redis_call(redis_server, "XLEN", f"{KEY_PREFIX}h:news") == 1)

    await wait_until(stored, "the item in the channel's Redis stream")
    assert "delivering locally only" not in a.log_text()


async def test_client_bouncing_between_instances_misses_nothing(
    launch: Launch, redis_server: RedisServer, origin: Origin
) -> None:
    """A publisher runs on instance A while a client hangs up at random moments and resumes on
    A or B in turn: every item exactly once, in order."""
    origin.route("GET", "/events", Reply(200, SSE, "retry: 300\n\n"))
    servers = await launch([f"* 127.0.0.1:{origin.port}"], conf(redis_server, 1000))
    total = 250
    rnd = random.Random(11)

    async def publisher() -> None:
        for n in range(1, total + 1):
            # One publisher, one instance: its publishes reach Redis in order (two instances'
            # 200s do not order their publishes in Redis).
            await publish(servers[0], [sse(n)])
            await asyncio.sleep(rnd.random() * 0.002)

    seen: list[int] = []
    conns: list[tuple[int | None, list[int]]] = []
    task = asyncio.create_task(publisher())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60 * TIME_SCALE
        turn = 0
        while (not seen or seen[-1] < total) and loop.time() < deadline:
            last = seen[-1] if seen else None
            got = await read_for(servers[turn % 2], last, 0.02 + rnd.random() * 0.08)
            conns.append((last, got))
            seen.extend(got)
            turn += 1
        await task
    finally:
        task.cancel()
    assert seen and seen == list(range(seen[0], total + 1)), repr(conns)

"""The Redis bus when things go wrong, end to end: real ``redis-server``, real gripd instances
(two workers each). Helpers and fixtures come from ``test_redis_bus.py``.

- Redis killed (SIGKILL) with streams held: nothing is dropped, each instance delivers its own
  publishes locally (counted in ``gripd_bus_publish_failed_total``, logged loudly), and after
  Redis is back on the same port the instances reconnect and resubscribe by themselves.
- Redis not there at start: gripd starts degraded and joins once Redis appears.
- A worker killed: restarted by its hub; the other worker and the other instance keep
  receiving.
- Bad input: ``bus`` URLs that do not parse stop gripd naming ``file:line``, and garbage put
  straight into a bus channel in Redis is dropped and counted.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from functools import partial
from pathlib import Path

import pytest

from gripd.core import tnetstring
from gripd.core.itemwire import encode_items
from gripd.core.publish import HttpStreamFormat, PublishItem
from tests.conftest import TIME_SCALE
from tests.e2e.test_redis_bus import (
    CONNECTED,
    DECODE_ERRORS,
    FAILED,
    KEY_PREFIX,
    RECEIVED,
    RECONNECTS,
    STREAMS,
    WAIT,
    Launch,
    Publisher,
    Sub,
    _port,
    _two_with_streams,
    bus_conf,
    close_subs,
    item,
    launch,
    open_sse,
    pub,
    redis_call,
    routes,
    spread,
    sse_reply,
    subscribers,
    wait_connected,
    wait_got,
    wait_subscribed,
)
from tests.e2e.test_workers import held_by_worker, metrics, wait_metric, wait_until, worker_pids
from tests.support.origin import Origin
from tests.support.procs import Server, run_gripd_expecting_exit
from tests.support.redis import RedisServer, redis_server

__all__ = ["launch", "pub", "redis_server"]  # fixtures, used by this module's tests


def got(subs: list[Sub]) -> dict[str, list[str]]:
    return {x.label: x.got for x in subs}


def logged(s: Server, pattern: str) -> bool:
    return re.search(pattern, s.log_text()) is not None


def alive(subs: list[Sub]) -> bool:
    """Every subscriber is still reading (its connection was not closed)."""
    return all(x.task is not None and not x.task.done() for x in subs)


# --- Redis goes away and comes back ---------------------------------------------------------------


async def test_redis_killed_mid_stream_then_restarted(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """40 items are published into A while Redis is SIGKILLed after the 10th: A's subscribers
    get all 40 exactly once, in order (what did not come back from Redis is delivered
    locally); B's get the first few, those Redis passed on before it died. While Redis is
    down no held connection is dropped, each instance delivers its own publishes locally and
    counts them, and the loss is logged as an error. Redis restarted on the same port: both
    instances reconnect, resubscribe and deliver across instances again."""
    r = redis_server
    async with subscribers() as subs:
        a, b = await _two_with_streams(r, launch, origin, "k", subs)
        on_a, on_b = subs[:2], subs[2:]
        sent = [f"r{n}" for n in range(40)]
        for n, text in enumerate(sent):
            if n == 10:
                await asyncio.to_thread(r.kill)  # the redis-server this test started
            await pub.http(a, item("k", text))
        await wait_got(on_a, 40)
        await wait_connected(a, b, up=False)
        for x in on_a:
            assert x.got == sent, x.label
        for x in on_b:  # what reached Redis before it died: at most the first 10
            assert x.got == sent[: len(x.got)] and len(x.got) <= 10, x.label
        assert on_b[0].got == on_b[1].got
        m = await metrics(a)
        # Unsent or unacknowledged items count as failed (sent ones that did not come back are
        # delivered locally too, uncounted).
        assert m[FAILED] > 0 and m[FAILED] + m[RECEIVED] <= 40, m

        # Down: local delivery only, loudly.
        failed_a, failed_b = m[FAILED], (await metrics(b))[FAILED]
        before = {x.label: len(x.got) for x in subs}
        await pub.http(a, item("k", "only-A"))
        await pub.command(b, item("k", "only-B"))
        await wait_until(lambda: all(len(x.got) > before[x.label] for x in subs), "local items")
        assert [x.got[-1] for x in on_a] == ["only-A"] * 2
        assert [x.got[-1] for x in on_b] == ["only-B"] * 2
        assert (await metrics(a))[FAILED] == failed_a + 1
        assert (await metrics(b))[FAILED] == failed_b + 1
        url = re.escape(f"redis://127.0.0.1:{r.port}")
        for s in (a, b):
            log = s.log_text()
            assert re.search(rf"\[ERR\] .* bus: {url} lost \(.+\); delivering locally only", log)
        assert alive(subs), got(subs)

        # Back on the same port: reconnected and resubscribed without help.
        await asyncio.to_thread(r.start)
        await wait_connected(a, b)
        await wait_subscribed(r, "k")
        for s in (a, b):
            assert re.search(rf"\[WARN\] .* bus: {url} reachable again after", s.log_text())
            assert (await metrics(s))[RECONNECTS] == 1
        before = {x.label: len(x.got) for x in subs}
        await pub.http(a, item("k", "again-A"))
        # Two instances' publishes have no order between them until Redis has one: the second
        # goes in once the first has arrived everywhere.
        await wait_until(lambda: all(len(x.got) >= before[x.label] + 1 for x in subs), "A's")
        await pub.pull(b, item("k", "again-B"))
        await wait_until(lambda: all(len(x.got) >= before[x.label] + 2 for x in subs), "both")
        for x in subs:
            assert x.got[before[x.label] :] == ["again-A", "again-B"], x.label
        assert alive(subs)


async def test_redis_unreachable_at_start(
    tmp_path: Path, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """gripd starts without Redis (degraded: local delivery, an error logged,
    ``gripd_bus_connected`` 0) and joins the other instance once redis-server starts."""
    r = RedisServer(tmp_path / "redis")  # its port is chosen, nothing listens there yet
    # Keep the port bound (not listening: connects are refused) while gripd picks its ports.
    placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        placeholder.bind((r.host, r.port))
        async with subscribers() as subs:
            origin.route("GET", "/sse", sse_reply("k"))
            a, b = await launch(routes(origin), bus_conf(r.url), connected=False)
            placeholder.close()
            url = re.escape(f"redis://127.0.0.1:{r.port}")
            line = rf"\[ERR\] .* bus: {url} unreachable \(.+\); delivering locally only"
            for s in (a, b):
                await wait_until(partial(logged, s, line), "the unreachable line")
                assert (await metrics(s))[CONNECTED] == 0
            for name, s in (("A", a), ("B", b)):
                subs += [await open_sse(s, f"{name}/sse{i}") for i in range(2)]
                await wait_metric(s, STREAMS, 2)
            await pub.http(a, item("k", "local-A"))
            await pub.pull(b, item("k", "local-B"))
            await wait_got(subs, 1)
            assert got(subs) == {
                "A/sse0": ["local-A"],
                "A/sse1": ["local-A"],
                "B/sse0": ["local-B"],
                "B/sse1": ["local-B"],
            }
            assert (await metrics(a))[FAILED] == 1

            await asyncio.to_thread(r.start)
            await wait_connected(a, b, within=2 * WAIT)  # the retry backoff reaches 5 s
            await wait_subscribed(r, "k")
            await pub.http(a, item("k", "shared"))
            await wait_got(subs, 2)
            assert all(x.got[1:] == ["shared"] for x in subs), got(subs)
            assert (await metrics(b))[RECEIVED] == 1
    finally:
        placeholder.close()
        await asyncio.to_thread(r.stop)


# --- a worker dies --------------------------------------------------------------------------------


async def test_killed_worker_restarts_and_delivery_goes_on(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """A worker of A killed with SIGKILL: its subscribers' connections end, the subscribers on
    A's other worker and on B keep receiving (also while it restarts), and once restarted its
    new subscribers get items published into B."""
    origin.route("GET", "/sse", sse_reply("k"))
    a, b = await launch(routes(origin), bus_conf(redis_server.url))
    async with subscribers() as subs:
        subs += await spread(a, 4, open_sse, "A/sse", _port)
        subs += [await open_sse(b, f"B/sse{i}") for i in range(2)]
        await wait_metric(a, STREAMS, len(subs) - 2)
        await wait_metric(b, STREAMS, 2)
        await wait_subscribed(redis_server, "k")
        await pub.http(a, item("k", "1"))
        await wait_got(subs, 1)

        held = held_by_worker(a)
        victim = min(held, key=lambda pid: len(held[pid]))
        doomed = [x for x in subs if x.port in held[victim]]
        survivors = [x for x in subs if x not in doomed]
        assert doomed and len(survivors) > 2
        os.kill(victim, signal.SIGKILL)  # a worker of an instance this test started
        await pub.pull(b, item("k", "2"))
        await wait_got(survivors, 2)
        await pub.http(a, item("k", "3"))
        await wait_got(survivors, 3)
        for x in doomed:
            await asyncio.wait_for(asyncio.shield(_ended(x)), WAIT)
        await wait_until(lambda: re.search(r"worker \d+ restarted", a.log_text()), "the restart")
        restarted = next(p for p in worker_pids(a) if p != victim and p not in held)

        def on_restarted(x: Sub) -> bool:
            return x.port in held_by_worker(a).get(restarted, set())

        fresh: list[Sub] = []
        while not any(on_restarted(x) for x in fresh):
            assert len(fresh) < 16, "no new connection landed on the restarted worker"
            fresh.append(await open_sse(a, f"A/new{len(fresh)}"))
        subs += fresh
        await wait_metric(a, STREAMS, len(survivors) - 2 + len(fresh))
        await pub.pull(b, item("k", "4"))
        await wait_got(survivors, 4)
        await wait_got(fresh, 1)
        assert all(x.got == ["1", "2", "3", "4"] for x in survivors), got(survivors)
        assert all(x.got == ["4"] for x in fresh), got(fresh)
        await close_subs(doomed)


async def _ended(x: Sub) -> None:
    """Until ``x``'s reader stopped (its connection was closed)."""
    assert x.task is not None
    try:
        await x.task
    except (ConnectionError, OSError):
        pass


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://user:s3cret@x", "must start with redis:// or rediss://"),
        ("redis://user:s3cret@h/notanumber", "database must be a number"),
        ("redis://:s3cret@127.0.0.1:99999", "not a valid URL"),
    ],
    ids=["http", "db-not-a-number", "port-out-of-range"],
)
def test_bad_bus_url_is_a_config_error(tmp_path: Path, value: str, reason: str) -> None:
    """``[gripd] bus`` that does not parse: exit 1 naming file:line and the problem; the URL
    (and its password) is never echoed."""
    res, text, path = run_gripd_expecting_exit(
        tmp_path, {"workers": "2", "bus": value}, 20 * TIME_SCALE
    )
    assert res.returncode == 1, res.stderr
    line = text.split("\n").index(f"bus={value}") + 1
    assert f"{path}:{line}: [gripd] bus: {reason}" in res.stderr, res.stderr
    assert "s3cret" not in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


async def test_garbage_in_a_bus_channel_is_dropped(
    redis_server: RedisServer, launch: Launch, origin: Origin, pub: Publisher
) -> None:
    """Messages put straight into ``gripd:<channel>`` by someone else that are not bus
    messages (not a tnetstring, an unknown format version, items naming another channel) are
    logged, counted in ``gripd_bus_decode_errors_total`` and dropped; later items flow."""
    other = PublishItem(channel="other", http_stream=HttpStreamFormat(content=b"data: no\n\n"))
    garbage = [
        b"\xff\x00 not a tnetstring",
        tnetstring.dumps([99, b"node", b"http", 1, []]),
        encode_items([other], "intruder", source="http", seq=1),
    ]
    async with subscribers() as subs:
        a, b = await _two_with_streams(redis_server, launch, origin, "g", subs)
        for data in garbage:
            # SPUBLISH reaches the instances (sharded pub/sub on Redis 7), PUBLISH would with
            # Redis < 7: whichever they use, both instances get each message once.
            reached = sum(
                int(redis_call(redis_server, verb, KEY_PREFIX + "g", data))
                for verb in ("SPUBLISH", "PUBLISH")
            )
            assert reached == 2
        for s in (a, b):
            await wait_metric(s, DECODE_ERRORS, len(garbage))
            assert "bus: dropped a message from Redis" in s.log_text()
        await pub.http(a, item("g", "fine"))
        await wait_got(subs, 1)
        assert all(x.got == ["fine"] for x in subs), got(subs)
        for s in (a, b):
            assert (await metrics(s))[RECEIVED] == 1

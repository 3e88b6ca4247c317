"""Wildcard channel subscriptions (``[gripd] wildcard_channels``), end to end: real gripd
processes, a real origin, real Redis.

A pattern (``news.*``) held by a stream hold (F20/F24), a long-poll (F22), a ``grip-instruct``
hold (F21) or a ``c:`` subscribe over a WebSocket (F39) or WebSocket-over-HTTP (F40) receives
every publish (F28) to a matching channel, formatted as for a subscriber of that channel; in one
process, across two workers (the hub routes by pattern), and across two instances sharing a
Redis bus (PSUBSCRIBE). A subscriber of both a channel and a pattern that matches it gets each
item once; a pattern's delivery filters apply (F35). With the option off a ``*`` is an ordinary
character. A bad pattern is a 502 (bad GRIP instructions) or an ignored control message.

Absence is checked by order, not by waiting: the item that must not arrive is published before
one that must, on the same path, so once the second is read the first would have been too.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

from websockets.frames import Opcode

from tests.conftest import TIME_SCALE, StartFn
from tests.e2e.test_redis_bus import Launch, bus_conf, launch, redis_call
from tests.e2e.test_websocket import _grip_session, ctl, origin_route, ws_item
from tests.e2e.test_woh import events_reply, parse_events
from tests.e2e.test_woh import recv as woh_recv
from tests.e2e.test_woh import ws_connect as woh_connect
from tests.e2e.test_workers import conf as workers_conf
from tests.e2e.test_workers import held_by_worker, wait_until
from tests.support.e2e import get, lp_item, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import NO_RATE_LIMIT, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request
from tests.support.redis import RedisServer, redis_server
from tests.support.wsorigin import WsOrigin

__all__ = ["launch", "redis_server"]  # fixtures used by this module's tests

WAIT = 10.0 * TIME_SCALE


def conf(on: bool = True, workers: int | None = None) -> dict[str, dict[str, str]]:
    """The option, no rate limit and no F22 first-subscription retry (a retry in flight would
    miss a publish)."""
    c: dict[str, dict[str, str]] = workers_conf(workers) if workers else {"gripd": {}}
    c.setdefault("handler", {}).update(NO_RATE_LIMIT["handler"])
    c["handler"]["update_on_first_subscription"] = "false"
    c["gripd"]["wildcard_channels"] = "true" if on else "false"
    return c


def stream_reply(*channels: str) -> Reply:
    hdrs = [("Grip-Hold", "stream"), ("Content-Type", "text/plain")]
    return Reply(200, [*hdrs, *(("Grip-Channel", c) for c in channels)], "start\n")


async def open_stream(s: Server, path: str) -> RawResponse:
    resp = await open_request(s.http_port, get(path), WAIT)
    await resp.head(WAIT)
    await resp.read_body_until(b"start\n", WAIT)
    return resp


async def settled(s: Server, origin: Origin, path: str, count: int = 1) -> None:
    """The hold is in place once the origin answered and the proxy had a moment to subscribe."""
    await origin.wait_for(path, count, WAIT)
    await asyncio.sleep(0.3 * TIME_SCALE)


# --- one process ---------------------------------------------------------------------------------


async def test_stream_hold_on_pattern(start: StartFn, origin: Origin) -> None:
    """F20/F24: ``news.*`` gets ``news.a`` and ``news.b`` (and ``news.x.y``), not ``sports.a``
    nor ``news`` itself; an exact subscriber of ``news.a`` is unaffected."""
    origin.route("GET", "/p", stream_reply("news.*"))
    origin.route("GET", "/e", stream_reply("news.a"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf())
    pat = await open_stream(s, "/p")
    exact = await open_stream(s, "/e")
    await settled(s, origin, "/e")
    try:
        await publish(
            s,
            [
                stream_item("sports.a", "S\n"),
                stream_item("news", "N0\n"),
                stream_item("news.a", "A\n"),
                stream_item("news.b", "B\n"),
                stream_item("news.x.y", "XY\n"),
            ],
        )
        assert await pat.read_body_until(b"XY\n", WAIT) == b"A\nB\nXY\n"
        assert await exact.read_body_until(b"A\n", WAIT) == b"A\n"
        await publish(s, [stream_item("news.b", "B2\n"), stream_item("news.a", "A2\n")])
        assert await exact.read_body_until(b"A2\n", WAIT) == b"A2\n"  # not B2
        assert await pat.read_body_until(b"A2\n", WAIT) == b"B2\nA2\n"
    finally:
        pat.close()
        exact.close()


async def test_exact_and_pattern_deliver_once(start: StartFn, origin: Origin) -> None:
    """A hold on ``news.x`` and on the patterns ``news.*`` and ``n*``, which all match
    ``news.x``, gets each matching item once."""
    origin.route("GET", "/both", stream_reply("news.x", "news.*", "n*"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf())
    resp = await open_stream(s, "/both")
    await settled(s, origin, "/both")
    try:
        await publish(s, [stream_item("news.x", "1\n"), stream_item("news.y", "2\n")])
        await publish(s, [stream_item("nx", "3\n"), stream_item("news.x", "4\n")])
        assert await resp.read_body_until(b"4\n", WAIT) == b"1\n2\n3\n4\n"
    finally:
        resp.close()


async def test_pattern_filters(start: StartFn, origin: Origin) -> None:
    """F35: a pattern's delivery filter (``skip-self``) applies to every matching channel."""
    hdrs = [
        ("Grip-Hold", "stream"),
        ("Grip-Channel", "news.*; filter=skip-self"),
        ("Grip-Set-Meta", "user=alice"),
    ]
    origin.route("GET", "/f", Reply(200, hdrs, "start\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf())
    resp = await open_stream(s, "/f")
    await settled(s, origin, "/f")
    try:
        mine = stream_item("news.a", "self\n", meta={"sender": "alice"})
        await publish(s, [mine, stream_item("news.b", "bob\n", meta={"sender": "bob"})])
        assert await resp.read_body_until(b"bob\n", WAIT) == b"bob\n"
    finally:
        resp.close()


async def test_long_poll_on_pattern(start: StartFn, origin: Origin) -> None:
    """F22: a long-poll held on ``user.42.*`` is answered by a publish to ``user.42.inbox``,
    formatted as for a subscriber of that channel (held headers kept)."""
    lp = [("Grip-Hold", "response"), ("Grip-Channel", "user.42.*"), ("X-Held", "1")]
    origin.route("GET", "/lp", Reply(200, lp, "timeout\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf())
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=WAIT))
    await settled(s, origin, "/lp")
    await publish(s, [lp_item("user.43.inbox", "other\n"), lp_item("user.42.inbox", "mine\n")])
    status, headers, body = await task
    assert (status, body) == (200, b"mine\n")
    assert headers["x-held"] == "1"


async def test_grip_instruct_json_pattern(start: StartFn, origin: Origin) -> None:
    """F21: a ``grip-instruct`` hold's channel may be a pattern too."""
    doc = {"hold": {"mode": "stream", "channels": [{"name": "j.*"}]}}
    hdrs = [("Content-Type", "application/grip-instruct")]
    origin.route("GET", "/j", Reply(200, hdrs, json.dumps(doc)))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf())
    resp = await open_request(s.http_port, get("/j"), WAIT)
    await resp.head(WAIT)
    await settled(s, origin, "/j")
    try:
        await publish(s, [stream_item("k.1", "no\n"), stream_item("j.1", "yes\n")])
        assert await resp.read_body_until(b"yes\n", WAIT) == b"yes\n"
    finally:
        resp.close()


async def test_websocket_subscribe_pattern(start: StartFn) -> None:
    """F39: ``c:`` subscribe to ``news.*`` (with a route prefix); a bad pattern is an ignored
    control message; unsubscribing the pattern stops delivery."""
    async with WsOrigin() as o:
        s = await start("gripd", origin_route(o.port, ",prefix=p_"), conf=conf())
        c, oc = await _grip_session(s, o)
        ctl(oc, type="subscribe", channel="a*b")  # bad: ignored
        ctl(oc, type="subscribe", channel="*")  # bad: ignored
        ctl(oc, type="subscribe", channel="news.*")
        await asyncio.sleep(0.3 * TIME_SCALE)
        await publish(
            s,
            [
                ws_item("p_a*b", content="bad"),
                ws_item("p_sports.a", content="S"),
                ws_item("news.a", content="unprefixed"),
                ws_item("p_news.a", content="A"),
                ws_item("p_news.b", type="binary", content="B"),
            ],
        )
        assert await c.recv_message() == (Opcode.TEXT, b"A")
        assert await c.recv_message() == (Opcode.BINARY, b"B")
        ctl(oc, type="subscribe", channel="zz")
        ctl(oc, type="unsubscribe", channel="news.*")
        await asyncio.sleep(0.3 * TIME_SCALE)
        await publish(s, [ws_item("p_news.c", content="gone"), ws_item("p_zz", content="Z")])
        assert await c.recv_message() == (Opcode.TEXT, b"Z")
        c.close()


async def test_websocket_over_http_subscribe_pattern(start: StartFn) -> None:
    """F40/F41: a WebSocket-over-HTTP origin's ``c:`` subscribe to a pattern; ``a*b`` is
    ignored."""
    subs = [
        b"c:" + json.dumps({"type": "subscribe", "channel": c}).encode() for c in ("a*b", "w.*")
    ]

    def answer(req: RecordedRequest) -> Reply:
        if parse_events(req.body)[:1] == [("OPEN", None)]:
            opened = [("OPEN", None), *(("TEXT", sub) for sub in subs), ("TEXT", b"m:hi")]
            return events_reply(opened, [("Sec-WebSocket-Extensions", "grip")])
        return events_reply([])

    async with Origin() as o:
        o.route("POST", "/g", answer)
        s = await start("gripd", [f"* 127.0.0.1:{o.port},over_http"], conf=conf())
        ws = await woh_connect(s, "/g")
        try:
            assert await woh_recv(ws) == "hi"
            await asyncio.sleep(0.3 * TIME_SCALE)
            await publish(
                s,
                [
                    ws_item("a*b", content="bad"),
                    ws_item("v.1", content="no"),
                    ws_item("w.1", content="yes"),
                ],
            )
            assert await woh_recv(ws) == "yes"
        finally:
            ws.transport.abort()  # no close handshake to wait for


async def test_option_off_star_is_literal(start: StartFn, origin: Origin) -> None:
    """Off (the default): ``news.*`` is an ordinary channel, as in Pushpin; ``a*b`` is fine."""
    origin.route("GET", "/p", stream_reply("news.*", "a*b"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf(on=False))
    resp = await open_stream(s, "/p")
    await settled(s, origin, "/p")
    try:
        await publish(
            s,
            [
                stream_item("news.a", "A\n"),
                stream_item("news.*", "STAR\n"),
                stream_item("a*b", "AB\n"),
            ],
        )
        assert await resp.read_body_until(b"AB\n", WAIT) == b"STAR\nAB\n"
    finally:
        resp.close()


async def test_bad_pattern_is_502(start: StartFn, origin: Origin) -> None:
    """A ``*`` not at the end, or ``*`` alone, is bad GRIP: 502 like any bad instruction."""
    for path, channel in (("/mid", "a*b"), ("/alone", "*")):
        origin.route("GET", path, Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", channel)]))
    s = await start("gripd", [f"*,debug 127.0.0.1:{origin.port}"], conf=conf())
    status, _, body = await raw_request(s.http_port, get("/mid"))
    assert status == 502
    assert body.startswith(b"Failed to parse accept instructions: ")
    assert b'"*" may only end a wildcard channel name' in body
    status, _, body = await raw_request(s.http_port, get("/alone"))
    assert status == 502 and b"needs a prefix" in body


# --- two workers ---------------------------------------------------------------------------------


async def test_two_workers_route_by_pattern(start: StartFn, origin: Origin) -> None:
    """``workers = 2``: the hub sends ``news.x`` to the workers holding ``news.*``; holds on
    both workers (connections spread by the kernel: opened until both workers hold one)."""
    origin.route("GET", "/p", stream_reply("news.*"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf(workers=2))
    await wait_until(lambda: "started 2 workers" in s.log_text(), "both workers")
    holds: list[RawResponse] = []
    try:
        for _ in range(40):  # bounded: SO_REUSEPORT spreads them; 40 tries is plenty
            holds.append(await open_stream(s, "/p"))
            by_worker = held_by_worker(s)
            if len(holds) >= 2 and all(by_worker.values()) and len(by_worker) == 2:
                break
        by_worker = held_by_worker(s)
        assert len(by_worker) == 2 and all(by_worker.values()), by_worker
        await settled(s, origin, "/p", len(holds))
        await publish(s, [stream_item("sports.x", "S\n"), stream_item("news.x", "X\n")])
        for h in holds:
            assert await h.read_body_until(b"X\n", WAIT) == b"X\n"
    finally:
        for h in holds:
            h.close()


# --- two instances on Redis ----------------------------------------------------------------------


def _numpat(r: RedisServer, n: int) -> bool:
    """Whether Redis has ``n`` distinct pattern subscriptions."""
    return int(redis_call(r, "PUBSUB", "NUMPAT")) == n


def _numsub(r: RedisServer, channel: str) -> int:
    reply: Any = redis_call(r, "PUBSUB", "NUMSUB", "gripd:" + channel)
    return int(reply[1])


async def test_redis_pattern_across_instances(
    launch: Launch, redis_server: RedisServer, origin: Origin
) -> None:
    """An item published into instance A reaches a ``news.*`` hold on instance B through
    Redis (PSUBSCRIBE); B also holds ``news.x`` exactly on the same hold and on another, and
    each hold still gets each item once."""
    origin.route("GET", "/p", stream_reply("news.*"))
    origin.route("GET", "/both", stream_reply("news.x", "news.*"))
    origin.route("GET", "/e", stream_reply("news.x"))
    c = bus_conf(redis_server.url)
    c["gripd"]["wildcard_channels"] = "true"
    a, b = await launch([f"* 127.0.0.1:{origin.port}"], c)
    pat = await open_stream(b, "/p")
    both = await open_stream(b, "/both")
    exact = await open_stream(b, "/e")
    try:
        await wait_until(partial(_numpat, redis_server, 1), "PSUBSCRIBE gripd:news.*")
        await wait_until(partial(_numsub, redis_server, "news.x"), "SUBSCRIBE gripd:news.x")
        # The Redis bus keeps the order per channel (a batch goes out channel by channel).
        await publish(
            a,
            [
                stream_item("sports.a", "S\n"),
                stream_item("news.y", "Y\n"),
                stream_item("news.x", "X1\n"),
                stream_item("news.x", "X2\n"),
            ],
        )
        assert await pat.read_body_until(b"X2\n", WAIT) == b"Y\nX1\nX2\n"
        assert await both.read_body_until(b"X2\n", WAIT) == b"Y\nX1\nX2\n"
        assert await exact.read_body_until(b"X2\n", WAIT) == b"X1\nX2\n"
        # And the same from B's own side (its publishes come back through Redis too).
        await publish(b, [stream_item("news.z", "Z\n"), stream_item("news.x", "X3\n")])
        assert await both.read_body_until(b"X3\n", WAIT) == b"Z\nX3\n"
        assert await exact.read_body_until(b"X3\n", WAIT) == b"X3\n"
    finally:
        for r in (pat, both, exact):
            r.close()
    # The pattern goes away with its last subscriber (after the stream closes; no linger).
    await wait_until(partial(_numpat, redis_server, 0), "PUNSUBSCRIBE")

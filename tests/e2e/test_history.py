"""Per-channel history and resume, end to end (gripd only: Pushpin stores nothing).

A stream client that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) on a channel
with history gets every stored item after that id, then live items, with no gap and no
duplicate; an id no longer stored gives ``Gripd-History: gone``. Run with one process and with
two workers (the history then lives in the hub and workers read it over their link).
"""

from __future__ import annotations

import asyncio
import json
import random
import re

import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request

from .test_workers import STREAMS, wait_metric

WAIT = 10.0 * TIME_SCALE
SSE = [("Content-Type", "text/event-stream"), ("Grip-Hold", "stream"), ("Grip-Channel", "news")]


def sse(n: int) -> dict[str, object]:
    return stream_item("news", f"id: {n}\ndata: item {n}\n\n", id=str(n))


async def serve(
    start: StartFn, origin: Origin, workers: str, extra: dict[str, str] | None = None
) -> Server:
    origin.route("GET", "/events", Reply(200, SSE, "retry: 300\n\n"))
    return await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf(workers, extra))


def conf(workers: str, gripd: dict[str, str] | None) -> dict[str, dict[str, str]]:
    """Workers, history settings and a Prometheus endpoint (to see when the instance holds a
    stream: with workers, a publish can overtake a new subscription on its way to the hub)."""
    return {
        "gripd": {"workers": workers, **(gripd or {})},
        "handler": {"prometheus_port": "ipc://{rundir}/gp-prom", "prometheus_prefix": "pp_"},
    }


async def connect(s: Server, path: str = "/events", extra: str = "") -> RawResponse:
    resp = await open_request(s.http_port, get(path, extra), WAIT)
    await resp.head(WAIT)
    await resp.read_body_until(b"retry: 300\n\n", WAIT)
    return resp


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sse_resume_replays_then_goes_live(
    start: StartFn, origin: Origin, workers: str
) -> None:
    s = await serve(start, origin, workers, {"history_size": "5"})
    first = await connect(s)
    assert "gripd-history" not in first.headers  # no resume asked: Pushpin's response
    await wait_metric(s, STREAMS, 1)
    await publish(s, [sse(1), sse(2)])
    await first.read_body_until(b"item 2\n\n", WAIT)
    first.close()
    await publish(s, [sse(3), sse(4)])  # missed while away
    again = await connect(s, extra="Last-Event-ID: 2\r\n")
    try:
        assert again.headers["gripd-history"] == "resumed"
        await publish(s, [sse(5)])
        body = await again.read_body_until(b"item 5\n\n", WAIT)
        assert body.count(b"data: ") == 3
        assert body.index(b"item 3") < body.index(b"item 4") < body.index(b"item 5")
        assert origin.requests_for("/events")[-1].header("Last-Event-ID") == "2"
    finally:
        again.close()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_resume_beyond_the_history_is_gone(
    start: StartFn, origin: Origin, workers: str
) -> None:
    s = await serve(start, origin, workers, {"history_size": "5", "history_gone_event": "reset"})
    await publish(s, [sse(n) for n in range(1, 9)])  # history_size 5 keeps 4..8
    old = await connect(s, "/events?last_event_id=2")
    try:
        assert old.headers["gripd-history"] == "gone"
        await old.read_body_until(b"event: reset\ndata: 2\n\n", WAIT)
        await publish(s, [sse(9)])
        body = await old.read_body_until(b"item 9\n\n", WAIT)
        assert b"item 8" not in body  # nothing replayed when the place is lost
    finally:
        old.close()
    ok = await connect(s, "/events?last_event_id=6")
    try:
        assert ok.headers["gripd-history"] == "resumed"
        body = await ok.read_body_until(b"item 9\n\n", WAIT)
        assert [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")] == [
            b"item 7",
            b"item 8",
            b"item 9",
        ]
    finally:
        ok.close()


# --- long-poll: a prev-id behind the channel's last id ------------------------------------------


def lp(n: int) -> dict[str, object]:
    return {
        "channel": "news",
        "id": str(n),
        "prev-id": str(n - 1),
        "formats": {"http-response": {"body": f"item {n}\n"}},
    }


def lp_origin(origin: Origin) -> None:
    """A long-poll origin that trusts the client's cursor: ``?after=N`` holds with prev-id N."""

    def reply(req: RecordedRequest) -> Reply:
        after = req.query.partition("after=")[2] or "0"
        headers = [("Grip-Hold", "response"), ("Grip-Channel", f"news; prev-id={after}")]
        return Reply(200, [*headers, ("Grip-Timeout", "5")], "timeout\n")

    origin.route("GET", "/poll", reply)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_long_poll_behind_is_answered_from_history(
    start: StartFn, origin: Origin, workers: str
) -> None:
    lp_origin(origin)
    s = await start(
        "gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf(workers, {"history_size": "10"})
    )
    await publish(s, [lp(n) for n in range(1, 5)])  # the channel's last id is 4
    status, _, body = await raw_request(s.http_port, get("/poll?after=2"), WAIT)
    assert (status, body) == (200, b"item 3\n")  # the item after 2, without the origin again
    assert len(origin.requests_for("/poll")) == 1
    # An id history does not have: Pushpin's way, the origin is asked again with Grip-Last.
    resp = await open_request(s.http_port, get("/poll?after=x"), WAIT)
    try:
        again = await origin.wait_for("/poll", 3, WAIT)
        assert again.header("Grip-Last") == "news; last-id=x"
    finally:
        resp.close()


async def test_long_poll_without_history_asks_the_origin_again(
    start: StartFn, origin: Origin
) -> None:
    """F23: with history off, a prev-id behind the last id is retried with ``Grip-Last``."""
    lp_origin(origin)
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf("1", None))
    await publish(s, [lp(n) for n in range(1, 5)])
    resp = await open_request(s.http_port, get("/poll?after=2"), WAIT)
    try:
        again = await origin.wait_for("/poll", 2, WAIT)
        assert again.header("Grip-Last") == "news; last-id=2"
    finally:
        resp.close()


# --- WebSocket: a subscribe with last-id ---------------------------------------------------------


def ws(n: int) -> dict[str, object]:
    return {"channel": "news", "id": str(n), "formats": {"ws-message": {"content": f"m{n}"}}}


def woh_events(events: list[tuple[str, bytes | None]]) -> bytes:
    out = b""
    for name, content in events:
        out += (
            f"{name}\r\n".encode()
            if content is None
            else (f"{name} {len(content):x}\r\n".encode() + content + b"\r\n")
        )
    return out


def woh_origin(origin: Origin, last_id: str) -> None:
    """A WebSocket-over-HTTP origin that subscribes each client to ``news`` with ``last-id``."""
    sub = json.dumps({"type": "subscribe", "channel": "news", "last-id": last_id})
    opened = woh_events([("OPEN", None), ("TEXT", b"c:" + sub.encode())])
    headers = [
        ("Content-Type", "application/websocket-events"),
        ("Sec-WebSocket-Extensions", "grip"),
    ]
    origin.route(
        "POST",
        "/ws",
        lambda req: Reply(200, headers, opened if req.body.startswith(b"OPEN") else b""),
    )


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_websocket_subscribe_with_last_id_replays(
    start: StartFn, origin: Origin, workers: str
) -> None:
    woh_origin(origin, "2")
    s = await start(
        "gripd",
        [f"* 127.0.0.1:{origin.port},over_http"],
        conf=conf(workers, {"history_size": "10"}),
    )
    await publish(s, [ws(n) for n in range(1, 5)])
    async with ws_connect(
        f"ws://127.0.0.1:{s.http_port}/ws", open_timeout=WAIT, ping_interval=None
    ) as client:
        got = [await asyncio.wait_for(client.recv(), WAIT) for _ in range(2)]
        assert got == ["m3", "m4"]  # what came after 2, before anything live
        await publish(s, [ws(5)])
        assert await asyncio.wait_for(client.recv(), WAIT) == "m5"


# --- replay then live under a running publisher: never a gap, never a repeat ---------------------

EVENT = re.compile(rb"id: (\d+)\ndata: item \1\n\n")


async def read_for(s: Server, last: int | None, seconds: float) -> list[int]:
    """One connection: resume after ``last`` (if any), read for ``seconds``, hang up; the ids
    of the complete events received (what a browser would have dispatched)."""
    extra = f"Last-Event-ID: {last}\r\n" if last is not None else ""
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    buf = b""
    try:
        writer.write(get("/events", extra))
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not data:
                break
            buf += data
    finally:
        writer.close()
    return [int(m.group(1)) for m in EVENT.finditer(buf)]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_reconnecting_client_misses_nothing_and_sees_nothing_twice(
    start: StartFn, origin: Origin, workers: str
) -> None:
    """A publisher runs without pause while a client keeps hanging up at random moments and
    resuming from the last complete event it saw: in the end it has every item exactly once,
    in order (subscribe first, replay, then live minus what the replay carried)."""
    s = await serve(start, origin, workers, {"history_size": "1000"})
    total = 400
    rnd = random.Random(9)

    async def publisher() -> None:
        for n in range(1, total + 1):
            await publish(s, [sse(n)])
            await asyncio.sleep(rnd.random() * 0.002)

    seen: list[int] = []
    conns: list[tuple[int | None, list[int]]] = []  # (Last-Event-ID sent, ids received)
    task = asyncio.create_task(publisher())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60 * TIME_SCALE
        while (not seen or seen[-1] < total) and loop.time() < deadline:
            got = await read_for(s, seen[-1] if seen else None, 0.01 + rnd.random() * 0.05)
            conns.append((seen[-1] if seen else None, got))
            seen.extend(got)
        await task
    finally:
        task.cancel()
    # The first connection starts live (no Last-Event-ID): it may begin after item 1.
    assert seen == list(range(seen[0], total + 1)), repr(conns)
    assert seen[0] <= 10


async def test_a_resume_further_behind_than_one_read_is_gone(
    start: StartFn, origin: Origin
) -> None:
    """More than 1000 items to replay (one read's most): replaying the first 1000 would leave
    a gap before the live items, so the client is told ``gone`` instead."""
    s = await serve(start, origin, "1", {"history_size": "2000"})
    for first in range(1, 1201, 200):
        await publish(s, [sse(n) for n in range(first, first + 200)])
    far = await connect(s, extra="Last-Event-ID: 100\r\n")
    try:
        assert far.headers["gripd-history"] == "gone"
    finally:
        far.close()
    near = await connect(s, extra="Last-Event-ID: 1100\r\n")
    try:
        assert near.headers["gripd-history"] == "resumed"
        body = await near.read_body_until(b"item 1200\n\n", WAIT)
        assert [int(m.group(1)) for m in EVENT.finditer(body)] == list(range(1101, 1201))
    finally:
        near.close()


# --- history off: exactly Pushpin's behaviour (differential) -------------------------------------


async def settle(s: Server, origin: Origin, path: str, count: int) -> None:
    """Wait for the hold; Pushpin re-requests ~1 s after a first subscription (F22)."""
    await origin.wait_for(path, count)
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


async def test_resume_requests_without_history_are_pushpins(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F24: with history off (the default), a stream that sends ``Last-Event-ID`` (or
    ``last_event_id``) gets only what is published after it subscribed, and no
    ``Gripd-History``: the same as Pushpin. (A long-poll behind its channel's last id:
    ``test_long_poll_without_history_asks_the_origin_again``.)"""
    origin.route("GET", "/events", Reply(200, SSE, "retry: 300\n\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    await publish(s, [sse(1), sse(2)])
    resp = await connect(s, "/events?last_event_id=1", "Last-Event-ID: 1\r\n")
    try:
        assert "gripd-history" not in resp.headers
        await settle(s, origin, "/events", 1)
        await publish(s, [sse(3)])
        body = await resp.read_body_until(b"item 3\n\n", WAIT)
        assert [int(m.group(1)) for m in EVENT.finditer(body)] == [3]
    finally:
        resp.close()

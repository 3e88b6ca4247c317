"""Next links ("GRIP Next", F25) end to end, against gripd and Pushpin 1.36 alike.

A ``Grip-Link: <url>; rel=next`` is fetched by the proxy itself, through the original route,
with ``Grip-Last`` for channels carrying prev-ids (F26); the link's body is appended to the
client response and its instructions followed. A stream hold's link is fetched ~1 s after the
channel's first subscriber (F22), so link endpoints here answer every request alike.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import open_request

WAIT = 8.0 * TIME_SCALE


def stream(channel: str, link: str | None = None, *more: tuple[str, str]) -> list[tuple[str, str]]:
    """Headers of a stream hold on ``channel`` (a whole ``Grip-Channel`` value), maybe linked."""
    out = [("Grip-Hold", "stream"), ("Grip-Channel", channel)]
    if link is not None:
        out.append(("Grip-Link", link))
    return [*out, *more]


async def settle(s: Server) -> None:
    """Let a (changed) subscription reach the proxy's registry."""
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


async def test_link_fetched_with_grip_last_and_body_appended(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F25/F26: the first-subscription update fetches the link with ``Grip-Last``; its body is
    appended; a publish out of sequence re-fetches it with the advanced last id."""
    origin.route("GET", "/s", Reply(200, stream("a; prev-id=1", "</n>; rel=next"), "start\n"))
    origin.route("GET", "/n", Reply(200, stream("a; prev-id=2", "</n>; rel=next"), "next\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert r.headers["transfer-encoding"] == "chunked"
        assert await r.read_body_until(b"start\n") == b"start\n"
        assert await r.read_body_until(b"next\n", WAIT) == b"next\n"
        first = origin.requests_for("/n")[0]
        assert first.method == "GET"
        assert first.header_all("Grip-Last") == ["a; last-id=1"]
        assert first.header("Grip-Sig") is not None  # fetched through the route (1.35+)
        await asyncio.sleep(0.3)
        await publish(s, [stream_item("a", "m3\n", id="3", **{"prev-id": "2"})])
        assert await r.read_body_until(b"m3\n") == b"m3\n"
        n = len(origin.requests_for("/n"))
        await publish(s, [stream_item("a", "skipped\n", id="10", **{"prev-id": "9"})])
        again = await origin.wait_for("/n", n + 1, WAIT)
        assert again.header_all("Grip-Last") == ["a; last-id=3"]
        assert await r.read_body_until(b"next\n", WAIT) == b"next\n"
        assert b"skipped" not in r.raw
    finally:
        r.close()


async def test_no_hold_links_chain_until_plain_response(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F25: a link without a hold keeps the response open; each link body is appended, and a
    response with neither link nor hold ends it."""
    origin.route("GET", "/c0", Reply(200, [("Grip-Link", "</c1>; rel=next")], "zero\n"))
    origin.route("GET", "/c1", Reply(200, [("Grip-Link", "</c2?x=1>; rel=next")], "one\n"))
    origin.route("GET", "/c2", Reply(200, [("X-Ignored", "y")], "two\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/c0"))
    try:
        assert r.status == 200
        assert r.headers["transfer-encoding"] == "chunked"
        assert await r.read_to_end(WAIT) == b"zero\none\ntwo\n"
        assert r.done  # ended with the last chunk
        assert "x-ignored" not in r.headers  # later link headers are not sent
        assert origin.requests_for("/c2")[0].query == "x=1"
    finally:
        r.close()


async def test_link_with_stream_hold_changes_channels(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F25: a link answering with a stream hold replaces the subscription's channels."""
    origin.route("GET", "/s", Reply(200, stream("old", "</chg>; rel=next"), "start\n"))
    origin.route("GET", "/chg", Reply(200, stream("new"), "moved\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert await r.read_body_until(b"moved\n", WAIT) == b"start\nmoved\n"
        await settle(s)
        await publish(s, [stream_item("old", "to-old\n"), stream_item("new", "to-new\n")])
        assert await r.read_body_until(b"to-new\n") == b"to-new\n"
        assert b"to-old" not in r.raw
        assert len(origin.requests_for("/chg")) == 1  # no link any more: no re-fetch
    finally:
        r.close()


@pytest.mark.parametrize("debug", [False, True])
async def test_link_with_response_hold_is_an_error(
    impl: Impl, start: StartFn, origin: Origin, debug: bool
) -> None:
    """F25: "Next link returned non-stream hold." ends the stream (the text on debug routes)."""
    origin.route("GET", "/s", Reply(200, [("Grip-Link", "</rh>; rel=next")], "start\n"))
    origin.route(
        "GET", "/rh", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "x")], "held\n")
    )
    route = f"*{',debug' if debug else ''} 127.0.0.1:{origin.port}"
    s = await start(impl, [route])
    r = await open_request(s.http_port, get("/s"))
    try:
        body = await r.read_to_end(WAIT)
        # The body of the failing link response is still appended before the error.
        tail = b"\n\nNext link returned non-stream hold.\n" if debug else b""
        assert body == b"start\nheld\n" + tail
        assert r.done  # a clean end (last chunk), in debug mode and without
    finally:
        r.close()


async def test_link_failure_retried_with_backoff(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F25: a non-2xx link answer is retried after ~1 s, then ~2 s (plus up to 1 s jitter);
    nothing of the failed answers reaches the client."""
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    def flaky(_req: RecordedRequest) -> Reply:
        calls.append(loop.time())
        if len(calls) <= 2:
            return Reply(503, [], "busy\n")
        return Reply(200, [], "finally\n")

    origin.route("GET", "/s", Reply(200, [("Grip-Link", "</f>; rel=next")], "start\n"))
    origin.route("GET", "/f", flaky)
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert await r.read_to_end(15 * TIME_SCALE) == b"start\nfinally\n"
        assert len(calls) == 3
        gap1, gap2 = calls[1] - calls[0], calls[2] - calls[1]
        assert 0.9 <= gap1 <= 2.5, gap1
        assert 1.9 <= gap2 <= 3.5, gap2
    finally:
        r.close()


async def test_periodic_refetch_unless_every_channel_saw_a_message(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F25: the link is re-fetched every ``timeout`` s, but not while every subscribed channel
    keeps receiving messages."""
    hold = stream("p", "</p>; rel=next; timeout=2")
    origin.route("GET", "/s", Reply(200, hold, "start\n"))
    origin.route("GET", "/p", Reply(200, hold, ""))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    loop = asyncio.get_running_loop()
    r = await open_request(s.http_port, get("/s"))
    try:
        await origin.wait_for("/p", 1, WAIT)  # the first-subscription update
        t0 = loop.time()
        await origin.wait_for("/p", 2, WAIT)  # then every 2 s while idle
        await origin.wait_for("/p", 3, WAIT)
        idle_gap = (loop.time() - t0) / 2
        assert 1.5 <= idle_gap <= 3.5, idle_gap
        n = len(origin.requests_for("/p"))
        for i in range(8):  # ~3.2 s of messages on the only channel
            await publish(s, [stream_item("p", f"m{i}\n")])
            await asyncio.sleep(0.4)
        assert await r.read_body_until(b"m7\n") != b""
        # At most one fetch already armed before the messages started.
        assert len(origin.requests_for("/p")) <= n + 1
    finally:
        r.close()


async def test_build_id_applies_to_link_bodies(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F35: ``build-id`` runs over a link's body too, with the current hold's filters and meta
    and no default ID (``%(id)I`` works, ``%%`` is ``%``)."""
    hold = stream("lb; filter=build-id", "</lb>; rel=next", ("Grip-Set-Meta", 'id_format="q"'))
    origin.route("GET", "/s", Reply(200, hold, "s %(a)I\n"))
    origin.route("GET", "/lb", Reply(200, hold, "n %(b)I 5%%\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert await r.read_body_until(b"%\n", WAIT) == b"s a\nn b 5%\n"
    finally:
        r.close()

"""Remaining Pushpin 1.36 behaviours, end to end against gripd and Pushpin alike.

Auto-CORS on a published held response (F45), content filters over ``body-patch`` results
(F30), stream items published while a next link is fetched (F24-F26), implicit channels across
a next link's hold (F26), and ``Grip-Last`` on next-link retries.
"""

from __future__ import annotations

import asyncio

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import open_request

WAIT = 8.0 * TIME_SCALE


async def settle(s: Server, origin: Origin, path: str, count: int = 1) -> None:
    """Wait for the hold; Pushpin re-requests ~1 s after a first subscription (F22)."""
    await origin.wait_for(path, count)
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


async def fetch(port: int, raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request on its own connection: (status, header list, body)."""
    resp = await open_request(port, raw, 30 * TIME_SCALE)
    try:
        body = await resp.read_to_end(WAIT)
    finally:
        resp.close()
    return resp.status, resp.header_list, body


def hget(head: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in head if k.lower() == name), None)


async def test_cors_expose_lists_published_headers(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F45: the published ``http-response`` headers are listed in Expose-Headers, after the
    held response's own (the merged head, as Pushpin decorates it)."""
    origin.route(
        "GET",
        "/lp",
        Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "cx"), ("X-H", "h")], "to\n"),
    )
    s = await start(impl, [f"*,aco 127.0.0.1:{origin.port}"])
    lp = asyncio.create_task(fetch(s.http_port, get("/lp", "Origin: https://o\r\n")))
    await settle(s, origin, "/lp")
    item = {"headers": {"X-P": "p", "X-Q": "q"}, "body": "pub\n"}
    await publish(s, [{"channel": "cx", "formats": {"http-response": item}}])
    status, head, body = await lp
    assert (status, body) == (200, b"pub\n")
    expose = hget(head, "access-control-expose-headers")
    assert expose == "X-H, Date, Server, X-P, X-Q"
    assert hget(head, "access-control-allow-origin") == "https://o"
    assert sum(k.lower().startswith("access-control-") for k, _ in head) == 5


async def test_filters_run_over_body_patch(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F30: a subscriber's content filter (``var-subst``) runs over a ``body-patch`` result."""
    origin.route(
        "GET",
        "/lp",
        Reply(
            200,
            [
                ("Grip-Hold", "response"),
                ("Grip-Channel", "cf; filter=var-subst"),
                ("Grip-Set-Meta", "user=alice"),
                ("Content-Type", "application/json"),
            ],
            '{"a": "x"}\n',
        ),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    lp = asyncio.create_task(fetch(s.http_port, get("/lp")))
    await settle(s, origin, "/lp")
    patch = [{"op": "replace", "path": "/a", "value": "hi %(user)s"}]
    await publish(s, [{"channel": "cf", "formats": {"http-response": {"body-patch": patch}}}])
    status, _, body = await lp
    assert status == 200
    assert b"hi alice" in body, body


def stream(channel: str, link: str | None = None) -> list[tuple[str, str]]:
    """Headers of a stream hold on ``channel`` (a whole ``Grip-Channel`` value), maybe linked."""
    out = [("Grip-Hold", "stream"), ("Grip-Channel", channel)]
    return out if link is None else [*out, ("Grip-Link", link)]


async def test_items_queued_during_link_fetch(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F25/F26: stream items published while the next link is fetched wait for its answer;
    those that do not follow the new hold's prev-id are dropped, the rest follow its body."""
    origin.route("GET", "/s", Reply(200, stream("q; prev-id=1", "</n>; rel=next"), "start\n"))
    origin.route(
        "GET",
        "/n",
        Reply(200, stream("q; prev-id=3", "</n>; rel=next"), "next\n", delay=2.0 * TIME_SCALE),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert await r.read_body_until(b"start\n") == b"start\n"
        await origin.wait_for("/n", 1, WAIT)  # the first-subscription fetch is in flight
        await publish(s, [stream_item("q", "m2\n", id="2", **{"prev-id": "1"})])
        await publish(s, [stream_item("q", "m4\n", id="4", **{"prev-id": "3"})])
        assert await r.read_body_until(b"m4\n", WAIT) == b"next\nm4\n"
        assert len(origin.requests_for("/n")) == 1
    finally:
        r.close()


async def test_link_retry_grip_last_and_queue(impl: Impl, start: StartFn, origin: Origin) -> None:
    """A failed next link is retried with the ``Grip-Last`` current at the retry; an item
    published meanwhile is queued (so the value is still the first one) and sent after the
    link's body, following the new hold's prev-id."""
    calls = 0

    def link(_req: RecordedRequest) -> Reply:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Reply(500, [], "no\n")
        return Reply(200, stream("q; prev-id=1", "</n>; rel=next"), "next\n")

    origin.route("GET", "/s", Reply(200, stream("q; prev-id=1", "</n>; rel=next"), "start\n"))
    origin.route("GET", "/n", link)
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert await r.read_body_until(b"start\n") == b"start\n"
        await origin.wait_for("/n", 1, WAIT)
        await asyncio.sleep(0.2)
        await publish(s, [stream_item("q", "m2\n", id="2", **{"prev-id": "1"})])
        second = await origin.wait_for("/n", 2, WAIT)
        assert await r.read_body_until(b"m2\n", WAIT) == b"next\nm2\n"
        assert origin.requests_for("/n")[0].header_all("Grip-Last") == ["q; last-id=1"]
        assert second.header_all("Grip-Last") == ["q; last-id=1"]
    finally:
        r.close()


async def test_implicit_channels_kept_across_link_hold(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F11/F25: a target's ``sub=`` channel stays subscribed when a next link's stream hold
    replaces the channel set; the replaced explicit channel is dropped."""
    origin.route("GET", "/s", Reply(200, stream("a", "</n>; rel=next"), "start\n"))
    origin.route("GET", "/n", Reply(200, stream("b", "</n>; rel=next"), "next\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port},sub=imp"])
    r = await open_request(s.http_port, get("/s"))
    try:
        assert await r.read_body_until(b"next\n", WAIT) == b"start\nnext\n"
        await asyncio.sleep((2.5 if s.impl == "pushpin" else 0.5) * TIME_SCALE)
        await publish(s, [stream_item("a", "to-a\n")])
        await publish(s, [stream_item("imp", "to-imp\n")])
        await publish(s, [stream_item("b", "to-b\n")])
        await r.read_body_until(b"to-b\n", WAIT)
        assert b"to-imp\n" in r.raw
        assert b"to-a\n" not in r.raw
    finally:
        r.close()

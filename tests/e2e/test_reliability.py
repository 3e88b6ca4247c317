"""Reliable delivery end to end (F22 first-subscription update, F23, F26, F27), gripd and
Pushpin 1.36 alike.

``prev-id`` on response and stream holds, ``Grip-Last`` on retried requests and link fetches,
``POST /recover`` and the ZMQ ``recover`` command, ``action: hint`` on streams, and the update
~1 s after a channel's first subscriber. Origins answer repeated requests consistently, because
both proxies re-request them.
"""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio

from gripd.core.tnetstring import dumps, loads
from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, lp_item, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request

WAIT = 8.0 * TIME_SCALE


def seq(item_id: str, prev_id: str) -> dict[str, str]:
    return {"id": item_id, "prev-id": prev_id}


async def settle(s: Server) -> None:
    """Let a subscription reach the proxy's registry (Pushpin's handler learns it late)."""
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


async def quiet(origin: Origin, path: str, count: int, within: float = 1.8) -> None:
    """Assert that no request beyond the ``count``-th for ``path`` arrives for ``within`` s."""
    with pytest.raises(TimeoutError):
        await origin.wait_for(path, count + 1, within * TIME_SCALE)


async def recover_http(s: Server) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", s.control_port)
    writer.write(b"POST /recover HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def recover_zmq(s: Server) -> object:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(f"tcp://127.0.0.1:{s.command_port}")
    try:
        await sock.send(dumps({b"id": b"1", b"method": b"recover"}))
        return loads(await asyncio.wait_for(sock.recv(), 5))
    finally:
        sock.close()
        ctx.term()


# -- response holds (F22, F23, F27) -----------------------------------------------------------


async def test_first_subscription_update_retries_with_grip_last(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F22/F27: ~1 s after a channel's first subscriber the held request is sent again, with
    ``Grip-Last`` for the prev-id channel (name without the route prefix) and the original
    method, path and body."""
    origin.route(
        "POST",
        "/lp",
        Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "r; prev-id=1")], "to\n"),
    )
    s = await start(impl, [f"*,prefix=app- 127.0.0.1:{origin.port}"])
    req = b"POST /lp?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
    task = asyncio.create_task(raw_request(s.http_port, req, timeout=30))
    try:
        first = await origin.wait_for("/lp")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        again = await origin.wait_for("/lp", 2, WAIT)
        assert 0.5 <= loop.time() - t0 <= 3.0
        assert first.header("Grip-Last") is None
        assert again.header_all("Grip-Last") == ["r; last-id=1"]
        assert (again.method, again.query, again.body) == ("POST", "q=1", b"body")
        await quiet(origin, "/lp", 2)  # the retried hold is not a first subscriber again
        await publish(s, [lp_item("app-r", "done\n", **seq("2", "1"))])
        assert (await task)[2] == b"done\n"
    finally:
        task.cancel()


async def test_first_subscription_update_can_be_turned_off(start: StartFn, origin: Origin) -> None:
    """``update_on_first_subscription=false`` (Pushpin 1.41's option; gripd only)."""
    origin.route("GET", "/lp", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "o")]))
    s = await start(
        "gripd",
        [f"* 127.0.0.1:{origin.port}"],
        conf={"handler": {"update_on_first_subscription": "false"}},
    )
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await origin.wait_for("/lp")
        await quiet(origin, "/lp", 1)
        await publish(s, [lp_item("o", "ok\n")])
        assert (await task)[2] == b"ok\n"
    finally:
        task.cancel()


async def test_lingering_subscription_is_not_a_first_subscriber(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F22: a long-poll arriving while the channel's last long-poll subscription lingers
    (``subscription_linger``) gets no first-subscription update."""
    origin.route("GET", "/lp", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "lg")]))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    await origin.wait_for("/lp", 2, WAIT)  # the first subscriber's update
    await asyncio.sleep(0.3)
    await publish(s, [lp_item("lg", "one\n")])
    assert (await task)[2] == b"one\n"
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await origin.wait_for("/lp", 3, WAIT)
        await quiet(origin, "/lp", 3)
        await publish(s, [lp_item("lg", "two\n")])
        assert (await task)[2] == b"two\n"
    finally:
        task.cancel()


async def test_response_hold_prev_id(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F23: a publish whose prev-id differs from the hold's retries the request with
    ``Grip-Last``; one that follows it is delivered."""
    origin.route(
        "GET",
        "/lp",
        Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "p; prev-id=1")], "to\n"),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await origin.wait_for("/lp", 2, WAIT)  # first-subscription update
        await asyncio.sleep(0.5)
        await publish(s, [lp_item("p", "wrong\n", **seq("9", "8"))])
        retried = await origin.wait_for("/lp", 3, WAIT)
        assert retried.header_all("Grip-Last") == ["p; last-id=1"]
        await asyncio.sleep(0.5)
        assert not task.done()
        # The proxy forgot the channel's last id (8 -> unknown), so this is not held back.
        await publish(s, [lp_item("p", "right\n", **seq("2", "1"))])
        status, _, body = await asyncio.wait_for(task, WAIT)
        assert (status, body) == (200, b"right\n")
    finally:
        task.cancel()


async def test_response_hold_prev_id_conflict_at_accept(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F23: a hold whose prev-id differs from the channel's known last id is retried at once
    with ``Grip-Last``; the origin then answers with the missed data."""

    def answer(req: RecordedRequest) -> Reply:
        if req.header("Grip-Last"):
            return Reply(200, [], f"catch up from {req.header('Grip-Last')}\n")
        return Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "k; prev-id=1")], "to\n")

    origin.route("GET", "/lp", answer)
    origin.route("GET", "/st", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "k")]))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    keeper = await open_request(s.http_port, get("/st"))  # keeps k's last id known
    try:
        await settle(s)
        await publish(s, [stream_item("k", "five\n", id="5")])
        assert await keeper.read_body_until(b"five\n") == b"five\n"
        status, _, body = await raw_request(s.http_port, get("/lp"), timeout=WAIT)
        assert (status, body) == (200, b"catch up from k; last-id=1\n")
        assert len(origin.requests_for("/lp")) == 2
    finally:
        keeper.close()


# -- stream holds (F24, F26) ------------------------------------------------------------------


def linked(channel: str, link: str = "/n") -> list[tuple[str, str]]:
    return [
        ("Grip-Hold", "stream"),
        ("Grip-Channel", channel),
        ("Grip-Link", f"<{link}>; rel=next"),
    ]


async def test_stream_prev_id_conflict_at_first_hold(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F26: a stream whose prev-id differs from the known last id fetches its link at once; one
    that agrees does not (and, not being a first subscriber, gets no update at all)."""
    origin.route("GET", "/st", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "k")]))
    origin.route("GET", "/agree", Reply(200, linked("k; prev-id=5", "/na"), "agree\n"))
    origin.route("GET", "/differ", Reply(200, linked("k; prev-id=1", "/nd"), "differ\n"))
    origin.route("GET", "/na", Reply(200, linked("k; prev-id=5", "/na"), "na\n"))
    origin.route("GET", "/nd", Reply(200, linked("k; prev-id=5", "/nd"), "nd\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    keeper = await open_request(s.http_port, get("/st"))
    streams: list[RawResponse] = [keeper]
    try:
        # Past the keeper's first-subscription update, which would update every stream on k.
        await asyncio.sleep(1.6 * TIME_SCALE)
        await publish(s, [stream_item("k", "five\n", id="5")])
        assert await keeper.read_body_until(b"five\n") == b"five\n"
        agree = await open_request(s.http_port, get("/agree"))
        streams.append(agree)
        assert await agree.read_body_until(b"agree\n") == b"agree\n"
        differ = await open_request(s.http_port, get("/differ"))
        streams.append(differ)
        assert await differ.read_body_until(b"differ\nnd\n", WAIT) == b"differ\nnd\n"
        assert origin.requests_for("/nd")[0].header_all("Grip-Last") == ["k; last-id=1"]
        await quiet(origin, "/na", 0, 1.2)
    finally:
        for r in streams:
            r.close()


async def test_stream_without_next_link_rejects_prev_id(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F26: "channel 'x' specifies prev-id, but no next link found" (the name as the origin
    wrote it). Pushpin sends the initial response first, then ends the stream with the error."""
    origin.route(
        "GET",
        "/s",
        Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "x; prev-id=3")], "start\n"),
    )
    s = await start(impl, [f"*,debug,prefix=pre- 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    try:
        body = await r.read_to_end(WAIT)
        assert (r.status, body) == (
            200,
            b"start\n\n\nchannel 'x' specifies prev-id, but no next link found\n",
        )
        assert r.done
    finally:
        r.close()


async def test_stream_hint_fetches_link(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F24: ``action: hint`` fetches a stream's next link; without a link it does nothing."""
    origin.route("GET", "/s", Reply(200, linked("h"), "start\n"))
    origin.route("GET", "/n", Reply(200, linked("h"), "fetched\n"))
    origin.route("GET", "/plain", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "h")]))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    plain = await open_request(s.http_port, get("/plain"))
    try:
        assert await r.read_body_until(b"fetched\n", WAIT) == b"start\nfetched\n"  # F22 update
        await quiet(origin, "/n", 1, 1.0)
        await publish(s, [{"channel": "h", "formats": {"http-stream": {"action": "hint"}}}])
        await origin.wait_for("/n", 2, WAIT)
        assert await r.read_body_until(b"fetched\n", WAIT) == b"fetched\n"
        await publish(s, [stream_item("h", "after\n")])
        for x in (r, plain):
            assert await x.read_body_until(b"after\n") == b"after\n"
        assert not plain.done
    finally:
        r.close()
        plain.close()


# -- recover (F27) ----------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["http", "zmq"])
async def test_recover_refetches_links_and_clears_last_ids(
    impl: Impl, start: StartFn, origin: Origin, via: str
) -> None:
    """F27: ``recover`` re-fetches every stream's link, retries every response hold, and
    forgets the known last ids (a later prev-id hold no longer conflicts)."""
    origin.route("GET", "/s", Reply(200, linked("rv"), "start\n"))
    origin.route("GET", "/n", Reply(200, linked("rv"), "link\n"))

    def long_poll(req: RecordedRequest) -> Reply:
        n = len(origin.requests_for("/lp"))
        if n <= 2:  # the first request and the first-subscription retry
            return Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "lpc")], "to\n")
        return Reply(200, [], f"recovered {n}\n")

    origin.route("GET", "/lp", long_poll)
    origin.route("GET", "/k", Reply(200, linked("rv; prev-id=1", "/kn"), "k\n"))
    origin.route("GET", "/kn", Reply(200, linked("rv; prev-id=1", "/kn"), "kn\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/s"))
    lp = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    streams = [r]
    try:
        assert await r.read_body_until(b"link\n", WAIT) == b"start\nlink\n"
        await origin.wait_for("/lp", 2, WAIT)
        await asyncio.sleep(0.3)
        await publish(s, [stream_item("rv", "seven\n", id="7")])
        assert await r.read_body_until(b"seven\n") == b"seven\n"
        if via == "http":
            reply = await recover_http(s)
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nUpdated\n")
        else:
            assert await recover_zmq(s) == {b"id": b"1", b"success": True, b"value": None}
        await origin.wait_for("/n", 2, WAIT)
        assert await r.read_body_until(b"link\n", WAIT) == b"link\n"
        assert (await asyncio.wait_for(lp, WAIT))[2] == b"recovered 3\n"
        # Last id 7 was forgotten: prev-id=1 does not conflict, so no link fetch for /k.
        k = await open_request(s.http_port, get("/k"))
        streams.append(k)
        assert await k.read_body_until(b"k\n") == b"k\n"
        await quiet(origin, "/kn", 0, 1.2)
    finally:
        lp.cancel()
        for x in streams:
            x.close()

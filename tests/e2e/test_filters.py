"""Filters and meta end to end (F35, F36, F30 ``content-filters``), gripd and Pushpin 1.36 alike.

Subscription meta comes from ``Grip-Set-Meta`` / JSON ``hold.meta`` (HTTP) or the WebSocket
``set-meta`` control message; publish meta from the item's ``meta``. Delivery filters drop an
item silently; content filters rewrite it; a filter error or a ``content-filters`` mismatch ends
an HTTP session (502 for a response hold, the stream closed) and drops a WebSocket message.
A dropped item is shown to be dropped by a later marker item arriving alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.frames import Opcode

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish
from tests.support.origin import Origin, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request
from tests.support.wsorigin import OriginConn, RawWsClient, WsOrigin

WAIT = 8.0 * TIME_SCALE
Headers = list[tuple[str, str]]


async def settle(s: Server) -> None:
    """Past Pushpin's handler learning the subscription and the first-subscription update."""
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


def item(
    channel: str,
    content: str,
    meta: dict[str, str] | None = None,
    *,
    content_filters: list[str] | None = None,
) -> Any:
    """One item with the same content for all three transports."""
    fmt: dict[str, Any] = {}
    if content_filters is not None:
        fmt["content-filters"] = content_filters
    out: dict[str, Any] = {
        "channel": channel,
        "formats": {
            "http-stream": {"content": content, **fmt},
            "http-response": {"body": content, **fmt},
            "ws-message": {"content": content, **fmt},
        },
    }
    if meta is not None:
        out["meta"] = meta
    return out


def hold(mode: str, *channels: str, meta: str | None = None) -> Headers:
    out = [("Grip-Hold", mode), *(("Grip-Channel", c) for c in channels)]
    if meta is not None:
        out.append(("Grip-Set-Meta", meta))
    return out


async def open_stream(s: Server, origin: Origin, headers: Headers, body: str = "") -> RawResponse:
    origin.route("GET", "/s", Reply(200, headers, body))
    return await open_request(s.http_port, get("/s"))


# -- delivery filters (F35) -------------------------------------------------------------------

DELIVERY_CASES = [
    # (filters, publish meta, delivered?)
    (["skip-self"], {"sender": "alice"}, False),
    (["skip-self"], {"sender": "bob"}, True),
    (["skip-self"], {}, True),
    (["skip-users"], {"skip_users": "carol, alice"}, False),
    (["skip-users"], {"skip_users": "carol,bob"}, True),
    (["require-sub"], {"require_sub": "other"}, True),
    (["require-sub"], {"require_sub": "absent"}, False),
    (["nope"], {"sender": "alice"}, True),  # unknown filter names are ignored
    (["nope", "skip-self"], {"sender": "alice"}, False),
]


async def test_delivery_filters_on_streams(impl: Impl, start: StartFn, origin: Origin) -> None:
    """``skip-self``/``skip-users`` read sub meta ``user`` (``Grip-Set-Meta``);
    ``require-sub`` needs the named channel among the connection's."""
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    streams: list[RawResponse] = []
    try:
        for i, (filters, _, _) in enumerate(DELIVERY_CASES):
            params = "".join(f"; filter={f}" for f in filters)
            headers = hold("stream", f"c{i}{params}", "other", meta="user=alice")
            streams.append(await open_stream(s, origin, headers))
        await settle(s)
        await publish(
            s, [item(f"c{i}", f"m{i}\n", meta) for i, (_, meta, _) in enumerate(DELIVERY_CASES)]
        )
        await publish(s, [item("other", "end\n")])
        for i, (r, (filters, meta, delivered)) in enumerate(
            zip(streams, DELIVERY_CASES, strict=True)
        ):
            want = (f"m{i}\n" if delivered else "").encode() + b"end\n"
            assert await r.read_body_until(b"end\n") == want, (filters, meta)
    finally:
        for r in streams:
            r.close()


async def test_delivery_filters_on_response_holds(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """The same filters on a long-poll: a dropped item leaves the request held (JSON
    ``hold.meta`` and ``filters`` this time)."""
    instruct = {
        "hold": {
            "mode": "response",
            "channels": [{"name": "r", "filters": ["skip-self", "skip-users"]}],
            "meta": {"user": "alice"},
        },
        "response": {"body": "timeout\n"},
    }
    origin.route(
        "GET",
        "/lp",
        Reply(200, [("Content-Type", "application/grip-instruct")], json.dumps(instruct)),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await origin.wait_for("/lp", 2, WAIT)  # first-subscription update
        await asyncio.sleep(0.3)
        await publish(s, [item("r", "own\n", {"sender": "alice"})])
        await publish(s, [item("r", "skipped\n", {"skip_users": "alice"})])
        await asyncio.sleep(0.5)
        assert not task.done()
        await publish(s, [item("r", "for alice\n", {"sender": "bob"})])
        assert (await asyncio.wait_for(task, WAIT))[2] == b"for alice\n"
    finally:
        task.cancel()


async def test_dropped_hint_and_close_are_not_acted_on(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F35: delivery filters run before the action: a skipped ``close`` leaves the stream open."""
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_stream(s, origin, hold("stream", "d; filter=skip-self", meta="user=alice"))
    try:
        await settle(s)
        close = {"channel": "d", "formats": {"http-stream": {"action": "close"}}}
        await publish(s, [{**close, "meta": {"sender": "alice"}}])
        await publish(s, [item("d", "open\n")])
        assert await r.read_body_until(b"open\n") == b"open\n"
        await publish(s, [close])
        assert await r.read_to_end() == b""
        assert r.done
    finally:
        r.close()


# -- content filters (F35) and meta (F36) -----------------------------------------------------


async def test_var_subst(impl: Impl, start: StartFn, origin: Origin) -> None:
    """``var-subst``: ``%(name)s`` from sub meta, ``%%`` is ``%``."""
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    meta = 'name="World", user=alice'
    r = await open_stream(s, origin, hold("stream", "v; filter=var-subst", meta=meta), "%(name)s\n")
    try:
        # Only build-id applies to the initial body: var-subst leaves it alone.
        assert await r.read_body_until(b"\n") == b"%(name)s\n"
        await settle(s)
        await publish(s, [item("v", "Hello %(name)s from %(user)s, 100%%\n")])
        assert await r.read_body_until(b"%\n") == b"Hello World from alice, 100%\n"
    finally:
        r.close()


@pytest.mark.parametrize("debug", [False, True])
async def test_var_subst_unknown_variable_ends_stream(
    impl: Impl, start: StartFn, origin: Origin, debug: bool
) -> None:
    """A filter error ends the stream; debug routes append Pushpin's message first."""
    s = await start(impl, [f"*{',debug' if debug else ''} 127.0.0.1:{origin.port}"])
    r = await open_stream(s, origin, hold("stream", "v; filter=var-subst"), "start\n")
    try:
        assert await r.read_body_until(b"start\n") == b"start\n"
        await settle(s)
        await publish(s, [item("v", "x %(missing)s\n")])
        msg = b"\n\nfilter error: var-subst: No such variable 'missing' at position 12\n"
        assert await r.read_to_end(WAIT) == (msg if debug else b"")
        assert r.done
    finally:
        r.close()


async def test_build_id(impl: Impl, start: StartFn, origin: Origin) -> None:
    """``build-id``: ``%(id)I`` in the initial body; ``%I`` in published content from sub meta
    ``id_format`` (``%(channel)s`` = that channel's prev-id, already advanced to the item's id),
    hex-encoded with ``id_encoding=hex``."""
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    origin.route(
        "GET",
        "/lp",
        Reply(
            200,
            hold(
                "response",
                "b; prev-id=7; filter=build-id",
                meta='id_format="v%(b)s", id_encoding=hex',
            ),
            "initial %(abc)I\n",
        ),
    )
    origin.route(
        "GET",
        "/plain",
        Reply(200, hold("stream", "b2; filter=build-id", meta='id_format="q"'), "x%(Z)I\n"),
    )
    plain = await open_request(s.http_port, get("/plain"))
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        # The initial body has no default ID, but %(id)I names one.
        assert await plain.read_body_until(b"\n") == b"xZ\n"
        await origin.wait_for("/lp", 2, WAIT)
        await asyncio.sleep(0.3)
        await publish(s, [{**item("b", "id=%I\n"), "id": "8", "prev-id": "7"}])
        status, _, body = await asyncio.wait_for(task, WAIT)
        assert (status, body) == (200, b"id=" + b"v8".hex().encode() + b"\n")
        # Published content has a default ID: id_format rendered (no variables here).
        await publish(s, [item("b2", "%I %(w)I %%\n")])
        assert await plain.read_body_until(b"\n") == b"q w %\n"
    finally:
        task.cancel()
        plain.close()


@pytest.mark.parametrize("meta", ['id_format="x"', None])
async def test_build_id_initial_body_error(
    impl: Impl, start: StartFn, origin: Origin, meta: str | None
) -> None:
    """``%I`` in the initial body has no default ID there (Pushpin passes no channels), and
    without ``id_format`` nothing works: with debug the stream ends with the filter error right
    after the 200 head."""
    s = await start(impl, [f"*,debug 127.0.0.1:{origin.port}"])
    r = await open_stream(s, origin, hold("stream", "e; filter=build-id", meta=meta), "a%Ib\n")
    try:
        body = await r.read_to_end(WAIT)
        reason = (
            b"No ID specified and no default ID in context at position 2"
            if meta
            else b"no sub meta 'id_format'"
        )
        assert (r.status, body) == (200, b"\n\nfilter error: build-id: " + reason + b"\n")
    finally:
        r.close()


@pytest.mark.parametrize("debug", [False, True])
async def test_content_filters_mismatch_response_hold(
    impl: Impl, start: StartFn, origin: Origin, debug: bool
) -> None:
    """F30: a ``content-filters`` list unlike the subscription's content filters is a 502."""
    origin.route(
        "GET", "/lp", Reply(200, hold("response", "cf; filter=skip-self; filter=var-subst"))
    )
    s = await start(impl, [f"*{',debug' if debug else ''} 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await origin.wait_for("/lp", 2, WAIT)
        await asyncio.sleep(0.3)
        await publish(s, [item("cf", "x\n", content_filters=["build-id"])])
        status, headers, body = await asyncio.wait_for(task, WAIT)
        assert status == 502
        assert headers["content-type"] == "text/plain"
        assert body == (
            b"content filter mismatch: subscription=var-subst message=build-id\n"
            if debug
            else b"Error while proxying to origin.\n"
        )
    finally:
        task.cancel()


async def test_content_filters_match_and_mismatch_on_streams(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """A matching list (order counts, delivery filters ignored) is delivered; a mismatch ends
    the stream, even for an item a delivery filter would have dropped."""
    s = await start(impl, [f"*,debug 127.0.0.1:{origin.port}"])
    chan = "cf; filter=var-subst; filter=skip-self; filter=build-id"
    meta = 'user=alice, id_format="z"'
    r = await open_stream(s, origin, hold("stream", chan, meta=meta))
    try:
        await settle(s)
        await publish(s, [item("cf", "ok %(user)s\n", content_filters=["var-subst", "build-id"])])
        assert await r.read_body_until(b"\n") == b"ok alice\n"
        bad = item("cf", "x\n", {"sender": "alice"}, content_filters=["build-id"])
        await publish(s, [bad])
        assert await r.read_to_end(WAIT) == (
            b"\n\ncontent filter mismatch: subscription=var-subst,build-id message=build-id\n"
        )
    finally:
        r.close()


# -- WebSocket subscribers (F36 set-meta, F39 subscribe filters) ------------------------------


async def _grip_ws(s: Server, o: WsOrigin) -> tuple[RawWsClient, OriginConn]:
    pending = asyncio.ensure_future(RawWsClient.connect(s.http_port, "/ws"))
    oc = await o.next_conn()
    oc.accept_grip()
    c = await pending
    assert c.response.status == 101
    return c, oc


def ctl(oc: OriginConn, **msg: Any) -> None:
    oc.control(json.dumps(msg))


async def test_ws_filters(impl: Impl, start: StartFn) -> None:
    """WS sessions: meta from ``set-meta`` (a later one without value deletes the key);
    ``skip-users``, ``var-subst``; ``require-sub`` drops any item naming a channel (1.36 gives
    WS filters no channel list); a ``content-filters`` mismatch or filter error only drops."""
    async with WsOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        c, oc = await _grip_ws(s, o)
        ctl(oc, type="set-meta", name="user", value="alice")
        ctl(oc, type="set-meta", name="greeting", value="hi")
        ctl(oc, type="set-meta", name="gone", value="x")
        ctl(oc, type="set-meta", name="gone")
        ctl(oc, type="subscribe", channel="su", filters=["skip-users"])
        ctl(oc, type="subscribe", channel="vs", filters=["var-subst", "nope"])
        ctl(oc, type="subscribe", channel="rs", filters=["require-sub"])
        await asyncio.sleep((1.6 if impl == "pushpin" else 0.3) * TIME_SCALE)
        await publish(
            s,
            [
                item("su", "skipped", {"skip_users": "bob,alice"}),
                item("su", "kept", {"skip_users": "bob"}),
                item("vs", "%(greeting)s %(user)s"),
                item("vs", "%(gone)s"),  # filter error: dropped
                item("vs", "wrong list", content_filters=[]),
                item("vs", "right list", content_filters=["var-subst"]),
                item("rs", "needs vs", {"require_sub": "vs"}),
                item("rs", "plain"),
            ],
        )
        got = [await c.recv_message() for _ in range(4)]
        assert got == [
            (Opcode.TEXT, b"kept"),
            (Opcode.TEXT, b"hi alice"),
            (Opcode.TEXT, b"right list"),
            (Opcode.TEXT, b"plain"),
        ]
        with pytest.raises(TimeoutError):
            await c.recv_message(0.5)
        c.close()


async def test_prev_id_checked_before_delivery_filters(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """Pushpin checks a stream item's prev-id before its delivery filters: an out-of-sequence
    item that ``skip-self`` would drop still makes the stream re-fetch its link (F26)."""
    headers = [
        *hold("stream", "q; prev-id=1; filter=skip-self", meta="user=alice"),
        ("Grip-Link", "</n>; rel=next"),
    ]
    origin.route("GET", "/n", Reply(200, headers, "link\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_stream(s, origin, headers)
    try:
        assert await r.read_body_until(b"link\n", WAIT) == b"link\n"  # first-subscription fetch
        await settle(s)
        await publish(s, [{**item("q", "own\n", {"sender": "alice"}), "id": "3", "prev-id": "2"}])
        await origin.wait_for("/n", 2, WAIT)
        assert await r.read_body_until(b"link\n", WAIT) == b"link\n"
        assert b"own" not in r.raw
    finally:
        r.close()

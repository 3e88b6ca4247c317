"""WebSockets end to end (F37–F39, F30 ``ws-message``, F50 ``/ws``), gripd and Pushpin 1.36 alike.

Real clients (websockets' asyncio client, or ``RawWsClient`` for byte-exact frames) against real
proxies on loopback, with raw WebSocket origins from ``tests.support.wsorigin``. Every wait is
bounded. Pushpin only routes a publish to a WebSocket once its handler knows the subscription
(~1 s after the subscribe, see ``settle``); publishes before that are dropped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import warnings
from typing import Any, cast

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response

from tests.conftest import TIME_SCALE, StartFn
from tests.support.procs import Impl, Server
from tests.support.wsorigin import RawWsClient, WsOrigin

WAIT = 5.0 * TIME_SCALE

# -- helpers ---------------------------------------------------------------------------------


async def settle(s: Server) -> None:
    """Let a subscription reach the proxy's registry before publishing (F39)."""
    await asyncio.sleep((1.5 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


async def publish(s: Server, items: list[dict[str, Any]]) -> None:
    status, body = await asyncio.to_thread(s.publish, items)
    assert (status, body) == (200, "Published\n")


def ws_item(channel: str, **fmt: Any) -> dict[str, Any]:
    return {"channel": channel, "formats": {"ws-message": fmt}}


async def ws_connect(s: Server, path: str, **kw: Any) -> ClientConnection:
    return await connect(
        f"ws://127.0.0.1:{s.http_port}{path}",
        open_timeout=WAIT,
        close_timeout=2,
        ping_interval=None,  # no automatic pings mixed into the assertions
        max_size=None,
        **kw,
    )


def resp(ws: ClientConnection) -> Response:
    """The handshake response of an open client connection."""
    assert ws.response is not None
    return ws.response


async def recv(ws: ClientConnection, within: float = WAIT) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), within)


async def nothing(ws: ClientConnection, within: float = 0.5) -> None:
    """Assert no message arrives for ``within`` seconds."""
    with pytest.raises(TimeoutError):
        got = await asyncio.wait_for(ws.recv(), within * TIME_SCALE)
        pytest.fail(f"unexpected message {got!r}")


async def still_echoes(ws: ClientConnection, text: str = "alive") -> None:
    """The test target's /ws echo still works on ``ws`` (bad input elsewhere left it alone)."""
    await ws.send(text)
    assert await recv(ws) == text


def origin_route(port: int, opts: str = "") -> list[str]:
    return [f"*{opts} 127.0.0.1:{port}"]


# -- 1. the client side and the test target (F50) --------------------------------------------


async def test_test_target_ws_echo_and_channels(impl: Impl, start: StartFn) -> None:
    s = await start(impl, ["* test"])
    a = await ws_connect(s, "/ws?channel=a&channel=b")
    d = await ws_connect(s, "/ws")  # default channel "test"
    try:
        assert resp(a).headers.get("Sec-WebSocket-Extensions") is None
        await a.send("hello")
        assert await recv(a) == "hello"
        await a.send(b"\x00\xffbin")
        assert await recv(a) == b"\x00\xffbin"
        await settle(s)
        await publish(s, [ws_item("test", content="t1"), ws_item("a", content="a1")])
        await publish(s, [ws_item("b", content="b1")])
        assert await recv(d) == "t1"
        assert [await recv(a), await recv(a)] == ["a1", "b1"]
        await nothing(d, 0.3)
    finally:
        await a.close()
        await d.close()


async def test_fragments_and_close_handshake(impl: Impl, start: StartFn) -> None:
    s = await start(impl, ["* test"])
    c = await RawWsClient.connect(s.http_port, "/ws")
    assert c.response.status == 101
    # A fragmented text message (three frames) is one message (Pushpin echoes it frame by
    # frame, gripd whole: the same message either way).
    c.send_frame(Frame(Opcode.TEXT, b"frag", fin=False))
    c.send_frame(Frame(Opcode.CONT, b"men", fin=False))
    c.send_frame(Frame(Opcode.CONT, b"ted", fin=True))
    assert await c.recv_message() == (Opcode.TEXT, b"fragmented")
    c.send_binary(b"\x01\x02")
    assert await c.recv_message() == (Opcode.BINARY, b"\x01\x02")
    c.send_close(4000, "bye")
    assert await c.recv_close() == (4000, "bye")
    await c.wait_eof()


async def test_control_frame_inside_fragmented_message(start: StartFn) -> None:
    """RFC 6455 5.4: a ping may come between fragments; it is answered, the message is whole.
    gripd only: Pushpin 1.36 drops the connection (observed)."""
    s = await start("gripd", ["* test"])
    c = await RawWsClient.connect(s.http_port, "/ws")
    c.send_frame(Frame(Opcode.TEXT, b"frag", fin=False))
    c.send_ping(b"mid")
    c.send_frame(Frame(Opcode.CONT, b"ment", fin=True))
    got = {await c.recv_message(), await c.recv_message()}
    assert got == {(Opcode.PONG, b"mid"), (Opcode.TEXT, b"fragment")}
    c.close()


BAD_FRAMES = [
    # (what, raw bytes after the handshake, expected close code)
    ("invalid UTF-8 text", Frame(Opcode.TEXT, b"ok\xff\xfe").serialize(mask=True), 1007),
    ("reserved opcode 3", bytes([0x83, 0x80]) + b"\x00\x00\x00\x00", 1002),
    ("RSV1 without extension", bytes([0xC1, 0x81, 0, 0, 0, 0]) + b"x", 1002),
    ("unmasked client frame", bytes([0x81, 0x02]) + b"hi", 1002),
    ("fragmented ping", bytes([0x09, 0x80, 0, 0, 0, 0]), 1002),
    ("ping over 125 bytes", bytes([0x89, 0xFE, 0x00, 0x7E, 0, 0, 0, 0]) + b"\x00" * 126, 1002),
    ("continuation without start", Frame(Opcode.CONT, b"x").serialize(mask=True), 1002),
]


@pytest.mark.parametrize(("what", "raw", "code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frames_close_with_rfc_codes(
    start: StartFn, what: str, raw: bytes, code: int
) -> None:
    """RFC 6455: 1002 for protocol errors, 1007 for invalid UTF-8; nobody else is affected.
    gripd only: Pushpin 1.36 (condure) drops the TCP connection without a close frame, or lets
    invalid UTF-8 and unmasked frames through (observed), so there is nothing to compare."""
    s = await start("gripd", ["* test"])
    other = await ws_connect(s, "/ws?channel=o")
    try:
        c = await RawWsClient.connect(s.http_port, "/ws")
        c.send_raw(raw)
        assert (await c.recv_close())[0] == code, what
        await c.wait_eof()
        await still_echoes(other)
        await settle(s)
        await publish(s, [ws_item("o", content="after")])
        assert await recv(other) == "after"
    finally:
        await other.close()


async def test_max_message_size_closes_1009(start: StartFn) -> None:
    """gripd's ``[gripd] ws_max_message_size``: a bigger message (even fragmented) gets 1009."""
    s = await start("gripd", ["* test"], conf={"gripd": {"ws_max_message_size": "1000"}})
    other = await ws_connect(s, "/ws")
    try:
        ok = await ws_connect(s, "/ws")
        await ok.send("x" * 1000)
        assert await recv(ok) == "x" * 1000
        await ok.close()
        c = await RawWsClient.connect(s.http_port, "/ws")
        c.send_frame(Frame(Opcode.BINARY, b"y" * 600, fin=False))
        c.send_frame(Frame(Opcode.CONT, b"y" * 600, fin=True))
        assert (await c.recv_close())[0] == 1009
        await c.wait_eof()
        await still_echoes(other)
    finally:
        await other.close()


async def test_published_frames_identical_for_all_subscribers(impl: Impl, start: StartFn) -> None:
    """DESIGN "encode once": the same bytes reach every subscriber, and only WebSockets get
    ``ws-message`` (F30)."""
    s = await start(impl, ["* test"])
    a = await RawWsClient.connect(s.http_port, "/ws?channel=f")
    b = await RawWsClient.connect(s.http_port, "/ws?channel=f")
    stream = await asyncio.open_connection("127.0.0.1", s.http_port)
    stream[1].write(b"GET /stream?channel=f HTTP/1.1\r\nHost: t\r\n\r\n")
    await settle(s)
    big = "0123456789" * 7000  # 70 kB: split into frames by both (F30)
    await publish(
        s,
        [
            ws_item("f", content="hello"),
            ws_item("f", **{"content-bin": base64.b64encode(b"\x00\x01\xff").decode()}),
            ws_item("f", content=big),
            {"channel": "f", "formats": {"http-stream": {"content": "stream-only\n"}}},
        ],
    )
    msgs_a = [await a.recv_message() for _ in range(3)]
    assert msgs_a == [
        (Opcode.TEXT, b"hello"),
        (Opcode.BINARY, b"\x00\x01\xff"),
        (Opcode.TEXT, big.encode()),
    ]
    msgs_b = [await b.recv_message() for _ in range(3)]
    assert msgs_b == msgs_a
    if impl == "gripd":
        # Encode once: byte-identical frames (compared by length and digest to keep a failure's
        # report small). Pushpin frames each client's copy on its own, so no such promise there.
        assert len(a.raw) == len(b.raw)
        assert hashlib.sha256(bytes(a.raw)).digest() == hashlib.sha256(bytes(b.raw)).digest()
    head = await asyncio.wait_for(stream[0].readuntil(b"stream-only\n"), WAIT)
    assert b"hello" not in head and b"0123456789" not in head
    stream[1].close()
    a.close()
    b.close()


# -- 2. proxying to a WebSocket origin (F37, F38) ---------------------------------------------


async def test_origin_handshake_headers_and_plain_relay(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port), conf={"proxy": {"x_forwarded_for": "append"}})
        # websockets' client offers permessage-deflate; the proxy must not pass it on (F37).
        pending = asyncio.ensure_future(
            ws_connect(s, "/chat?q=1", additional_headers={"X-Custom": "1"})
        )
        oc = await o.next_conn()
        hs = oc.handshake
        assert hs.path == "/chat?q=1"
        assert hs.header_all("Sec-WebSocket-Extensions") == ["grip"]
        assert hs.header("X-Custom") == "1"
        assert hs.header("X-Forwarded-For") == "127.0.0.1"
        assert hs.header("Grip-Feature")
        with warnings.catch_warnings():  # the shipped key "changeme" is short (F15)
            warnings.simplefilter("ignore")
            claims = jwt.decode(hs.header("Grip-Sig") or "", "changeme", algorithms=["HS256"])
        assert claims["iss"] == "pushpin"
        oc.accept([("X-Origin", "yes")])
        ws = await pending
        try:
            assert resp(ws).headers.get("X-Origin") == "yes"
            assert resp(ws).headers.get("Sec-WebSocket-Extensions") is None
            # No grip: everything is relayed as is, both ways.
            oc.send_text("m:not-stripped")
            oc.send_binary(b"\x00bin")
            assert await recv(ws) == "m:not-stripped"
            assert await recv(ws) == b"\x00bin"
            await ws.send("up")
            await ws.send(b"\x01up")
            assert await oc.recv_message() == (Opcode.TEXT, b"up")
            assert await oc.recv_message() == (Opcode.BINARY, b"\x01up")
            # Ping/pong, both directions (F37). Pushpin 1.36 relays pings without their
            # payload and its pongs lag (observed), so payloads are checked on gripd only.
            pong = await ws.ping(b"cping")
            op, payload = await oc.recv_message()  # the origin answers it
            assert op is Opcode.PING
            if impl == "gripd":
                assert payload == b"cping"
                await asyncio.wait_for(pong, WAIT)
                oc.send_ping(b"oping")
                assert await oc.recv_message() == (Opcode.PONG, b"oping")  # client's answer
            else:
                cast("asyncio.Future[float]", pong).cancel()
            # The origin's close code and reason reach the client.
            oc.send_close(4001, "origin bye")
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert (ws.close_code, ws.close_reason) == (4001, "origin bye")
        finally:
            await ws.close()


async def test_client_close_relayed_to_origin(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        pending = asyncio.ensure_future(ws_connect(s, "/c"))
        oc = await o.next_conn()
        oc.accept()
        ws = await pending
        await ws.send("x")
        assert await oc.recv_message() == (Opcode.TEXT, b"x")
        close = asyncio.ensure_future(ws.close(4002, "client bye"))
        assert await oc.recv_close() == (4002, "client bye")
        oc.close()
        await asyncio.wait_for(close, WAIT)


async def test_origin_rejection_relayed_and_origin_down_502(
    impl: Impl, start: StartFn, dead_port: int
) -> None:
    dead = dead_port
    async with WsOrigin() as o:
        s = await start(impl, [f"*,path_beg=/down 127.0.0.1:{dead}", *origin_route(o.port)])
        pending = asyncio.ensure_future(ws_connect(s, "/r"))
        oc = await o.next_conn()
        oc.reject(
            403, "Forbidden", [("X-Why", "nope"), ("Content-Type", "text/plain")], b"go away\n"
        )
        with pytest.raises(InvalidStatus) as ei:
            await pending
        resp = ei.value.response
        assert resp.status_code == 403
        if impl == "gripd":  # Pushpin 1.36 relays only the status and body (observed)
            assert resp.headers.get("X-Why") == "nope"
        assert resp.body == b"go away\n"
        with pytest.raises(InvalidStatus) as ei:
            await ws_connect(s, "/down")
        assert ei.value.response.status_code == 502
        assert ei.value.response.body == b"Error while proxying to origin.\n"


async def test_grip_default_prefix(impl: Impl, start: StartFn) -> None:
    """F38: ``c:`` handled, ``m:`` stripped and relayed, anything else dropped."""
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        pending = asyncio.ensure_future(ws_connect(s, "/g"))
        oc = await o.next_conn()
        oc.accept_grip()
        ws = await pending
        try:
            assert resp(ws).headers.get("Sec-WebSocket-Extensions") is None
            oc.send_text("dropped")
            oc.send_binary(b"dropped too")
            oc.send_text("m:hi")
            oc.control(json.dumps({"type": "subscribe", "channel": "x"}))
            oc.send_text("m:after")
            assert await recv(ws) == "hi"
            assert await recv(ws) == "after"
            await ws.send("m:as is")  # client->origin: unchanged (F38)
            assert await oc.recv_message() == (Opcode.TEXT, b"m:as is")
            await settle(s)
            await publish(s, [ws_item("x", content="pub")])
            assert await recv(ws) == "pub"
        finally:
            await ws.close()


async def test_seed_example_backend_pattern(impl: Impl, start: StartFn) -> None:
    """Section 3 item 4: upgrade with ``grip; message-prefix=""``, one ``c:`` subscribe frame
    right behind the 101, then never read nor close; publishes (go-pubcontrol shape) arrive."""
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        pending = asyncio.ensure_future(ws_connect(s, "/websocket?channel=x"))
        oc = await o.next_conn()
        sub = Frame(Opcode.TEXT, b'c:{"channel":"x","type":"subscribe"}').serialize(mask=False)
        oc.accept([("Sec-WebSocket-Extensions", 'grip; message-prefix=""')], then=sub)
        ws = await pending
        # A second client on the same backend pattern but whose origin talks: with an empty
        # prefix every non-control message is relayed whole.
        pending2 = asyncio.ensure_future(ws_connect(s, "/websocket?channel=y"))
        oc2 = await o.next_conn()
        oc2.accept_grip("")
        ws2 = await pending2
        try:
            for i in range(3):
                await ws.send(f"ignored {i}")  # forwarded, never read by the backend
            oc2.send_text("m:kept whole")
            oc2.send_text("plain")
            assert await recv(ws2) == "m:kept whole"
            assert await recv(ws2) == "plain"
            await settle(s)
            await publish(s, [{"channel": "x", "ws-message": {"content": "hello"}}])
            assert await recv(ws) == "hello"
            await nothing(ws2, 0.3)
        finally:
            await ws.close()
            await ws2.close()


# -- 3. control messages (F39) ----------------------------------------------------------------


async def _grip_session(s: Server, o: WsOrigin, path: str = "/ctl") -> tuple[RawWsClient, Any]:
    pending = asyncio.ensure_future(RawWsClient.connect(s.http_port, path))
    oc = await o.next_conn()
    oc.accept_grip()
    c = await pending
    assert c.response.status == 101
    return c, oc


def ctl(oc: Any, **msg: Any) -> None:
    oc.control(json.dumps(msg))


async def test_subscribe_prefix_limit_unsubscribe(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(
            impl,
            origin_route(o.port, ",prefix=p_"),
            conf={"handler": {"connection_subscription_max": "2"}},
        )
        c, oc = await _grip_session(s, o)
        ctl(oc, type="subscribe", channel="a")
        ctl(oc, type="subscribe", channel="b")
        ctl(oc, type="subscribe", channel="c")  # over connection_subscription_max: ignored
        await settle(s)
        await publish(
            s,
            [
                ws_item("a", content="unprefixed"),
                ws_item("p_c", content="over limit"),
                ws_item("p_a", content="A"),
                ws_item("p_b", content="B"),
            ],
        )
        assert [await c.recv_message(), await c.recv_message()] == [
            (Opcode.TEXT, b"A"),
            (Opcode.TEXT, b"B"),
        ]
        ctl(oc, type="unsubscribe", channel="a")
        await settle(s)
        await publish(s, [ws_item("p_a", content="gone"), ws_item("p_b", content="B2")])
        assert await c.recv_message() == (Opcode.TEXT, b"B2")
        c.close()


async def test_invalid_control_json_ignored(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        c, oc = await _grip_session(s, o)
        for bad in ("c:{bad", "c:[1]", 'c:{"type":"nope"}', 'c:{"type":"subscribe"}', "c:"):
            oc.send_text(bad)
        oc.send_frame(Frame(Opcode.TEXT, b'c:{"type":"subscribe",', fin=False))
        oc.send_frame(Frame(Opcode.CONT, b'"channel":"frag"}', fin=True))  # F38: not one frame
        ctl(oc, type="subscribe", channel="ok")
        oc.send_text("m:still here")
        assert await c.recv_message() == (Opcode.TEXT, b"still here")
        await settle(s)
        await publish(s, [ws_item("frag", content="no"), ws_item("ok", content="yes")])
        assert await c.recv_message() == (Opcode.TEXT, b"yes")
        c.close()


async def test_detach_keeps_client_and_publishes(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        c, oc = await _grip_session(s, o)
        ctl(oc, type="subscribe", channel="d")
        ctl(oc, type="detach")
        await oc.wait_eof()  # the proxy closed the origin side
        c.send_text("into the void")  # discarded (F39)
        await settle(s)
        await publish(s, [ws_item("d", content="still flowing")])
        assert await c.recv_message() == (Opcode.TEXT, b"still flowing")
        assert len(o.conns) == 1  # no reconnect to the origin
        c.close()


async def test_set_meta_with_skip_self_filter(impl: Impl, start: StartFn) -> None:
    """``set-meta`` is observable through subscription filters (F35): ``skip-self`` drops
    messages whose publish meta ``sender`` is the connection's meta ``user``."""
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        c, oc = await _grip_session(s, o)
        ctl(oc, type="set-meta", name="user", value="alice")
        ctl(oc, type="subscribe", channel="m", filters=["skip-self"])
        await settle(s)
        await publish(
            s,
            [
                {**ws_item("m", content="own"), "meta": {"sender": "alice"}},
                {**ws_item("m", content="other"), "meta": {"sender": "bob"}},
            ],
        )
        assert await c.recv_message() == (Opcode.TEXT, b"other")
        c.close()


async def test_keep_alive(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        c, oc = await _grip_session(s, o)
        ctl(oc, type="keep-alive", content="ka", timeout=1)
        assert await c.recv_message(3 * TIME_SCALE) == (Opcode.TEXT, b"ka")
        assert await c.recv_message(3 * TIME_SCALE) == (Opcode.TEXT, b"ka")
        ctl(oc, type="keep-alive", content="p", **{"message-type": "ping"}, timeout=1)
        got = [await c.recv_message(3 * TIME_SCALE) for _ in range(2)]
        assert (Opcode.PING, b"p") in got
        ctl(oc, type="keep-alive")  # no content: off
        await asyncio.sleep(0.2)
        c._frames.clear()
        with pytest.raises(TimeoutError):
            f = await c.recv_frame(2.2 * TIME_SCALE)
            pytest.fail(f"keep-alive still on: {f}")
        c.close()


async def test_keep_alive_idle_vs_interval(impl: Impl, start: StartFn) -> None:
    """Idle mode: traffic postpones the keep-alive; interval mode sends it regardless."""
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        idle, oi = await _grip_session(s, o, "/idle")
        inter, on = await _grip_session(s, o, "/interval")
        ctl(oi, type="keep-alive", content="idle-ka", timeout=3)
        ctl(on, type="keep-alive", content="int-ka", timeout=2, mode="interval")
        seen: dict[str, list[bytes]] = {"idle": [], "inter": []}
        for i in range(9):  # 3.6 s of traffic every 0.4 s
            oi.send_text(f"m:{i}")
            on.send_text(f"m:{i}")
            await asyncio.sleep(0.4)
        for name, c in (("idle", idle), ("inter", inter)):
            while True:
                try:
                    seen[name].append((await c.recv_message(0.2))[1])
                except TimeoutError:
                    break
        assert b"idle-ka" not in seen["idle"]
        assert b"int-ka" in seen["inter"]
        idle.close()
        inter.close()


async def test_send_delayed_and_flush(impl: Impl, start: StartFn) -> None:
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port))
        c, oc = await _grip_session(s, o)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ctl(oc, type="send-delayed", content="d1", timeout=1)
        assert await c.recv_message(3 * TIME_SCALE) == (Opcode.TEXT, b"d1")
        assert loop.time() - t0 >= 0.8
        ctl(oc, type="send-delayed", content="d2", timeout=30)
        ctl(oc, type="send-delayed", content="d3", timeout=30)  # flushes d2 first
        assert await c.recv_message() == (Opcode.TEXT, b"d2")
        oc.send_text("m:marker")
        assert await c.recv_message() == (Opcode.TEXT, b"marker")
        ctl(oc, type="flush-delayed")
        assert await c.recv_message() == (Opcode.TEXT, b"d3")
        c.close()


# -- 5. ws-message publishing (F30) ----------------------------------------------------------


async def test_ws_message_types_and_close(impl: Impl, start: StartFn) -> None:
    s = await start(impl, ["* test"])
    c = await RawWsClient.connect(s.http_port, "/ws?channel=t")
    other = await ws_connect(s, "/ws?channel=u")
    await settle(s)
    await publish(
        s,
        [
            ws_item("t", content="text"),
            ws_item("t", type="binary", content="as binary"),
            ws_item("t", **{"content-bin": base64.b64encode(b"\xff\x00").decode()}),
            ws_item("t", type="ping", content="pi"),
            ws_item("t", type="pong", content="po"),
        ],
    )
    assert await c.recv_message() == (Opcode.TEXT, b"text")
    assert await c.recv_message() == (Opcode.BINARY, b"as binary")
    assert await c.recv_message() == (Opcode.BINARY, b"\xff\x00")
    assert await c.recv_message() == (Opcode.PING, b"pi")
    assert await c.recv_message() == (Opcode.PONG, b"po")
    big = bytes(range(256)) * 1000  # 256 kB: split into frames (F30), whole on arrival
    await publish(s, [ws_item("t", **{"content-bin": base64.b64encode(big).decode()})])
    msg = await c.recv_message()
    while msg[0] is Opcode.PONG:  # Pushpin's /ws echoes the client's pong to "pi"
        msg = await c.recv_message()
    assert msg == (Opcode.BINARY, big)
    await publish(s, [ws_item("t", action="close", code=4005, reason="pub close")])
    assert await c.recv_close() == (4005, "pub close")
    await c.wait_eof()
    await still_echoes(other)
    await other.close()


async def test_implicit_sub_channels(impl: Impl, start: StartFn) -> None:
    """Target ``sub=``: subscribed at open, even without grip, and cannot be unsubscribed."""
    async with WsOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port},sub=imp"])
        pending = asyncio.ensure_future(ws_connect(s, "/plain"))
        oc = await o.next_conn()
        oc.accept()  # no grip extension
        plain = await pending
        g, og = await _grip_session(s, o, "/grip")
        ctl(og, type="unsubscribe", channel="imp")
        await settle(s)
        await publish(s, [ws_item("imp", content="implicit")])
        assert await recv(plain) == "implicit"
        assert await g.recv_message() == (Opcode.TEXT, b"implicit")
        await plain.close()
        g.close()

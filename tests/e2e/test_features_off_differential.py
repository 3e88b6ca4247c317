"""gripd's extra features, off by default, change nothing: a differential test against Pushpin 1.36.

Each test runs once per implementation (the ``impl`` fixture) on the same default config (the
shipped ``pushpin.conf``; no ``[gripd]`` section) and asserts the same observable result on both:

- ``[gripd] wildcard_channels`` off: a ``*`` in a channel name is an ordinary character for a
  stream hold (F20/F24), a response hold (F22), a WebSocket ``c:`` subscribe (F39) and a
  WebSocket-over-HTTP ``c:`` subscribe (F40/F41). With the option on, gripd would deliver a
  publish to ``news.a`` to a ``news.*`` subscriber and these tests would fail.
- ``[gripd] publish_key`` unset: the control API (F28) and the command socket's ``publish``
  (F42) accept publishes with no credentials and ignore a bogus ``Authorization``, byte for byte
  as Pushpin does.
- ``[gripd] log_format`` unset: log lines are Pushpin's text lines (``[LEVEL] date time ...``), with
  the F53 request and control lines, not JSON.

Absence is checked by order, not by waiting: the item that must not arrive is published before
one that must, to the same subscriber, so once the second is read the first would have been too.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from websockets.frames import Opcode

from tests.conftest import TIME_SCALE, StartFn
from tests.e2e.test_websocket import _grip_session, ctl, origin_route, ws_item
from tests.e2e.test_woh import events_reply, parse_events
from tests.e2e.test_woh import recv as woh_recv
from tests.e2e.test_woh import ws_connect as woh_connect
from tests.support.e2e import command_request, get, lp_item, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request
from tests.support.wsorigin import WsOrigin

WAIT = 10.0 * TIME_SCALE

#: Pushpin's handler learns a new subscription about a second after it is made, and re-requests
#: a response hold's origin ~1 s after a channel's first subscription (F22). Both legs wait the
#: same time so a hold is final before anything is published.
SETTLE = 1.6 * TIME_SCALE

#: The control API's answer to a good publish (F28), exactly as Pushpin 1.36 sends it.
PUBLISHED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 10\r\n\r\nPublished\n"
)

#: Pushpin's text log line: ``[INFO] 2026-01-02 03:04:05.678 [service] message`` (F53).
TEXT_LINE = re.compile(r"\[[A-Z]+\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S.*")


def stream_reply(*channels: str) -> Reply:
    hdrs = [("Grip-Hold", "stream"), ("Content-Type", "text/plain")]
    return Reply(200, [*hdrs, *(("Grip-Channel", c) for c in channels)], "start\n")


async def open_stream(s: Server, path: str) -> RawResponse:
    resp = await open_request(s.http_port, get(path), WAIT)
    assert resp.status == 200
    assert await resp.read_body_until(b"start\n", WAIT) == b"start\n"
    return resp


async def settled(origin: Origin, path: str) -> None:
    """The origin answered the hold and the proxy had time to subscribe."""
    await origin.wait_for(path, 1, WAIT)
    await asyncio.sleep(SETTLE)


async def control(s: Server, body: bytes, headers: dict[str, str]) -> bytes:
    """One raw ``POST /publish/`` to the control API; the whole answer, as sent."""
    lines = ["POST /publish/ HTTP/1.1", "Host: t", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", s.control_port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await asyncio.wait_for(reader.read(), WAIT)  # the API closes after answering
    finally:
        writer.close()


async def wait_log(s: Server, needle: str) -> str:
    """The server's log once it contains ``needle`` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while needle not in (text := s.log_text()):
        assert loop.time() < deadline, f"no {needle!r} in the log:\n{text}"
        await asyncio.sleep(0.05)
    return text


# --- wildcard_channels off: "*" is an ordinary character ----------------------------------------


async def test_stream_hold_star_is_literal(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F20/F24/F28: a stream hold on ``news.*`` gets a publish to ``news.*`` only; ``news.a``
    and ``news.b``, published first, never arrive."""
    origin.route("GET", "/p", stream_reply("news.*"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    resp = await open_stream(s, "/p")
    try:
        await settled(origin, "/p")
        await publish(s, [stream_item("news.a", "A\n"), stream_item("news.b", "B\n")])
        await publish(s, [stream_item("news.*", "STAR\n")])
        assert await resp.read_body_until(b"STAR\n", WAIT) == b"STAR\n"
    finally:
        resp.close()


async def test_response_hold_star_is_literal(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F22/F28: a long-poll held on ``a*`` is not answered by a publish to ``ab``; a publish to
    ``a*`` answers it with the published body (held headers kept)."""
    hdrs = [("Grip-Hold", "response"), ("Grip-Channel", "a*"), ("X-Held", "1")]
    origin.route("GET", "/lp", Reply(200, hdrs, "timeout\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=WAIT + SETTLE))
    try:
        await settled(origin, "/lp")
        await publish(s, [lp_item("ab", "wrong\n"), lp_item("abc", "wrong too\n")])
        await asyncio.sleep(0.3 * TIME_SCALE)
        assert not task.done()  # a pattern match would have answered it by now
        await publish(s, [lp_item("a*", "literal\n")])
        status, headers, body = await task
    finally:
        task.cancel()
    assert (status, body) == (200, b"literal\n")
    assert headers["x-held"] == "1"


async def test_websocket_subscribe_star_is_literal(impl: Impl, start: StartFn) -> None:
    """F39: a WebSocket origin's ``c:`` subscribe to ``news.*`` and ``a*b`` (with a route
    prefix) is to those exact channels; ``p_news.a`` and ``p_ab`` are not delivered."""
    async with WsOrigin() as o:
        s = await start(impl, origin_route(o.port, ",prefix=p_"))
        c, oc = await _grip_session(s, o)
        try:
            ctl(oc, type="subscribe", channel="news.*")
            ctl(oc, type="subscribe", channel="a*b")
            await asyncio.sleep(SETTLE)
            await publish(
                s,
                [
                    ws_item("p_news.a", content="A"),
                    ws_item("p_news.", content="prefix"),
                    ws_item("p_ab", content="AB"),
                    ws_item("p_a*bc", content="ABC"),
                ],
            )
            await publish(s, [ws_item("p_news.*", content="STAR"), ws_item("p_a*b", content="A*B")])
            assert await c.recv_message() == (Opcode.TEXT, b"STAR")
            assert await c.recv_message() == (Opcode.TEXT, b"A*B")
        finally:
            c.close()


async def test_websocket_over_http_subscribe_star_is_literal(impl: Impl, start: StartFn) -> None:
    """F40/F41: a WebSocket-over-HTTP origin's ``c:`` subscribe to ``w.*`` gets ``w.*`` only."""
    sub = b"c:" + json.dumps({"type": "subscribe", "channel": "w.*"}).encode()

    def answer(req: RecordedRequest) -> Reply:
        if parse_events(req.body)[:1] == [("OPEN", None)]:
            opened = [("OPEN", None), ("TEXT", sub), ("TEXT", b"m:hi")]
            return events_reply(opened, [("Sec-WebSocket-Extensions", "grip")])
        return events_reply([])

    async with Origin() as o:
        o.route("POST", "/g", answer)
        s = await start(impl, [f"* 127.0.0.1:{o.port},over_http"])
        ws = await woh_connect(s, "/g")
        try:
            assert await woh_recv(ws, WAIT) == "hi"
            await asyncio.sleep(SETTLE)
            await publish(s, [ws_item("w.1", content="one"), ws_item("w.", content="prefix")])
            await publish(s, [ws_item("w.*", content="star")])
            assert await woh_recv(ws, WAIT) == "star"
        finally:
            ws.transport.abort()  # no close handshake to wait for


# --- publish_key unset: no authentication -------------------------------------------------------


async def test_publish_without_key_needs_no_credentials(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F28/F42: with no ``publish_key``, a control API publish with no ``Authorization`` and one
    with a bogus bearer token get Pushpin's exact ``200 Published`` answer and are delivered; so
    is a command socket ``publish`` carrying a bogus ``args.authorization``."""
    origin.route("GET", "/s", stream_reply("free"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    resp = await open_stream(s, "/s")
    try:
        await settled(origin, "/s")
        answers = []
        for n, headers in enumerate(
            ({}, {"Authorization": "Bearer x.y.z"}, {"Authorization": "Basic Zm9vOmJhcg=="})
        ):
            body = json.dumps({"items": [stream_item("free", f"{n}\n")]}).encode()
            answers.append(await control(s, body, {"Content-Type": "application/json", **headers}))
        assert answers == [PUBLISHED] * 3
        assert await resp.read_body_until(b"2\n", WAIT) == b"0\n1\n2\n"
        item: dict[bytes, Any] = {
            b"channel": b"free",
            b"formats": {b"http-stream": {b"content": b"cmd\n"}},
        }
        args = {b"items": [item], b"authorization": b"Bearer x.y.z"}
        reply = await command_request(
            s.command_port, {b"id": b"7", b"method": b"publish", b"args": args}, WAIT
        )
        assert reply == {b"id": b"7", b"success": True, b"value": None}
        assert await resp.read_body_until(b"cmd\n", WAIT) == b"cmd\n"
    finally:
        resp.close()


# --- log_format unset: text lines ---------------------------------------------------------------


async def test_default_log_lines_are_text(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F53: with no ``log_format``, every log line is ``[LEVEL] date time ...`` text (none is a
    JSON object), and a proxied request and a publish are logged as Pushpin logs them."""
    origin.route("GET", "/plain", Reply(200, [], "hi\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    status, _, body = await raw_request(s.http_port, get("/plain"), timeout=WAIT)
    assert (status, body) == (200, b"hi\n")
    await publish(s, [stream_item("logged", "x\n")])
    request_line = f"GET http://t/plain -> 127.0.0.1:{origin.port} code=200 3"
    await wait_log(s, request_line)
    text = await wait_log(s, "control: POST /publish/ code=200 10 items=1")
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert TEXT_LINE.fullmatch(line), line  # a JSON line starts with "{"
    assert any(line.endswith("] " + request_line) for line in lines), text

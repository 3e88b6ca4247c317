"""A closed WebSocket session is freed by reference counting, not left to the garbage collector.

websockets' sans-I/O ``Protocol`` holds its parser generator, whose frame holds the
``Protocol``; the session's endpoint points at the session through its handler, the session at
its origin link, the link back at the session, the client connection at the endpoint's reader.
Left like that, every closed session (about 35 objects) waited for a full collection, whose
pause grows with the number of held connections and stalls every client. When the client
connection closes, the session lets go of all of it; so does an origin link whose connection
closes. Checked here in-process (gripd's ``App`` in the test's loop) for the three kinds of
WebSocket origin: the built-in test target, a WebSocket origin and WebSocket-over-HTTP.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import websockets
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from gripd.io.handler.ws_session import WsSession
from gripd.io.listener.client import ClientConnection
from gripd.io.origin.websocket import WsOriginLink
from gripd.io.origin.woh import WohPeer
from gripd.io.ws_endpoint import WsEndpoint
from tests.support.inproc import inprocess_app

SESSIONS = 20
WATCHED = {WsSession, WsEndpoint, ClientConnection, WsOriginLink, WohPeer}


def _left() -> int:
    return sum(1 for o in gc.get_objects() if type(o) in WATCHED)  # not isinstance: weak proxies


async def _woh_echo(request: web.Request) -> web.Response:
    """A WebSocket-over-HTTP origin (F40): accepts the OPEN, echoes TEXT events."""
    body = await request.read()
    out = [b"OPEN\r\n"] if body.startswith(b"OPEN") else []
    i = 0
    while i < len(body):
        end = body.index(b"\r\n", i)
        line, i = body[i:end], end + 2
        if line.startswith(b"TEXT "):
            n = int(line[5:], 16)
            out.append(b"TEXT %x\r\n%s\r\n" % (n, body[i : i + n]))
            i += n + 2
    return web.Response(body=b"".join(out), content_type="application/websocket-events")


@asynccontextmanager
async def _origin(kind: str) -> AsyncIterator[str]:
    """The route line for an origin of ``kind``, serving while the context lasts."""
    if kind == "test":
        yield "* test"
    elif kind == "websocket":

        async def echo(ws: ServerConnection) -> None:
            async for m in ws:
                await ws.send(m)

        async with serve(echo, "127.0.0.1", 0) as server:
            yield f"* 127.0.0.1:{server.sockets[0].getsockname()[1]}"
    else:
        web_app = web.Application()
        web_app.router.add_post("/{tail:.*}", _woh_echo)
        runner = web.AppRunner(web_app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            yield f"* 127.0.0.1:{runner.addresses[0][1]},over_http"
        finally:
            await runner.cleanup()


async def _until(cond: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", ["test", "websocket", "over-http"])
async def test_a_closed_websocket_session_is_freed_without_the_cycle_collector(
    kind: str,
) -> None:
    async with _origin(kind) as route, inprocess_app(route) as app:
        port = app.config.http_port[0].port

        async def session(close: Callable[[websockets.ClientConnection], Awaitable[None]]) -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "hi"
                await close(ws)

        async def by_close_frame(ws: websockets.ClientConnection) -> None:
            await ws.close()

        async def by_dropping_the_connection(ws: websockets.ClientConnection) -> None:
            ws.transport.abort()  # no close frame: the TCP connection just goes

        await session(by_close_frame)  # warm-up: whatever is created once, outside the count
        await asyncio.sleep(0.3)
        gc.collect()
        before = _left()
        gc.disable()
        try:
            for i in range(SESSIONS):
                await session(by_close_frame if i % 2 else by_dropping_the_connection)
            # Each session ends when gripd sees its client connection close (and, for a
            # WebSocket origin, the origin connection it then closes).
            await _until(lambda: _left() == before)
            assert _left() == before  # with the cycles, 3 to 5 of them per session stayed
        finally:
            gc.enable()

"""Client request heads through the real ``ClientConnection.data_received`` (F3, httptools).

Input: one flag byte, then the bytes the client sends. Flags: bit 0 — the stub application
answers each request at once with ``200`` (else it holds it, as a GRIP hold would); bits 1-3 —
how the bytes are cut into reads; bit 4 — a small ``client_buffer_size`` (256) so the 431 path
is reached often; bit 5 — afterwards, let the clock run to every pending timer (header and idle
timeouts). Reads stop when the connection pauses reading or closes, as asyncio's would.

Allowed outcomes: the connection dispatches requests to the application, or writes a 4xx (502
for ``CONNECT``, as Pushpin) and closes, or waits for more bytes. A find is any exception
escaping ``data_received`` or ``connection_lost``, an error logged by the listener (an internal
error answered 500), a response it writes itself that is not one of those, a close with no 4xx
and no request in progress, a dispatched head over ``client_buffer_size``, or a request
dispatched after the connection began closing.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from gripd.core.config import default_config
from gripd.core.http import HttpResponse
from gripd.io.listener.client import RAW_EARLY_MAX, ClientConnection
from gripd.io.listener.flusher import Flusher
from gripd.io.listener.request import Request
from gripd.io.observe.events import Events

from ._common import FakeLoop, FakeTransport, LogTrap, chunked, flags_and_rest

_CONFIG = default_config("/")
_SMALL = replace(_CONFIG, client_buffer_size=256)
_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) ")


class _Handler:
    """A request handler that holds the request and swallows its body."""

    def on_client_body(self, data: bytes) -> None:
        pass

    def on_client_body_end(self) -> None:
        pass

    def on_client_closed(self) -> None:
        pass

    def on_client_pause_writing(self) -> None:
        pass

    def on_client_resume_writing(self) -> None:
        pass


class StubApp:
    """The part of ``gripd.runtime.app.App`` a ``ClientConnection`` uses."""

    def __init__(self, config: Any, respond: bool) -> None:
        self.config = config
        self.respond = respond
        self.connections: set[ClientConnection] = set()
        self.events = Events()
        self.write_high_water = 256 * 1024
        self.loop = FakeLoop()
        self.flusher = Flusher(self.loop)
        self.dispatched: list[Request] = []
        self.closed_by_app = False
        self._n = 0

    def next_conn_id(self) -> str:
        self._n += 1
        return f"fuzz-{self._n}"

    def admit_connection(self, conn: ClientConnection) -> bool:
        if len(self.connections) >= self.config.client_maxconn:
            return False
        self.connections.add(conn)
        return True

    def drop_connection(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def refused_connection(self, peer: str) -> None:
        raise AssertionError("refused a connection under client_maxconn")

    def refuse_for_fds(self, transport: object, peer: str) -> bool:
        return False  # descriptors to spare (fd_reserve is not what is fuzzed here)

    def handle_request(self, conn: ClientConnection, req: Request) -> None:
        t = conn.transport
        assert isinstance(t, FakeTransport)
        # RFC 9112 9.6: no request is processed after the connection is being closed.
        assert not t.is_closing(), "dispatched a request on a closing connection"
        self.dispatched.append(req)
        if not self.respond:
            conn.set_handler(_Handler())
            return
        t.tag = "app"
        try:
            conn.send_response(HttpResponse(200, "OK", [], b"ok\n"), method=req.method)
            conn.flush()  # writes go out at the end of the tick: these bytes are the app's
        finally:
            t.tag = "conn"
        if t.closed:
            self.closed_by_app = True  # not keep-alive, or an upgrade we did not take


SEEDS = [
    b"\x00GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"\x01GET /a?b=c HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x03POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"\x05POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
    b"\x00GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x00",
    b"\x11GET / HTTP/1.0\r\nConnection: keep-alive\r\nX-Long: " + b"x" * 300 + b"\r\n\r\n",
    b"\x01HEAD / HTTP/1.1\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x00GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
]

TOKENS = [
    b"GET ",
    b"POST ",
    b"CONNECT ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"Host: ",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"0\r\n\r\n",
    b"ffffffffffffffff",
]


def fuzz_one(data: bytes) -> None:
    flags, stream = flags_and_rest(data)
    config = _SMALL if flags & 0x10 else _CONFIG
    app = StubApp(config, respond=bool(flags & 1))
    conn = ClientConnection(app)  # type: ignore[arg-type]
    transport = FakeTransport()
    with LogTrap("gripd.client") as trap:
        conn.connection_made(transport)
        for piece in chunked(stream, (flags >> 1) & 7):
            app.loop.run_ready()
            if transport.is_closing() or transport.paused:
                break  # asyncio reads nothing more from a closed or paused transport
            conn.data_received(piece)
        app.loop.run_ready()
        if flags & 0x20:
            app.loop.fire_timers()
        trap.check()
        _check(app, conn, transport)
        conn.connection_lost(None)
        trap.check()


def _check(app: StubApp, conn: ClientConnection, transport: FakeTransport) -> None:
    errors = [d for tag, d in transport.writes if tag == "conn"]
    for d in errors:
        m = _STATUS.match(d)
        # Its own answers: 4xx for a bad request, 502 for CONNECT (as Pushpin answers it).
        ok = m is not None and (m.group(1)[:1] == b"4" or m.group(1) == b"502")
        assert ok, f"listener wrote {d[:60]!r}"
    limit = app.config.client_buffer_size
    for req in app.dispatched:
        size = len(req.url) + sum(len(k) + len(v) + 4 for k, v in req.headers)
        assert size <= limit, f"dispatched a {size}-byte head over client_buffer_size"
        assert isinstance(req.method, str) and isinstance(req.url, str)
    if transport.aborted:
        raw = sum(len(b) for b in conn._raw_buf or [])
        assert conn._upgraded and raw > RAW_EARLY_MAX, "aborted without a reason"
    if transport.closed or transport.eof:
        # A close with no 4xx is allowed when a response was in progress: a status line then
        # would be read as part of it (the listener logs and closes instead).
        assert errors or app.closed_by_app or app.dispatched, "closed without a 4xx"

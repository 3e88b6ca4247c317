"""The client-facing HTTP/1.1 listener: one ``asyncio.Protocol`` per connection, on httptools.

A connection parses requests and hands each one to a *request handler* (a proxy session, a hold,
the test target) through the small ``RequestHandler`` interface. It owns the socket writes:

- ``write()`` goes straight to the transport (pass-through, where backpressure matters);
- ``queue()`` coalesces writes per loop tick through the ``Flusher`` (fan-out: one syscall per
  connection per tick, whatever the number of messages, DESIGN "hot paths").

An idle held connection costs this object, its parser and its hold: no task, no future (DESIGN).
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import httptools

from gripd.core.headers import Headers
from gripd.core.http import HttpResponse, encode_full, text_response

if TYPE_CHECKING:
    from gripd.core.jsonp import JsonpRequest
    from gripd.runtime.app import App

log = logging.getLogger("gripd.client")


class RequestHandler(Protocol):
    """What a connection drives while one request is active."""

    def on_client_body(self, data: bytes) -> None: ...
    def on_client_body_end(self) -> None: ...
    def on_client_closed(self) -> None: ...
    def on_client_pause_writing(self) -> None: ...
    def on_client_resume_writing(self) -> None: ...


class Request:
    """One parsed client request head, plus its body until a handler takes it."""

    __slots__ = (
        "body_chunks",
        "body_done",
        "body_size",
        "headers",
        "http_version",
        "jsonp",
        "keep_alive",
        "method",
        "upgrade",
        "url",
    )

    def __init__(
        self, method: str, url: str, headers: Headers, http_version: str, keep_alive: bool
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.upgrade = False
        self.jsonp: JsonpRequest | None = None  # F46: set when JSON-P rewrote this request
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.body_done = False


class Flusher:
    """Coalesces queued writes of many connections into one flush per loop tick."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[ClientConnection] = []
        self._scheduled = False

    def mark(self, conn: ClientConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


# Bytes a client may send after an upgrade request before the origin has answered it.
RAW_EARLY_MAX = 1 << 20


class ClientConnection(asyncio.Protocol):
    """One client TCP connection speaking HTTP/1.1."""

    __slots__ = (
        "_after_flush",
        "_cur",
        "_head_size",
        "_hheaders",
        "_parser",
        "_pending",
        "_pending_size",
        "_raw_buf",
        "_reading_paused",
        "_requests",
        "_upgraded",
        "_url_parts",
        "_writing_paused",
        "app",
        "closed",
        "handler",
        "id",
        "peer",
        "raw_sink",
        "transport",
    )

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.id = app.next_conn_id()
        self.handler: RequestHandler | None = None
        self.closed = False
        self._cur: Request | None = None
        self._requests: list[Request] = []  # pipelined requests waiting for their turn
        self._head_size = 0
        self._url_parts: list[bytes] = []
        self._hheaders: Headers = []
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._after_flush: Callable[[], None] | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._upgraded = False
        self._raw_buf: list[bytes] | None = None  # allocated only after an upgrade
        self.raw_sink: Callable[[bytes], None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = typing.cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        transport.set_write_buffer_limits(high=self.app.write_high_water)
        if len(self.app.connections) >= self.app.config.client_maxconn:
            # F3 client_maxconn: over the limit a new connection is closed at once.
            self.closed = True
            self.app.refused_connection(self.peer)
            transport.abort()
            return
        self.app.connections.add(self)
        self.app.events.connection_opened(self.id, self.peer, "http")

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self.app.connections:
            self.closed = True
            return  # refused in connection_made
        self.closed = True
        self.app.connections.discard(self)
        self.app.events.connection_closed(self.id)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_client_closed()
        self._requests.clear()
        self._pending = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.handler is not None:
            self.handler.on_client_pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.handler is not None:
            self.handler.on_client_resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            self._raw(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # Bytes after the upgrade request belong to the new protocol (WebSocket frames).
            self._upgraded = True
            if self._cur is not None:
                self._cur.upgrade = True
            rest = data[e.args[0] :] if e.args else b""
            if rest:
                self._raw(rest)
        except httptools.HttpParserCallbackError as e:
            # httptools wraps whatever a callback raised; the original is the context.
            if isinstance(e.__context__, _HeadTooLarge):
                self.send_error_and_close(text_response(431, "Request header fields too large.\n"))
            else:
                log.error("conn %s: internal error", self.id, exc_info=e.__context__)
                if self.handler is None:
                    self.send_error_and_close(text_response(500, "Internal Server Error\n"))
                else:
                    self.abort()
        except httptools.HttpParserError:
            self.send_error_and_close(text_response(400, "Bad Request\n"))

    def _raw(self, data: bytes) -> None:
        sink = self.raw_sink
        if sink is not None:
            sink(data)
            return
        # Not taken yet (the origin handshake is in flight): keep, within a bound.
        if self._raw_buf is None:
            self._raw_buf = []
        self._raw_buf.append(data)
        if sum(len(b) for b in self._raw_buf) > RAW_EARLY_MAX:
            self.abort()

    def take_raw(self, sink: Callable[[bytes], None]) -> None:
        """Hand every further byte of this connection to ``sink`` (after a protocol switch)."""
        self.raw_sink = sink
        early, self._raw_buf = self._raw_buf or [], None
        for chunk in early:
            sink(chunk)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_size = 0
        self._url_parts = []
        self._hheaders = []

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.app.config.client_buffer_size:
            raise _HeadTooLarge
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.app.config.client_buffer_size:
            raise _HeadTooLarge
        self._hheaders.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        p = self._parser
        req = Request(
            p.get_method().decode("latin-1"),
            b"".join(self._url_parts).decode("latin-1"),
            self._hheaders,
            p.get_http_version(),
            p.should_keep_alive(),
        )
        if p.should_upgrade():
            req.upgrade = True
        self.app.events.request_received()
        if self._cur is None and self.handler is None:
            self._cur = req
            self.app.handle_request(self, req)
        else:
            self._requests.append(req)

    def on_body(self, body: bytes) -> None:
        req = self._tail_request()
        if req is None:
            return
        if req is self._cur and self.handler is not None:
            self.handler.on_client_body(body)
        else:
            req.body_chunks.append(body)
            req.body_size += len(body)

    def on_message_complete(self) -> None:
        req = self._tail_request()
        if req is None:
            return
        req.body_done = True
        if req is self._cur and self.handler is not None:
            self.handler.on_client_body_end()

    def _tail_request(self) -> Request | None:
        return self._requests[-1] if self._requests else self._cur

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write now (pass-through and single responses)."""
        if self.transport is not None and not self.closed:
            if self._pending:
                self.flush()
            self.transport.write(data)

    def queue(self, data: bytes) -> None:
        """Write at the end of this loop tick, coalesced with other queued data (fan-out)."""
        if self.closed:
            return
        if self._pending is None:
            self._pending = [data]
            self._pending_size = len(data)
            self.app.flusher.mark(self)
        else:
            self._pending.append(data)
            self._pending_size += len(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and self.transport is not None and not self.closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self._pending_size = 0
        after, self._after_flush = self._after_flush, None
        if after is not None:
            after()

    def buffered(self) -> int:
        """Bytes accepted for this client but not yet taken by the kernel."""
        t = self.transport
        return self._pending_size + (t.get_write_buffer_size() if t is not None else 0)

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    def set_handler(self, handler: RequestHandler | None) -> None:
        self.handler = handler

    def finish_response(self, keep_alive: bool = True) -> None:
        """The current request's response is complete: go on with the next request or close."""
        if self._pending:
            self._after_flush = lambda: self._finish(keep_alive)
            return
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self.handler = None
        req = self._cur
        self._cur = None
        if self.closed or self.transport is None:
            return
        if req is None or not keep_alive or not req.keep_alive or req.upgrade:
            self.close()
            return
        if not req.body_done:
            # The response finished before the request body did: drain the rest, then go on.
            self._cur = req
            self.handler = _BodyDrain(self, req)
            return
        if self._requests:
            nxt = self._requests.pop(0)
            self._cur = nxt
            self.app.handle_request(self, nxt)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            if self._pending:
                self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def send_response(
        self, resp: HttpResponse, method: str = "GET", keep_alive: bool = True
    ) -> None:
        """Send a whole response for the current request and finish it."""
        req = self._cur
        ka = keep_alive and (req.keep_alive if req is not None else False)
        http10 = req is not None and req.http_version == "1.0"
        self.write(encode_full(resp, method=method, keep_alive=ka, http10=http10))
        self.finish_response(ka)

    def send_error_and_close(self, resp: HttpResponse) -> None:
        if self.transport is not None and not self.closed:
            self.write(encode_full(resp, keep_alive=False))
            self.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()


class _HeadTooLarge(Exception):
    """Raised from a parser callback when the request head passes client_buffer_size (F3)."""


class _BodyDrain:
    """Reads and discards the rest of a request body after its response was sent."""

    __slots__ = ("conn", "req")

    def __init__(self, conn: ClientConnection, req: Request) -> None:
        self.conn = conn
        self.req = req

    def on_client_body(self, data: bytes) -> None:
        pass

    def on_client_body_end(self) -> None:
        self.conn.finish_response(True)

    def on_client_closed(self) -> None:
        pass

    def on_client_pause_writing(self) -> None:
        pass

    def on_client_resume_writing(self) -> None:
        pass

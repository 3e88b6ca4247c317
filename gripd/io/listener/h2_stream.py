"""One HTTP/2 request stream, as the request handlers see it: :class:`H2Stream`.

A stream offers the request handlers (proxy sessions, holds, the test target) the same interface
as an HTTP/1.1 :class:`~gripd.io.listener.client.ClientConnection`: they write HTTP/1.1 response
bytes (a head, then a sized or chunked body) and the stream turns them into one HEADERS frame and
DATA frames, reading them with httptools' C response parser. So every GRIP feature works per
stream with no change to the handlers: pass-through, response and stream holds, keep-alives,
next links, CORS and JSON-P. The cost is one parser pass over the bytes a stream is sent.

Kept apart from the connection (:class:`~gripd.io.listener.h2.H2Connection`), which reads the
frames, opens or refuses streams and keeps the bounds; a stream keeps its own flow-control queue
and acknowledges its request body (RFC 9113 5.2).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.errors
import h2.exceptions
import httptools

from gripd.core.http import HttpResponse, encode_full
from gripd.io.observe.events import requests_observed

if TYPE_CHECKING:
    from gripd.io.listener.h2 import H2Connection
    from gripd.io.listener.request import Request, RequestHandler

__all__ = ["H2Stream"]

log = logging.getLogger("gripd.client")

# Response header fields HTTP/2 forbids (RFC 9113 8.2.2); the handlers write HTTP/1.1 heads.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class H2Stream:
    """One request on an HTTP/2 connection, with the interface of an HTTP/1.1 client
    connection (see the module docstring)."""

    __slots__ = (
        "_end",
        "_headers",
        "_parser",
        "_pieces",
        "_read_paused",
        "_state",
        "_unacked",
        "_wpaused",
        "closed",
        "conn",
        "handler",
        "head_sent",
        "id",
        "out",
        "out_size",
        "peer",
        "req",
        "response_done",
        "sid",
    )

    raw_sink: Callable[[bytes], None] | None = None  # never upgraded

    def __init__(self, conn: H2Connection, sid: int, req: Request) -> None:
        self.conn = conn
        self.sid = sid
        self.req = req
        self.id = conn.app.next_conn_id()
        self.peer = conn.peer
        self.handler: RequestHandler | None = None
        self.closed = False  # the stream is over (response done, reset, or connection lost)
        self.response_done = False
        self.head_sent = False
        self.out: deque[bytes] = deque()  # DATA waiting for flow-control window
        self.out_size = 0
        self._end = False  # the response body is complete: END_STREAM after ``out``
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._pieces: list[bytes] = []
        self._wpaused = False
        self._read_paused = False
        self._unacked = 0
        self._state = conn.h2.streams[sid]  # h2's stream: its outbound window (emit_data)

    # -- from the connection --------------------------------------------------------------------

    def body(self, data: bytes, flow: int) -> None:
        req = self.req
        if self.handler is not None:
            self.handler.on_client_body(data)
        elif not self.response_done:
            req.body_chunks.append(data)
            req.body_size += len(data)
        if (self.handler is not None and not self._read_paused) or self.response_done:
            self.conn._ack(flow, self.sid)
        else:
            self._unacked += flow  # the window stays shut until a handler takes the body

    def body_end(self) -> None:
        self.req.body_done = True
        if self.handler is not None:
            self.handler.on_client_body_end()

    def lost(self) -> None:
        """The client reset the stream, or the connection is gone."""
        if self.closed:
            return
        self.closed = True
        self._set_backed_up(False)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_client_closed()
        self._request_gone()

    def _request_gone(self) -> None:
        """The stream ended before its response did: its request's stats connection ends with
        it (F43), as a closed HTTP/1.1 connection's does. Nothing happens if the request's
        end was already counted (a handler that saw the close counts it itself)."""
        app = self.conn.app
        if requests_observed(app.config):
            app.events.request_ended(self.id)

    def conn_paused(self) -> None:
        if not self._wpaused:
            self._wpaused = True
            self._set_backed_up(True)
            if self.handler is not None:
                self.handler.on_client_pause_writing()

    def conn_resumed(self) -> None:
        if self._wpaused and self.out_size <= self.conn.app.write_high_water:
            self._wpaused = False
            self._set_backed_up(False)
            if self.handler is not None:
                self.handler.on_client_resume_writing()

    def _set_backed_up(self, on: bool) -> None:
        b = self.conn.app.flusher.backed_up
        if on:
            b.setdefault(self, self.conn.app.loop.time())
        else:
            b.pop(self, None)

    # -- httptools response-parser callbacks -----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        if code < 200:
            self._headers = []  # an interim response is not relayed
            return
        hs = [(b":status", str(code).encode())]
        hs += [(k, v) for k, v in self._headers if k not in _CONNECTION_SPECIFIC]
        self._headers = []
        self.head_sent = True
        try:
            self.conn.h2.send_headers(self.sid, hs)
        except (h2.exceptions.ProtocolError, ValueError) as e:
            log.info("conn %s: response head not sendable over HTTP/2 (%s)", self.id, e)
            self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)

    def on_message_complete(self) -> None:
        if self.head_sent:
            self._end = True

    # -- the interface the handlers use ---------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.conn.transport

    @property
    def writing_paused(self) -> bool:
        return self._wpaused

    def write(self, data: bytes) -> None:
        """Response bytes as HTTP/1.1 would send them; sent at the end of this loop tick."""
        if self.closed or self.response_done:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            log.error("conn %s: response bytes not HTTP/1.1 (%s); stream reset", self.id, e)
            self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        pieces = self._pieces
        if pieces:
            self._pieces = []
            chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if not self.out and not self._end:
                # The fan-out case: nothing waits and the windows allow it: one frame, now.
                conn = self.conn
                h = conn.h2
                st = self._state
                n = len(chunk)
                if (
                    n <= h.max_outbound_frame_size
                    and n <= h.outbound_flow_control_window
                    and n <= st.outbound_flow_control_window
                ):
                    conn.emit_data(self.sid, chunk, st)
                    conn.mark()
                    return
            self.out.append(chunk)
            self.out_size += len(chunk)
        self.push()

    queue = write  # fan-out: frames are coalesced per tick by the connection either way

    def push(self) -> None:
        """Send what the flow-control windows allow; END_STREAM once all is sent."""
        if self.closed:
            return
        conn = self.conn
        h = conn.h2
        out = self.out
        sid = self.sid
        st = self._state
        try:
            while out:
                window = min(h.outbound_flow_control_window, st.outbound_flow_control_window)
                if window <= 0:
                    break
                chunk = out[0]
                n = min(window, h.max_outbound_frame_size, len(chunk))
                if n == len(chunk):
                    out.popleft()
                    self.out_size -= n
                    if self._end and not out:
                        h.send_data(sid, chunk, end_stream=True)
                        self._complete()
                    else:
                        conn.emit_data(sid, chunk, st)
                else:
                    out[0] = chunk[n:]
                    self.out_size -= n
                    conn.emit_data(sid, chunk[:n], st)
            else:
                if self._end and not self.response_done:
                    h.end_stream(sid)
                    self._complete()
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as e:
            log.debug("conn %s: stream %d write failed (%s)", self.id, sid, e)
            self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        conn.mark()
        if out and not self.response_done:
            conn.blocked[sid] = self
        else:
            conn.blocked.pop(sid, None)
        high = conn.app.write_high_water
        if self.out_size > high and not self._wpaused:
            self.conn_paused()
        elif self._wpaused and self.out_size <= high and not conn.transport_paused:
            self.conn_resumed()

    def _complete(self) -> None:
        """END_STREAM was sent: the response is over."""
        self.response_done = True
        if not self.req.body_done:
            # RFC 9113 8.1: the rest of the request body is not wanted.
            try:
                self.conn.h2.reset_stream(self.sid, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
        self._finish_stream()

    def _finish_stream(self) -> None:
        self.closed = True
        self._set_backed_up(False)
        self.conn.stream_done(self)
        if self._unacked:
            n, self._unacked = self._unacked, 0
            self.conn._ack(n, self.sid)

    def _reset(self, code: int) -> None:
        if self.closed:
            return
        self.response_done = True
        try:
            self.conn.h2.reset_stream(self.sid, code)
        except h2.exceptions.ProtocolError:
            pass
        self.conn.mark()
        self.out.clear()
        self.out_size = 0
        handler, self.handler = self.handler, None
        self._finish_stream()
        if handler is not None:
            handler.on_client_closed()
        self._request_gone()

    def flush(self) -> None:
        self.conn.flush()

    def buffered(self) -> int:
        """Bytes accepted for this stream but not yet taken by the kernel: the stream's own
        flow-control queue plus its connection's socket buffer."""
        t = self.conn.transport
        return self.out_size + (t.get_write_buffer_size() if t is not None else 0)

    def set_handler(self, handler: RequestHandler | None) -> None:
        self.handler = handler
        if handler is not None and self._unacked and not self._read_paused:
            n, self._unacked = self._unacked, 0
            self.conn._ack(n, self.sid)

    def hold_started(self) -> None:
        pass  # a stream has no timer of its own

    def finish_response(self, keep_alive: bool = True) -> None:
        """The handler is done: END_STREAM once the queued body is sent (or a reset if the
        response was cut short, as HTTP/1.1 would close)."""
        self.handler = None
        if self.closed or self.response_done:
            return
        if not self.head_sent:
            self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if self._end or self._framed_by_close():
            self._end = True
            self.push()
        else:
            self._reset(h2.errors.ErrorCodes.CANCEL)

    def _framed_by_close(self) -> bool:
        """Whether the response body runs until the connection closes (no length, not
        chunked), so that its end is complete, not cut short; and a HEAD response."""
        if self.req.method == "HEAD":
            return True
        p = self._parser
        try:
            return not p.should_keep_alive()
        except Exception:
            return False

    def close(self) -> None:
        """HTTP/1.1 would close the connection: the stream ends (or is reset if cut short)."""
        self.finish_response(False)

    def abort(self) -> None:
        handler, self.handler = self.handler, None
        self._reset(h2.errors.ErrorCodes.CANCEL)
        if handler is not None:
            handler.on_client_closed()

    def send_response(
        self, resp: HttpResponse, method: str = "GET", keep_alive: bool = True
    ) -> None:
        self.write(encode_full(resp, method=method))
        if method == "HEAD" and not self.response_done:
            self._end = True
            self.push()
        self.finish_response()

    def send_error_and_close(self, resp: HttpResponse) -> None:
        self.send_response(resp, self.req.method)

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        if self.handler is not None and self._unacked:
            n, self._unacked = self._unacked, 0
            self.conn._ack(n, self.sid)

    def take_raw(self, sink: Callable[[bytes], None]) -> None:
        raise RuntimeError("an HTTP/2 stream is never upgraded")

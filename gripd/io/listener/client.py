"""The client-facing HTTP/1.1 listener: one ``asyncio.Protocol`` per connection, on httptools.

A connection parses requests and hands each one (a ``Request``) to a *request handler* (a proxy
session, a hold, the test target) through the small ``RequestHandler`` interface (both in
:mod:`gripd.io.listener.request`). It owns the socket writes, through its base class
:class:`~gripd.io.listener.client_writes.ClientWrites`: direct ones (pass-through), and ones
coalesced per loop tick (fan-out).

An idle held connection costs this object, its parser and its hold: no task, no future (DESIGN).

Bounds on what a client may make gripd hold (``[gripd]`` settings):

- ``client_header_timeout``: a request head must be complete this long after the connection was
  accepted (first request) or after its first byte arrived (later requests), else ``408`` and a
  close. The clock does not run while an earlier request on the connection is still being
  answered: a head that starts behind it gets a fresh timeout once that answer is done. A request
  body that the client stops sending after its response was complete is timed out the same way
  (closed, no answer).
- ``client_idle_timeout``: a keep-alive connection with no request in progress is closed
  silently this long after its last response. A connection with a request in flight, a held
  response or stream, or a WebSocket is not idle.
- ``client_pipeline_max`` / ``client_pipeline_bytes_max``: pipelined requests queued behind the
  one being answered (heads and bodies). At either cap the connection stops being read until the
  queue drains; with nothing queued it is always read, so a client's close is noticed. Bytes are
  parsed in ``PIPE_SLICE`` pieces while they would be queued, so the caps hold to within a slice.
- ``client_buffer_size`` (F3): the request head, counted in the parser callbacks (whole lines),
  and also as raw bytes fed while the head is unfinished, since httptools keeps a line that
  never ends (a header value, say) in its own memory and calls nothing back. Past either,
  ``431`` and a close. The raw count allows ``HEAD_RAW_SLACK`` for the request line and line
  ends the callbacks do not see. The piece (one read, or a ``PIPE_SLICE``) a head begins in is
  not counted, as the head's share of it is not known: an unfinished head may hold one read more.

All of it costs one ``loop.call_at`` timer handle per connection at most, and no task.

After a complete request that asks for a close (``Connection: close``, HTTP/1.0 without
keep-alive), or once the connection began closing, nothing more is parsed: later bytes are
dropped, never answered or dispatched (RFC 9112 9.6).
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from gripd.core.headers import Headers
from gripd.core.http import HttpResponse, encode_full, text_response
from gripd.core.requestcheck import check_request
from gripd.io.listener import h2 as _h2
from gripd.io.listener.client_writes import ClientWrites
from gripd.io.listener.request import Request, RequestHandler, log_refused

if TYPE_CHECKING:
    from gripd.io.context import ClientHost

log = logging.getLogger("gripd.client")

# Bytes a client may send after an upgrade request before the origin has answered it.
RAW_EARLY_MAX = 1 << 20

# Bytes parsed at a time while they would be queued behind the request being answered, so that
# reading stops within this much of the pipeline caps (one socket read can be 256 KiB).
PIPE_SLICE = 1024

# Raw bytes an unfinished request head may take beyond ``client_buffer_size``: the request line
# and line ends, which the callback count does not include.
HEAD_RAW_SLACK = 1024

# What the connection's one timer is for.
_T_NONE = 0
_T_HEAD = 1  # client_header_timeout: a request head in progress (or none yet after accept)
_T_IDLE = 2  # client_idle_timeout: keep-alive, no request in progress
_T_DRAIN = 3  # client_header_timeout: the rest of a body after its response was sent
_T_LINGER = 4  # LINGER_MAX: input read and dropped after an error answer, before the close

# RFC 9112 9.6: after an error answer, the connection's write side is shut and what the client
# still sends is read and dropped, for at most this long (or until it closes), before closing.
# Closing with unread input resets the connection, and a client still sending (a slow head, a
# body over a limit) may then lose the answer. A client that sends more than LINGER_BYTES_MAX
# meanwhile is closed at once: the linger is for an answer's sake, not a free sink.
LINGER_MAX = 2.0
LINGER_BYTES_MAX = 64 * 1024


class ClientConnection(ClientWrites):
    """One client TCP connection speaking HTTP/1.1."""

    __slots__ = (
        "_cur",
        "_deadline",
        "_feeding",
        "_head_fresh",
        "_head_raw",
        "_head_size",
        "_hheaders",
        "_in_head",
        "_linger_left",
        "_park_asked",
        "_parser",
        "_pipe_paused",
        "_queued_bytes",
        "_raw_buf",
        "_reading_paused",
        "_requests",
        "_stopped",
        "_timer",
        "_timer_kind",
        "_tpaused",
        "_unparsed",
        "_upgraded",
        "_url_parts",
        "app",
        "closed",
        "handler",
        "id",
        "peer",
        "raw_sink",
        "tls",
        "transport",
    )

    def __init__(self, app: ClientHost) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        # The parser holds this connection's callbacks: a cycle, broken in connection_lost so
        # that a closed connection is freed at once (a cycle waits for the garbage collector,
        # whose full collections take longer the more connections are held). None once closed,
        # upgraded or handed to HTTP/2, and while parked by a hold (``_park``): open and not
        # upgraded, it is made anew on the next read.
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._park_asked = False  # a hold began inside a parser callback: park after the read
        self.peer = ""
        self.tls = False  # set in connection_made: the transport is TLS (https_ports)
        self.id = app.next_conn_id()
        self.handler: RequestHandler | None = None
        self.closed = False
        self._cur: Request | None = None
        self._requests: list[Request] = []  # pipelined requests waiting for their turn
        self._head_size = 0
        self._head_raw = 0  # raw bytes of the unfinished head, in pieces after its first
        self._head_fresh = False  # the unfinished head began in the piece being parsed
        self._url_parts: list[bytes] = []
        self._hheaders: Headers = []
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._after_flush: Callable[[], None] | None = None
        self._writing_paused = False
        self._reading_paused = False  # a handler or the app asked (backpressure, F4)
        self._pipe_paused = False  # the pipeline queue is at a cap
        self._tpaused = False  # the transport is paused (either of the above)
        self._queued_bytes = 0  # heads and bodies of the requests in _requests
        self._unparsed: bytes | None = None  # read but not parsed when the pipeline filled
        self._feeding = False
        self._in_head = False  # a request head has begun and is not complete
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = _T_NONE
        self._deadline = 0.0  # loop time the current _timer_kind expires
        self._upgraded = False
        self._stopped = False  # no further request is parsed (a close is decided, RFC 9112 9.6)
        self._linger_left = 0  # bytes still read and dropped while lingering (send_error_and_close)
        self._raw_buf: list[bytes] | None = None  # allocated only after an upgrade
        self.raw_sink: Callable[[bytes], None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = typing.cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        peer = transport.get_extra_info("peername")
        # A tuple for TCP; for a Unix socket (local_ports) a path or "" and no address, as
        # Pushpin reports none for such a client.
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        ssl_obj = transport.get_extra_info("ssl_object")
        self.tls = ssl_obj is not None
        transport.set_write_buffer_limits(high=self.app.write_high_water)
        if not self.app.admit_connection(self):
            # F3 client_maxconn: over the limit a new connection is closed at once.
            self.closed = True
            self.app.refused_connection(self.peer)
            transport.abort()
            return
        if self.app.refuse_for_fds(transport, self.peer):
            # fd_reserve: the descriptor table is nearly full; the rest serves publishing.
            self.closed = True
            self.app.drop_connection(self)
            transport.abort()
            return
        if ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2":
            self._to_h2(transport)
            return
        self.app.events.connection_opened(self.id, self.peer, "http")
        self._arm(_T_HEAD, self.app.config.client_header_timeout)  # counted from accept

    def _to_h2(self, transport: asyncio.Transport) -> None:
        """ALPN chose HTTP/2: an :class:`~gripd.io.listener.h2.H2Connection` takes the
        transport (and this connection's place in the admission count)."""
        conn = _h2.H2Connection(self.app, transport, self.id, self.peer)
        self.closed = True  # this object gets no more events: the transport is conn's
        self._parser = None
        conns = self.app.connections
        conns.discard(self)
        conns.add(conn)
        transport.set_protocol(conn)
        conn.start()

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self.app.connections:
            self.closed = True
            self._parser = None
            return  # refused in connection_made
        self.closed = True
        self._cancel_timer()
        if self._writing_paused:
            self.app.flusher.backed_up.pop(self, None)
        self.app.drop_connection(self)
        self.app.events.connection_closed(self.id)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_client_closed()
        self._requests.clear()
        self._pending = None
        self._unparsed = None
        self._parser = None
        self.raw_sink = None  # an upgraded connection's reader (its WebSocket endpoint)
        self._raw_buf = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self.app.flusher.backed_up.setdefault(self, self.app.loop.time())
        if self.handler is not None:
            self.handler.on_client_pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.app.flusher.backed_up.pop(self, None)
        if self.handler is not None:
            self.handler.on_client_resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            self._raw(data)
            return
        if self._stopped:
            # RFC 9112 9.6: nothing after a "close" request is processed; while lingering
            # after an error answer (send_error_and_close), up to a bound.
            if self._linger_left > 0:
                self._linger_left -= len(data)
                if self._linger_left <= 0:
                    self.close()
            return
        if self._unparsed is not None:  # keep the order if bytes come while some wait
            data, self._unparsed = self._unparsed + data, None
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse ``data``: whole while it is the body of the request being answered (or fits in
        one slice), else in ``PIPE_SLICE`` pieces, stopping when the pipeline queue is full."""
        if self._parser is None and not self.closed and not self._upgraded:
            # Parked at a message boundary (``_park``): a new parser is in the same state.
            self._parser = httptools.HttpRequestParser(self)
        self._feeding = True
        try:
            cur = self._cur
            if len(data) <= PIPE_SLICE or (
                cur is not None and not cur.body_done and not self._requests
            ):
                self._parse(data)  # the common case: one small read, or a streamed body
                return
            view = memoryview(data)
            pos, end = 0, len(data)
            while pos < end:
                if self._pipe_paused:
                    self._unparsed = bytes(view[pos:])
                    return
                if self._upgraded:
                    self._raw(bytes(view[pos:]))
                    return
                t = self.transport
                if self.closed or t is None or t.is_closing():
                    return
                cur = self._cur
                if (cur is not None and not cur.body_done and not self._requests) or (
                    end - pos <= PIPE_SLICE
                ):
                    stop = end
                else:
                    stop = pos + PIPE_SLICE
                if not self._parse(view[pos:stop] if pos or stop < end else data):
                    if self._upgraded and stop < end:
                        self._raw(bytes(view[stop:]))
                    return
                pos = stop
        finally:
            self._feeding = False
            if self._park_asked:
                self._park()
            if self._in_head and self._timer_kind == _T_NONE and not self._busy():
                # A later request's head began: it has client_header_timeout from now.
                self._arm(_T_HEAD, self.app.config.client_header_timeout)

    def _parse(self, data: bytes | memoryview) -> bool:
        """Feed one piece to the parser; False when nothing more should be parsed."""
        p = self._parser
        if p is None:
            return False  # closed
        try:
            p.feed_data(data)
            if self._in_head:
                # F3: a line httptools keeps unfinished is reported by no callback, so the raw
                # bytes of an unfinished head are counted too: every piece after the one it
                # began in is all head (its share of that first piece is not known).
                if self._head_fresh:
                    self._head_fresh = False
                    return True
                self._head_raw += len(data)
                if self._head_raw > self.app.config.client_buffer_size + HEAD_RAW_SLACK:
                    t = self.transport
                    if t is not None and not t.is_closing():  # not after a close began
                        self._bad_request(
                            431, "Request header fields too large.\n", "unfinished head too large"
                        )
                    return False
            return True
        except httptools.HttpParserUpgrade as e:
            # Bytes after the upgrade request belong to the new protocol (WebSocket frames);
            # the connection is upgraded or closed, so the parser is done with.
            self._upgraded = True
            self._in_head = False
            self._parser = None
            tail = self._tail_request()
            if tail is not None:
                tail.upgrade = True
            rest = bytes(data[e.args[0] :]) if e.args else b""
            if rest:
                self._raw(rest)
        except httptools.HttpParserCallbackError as e:
            # httptools wraps whatever a callback raised; the original is the context.
            if isinstance(e.__context__, _Stop):
                pass  # a close is decided: the rest of the piece is dropped
            elif isinstance(e.__context__, _HeadTooLarge):
                self._bad_request(431, "Request header fields too large.\n", "head too large")
            else:
                log.error("conn %s: internal error", self.id, exc_info=e.__context__)
                if self._busy():
                    self.abort()
                else:
                    self.send_error_and_close(text_response(500, "Internal Server Error\n"))
        except httptools.HttpParserError as e:
            if self._close_decided():
                # llhttp refuses bytes after a complete "close" request: RFC 9112 9.6, they
                # are dropped, and the answer to that request still goes out.
                self._stopped = True
                log.debug(
                    "conn %s: bytes after a close request dropped; peer %s", self.id, self.peer
                )
            else:
                self._bad_request(400, "Bad Request\n", str(e) or type(e).__name__)
        return False

    def _close_decided(self) -> bool:
        """Whether the last request read is complete and asked for the connection to close."""
        tail = self._requests[-1] if self._requests else self._cur
        return tail is not None and tail.body_done and not tail.keep_alive

    def _busy(self) -> bool:
        """Whether a request on this connection is being answered (in flight, held, a
        WebSocket, or its body still being read after its response)."""
        return self._cur is not None or self.handler is not None

    def _bad_request(self, code: int, body: str, why: str) -> None:
        """Unparseable bytes. With a response in progress (or owed) a status line now would be
        taken as part of it (or as its answer), so the connection is closed instead. Bytes read
        after a close began are not answered at all."""
        if self._closing():
            self._stopped = True
            return
        if self._busy():
            log.info(
                "conn %s: bad request bytes while a response is in progress (%s), closing; peer %s",
                self.id,
                why,
                self.peer,
            )
            self.close()
            return
        log.debug("conn %s: bad request (%s), %d; peer %s", self.id, why, code, self.peer)
        self.send_error_and_close(text_response(code, body))

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
        if self._close_decided() or self._closing():
            # RFC 9112 9.6: after a "close" request (or once the connection began closing) no
            # further request is read; the bytes are dropped.
            self._stopped = True
            raise _Stop
        self._head_size = 0
        self._head_raw = 0
        self._head_fresh = True
        self._url_parts = []
        self._hheaders = []
        self._in_head = True
        if self._timer_kind == _T_IDLE:
            self._disarm()  # not idle any more; _feed arms the head timeout

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
        assert p is not None  # a parser callback
        req = Request(
            p.get_method().decode("latin-1"),
            b"".join(self._url_parts).decode("latin-1"),
            self._hheaders,
            p.get_http_version(),
            p.should_keep_alive(),
        )
        if p.should_upgrade():
            req.upgrade = True
        req.head_size = self._head_size
        req.tls = self.tls
        req.reject = check_request(req.method, req.headers)
        self._in_head = False
        if self._timer_kind == _T_HEAD:
            self._disarm()
        self.app.events.request_received()
        if self._cur is None and self.handler is None:
            self._cur = req
            self._start(req)
        else:
            self._requests.append(req)
            self._queued_bytes += req.head_size
            self._check_pipe()

    def _start(self, req: Request) -> None:
        """Hand the current request to the app, or answer it here when core rejected it."""
        rej = req.reject
        if rej is None:
            self.app.handle_request(self, req)
            return
        log_refused(self.id, req.method, req.url, rej, self.peer)
        self.send_response(rej.response, req.method, keep_alive=not rej.close)

    def on_body(self, body: bytes) -> None:
        req = self._tail_request()
        if req is None:
            return
        if req is self._cur and self.handler is not None:
            self.handler.on_client_body(body)
        else:
            req.body_chunks.append(body)
            req.body_size += len(body)
            if req is not self._cur:
                self._queued_bytes += len(body)
                self._check_pipe()

    def on_message_complete(self) -> None:
        req = self._tail_request()
        if req is None:
            return
        req.body_done = True
        if req is self._cur and self.handler is not None:
            self.handler.on_client_body_end()

    def _tail_request(self) -> Request | None:
        return self._requests[-1] if self._requests else self._cur

    # -- pipeline bounds ---------------------------------------------------------------------

    def _pipe_full(self) -> bool:
        if not self._requests:
            return False
        cfg = self.app.config
        return (
            len(self._requests) >= max(cfg.client_pipeline_max, 1)
            or self._queued_bytes >= cfg.client_pipeline_bytes_max
        )

    def _check_pipe(self) -> None:
        if not self._pipe_paused and self._pipe_full():
            log.debug(
                "conn %s: %d pipelined request(s), %d bytes queued: reading paused; peer %s",
                self.id,
                len(self._requests),
                self._queued_bytes,
                self.peer,
            )
            self._pipe_paused = True
            self._apply_reading()

    def _pipe_drained(self) -> None:
        """A queued request was taken: read again once under the caps."""
        self._queued_bytes = sum(r.head_size + r.body_size for r in self._requests)
        if not self._pipe_paused or self._pipe_full():
            return
        self._pipe_paused = False
        if self._unparsed is not None and not self._feeding:
            # Not from inside a parser callback: parse what waits on the next turn.
            self.app.loop.call_soon(self._resume_pipe)
        else:
            self._apply_reading()

    def _resume_pipe(self) -> None:
        data, self._unparsed = self._unparsed, None
        if data and not self.closed and not self._pipe_paused:
            self._feed(data)
        elif data:
            self._unparsed = data
        self._apply_reading()

    def _apply_reading(self) -> None:
        want = self._reading_paused or self._pipe_paused
        t = self.transport
        if want == self._tpaused or t is None or self.closed:
            return
        self._tpaused = want
        if want:
            t.pause_reading()
        else:
            t.resume_reading()

    # -- timeouts ----------------------------------------------------------------------------

    # The one timer is moved lazily: arming for a later deadline leaves a scheduled handle in
    # place (it re-arms itself when it fires early), and disarming only clears the kind (the
    # handle then fires once and is dropped). So a keep-alive request costs no timer call;
    # a timer call is made when a deadline moves earlier, or once per timeout period.

    def _arm(self, kind: int, delay: float) -> None:
        """Set the connection's deadline; ``delay <= 0`` means that timeout is off."""
        if delay <= 0 or self.closed:
            self._timer_kind = _T_NONE
            return
        loop = self.app.loop
        deadline = loop.time() + delay
        self._timer_kind = kind
        self._deadline = deadline
        t = self._timer
        if t is not None:
            if t.when() <= deadline:
                return  # fires first; _on_timer moves it on
            t.cancel()
        self._timer = loop.call_at(deadline, self._on_timer)

    def _disarm(self) -> None:
        self._timer_kind = _T_NONE

    def _cancel_timer(self) -> None:
        t = self._timer
        if t is not None:
            t.cancel()
            self._timer = None
        self._timer_kind = _T_NONE

    def _on_timer(self) -> None:
        self._timer = None
        kind = self._timer_kind
        if kind == _T_NONE or self._closing():
            return
        loop = self.app.loop
        if loop.time() + 0.001 < self._deadline:  # the deadline moved on since it was set
            self._timer = loop.call_at(self._deadline, self._on_timer)
            return
        self._timer_kind = _T_NONE
        cfg = self.app.config
        if kind == _T_HEAD and not self._busy():
            log.info(
                "conn %s: request head not complete within client_header_timeout (%gs), 408; "
                "peer %s",
                self.id,
                cfg.client_header_timeout,
                self.peer,
            )
            self.send_error_and_close(text_response(408, "Request Timeout\n"))
        elif kind == _T_IDLE and not self._busy() and not self._in_head:
            log.debug(
                "conn %s: idle for client_idle_timeout (%gs), closing; peer %s",
                self.id,
                cfg.client_idle_timeout,
                self.peer,
            )
            self.close()
        elif kind == _T_LINGER:
            self.close()
        elif kind == _T_DRAIN and isinstance(self.handler, _BodyDrain):
            log.info(
                "conn %s: request body not complete within client_header_timeout (%gs) after "
                "its response, closing; peer %s",
                self.id,
                cfg.client_header_timeout,
                self.peer,
            )
            self.close()

    def send_error_and_close(self, resp: HttpResponse) -> None:
        """Answer ``resp`` and close, lingering: the write side is shut after the answer, and
        input is read and dropped until the client closes or ``LINGER_MAX`` passes."""
        t = self.transport
        if self._closing() or t is None:
            return
        self.write(encode_full(resp, keep_alive=False))
        if not t.can_write_eof():  # TLS: no half-close
            self.close()
            return
        self.flush()
        self._stopped = True  # nothing more is parsed (data_received drops it)
        self._linger_left = LINGER_BYTES_MAX
        self._requests.clear()
        t.write_eof()
        if self._reading_paused:
            t.resume_reading()
        self._arm(_T_LINGER, min(LINGER_MAX, self.app.config.client_header_timeout or LINGER_MAX))

    def set_handler(self, handler: RequestHandler | None) -> None:
        self.handler = handler

    def hold_started(self) -> None:
        """A stream hold or WebSocket session now owns the connection, for long: no client
        timeout applies until it ends, so the timer handle (lazily disarmed, see ``_arm``) is
        released now rather than when it next fires; it is a tenth of an idle held connection's
        memory. Response holds (long-polls) keep the lazy handle: they end with a response and
        re-arm the idle timeout, and a cancel plus a new handle per cycle costs more CPU than
        the handle's memory until it fires.

        The parser goes too, when it stands between two requests: with the six callbacks it
        holds bound to this connection it is about a fifth of an idle held connection's memory
        and seven of the two dozen objects the cycle collector scans for it. A client that
        sends more during the hold gets a new parser on that read (``_feed``); after an upgrade
        the parser is never used again (it is let go then)."""
        self._cancel_timer()
        if self._feeding:
            # From a parser callback (a hold started at once, as the test target's): the parser
            # may go on with more of the same read, so it is parked when the read is parsed.
            self._park_asked = True
        else:
            self._park()

    def _park(self) -> None:
        """Let the parser go if it stands between two requests (see ``hold_started``)."""
        self._park_asked = False
        cur = self._cur
        if (
            self._parser is not None
            and self.handler is not None  # still held
            and cur is not None
            and cur.body_done
            and cur.keep_alive  # after a "close" request llhttp refuses more; a new one would not
            and not self._requests
            and self._unparsed is None
            and not self._in_head
        ):
            self._parser = None  # parked: made anew by the next _feed

    def finish_response(self, keep_alive: bool = True) -> None:
        """The current request's response is complete: go on with the next request or close."""
        if self._pending:
            self._after_flush = lambda: self._finish(keep_alive)
            return
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self.handler = None
        self._disarm()
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
            self._arm(_T_DRAIN, self.app.config.client_header_timeout)
            return
        if self._requests:
            nxt = self._requests.pop(0)
            self._cur = nxt
            self._pipe_drained()
            self._start(nxt)
            return
        cfg = self.app.config
        if self._in_head:
            # A head began while this request was answered: its clock starts now.
            self._arm(_T_HEAD, cfg.client_header_timeout)
        else:
            self._arm(_T_IDLE, cfg.client_idle_timeout)

    def send_response(
        self, resp: HttpResponse, method: str = "GET", keep_alive: bool = True
    ) -> None:
        """Send a whole response for the current request and finish it."""
        req = self._cur
        ka = keep_alive and (req.keep_alive if req is not None else False)
        http10 = req is not None and req.http_version == "1.0"
        self.write(encode_full(resp, method=method, keep_alive=ka, http10=http10))
        self.finish_response(ka)

    def pause_reading(self) -> None:
        """Stop reading for a handler or the app (backpressure, F4 max_open_requests)."""
        self._reading_paused = True
        self._apply_reading()

    def resume_reading(self) -> None:
        """Read again, unless the pipeline queue is at its cap."""
        self._reading_paused = False
        self._apply_reading()


class _HeadTooLarge(Exception):
    """Raised from a parser callback when the request head passes client_buffer_size (F3)."""


class _Stop(Exception):
    """Raised from a parser callback to stop parsing: no further request is to be read."""


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

"""HTTP/2 for clients that choose it on a TLS listener (ALPN ``h2``), on the ``h2`` sans-I/O
library: the connection.

One :class:`H2Connection` serves a TLS connection: it reads the frames, opens (or refuses) a
stream per request, keeps the bounds below and writes the frames of all its streams. Each request
is an :class:`~gripd.io.listener.h2_stream.H2Stream`, which gives the request handlers the
interface of an HTTP/1.1 connection and turns the HTTP/1.1 response bytes they write into frames
(:mod:`gripd.io.listener.h2_stream`), so every GRIP feature works per stream with no change to
the handlers.

Writes are coalesced per loop tick: frames of every stream of a connection go out in one
``transport.write`` through the shared ``Flusher``. A published message written to many streams
makes one DATA frame per stream.

Flow control (RFC 9113 5.2) is kept per stream: what a stream's window does not allow waits in
that stream's queue and counts as its buffered bytes, so a stream whose reader stalls gets the
slow-client policy (``client_write_buffer_max``) on its own, without stalling the other streams
of its connection. A request body is acknowledged (its window reopened) once a handler has taken
it and is not holding reads back, so an unread body is bounded by the window.

Bounds (RFC 9113 10.5, CVE-2023-44487):

- ``[gripd] http2_max_streams`` concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS;
  a stream past it is refused with REFUSED_STREAM, the others go on);
- the request head: SETTINGS_MAX_HEADER_LIST_SIZE is ``client_buffer_size`` (F3), past which
  the stream is answered ``431`` (a stream error; the connection goes on). The HPACK decoder's
  own, looser bound (``header_decode_max``: 64 KiB, or twice ``client_buffer_size``) fails the
  connection;
- rapid reset: streams reset by the client before their response was complete draw on a budget
  of ``[gripd] http2_reset_budget`` (default 200) refilled at a quarter of it per second; past it
  the connection gets GOAWAY
  ``ENHANCE_YOUR_CALM`` and is closed, and the requests it started are cancelled;
- control-frame floods (PING, SETTINGS, PRIORITY, empty DATA, unknown frames): the same with
  ``[gripd] http2_control_budget`` (default 1000), refilled at a fifth of it per second;
- ``client_header_timeout`` for the first request after the TLS handshake, and
  ``client_idle_timeout`` for a connection with no stream open (GOAWAY, then close).

WebSockets over HTTP/2 (RFC 8441 extended CONNECT) are not offered: SETTINGS_ENABLE_CONNECT_PROTOCOL
is not sent, so browsers open WebSockets on a separate HTTP/1.1 connection, which the same TLS
listener serves. Cleartext HTTP/2 (h2c) is not offered either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gripd.core.headers import Headers
from gripd.core.http import text_response
from gripd.core.requestcheck import check_request
from gripd.io.listener.h2_stream import H2Stream
from gripd.io.listener.request import Request, log_refused

if TYPE_CHECKING:
    from gripd.io.context import ClientHost

log = logging.getLogger("gripd.client")

# The budgets (``http2_reset_budget``, ``http2_control_budget``) refill at these fractions of
# themselves per second: a burst of the whole budget, then a quarter (a fifth) of it per second.
RESET_REFILL = 0.25
CONTROL_REFILL = 0.2

# The HPACK decoder's own bound on one header list (bytes, counted as RFC 7541 does): beyond it
# the connection fails. Requests over client_buffer_size but under this get their 431.
HEADER_DECODE_MIN = 65_536


def header_decode_max(client_buffer_size: int) -> int:
    return max(HEADER_DECODE_MIN, 2 * client_buffer_size)


# Seconds a connection that got a connection error (GOAWAY) is kept, reading and dropping, so
# that the GOAWAY reaches the client before the close.
FAIL_LINGER = 1.0

# The connection-level receive window: big enough that many streams can upload at once.
CONNECTION_WINDOW = 1 << 20


class _LocalSettings(h2.settings.Settings):
    """gripd's SETTINGS, with MAX_CONCURRENT_STREAMS advertised but not enforced by the h2
    library: h2 raises a connection error for one stream too many (and loses the events of its
    read), where RFC 9113 5.1.2 asks for a stream error. gripd refuses the stream itself
    (REFUSED_STREAM, see ``H2Connection._request``)."""

    @property  # type: ignore[misc]
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1


class _Budget:
    """A token bucket: ``take()`` is False once more than ``burst`` were taken faster than
    ``rate`` per second."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= 1.0
        return self._tokens >= 0.0


class H2Connection(asyncio.Protocol):
    """One client TLS connection speaking HTTP/2. Created by the HTTP/1.1 connection object once
    ALPN chose ``h2`` (after admission), which then hands the transport over."""

    __slots__ = (
        "_budget_control",
        "_budget_reset",
        "_dirty",
        "_failed",
        "_goaway",
        "_idle_handle",
        "_tpaused",
        "app",
        "blocked",
        "closed",
        "h2",
        "id",
        "max_streams",
        "peer",
        "streams",
        "transport",
        "wbuf",
    )

    def __init__(self, app: ClientHost, transport: asyncio.Transport, conn_id: str, peer: str):
        self.app = app
        self.transport: asyncio.Transport | None = transport
        self.id = conn_id
        self.peer = peer
        self.closed = False
        cfg = app.config
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.max_streams = cfg.http2_max_streams
        self.h2.local_settings = _LocalSettings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: cfg.http2_max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: cfg.client_buffer_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.decoder.max_header_list_size = header_decode_max(cfg.client_buffer_size)
        self.streams: dict[int, H2Stream] = {}
        self.blocked: dict[int, H2Stream] = {}  # streams with data waiting for window
        self.wbuf: list[bytes] = []  # frames for the next flush, in order
        self._dirty = False
        self._tpaused = False
        self._goaway = False
        self._failed = False  # a connection error was sent; closing after FAIL_LINGER
        self._idle_handle: asyncio.TimerHandle | None = None
        now = app.loop.time()
        rb, cb = cfg.http2_reset_budget, cfg.http2_control_budget
        self._budget_reset = _Budget(rb, rb * RESET_REFILL, now)
        self._budget_control = _Budget(cb, cb * CONTROL_REFILL, now)

    # -- start and end -------------------------------------------------------------------------

    def start(self) -> None:
        """Send the server preface; the first request must come within client_header_timeout."""
        self.app.events.connection_opened(self.id, self.peer, "http")
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        self._arm_idle(self.app.config.client_header_timeout)
        self.flush()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        pass  # the transport is handed over already open (see ``start``)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_idle()
        self.app.drop_connection(self)
        self.app.events.connection_closed(self.id)
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for s in streams.values():
            s.lost()

    def close(self) -> None:
        """GOAWAY (no error), then close once what is queued was written."""
        if self.closed or self.transport is None:
            return
        try:
            self.h2.close_connection()
        except h2.exceptions.ProtocolError:
            pass  # the connection state machine is closed already
        self._goaway = True
        self.flush()
        self.transport.close()

    def _fail(self, code: int, why: str, *, goaway_queued: bool = False) -> None:
        """A connection error: GOAWAY with ``code``, the streams cancelled, and a close
        ``FAIL_LINGER`` seconds later. Meanwhile what the client sends is read and dropped: a
        close with unread bytes would be a TCP reset, which can destroy the GOAWAY on its way."""
        if self._failed or self.closed:
            return
        log.info("conn %s: HTTP/2 connection error (%s), closing; peer %s", self.id, why, self.peer)
        self._failed = True
        self._goaway = True
        if not goaway_queued:  # h2 queues its own GOAWAY when it raises a protocol error
            try:
                self.h2.close_connection(error_code=code)
            except h2.exceptions.ProtocolError:
                pass
        self.flush()
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for s in streams.values():
            s.lost()
        t = self.transport
        if t is not None:
            self.app.loop.call_later(FAIL_LINGER, t.close)

    # -- timers --------------------------------------------------------------------------------

    def _arm_idle(self, delay: float) -> None:
        self._cancel_idle()
        if delay > 0 and not self.closed:
            self._idle_handle = self.app.loop.call_later(delay, self._on_idle)

    def _cancel_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _on_idle(self) -> None:
        self._idle_handle = None
        if not self.streams and not self.closed:
            log.debug("conn %s: HTTP/2 connection idle, closing; peer %s", self.id, self.peer)
            self.close()

    # -- reading -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed or self._failed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            code = getattr(e, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._fail(int(code), f"{type(e).__name__}: {e}", goaway_queued=True)
            return
        try:
            self._handle(events, self.app.loop.time())
        except Exception:
            # A bug must not take the TLS transport down with a fatal error: this connection
            # ends, the others go on.
            log.exception("conn %s: internal error in HTTP/2 handling; peer %s", self.id, self.peer)
            self._fail(h2.errors.ErrorCodes.INTERNAL_ERROR, "internal error")
            return
        self.mark()

    def _handle(self, events: list[h2.events.Event], now: float) -> None:
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._request(ev, now)
                if self._failed:
                    return
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.body(ev.data or b"", ev.flow_controlled_length)
                else:
                    self._ack(ev.flow_controlled_length, ev.stream_id)
                if not ev.data and ev.stream_ended is None and not self._budget_control.take(now):
                    self._fail(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "empty DATA flood")
                    return
            elif isinstance(ev, h2.events.StreamEnded):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.body_end()
            elif isinstance(ev, h2.events.StreamReset):
                s = self.streams.pop(ev.stream_id, None)
                self.blocked.pop(ev.stream_id, None)
                if s is not None:
                    s.lost()
                    if not s.response_done and not self._budget_reset.take(now):
                        self._fail(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets")
                        return
                    self._stream_gone()
            elif isinstance(ev, h2.events.WindowUpdated):
                self._unblock(ev.stream_id)
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                if not self._budget_control.take(now):
                    self._fail(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "SETTINGS flood")
                    return
                self._unblock(0)  # the initial window may have grown
            elif isinstance(
                ev,
                h2.events.PingReceived | h2.events.PriorityUpdated | h2.events.UnknownFrameReceived,
            ):
                if not self._budget_control.take(now):
                    self._fail(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "control frame flood")
                    return
            elif isinstance(ev, h2.events.ConnectionTerminated):
                # The client opens no more streams; those open finish first (unless it is an
                # error, which ends them all).
                if ev.error_code or not self.streams:
                    self.close()
                    return
                self._goaway = True

    def _request(self, ev: h2.events.RequestReceived, now: float) -> None:
        sid = ev.stream_id
        if sid not in self.h2.streams:
            # Reset in the same read as it was opened (h2 forgot it already): never started,
            # but it counts as a reset (rapid reset opens and resets in one packet).
            if not self._budget_reset.take(now):
                self._fail(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets")
            return
        method, path, authority = "", "", ""
        headers: Headers = []
        cookies: list[str] = []
        size = 0
        for name, value in ev.headers or ():
            k = name.decode("latin-1") if isinstance(name, bytes) else name
            v = value.decode("latin-1") if isinstance(value, bytes) else value
            size += len(k) + len(v) + 4
            if k.startswith(":"):
                if k == ":method":
                    method = v
                elif k == ":path":
                    path = v
                elif k == ":authority":
                    authority = v
            elif k == "cookie":
                cookies.append(v)  # RFC 9113 8.2.3: one field again for HTTP/1.1
            else:
                headers.append((k, v))
        if cookies:
            headers.append(("cookie", "; ".join(cookies)))
        if len(self.streams) >= self.max_streams:
            # Over SETTINGS_MAX_CONCURRENT_STREAMS: a stream error (RFC 9113 5.1.2).
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if authority and not any(k == "host" for k, _ in headers):
            headers.insert(0, ("host", authority))
        req = Request(method, path or "/", headers, "1.1", True)
        req.head_size = size
        req.tls = True
        req.body_done = ev.stream_ended is not None
        stream = H2Stream(self, sid, req)
        self.streams[sid] = stream
        self._cancel_idle()
        self.app.events.request_received()
        if size > self.app.config.client_buffer_size:
            stream.send_response(text_response(431, "Request header fields too large.\n"))
            return
        rej = check_request(method, headers)
        if rej is not None:
            log_refused(stream.id, method, path, rej, self.peer)
            stream.send_response(rej.response, method)
            return
        self.app.handle_request(stream, req)

    def _ack(self, n: int, sid: int) -> None:
        if n and not self.closed:
            try:
                self.h2.acknowledge_received_data(n, sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.mark()

    # -- writing -------------------------------------------------------------------------------

    def mark(self) -> None:
        """Flush at the end of this loop tick, with every other connection's writes."""
        if not self._dirty and not self.closed:
            self._dirty = True
            self.app.flusher.mark(self)

    def flush(self) -> None:
        self._dirty = False
        t = self.transport
        if t is None or self.closed:
            return
        wbuf = self.wbuf
        out = self.h2.data_to_send()
        if wbuf:
            if out:
                wbuf.append(out)
            self.wbuf = []
            t.write(b"".join(wbuf))
        elif out:
            t.write(out)

    def emit_data(self, sid: int, data: bytes, state: Any) -> None:
        """One DATA frame without END_STREAM, made here rather than by ``h2.send_data``, which
        costs three quarters of a fan-out write (measured: 20 us of 27 per stream write). The
        windows h2 keeps are charged as ``send_data`` would (``outbound_flow_control_window`` is
        public on the connection and the stream); what h2 has buffered goes first."""
        n = len(data)
        h = self.h2
        h.outbound_flow_control_window -= n
        state.outbound_flow_control_window -= n
        pending = h.data_to_send()
        if pending:
            self.wbuf.append(pending)
        self.wbuf.append(n.to_bytes(3, "big") + b"\x00\x00" + sid.to_bytes(4, "big") + data)

    def _unblock(self, sid: int) -> None:
        """A window grew: send what waits (on every blocked stream for the connection's)."""
        if sid:
            s = self.blocked.get(sid)
            if s is not None:
                s.push()
            return
        for s in list(self.blocked.values()):
            s.push()

    def _stream_gone(self) -> None:
        if not self.streams:
            if self._goaway:
                self.close()  # a GOAWAY was received: the last stream is done
                return
            self._arm_idle(self.app.config.client_idle_timeout)

    def stream_done(self, stream: H2Stream) -> None:
        """A stream's response is complete (or reset by us): forget it."""
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
            self.blocked.pop(stream.sid, None)
            self._stream_gone()

    # -- transport backpressure ----------------------------------------------------------------

    def pause_writing(self) -> None:
        self._tpaused = True
        for s in list(self.streams.values()):
            s.conn_paused()

    def resume_writing(self) -> None:
        self._tpaused = False
        for s in list(self.streams.values()):
            s.conn_resumed()

    @property
    def transport_paused(self) -> bool:
        return self._tpaused

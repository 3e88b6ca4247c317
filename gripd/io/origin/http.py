"""HTTP/1.1 client to the origin: httptools parser, keep-alive pool, ordered failover.

Every proxied request makes one origin request, so this is a hand-written ``asyncio.Protocol``
with ``httptools.HttpResponseParser`` rather than aiohttp's client (about 10x cheaper per request,
research python-stack.md section 3.5). The response is streamed to a ``ResponseHandler`` with
backpressure both ways (P5).

Behaviour (Pushpin 1.36 via zurl):

* F10: several targets are ordered failover, not load balancing. The next one is tried only on a
  connect error, connect timeout or TLS error; once connected, failures go to the handler.
* F11: ``ssl`` targets use TLS; ``insecure`` turns verification off; SNI is ``server_hostname``.
* Responses are framed by Content-Length, chunked encoding or EOF. EOF-delimited responses,
  ``Connection: close`` and HTTP/1.0 without keep-alive are never pooled. HEAD, 204 and 304 have
  no body whatever Content-Length says; 1xx interim responses are skipped (P6). A status under
  100, or a 1xx with a body, is an origin error (502), as in Pushpin.
* A fresh parser is made per exchange: httptools ignores "skip body" for HEAD, so a reused
  parser would read the next response as the HEAD body (verified pitfall, P6).
* The response head (status line and header lines, 1xx interim heads included) is capped at
  ``response_head_max`` bytes and ``RESPONSE_HEAD_LINES_MAX`` lines (``HeadBudget``); past either
  the exchange fails and the client gets Pushpin's 502. Without it an origin that never ends its
  head grows memory without bound (httptools keeps a partial header value in memory, and llhttp
  has no size limit of its own).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httptools

from gripd.core.errors import OriginConnectError, OriginError
from gripd.core.headers import Headers
from gripd.core.http import interim_head_problem

__all__ = [
    "RESPONSE_HEAD_LINES_MAX",
    "Endpoint",
    "HeadBudget",
    "OriginExchange",
    "OriginPool",
    "ResponseHandler",
]

BodyFraming = Literal["none", "length", "chunked"]

# A reused keep-alive connection may turn out dead (the origin closed it as we wrote). The request
# is replayed once on a fresh connection if what was sent so far is still buffered; this caps it.
_REPLAY_MAX = 256 * 1024

#: Header lines one origin response head may have. Pushpin cannot relay more than about 64
#: (its client side stalls); this is far above that and bounds the per-line overhead a head of
#: tiny lines would cost within ``response_head_max`` bytes.
RESPONSE_HEAD_LINES_MAX = 1000


class HeadBudget:
    """Counts an origin response head against a byte cap and ``RESPONSE_HEAD_LINES_MAX``.

    Two counts, because neither alone is enough: the parser callbacks (``begin``, ``status``,
    ``header``) see whole lines, so a head finished inside one read is measured exactly; ``fed``
    counts raw bytes read while the head is unfinished, which catches a line that never ends
    (httptools keeps the partial line and calls back nothing). After the head, ``framing``
    does the same for chunked trailers: bytes read with no body byte among them. Each raises
    ``OriginError`` past the cap.
    """

    __slots__ = ("lines", "max_bytes", "raw", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # status and header lines seen, of every head so far (1xx included)
        self.lines = 0
        self.raw = 0  # bytes read since the head began / since the last body byte

    def begin(self) -> None:
        """A head starts: ``HTTP/1.1 200 `` + CRLF, and the CRLF that ends the head."""
        self.size += 17
        self._check(self.size, "head")

    def status(self, reason_len: int) -> None:
        self.size += reason_len
        self._check(self.size, "head")

    def header(self, name_len: int, value_len: int) -> None:
        """One complete header line (``name: value`` CRLF)."""
        self.size += name_len + value_len + 4
        self.lines += 1
        if self.lines > RESPONSE_HEAD_LINES_MAX:
            raise OriginError(
                f"Response head from origin has over {RESPONSE_HEAD_LINES_MAX} header lines"
            )
        self._check(self.size, "head")

    def fed(self, n: int) -> None:
        """``n`` bytes were read and the head is still not complete."""
        self.raw += n
        self._check(self.raw, "head")

    def framing(self, n: int, body_seen: bool) -> None:
        """``n`` bytes of the body section were read; ``body_seen``: some were body bytes."""
        self.raw = 0 if body_seen else self.raw + n
        self._check(self.raw, "trailer")

    def _check(self, n: int, what: str) -> None:
        if n > self.max_bytes:
            raise OriginError(f"Response {what} from origin over {self.max_bytes} bytes")


class ResponseHandler(typing.Protocol):
    """Receives one origin response, streamed. Called on the event loop thread."""

    def on_response_head(self, status: int, reason: str, headers: Headers) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_error(self, exc: OriginError) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One origin target (F10/F11); also the key of the keep-alive pool."""

    host: str
    port: int
    ssl: bool = False
    insecure: bool = False
    server_hostname: str | None = None

    def label(self) -> str:
        """``host:port``, as Pushpin names targets in its errors."""
        return f"{self.host}:{self.port}"


class OriginExchange:
    """One request/response on a pooled (or new) connection.

    The request head is already written when the exchange is returned by ``OriginPool.open``.
    Response events go to the handler; after ``on_response_end``, ``on_error`` or ``abort()``
    there are no more callbacks.

    The methods under "connection side" are for ``OriginPool`` and its connections only; a
    handler uses the request body, flow control and ``abort()`` methods.
    """

    __slots__ = (
        "_activity",
        "_conn",
        "_done",
        "_endpoint",
        "_framing",
        "_handler",
        "_paused",
        "_pool",
        "_remaining",
        "_req_done",
        "_retry_task",
        "_sent",
        "_sent_size",
        "_timer",
        "method",
        "on_request_pause",
        "on_request_resume",
    )

    def __init__(
        self,
        pool: OriginPool,
        endpoint: Endpoint,
        handler: ResponseHandler,
        method: str,
        framing: BodyFraming,
        content_length: int,
    ) -> None:
        self._pool = pool
        self._endpoint = endpoint
        self._handler = handler
        self.method = method
        self._framing = framing
        self._remaining = content_length if framing == "length" else 0
        self._req_done = framing == "none" or (framing == "length" and content_length <= 0)
        self._conn: _OriginConnection | None = None
        self._done = False
        self._paused = False
        self._activity = False
        # Request bytes kept for a replay; only while on a reused connection with no response yet.
        self._sent: list[bytes] | None = None
        self._sent_size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self.on_request_pause: Callable[[], None] | None = None
        self.on_request_resume: Callable[[], None] | None = None

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def handler(self) -> ResponseHandler:
        return self._handler

    @property
    def finished(self) -> bool:
        """The exchange has ended (response end, error or abort): no more handler callbacks."""
        return self._done

    @property
    def request_done(self) -> bool:
        """The whole request, body included, has been written (the connection may be reused)."""
        return self._req_done

    # -- request body -------------------------------------------------------------------------

    def send_body(self, data: bytes) -> None:
        """Send request body bytes, framed according to ``body_framing``."""
        if self._framing == "none":
            raise ValueError("send_body() on a request without a body")
        if self._done or self._req_done or not data:
            return
        self._activity = True
        if self._framing == "chunked":
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
            return
        if len(data) > self._remaining:
            raise ValueError("request body longer than its Content-Length")
        self._remaining -= len(data)
        self._write(data)
        if self._remaining == 0:
            self._req_done = True

    def end_body(self) -> None:
        """The request body is complete (writes the last chunk for chunked framing).

        A ``length`` body that is still short stays incomplete, so the connection is not reused.
        """
        if self._done or self._req_done:
            return
        if self._framing == "chunked":
            self._write(b"0\r\n\r\n")
            self._req_done = True
        if self._timer is not None:  # still waiting for the response head
            self._restart_timer()

    # -- response flow control ----------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading the origin socket (the client is slow, P5)."""
        if self._done or self._paused:
            return
        self._paused = True
        if self._conn is not None:
            self._conn.pause()

    def resume_reading(self) -> None:
        if self._done or not self._paused:
            return
        self._paused = False
        if self._conn is not None:
            self._conn.resume()

    def abort(self) -> None:
        """The client went away: close the origin connection; no more callbacks."""
        if self._done:
            return
        self._finish_state()
        conn = self._detach()
        if conn is not None:
            conn.close()

    # -- connection side (OriginPool and its connections) ---------------------------------------

    def start(self, conn: _OriginConnection, head: bytes, reused: bool) -> None:
        """Bind to ``conn`` and write the request head; on a ``reused`` connection the request
        is kept for one replay in case that connection turns out dead."""
        if reused:
            self._sent = []
            self._sent_size = 0
        self._attach(conn)
        self._write(head)
        self._restart_timer()

    def fail(self, exc: OriginError) -> None:
        """Deliver ``on_error`` once and close the connection."""
        if self._done:
            return
        self._finish_state()
        conn = self._detach()
        if conn is not None:
            conn.close()
        self._handler.on_error(exc)

    def response_started(self) -> None:
        """The origin began answering: the request can no longer be replayed."""
        self._sent = None

    def response_head(self, status: int, reason: str, headers: Headers) -> None:
        """The final response head arrived: stop the response timeout and pass it on."""
        self._cancel_timer()
        self._handler.on_response_head(status, reason, headers)

    def response_body(self, data: bytes) -> None:
        """Response body bytes, passed on unless the exchange has ended."""
        if not self._done:
            self._handler.on_response_body(data)

    def complete(self) -> None:
        """The response was read to its end: finish and unlink from the connection, leaving it
        open. The caller then pools or closes it and sends ``on_response_end``."""
        self._finish_state()
        self._detach()

    def connection_closed(self, *, replayable: bool, eof_end: bool, error: str) -> None:
        """The connection closed (it has already dropped this exchange).

        ``replayable``: no response byte came, so a kept request may be sent again on a fresh
        connection; ``eof_end``: the close ended an EOF-delimited body cleanly; otherwise the
        exchange fails with ``error``.
        """
        self._conn = None
        if self._done:
            return
        if self._pool.closed:
            self.fail(OriginError("origin pool closed"))
            return
        if replayable and self._can_replay():
            self._pool.logger.debug(
                "reused connection to %s was dead; retrying", self._endpoint.label()
            )
            self._retry_task = self._pool.spawn(self._replay())
            return
        if eof_end:
            self._finish_state()
            self._handler.on_response_end()
            return
        self.fail(OriginError(error))

    # -- internals ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._sent is not None:
            self._sent.append(data)
            self._sent_size += len(data)
            if self._conn is None:  # replaying: everything must be kept until reconnected
                return
            if self._sent_size > _REPLAY_MAX:
                self._sent = None
        if self._conn is not None:
            self._conn.write(data)

    def _attach(self, conn: _OriginConnection) -> None:
        self._conn = conn
        conn.attach(self)
        if self._paused:
            conn.pause()

    def _detach(self) -> _OriginConnection | None:
        conn = self._conn
        self._conn = None
        if conn is not None and conn.exchange is self:
            conn.exchange = None
        return conn

    def _restart_timer(self) -> None:
        # response_timeout: the longest wait for the response head with no request activity
        # (request head, body bytes, end of body) in between.
        self._activity = False
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._pool.response_timer(self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._activity:
            self._restart_timer()  # an upload still moving is not an origin timeout
            return
        self.fail(OriginError("timeout"))

    def _finish_state(self) -> None:
        self._done = True
        self._sent = None
        self._cancel_timer()
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None

    def _can_replay(self) -> bool:
        return self._sent is not None and self._retry_task is None

    async def _replay(self) -> None:
        """Send the request again on a fresh connection (the reused one was dead)."""
        try:
            conn = await self._pool.connect(self._endpoint)
        except (*_CONNECT_ERRORS, OriginError) as exc:
            self._retry_task = None
            self.fail(OriginError(f"Unable to connect to {self._endpoint.label()}: {exc}"))
            return
        self._retry_task = None
        if self._done:
            conn.close()
            return
        sent = self._sent or []
        self._sent = None  # one retry only
        self._attach(conn)
        for data in sent:
            conn.write(data)


_CONNECT_ERRORS = (OSError, ssl.SSLError, ssl.CertificateError, TimeoutError)


class _OriginConnection(asyncio.Protocol):
    """One TCP/TLS connection to an origin; carries at most one exchange at a time."""

    __slots__ = (
        "_body_seen",
        "_budget",
        "_closed",
        "_dirty",
        "_eof_body",
        "_got_bytes",
        "_head_done",
        "_headers",
        "_interim",
        "_keep_alive",
        "_msg_done",
        "_no_body",
        "_parser",
        "_pool",
        "_reading_paused",
        "_reason",
        "endpoint",
        "exchange",
        "idle_since",
        "transport",
    )

    def __init__(self, pool: OriginPool, endpoint: Endpoint) -> None:
        self._pool = pool
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.exchange: OriginExchange | None = None
        self.idle_since = 0.0  # loop time it was parked idle (the pool's sweep closes it later)
        self._closed = False
        self._reading_paused = False
        self._body_seen = False
        self._parser: httptools.HttpResponseParser | None = None
        self._reset_response()

    def _reset_response(self) -> None:
        self._got_bytes = False
        self._head_done = False
        self._msg_done = False
        self._interim = False
        self._dirty = False
        self._keep_alive = False
        self._no_body = False
        self._eof_body = False
        self._reason: list[bytes] = []
        self._headers: Headers = []
        self._budget = HeadBudget(self._pool.response_head_max)

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    # -- used by the exchange and the pool ----------------------------------------------------

    def attach(self, ex: OriginExchange) -> None:
        self.exchange = ex
        self._reset_response()
        self._parser = httptools.HttpResponseParser(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def pause(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close now: unsent request bytes are dropped (a peer that stopped reading can't block)."""
        self._closed = True
        self._pool.forget(self)
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        parser = self._parser
        if ex is None or parser is None:
            # Bytes from an idle connection: the origin is out of step; don't reuse it.
            self.close()
            return
        if not self._got_bytes:
            self._got_bytes = True
            ex.response_started()
        self._body_seen = False
        head_was_done = self._head_done
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._error(ex, "Unexpected protocol upgrade from origin")
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, OriginError):
                self._error(ex, str(cause))
                return
            # A handler raised: that is a bug in the caller; log it and stop this exchange.
            self._pool.logger.error("origin response handler failed", exc_info=cause)
            self._error(ex, "response handler failed")
            return
        except httptools.HttpParserError as exc:
            if not self._msg_done:
                self._error(ex, f"Malformed response from origin: {exc}")
                return
            self._dirty = True  # garbage after a complete response
        if not self._msg_done and self.exchange is ex:
            try:
                if head_was_done:
                    self._budget.framing(len(data), self._body_seen)
                elif not self._head_done:
                    self._budget.fed(len(data))  # every byte of `data` belongs to the head
            except OriginError as exc:
                self._error(ex, str(exc))
                return
        if self._msg_done and self.exchange is ex:
            self._complete(ex)

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._pool.forget(self)
        ex = self.exchange
        if ex is None:
            return
        self.exchange = None
        if self._head_done:
            msg = "Connection to origin lost during response body"
        elif self._got_bytes:
            msg = "Incomplete response head from origin"
        else:
            msg = "Origin closed the connection without a response"
        ex.connection_closed(
            replayable=not self._got_bytes,
            # The response body was delimited by the connection closing.
            eof_end=self._head_done and self._eof_body and exc is None,
            error=msg,
        )

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.on_request_pause is not None:
            ex.on_request_pause()

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.on_request_resume is not None:
            ex.on_request_resume()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._msg_done:
            self._dirty = True  # a second response nobody asked for
            return
        self._reason = []
        self._headers = []
        self._budget.begin()

    def on_status(self, status: bytes) -> None:
        self._budget.status(len(status))
        self._reason.append(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_done:  # later ones are chunked trailers: dropped
            self._budget.header(len(name), len(value))
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        ex = self.exchange
        if self._msg_done or ex is None or ex.finished or parser is None:
            self._dirty = True
            return
        status = parser.get_status_code()
        if status < 200:
            problem = interim_head_problem(status, self._headers)
            if problem is not None:
                raise OriginError(problem)
            self._interim = True  # 100 Continue etc.: skipped
            return
        self._head_done = True
        self._budget.raw = 0  # from the next read on it counts trailer bytes (``framing``)
        headers = self._headers
        if ex.method == "HEAD" or status in (204, 304):
            self._no_body = True
        else:
            self._eof_body = _is_eof_delimited(headers)
        reason = b"".join(self._reason).decode("latin-1")
        ex.response_head(status, reason, headers)  # stops the response timeout
        if self._no_body and ex.method == "HEAD" and self.exchange is ex and not ex.finished:
            # llhttp would wait for a body of Content-Length bytes: the response ends here (P6).
            self._keep_alive = _keep_alive(parser.get_http_version(), headers)
            self._msg_done = True

    def on_body(self, body: bytes) -> None:
        if self._msg_done:
            self._dirty = True
            return
        ex = self.exchange
        self._body_seen = True
        if body and ex is not None:
            ex.response_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._msg_done:  # the forced end of a HEAD response; llhttp agrees, nothing extra
            return
        parser = self._parser
        assert parser is not None
        self._keep_alive = parser.should_keep_alive()
        self._msg_done = True

    # -- end of a response ----------------------------------------------------------------------

    def _complete(self, ex: OriginExchange) -> None:
        reusable = self._keep_alive and not self._dirty and ex.request_done and not self._closed
        ex.complete()
        self._parser = None
        if self._reading_paused:
            self.resume()
        if reusable:
            self._pool.release(self)
        else:
            self.close()
        ex.handler.on_response_end()

    def _error(self, ex: OriginExchange, msg: str) -> None:
        self._dirty = True
        ex.fail(OriginError(msg))
        self.close()


def _is_eof_delimited(headers: Headers) -> bool:
    """Neither chunked nor Content-Length: the body ends when the origin closes."""
    has_length = False
    for k, v in headers:
        lk = k.lower()
        if lk == "transfer-encoding":
            return v.rsplit(",", 1)[-1].strip().lower() != "chunked"
        if lk == "content-length":
            has_length = True
    return not has_length


def _keep_alive(version: str, headers: Headers) -> bool:
    """Keep-alive for a HEAD response, which llhttp judges as if it had a body."""
    tokens: set[str] = set()
    for k, v in headers:
        if k.lower() == "connection":
            tokens.update(t.strip().lower() for t in v.split(","))
    if "close" in tokens:
        return False
    return version != "1.0" or "keep-alive" in tokens


class OriginPool:
    """Connections to origins, keyed by ``Endpoint``, with keep-alive reuse and idle eviction.

    Idle connections hold no Task: eviction is a ``loop.call_later`` handle per connection.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        response_timeout: float = 60.0,
        max_idle_per_endpoint: int = 64,
        idle_timeout: float = 60.0,
        response_head_max: int = 65_536,
        logger: logging.Logger | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.response_head_max = response_head_max
        self.response_timeout = response_timeout
        self.max_idle_per_endpoint = max_idle_per_endpoint
        self.idle_timeout = idle_timeout
        # An idle connection is closed between idle_timeout and idle_timeout + 1 s after it
        # was parked (sooner timeouts are swept as often as they are long).
        self._sweep_every = min(idle_timeout, 1.0)
        self._sweeper: asyncio.TimerHandle | None = None
        self.logger = logger or logging.getLogger("gripd.origin")
        # Per endpoint, idle connections oldest first (dicts keep insertion order, O(1) removal).
        self._idle: dict[Endpoint, dict[_OriginConnection, None]] = {}
        self._conns: set[_OriginConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl: dict[bool, ssl.SSLContext] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def open_idle(
        self,
        endpoints: Sequence[Endpoint],
        method: str,
        target: str,
        headers: Headers,
        handler: ResponseHandler,
        *,
        body_framing: BodyFraming,
        content_length: int = 0,
    ) -> OriginExchange | None:
        """:meth:`open` without waiting, when the first endpoint has an idle keep-alive
        connection (the usual case under load: no task, no await); None otherwise, and then
        :meth:`open` is the way."""
        if self._closed or not endpoints:
            return None
        ep = endpoints[0]
        if not self._idle.get(ep):
            return None
        conn = self._take_idle(ep)
        if conn is None:
            return None
        ex = OriginExchange(self, ep, handler, method, body_framing, content_length)
        ex.start(conn, _encode_head(method, target, headers), True)
        return ex

    async def open(
        self,
        endpoints: Sequence[Endpoint],
        method: str,
        target: str,
        headers: Headers,
        handler: ResponseHandler,
        *,
        body_framing: BodyFraming,
        content_length: int = 0,
    ) -> OriginExchange:
        """Start a request on the first endpoint that can be reached (F10 ordered failover).

        Failover happens only on connect error, connect timeout or TLS error; when every
        endpoint fails, ``OriginConnectError(tried=[labels])`` is raised. ``headers`` are sent
        as given (the caller supplies Host and Content-Length / Transfer-Encoding). The request
        head is written before this returns.
        """
        if self._closed:
            raise OriginError("origin pool is closed")
        self._loop = asyncio.get_running_loop()
        ex = self.open_idle(
            endpoints,
            method,
            target,
            headers,
            handler,
            body_framing=body_framing,
            content_length=content_length,
        )
        if ex is not None:
            return ex
        head = _encode_head(method, target, headers)
        tried: list[str] = []
        for ep in endpoints:
            conn = self._take_idle(ep)
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self.connect(ep)
                except _CONNECT_ERRORS as exc:
                    self.logger.info("origin %s: connect failed: %r", ep.label(), exc)
                    tried.append(ep.label())
                    continue
            ex = OriginExchange(self, ep, handler, method, body_framing, content_length)
            ex.start(conn, head, reused)
            return ex
        raise OriginConnectError(tried)

    async def close(self) -> None:
        """Close every connection; exchanges still running get ``on_error``."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._conns):
            if conn.exchange is not None:
                conn.exchange.fail(OriginError("origin pool closed"))
            conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.sleep(0)  # let transports run connection_lost

    # -- exchange and connection side -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``close()`` was called: no new connections, running exchanges fail."""
        return self._closed

    def response_timer(self, cb: Callable[[], None]) -> asyncio.TimerHandle:
        """Call ``cb`` after ``response_timeout`` (an exchange waiting for its response head)."""
        return self._call_later(self.response_timeout, cb)

    def spawn(self, coro: typing.Coroutine[typing.Any, typing.Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` (an exchange's replay) as a task that ``close()`` cancels."""
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def connect(self, ep: Endpoint) -> _OriginConnection:
        """A new connection to ``ep`` (never an idle one); raises the connect errors."""
        if self._closed:
            raise OriginError("origin pool is closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        ctx: ssl.SSLContext | None = None
        server_hostname: str | None = None
        if ep.ssl:
            ctx = self._ssl_context(ep.insecure)
            server_hostname = ep.server_hostname or ep.host
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: _OriginConnection(self, ep),
                ep.host,
                ep.port,
                ssl=ctx,
                server_hostname=server_hostname,
            ),
            self.connect_timeout,
        )
        if self._closed:
            proto.close()
            raise OriginError("origin pool is closed")
        self._conns.add(proto)
        return proto

    def release(self, conn: _OriginConnection) -> None:
        """Park a finished keep-alive connection, evicting the oldest over the cap."""
        if self._closed or self.max_idle_per_endpoint <= 0 or not conn.usable:
            conn.close()
            return
        idle = self._idle.get(conn.endpoint)
        while idle and len(idle) >= self.max_idle_per_endpoint:
            next(iter(idle)).close()  # close() removes it from `idle` (and maybe `_idle`)
        self._idle.setdefault(conn.endpoint, {})[conn] = None
        conn.idle_since = time.monotonic()
        if self._sweeper is None:
            # One timer for every idle connection (not one per release, a cost per request).
            self._sweeper = self._call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections parked for ``idle_timeout`` (oldest first in each dict)."""
        self._sweeper = None
        now = time.monotonic()
        limit = self.idle_timeout
        for idle in list(self._idle.values()):
            while idle:
                conn = next(iter(idle))
                if now - conn.idle_since < limit:
                    break
                conn.close()
                idle.pop(conn, None)  # close() normally forgets it already
        if self._idle:
            self._sweeper = self._call_later(self._sweep_every, self._sweep)

    def forget(self, conn: _OriginConnection) -> None:
        """Drop a closed connection from the books (open and idle sets, idle timer)."""
        self._conns.discard(conn)
        idle = self._idle.get(conn.endpoint)
        if idle is not None and conn in idle:
            del idle[conn]
            if not idle:
                del self._idle[conn.endpoint]

    # -- internals ------------------------------------------------------------------------------

    def _call_later(self, delay: float, cb: Callable[[], None]) -> asyncio.TimerHandle:
        loop = self._loop or asyncio.get_running_loop()
        return loop.call_later(delay, cb)

    def _ssl_context(self, insecure: bool) -> ssl.SSLContext:
        ctx = self._ssl.get(insecure)
        if ctx is None:
            ctx = ssl.create_default_context()
            if insecure:  # F11 `insecure`: ignore certificate errors
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl[insecure] = ctx
        return ctx

    def _take_idle(self, ep: Endpoint) -> _OriginConnection | None:
        idle = self._idle.get(ep)
        while idle:
            conn, _ = idle.popitem()  # newest first: keeps the warm ones busy, old ones expire
            if not idle:
                del self._idle[ep]  # no empty dicts: the idle sweep stops when none is left
            if conn.usable:
                return conn
            conn.close()
        return None

    def idle_count(self, ep: Endpoint) -> int:
        """Idle keep-alive connections parked for ``ep`` (for tests and stats)."""
        return len(self._idle.get(ep, ()))

    def connection_count(self) -> int:
        """Open connections, idle or busy."""
        return len(self._conns)


def _encode_head(method: str, target: str, headers: Headers) -> bytes:
    parts = [f"{method} {target} HTTP/1.1\r\n"]
    for k, v in headers:
        parts.append(f"{k}: {v}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1", "replace")


class _Collect:
    """ResponseHandler that buffers one whole response, up to ``limit`` body bytes."""

    def __init__(self, fut: asyncio.Future[tuple[int, str, Headers, bytes]], limit: int) -> None:
        self.fut = fut
        self.limit = limit
        self.head: tuple[int, str, Headers] = (0, "", [])
        self.body: list[bytes] = []
        self.size = 0

    def on_response_head(self, status: int, reason: str, headers: Headers) -> None:
        self.head = (status, reason, headers)

    def on_response_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.fut.done():
                self.fut.set_exception(OriginError("response body too large"))
            return
        self.body.append(data)

    def on_response_end(self) -> None:
        if not self.fut.done():
            self.fut.set_result((*self.head, b"".join(self.body)))

    def on_error(self, exc: OriginError) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def fetch(
    pool: OriginPool,
    endpoints: Sequence[Endpoint],
    method: str,
    target: str,
    headers: Headers,
    body: bytes = b"",
    *,
    limit: int,
) -> tuple[int, str, Headers, bytes]:
    """One whole request/response (status, reason, headers, body) for the engine's own
    requests: WebSocket-over-HTTP events, next links. Raises ``OriginError``."""
    fut: asyncio.Future[tuple[int, str, Headers, bytes]] = (
        asyncio.get_running_loop().create_future()
    )
    framing: BodyFraming = "length" if body or method == "POST" else "none"
    hs = [*headers, ("Content-Length", str(len(body)))] if framing == "length" else headers
    ex = await pool.open(
        endpoints,
        method,
        target,
        hs,
        _Collect(fut, limit),
        body_framing=framing,
        content_length=len(body),
    )
    if body:
        ex.send_body(body)
    ex.end_body()
    try:
        return await fut
    except BaseException:
        ex.abort()
        raise


class _TargetLike(typing.Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ssl(self) -> bool: ...
    @property
    def insecure(self) -> bool: ...
    @property
    def host_header(self) -> str | None: ...


def endpoints_for(
    targets: Sequence[_TargetLike], as_host: str | None, request_host: str
) -> list[Endpoint]:
    """A route's ``host:port`` targets as endpoints, in failover order (F10). TLS targets get
    SNI from the target's ``host=``, the route's ``as_host``, or the request's host (F11)."""
    out = []
    for t in targets:
        if t.kind != "host":
            continue
        sni = t.host_header or as_host or request_host.split(":")[0] or t.host
        out.append(
            Endpoint(t.host, t.port, t.ssl, t.insecure, sni.split(":")[0] if t.ssl else None)
        )
    return out


def origin_form(url: str) -> str:
    """``http://host/p?q`` -> ``/p?q``; origin-form request targets pass unchanged."""
    if url.startswith(("http://", "https://", "ws://", "wss://")):
        rest = url.split("://", 1)[1]
        i = rest.find("/")
        return rest[i:] if i >= 0 else "/"
    return url or "/"

"""HTTP/1.1 client to the origin: keep-alive pool, request/response exchanges, ordered failover.

Every proxied request makes one origin request, so this is a hand-written ``asyncio.Protocol``
with ``httptools.HttpResponseParser`` rather than aiohttp's client (about 10x cheaper per request,
research python-stack.md section 3.5). The response is streamed to a ``ResponseHandler`` with
backpressure both ways (P5). This module holds the pool (:class:`OriginPool`) and the exchange
(:class:`OriginExchange`, one request and its response, replayed once on a dead reused
connection); the connection that parses responses and bounds their heads is in
:mod:`gripd.io.origin.connection`, and :class:`~gripd.io.origin.endpoint.Endpoint` with the
route-target resolution in :mod:`gripd.io.origin.endpoint`.

Behaviour (Pushpin 1.36 via zurl):

* F10: several targets are ordered failover, not load balancing. The next one is tried only on a
  connect error, connect timeout or TLS error; once connected, failures go to the handler.
* F11: ``ssl`` targets use TLS; ``insecure`` turns verification off; SNI is ``server_hostname``.
* A connection goes back to the pool only after a complete keep-alive response to a complete
  request; idle ones are closed after ``idle_timeout``, oldest first past the per-endpoint cap.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import typing
from collections.abc import Callable, Sequence
from typing import Literal

from gripd.core.errors import OriginConnectError, OriginError
from gripd.core.headers import Headers
from gripd.io.listener.flusher import Flusher
from gripd.io.origin.connection import OriginConnection
from gripd.io.origin.endpoint import Endpoint

__all__ = [
    "OriginExchange",
    "OriginPool",
    "ResponseHandler",
]

BodyFraming = Literal["none", "length", "chunked"]

# A reused keep-alive connection may turn out dead (the origin closed it as we wrote). The request
# is replayed once on a fresh connection if what was sent so far is still buffered; this caps it.
_REPLAY_MAX = 256 * 1024


class ResponseHandler(typing.Protocol):
    """Receives one origin response, streamed. Called on the event loop thread."""

    def on_response_head(self, status: int, reason: str, headers: Headers) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_error(self, exc: OriginError) -> None: ...


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
        "_deadline",
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
        self._conn: OriginConnection | None = None
        self._done = False
        self._paused = False
        self._activity = False
        # Request bytes kept for a replay; only while on a reused connection with no response yet.
        self._sent: list[bytes] | None = None
        self._sent_size = 0
        # Loop time by which the response head must begin (response_timeout), 0.0 when not
        # waiting for it. The connection's watch timer reads it (``check_deadline``).
        self._deadline = 0.0
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
        if self._deadline:  # still waiting for the response head
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

    def start(self, conn: OriginConnection, head: bytes, reused: bool) -> None:
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
        self._deadline = 0.0
        self._handler.on_response_head(status, reason, headers)

    def check_deadline(self) -> None:
        """The connection's watch timer fired: fail on ``response_timeout``, or have the
        connection watch again (the deadline moved, or request bytes still moved)."""
        deadline = self._deadline
        if not deadline or self._done:
            return
        if self._pool.now() < deadline - _TIMER_SLACK:
            if self._conn is not None:
                self._conn.watch(deadline)
            return
        if self._activity:
            self._restart_timer()  # an upload still moving is not an origin timeout
            return
        self.fail(OriginError("timeout"))

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

    def _attach(self, conn: OriginConnection) -> None:
        self._conn = conn
        conn.attach(self)
        if self._paused:
            conn.pause()
        if self._deadline:  # a replay's new connection
            conn.watch(self._deadline)

    def _detach(self) -> OriginConnection | None:
        conn = self._conn
        self._conn = None
        if conn is not None and conn.exchange is self:
            conn.exchange = None
        return conn

    def _restart_timer(self) -> None:
        # response_timeout: the longest wait for the response head with no request activity
        # (request head, body bytes, end of body) in between. No timer per exchange: the
        # connection keeps one watch timer across its exchanges, and moving a deadline is a
        # store (a loop timer made and cancelled per request was 3.6 % of a pass-through
        # request's CPU, bench/RESULTS.md).
        self._activity = False
        self._deadline = deadline = self._pool.now() + self._pool.response_timeout
        if self._conn is not None:
            self._conn.watch(deadline)

    def _finish_state(self) -> None:
        self._done = True
        self._sent = None
        self._deadline = 0.0
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


#: uvloop's clock and timers count whole milliseconds, so a watch can fire up to this much before
#: the deadline it was set for, by ``loop.time()`` (seen up to 0.5 ms); that counts as reached,
#: with no re-arm for the remainder, as the timer made per exchange did before.
_TIMER_SLACK = 0.001

_CONNECT_ERRORS = (OSError, ssl.SSLError, ssl.CertificateError, TimeoutError)


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
        flusher: Flusher | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        # Request bytes go out at the end of the loop tick through ``flusher`` (None: at once),
        # with the other connections' writes of that tick.
        self.flusher = flusher
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
        self._idle: dict[Endpoint, dict[OriginConnection, None]] = {}
        self._conns: set[OriginConnection] = set()
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

    def now(self) -> float:
        """The loop's time (the clock of exchange deadlines)."""
        return self._ev().time()

    def call_at(self, when: float, cb: Callable[[], None]) -> asyncio.TimerHandle:
        """Call ``cb`` at loop time ``when`` (a connection's watch over exchange deadlines)."""
        return self._ev().call_at(when, cb)

    def spawn(self, coro: typing.Coroutine[typing.Any, typing.Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` (an exchange's replay) as a task that ``close()`` cancels."""
        task = self._ev().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def connect(self, ep: Endpoint) -> OriginConnection:
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
                lambda: OriginConnection(self, ep),
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

    def release(self, conn: OriginConnection) -> None:
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

    def forget(self, conn: OriginConnection) -> None:
        """Drop a closed connection from the books (open and idle sets, idle timer)."""
        self._conns.discard(conn)
        idle = self._idle.get(conn.endpoint)
        if idle is not None and conn in idle:
            del idle[conn]
            if not idle:
                del self._idle[conn.endpoint]

    # -- internals ------------------------------------------------------------------------------

    def _ev(self) -> asyncio.AbstractEventLoop:
        """The loop the pool's connections run on (the running one until the first connect)."""
        return self._loop or asyncio.get_running_loop()

    def _call_later(self, delay: float, cb: Callable[[], None]) -> asyncio.TimerHandle:
        return self._ev().call_later(delay, cb)

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

    def _take_idle(self, ep: Endpoint) -> OriginConnection | None:
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

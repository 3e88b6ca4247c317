"""One HTTP/1.1 connection to an origin: the ``asyncio.Protocol`` that reads each response with
``httptools.HttpResponseParser`` for the :class:`~gripd.io.origin.http.OriginExchange` it carries,
and the byte and line budget of a response head.

Kept apart from the pool and the exchange (:mod:`gripd.io.origin.http`) because it is the part
that parses what an origin sends; the WebSocket client uses the head budget too.

* Responses are framed by Content-Length, chunked encoding or EOF. EOF-delimited responses,
  ``Connection: close`` and HTTP/1.0 without keep-alive are never pooled. HEAD, 204 and 304 have
  no body whatever Content-Length says; 1xx interim responses are skipped (P6). A status under
  100, or a 1xx with a body, is an origin error (502), as in Pushpin.
* A parser serves the exchanges of its connection one after the other, except after a HEAD
  response, when a fresh one is made: httptools ignores "skip body" for HEAD, so the same
  parser would read the next response as the HEAD body (verified pitfall, P6).
* The response head (status line and header lines, 1xx interim heads included) is capped at
  ``response_head_max`` bytes and ``RESPONSE_HEAD_LINES_MAX`` lines (``HeadBudget``); past either
  the exchange fails and the client gets Pushpin's 502. Without it an origin that never ends its
  head grows memory without bound (httptools keeps a partial header value in memory, and llhttp
  has no size limit of its own).
"""

from __future__ import annotations

import asyncio
import typing
from typing import TYPE_CHECKING

import httptools

from gripd.core.errors import OriginError
from gripd.core.headers import Headers
from gripd.core.http import interim_head_problem, persistent
from gripd.io.listener.client_writes import WRITE_NOW

if TYPE_CHECKING:
    from gripd.io.origin.endpoint import Endpoint
    from gripd.io.origin.http import OriginExchange, OriginPool

__all__ = ["RESPONSE_HEAD_LINES_MAX", "HeadBudget", "OriginConnection"]

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

    size: int  # status and header lines seen, of every head so far (1xx included)
    lines: int
    raw: int  # bytes read since the head began / since the last body byte

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.reset()

    def reset(self) -> None:
        """Nothing counted yet (a new exchange on the connection)."""
        self.size = 0
        self.lines = 0
        self.raw = 0

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


class OriginConnection(asyncio.Protocol):
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
        "_pending",
        "_pending_size",
        "_pool",
        "_reading_paused",
        "_reason",
        "_watch",
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
        self._pending: list[bytes] | None = None  # request bytes queued for the tick's end
        self._pending_size = 0
        self._budget = HeadBudget(pool.response_head_max)
        # One timer over the deadlines of the exchanges this connection carries (each
        # exchange's response_timeout); it outlives them, so a keep-alive connection makes one
        # timer per response_timeout, not one per request.
        self._watch: asyncio.TimerHandle | None = None
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
        self._budget.reset()

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    # -- used by the exchange and the pool ----------------------------------------------------

    def attach(self, ex: OriginExchange) -> None:
        self.exchange = ex
        self._reset_response()
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)

    def watch(self, deadline: float) -> None:
        """Have the current exchange's ``check_deadline`` called at ``deadline`` or later (an
        armed watch fires sooner and is re-armed by it: deadlines only move later)."""
        if self._watch is None and not self._closed:
            self._watch = self._pool.call_at(deadline, self._on_watch)

    def _on_watch(self) -> None:
        self._watch = None
        ex = self.exchange
        if ex is not None and not self._closed:
            ex.check_deadline()

    def _unwatch(self) -> None:
        w, self._watch = self._watch, None
        if w is not None:
            w.cancel()

    def write(self, data: bytes) -> None:
        """Send request bytes: at the end of the loop tick through the pool's flusher (a
        large body at once, past ``WRITE_NOW`` in a tick, so flow control sees it), else now.
        Sends made back to back find their reader awake more often (bench/RESULTS.md)."""
        if self.transport is None or self._closed:
            return
        flusher = self._pool.flusher
        if flusher is None:
            self.transport.write(data)
            return
        if self._pending is None:
            self._pending = [data]
            self._pending_size = len(data)
            flusher.mark(self)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending_size >= WRITE_NOW:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        self._pending_size = 0
        if pending and self.transport is not None and not self._closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

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
        self._pending = None
        self._unwatch()
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
        self._unwatch()
        self._pool.forget(self)
        self._parser = None  # it holds this connection's callbacks: a cycle (see client.py)
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
        if not reusable or ex.method == "HEAD":
            # The parser goes with the connection, except when its response ended at the
            # head (HEAD): llhttp would read the next response as that one's body (P6). A
            # parser whose message completed is at a message boundary: the next exchange on
            # this connection reuses it (making one was 1.5 % of a pass-through request).
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
    return persistent(version, tokens)

"""The HTTP control API server (F28): ``POST /publish``, ``POST /recover``, ``GET /``, and
gripd's own history read API, ``GET /channels/<channel>/items`` (see docs/history.md).

A thin asyncio adapter mirroring Pushpin's ``SimpleHttpServer`` (src/corelib/simplehttpserver.cpp):
one request per connection, every reply with ``Connection: close`` and ``Content-Length``, then
the connection is closed. With ``[gripd] control_keep_alive`` (off by default) a connection may
carry many requests instead, pipelined or one after another (HTTP/1.1 unless the request says
``Connection: close``; HTTP/1.0 with ``Connection: keep-alive``); the answers then come in order
and omit ``Connection: close``, and an error in a request's framing still closes.

The header block ends at the first blank line (LF or CRLF) and must fit in ``max_headers_size``
bytes; it is parsed by ``httptools``. The body is framed by
``Content-Length`` only: a request that needs a body and has no Content-Length, or that uses
``Transfer-Encoding``, is refused with 411 as Pushpin does (so chunked bodies are refused).
Routing and validation are pure (``gripd.core.publish.handle_control_request``); the reply is
written before items are handed to the sink. The history read API is answered here, from a
``HistoryReader`` (possibly later, when the store is remote; bounded by ``history_timeout``).

``header_timeout`` (``client_header_timeout``) bounds the whole request, head and body, from
accept (on a persistent connection, from the previous answer; one that receives nothing in that
time is closed without an answer): a peer that has not sent it all by then gets ``408`` and a
close, so slow or stalled peers cannot hold connections open. The deadlines share one loop
timer per server (:class:`~gripd.io.deadlines.DeadlineQueue`), no task per connection; a
persistent connection whose later deadline no longer fits the queue's order keeps a loop timer
of its own, moved as lazily (one call per timeout period, not per request).

Publishers send one request per published item all day, so this path is kept short: the head
is searched where it arrived, a header block seen before is not parsed again (``HeadCache``),
the fixed 200 answers are encoded once, and on a persistent connection the answer goes out at
the end of the loop tick, with the deliveries of what it published.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import typing

import httptools

from gripd.core.headers import Headers
from gripd.core.history import Replay
from gripd.core.http import persistent
from gripd.core.itemjson import accepts_json, history_body, items_channel, parse_items_query
from gripd.core.pubauth import PublishGate
from gripd.core.publish import (
    ControlReply,
    PublishItem,
    handle_control_request,
)
from gripd.io.deadlines import DeadlineQueue
from gripd.io.inputs.control_wire import (
    PLAIN_HEADER_LINES,
    REQUEST_LINE,
    HeadCache,
    HeadParser,
    ParsedHead,
    encode,
    encode_cached,
    header_block,
    rename_framing,
)
from gripd.io.listener.flusher import Flusher
from gripd.io.observe.ticklog import TickLog

if typing.TYPE_CHECKING:
    from gripd.io.handler.history import HistoryReader

_LOG = logging.getLogger("gripd.control")
_HEAD_END = re.compile(rb"\n\r?\n")
_CL_RE = re.compile(rb"[ \t\n\r\v\f]*([+-]?[0-9]+)[ \t\n\r\v\f]*\Z")
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}  # request line -> persistent()'s form
_NO_BODY_METHODS = frozenset({"HEAD", "GET", "DELETE", "OPTIONS"})

HISTORY_READ_TIMEOUT: typing.Final = 5.0  # seconds to wait for the store before a 503


class PublishSink(typing.Protocol):
    """Where validated control API requests go (the hub)."""

    def publish(self, items: list[PublishItem], *, source: str) -> None: ...

    def recover(self) -> None: ...


class ControlLimits:
    """The control API's bounds, read by each new connection (a config reload changes them:
    ``push_in_http_max_headers_size``, ``push_in_http_max_body_size``,
    ``client_header_timeout``, ``[gripd] control_keep_alive``)."""

    __slots__ = ("header_timeout", "keep_alive", "max_body_size", "max_headers_size")

    def __init__(
        self,
        max_headers_size: int,
        max_body_size: int,
        header_timeout: float,
        keep_alive: bool = False,
    ) -> None:
        self.max_headers_size = max_headers_size
        self.max_body_size = max_body_size
        self.header_timeout = header_timeout
        self.keep_alive = keep_alive


class ControlProtocol(asyncio.Protocol):
    """One control API connection: read one request, answer it, close (or, persistent, read
    the next one)."""

    __slots__ = (
        "_auth",
        "_buf",
        "_close_after",
        "_content_length",
        "_deadline",
        "_deadlines",
        "_expect",
        "_flusher",
        "_has_te",
        "_header_timeout",
        "_headers",
        "_heads",
        "_held",
        "_history",
        "_history_timeout",
        "_history_timer",
        "_http10",
        "_keep_alive",
        "_length",
        "_lines",
        "_log",
        "_loop",
        "_max_body",
        "_max_headers",
        "_method",
        "_next",
        "_next_pos",
        "_out",
        "_persist",
        "_replied",
        "_served",
        "_sink",
        "_state",
        "_timer",
        "_transport",
        "_uri",
        "_write_paused",
        "deadline_queued",
    )

    def __init__(
        self,
        sink: PublishSink,
        *,
        max_headers_size: int,
        max_body_size: int,
        logger: logging.Logger,
        lines: TickLog | None = None,
        header_timeout: float = 0.0,
        history: HistoryReader | None = None,
        history_timeout: float = HISTORY_READ_TIMEOUT,
        auth: PublishGate | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        deadlines: DeadlineQueue | None = None,
        keep_alive: bool = False,
        flusher: Flusher | None = None,
        heads: HeadCache | None = None,
    ) -> None:
        self._sink = sink
        self._heads = heads  # the server's parsed header blocks (None: parse each)
        # Answers are written at the end of the loop tick through ``flusher`` (None: at once),
        # together with the deliveries of the items they publish; a close waits for them.
        self._flusher = flusher
        self._out: list[bytes] | None = None
        self._close_after = False
        self._loop = loop  # None: the running loop, looked up when needed
        self._deadlines = deadlines  # the server's shared header_timeout timer, if any
        self.deadline_queued = False  # waiting in self._deadlines
        self._deadline = 0.0  # when the request being read times out (loop time); 0: none
        self._auth = auth
        self._history = history
        self._history_timeout = history_timeout
        self._header_timeout = header_timeout
        self._timer: asyncio.TimerHandle | None = None  # when not in self._deadlines
        self._history_timer: asyncio.TimerHandle | None = None
        self._max_headers = max_headers_size
        self._max_body = max_body_size
        self._log = logger
        self._lines = lines  # the publish request lines (F53), written in batches
        self._transport: asyncio.Transport | None = None
        self._state = "head"  # head -> body -> done
        self._buf = bytearray()
        self._method = ""
        self._uri = ""
        self._headers: Headers = []
        # From the parsed head, once: the first Content-Length and Expect values, and whether
        # a Transfer-Encoding was sent (names after the X-Gripd- renaming undone).
        self._content_length: str | None = None
        self._has_te = False
        self._expect: str | None = None
        self._http10 = False
        self._length = 0
        self._replied = False
        # Persistent connections ([gripd] control_keep_alive): whether this request's answer
        # leaves the connection open, how many were answered, the bytes after this request
        # (pipelined) and those received while an answer is still to come (a history read).
        self._keep_alive = keep_alive
        self._persist = False
        self._served = 0
        self._next = b""
        self._next_pos = 0  # where the next request starts in self._next
        self._held = bytearray()
        self._write_paused = False  # the transport asked to stop writing (pause_writing)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = typing.cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport = transport
        self._arm()

    def _arm(self) -> None:
        """Start the ``client_header_timeout`` deadline of the next request (a timer already
        waiting, for an earlier deadline, is kept: it finds this one when it fires)."""
        if self._header_timeout > 0:
            loop = self._loop or asyncio.get_running_loop()
            self._deadline = loop.time() + self._header_timeout
            if not self.deadline_queued and self._timer is None:
                self._wait_until(self._deadline)

    def _wait_until(self, deadline: float) -> None:
        deadlines = self._deadlines
        if deadlines is None or not deadlines.add(self, deadline):
            loop = self._loop or asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self.on_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._out = None
        self._state = "done"
        self._cancel_timer()
        if self.deadline_queued:  # its entry is dropped when reached
            self.deadline_queued = False
            typing.cast(DeadlineQueue, self._deadlines).finished()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> str:
        """The peer's address, for log lines (looked up only then: a syscall per connection)."""
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        return str(peer[0]) if peer else ""

    def _cancel_timer(self) -> None:
        """The request is complete: no deadline (the timers are left to find that out)."""
        self._deadline = 0.0
        if self._history_timer is not None:
            self._history_timer.cancel()
            self._history_timer = None

    def on_deadline(self) -> None:
        """The request deadline may have passed (the server's queue, or the own timer)."""
        self._timer = None
        deadline = self._deadline
        if deadline == 0.0 or self._state == "done" or self._transport is None:
            return
        loop = self._loop or asyncio.get_running_loop()
        # The loop may run a timer up to its clock resolution early; count that as due.
        if deadline > loop.time() + 0.001:  # a later request's deadline: wait for it
            self._wait_until(deadline)
            return
        if self._served and self._state == "head" and not self._buf:
            self._state = "done"  # an idle persistent connection: closed without an answer
            self._transport.close()
            return
        self._log.info(
            "control: request not complete within client_header_timeout (%gs) in state %s, "
            "408; peer %s",
            self._header_timeout,
            self._state,
            self._peer(),
        )
        self._error(408, "Request Timeout", "Request not complete in time.")

    def data_received(self, data: bytes) -> None:
        if self._state == "done":
            if self._persist and not self._replied and self._transport is not None:
                # A persistent connection's answer is still to come: later requests wait.
                self._held += data
                self._transport.pause_reading()
            return  # anything after the request is ignored, as in Pushpin
        served = self._served
        try:
            self._feed(data, 0)
            # Pipelined requests, after the previous one's answer: read where it ended in the
            # same bytes (not from a copy of the rest, which costs the square of the requests).
            while self._next:
                data, pos = self._next, self._next_pos
                self._next = b""
                if self._state == "done":  # that answer is still to come
                    self._held += memoryview(data)[pos:]
                    if self._transport is not None:
                        self._transport.pause_reading()
                    return
                served = self._served
                self._feed(data, pos)
        except Exception:  # never let one bad client take the server down
            self._log.exception("control: error handling request")
            # Unless this request was answered (a persistent connection is reset at its answer)
            if not self._replied and self._served == served:
                self._error(500, "Internal Server Error", "Internal error.")

    def _feed(self, data: bytes, pos: int) -> None:
        if self._state == "head":
            self._read_head(data, pos)
        else:
            self._read_body(data, pos)

    def _resume_held(self) -> None:
        """Read the requests that arrived while an answer was awaited (persistent)."""
        transport = self._transport
        if transport is None or self._state == "done":
            return
        data = bytes(self._held)
        self._held.clear()
        if not self._write_paused:  # else resume_writing resumes reading
            transport.resume_reading()
        if data:
            self.data_received(data)

    def pause_writing(self) -> None:
        # Answers pile up (a pipelining peer that does not read them): stop reading requests.
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._held:
            self._transport.resume_reading()

    def _read_head(self, data: bytes, pos: int) -> None:
        """The head from ``data[pos:]`` (bytes before ``pos`` were earlier requests)."""
        # Only the first max_headers_size bytes may hold the header block (Pushpin reads no more).
        # Usually the whole head arrives in one piece: it is searched in place, not copied.
        buf = self._buf
        pending = bool(buf)
        if pending:
            buf += memoryview(data)[pos:]
            data = bytes(buf)
            pos = 0
        limit = self._max_headers
        m = _HEAD_END.search(data, pos, pos + limit if limit >= 0 else len(data) + limit)
        if m is None:
            if len(data) - pos >= limit:
                self._error(400, "Bad Request", "Request header too large.")
            elif not pending:
                buf += memoryview(data)[pos:]
            return
        end = m.end()
        head = data[pos:end]
        buf.clear()
        if not self._parse_head(head):
            return
        cl_value = self._content_length
        if cl_value is None and (self._has_te or self._method not in _NO_BODY_METHODS):
            self._error(411, "Length Required", "Request requires Content-Length.")
            return
        if cl_value is not None:
            cl = _CL_RE.match(cl_value.encode("latin-1"))
            if cl is None or not -(2**31) <= int(cl.group(1)) < 2**31:
                self._error(400, "Bad Request", "Bad Content-Length.")
                return
            self._length = int(cl.group(1))
            if self._length > self._max_body:
                self._error(400, "Bad Request", "Request body too large.")
                return
            if self._expect == "100-continue" and self._transport is not None:
                ver = "1.0" if self._http10 else "1.1"
                self._send(f"HTTP/{ver} 100 Continue\r\n\r\n".encode(), close=False)
        self._state = "body"
        self._read_body(data, end)

    def _parse_head(self, head: bytes) -> bool:
        """Parse the head like Pushpin; answer 400 if it is malformed.

        The request line is split on its first two spaces exactly as Pushpin does (any method
        token is accepted, so unknown methods get 405, not 400). Lines may end in LF or CRLF;
        header lines without ``:`` are skipped. The header lines are then validated and split
        by httptools, behind a fixed request line, with the framing headers renamed so that
        httptools never applies its own body rules (Pushpin's are applied by the caller).
        """
        nl = head.find(b"\n")  # the head ends with a blank line: there is one
        request_line = head[: nl - 1] if head[nl - 1 : nl] == b"\r" else head[:nl]
        parts = request_line.split(b" ", 2)
        if len(parts) < 3 or not parts[0]:
            self._error(400, "Bad Request", "Failed to parse request header.")
            return False
        rest = head[nl + 1 :]
        heads = self._heads
        key = HeadCache.key(rest) if heads is not None else None
        if key is not None:
            known = typing.cast(HeadCache, heads).get(key[0])
            if known is not None:
                headers = known.headers.copy()
                name = headers[known.cl_index][0]
                cl = key[1].decode("latin-1")
                headers[known.cl_index] = (name, cl)
                self._set_head(parts, headers, cl, known.has_te, known.expect, known.connection)
                return True
        if PLAIN_HEADER_LINES.fullmatch(rest) is not None:
            # Every line ends in CRLF and has a ":": header_block would rebuild ``rest`` itself.
            block = REQUEST_LINE + rename_framing(rest)
        else:
            block = header_block(rest)
        collector = HeadParser()
        parser = httptools.HttpRequestParser(collector)
        try:
            parser.feed_data(block)
        except httptools.HttpParserUpgrade:
            pass  # "Connection: upgrade" means nothing here; the head was parsed
        except httptools.HttpParserError:
            pass
        if not collector.done:
            self._error(400, "Bad Request", "Failed to parse request header.")
            return False
        c = collector
        if key is not None and c.cl_count == 1:
            at = next(i for i, (k, _) in enumerate(c.headers) if k.lower() == "content-length")
            typing.cast(HeadCache, heads).put(
                key[0], ParsedHead(c.headers.copy(), at, c.has_te, c.expect, c.connection)
            )
        self._set_head(parts, c.headers, c.content_length, c.has_te, c.expect, c.connection)
        return True

    def _set_head(
        self,
        parts: list[bytes],
        headers: Headers,
        content_length: str | None,
        has_te: bool,
        expect: str | None,
        connection: str,
    ) -> None:
        self._method = parts[0].decode("latin-1")
        self._uri = parts[1].decode("latin-1")
        self._http10 = parts[2] == b"HTTP/1.0"
        self._headers = headers
        self._content_length = content_length
        self._has_te = has_te
        self._expect = expect
        if self._keep_alive:
            tokens = [t.strip() for t in connection.split(",")] if connection else ()
            self._persist = persistent(_VERSIONS.get(parts[2], ""), tokens)

    def _read_body(self, data: bytes, pos: int) -> None:
        """The body from ``data[pos:]``; what follows it is the next request (pipelined)."""
        length = self._length
        buf = self._buf
        if buf:
            buf += memoryview(data)[pos:]
            if len(buf) < length:
                return
            data = bytes(buf)
            pos = 0
            buf.clear()
        elif len(data) - pos < length:
            buf += memoryview(data)[pos:]
            return
        end = pos + length
        if len(data) > end:
            if not self._persist:
                self._error(400, "Bad Request", "Request body exceeded Content-Length.")
                return
            self._next, self._next_pos = data, end
        # The whole body in one piece (the usual case, a lone request): no copy.
        self._state = "done"
        self._dispatch(data if pos == 0 and end == len(data) else data[pos:end])

    def _refused(self, gate: PublishGate) -> bool:
        """``publish_key``: answer 401/403 and return True unless the request carries a valid
        ``Authorization: Bearer <JWT>``. ``/`` (the fixed "Pushpin API" answer, a liveness
        probe that reads and changes nothing) needs no token. The token is never logged."""
        if gate.auth is None or self._uri in ("/", "//"):
            return False
        values = [v for k, v in self._headers if k.lower() == "authorization"]
        refused = gate.check(values, time.time())
        if refused is None:
            return False
        self._log.warning(
            "control: %s %s code=%d refused: %s peer %s",
            self._method,
            self._uri,
            refused.code,
            refused.message,
            self._peer(),
        )
        headers: Headers = [("WWW-Authenticate", "Bearer")] if refused.code == 401 else []
        headers.append(("Content-Type", "text/plain"))
        self._write(refused.code, refused.reason, headers, (refused.message + "\n").encode())
        return True

    def _dispatch(self, body: bytes) -> None:
        if self._auth is not None and self._refused(self._auth):
            return
        path, _, query = self._uri.partition("?")
        encoded = items_channel(path)
        if encoded is not None:
            self._read_items(encoded, query)
            return
        reply: ControlReply = handle_control_request(self._method, self._uri, self._headers, body)
        # 200 answers are a handful of fixed texts: their bytes are built once (_ENCODED).
        self._write(reply.code, reply.reason, reply.headers, reply.body, cache=reply.code == 200)
        lines = self._lines
        if lines is not None and lines.enabled():
            lines.info(reply.log)
        else:
            self._log.info("%s", reply.log)
        # Pushpin answers before it processes the items (F28).
        if reply.items is not None:
            try:
                self._sink.publish(reply.items, source="http")
            except Exception:
                self._log.exception("control: publish failed")
        if reply.recover:
            try:
                self._sink.recover()
            except Exception:
                self._log.exception("control: recover failed")

    def _read_items(self, encoded_channel: str, query: str) -> None:
        """``GET /channels/<channel>/items``: answered when the history reader answers."""
        if not accepts_json(self._headers):
            self._answer(
                406, "Not Acceptable", "Not Acceptable. Supported format is application/json."
            )
            return
        if self._method != "GET":
            message = f"Method not allowed: {self._method}."
            self._answer(405, "Method Not Allowed", message, extra=[("Allow", "GET")])
            return
        q = parse_items_query(encoded_channel, query)
        if isinstance(q, str):
            self._answer(400, "Bad Request", q)
            return
        reader = self._history
        asked_after = q.after is not None
        if reader is None:  # history not available in this process: nothing is stored
            self._answer_items(Replay("off"), asked_after)
            return
        done = False
        served = self._served  # a persistent connection may be on a later request by then

        def answer(replay: Replay) -> None:
            nonlocal done
            if done:
                return
            done = True
            if not self._replied and self._served == served:
                self._answer_items(replay, asked_after)

        self._cancel_timer()  # the request is complete: from here the store's time counts
        if self._history_timeout > 0:
            loop = asyncio.get_running_loop()
            self._history_timer = loop.call_later(self._history_timeout, self._on_history_timeout)
        try:
            reader.read(q.channel, q.after, q.limit, answer)
        except Exception:
            done = True
            self._log.exception("control: history read failed")
            if not self._replied:
                self._answer(500, "Internal Server Error", "Internal error.")

    def _on_history_timeout(self) -> None:
        self._history_timer = None
        if not self._replied:
            self._log.warning(
                "control: history not read within %gs; 503 for %s", self._history_timeout, self._uri
            )
            self._answer(503, "Service Unavailable", "History not available, try again.")

    def _answer_items(self, replay: Replay, asked_after: bool) -> None:
        if replay.status == "gone" and not asked_after:
            # "gone" without an id asked for: the store could not be read (Redis unreachable)
            self._answer(503, "Service Unavailable", "History not available, try again.")
            return
        try:
            body = history_body(replay, asked_after)
        except Exception:
            self._log.exception("control: history answer failed")
            self._answer(500, "Internal Server Error", "Internal error.")
            return
        headers: Headers = [("Content-Type", "application/json")]
        self._write(200, "OK", headers, body)
        self._log.info(
            "control: %s %s code=200 %d items=%d",
            self._method,
            self._uri,
            len(body),
            len(replay.items),
        )

    def _answer(
        self, code: int, reason: str, message: str, *, extra: Headers | None = None
    ) -> None:
        """A text answer to a read (the style of the API's other errors), and its log line."""
        body = (message + "\n").encode()
        headers: Headers = [*(extra or []), ("Content-Type", "text/plain")]
        self._write(code, reason, headers, body)
        self._log.info("control: %s %s code=%d %d", self._method, self._uri, code, len(body))

    def _error(self, code: int, reason: str, message: str) -> None:
        self._state = "done"
        self._persist = False  # the request's framing failed: nothing after it can be read
        self._write(code, reason, [("Content-Type", "text/plain")], (message + "\n").encode())

    def _write(
        self, code: int, reason: str, headers: Headers, body: bytes, *, cache: bool = False
    ) -> None:
        self._state = "done"
        self._replied = True
        self._cancel_timer()
        self._buf.clear()
        transport = self._transport
        if transport is None:
            return
        encoder = encode_cached if cache else encode
        keep = self._persist
        self._send(encoder(code, reason, headers, body, self._http10, keep), close=not keep)
        if not keep:
            self._next = b""
            return
        # Persistent: ready for the next request (its fields are set when its head is parsed).
        self._served += 1
        self._state = "head"
        self._replied = False
        self._length = 0
        self._persist = False
        self._arm()
        if self._held:  # requests that arrived while this answer was awaited
            (self._loop or asyncio.get_running_loop()).call_soon(self._resume_held)

    def _send(self, data: bytes, *, close: bool) -> None:
        """Write ``data`` (then close, with ``close``): on a persistent connection, at the end
        of the tick with a flusher, after any earlier answer still queued (pipelined ones go out
        in one write). A last answer with nothing queued before it is written and closed at
        once: deferring that measured no gain (bench/RESULTS.md, "Control API answers")."""
        transport = self._transport
        if transport is None:
            return
        flusher = self._flusher
        if flusher is None or (close and self._out is None):
            transport.write(data)
            if close:
                transport.close()  # flushes the reply first
            return
        if self._out is None:
            self._out = [data]
            flusher.mark(self)
        else:
            self._out.append(data)
        if close:
            self._close_after = True

    def flush(self) -> None:
        """The flusher's end-of-tick call: write the queued answers, then close if asked."""
        out, self._out = self._out, None
        transport = self._transport
        if transport is None:
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._close_after:
            transport.close()  # flushes the reply first


async def start_control_server(
    sink: PublishSink,
    host: str,
    port: int,
    *,
    logger: logging.Logger | None = None,
    history: HistoryReader | None = None,
    history_timeout: float = HISTORY_READ_TIMEOUT,
    auth: PublishGate | None = None,
    limits: ControlLimits | None = None,
    lines: TickLog | None = None,
) -> asyncio.Server:
    """Listen for control API requests on ``host:port`` (``push_in_http_addr``/``_port``).
    ``history`` answers
    ``GET /channels/<channel>/items`` (None: nothing is stored, every read is empty); its
    ``done`` callback must run on this event loop, within ``history_timeout`` seconds (else
    503; 0 waits without limit). ``auth`` (``publish_key``) refuses requests without a valid
    ``Authorization: Bearer <JWT>`` with 401/403. ``limits`` (default: Pushpin's sizes, no
    header timeout) is read again for each connection. ``lines`` takes the request lines of
    publishes (one write per batch rather than per request)."""
    log = logger or _LOG
    loop = asyncio.get_running_loop()
    lim = limits or ControlLimits(10000, 1_000_000, 0.0)
    deadlines = DeadlineQueue(loop)
    flusher = Flusher(loop)
    heads = HeadCache()
    return await loop.create_server(
        lambda: ControlProtocol(
            sink,
            max_headers_size=lim.max_headers_size,
            max_body_size=lim.max_body_size,
            logger=log,
            lines=lines,
            header_timeout=lim.header_timeout,
            history=history,
            history_timeout=history_timeout,
            auth=auth,
            loop=loop,
            deadlines=deadlines,
            keep_alive=lim.keep_alive,
            flusher=flusher,
            heads=heads,
        ),
        host,
        port,
    )

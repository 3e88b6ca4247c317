"""Held client connections: response holds (long-polling, F22) and stream holds (F24).

A hold is the connection's request handler while it waits for publishes. It owns at most one
timer handle (response timeout or keep-alive) and no task. Delivery takes bytes that the engine
encoded once for every subscriber.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from asyncio import TimerHandle
from typing import TYPE_CHECKING, Final

from gripd.core.cors import apply_cors
from gripd.core.headers import Headers
from gripd.core.http import LAST_CHUNK, HttpResponse, encode_chunk, encode_head, text_response
from gripd.core.instruct import Instruct
from gripd.core.jsonp import wrap_held_response
from gripd.core.stats import encoded_head_bytes_estimate, header_bytes_estimate
from gripd.io.observe.events import requests_observed
from gripd.io.origin.nextlink import LinkState, resolve

if TYPE_CHECKING:
    from gripd.core.routes import Route
    from gripd.io.handler.engine import Engine
    from gripd.io.handler.history import ResumeState
    from gripd.io.listener.conn import ClientConn
    from gripd.io.listener.request import Request

log = logging.getLogger("gripd.hold")


def _jitter() -> float:
    """F20/F39: keep-alive delays are the timeout minus a random 0–999 ms."""
    return random.random() * 0.999


class _Hold:
    """RequestHandler part shared by holds: the request is complete, only closing matters."""

    __slots__ = ()
    active: bool
    # A response hold's is always a dict; a compiled (mypyc) subclass cannot narrow the type.
    prev_ids: dict[str, str | None] | None
    gone: str | None
    engine: Engine
    route: Route
    conn: ClientConn

    def _stop(self) -> None:
        raise NotImplementedError

    def _stats_end(self, header: int = 0, content: int = 0) -> None:
        """The held request's response is complete (stats, F43): its connection ends, and
        the bytes of the response sent now count, on the empty route as Pushpin's handler
        counts them."""
        engine = self.engine
        if requests_observed(engine.app.config):
            events = engine.events
            if header:
                events.counter("client-header-bytes-sent", header)
            if content:
                events.counter("client-content-bytes-sent", content)
            events.request_ended(self.conn.id)

    def follows(self, channel: str, prev_id: str | None, item_id: str | None) -> bool:
        """F23/F26: False when a publish does not follow the id this hold expects on
        ``channel``; otherwise the expectation moves on to ``item_id``."""
        if self.prev_ids is None:
            return True
        expected = self.prev_ids.get(channel)
        if expected is None:
            return True
        if prev_id != expected:
            return False
        self.prev_ids[channel] = item_id
        return True

    def on_client_body(self, data: bytes) -> None:
        pass

    def on_client_body_end(self) -> None:
        pass

    def on_client_closed(self) -> None:
        if self.active:
            self._stop()
            gone = self.gone
            if gone:
                self.engine.send_gone(gone, self.route, self.conn.peer)

    def on_client_pause_writing(self) -> None:
        pass

    def on_client_resume_writing(self) -> None:
        pass


class ResponseHold(_Hold):
    """A long-poll: answered once, by a publish or by the timeout (original response)."""

    __slots__ = (
        "active",
        "body",
        "channels",
        "conn",
        "engine",
        "filters",
        "gone",
        "meta",
        "prev_ids",
        "req",
        "resp_key",
        "response",
        "resume",
        "route",
        "timer",
    )
    mode: Final = "response"

    def __init__(
        self,
        engine: Engine,
        conn: ClientConn,
        req: Request,
        route: Route,
        ins: Instruct,
        body: list[bytes],
    ) -> None:
        self.engine = engine
        self.conn = conn
        self.req = req
        self.route = route
        self.channels = [c.name for c in ins.channels]
        # F23: the id each channel's next publish must follow (None: no sequencing asked)
        self.prev_ids = {c.name: c.prev_id for c in ins.channels}
        self.filters = channel_filters(ins)
        self.meta = ins.meta or None  # idle holds keep no empty dict
        self.gone = gone_link(ins, req)
        self.response = ins.response
        r = ins.response
        # Holds whose original responses are equal share one encoded publish (encode once).
        self.resp_key = (
            r.code,
            r.reason,
            tuple(r.headers),
            r.body,
            req.method,
            req.keep_alive,
            req.http_version,
        )
        self.body = body
        self.active = True
        self.resume: ResumeState | None = None  # waits for history: live items wait too
        self.timer: TimerHandle | None = engine.loop.call_later(ins.timeout, self._on_timeout)

    def _stop(self) -> None:
        self.active = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        r = self.resume
        if r is not None and r.timer is not None:
            r.timer.cancel()
            r.timer = None
        self.engine.unsubscribe(self)

    def deliver(self, data: bytes) -> None:
        """Send an already encoded full response and finish the request."""
        if not self.active:
            return
        self._stop()
        if requests_observed(self.engine.app.config):
            head = data.find(b"\r\n\r\n") + 4
            self._stats_end(encoded_head_bytes_estimate(data[:head]), len(data) - head)
        self.conn.write(data)
        self.conn.finish_response(self.req.keep_alive)

    def _on_timeout(self) -> None:
        self.timer = None
        if not self.active:
            return
        self._stop()
        resp = self.response
        if self.req.jsonp is not None:
            resp = wrap_held_response(resp, self.req.jsonp)  # F46
        elif self.engine.app.aco(self.route):
            resp = dataclasses.replace(resp, headers=apply_cors(self.req.headers, resp.headers))
        self._stats_end(header_bytes_estimate(resp.code, resp.reason, resp.headers), len(resp.body))
        self.conn.send_response(resp, self.req.method)

    def retry(self) -> None:
        """Re-send the original request to the origin (``action: hint``, F22/F27), with
        ``Grip-Last`` for the channels that carry a prev-id (names without the route prefix)."""
        if not self.active:
            return
        self._stop()
        n = len(self.route.prefix)
        last = [(ch[n:], pid) for ch, pid in (self.prev_ids or {}).items() if pid is not None]
        self.engine.retry(self.conn, self.req, self.route, self.body, last)

    def fail(self, message: str) -> None:
        """F47: a held response that errors gets 502 (the message on debug routes)."""
        if not self.active:
            return
        self._stop()
        debug = self.route.debug or self.engine.app.config.debug
        body = (message if debug else "Error while proxying to origin.") + "\n"
        self._stats_end()
        self.conn.send_response(text_response(502, body), self.req.method)

    def resync(self) -> None:
        """Out of sequence (F23): ask the origin again."""
        self.retry()


class StreamHold(_Hold):
    """An HTTP stream (F24): the initial response went out; publishes are appended."""

    __slots__ = (
        "active",
        "channels",
        "chunked",
        "conn",
        "dropped",
        "engine",
        "filters",
        "gone",
        "ka_data",
        "ka_interval",
        "ka_timeout",
        "ka_timer",
        "last_write",
        "link",
        "meta",
        "prev_ids",
        "req",
        "resume",
        "route",
    )
    mode: Final = "stream"

    def __init__(
        self,
        engine: Engine,
        conn: ClientConn,
        req: Request,
        route: Route,
        ins: Instruct,
        chunked: bool,
    ) -> None:
        self.engine = engine
        self.conn = conn
        self.req = req
        self.route = route
        self.channels = [c.name for c in ins.channels]
        self.chunked = chunked
        self.active = True
        self.dropped = 0
        self.last_write = engine.loop.time()
        self.ka_timer: TimerHandle | None = None
        self.ka_data = b""
        self.ka_timeout = 0.0
        self.ka_interval = False
        # Reliability state exists only for streams that use it (F25/F26): idle streams stay small.
        self.link: LinkState | None = None
        self.prev_ids: dict[str, str | None] | None = None
        self.gone = gone_link(ins, req)
        self.resume: ResumeState | None = None  # set while a resume from history is pending
        self.apply_stream_instruct(ins)
        if requests_observed(engine.app.config):
            # The initial response (head and body) counts as held-response bytes (stats, F43).
            # (Pushpin's estimate: Connection and Transfer-Encoding are not counted)
            resp = ins.response
            events = engine.events
            events.request_held(conn.id)
            events.counter(
                "client-header-bytes-sent",
                header_bytes_estimate(resp.code, resp.reason, resp.headers),
            )
            if resp.body:
                events.counter("client-content-bytes-sent", len(resp.body))

    def apply_stream_instruct(self, ins: Instruct) -> None:
        """Keep-alive, next link and prev-ids of an initial or next-link stream hold."""
        self.filters = channel_filters(ins)
        self.meta = ins.meta or None  # idle holds keep no empty dict
        if any(c.prev_id is not None for c in ins.channels):
            self.prev_ids = {c.name: c.prev_id for c in ins.channels}
        else:
            self.prev_ids = None
        if ins.next_link is not None:
            if self.link is None:
                self.link = LinkState(self)
            self.link.set(ins.next_link, self.req, self.conn)
        elif self.link is not None:
            self.link.cancel()
            self.link = None
        ka = ins.keep_alive
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        engine = self.engine
        chunked = self.chunked
        if ka is not None and ka.data:
            self.ka_data = encode_chunk(ka.data) if chunked else ka.data
            self.ka_timeout = float(ka.timeout)
            self.ka_interval = ka.mode == "interval"
            self.ka_timer = engine.loop.call_later(self.ka_timeout - _jitter(), self._on_keep_alive)

    def _stop(self) -> None:
        self.active = False
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        if self.link is not None:
            self.link.cancel()
        r = self.resume
        if r is not None and r.timer is not None:
            r.timer.cancel()
            r.timer = None
        self.engine.unsubscribe(self)

    def deliver(self, chunk: bytes, raw: bytes, now: float, channel: str = "") -> bool:
        """Queue one published piece (already framed); False when dropped for a slow client."""
        if not self.active:
            return False
        conn = self.conn
        if conn.buffered() > self.engine.write_buffer_max:
            self.dropped += 1
            self.engine.slow_client(self)
            return False
        conn.queue(chunk if self.chunked else raw)
        self.last_write = now
        if self.link is not None:
            self.link.seen.add(channel)
        return True

    def on_client_resume_writing(self) -> None:
        if self.active and self.link is not None:
            self.link.resume()

    def _settle(self) -> None:
        """Anything written while a resume waits for its replay finishes the resume first,
        with what has arrived (the head must go out before any byte of the body)."""
        r = self.resume
        if r is not None and r.buffer is not None:
            self.engine.finish_resume(self)

    def write(self, data: bytes) -> None:
        """Append bytes of the engine's own making (a next link's body)."""
        self._settle()
        if self.active and data:
            self.conn.queue(encode_chunk(data) if self.chunked else data)
            self.last_write = self.engine.loop.time()

    def resync(self) -> None:
        """Out of sequence (F26): re-fetch the next link."""
        self.update()

    def update(self) -> None:
        """Hint, recover, first subscription, prev-id mismatch: fetch the next link (F25)."""
        if self.active and self.link is not None:
            self.link.fetch()

    def fail(self, message: str) -> None:
        """F47: a held stream that errors: debug routes append the message, then it ends.

        The end is clean (last chunk) with or without debug, as Pushpin's ``doError`` does
        (verified on 1.36: a next link's response hold ends the stream normally)."""
        if not self.active:
            return
        if self.route.debug or self.engine.app.config.debug:
            self.write(f"\n\n{message}\n".encode())
        self.close_stream()

    def close_stream(self) -> None:
        """``action: close`` (F24): end the response cleanly."""
        if not self.active:
            return
        self._settle()
        self._stop()
        self._stats_end()
        if self.chunked:
            self.conn.queue(LAST_CHUNK)
            self.conn.finish_response(True)
        else:
            self.conn.finish_response(False)

    def _on_keep_alive(self) -> None:
        self.ka_timer = None
        if not self.active:
            return
        self._settle()
        loop = self.engine.loop
        now = loop.time()
        idle = now - self.last_write
        if not self.ka_interval and idle < self.ka_timeout - 1.0:
            delay = self.ka_timeout - idle - _jitter()
        else:
            if self.conn.buffered() <= self.engine.write_buffer_max:
                self.conn.queue(self.ka_data)
                self.last_write = now
                self.engine.events.activity("")  # stats (F43): a keep-alive is activity
            delay = self.ka_timeout - _jitter()
        self.ka_timer = loop.call_later(max(delay, 0.05), self._on_keep_alive)


def gone_link(ins: Instruct, req: Request) -> str | None:
    """``Grip-Link: <url>; rel=gone`` (Pushpin 1.41): the absolute URL, or None."""
    for rel, url in ins.other_links:
        if rel == "gone" and url:
            host = next((v for k, v in req.headers if k.lower() == "host"), "localhost")
            return resolve(f"http://{host}{req.url}", url)
    return None


def channel_filters(ins: Instruct) -> dict[str, list[str]] | None:
    """Channel -> its filters (F35), or None when no channel has any (the common case)."""
    out = {c.name: list(c.filters) for c in ins.channels if c.filters}
    return out or None


def stream_head(resp: HttpResponse, chunked: bool) -> bytes:
    """The head of a stream hold's response (F24): chunked, with Pushpin's
    ``Connection: Transfer-Encoding``; HTTP/1.0 clients get a close-delimited body."""
    headers: Headers = list(resp.headers)
    if chunked:
        headers.append(("Connection", "Transfer-Encoding"))
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Connection", "close"))
    return encode_head(resp.code, resp.reason, headers)

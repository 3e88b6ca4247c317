"""WebSocket-over-HTTP to an ``over_http`` target (F40, F41).

The client's WebSocket is carried to the origin as a series of HTTP POSTs whose bodies are
``application/websocket-events``. One request is outstanding per connection; client messages
queue meanwhile and go in the next request (whole messages, at most 200,000 bytes of them). The
origin's answers carry events back (messages, CLOSE, DISCONNECT), ``Set-Meta-*`` headers and a
``Keep-Alive-Interval`` for empty keep-alive POSTs. Connect failures are retried with backoff
(not for the OPEN); the origin refusing the OPEN is relayed to the client as its answer.

Each request is timed: the origin pool gives up on a response head after
``origin_response_timeout``, and the whole exchange (connecting to each target, the head, the
body) is capped at ``origin_connect_timeout`` per target plus ``origin_response_timeout``, so an
origin that sends a head and then stalls its body is not waited on forever either. A timeout is
an ``OriginError`` like any other: a 502 for the OPEN, else retried (F40).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import TYPE_CHECKING

from gripd.core import headers as hdr
from gripd.core.errors import OriginError
from gripd.core.http import HttpResponse, reason_phrase
from gripd.core.routes import rewrite_path
from gripd.core.wsevents import (
    BINARY,
    CLOSE,
    DISCONNECT,
    MAX_BATCH_BYTES,
    OPEN,
    PING,
    PONG,
    RESPONSE_BODY_MAX,
    TEXT,
    WohRejected,
    WsEvent,
    WsEventsError,
    apply_meta_updates,
    batch,
    decode_close_content,
    encode_close_content,
    encode_events,
    parse_woh_response,
    woh_client_101_headers,
    woh_request_headers,
)
from gripd.io.origin.endpoint import origin_form
from gripd.io.origin.http import fetch
from gripd.io.origin.ws_peer import endpoints_for, ws_origin_headers

if TYPE_CHECKING:
    from gripd.io.context import SessionHost
    from gripd.io.handler.ws_session import WsSession

log = logging.getLogger("gripd.woh")

MAX_RETRIES = 5  # F40
# Client message bytes queued while a request is in flight; past this, stop reading the client.
QUEUE_MAX = 2 * MAX_BATCH_BYTES
# What one queued event counts for on top of its content, so that empty events (pings, pongs)
# are bounded too: about the size of its encoded line (``PING\r\n``, ``TEXT 1f\r\n``...).
EVENT_OVERHEAD = 16


def _queued_size(events: list[WsEvent]) -> int:
    return sum(len(e.content or b"") + EVENT_OVERHEAD for e in events)


class WohPeer:
    """One client WebSocket carried over HTTP to its origin."""

    def __init__(self, app: SessionHost, session: WsSession) -> None:
        self.app = app
        self.s = session
        self.cid = str(uuid.uuid4())
        self.queue: list[WsEvent] = []
        self.queued = 0
        self.busy = False
        self.opened = False
        self.closing = False  # we sent CLOSE for the client
        self.gone = False
        self.ka_interval = 0
        self.ka_timer: asyncio.TimerHandle | None = None
        # The client's output is backed up (its socket is not being read): no new requests, so
        # the origin's answers cannot pile up in memory; client messages queue up to QUEUE_MAX.
        self.paused = False
        self.path = rewrite_path(session.route, origin_form(session.req.url))

    def start(self) -> None:
        self.s.link = self
        self.app.woh_opened(self)
        self._send([WsEvent("OPEN", None)])

    # -- OriginLink (what the session sends) -------------------------------------------------

    def send_message(self, is_text: bool, data: bytes) -> None:
        self._push(WsEvent("TEXT" if is_text else "BINARY", data))

    def send_ping(self, data: bytes) -> None:
        self._push(WsEvent("PING", data or None))

    def send_pong(self, data: bytes) -> None:
        self._push(WsEvent("PONG", data or None))

    def send_close(self, code: int | None, reason: str) -> None:
        self.closing = True
        self._push(WsEvent(CLOSE, encode_close_content(code, reason)))

    def close(self) -> None:
        """Client gone (or detach): tell the origin in the background (F40 DISCONNECT)."""
        if self.gone:
            return
        self.gone = True
        self.app.woh_closed(self.cid)
        if self.ka_timer is not None:
            self.ka_timer.cancel()
        if self.opened and not self.closing:
            self.app.loop.create_task(self._disconnect())

    async def _disconnect(self) -> None:
        """F40: the DISCONNECT for an unclean client exit, in the background, best effort."""
        try:
            await self._request([WsEvent(DISCONNECT, None)])
        except OriginError as e:
            log.debug("woh %s: DISCONNECT not delivered: %s", self.cid, e)

    # -- requests ----------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """The client stopped taking our writes. Origin data only comes in answers to our
        requests, so holding the next request is the backpressure (keep-alives still go)."""
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self._send_next()

    def _push(self, ev: WsEvent) -> None:
        if self.gone:
            return
        self.queue.append(ev)
        self.queued += len(ev.content or b"") + EVENT_OVERHEAD
        if self.queued > QUEUE_MAX:
            self.s.conn.pause_reading()  # bounded: the client waits for the origin
        if not self.busy and self.opened:
            self._send_next()

    def _send_next(self) -> None:
        if self.busy or self.gone or not self.queue or not self.opened:
            return
        if self.paused and not self.closing:
            return  # resume_reading() sends it
        one = 1 if self.s.route.targets[0].one_event else 0
        try:
            now, self.queue = batch(self.queue, MAX_BATCH_BYTES, one)
            self.queued = _queued_size(self.queue)
            if self.queued <= QUEUE_MAX:
                self.s.conn.resume_reading()
        except WsEventsError as e:
            log.info("woh %s: %s", self.cid, e)  # F40: a message that cannot fit is an error
            self.queue = []
            self.s.origin_gone()
            return
        self._send(now)

    def _send(self, events: list[WsEvent]) -> None:
        self.busy = True
        self.app.loop.create_task(self._run(events))

    def _headers(self, body: bytes) -> hdr.Headers:
        grip = not self.s.route.no_grip and not self.s.trusted
        base = ws_origin_headers(self.app, self.s, ws=False)
        return woh_request_headers(base, self.s.meta, self.cid, None, grip=grip)

    async def _request(self, events: list[WsEvent]) -> HttpResponse:
        body = encode_events(events)
        endpoints = endpoints_for(self.s)
        cfg = self.app.config
        cap = cfg.origin_connect_timeout * max(len(endpoints), 1) + cfg.origin_response_timeout
        try:
            code, reason, headers, data = await asyncio.wait_for(
                fetch(
                    self.app.pool,
                    endpoints,
                    "POST",
                    self.path,
                    self._headers(body),
                    body,
                    limit=RESPONSE_BODY_MAX,
                ),
                cap,
            )
        except TimeoutError:
            raise OriginError("timeout") from None  # the body stalled (fetch times the head)
        return HttpResponse(code, reason or reason_phrase(code), headers, data)

    async def _run(self, events: list[WsEvent]) -> None:
        first = not self.opened
        attempt = 0
        while True:
            try:
                resp = await self._request(events)
                break
            except OriginError as e:
                # F40: no retry for the OPEN; others up to 5 times with backoff.
                if first or attempt >= MAX_RETRIES or self.gone:
                    if first:
                        self.s.fail(str(e) if "Tried" in str(e) else f"Error: {e}")
                    else:
                        log.info("woh %s: giving up: %s", self.cid, e)
                        self.s.origin_gone()
                    return
                await asyncio.sleep(2**attempt + random.random())
                attempt += 1
        self.busy = False
        self._on_response(resp, first)
        if self.opened and not self.gone:
            self._send_next()

    def _on_response(self, resp: HttpResponse, first: bool) -> None:
        try:
            parsed = parse_woh_response(
                resp.code, resp.reason, resp.headers, resp.body, opening=first
            )
        except WohRejected:
            if first:
                self.s.reject(resp)  # F41: the client gets the origin's answer
            else:
                log.info("woh %s: bad response %d, dropping connection", self.cid, resp.code)
                self.s.origin_gone()
            self.gone = True
            return
        except WsEventsError as e:
            log.info("woh %s: malformed response: %s", self.cid, e)
            if first:
                self.s.fail(f"Error: {e}")
            else:
                self.s.origin_gone()
            self.gone = True
            return
        self.s.meta = apply_meta_updates(self.s.meta, parsed.meta_updates)
        if parsed.keep_alive_interval is not None:
            self.ka_interval = parsed.keep_alive_interval
            self._arm_keep_alive()
        events = parsed.events
        if first:
            if events and events[0].type == OPEN:
                events = events[1:]
            self.opened = True
            self.s.accept(woh_client_101_headers(resp.headers), grip_prefix=parsed.grip_prefix)
        got_close = False
        for ev in events:
            t = ev.type
            data = ev.content or b""
            if t in (TEXT, BINARY):
                self.s.origin_message(t == TEXT, data)
            elif t == PING:
                self.s.origin_ping(data)
            elif t == PONG:
                self.s.origin_pong(data)
            elif t == CLOSE:
                got_close = True
                code, reason = decode_close_content(ev.content)
                self.s.origin_close(code, reason)
            elif t in (DISCONNECT, OPEN):  # F41: a second OPEN counts as a disconnect
                self.gone = True
                self.s.origin_gone()
                return
        if self.closing and not got_close and not self.ka_interval:
            self.gone = True  # F41: we sent CLOSE, none came back: unclean end
            self.s.origin_gone()

    def _arm_keep_alive(self) -> None:
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        if self.ka_interval and not self.gone:
            self.ka_timer = self.app.loop.call_later(self.ka_interval, self._keep_alive)

    def _keep_alive(self) -> None:
        self.ka_timer = None
        if self.gone:
            return
        if not self.busy:
            self._send([])  # an empty POST (F40)
        self._arm_keep_alive()

    def refresh(self) -> None:
        """The ``refresh`` command: send an empty request now (F42)."""
        if not self.busy and self.opened and not self.gone:
            self._send([])

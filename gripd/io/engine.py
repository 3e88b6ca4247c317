"""The publish engine: subscriptions and fan-out of published items to held connections.

Hot path rules (DESIGN): each item is encoded once per format and the same ``bytes`` go to every
subscriber; stream writes are coalesced per loop tick by the connection's ``queue``; nothing
awaits per subscriber; a client whose output passes ``client_write_buffer_max`` gets the
message dropped, with its connection id, route and peer logged (Pushpin #48022).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from websockets.frames import Opcode

from gripd.core.errors import PublishError
from gripd.core.http import encode_chunk, encode_full
from gripd.core.instruct import Instruct
from gripd.core.publish import PublishItem, apply_http_response
from gripd.core.registry import Registry
from gripd.io.events import Events
from gripd.io.holds import ResponseHold, StreamHold, stream_head
from gripd.io.ws_client import encode_message
from gripd.io.ws_session import WsSession

if TYPE_CHECKING:
    from gripd.core.http import HttpResponse
    from gripd.core.routes import Route
    from gripd.io.client import ClientConnection, Request
    from gripd.runtime.app import App

log = logging.getLogger("gripd.engine")

Hold = ResponseHold | StreamHold | WsSession
_WS_OPCODES = {
    "text": Opcode.TEXT,
    "binary": Opcode.BINARY,
    "ping": Opcode.PING,
    "pong": Opcode.PONG,
}


@dataclass(slots=True)
class Counters:
    """Plain counters; the metrics issue exposes them."""

    publishes_received: int = 0
    deliveries: int = 0
    drops_slow_client: int = 0
    response_holds: int = 0
    stream_holds: int = 0


class Engine:
    """Owns the registry; starts holds; delivers published items."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop = app.loop
        self.registry = Registry()
        self.counters = Counters()
        self.write_buffer_max = app.config.client_write_buffer_max
        self.events: Events = app.events

    # -- holds -------------------------------------------------------------------------------

    def start_response(
        self,
        conn: ClientConnection,
        req: Request,
        route: Route,
        ins: Instruct,
        body: list[bytes],
    ) -> None:
        hold = ResponseHold(self, conn, req, route, ins, body)
        conn.set_handler(hold)
        self._subscribe(hold)
        self.counters.response_holds += 1
        self._log_subscribe(req, hold.channels)

    def write_stream_head(self, conn: ClientConnection, resp: HttpResponse, chunked: bool) -> None:
        head = stream_head(resp, chunked)
        if resp.body:
            head += encode_chunk(resp.body) if chunked else resp.body
        conn.write(head)

    def start_stream(
        self,
        conn: ClientConnection,
        req: Request,
        route: Route,
        ins: Instruct,
        chunked: bool,
        *,
        head_sent: bool = False,
    ) -> None:
        if not head_sent:
            self.write_stream_head(conn, ins.response, chunked)
        hold = StreamHold(self, conn, req, route, ins, chunked)
        conn.set_handler(hold)
        self._subscribe(hold)
        self.counters.stream_holds += 1
        self._log_subscribe(req, hold.channels)

    def _subscribe(self, hold: Hold) -> None:
        first = self.registry.subscribe(hold, hold.channels)
        events = self.events
        for ch in hold.channels:
            events.subscribed(ch, hold.mode, ch in first)

    def unsubscribe(self, hold: Hold) -> None:
        last = self.registry.unsubscribe(hold)
        events = self.events
        for ch in hold.channels:
            events.unsubscribed(ch, hold.mode, ch in last)

    def retry(self, conn: ClientConnection, req: Request, route: Route, body: list[bytes]) -> None:
        """Send a held request to the origin again, on the same client connection (F27)."""
        from gripd.io.proxy import ProxySession  # circular: proxy starts holds

        if conn.closed:
            return
        ProxySession(self.app, conn, req, route, retry=True, body=body).start()

    def slow_client(self, hold: StreamHold | WsSession) -> None:
        self.counters.drops_slow_client += 1
        self.events.dropped("slow_client")
        if hold.dropped == 1 or hold.dropped % 100 == 0:
            log.warning(
                "publish queue at max, dropping: conn=%s route=%s peer=%s dropped=%d",
                hold.conn.id,
                hold.route.id,
                hold.conn.peer,
                hold.dropped,
            )

    def _log_subscribe(self, req: Request, channels: list[str]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            for ch in channels:
                log.debug("subscribe %s channel=%s", req.url, ch)

    # -- publishing (PublishSink) ------------------------------------------------------------

    def publish(self, items: list[PublishItem], *, source: str = "http") -> None:
        for item in items:
            self.counters.publishes_received += 1
            self.events.message_received(item.channel, source)
            try:
                n = self._publish_one(item)
            except Exception:  # one bad item must not stop the batch or crash the worker
                log.exception("publish channel=%s failed", item.channel)
                continue
            log.info("publish channel=%s receivers=%d", item.channel, n)

    def _publish_one(self, item: PublishItem) -> int:
        subs = self.registry.subscribers(item.channel)
        if not subs:
            return 0
        sent = 0
        stream = item.http_stream
        if stream is not None:
            n = 0
            if stream.action == "send":
                raw = stream.content
                chunk = encode_chunk(raw)
                now = self.loop.time()
                for s in subs:
                    if isinstance(s, StreamHold) and s.deliver(chunk, raw, now):
                        n += 1
            elif stream.action == "close":
                for s in subs:
                    if isinstance(s, StreamHold):
                        s.close_stream()
                        n += 1
            if n:
                self.events.delivered(item.channel, item.id, "http-stream", n)
            sent += n
        resp = item.http_response
        if resp is not None:
            n = 0
            if resp.action == "send":
                cache: dict[object, bytes] = {}
                for s in subs:
                    if not isinstance(s, ResponseHold):
                        continue
                    data = cache.get(s.resp_key)
                    if data is None:
                        try:
                            out = apply_http_response(s.response, resp)
                        except PublishError as e:
                            log.info("publish channel=%s: %s", item.channel, e)
                            continue
                        data = encode_full(
                            out,
                            method=s.req.method,
                            keep_alive=s.req.keep_alive,
                            http10=s.req.http_version == "1.0",
                        )
                        cache[s.resp_key] = data
                    s.deliver(data)
                    n += 1
            elif resp.action == "hint":
                for s in subs:
                    if isinstance(s, ResponseHold):
                        s.retry()
                        n += 1
            if n:
                self.events.delivered(item.channel, item.id, "http-response", n)
            sent += n
        ws = item.ws_message
        if ws is not None:
            n = 0
            if ws.action == "send":
                op = _WS_OPCODES.get(ws.type, Opcode.TEXT)
                data = ws.content
                if op in (Opcode.PING, Opcode.PONG):
                    data = data[:125]  # control frames carry at most 125 bytes (RFC 6455 5.5)
                frame = encode_message(op, data)
                now = self.loop.time()
                for s in subs:
                    if isinstance(s, WsSession) and s.deliver(frame, now):
                        n += 1
            elif ws.action == "close":
                for s in subs:
                    if isinstance(s, WsSession):
                        s.close_ws(ws.code, ws.reason or "")
                        n += 1
            if n:
                self.events.delivered(item.channel, item.id, "ws-message", n)
            sent += n
        self.counters.deliveries += sent
        return sent

    def recover(self) -> None:
        """F27 ``recover``: retry every response hold (stream next links come later)."""
        for ch in self.registry.channels():
            for s in self.registry.subscribers(ch):
                if isinstance(s, ResponseHold):
                    s.retry()

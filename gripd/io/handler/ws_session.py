"""A client WebSocket proxied to an origin, with GRIP over WebSocket (F37–F39, F50 ``/ws``).

The session sits between the client endpoint (``WsEndpoint``, server side) and an origin link
(a WebSocket origin, WebSocket-over-HTTP, or the built-in test target). In GRIP mode it
handles the origin's ``c:`` control messages (subscribe, unsubscribe, detach, set-meta,
keep-alive, send-delayed, flush-delayed), relays prefixed messages and drops the rest (F38),
and is itself a subscriber in the engine's registry (mode ``ws``): published ``ws-message``
frames are encoded once by the engine and queued to the client as they are.
"""

from __future__ import annotations

import logging
import random
from asyncio import Task, TimerHandle
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import parse_qsl, urlsplit

from websockets.frames import Opcode
from websockets.protocol import Side
from websockets.utils import accept_key

from gripd.core import headers as hdr
from gripd.core.errors import GripError
from gripd.core.http import HttpResponse, encode_head, text_response
from gripd.core.requestlog import request_log_line
from gripd.core.wscontrol import (
    META_BYTES_MAX,
    META_KEYS_MAX,
    ControlMessage,
    Detach,
    FlushDelayed,
    KeepAliveMsg,
    SendDelayed,
    SetMeta,
    Subscribe,
    Unsubscribe,
    classify_origin_message,
    parse_control_message,
    set_meta,
)
from gripd.io.ws_endpoint import OPCODES, WsEndpoint, encode_message

if TYPE_CHECKING:
    from gripd.core.routes import Route
    from gripd.io.context import SessionHost
    from gripd.io.handler.history import ResumeState
    from gripd.io.listener.conn import ClientConn
    from gripd.io.listener.request import Request

log = logging.getLogger("gripd.ws")


# Headers of the origin's 101 that describe that handshake only (F37, F41).
_NOT_COPIED = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
        "content-type",
        "keep-alive-interval",
    }
)


class OriginLink(Protocol):
    """What the session needs from whatever stands for the origin."""

    def send_message(self, is_text: bool, data: bytes) -> None: ...
    def send_ping(self, data: bytes) -> None: ...
    def send_pong(self, data: bytes) -> None: ...
    def send_close(self, code: int | None, reason: str) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class _ClientPeer:
    """Adapter: client endpoint events -> session."""

    __slots__ = ("s",)

    def __init__(self, s: WsSession) -> None:
        self.s = s

    def on_ws_message(self, is_text: bool, data: bytes) -> None:
        self.s.client_message(is_text, data)

    def on_ws_ping(self, data: bytes) -> None:
        # Relayed, and the origin's pong relayed back: the client gets exactly one pong (F37).
        # After a detach there is no origin and, as in Pushpin, the ping goes unanswered.
        if self.s.link is not None and not self.s.detached:
            self.s.link.send_ping(data)

    def on_ws_pong(self, data: bytes) -> None:
        if self.s.link is not None and not self.s.detached:
            self.s.link.send_pong(data)

    def on_ws_close(self, code: int | None, reason: str) -> None:
        self.s.client_close(code, reason)


class WsSession:
    """One client WebSocket and its origin side."""

    mode: Final = "ws"

    def __init__(
        self, app: SessionHost, conn: ClientConn, req: Request, route: Route, *, trusted: bool
    ) -> None:
        self.app = app
        self.conn = conn
        self.req = req
        self.route = route
        self.trusted = trusted
        self.client: WsEndpoint | None = None
        self.link: OriginLink | None = None
        self.grip = False
        self.prefix = "m:"
        self.channels: list[str] = []
        self.implicit: set[str] = set()
        self.meta: dict[str, str] = {}  # capped by META_KEYS_MAX / META_BYTES_MAX (F36)
        self.meta_refused = 0
        self.filters: dict[str, list[str]] | None = None  # channel -> filters (F35)
        # channel -> its pending or just finished resume from history (a ``last-id`` subscribe)
        self.resuming: dict[str, ResumeState] | None = None
        self.detached = False
        self.active = True
        self.dropped = 0
        self.last_write = app.loop.time()
        self.ka_timer: TimerHandle | None = None
        self.ka_frame = b""
        self.ka_timeout = 0.0
        self.ka_interval = False
        self.delayed_timer: TimerHandle | None = None
        self.delayed_frame = b""
        self.task: Task[None] | None = None
        self.key = hdr.get(req.headers, "sec-websocket-key") or ""
        self.released = False

    # -- opening -----------------------------------------------------------------------------

    def start(self) -> None:
        self.conn.set_handler(self)
        self.conn.hold_started()
        version = (hdr.get(self.req.headers, "sec-websocket-version") or "").strip()
        if not self.key or version != "13":
            self.conn.send_response(
                text_response(400, "Bad WebSocket handshake.\n"), keep_alive=False
            )
            self._release()
            self.active = False
            return
        target = self.route.targets[0]
        if target.kind == "test":
            self._open_test()
            return
        self.app.open_ws_origin(self)

    def accept(self, origin_headers: hdr.Headers, *, grip_prefix: str | None) -> None:
        """The origin said yes: answer the client's handshake with 101 (F37/F41)."""
        if not self.active:
            return
        grip_route = not self.route.no_grip and not self.trusted
        self.grip = grip_route and grip_prefix is not None
        if grip_prefix is not None:
            self.prefix = grip_prefix
        headers = [(k, v) for k, v in origin_headers if k.lower() not in _NOT_COPIED]
        if self.trusted and grip_prefix is not None:
            ext = hdr.get(origin_headers, "sec-websocket-extensions")
            if ext:
                headers.append(("Sec-WebSocket-Extensions", ext))  # F15: passed back upstream
        headers += [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(self.key)),
        ]
        self.conn.write(encode_head(101, "Switching Protocols", headers))
        self.client = WsEndpoint(
            Side.SERVER,
            _ClientPeer(self),
            self.conn.write,
            self.conn.close,
            max_size=self.app.config.ws_max_message_size,
        )
        self.conn.take_raw(self.client.feed)
        self._log_connection(101, 0)
        target = self.route.targets[0]
        for ch in target.subs:
            self.implicit.add(ch)
            self._subscribe(ch)

    def reject(self, resp: HttpResponse) -> None:
        """The origin refused the handshake: relay its answer (F37)."""
        if self.active:
            self._release()
            self.active = False
            self._log_connection(resp.code, len(resp.body))
            self.conn.send_response(resp, self.req.method, keep_alive=False)

    def fail(self, detail: str) -> None:
        """No origin: 502, with the detail on debug routes (F47)."""
        if not self.active:
            return
        self._release()
        self.active = False
        debug = self.route.debug or self.app.config.debug
        log.info("conn %s route %s: ws %s: %s", self.conn.id, self.route.id, self.req.url, detail)
        body = (detail if debug else "Error while proxying to origin.") + "\n"
        # Pushpin's WebSocket 502 has no Content-Type, unlike its HTTP one [verified, 1.36].
        resp = HttpResponse(502, "Bad Gateway", [], body.encode())
        # No target line when the route's target cannot carry a WebSocket at all (Pushpin).
        self._log_connection(502, len(resp.body), proxied=self.route.targets[0].kind == "host")
        self.conn.send_response(resp, keep_alive=False)

    # -- the test target's /ws (F50) ---------------------------------------------------------

    def _open_test(self) -> None:
        path = urlsplit(self.req.url).path.rstrip("/") or "/"
        if not path.endswith("/ws"):
            resp = text_response(404, "no such test resource\n")
            self._log_connection(resp.code, len(resp.body))
            self.conn.send_response(resp)
            self._release()
            self.active = False
            return
        self.link = _EchoLink(self)
        self.accept([], grip_prefix="")
        channels = [v for k, v in parse_qsl(urlsplit(self.req.url).query) if k == "channel"]
        for ch in channels or ["test"]:
            self._subscribe(self.route.prefix + ch)

    # -- messages from the client ------------------------------------------------------------

    def client_message(self, is_text: bool, data: bytes) -> None:
        if self.link is not None and not self.detached:
            self.link.send_message(is_text, data)

    def client_close(self, code: int | None, reason: str) -> None:
        self._unsubscribe_all()
        if self.link is not None and not self.detached:
            self.link.send_close(code, reason)

    # -- messages from the origin ------------------------------------------------------------

    def origin_message(self, is_text: bool, data: bytes, *, single_frame: bool = True) -> None:
        """A message from the origin; ``single_frame`` False when it came fragmented (a
        fragmented ``c:`` message is not a control message, F38)."""
        client = self.client
        if client is None:
            return
        if not self.grip:
            self._send_client(is_text, data)
            return
        kind, payload = classify_origin_message(
            data, is_text, self.prefix, single_frame=single_frame
        )
        if kind == "control":
            assert payload is not None
            self._control(payload)
        elif kind == "relay":
            assert payload is not None
            self._send_client(is_text, payload)
        else:
            log.debug("ws %s: dropping unprefixed message", self.req.url)

    def _send_client(self, is_text: bool, data: bytes) -> None:
        assert self.client is not None
        self.client.send(is_text, data)
        self.last_write = self.app.loop.time()  # traffic postpones an idle keep-alive (F39)

    def origin_ping(self, data: bytes) -> None:
        if self.client is not None:
            self.client.send_ping(data)

    def origin_pong(self, data: bytes) -> None:
        if self.client is not None:
            self.client.send_pong(data)

    def origin_close(self, code: int | None, reason: str) -> None:
        """The origin closed its WebSocket: mirror code and reason (F39)."""
        if self.detached:
            return
        if self.client is not None:
            self.client.send_close(code, reason)

    def origin_gone(self) -> None:
        if self.detached or not self.active:
            return
        if self.client is not None and self.client.open:
            self.client.send_close(1011, "")
        self.conn.close()

    # -- GRIP control (F39) ------------------------------------------------------------------

    def _control(self, payload: bytes) -> None:
        try:
            msg: ControlMessage = parse_control_message(
                payload, wildcard=self.app.config.wildcard_channels
            )
        except GripError as e:
            log.debug("ws %s: invalid control message: %s", self.req.url, e)
            return
        if isinstance(msg, Subscribe):
            limit = self.app.config.connection_subscription_max
            if len(self.channels) >= limit:
                log.warning("ws %s: too many subscriptions", self.req.url)
                return
            ch = self.route.prefix + msg.channel
            fresh = ch not in self.channels
            self._subscribe(ch)
            if msg.filters:
                if self.filters is None:
                    self.filters = {}
                self.filters[ch] = list(msg.filters)
            if fresh and msg.last_id is not None:
                self.app.engine.resume_ws(self, ch, msg.last_id)
        elif isinstance(msg, Unsubscribe):
            ch = self.route.prefix + msg.channel
            if ch not in self.implicit and ch in self.channels:
                self.channels.remove(ch)
                self.app.engine.unsubscribe_channels(self, [ch], "ws")
        elif isinstance(msg, Detach):
            self.detached = True
            if self.link is not None:
                self.link.close()
        elif isinstance(msg, SetMeta):
            if not set_meta(self.meta, msg.name, msg.value):
                # Logged once per connection (then DEBUG), so an origin cannot flood the log.
                self.meta_refused += 1
                log.log(
                    logging.WARNING if self.meta_refused == 1 else logging.DEBUG,
                    "conn %s route %s: ws %s: too much meta (over %d keys or %d bytes), "
                    "ignoring set-meta %r",
                    self.conn.id,
                    self.route.id,
                    self.req.url,
                    META_KEYS_MAX,
                    META_BYTES_MAX,
                    msg.name,
                )
        elif isinstance(msg, KeepAliveMsg):
            self._set_keep_alive(msg)
        elif isinstance(msg, SendDelayed):
            self._flush_delayed()
            op = OPCODES.get(msg.message_type, Opcode.TEXT)
            self.delayed_frame = encode_message(op, msg.content)
            self.delayed_timer = self.app.loop.call_later(msg.timeout, self._flush_delayed)
        elif isinstance(msg, FlushDelayed):
            self._flush_delayed()

    def _flush_delayed(self) -> None:
        if self.delayed_timer is not None:
            self.delayed_timer.cancel()
            self.delayed_timer = None
        if self.delayed_frame:
            frame, self.delayed_frame = self.delayed_frame, b""
            self._write_frame(frame)

    def _set_keep_alive(self, msg: KeepAliveMsg) -> None:
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        if msg.content is None:
            self.ka_frame = b""
            return
        op = OPCODES.get(msg.message_type, Opcode.TEXT)
        self.ka_frame = encode_message(op, msg.content)
        self.ka_timeout = float(msg.timeout)
        self.ka_interval = msg.mode == "interval"
        self.ka_timer = self.app.loop.call_later(
            self.ka_timeout - random.random() * 0.999, self._on_keep_alive
        )

    def _on_keep_alive(self) -> None:
        self.ka_timer = None
        if not self.active or not self.ka_frame:
            return
        loop = self.app.loop
        now = loop.time()
        idle = now - self.last_write
        if not self.ka_interval and idle < self.ka_timeout - 1.0:
            delay = self.ka_timeout - idle
        else:
            self._write_frame(self.ka_frame)
            delay = self.ka_timeout
            # stats (F43): a keep-alive is activity on the WebSocket's route
            self.app.events.activity(self.route.stats_route)
        delay -= random.random() * 0.999
        self.ka_timer = loop.call_later(max(delay, 0.05), self._on_keep_alive)

    # -- subscriptions and delivery ----------------------------------------------------------

    def _subscribe(self, channel: str) -> None:
        if not channel or channel in self.channels:
            return
        self.channels.append(channel)
        self.app.engine.subscribe(self, [channel], "ws")
        ticklog = self.app.engine.ticklog
        if ticklog.enabled():  # Pushpin's handler line, as for HTTP holds
            ticklog.info(f"subscribe {self._uri()} channel={channel}")

    # -- request log -------------------------------------------------------------------------

    def _uri(self) -> str:
        return f"ws://{hdr.get(self.req.headers, 'host') or ''}{self.req.url}"

    def _log_connection(self, code: int, size: int, *, proxied: bool = True) -> None:
        """Pushpin's line for a WebSocket handshake, ``GET ws://host/path -> target code=101 0``
        (wsproxysession ``logConnection``): the answer's code and body size, once."""
        ticklog = self.app.ticklog  # the host's request lines, beside the HTTP ones
        if not ticklog.enabled():
            return
        target = self.route.targets[0]
        cfg = self.app.config
        line = request_log_line(
            f"GET {self._uri()}",
            target.label() + ("[http]" if target.over_http else "") if proxied else None,
            self.req.headers,
            self.route,
            f"code={code} {size}",
            peer=self.conn.peer if cfg.log_from else None,
            user_agent=cfg.log_user_agent,
        )
        ticklog.info(line)

    def _unsubscribe_all(self) -> None:
        if self.channels:
            self.app.engine.unsubscribe(self)
            self.channels = []

    def _write_frame(self, frame: bytes) -> None:
        client = self.client
        if client is None or not client.open:
            return
        self.conn.queue(frame)
        self.last_write = self.app.loop.time()

    def deliver(self, frame: bytes, now: float) -> bool:
        """Queue an already encoded published frame; False when dropped for a slow client."""
        client = self.client
        if not self.active or client is None or not client.open:
            return False
        if self.conn.buffered() > self.app.engine.write_buffer_max:
            self.dropped += 1
            self.app.engine.slow_client(self)
            return False
        self.conn.queue(frame)
        self.last_write = now
        return True

    def close_ws(self, code: int | None, reason: str) -> None:
        """``ws-message`` ``action: close`` (F30)."""
        if self.client is not None:
            self.conn.flush()
            self.client.send_close(code, reason)
        if self.link is not None and not self.detached:
            self.link.send_close(code, reason)

    # -- RequestHandler ----------------------------------------------------------------------

    def on_client_body(self, data: bytes) -> None:
        pass

    def on_client_body_end(self) -> None:
        pass

    def _release(self) -> None:
        if not self.released:
            self.released = True
            self.app.request_done()  # F4 max_open_requests counts WebSocket sessions

    def on_client_closed(self) -> None:
        self._release()
        self.active = False
        self._unsubscribe_all()
        for t in (self.ka_timer, self.delayed_timer):
            if t is not None:
                t.cancel()
        self.ka_timer = self.delayed_timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None
        link, self.link = self.link, None
        if link is not None:
            link.close()
        # Nothing is sent or read any more: let go of the endpoint's cycles (its handler is
        # this session's peer), so the session is freed by reference counting.
        if self.client is not None:
            self.client.release()

    def on_client_pause_writing(self) -> None:
        # The client reads slower than the origin sends: stop reading the origin (bounded).
        if self.link is not None:
            self.link.pause_reading()

    def on_client_resume_writing(self) -> None:
        if self.link is not None:
            self.link.resume_reading()


class _EchoLink:
    """The test target's ``/ws`` origin: echoes what the client sends (F50)."""

    __slots__ = ("s",)

    def __init__(self, s: WsSession) -> None:
        self.s = s

    def send_message(self, is_text: bool, data: bytes) -> None:
        if self.s.client is not None:
            self.s.client.send(is_text, data)

    def send_ping(self, data: bytes) -> None:
        if self.s.client is not None:
            self.s.client.send_pong(data)  # this origin answers pings, once

    def send_pong(self, data: bytes) -> None:
        pass

    def send_close(self, code: int | None, reason: str) -> None:
        pass

    def close(self) -> None:
        pass

    # This origin's output is the client's own input echoed back: when the client's output
    # backs up (over ``App.write_high_water``), stop reading the client until it drains, the
    # rule proxied WebSockets follow with a real origin (ws_proxy). Otherwise a client that
    # sends pings or messages and never reads grows gripd's write buffer without bound.

    def pause_reading(self) -> None:
        self.s.conn.pause_reading()

    def resume_reading(self) -> None:
        self.s.conn.resume_reading()

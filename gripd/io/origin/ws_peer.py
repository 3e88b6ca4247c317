"""Connects a ``WsSession`` to a WebSocket origin (F37): headers, failover, the grip extension."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gripd.core import headers as hdr
from gripd.core.forward import ClientRequestInfo, origin_request_headers
from gripd.core.http import HttpResponse
from gripd.core.routes import rewrite_path
from gripd.core.wscontrol import parse_grip_extension
from gripd.io.origin.endpoint import Endpoint, origin_form
from gripd.io.origin.endpoint import endpoints_for as route_endpoints
from gripd.io.origin.websocket import WsOriginLink

if TYPE_CHECKING:
    from gripd.io.context import OriginContext, SessionHost
    from gripd.io.handler.ws_session import WsSession


def endpoints_for(session: WsSession) -> list[Endpoint]:
    host = hdr.get(session.req.headers, "host") or ""
    return route_endpoints(session.route.targets, session.route.as_host, host)


def ws_origin_headers(app: OriginContext, session: WsSession, *, ws: bool = True) -> hdr.Headers:
    """The origin request headers for a client WebSocket; ``ws=False`` for the
    WebSocket-over-HTTP POSTs, which keep the client's handshake headers (F40)."""
    req = session.req
    info = ClientRequestInfo(
        method=req.method,
        path=req.url,
        headers=req.headers,
        peer_ip=session.conn.peer,
        tls=app.client_tls(req.headers, req.tls),
        ws=ws,
    )
    token = None
    if not session.route.no_grip and not session.trusted:
        token = app.grip_sig_token(session.route)
    return origin_request_headers(
        info,
        session.route,
        session.route.targets[0],
        app.forward,
        token=token,
        trusted=session.trusted,
    )


class WsOriginPeer:
    """Bridges a ``WsOriginLink`` (origin socket) and its ``WsSession``."""

    def __init__(self, app: SessionHost, session: WsSession) -> None:
        self.app = app
        self.session = session
        self.link = WsOriginLink(
            self,
            max_size=app.config.ws_max_message_size,
            head_max=app.config.origin_response_head_max,
            response_timeout=app.config.origin_response_timeout,
        )
        self.opened_at = time.monotonic()

    def start(self) -> None:
        s = self.session
        s.link = self
        path = rewrite_path(s.route, origin_form(s.req.url))
        s.task = self.app.loop.create_task(
            self.link.open(
                endpoints_for(s),
                path,
                ws_origin_headers(self.app, s),
                connect_timeout=self.app.config.origin_connect_timeout,
            )
        )

    # -- OriginLinkHandler -------------------------------------------------------------------

    def on_origin_open(self, headers: hdr.Headers) -> None:
        prefix = parse_grip_extension(hdr.get(headers, "sec-websocket-extensions") or "")
        self.session.accept(headers, grip_prefix=prefix)

    def on_origin_reject(self, resp: HttpResponse) -> None:
        self.session.reject(resp)

    def on_origin_failed(self, detail: str, tried: list[str]) -> None:
        self.session.fail(detail)

    def on_origin_gone(self) -> None:
        self.session.origin_gone()

    def on_origin_pause_writing(self) -> None:
        # An origin that does not read (the seed example's backend never does): stop reading
        # the client, so its messages wait in the kernel and not in gripd's memory.
        self.session.conn.pause_reading()

    def on_origin_resume_writing(self) -> None:
        self.session.conn.resume_reading()

    def on_ws_message(self, is_text: bool, data: bytes) -> None:
        ws = self.link.ws
        single = ws is None or ws.last_frames == 1
        self.session.origin_message(is_text, data, single_frame=single)

    def on_ws_ping(self, data: bytes) -> None:
        self.session.origin_ping(data)

    def on_ws_pong(self, data: bytes) -> None:
        self.session.origin_pong(data)

    def on_ws_close(self, code: int | None, reason: str) -> None:
        self.session.origin_close(code, reason)

    # -- OriginLink (what the session sends) -------------------------------------------------

    def send_message(self, is_text: bool, data: bytes) -> None:
        if self.link.ws is not None:
            self.link.ws.send(is_text, data)

    def send_ping(self, data: bytes) -> None:
        if self.link.ws is not None:
            self.link.ws.send_ping(data)

    def send_pong(self, data: bytes) -> None:
        if self.link.ws is not None:
            self.link.ws.send_pong(data)

    def send_close(self, code: int | None, reason: str) -> None:
        if self.link.ws is not None:
            self.link.ws.send_close(code, reason)

    def close(self) -> None:
        self.link.close()
        self.session.conn.resume_reading()  # detached: client messages are read and dropped

    def pause_reading(self) -> None:
        self.link.pause_reading()

    def resume_reading(self) -> None:
        self.link.resume_reading()

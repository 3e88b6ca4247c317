"""The origin side of a proxied WebSocket: connect, hand-shake, then frames (F37).

``WsOriginLink`` tries the route's targets in order (F10 failover on connect failure), sends
the upgrade request with the headers the proxy computed, and reports one of: opened (101,
with the origin's headers), rejected (any other status, with headers and body, F37), or
failed (nothing reachable). After the 101 it is a WebSocket client endpoint.

The handshake response head is capped like every origin head (``HeadBudget``,
``origin_response_head_max``): past it the handshake fails and the client gets Pushpin's 502.
The whole answer (the 101 head, or a refusal with its body) must come within
``response_timeout`` (``origin_response_timeout``) of the handshake request, else the same 502:
an origin that accepts the connection and never answers would leave the client waiting forever.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import typing
from collections.abc import Sequence
from typing import Protocol as TypingProtocol

import httptools
from websockets.protocol import Side
from websockets.utils import accept_key

from gripd.core import headers as hdr
from gripd.core.errors import OriginError
from gripd.core.http import HttpResponse, reason_phrase
from gripd.io.origin.connection import HeadBudget
from gripd.io.origin.endpoint import Endpoint
from gripd.io.ws_endpoint import GoneHandler, WsEndpoint, WsPeerHandler

log = logging.getLogger("gripd.ws.origin")

MAX_REJECT_BODY = 100_000


class OriginLinkHandler(WsPeerHandler, TypingProtocol):
    """What the origin side reports to its session."""

    def on_origin_open(self, headers: hdr.Headers) -> None: ...
    def on_origin_reject(self, resp: HttpResponse) -> None: ...
    def on_origin_failed(self, detail: str, tried: list[str]) -> None: ...
    def on_origin_gone(self) -> None: ...
    def on_origin_pause_writing(self) -> None: ...
    def on_origin_resume_writing(self) -> None: ...


class _GoneLinkHandler(GoneHandler):
    """The handler of an origin link whose connection is gone: nothing more is reported."""

    __slots__ = ()

    def on_origin_open(self, headers: hdr.Headers) -> None:
        pass

    def on_origin_reject(self, resp: HttpResponse) -> None:
        pass

    def on_origin_failed(self, detail: str, tried: list[str]) -> None:
        pass

    def on_origin_gone(self) -> None:
        pass

    def on_origin_pause_writing(self) -> None:
        pass

    def on_origin_resume_writing(self) -> None:
        pass


_GONE_LINK: OriginLinkHandler = _GoneLinkHandler()


class WsOriginLink(asyncio.Protocol):
    """One WebSocket connection to the origin."""

    def __init__(
        self,
        handler: OriginLinkHandler,
        *,
        max_size: int | None,
        head_max: int = 65_536,
        response_timeout: float = 60.0,
    ) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.ws: WsEndpoint | None = None
        self.max_size = max_size
        self._parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._reason = b""
        self._headers: hdr.Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._budget = HeadBudget(head_max)
        self._key = ""
        self._done = False
        self._closed = False
        self._response_timeout = response_timeout
        self._timer: asyncio.TimerHandle | None = None
        self.endpoint: Endpoint | None = None

    # -- connecting --------------------------------------------------------------------------

    async def open(
        self,
        endpoints: Sequence[Endpoint],
        path: str,
        headers: hdr.Headers,
        *,
        connect_timeout: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        tried: list[str] = []
        for ep in endpoints:
            tried.append(ep.label())
            ctx: ssl.SSLContext | None = None
            if ep.ssl:
                ctx = ssl.create_default_context()
                if ep.insecure:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: self,
                        ep.host,
                        ep.port,
                        ssl=ctx,
                        server_hostname=(ep.server_hostname or ep.host) if ctx else None,
                    ),
                    connect_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as e:
                log.debug("ws connect %s failed: %s", ep.label(), e)
                continue
            self.endpoint = ep
            break
        else:
            self.handler.on_origin_failed(
                "Unable to connect to any targets. Tried: " + ", ".join(tried), tried
            )
            return
        self._key = base64.b64encode(os.urandom(16)).decode()
        head = [f"GET {path} HTTP/1.1\r\n"]
        for k, v in headers:
            head.append(f"{k}: {v}\r\n")
        head.append("Upgrade: websocket\r\nConnection: Upgrade\r\n")
        head.append(f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert self.transport is not None
        if self._closed or self.transport.is_closing():
            return  # dropped while connecting (the client went away)
        self.transport.write("".join(head).encode("latin-1", "replace"))
        if self._response_timeout > 0:
            self._timer = loop.call_later(self._response_timeout, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        if not self._done and self.ws is None:
            self._fail_handshake("timeout waiting for the origin's handshake answer")

    def _cancel_timer(self) -> None:
        t = self._timer
        if t is not None:
            t.cancel()
            self._timer = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is not None:
            ws.feed(data)
            return
        parser = self._parser
        if parser is None or self._done:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade(data[e.args[0] :] if e.args else b"")
            return
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__  # httptools wraps what a callback raised
            self._fail_handshake(str(cause) if isinstance(cause, OriginError) else repr(cause))
            return
        except httptools.HttpParserError as e:
            self._fail_handshake(f"invalid handshake response: {e}")
            return
        if not self._headers_done and not self._done:
            try:
                self._budget.fed(len(data))  # all of `data` is head: a line that never ends
            except OriginError as e:
                self._fail_handshake(str(e))
                return
        if self._status == 101 and self._headers_done:
            self._upgrade(b"")

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.feed_eof()
        elif not self._done and self._parser is not None:
            try:
                self._parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
            if not self._done:
                self._fail_handshake("origin closed during the handshake")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._closed = True
            if self.ws is not None or self._done:
                self.handler.on_origin_gone()
            else:
                self._fail_handshake("origin closed during the handshake")
        # The connection's last event: let go of the handler, the endpoint and the parser,
        # which all point back here, so the link is freed by reference counting.
        self._cancel_timer()
        self.handler = _GONE_LINK
        self._parser = None
        if self.ws is not None:
            self.ws.release()

    def pause_writing(self) -> None:
        self.handler.on_origin_pause_writing()

    def resume_writing(self) -> None:
        self.handler.on_origin_resume_writing()

    def pause_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def resume_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------

    _headers_done = False

    def on_message_begin(self) -> None:
        self._budget.begin()

    def on_status(self, status: bytes) -> None:
        self._budget.status(len(status))
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return  # chunked trailers of a refusal: dropped
        self._budget.header(len(name), len(value))
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._body_size + len(body) <= MAX_REJECT_BODY:
            self._body_size += len(body)
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status != 101:
            self._done = True
            code = self._status
            reason = self._reason.decode("latin-1") or reason_phrase(code)
            resp = HttpResponse(code, reason, self._headers, b"".join(self._body))
            self.close()
            self.handler.on_origin_reject(resp)

    # -- after the handshake -----------------------------------------------------------------

    def _upgrade(self, rest: bytes) -> None:
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        if self._status != 101:
            self._fail_handshake(f"unexpected status {self._status}")
            return
        got = hdr.get(self._headers, "sec-websocket-accept")
        if got is not None and got.strip() != accept_key(self._key):
            self._fail_handshake("bad Sec-WebSocket-Accept from origin")
            return
        t = self.transport
        assert t is not None
        self.ws = WsEndpoint(
            Side.CLIENT, self.handler, t.write, self._write_eof, max_size=self.max_size
        )
        self.handler.on_origin_open(self._headers)
        if rest:
            self.ws.feed(rest)

    def _write_eof(self) -> None:
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def _fail_handshake(self, detail: str) -> None:
        self._cancel_timer()
        self._done = True
        self._closed = True
        self.close()
        label = self.endpoint.label() if self.endpoint else ""
        self.handler.on_origin_failed(detail, [label] if label else [])

    def close(self) -> None:
        """Drop the origin connection (detach, client gone)."""
        self._cancel_timer()
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    def abort(self) -> None:
        self._cancel_timer()
        self._closed = True
        t = self.transport
        if t is not None:
            t.abort()

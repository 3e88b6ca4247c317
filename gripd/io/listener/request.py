"""One client request as the listeners hand it on: :class:`Request` (the parsed head, and the
body until a handler takes it) and :class:`RequestHandler` (what a connection drives while the
request is answered).

Both HTTP/1.1 connections (:mod:`gripd.io.listener.client`) and HTTP/2 streams
(:mod:`gripd.io.listener.h2`) make these, and every request handler takes them, so they live
apart from either protocol.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from gripd.core.headers import Headers

if TYPE_CHECKING:
    from gripd.core.jsonp import JsonpRequest
    from gripd.core.requestcheck import Rejection

__all__ = ["Request", "RequestHandler", "log_refused"]

log = logging.getLogger("gripd.client")


def log_refused(conn_id: str, method: str, url: str, rej: Rejection, peer: str) -> None:
    """The line for a request core refused before any handler saw it (both protocols)."""
    log.info(
        "conn %s: %s %s refused with %d: %s; peer %s",
        conn_id,
        method,
        url[:200],
        rej.response.code,
        rej.reason,
        peer,
    )


class RequestHandler(Protocol):
    """What a connection drives while one request is active."""

    def on_client_body(self, data: bytes) -> None: ...
    def on_client_body_end(self) -> None: ...
    def on_client_closed(self) -> None: ...
    def on_client_pause_writing(self) -> None: ...
    def on_client_resume_writing(self) -> None: ...


class Request:
    """One parsed client request head, plus its body until a handler takes it."""

    __slots__ = (
        "body_chunks",
        "body_done",
        "body_size",
        "head_size",
        "headers",
        "http_version",
        "jsonp",
        "keep_alive",
        "method",
        "reject",
        "tls",
        "upgrade",
        "url",
    )

    def __init__(
        self, method: str, url: str, headers: Headers, http_version: str, keep_alive: bool
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.upgrade = False
        self.jsonp: JsonpRequest | None = None  # F46: set when JSON-P rewrote this request
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.body_done = False
        self.head_size = 0
        self.reject: Rejection | None = None  # answered by gripd itself (core.requestcheck)
        self.tls = False  # it came over a TLS listener (https_ports)

"""The narrow interfaces adapters are given instead of the whole application object.

Each is a ``Protocol`` listing only what its adapter uses, so ``gripd/io`` never imports
``gripd/runtime``. ``gripd.runtime.app.App`` satisfies all of them, in a single process and in
a worker process alike. Attributes are read-only
properties: an adapter reads them, it never rebinds them.

- :class:`OriginContext`: what a request to an origin needs (pool, forwarding, Grip-Sig).
- :class:`ClientHost`: what a client connection needs (admission, dispatch, write flushing).
- :class:`EngineHost`: what the hold engine needs (retries, events, CORS/JSON-P decision),
  plus an origin context for next links; :class:`LastIds` is the sequencer state it reads.
- :class:`ProxyHost`: what one proxied request needs.
- :class:`SessionHost`: what a WebSocket session and its origin peers need.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gripd.core import headers as hdr
    from gripd.core.config import Config
    from gripd.core.forward import ForwardSettings
    from gripd.core.routes import Route
    from gripd.io.handler.engine import Engine
    from gripd.io.handler.ws_session import WsSession
    from gripd.io.listener.conn import ClientConn, Listened
    from gripd.io.listener.flusher import Flusher
    from gripd.io.listener.request import Request
    from gripd.io.observe.events import Events
    from gripd.io.observe.ticklog import TickLog
    from gripd.io.origin.http import OriginPool
    from gripd.io.origin.woh import WohPeer


class LatencyObserver(Protocol):
    """Where origin latencies go (the Prometheus histogram, F44)."""

    def observe_origin_latency(self, seconds: float) -> None: ...


class OriginContext(Protocol):
    """Settings, pool and tokens for requests to origins (proxy, next links, WebSockets)."""

    @property
    def config(self) -> Config: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def pool(self) -> OriginPool: ...
    @property
    def forward(self) -> ForwardSettings: ...
    @property
    def metrics(self) -> LatencyObserver: ...
    def grip_sig_token(self, route: Route) -> str | None: ...
    def client_tls(self, headers: hdr.Headers, tls: bool) -> bool: ...


class ClientHost(Protocol):
    """Admission (client_maxconn, fd_reserve), request dispatch and per-tick write flushing."""

    @property
    def config(self) -> Config: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def connections(self) -> set[Listened]: ...
    @property
    def flusher(self) -> Flusher: ...
    @property
    def events(self) -> Events: ...
    @property
    def write_high_water(self) -> int: ...
    def next_conn_id(self) -> str: ...
    def admit_connection(self, conn: Listened) -> bool: ...
    def drop_connection(self, conn: Listened) -> None: ...
    def refused_connection(self, peer: str) -> None: ...
    def refuse_for_fds(self, transport: asyncio.BaseTransport, peer: str) -> bool: ...
    def handle_request(self, conn: ClientConn, req: Request) -> None: ...


class LastIds(Protocol):
    """The sequencer's per-channel last ids, which the engine checks prev-ids against (F23,
    F26) and resets on a conflict (``gripd.core.sequencer.Sequencer`` fits)."""

    def last_id(self, channel: str) -> str | None: ...
    def forget_last_id(self, channel: str) -> None: ...


class EngineHost(OriginContext, Protocol):
    """The hold engine's surroundings: retries, events, CORS/JSON-P."""

    @property
    def events(self) -> Events: ...
    def aco(self, route: Route) -> bool: ...
    def retry_request(
        self,
        conn: ClientConn,
        req: Request,
        route: Route,
        body: list[bytes],
        last_ids: list[tuple[str, str]],
    ) -> None: ...


class ProxyHost(OriginContext, Protocol):
    """One proxied request: the engine it hands holds to, request logging, admission."""

    @property
    def engine(self) -> Engine: ...
    @property
    def ticklog(self) -> TickLog: ...
    def aco(self, route: Route) -> bool: ...
    def request_done(self) -> None: ...


class SessionHost(OriginContext, Protocol):
    """A WebSocket session and its origin peer (WebSocket or WebSocket-over-HTTP)."""

    @property
    def engine(self) -> Engine: ...
    @property
    def events(self) -> Events: ...
    @property
    def write_high_water(self) -> int: ...
    @property
    def ticklog(self) -> TickLog: ...  # request lines (F53), beside the HTTP ones
    def woh_opened(self, peer: WohPeer) -> None: ...
    def woh_closed(self, cid: str) -> None: ...
    def request_done(self) -> None: ...
    def open_ws_origin(self, session: WsSession) -> None: ...

"""One gripd process with everything in it (the embedded default).

``App`` wires the listener, origin pool, publish engine and control API together, and owns what
lives for the process: configuration, the live routes table (reloaded on change and on SIGHUP,
F6/F53), the Grip-Sig token cache and the listening servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq.asyncio

from gripd.core import headers as hdr
from gripd.core.config import Config
from gripd.core.errors import ClientError, ConfigError
from gripd.core.forward import ForwardSettings, client_is_tls, is_trusted_client
from gripd.core.http import text_response
from gripd.core.jsonp import JsonpConfig, parse_jsonp_request
from gripd.core.routes import Route, RouteTable
from gripd.core.sig import SigningKey, TokenCache, parse_key
from gripd.io.handler.engine import Engine
from gripd.io.handler.pipeline import PublishPipeline
from gripd.io.handler.proxy import ProxySession, own_response
from gripd.io.handler.ws_session import WsSession
from gripd.io.inputs.command import CommandServer
from gripd.io.inputs.control_http import start_control_server
from gripd.io.inputs.zmq import BindError, ZmqInputs, os_reason
from gripd.io.listener.client import ClientConnection, Flusher, Request
from gripd.io.observe.events import EventFanout
from gripd.io.observe.metrics import Metrics
from gripd.io.observe.stats import StatsPublisher
from gripd.io.observe.ticklog import TickLog
from gripd.io.origin.http import OriginPool
from gripd.io.origin.woh import WohPeer
from gripd.io.origin.ws_peer import WsOriginPeer

log = logging.getLogger("gripd")

ROUTES_POLL_INTERVAL = 1.0  # F6: Pushpin reloads the routes file ~1 s after a change

# F53: Pushpin answers a request carrying ``Pushpin-Check`` with its license notice; gripd
# answers with its own (it is a different program, under Apache-2.0).
CHECK_NOTICE = (
    "gripd, a GRIP proxy compatible with Pushpin.\n"
    "\n"
    "Licensed under the Apache License, Version 2.0. You may obtain a copy of the\n"
    "License at http://www.apache.org/licenses/LICENSE-2.0\n"
)


FD_LOG_INTERVAL = 10.0  # at most one descriptor-shortage line per this many seconds
MAXCONN_LOG_INTERVAL = 5.0  # at most one client_maxconn line per this many seconds

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def _read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _nofile_limit() -> int | None:
    """The soft RLIMIT_NOFILE (the cli raised it to the hard one), None when unlimited."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


class RateLog:
    """Counts events and allows one log line per ``interval`` carrying the count since the
    previous line, so a flood (descriptor exhaustion, refused connections) stays readable."""

    __slots__ = ("_last", "interval", "pending", "total")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pending = 0  # events since the last line
        self.total = 0
        self._last = -float("inf")

    def note(self, now: float) -> int:
        """Count one event; the number to report now, or 0 when this one stays silent."""
        self.pending += 1
        self.total += 1
        if now - self._last < self.interval:
            return 0
        self._last = now
        n, self.pending = self.pending, 0
        return n


class App:
    """The running proxy: listeners, engine, control API, routes."""

    def __init__(
        self,
        config: Config,
        *,
        route_lines: list[str] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.route_lines = route_lines
        self.routes = RouteTable.parse("", "<none>")[0]
        self._routes_stamp: tuple[int, int, int] | None = None
        self._conn_ids = itertools.count(1)
        self.connections: set[ClientConnection] = set()
        self.open_requests = 0  # proxy sessions in flight (F4 max_open_requests)
        self.waiting: deque[tuple[ClientConnection, Request, Route, bool]] = deque()
        self.maxconn_refusals = RateLog(MAXCONN_LOG_INTERVAL)
        # fd_reserve: clients may use descriptors only below ``fd_high``, the rest is kept for
        # the publish inputs, the command and stats sockets and origin connections.
        self.fd_limit = _nofile_limit()
        self.fd_high: int | None = None
        if self.fd_limit is not None and config.fd_reserve > 0:
            # At most half the table is held back, so a tiny limit still serves clients.
            self.fd_high = self.fd_limit - min(config.fd_reserve, self.fd_limit // 2)
        self.fd_refusals = RateLog(FD_LOG_INTERVAL)
        self.accept_errors = RateLog(FD_LOG_INTERVAL)
        self._prev_handler: ExceptionHandler | None = None
        self.flusher = Flusher(self.loop)
        self.ticklog = TickLog("gripd.proxy", self.loop)  # request lines (F53)
        self.write_high_water = 256 * 1024
        self.pool = OriginPool(
            connect_timeout=config.origin_connect_timeout,
            response_timeout=config.origin_response_timeout,
            response_head_max=config.origin_response_head_max,
        )
        base = config.config_dir
        sig_key = parse_key(config.sig_key, base_dir=base, read_file=_read_bytes)
        upstream_key = parse_key(config.upstream_key, base_dir=base, read_file=_read_bytes)
        self.forward = ForwardSettings(
            sig_iss=config.sig_iss,
            sig_key=sig_key,
            upstream_key=upstream_key,
            accept_x_forwarded_protocol=config.accept_x_forwarded_protocol,
            set_x_forwarded_protocol=config.set_x_forwarded_protocol,
            x_forwarded_for=tuple(config.x_forwarded_for),
            x_forwarded_for_trusted=tuple(config.x_forwarded_for_trusted),
            orig_headers_need_mark=tuple(config.orig_headers_need_mark),
            accept_pushpin_route=config.accept_pushpin_route,
        )
        self.tokens = TokenCache()
        self._route_keys: dict[tuple[str, str], SigningKey | None] = {}
        self.events = EventFanout()
        self.stats = StatsPublisher(config, loop=self.loop)  # Metrics reads its state
        self.events.add(self.stats)
        self.metrics = Metrics(config, stats=self.stats.state)
        self.events.add(self.metrics)
        self.holds = Engine(self)
        # Every publish input goes through dedup, sequencing and rate limiting (F32–F34).
        self.pipeline = PublishPipeline(config, self.holds, events_out=self.events)
        self.events.add(self.pipeline)
        self.zmq = zmq.asyncio.Context()
        self.zmq_inputs = ZmqInputs(
            config,
            self.pipeline,
            has_channel=self.holds.registry.has_channel,
            events_out=self.events,
            context=self.zmq,
        )
        self.events.add(self.zmq_inputs)
        self.command = CommandServer(
            config,
            sink=self.pipeline,
            recover=self.pipeline.recover,
            is_connected=self.stats.check_connection,
            refresh=self.refresh_woh,
            context=self.zmq,
        )
        self.woh_peers: dict[str, WohPeer] = {}  # WebSocket-over-HTTP sessions by Connection-Id
        self.servers: list[asyncio.Server] = []
        self._stopping = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None

    # -- identity and per-request helpers ----------------------------------------------------

    def next_conn_id(self) -> str:
        return str(next(self._conn_ids))

    def client_tls(self, headers: hdr.Headers) -> bool:
        return client_is_tls(headers, False, self.forward)

    def grip_sig_token(self, route: Route) -> str | None:
        """F9/F15: the route's own iss+key when both are set, else the global ones."""
        iss, key = self.forward.sig_iss, self.forward.sig_key
        if route.sig_iss and route.sig_key:
            cache_key = (route.sig_key, route.filename)
            if cache_key not in self._route_keys:
                base = os.path.dirname(route.filename) or self.config.config_dir
                try:
                    self._route_keys[cache_key] = parse_key(
                        route.sig_key, base_dir=base, read_file=_read_bytes
                    )
                except ConfigError as e:
                    log.error("route %s: %s", route.id, e)
                    self._route_keys[cache_key] = None
            iss, key = route.sig_iss, self._route_keys[cache_key]
        if key is None:
            return None
        return self.tokens.token(iss, key, time.time())

    def refused_connection(self, peer: str) -> None:
        if self.maxconn_refusals.note(time.monotonic()):
            log.warning(
                "client_maxconn (%d) reached: refused %d connection(s), last from %s",
                self.config.client_maxconn,
                self.maxconn_refusals.total,
                peer,
            )
        self.events.dropped("client_maxconn")

    def refuse_for_fds(self, transport: asyncio.BaseTransport, peer: str) -> bool:
        """True (and counted, logged at a limited rate) when a new client connection must be
        closed to keep ``fd_reserve`` descriptors free.

        The kernel hands out the lowest free descriptor, so a socket numbered at or above
        ``fd_high`` means fewer than ``fd_reserve`` are left. Without this, clients would take
        the last ones and the control API, ZeroMQ and origin connections would fail (under
        uvloop an accept that hits EMFILE is closed silently: publishers only see a reset)."""
        high = self.fd_high
        if high is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or sock.fileno() < high:
            return False
        self.events.dropped("fd_reserve")
        n = self.fd_refusals.note(time.monotonic())
        if n:
            log.warning(
                "open-file limit nearly reached (descriptor %d, limit %d, fd_reserve %d kept for "
                "publishing and origins): refused %d client connection(s) since the last report "
                "(%d in all), last from %s",
                sock.fileno(),
                self.fd_limit,
                self.config.fd_reserve,
                n,
                self.fd_refusals.total,
                peer,
            )
        return True

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """EMFILE/ENFILE from accept (asyncio's loop retries each second and reports every
        failure) is logged at a limited rate with a count; the rest goes to the default."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            n = self.accept_errors.note(time.monotonic())
            if n:
                log.error(
                    "accept failed %d time(s) since the last report: %s (limit %s, "
                    "fd_reserve %d); waiting connections stay queued",
                    n,
                    os.strerror(exc.errno),
                    self.fd_limit,
                    self.config.fd_reserve,
                )
            return
        if self._prev_handler is not None:
            self._prev_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _check_fd_budget(self) -> None:
        """Warn once when ``client_maxconn`` cannot be reached within the open-file limit: a
        proxied client can need two descriptors (its socket and its origin connection)."""
        limit = self.fd_limit
        if limit is None:
            return
        cfg = self.config
        usable = limit if self.fd_high is None else self.fd_high
        if 2 * cfg.client_maxconn > usable:
            log.warning(
                "client_maxconn=%d may need up to %d file descriptors (client + origin "
                "connection each) but the open-file limit is %d with fd_reserve=%d: new clients "
                "are refused from descriptor %d on (about %d proxied clients); raise the limit "
                "(ulimit -n, LimitNOFILE=) or lower client_maxconn",
                cfg.client_maxconn,
                2 * cfg.client_maxconn,
                limit,
                cfg.fd_reserve,
                usable,
                usable // 2,
            )

    def aco(self, route: Route) -> bool:
        """Auto cross-origin (CORS + JSON-P, F45/F46) for this route."""
        return route.aco or self.config.auto_cross_origin

    def handle_request(self, conn: ClientConnection, req: Request) -> None:
        """Route a parsed request head and start whatever serves it."""
        host_header = hdr.get(req.headers, "host") or ""
        url = req.url
        if url.startswith(("http://", "https://")):
            host_header = url.split("://", 1)[1].split("/", 1)[0]
        host = _strip_port(host_header)
        path = url.split("?", 1)[0]
        if path.startswith(("http://", "https://")):
            rest = path.split("://", 1)[1]
            path = rest[rest.find("/") :] if "/" in rest else "/"
        tls = self.client_tls(req.headers)
        route_id = ""
        if self.config.accept_pushpin_route:  # F4: the client picks the route by id
            route_id = (hdr.get(req.headers, "pushpin-route") or "").strip()
        if route_id and not self.routes.is_id_shared(route_id):
            route = self.routes.lookup_by_id(route_id)
        else:
            route = self.routes.lookup(host, path, ws=req.upgrade, ssl=tls)
        # Pushpin's order (requestsession.cpp): JSON-P, then Pushpin-Check, then "no route".
        # Its own answers from here on are JSON-P wrapped or CORS-decorated like any other.
        aco = self.config.auto_cross_origin or (route is not None and route.aco)
        if aco and not req.upgrade:
            try:  # F46: JSON-P turns a GET into the request its parameters describe
                jr = parse_jsonp_request(
                    req.method,
                    req.url,
                    req.headers,
                    JsonpConfig.from_route(route) if route is not None else JsonpConfig(),
                )
            except ClientError as e:
                err = text_response(e.status, e.message + "\n")
                conn.send_response(own_response(req, err, True), req.method)
                return
            if jr is not None:
                req.method, req.url, req.headers, req.jsonp = jr.method, jr.uri, jr.headers, jr
                if jr.body:
                    req.body_chunks.append(jr.body)
                    req.body_size += len(jr.body)
        if hdr.contains(req.headers, "pushpin-check"):
            resp = own_response(req, text_response(200, CHECK_NOTICE), aco)  # F53
            conn.send_response(resp, req.method)
            return
        if route is None:
            resp = own_response(req, text_response(502, f"No route for host: {host}\n"), aco)
            conn.send_response(resp, req.method)
            return
        trusted = False
        if self.forward.upstream_key is not None:
            trusted = is_trusted_client(req.headers, self.forward, time.time())
        ws = req.upgrade and "websocket" in (hdr.get(req.headers, "upgrade") or "").lower()
        ctype = (hdr.get(req.headers, "content-type") or "").split(";")[0].strip().lower()
        if (
            not ws
            and ctype == "application/websocket-events"
            and route.targets[0].over_http
            and not trusted
        ):
            # F41: only a trusted upstream proxy may speak WOH to us
            err = text_response(403, "Client not allowed to send WebSocket events directly.\n")
            conn.send_response(own_response(req, err, aco), req.method)
            return
        limit = self.config.max_open_requests
        if 0 <= limit <= self.open_requests:
            # F4 max_open_requests: like Pushpin, stop taking requests (HTTP sessions with the
            # origin and WebSocket sessions) until one finishes.
            self.waiting.append((conn, req, route, trusted))
            conn.pause_reading()
            return
        self._begin(conn, req, route, trusted)

    def _begin(self, conn: ClientConnection, req: Request, route: Route, trusted: bool) -> None:
        self.open_requests += 1
        if req.upgrade and "websocket" in (hdr.get(req.headers, "upgrade") or "").lower():
            WsSession(self, conn, req, route, trusted=trusted).start()
        else:
            ProxySession(self, conn, req, route, trusted=trusted).start()

    def retry_request(
        self,
        conn: ClientConnection,
        req: Request,
        route: Route,
        body: list[bytes],
        last_ids: list[tuple[str, str]],
    ) -> None:
        """A hold's request goes to the origin again (F22/F23/F27); retries are not counted
        against max_open_requests, as in Pushpin (the handler retries, not the client)."""
        ProxySession(self, conn, req, route, retry=True, body=body, last_ids=last_ids).start()

    def request_done(self) -> None:
        """A session ended (answered, held, failed, WebSocket closed): let a waiting one in."""
        self.open_requests -= 1
        while self.waiting and self.open_requests < max(self.config.max_open_requests, 1):
            conn, req, route, trusted = self.waiting.popleft()
            if conn.closed:
                continue
            conn.resume_reading()
            self._begin(conn, req, route, trusted)

    def refresh_woh(self, args: dict[str, str]) -> bool:
        """The ``refresh`` command (F42): WebSocket-over-HTTP sessions send a request now;
        False when the named connection is unknown."""
        if "cid" in args:
            peer = self.woh_peers.get(args["cid"])
            if peer is None:
                return False
            peer.refresh()
            return True
        for s in self.holds.registry.subscribers(args.get("channel", "")):
            if isinstance(s, WsSession) and isinstance(s.link, WohPeer):
                s.link.refresh()
        return True

    def open_ws_origin(self, session: WsSession) -> None:
        """Connect a client WebSocket to its route's origin (F37, F40)."""
        target = session.route.targets[0]
        if target.kind != "host":
            session.fail(f"WebSockets cannot be used with {target.kind} target")
        elif target.over_http:
            WohPeer(self, session).start()
        else:
            WsOriginPeer(self, session).start()

    # -- routes ------------------------------------------------------------------------------

    def load_routes(self, *, initial: bool = False) -> None:
        """(Re)load the routes; a bad line is skipped with a ``file:line`` warning (F6).

        On a live reload (file change, SIGHUP) a file with a line that cannot be parsed is not
        applied: the previous table stays, so a half-written or mistyped file does not turn
        every new request into a 502 (Pushpin would load what parses, often nothing). At
        startup there is no previous table and the good lines are used, as in Pushpin."""
        if self.route_lines is not None:
            table, warnings = RouteTable.from_lines(self.route_lines)
        elif self.config.routesfile is None:
            table, warnings = RouteTable.from_lines(["* test"])
        else:
            path = self.config.routesfile
            try:
                st = os.stat(path)
                text = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as e:
                log.error("cannot read routes file %s: %s", path, e)
                return
            self._routes_stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            table, warnings = RouteTable.parse(text, path)
        for w in warnings:
            log.warning("%s", w)
        errors = [w for w in warnings if w.error]
        if errors and not initial:
            log.error(
                "routes not reloaded: %s%s; keeping previous routes (%d entries)",
                errors[0],
                f" (and {len(errors) - 1} more)" if len(errors) > 1 else "",
                len(self.routes),
            )
            return
        self.routes = table
        log.info("routes loaded with %d entries", len(table))  # Pushpin's wording

    async def _watch_routes(self) -> None:
        path = self.config.routesfile
        if path is None or self.route_lines is not None:
            return
        while True:
            await asyncio.sleep(ROUTES_POLL_INTERVAL)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_mtime_ns, st.st_size, st.st_ino) != self._routes_stamp:
                self.load_routes()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the routes and bind everything. Every TCP address is bound before any
        ``ipc://`` path, and a path a live process listens on is refused, so a second instance
        on the same configuration exits (one line, no traceback) without disturbing the first.
        On a failure whatever was bound is released and the :class:`BindError` propagates."""
        self.load_routes(initial=True)
        self._check_fd_budget()
        self._prev_handler = self.loop.get_exception_handler()
        self.loop.set_exception_handler(self._loop_exception)
        try:
            await self._bind(ipc=False)
            await self._bind(ipc=True)
        except BaseException:
            await self.stop(quiet=True)
            raise
        self._watch_task = self.loop.create_task(self._watch_routes())
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self.loop.add_signal_handler(signal.SIGHUP, self.load_routes)
            self.loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            self.loop.add_signal_handler(signal.SIGTERM, self._stopping.set)

    async def _bind(self, *, ipc: bool) -> None:
        """One start phase: the TCP listeners (``ipc`` False) or the ``ipc://`` paths (True)."""
        cfg = self.config
        if not ipc:
            for listen in cfg.http_port:
                try:
                    server = await self.loop.create_server(
                        lambda: ClientConnection(self),
                        host=listen.addr or None,
                        port=listen.port,
                        reuse_address=True,
                        backlog=4096,
                    )
                except OSError as e:
                    address = f"{listen.addr or '*'}:{listen.port}"
                    raise BindError(address, "http_port", os_reason(e)) from None
                self.servers.append(server)
                log.info("listening on %s:%d", listen.addr or "*", listen.port)
            try:
                control = await start_control_server(
                    self.pipeline,
                    cfg.push_in_http_addr,
                    cfg.push_in_http_port,
                    max_headers_size=cfg.push_in_http_max_headers_size,
                    max_body_size=cfg.push_in_http_max_body_size,
                    header_timeout=cfg.client_header_timeout,
                )
            except OSError as e:
                address = f"{cfg.push_in_http_addr}:{cfg.push_in_http_port}"
                setting = "push_in_http_addr/push_in_http_port"
                raise BindError(address, setting, os_reason(e)) from None
            self.servers.append(control)
            log.info("control API on %s:%d", cfg.push_in_http_addr, cfg.push_in_http_port)
            await self.pipeline.start()
        await self.zmq_inputs.start(ipc=ipc)
        await self.command.start(ipc=ipc)
        await self.metrics.start(ipc=ipc)
        await self.stats.start(ipc=ipc)

    async def run(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, *, quiet: bool = False) -> None:
        """Close everything (also after a failed start: each part tolerates never starting)."""
        if not quiet:
            log.info("stopping")
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.remove_signal_handler(sig)
        if self.loop.get_exception_handler() == self._loop_exception:
            self.loop.set_exception_handler(self._prev_handler)
        if self._watch_task is not None:
            self._watch_task.cancel()
        await self.pipeline.stop()
        await self.command.stop()
        await self.zmq_inputs.stop()
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        await self.pool.close()
        self.ticklog.flush()
        self.holds.ticklog.flush()
        await self.metrics.stop()
        await self.stats.stop()
        self.zmq.term()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

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
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gripd.core import headers as hdr
from gripd.core.config import Config
from gripd.core.dispatch import DispatchSettings, Respond, Wait, dispatch
from gripd.core.errors import ConfigError
from gripd.core.forward import client_is_tls
from gripd.core.publish import PublishItem
from gripd.core.routes import Route, RouteTable
from gripd.core.sequencer import Sequencer
from gripd.core.sig import SigningKey, TokenCache, parse_key
from gripd.io.bus.base import Bus
from gripd.io.bus.hub import FrameLink, WorkerLink
from gripd.io.context import LatencyObserver
from gripd.io.filestamp import Stamp, file_stamp, stamp_of
from gripd.io.handler.channels import ChannelTracker
from gripd.io.handler.engine import Engine
from gripd.io.handler.history import HistoryReader
from gripd.io.handler.pipeline import PublishPipeline
from gripd.io.handler.proxy import ProxySession, own_response, request_stats_started
from gripd.io.handler.ws_session import WsSession
from gripd.io.listener.client import ClientConnection
from gripd.io.listener.conn import ClientConn, Listened
from gripd.io.listener.flusher import Flusher
from gripd.io.listener.request import Request
from gripd.io.observe.events import Events
from gripd.io.observe.status import StatusReporter
from gripd.io.observe.ticklog import TickLog
from gripd.io.origin.http import OriginPool
from gripd.io.origin.woh import WohPeer
from gripd.io.origin.ws_peer import WsOriginPeer
from gripd.runtime.admission import Admission
from gripd.runtime.buses import make_bus, make_history
from gripd.runtime.listeners import ClientListeners
from gripd.runtime.reload import (
    ConfigReloader,
    apply_instance_settings,
    forward_settings,
    read_bytes,
    set_log_level,
)

if TYPE_CHECKING:
    from gripd.runtime.services import Services

log = logging.getLogger("gripd")

ROUTES_POLL_INTERVAL = 1.0  # F6: Pushpin reloads the routes file ~1 s after a change

CONN_ID_GENERATION = 1_000_000_000  # connection ids per worker before a restart moves on
WAITING_POLL = 0.05  # with workers: how often requests waiting for max_open_requests look again
FD_LOG_INTERVAL = 10.0  # at most one descriptor-shortage line per this many seconds
MAXCONN_LOG_INTERVAL = 5.0  # at most one client_maxconn line per this many seconds

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


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
        worker: WorkerSetup | None = None,
        config_loader: Callable[[], Config] | None = None,
        log_level_fixed: bool = False,
    ) -> None:
        """``config_loader`` reads pushpin.conf again for a reload on SIGHUP or a change of
        the file (None: no reload, e.g. the embedded default); ``log_level_fixed``: the command
        line set the log level, so a reload leaves it."""
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.route_lines = route_lines
        self.worker = worker
        # Lines every worker would repeat (routes loaded or not, start warnings): the first
        # worker logs them at their level, the others at debug.
        first = worker is None or worker.index == 0
        self._info = logging.INFO if first else logging.DEBUG
        self._warning = logging.WARNING if first else logging.DEBUG
        self._error = logging.ERROR if first else logging.DEBUG
        self.routes = RouteTable.parse("", "<none>")[0]
        self._routes_stamp: Stamp | None = None
        self.admission: Admission | None = None
        self.connections: set[Listened]
        if worker is None:
            self._conn_ids = itertools.count(1)
            self.connections = set()
        else:
            # Connection ids are unique in the instance: worker i of n counts i+1, i+1+n, ...;
            # a restarted worker starts a billion ids further per restart, so ids are not reused.
            start = worker.index + 1 + worker.generation * worker.count * CONN_ID_GENERATION
            self._conn_ids = itertools.count(start, worker.count)
            self.admission = worker.admission
            self.connections = set()
        self._open_requests = 0  # proxy sessions in flight (F4 max_open_requests)
        self._waiting_timer: asyncio.TimerHandle | None = None
        self.waiting: deque[tuple[ClientConn, Request, Route, bool]] = deque()
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
            flusher=self.flusher,
        )
        self.forward = forward_settings(config)
        self.tokens = TokenCache()
        self._route_keys: dict[tuple[str, str], SigningKey | None] = {}
        self.dispatch_settings = DispatchSettings(
            self.forward, config.auto_cross_origin, config.max_open_requests
        )
        # The per-instance services (publish inputs, stats, Prometheus) live here in a single
        # process; in a worker they live in the hub and the events go there over the link.
        self.link: WorkerLink | None = None
        self.metrics: LatencyObserver
        self.services: Services | None = None
        self.events: Events
        if worker is None:
            # Imported here: a worker has no services, and starts faster without them.
            from gripd.runtime.services import Services

            self.services = Services(
                config,
                self.loop,
                entry=_Entry(self),
                local=_Entry(self, local=True),
                refresh=self.refresh_woh,
                has_channel=self._has_channel,
            )
            self.events = self.services.events
            self.metrics = self.services.metrics
        else:
            self.link = WorkerLink(_NoSink(), self._on_command)
            self.link.attach(worker.link)
            self.events = self.link
            self.metrics = self.link  # origin latencies go to the hub's histogram
        # Channel interest (with the one linger) is tracked once; sequencing, the ZeroMQ SUB
        # socket and the bus listen to it (in a worker: the link, for the hub's routing).
        self.channels = ChannelTracker(
            config.subscription_linger, self.loop, wildcard=config.wildcard_channels
        )
        self.bus: Bus
        self.woh_peers: dict[str, WohPeer] = {}  # WebSocket-over-HTTP sessions by Connection-Id
        self.pipeline: PublishPipeline | None = None
        self.history: HistoryReader | None = None  # where this process's pipeline keeps history
        if self.link is None:
            sequencer = Sequencer(
                message_wait_ms=config.message_wait, id_cache_ttl=config.id_cache_ttl
            )
            self.engine = Engine(self, self.channels, sequencer)
            # Inputs -> bus -> pipeline (dedup, sequencing, rate limit: F32–F34) -> engine.
            self.pipeline = PublishPipeline(
                config,
                self.engine,
                channels=self.channels,
                sequencer=sequencer,
                events_out=self.events,
            )
            self.bus = make_bus(config, self.pipeline)
            self.history = make_history(config, self.bus, self.pipeline, self.loop)
            self.engine.history = self.history
            if self.services is not None:
                self.services.history = self.history
                self.services.metrics.bus = self.bus  # its state and counters, for Prometheus
        else:
            # The hub runs the pipeline; its output comes here, with its last ids replicated.
            self.engine = Engine(
                self, self.channels, self.link.last_ids, first_subscription=False, history=self.link
            )
            self.link.sink = self.engine
            self.bus = self.link
        self.channels.add_listener(self.bus)
        if self.services is not None:
            self.channels.add_listener(self.services.zmq_inputs)
        self.listeners = ClientListeners(
            self.loop,
            lambda: ClientConnection(self),
            shared=worker is not None,
            announce=worker is None or worker.index == 0,  # one worker speaks for all
            worker_unix=worker.unix_socks if worker is not None else None,
        )
        self._stopping = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._log_level_fixed = log_level_fixed
        self.reloader: ConfigReloader | None = None  # single process; a worker's is the hub's
        self._reload_task: asyncio.Task[None] | None = None
        if config_loader is not None and worker is None:
            self.reloader = ConfigReloader(lambda: self.config, config_loader, self._apply_reloaded)
        # The status page's view of this process: slowest connections and routes, reported to
        # the instance's board (here, or in the hub) while the Prometheus port is configured.
        self.routes_loaded: float | None = None  # wall-clock time of the last (re)load
        self.status_reporter: StatusReporter | None = None
        if config.prometheus_port:
            send: Callable[[dict[str, Any]], None]
            if self.services is not None:
                send = partial(self.services.status.worker_report, 0)
            else:
                assert self.link is not None
                send = self.link.report_status
            self.status_reporter = StatusReporter(
                self.loop, self.flusher.backed_up, self.routes_status, send
            )

    # -- identity and per-request helpers ----------------------------------------------------

    @property
    def open_requests(self) -> int:
        """Sessions in flight (F4 ``max_open_requests``): the whole instance's with workers."""
        if self.admission is not None:
            return self.admission.open_requests()
        return self._open_requests

    def _try_open(self, limit: int) -> bool:
        """Take a place for a session unless ``limit`` are open (< 0: no limit); with workers
        the check and the count are one step for the whole instance (F4)."""
        if self.admission is not None:
            if not self.admission.try_open(limit):
                return False
        elif 0 <= limit <= self._open_requests:
            return False
        self._open_requests += 1
        return True

    def admit_connection(self, conn: Listened) -> bool:
        """Count a new client connection, or refuse it at F3 ``client_maxconn`` (every
        worker's connections count, checked and counted as one step)."""
        limit = self.config.client_maxconn
        if self.admission is not None:
            if not self.admission.try_connect(limit):
                return False
        elif len(self.connections) >= limit:
            return False
        self.connections.add(conn)
        return True

    def drop_connection(self, conn: Listened) -> None:
        """An admitted connection is gone: its place is free."""
        if conn in self.connections:
            self.connections.remove(conn)
            if self.admission is not None:
                self.admission.release_connection()

    def _has_channel(self, channel: str) -> bool:
        return self.engine.registry.has_channel(channel)

    def next_conn_id(self) -> str:
        return str(next(self._conn_ids))

    def apply_config(self, config: Config) -> None:
        """Put a reloaded configuration in force (:mod:`gripd.runtime.reload`). Whatever can
        fail (key files) is read first: a :class:`ConfigError` leaves everything as it was.
        Open connections are kept; each setting takes effect at its next use."""
        forward = forward_settings(config)
        services = self.services
        auth = services.publish_auth_for(config) if services is not None else None
        self.config = config
        self.forward = forward
        self._route_keys.clear()
        self.dispatch_settings = DispatchSettings(
            forward, config.auto_cross_origin, config.max_open_requests
        )
        pool = self.pool
        pool.connect_timeout = config.origin_connect_timeout
        pool.response_timeout = config.origin_response_timeout
        pool.response_head_max = config.origin_response_head_max
        self.engine.write_buffer_max = config.client_write_buffer_max
        apply_instance_settings(
            config,
            services=services,
            auth=auth,
            pipeline=self.pipeline,
            history=self.history,
            interest=self.channels.interest,
        )

    def _apply_reloaded(self, config: Config) -> None:
        self.apply_config(config)
        if not self._log_level_fixed:
            set_log_level(config.log_level)

    def _sighup(self) -> None:
        """Routes (F6) and, when it came from a file, pushpin.conf."""
        self.load_routes()
        if self.reloader is not None:
            self.reloader.reload()

    def client_tls(self, headers: hdr.Headers, tls: bool) -> bool:
        """Whether a request counts as TLS: it came over an ``https_ports`` listener
        (``tls``), or F4 ``accept_x_forwarded_protocol`` says so."""
        return client_is_tls(headers, tls, self.forward)

    def grip_sig_token(self, route: Route) -> str | None:
        """F9/F15: the route's own iss+key when both are set, else the global ones."""
        iss, key = self.forward.sig_iss, self.forward.sig_key
        if route.sig_iss and route.sig_key:
            cache_key = (route.sig_key, route.filename)
            if cache_key not in self._route_keys:
                base = os.path.dirname(route.filename) or self.config.config_dir
                try:
                    self._route_keys[cache_key] = parse_key(
                        route.sig_key, base_dir=base, read_file=read_bytes
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

    def handle_request(self, conn: ClientConn, req: Request) -> None:
        """Carry out what :func:`gripd.core.dispatch.dispatch` decides for a request head:
        answer it, queue it (F4 max_open_requests) or start the session that serves it."""
        d = dispatch(
            req.method,
            req.url,
            req.headers,
            req.upgrade,
            self.routes,
            self.dispatch_settings,
            open_requests=self.open_requests,
            now=time.time(),
            tls=req.tls,
        )
        jr = d.rewrite
        if jr is not None:  # F46: the request JSON-P describes replaces this one
            req.method, req.url, req.headers, req.jsonp = jr.method, jr.uri, jr.headers, jr
            if jr.body:
                req.body_chunks.append(jr.body)
                req.body_size += len(jr.body)
        if isinstance(d, Respond):
            conn.send_response(own_response(req, d.response, d.aco), req.method)
        elif isinstance(d, Wait) or not self._try_open(self.dispatch_settings.max_open_requests):
            # Full, or (with workers) another worker took the last place since the count was read.
            self.waiting.append((conn, req, d.route, d.trusted))
            conn.pause_reading()
            self._arm_waiting()
        else:
            self._begin(conn, req, d.route, d.trusted)

    def _begin(self, conn: ClientConn, req: Request, route: Route, trusted: bool) -> None:
        """Start the session; its place is already taken (:meth:`_try_open`)."""
        if req.upgrade and "websocket" in (hdr.get(req.headers, "upgrade") or "").lower():
            # Stats: a WebSocket is one "connection" until its TCP connection closes (Pushpin)
            request_stats_started(self, self.events, conn, req, route, trusted, "ws")
            WsSession(self, conn, req, route, trusted=trusted).start()
        else:
            ProxySession(self, conn, req, route, trusted=trusted).start()

    def retry_request(
        self,
        conn: ClientConn,
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
        self._open_requests -= 1
        if self.admission is not None:
            self.admission.release_open()
        self._let_waiting_in()

    def _let_waiting_in(self) -> None:
        limit = max(self.dispatch_settings.max_open_requests, 1)
        while self.waiting:
            if self.waiting[0][0].closed:
                self.waiting.popleft()
                continue
            if not self._try_open(limit):
                break
            conn, req, route, trusted = self.waiting.popleft()
            conn.resume_reading()
            self._begin(conn, req, route, trusted)

    def _arm_waiting(self) -> None:
        """With workers, a session that ends in another worker frees a place too: look again
        every ``WAITING_POLL`` seconds while requests wait."""
        if self.admission is None or self._waiting_timer is not None:
            return
        self._waiting_timer = self.loop.call_later(WAITING_POLL, self._waiting_tick)

    def _waiting_tick(self) -> None:
        self._waiting_timer = None
        self._let_waiting_in()
        if self.waiting:
            self._arm_waiting()

    def woh_opened(self, peer: WohPeer) -> None:
        """A WebSocket-over-HTTP session has its Connection-Id; with workers the hub learns
        which worker holds it, so ``refresh {cid}`` reaches the right one (F42)."""
        if peer.cid not in self.woh_peers and self.link is not None:
            self.link.woh_opened(peer.cid)
        self.woh_peers[peer.cid] = peer

    def woh_closed(self, cid: str) -> None:
        if self.woh_peers.pop(cid, None) is not None and self.link is not None:
            self.link.woh_closed(cid)

    def refresh_woh(self, args: dict[str, str]) -> bool:
        """The ``refresh`` command (F42): WebSocket-over-HTTP sessions send a request now;
        False when the named connection is unknown."""
        if "cid" in args:
            peer = self.woh_peers.get(args["cid"])
            if peer is None:
                return False
            peer.refresh()
            return True
        for s in self.engine.registry.subscribers(args.get("channel", "")):
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
                log.log(self._error, "cannot read routes file %s: %s", path, e)
                return
            self._routes_stamp = stamp_of(st)
            table, warnings = RouteTable.parse(text, path)
        for w in warnings:
            log.log(self._warning, "%s", w)
        errors = [w for w in warnings if w.error]
        if errors and not initial:
            log.log(
                self._error,
                "routes not reloaded: %s%s; keeping previous routes (%d entries)",
                errors[0],
                f" (and {len(errors) - 1} more)" if len(errors) > 1 else "",
                len(self.routes),
            )
            return
        self.routes = table
        self.routes_loaded = round(time.time(), 3)
        if self.status_reporter is not None:
            self.status_reporter.routes_changed()
        # Pushpin's wording; with workers, the first one speaks for all.
        log.log(self._info, "routes loaded with %d entries", len(table))

    def routes_status(self) -> dict[str, Any]:
        """The routes as the status page shows them: where from, how many, loaded when."""
        if self.route_lines is not None:
            source, path = "command line", None
        elif self.config.routesfile is None:
            source, path = "default", None
        else:
            source, path = "file", self.config.routesfile
        entries = len(self.routes)
        return {"source": source, "file": path, "entries": entries, "loaded": self.routes_loaded}

    async def _watch_routes(self) -> None:
        path = self.config.routesfile
        if path is None or self.route_lines is not None:
            return
        while True:
            await asyncio.sleep(ROUTES_POLL_INTERVAL)
            stamp = file_stamp(path)
            if stamp is not None and stamp != self._routes_stamp:
                self.load_routes()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the routes and bind everything. Every TCP address is bound before any
        ``ipc://`` path, and a path a live process listens on is refused, so a second instance
        on the same configuration exits (one line, no traceback) without disturbing the first.
        On a failure whatever was bound is released and the :class:`BindError` propagates."""
        self.load_routes(initial=True)
        if self._info == logging.INFO:
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
        if self.reloader is not None:
            self._reload_task = self.loop.create_task(self.reloader.watch())
        self.listeners.watch()
        if self.status_reporter is not None:
            self.status_reporter.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self.loop.add_signal_handler(signal.SIGHUP, self._sighup)
            if self.worker is None:  # a worker ignores Ctrl-C: its hub stops it
                self.loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            self.loop.add_signal_handler(signal.SIGTERM, self._stopping.set)

    async def _bind(self, *, ipc: bool) -> None:
        """One start phase: the TCP listeners (``ipc`` False) or the ``ipc://`` paths (True).
        A worker binds only its client listeners, sharing each port with the other workers
        (SO_REUSEPORT); the hub binds the rest."""
        if not ipc:
            await self.listeners.bind(self.config)
            if self.pipeline is not None:
                await self.pipeline.start()
            await self.bus.start()
        if self.services is not None:
            await self.services.bind(ipc=ipc)

    async def run(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.stop()

    async def wait_stopped(self) -> None:
        """Until SIGTERM (or SIGINT in a single process) or :meth:`request_stop`."""
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    # -- messages from the hub (worker mode) ---------------------------------------------------

    def on_hub_message(self, msg: tuple[Any, ...]) -> None:
        if self.link is not None:
            self.link.on_message(msg)

    def _on_command(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "recover":
            self.engine.recover()  # the hub's pipeline already forgot the last ids
        elif kind == "refresh":
            self.refresh_woh(msg[1])
        elif kind == "firstsub":
            self.engine.first_subscription(msg[1])
        elif kind == "stop":
            self.request_stop()
        elif kind == "reload":  # the hub reloaded pushpin.conf: its result, and the log level
            try:
                self.apply_config(msg[1])
            except ConfigError as e:
                log.log(self._error, "config not reloaded in this worker: %s", e)
            if msg[2] is not None:
                set_log_level(msg[2])

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
        if self._reload_task is not None:
            self._reload_task.cancel()
        await self.listeners.stop_watch()
        if self.status_reporter is not None:
            self.status_reporter.stop()
        if self._waiting_timer is not None:
            self._waiting_timer.cancel()
        if self.pipeline is not None:
            await self.pipeline.stop()
        self.channels.stop()
        if self.services is not None:
            await self.services.stop_inputs()
        await self.bus.stop()
        self.listeners.close()
        for conn in list(self.connections):
            conn.close()
        await self.pool.close()
        self.ticklog.flush()
        self.engine.ticklog.flush()
        if self.services is not None:
            await self.services.stop()
        await self.listeners.wait_closed()


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What makes an :class:`App` one worker of a multi-worker instance."""

    index: int
    count: int
    link: FrameLink
    admission: Admission
    generation: int = 0  # how many times this worker index was started before
    # local_ports: (path, listening socket) handed over by the hub, which bound them
    unix_socks: tuple[tuple[str, socket.socket], ...] = ()


class _Entry:
    """The publish inputs' target in a single process: the bus (or, ``local``, this process's
    pipeline only), and ``recover`` locally."""

    __slots__ = ("app", "local")

    def __init__(self, app: App, *, local: bool = False) -> None:
        self.app = app
        self.local = local

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        if self.local and self.app.pipeline is not None:
            self.app.pipeline.publish(items, source=source)
        else:
            self.app.bus.publish(items, source=source)

    def recover(self) -> None:
        assert self.app.pipeline is not None
        self.app.pipeline.recover()


class _NoSink:
    """Placeholder until the worker's engine exists."""

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        raise RuntimeError("items before the engine exists")

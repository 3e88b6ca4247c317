"""The hub of a multi-worker instance (``[gripd] workers`` > 1).

The hub owns what exists once per instance (publish inputs, stats, Prometheus: see
:mod:`gripd.runtime.services`) and starts ``workers`` worker processes, each running the
listener, origin pool and holds on the same client ports (``SO_REUSEPORT``: the kernel spreads
new connections over them). Published items go from the inputs onto the bus and the hub's
:class:`~gripd.io.bus.hub.HubRouter` sends each item only to the workers that hold its channel.
Workers forward their events, so stats and metrics see the whole instance.

A worker that dies is logged and restarted (at most once a second per worker); SIGHUP is passed
on to every worker (each reloads its routes); SIGTERM/SIGINT stop the workers gracefully, then
the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gripd.core.config import Config
from gripd.core.errors import ConfigError
from gripd.core.history import HistoryPolicy, Replay
from gripd.core.publish import PublishItem
from gripd.core.sequencer import Sequencer
from gripd.core.stats import item_blocks
from gripd.io.bus.base import Bus
from gripd.io.bus.hub import (
    BroadcastLastIds,
    EventRelay,
    FrameLink,
    HubRouter,
    Message,
    open_link,
)
from gripd.io.handler.channels import ChannelTracker
from gripd.io.handler.engine import FIRST_SUBSCRIPTION_DELAY
from gripd.io.handler.pipeline import PublishPipeline
from gripd.io.inputs.zmq import BindError, os_reason
from gripd.io.listener.tls import CertStore
from gripd.io.listener.unix import LOCAL_FDS_MAX, bind_unix, file_id, unlink_if_same
from gripd.runtime.admission import Admission
from gripd.runtime.buses import make_bus, make_history
from gripd.runtime.reload import (
    ConfigReloader,
    apply_instance_settings,
    forward_settings,
    set_log_level,
)
from gripd.runtime.services import Services
from gripd.runtime.spawn import WorkerProcess, start_worker_process

log = logging.getLogger("gripd")

READY_TIMEOUT = 30.0  # seconds a new worker has to bind its listeners
STOP_TIMEOUT = 10.0  # seconds workers have to stop before they are killed
RESTART_MIN_INTERVAL = 1.0  # a worker that keeps dying is restarted at most this often


@dataclass
class WorkerProc:
    index: int
    proc: WorkerProcess | None = None
    link: FrameLink | None = None
    ready: asyncio.Future[str | None] | None = None
    started: float = 0.0
    pid: int = 0
    generation: int = 0  # starts so far (connection ids of a restarted worker move on)
    watch: asyncio.Task[None] | None = field(default=None, repr=False)


class Hub:
    """Starts, watches and stops the workers; owns the per-instance services and the bus."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int,
        route_lines: list[str] | None = None,
        log_level: int = 2,
        logfile: str | None = None,
        admission: Admission | None = None,
        prestarted: list[tuple[WorkerProcess, socket.socket]] | None = None,
        config_loader: Callable[[], Config] | None = None,
        log_level_fixed: bool = False,
    ) -> None:
        """``admission`` and ``prestarted`` (one process per worker, in index order) come
        from :func:`gripd.runtime.spawn.fork_worker` when the workers were forked before the
        hub's event loop started (the command line does so); otherwise the hub starts them.
        ``config_loader`` reads pushpin.conf again on SIGHUP or a change of the file; the hub
        applies its part and sends the result to every worker (None: no reload)."""
        self.config = config
        self.log_level_fixed = log_level_fixed
        self.reloader = (
            ConfigReloader(lambda: self.config, config_loader, self.apply_config)
            if config_loader is not None
            else None
        )
        self._reload_task: asyncio.Task[None] | None = None
        self.count = workers
        self.route_lines = route_lines
        self.log_level = log_level
        self.logfile = logfile
        self.loop = asyncio.get_running_loop()
        self.router = HubRouter(wildcard=config.wildcard_channels)
        # The instance's channel interest, from the workers' forwarded subscriptions, with the
        # one linger; the pipeline, the ZeroMQ SUB socket and the bus listen to it.
        self.tracker = ChannelTracker(
            config.subscription_linger, self.loop, wildcard=config.wildcard_channels
        )
        self.services = Services(
            config,
            self.loop,
            entry=_HubEntry(self),
            local=_HubEntry(self, local=True),
            refresh=self.refresh,
            has_channel=self._has_channel,
        )
        events = self.services.events
        self.sequencer = Sequencer(
            message_wait_ms=config.message_wait, id_cache_ttl=config.id_cache_ttl
        )
        self.sequencer.last_ids = BroadcastLastIds(self.router)  # replicated to the workers
        # Inputs -> bus -> pipeline (dedup, sequencing, rate limit) -> router -> workers.
        self.pipeline = PublishPipeline(
            config,
            self.router,
            channels=self.tracker,
            sequencer=self.sequencer,
            events_out=events,
        )
        self.bus: Bus = make_bus(config, self.pipeline)
        self.history = make_history(config, self.bus, self.pipeline, self.loop)
        self.services.history = self.history
        self.services.metrics.bus = self.bus  # its state and counters, for Prometheus
        self.tracker.add_listener(self.services.zmq_inputs)
        self.tracker.add_listener(self.bus)
        self.router.received = lambda item, source: events.message_received(
            item.channel, source, item_blocks(item, self.config.message_block_size)
        )
        self.router.on_drop = lambda n: events.dropped("worker_queue", n)
        self.relay = EventRelay(
            events, self.services.metrics.observe_origin_latency, tracker=self.tracker
        )
        if config.update_on_first_subscription:
            self.relay.on_gained = self._first_subscription
        self.admission = admission or Admission.create(workers)
        self._prestarted = dict(enumerate(prestarted or []))
        self.workers = {i: WorkerProc(i) for i in range(workers)}
        self._stopping = asyncio.Event()
        self._closing = False
        # local_ports: bound here once, handed to every worker (see _spawn)
        self.unix_socks: list[tuple[str, socket.socket, int | None]] = []
        self.services.status.workers = self.status_workers  # the status page's workers

    # -- commands that reach every worker ----------------------------------------------------

    def recover(self) -> None:
        """F27 ``recover``: the pipeline forgets every last-id, every worker retries its
        holds."""
        self.pipeline.recover()

    def _first_subscription(self, channel: str, mode: str) -> None:
        """F22: ~1 s after the instance's first subscriber of a channel (an HTTP hold, as in a
        single process), the workers holding it update their holds."""
        if mode != "ws":
            self.loop.call_later(
                FIRST_SUBSCRIPTION_DELAY,
                self.router.send_to_holders,
                channel,
                ("firstsub", channel),
            )

    def _has_channel(self, channel: str) -> bool:
        return self.relay.has_channel(channel)

    def refresh(self, args: dict[str, str]) -> bool:
        """F42 ``refresh``: to the worker holding the WebSocket-over-HTTP session, or to all for
        a channel; False for an unknown connection id."""
        if "cid" in args:
            w = self.relay.woh.get(args["cid"])
            link = self.router.links.get(w) if w is not None else None
            if link is None:
                return False
            link.send(("refresh", args))
            return True
        self.router.broadcast(("refresh", args))
        return True

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the client ports, start the workers and wait until every one has bound its
        listeners, join the bus (bounded), then bind the per-instance services (TCP, then
        ``ipc://``)."""
        try:
            self._check_client_ports()
            self._check_certs()
            self._bind_local()
            # Workers first: once the control API answers, clients can connect.
            results = await asyncio.gather(*(self._spawn(w) for w in self.workers.values()))
            for err in results:
                if err is not None:
                    raise OSError(err)  # the worker's one-line reason (a BindError's text)
            await self.pipeline.start()
            await self.bus.start()  # on the bus (Redis up) before the inputs take publishes
            await self.services.bind(ipc=False)
            await self.services.bind(ipc=True)
        except BaseException:
            await self.stop(quiet=True)
            raise
        log.info("started %d workers", self.count)
        if self.reloader is not None:
            self._reload_task = self.loop.create_task(self.reloader.watch())
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self.loop.add_signal_handler(signal.SIGHUP, self._sighup)
            self.loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            self.loop.add_signal_handler(signal.SIGTERM, self._stopping.set)

    def _check_client_ports(self) -> None:
        """Workers bind the client ports with SO_REUSEPORT, which another process of the same
        user could share silently; a plain bind first makes a port in use an error, as it is
        for a single process."""
        ports = [(p, "http_port") for p in self.config.http_port]
        ports += [(p, "https_ports") for p in self.config.https_ports]
        for listen, setting in ports:
            host = listen.addr or ""
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, listen.port))
            except OSError as e:
                raise BindError(f"{host or '*'}:{listen.port}", setting, os_reason(e)) from None
            finally:
                s.close()

    def _check_certs(self) -> None:
        """The https_ports certificates load (else one ConfigError naming the file, here rather
        than once per worker); each worker then loads and watches its own copy."""
        cfg = self.config
        if cfg.https_ports:
            certs_dir = os.path.join(cfg.config_dir, "runner", "certs")
            CertStore(certs_dir, [p.port for p in cfg.https_ports]).load()

    def _bind_local(self) -> None:
        """F3 ``local_ports``: SO_REUSEPORT does not spread Unix-socket connections, so the
        hub binds each path once and every worker accepts on the same listening socket (each
        connection goes to one of them). A restarted worker is handed the same sockets."""
        if len(self.config.local_ports) > LOCAL_FDS_MAX:
            raise ConfigError(f"[runner] local_ports: at most {LOCAL_FDS_MAX} with workers")
        for path in self.config.local_ports:
            sock = bind_unix(path)
            self.unix_socks.append((path, sock, file_id(path)))
            log.info("listening on unix:%s", path)

    async def _spawn(self, w: WorkerProc) -> str | None:
        """Start worker ``w`` (or take the one started early); its bind error, or None once
        it is ready."""
        w.ready = self.loop.create_future()
        w.started = time.monotonic()
        self.admission.reset(w.index)
        early = self._prestarted.pop(w.index, None)
        proc, parent = early or start_worker_process(self.admission.fd)
        w.proc = proc
        # The first byte on the pair carries the local_ports listening sockets (SCM_RIGHTS),
        # before any frame: the worker reads it before it opens its link.
        fds = [sock.fileno() for _, sock, _ in self.unix_socks]
        try:
            socket.send_fds(parent, [b"F"], fds)
        except OSError as e:
            parent.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # it would wait for the byte that never comes
            return f"worker {w.index}: cannot hand over the local_ports sockets: {e}"
        w.link = await open_link(parent, partial(self._on_message, w), _ignore)
        w.pid = proc.pid
        w.link.send(
            (
                "init",
                {
                    "config": self.config,
                    "route_lines": self.route_lines,
                    "index": w.index,
                    "count": self.count,
                    "generation": w.generation,
                    "log_level": self.log_level,
                    "logfile": self.logfile,
                },
            )
        )
        w.generation += 1
        w.watch = self.loop.create_task(self._watch(w, w.proc))
        try:
            err = await asyncio.wait_for(asyncio.shield(w.ready), READY_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()  # never left serving clients it cannot publish to
            return f"worker {w.index}: not ready after {READY_TIMEOUT:.0f} s"
        if err is None:
            # A new (or restarted) worker's replica starts from what the sequencer knows; no
            # await between this and attach, so no change is missed.
            w.link.send(("lidset", self.sequencer.last_ids.items()))
            self.router.attach(w.index, w.link)
            log.debug("worker %d ready (pid %d)", w.index, w.pid)
        return err

    def _on_message(self, w: WorkerProc, msg: Message) -> None:
        kind = msg[0]
        if kind == "ev":
            self.relay.handle(w.index, msg)
        elif kind == "gained":
            self.router.gained(w.index, msg[1])
        elif kind == "lost":
            self.router.lost(w.index, msg[1])
        elif kind == "ready":
            if w.ready is not None and not w.ready.done():
                w.ready.set_result(msg[1])
        elif kind == "forget":
            self.pipeline.forget_last_id(msg[1])
        elif kind == "hread":
            self._read_history(w, msg[1], msg[2], msg[3], msg[4])
        elif kind == "hpol":
            self.history.set_policy(msg[1], HistoryPolicy(msg[2], msg[3]))
        elif kind == "status":
            self.services.status.worker_report(w.index, msg[1])

    def status_workers(self) -> dict[str, Any]:
        """The workers as the status page shows them (restarts: starts after the first)."""
        now = time.monotonic()
        procs = [
            {
                "index": w.index,
                "pid": w.pid,
                "restarts": max(w.generation - 1, 0),
                "up": round(now - w.started, 1) if w.started else 0.0,
                "alive": w.proc is not None and w.proc.returncode is None,
            }
            for w in self.workers.values()
        ]
        return {"mode": "hub", "pid": os.getpid(), "count": self.count, "processes": procs}

    def _read_history(
        self, w: WorkerProc, n: int, channel: str, after: str | None, limit: int
    ) -> None:
        """A worker resumes a client: answer from the instance's history on its link."""
        link = w.link

        def done(r: Replay) -> None:
            if link is not None and w.link is link:
                link.send(("hrep", n, r.status, list(r.items), r.top, list(r.known)))

        self.history.read(channel, after, limit, done)

    async def _watch(self, w: WorkerProc, proc: WorkerProcess) -> None:
        code = await self.loop.run_in_executor(None, proc.wait)
        if w.proc is not proc:
            return
        self.router.detach(w.index)
        self.relay.worker_gone(w.index)
        self.services.status.worker_gone(w.index)
        self.admission.reset(w.index)
        if w.link is not None:
            w.link.close()
            w.link = None
        if w.ready is not None and not w.ready.done():
            w.ready.set_result(f"worker {w.index} exited with code {code} while starting")
        if self._closing:
            return
        log.error("worker %d (pid %d) exited with code %s; restarting it", w.index, w.pid, code)
        wait = RESTART_MIN_INTERVAL - (time.monotonic() - w.started)
        if wait > 0:
            await asyncio.sleep(wait)
        if self._closing:
            return
        err = await self._spawn(w)
        if err is not None:
            log.error("worker %d could not be restarted: %s", w.index, err)
        else:
            log.info("worker %d restarted (pid %d)", w.index, w.pid)

    def apply_config(self, config: Config) -> None:
        """A reloaded configuration (:mod:`gripd.runtime.reload`): the hub's publish inputs,
        pipeline and history take it, then every worker (a worker started later gets it in its
        init). A key file that cannot be read raises ConfigError before anything changed."""
        forward_settings(config)  # the workers' key files: refused here, once, if unreadable
        auth = self.services.publish_auth_for(config)
        self.config = config
        apply_instance_settings(
            config,
            services=self.services,
            auth=auth,
            pipeline=self.pipeline,
            history=self.history,
            interest=self.tracker.interest,
        )
        level = None
        if not self.log_level_fixed:
            level = config.log_level
            self.log_level = level  # what a restarted worker starts with
            set_log_level(level)
        self.router.broadcast(("reload", config, level))

    def _sighup(self) -> None:
        """Routes reload (F6) in every worker, and pushpin.conf here."""
        if self.reloader is not None:
            self.reloader.reload()
        for w in self.workers.values():
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGHUP)

    async def run(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, *, quiet: bool = False) -> None:
        if not quiet:
            log.info("stopping")
        self._closing = True
        if self._reload_task is not None:
            self._reload_task.cancel()
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.remove_signal_handler(sig)
        await self.services.stop_inputs()
        procs = [w.proc for w in self.workers.values() if w.proc is not None]
        for p, parent in self._prestarted.values():  # started early, never taken (failed start)
            parent.close()  # it stops by itself when its hub end closes
            procs.append(p)
        self._prestarted.clear()
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        if procs:  # all in parallel: a stop takes STOP_TIMEOUT at most, not one per worker
            waits = [self.loop.run_in_executor(None, p.wait) for p in procs]
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            for p in procs:
                if p.poll() is None:
                    log.warning(
                        "worker pid %d did not stop in %.0f s; killing it", p.pid, STOP_TIMEOUT
                    )
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if late:
                await asyncio.wait(late)
        for w in self.workers.values():
            if w.watch is not None:
                w.watch.cancel()
            if w.link is not None:
                w.link.close()
        await self.pipeline.stop()
        self.tracker.stop()
        await self.bus.stop()
        await self.services.stop()
        self.admission.close()
        with contextlib.suppress(OSError):
            os.close(self.admission.fd)
        for path, sock, ino in self.unix_socks:
            sock.close()
            unlink_if_same(path, ino)
        self.unix_socks.clear()


def _ignore() -> None:
    """A worker's link closing is noticed through its process exiting."""


class _HubEntry:
    """What the publish inputs are handed: the bus (or, ``local``, this instance's pipeline
    only), and ``recover`` for the instance."""

    __slots__ = ("hub", "local")

    def __init__(self, hub: Hub, *, local: bool = False) -> None:
        self.hub = hub
        self.local = local

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        if self.local:
            self.hub.pipeline.publish(items, source=source)
        else:
            self.hub.bus.publish(items, source=source)

    def recover(self) -> None:
        self.hub.recover()

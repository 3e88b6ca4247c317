"""What exists once per instance: the publish inputs, stats and Prometheus.

The HTTP control API (F28), the ZeroMQ PULL/SUB inputs (F31), the command socket (F42), the
stats socket (F43) and the Prometheus endpoint (F44) listen on fixed ports, so there is one of
each per instance whatever the number of workers. In a single process they live next to the
listener; with workers they live in the hub. Either way they are given only what they use: an
entry to publish into (and ``recover``), a local entry for the ZeroMQ SUB input (it bypasses a
shared bus: every instance subscribes to the ZeroMQ publisher itself, as in Pushpin's scale-out,
so putting its items on the bus too would deliver them once per instance), a ``refresh``
callback, and whether a channel is held (for the SUB socket's exact-name filter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq.asyncio

from gripd.core.config import Config
from gripd.core.pubauth import PublishAuth, PublishGate, load_publish_auth
from gripd.io.handler.history import HistoryReader
from gripd.io.inputs.command import CommandServer
from gripd.io.inputs.control_http import ControlLimits, PublishSink, start_control_server
from gripd.io.inputs.zmq import BindError, ZmqInputs, os_reason
from gripd.io.netaddr import is_loopback_host
from gripd.io.observe.events import EventFanout
from gripd.io.observe.metrics import Metrics
from gripd.io.observe.stats import StatsPublisher
from gripd.io.observe.status import StatusBoard
from gripd.io.observe.ticklog import TickLog
from gripd.runtime.reload import read_bytes

log = logging.getLogger("gripd")


class Services:
    """The per-instance publish inputs and observers; ``events`` is what they observe."""

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        *,
        entry: PublishSink,
        local: PublishSink | None = None,
        refresh: Callable[[dict[str, str]], bool],
        has_channel: Callable[[str], bool],
    ) -> None:
        self.config = config
        self.entry = entry
        self.events = EventFanout()
        self.stats = StatsPublisher(config, loop=loop)  # Metrics reads its state
        self.events.add(self.stats)
        self.metrics = Metrics(config, stats=self.stats.state)
        self.events.add(self.metrics)
        # The status page (/status, /status.html) is served where Prometheus is, when it is.
        self.status = StatusBoard(self.metrics, loop)
        if config.prometheus_port:
            self.events.add(self.status)
            self.metrics.status = self.status
        # publish_key: the control API and the command socket check the same gate.
        self.publish_auth = PublishGate(self.publish_auth_for(config))
        self.zmq = zmq.asyncio.Context()
        self.zmq_inputs = ZmqInputs(
            config,
            entry,
            sub_sink=local,
            has_channel=has_channel,
            events_out=self.events,
            context=self.zmq,
        )
        self.command = CommandServer(
            config,
            sink=entry,
            recover=entry.recover,
            is_connected=self.stats.check_connection,
            refresh=refresh,
            context=self.zmq,
            auth=self.publish_auth,
        )
        self.control: asyncio.Server | None = None
        self.control_lines = TickLog("gripd.control", loop)
        self.control_limits = ControlLimits(
            config.push_in_http_max_headers_size,
            config.push_in_http_max_body_size,
            config.client_header_timeout,
            config.control_keep_alive,
        )
        self.history: HistoryReader | None = None  # for the control API's history read

    def publish_auth_for(self, config: Config) -> PublishAuth | None:
        """The publish check ``config`` asks for; raises ConfigError (an unreadable key)."""
        return load_publish_auth(
            config.publish_key,
            config.publish_iss,
            base_dir=config.config_dir,
            read_file=read_bytes,
        )

    def reconfigure(self, config: Config, auth: PublishAuth | None) -> None:
        """A config reload: the publish key (``auth``, from :meth:`publish_auth_for`) and the
        control API's bounds change; the other settings the services use are bound at start."""
        self.config = config
        if auth is not self.publish_auth.auth:
            self.publish_auth.set(auth)
        lim = self.control_limits
        lim.max_headers_size = config.push_in_http_max_headers_size
        lim.max_body_size = config.push_in_http_max_body_size
        lim.header_timeout = config.client_header_timeout
        lim.keep_alive = config.control_keep_alive

    async def bind(self, *, ipc: bool) -> None:
        """One start phase: TCP endpoints (``ipc`` False) or ``ipc://`` paths (True)."""
        cfg = self.config
        if not ipc:
            try:
                self.control = await start_control_server(
                    self.entry,
                    cfg.push_in_http_addr,
                    cfg.push_in_http_port,
                    history=self.history,
                    auth=self.publish_auth,
                    limits=self.control_limits,
                    lines=self.control_lines,
                )
            except OSError as e:
                address = f"{cfg.push_in_http_addr}:{cfg.push_in_http_port}"
                setting = "push_in_http_addr/push_in_http_port"
                raise BindError(address, setting, os_reason(e)) from None
            log.info("control API on %s:%d", cfg.push_in_http_addr, cfg.push_in_http_port)
            if not cfg.publish_key and _beyond_loopback(self.control):
                log.warning(
                    "control API on %s:%d is reachable from other machines and accepts "
                    "publishes without authentication: set [gripd] publish_key",
                    cfg.push_in_http_addr,
                    cfg.push_in_http_port,
                )
        await self.zmq_inputs.start(ipc=ipc)
        await self.command.start(ipc=ipc)
        await self.metrics.start(ipc=ipc)
        if self.metrics.status is not None and not ipc:
            self.status.start()
        await self.stats.start(ipc=ipc)

    async def stop_inputs(self) -> None:
        """Stop taking publishes (first, so nothing arrives while the rest shuts down)."""
        await self.command.stop()
        await self.zmq_inputs.stop()
        if self.control is not None:
            self.control.close()

    async def stop(self) -> None:
        """Close the observers and the ZeroMQ context (after :meth:`stop_inputs`)."""
        self.control_lines.flush()
        self.status.stop()
        await self.metrics.stop()
        await self.stats.stop()
        self.zmq.term()
        if self.control is not None:
            try:
                await asyncio.wait_for(self.control.wait_closed(), 2.0)
            except Exception:
                pass


def _beyond_loopback(server: asyncio.Server) -> bool:
    """Whether ``server`` listens on an address other than loopback (``0.0.0.0`` included)."""
    for sock in server.sockets:
        name = sock.getsockname()
        if not is_loopback_host(str(name[0] if isinstance(name, tuple) else name)):
            return True
    return False

"""The client listeners of one serving process: ``http_port`` (TCP), ``https_ports`` (TLS, with
the certificate store and its watcher) and ``local_ports`` (Unix sockets), F1/F3.

A worker binds the TCP and TLS ports with SO_REUSEPORT, sharing each with the other workers,
and accepts on the Unix sockets the hub bound once and handed over (SO_REUSEPORT does not apply
to Unix sockets; the kernel gives each new connection to one of the accepting workers). A single
process binds everything itself and removes its Unix socket files when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from gripd.core.config import Config
from gripd.io.inputs.zmq import BindError, os_reason
from gripd.io.listener.tcp import serve_tcp
from gripd.io.listener.tls import CertStore, serve_tls, stop_watch
from gripd.io.listener.unix import BACKLOG, bind_unix, file_id, unlink_if_same

log = logging.getLogger("gripd")

ProtocolFactory = Callable[[], asyncio.Protocol]


class ClientListeners:
    """Binds, watches (certificates) and closes one process's client listeners.
    ``worker_unix``: the Unix sockets handed over by the hub (a worker), else None;
    ``shared``: the ports are shared with other workers; ``announce``: this process logs them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: ProtocolFactory,
        *,
        shared: bool,
        announce: bool,
        worker_unix: tuple[tuple[str, socket.socket], ...] | None,
    ) -> None:
        self.loop = loop
        self.factory = factory
        self.shared = shared
        self.announce = announce
        self.worker_unix = worker_unix
        self.servers: list[asyncio.Server] = []
        self.certs: CertStore | None = None  # https_ports certificates, once loaded
        self._certs_task: asyncio.Task[None] | None = None
        self._unix_files: list[tuple[str, int | None]] = []  # local_ports bound here, to remove

    async def bind(self, cfg: Config) -> None:
        """Every client listener; a :class:`BindError` (or a ConfigError for a certificate)
        propagates, with what was bound left for :meth:`close`."""
        for listen in cfg.http_port:
            server = await serve_tcp(
                self.loop,
                self.factory,
                listen,
                "http_port",
                reuse_port=self.shared,
                announce=self.announce,
            )
            self.servers.append(server)
        await self._bind_tls(cfg)
        await self._bind_local(cfg)

    async def _bind_tls(self, cfg: Config) -> None:
        """``https_ports`` with the certificates of ``runner/certs`` (loaded now: a missing or
        bad one is a ConfigError naming the file)."""
        if not cfg.https_ports:
            return
        certs = CertStore(
            os.path.join(cfg.config_dir, "runner", "certs"),
            [p.port for p in cfg.https_ports],
            http2=cfg.http2,
            reload_interval=cfg.tls_reload_interval,
            quiet=not self.announce,
        )
        certs.load()
        self.certs = certs
        self.servers += await serve_tls(
            self.loop,
            self.factory,
            cfg.https_ports,
            certs,
            reuse_port=self.shared,
            header_timeout=cfg.client_header_timeout,
            announce=self.announce,
        )

    async def _bind_local(self, cfg: Config) -> None:
        """``local_ports``: bound here (a single process), or handed over by the hub."""
        socks: list[tuple[str, socket.socket]] = []
        if self.worker_unix is not None:
            socks = list(self.worker_unix)
        else:
            for path in cfg.local_ports:
                sock = bind_unix(path)
                self._unix_files.append((path, file_id(path)))
                socks.append((path, sock))
        for path, sock in socks:
            try:
                server = await self.loop.create_unix_server(
                    self.factory, sock=sock, backlog=BACKLOG
                )
            except OSError as e:
                sock.close()
                raise BindError(path, "local_ports", os_reason(e)) from None
            self.servers.append(server)
            if self.worker_unix is None:  # the hub says it for the workers
                log.info("listening on unix:%s", path)

    def watch(self) -> None:
        """Start looking for changed certificates."""
        if self.certs is not None:
            self._certs_task = self.loop.create_task(self.certs.watch())

    async def stop_watch(self) -> None:
        await stop_watch(self._certs_task)

    def close(self) -> None:
        """Stop accepting (open connections are closed by their owner)."""
        for server in self.servers:
            server.close()

    async def wait_closed(self) -> None:
        """Once closed: wait for the servers (2 s each at most) and remove the socket files
        this process made."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        for path, ino in self._unix_files:
            unlink_if_same(path, ino)

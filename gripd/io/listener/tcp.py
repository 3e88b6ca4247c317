"""Binding one TCP client listener (``http_port`` or an ``https_ports`` entry, F1/F3).

Plain and TLS listeners are bound the same way: ``SO_REUSEADDR``, ``SO_REUSEPORT`` when the
port is shared with other workers, the same accept backlog as the Unix sockets, and a bind
failure reported as a :class:`~gripd.io.inputs.zmq.BindError` naming the address and setting.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from gripd.core.config import Listen
from gripd.io.inputs.zmq import BindError, os_reason
from gripd.io.listener.unix import BACKLOG

log = logging.getLogger("gripd")


async def serve_tcp(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    listen: Listen,
    setting: str,
    *,
    reuse_port: bool,
    announce: bool,
    tls: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
) -> asyncio.Server:
    """A server on ``listen`` (``setting`` names it in errors); TLS with ``tls``."""
    try:
        server = await loop.create_server(
            factory,
            host=listen.addr or None,
            port=listen.port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=BACKLOG,
            ssl=tls,
            ssl_handshake_timeout=handshake_timeout if tls is not None else None,
        )
    except OSError as e:
        raise BindError(f"{listen.addr or '*'}:{listen.port}", setting, os_reason(e)) from None
    if announce:
        tail = " (tls)" if tls is not None else ""
        log.info("listening on %s:%d%s", listen.addr or "*", listen.port, tail)
    return server

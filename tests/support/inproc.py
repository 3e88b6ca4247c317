"""gripd's ``App`` run inside the test's own event loop, and its configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gripd.core.config import Config, Listen, default_config
from tests.support.procs import free_ports

if TYPE_CHECKING:
    from gripd.runtime.app import App


def inprocess_config(**changes: Any) -> Config:
    """The default configuration on free loopback ports (client, control API, ZeroMQ PULL,
    SUB, command and stats sockets), with ``changes`` on top.

    The default stats socket is one fixed ``ipc://`` path: two tests sharing it (in parallel
    pytest processes) would refuse each other's bind."""
    http, control, pull, sub, cmd, stats = free_ports(6)
    return replace(
        default_config("/tmp"),
        http_port=[Listen("127.0.0.1", http)],
        push_in_http_port=control,
        push_in_spec=f"tcp://127.0.0.1:{pull}",
        push_in_sub_specs=[f"tcp://127.0.0.1:{sub}"],
        command_spec=f"tcp://127.0.0.1:{cmd}",
        stats_spec=f"tcp://127.0.0.1:{stats}",
        **changes,
    )


@asynccontextmanager
async def inprocess_app(route: str, **changes: Any) -> AsyncIterator[App]:
    """gripd's ``App`` started in the current event loop with one route line, on
    :func:`inprocess_config` (``changes`` on top); stopped at the end. Its client port is
    ``app.config.http_port[0].port``."""
    from gripd.runtime.app import App  # imported late: building a config needs none of it

    app = App(inprocess_config(**changes), route_lines=[route])
    await app.start()
    try:
        yield app
    finally:
        await app.stop()

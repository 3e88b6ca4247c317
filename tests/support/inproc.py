"""gripd's configuration for an ``App`` run inside the test's own event loop."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gripd.core.config import Config, Listen, default_config
from tests.support.procs import free_ports


def inprocess_config(**changes: Any) -> Config:
    """The default configuration on free loopback ports (client, control API, ZeroMQ PULL,
    SUB and command sockets), with ``changes`` on top."""
    http, control, pull, sub, cmd = free_ports(5)
    return replace(
        default_config("/tmp"),
        http_port=[Listen("127.0.0.1", http)],
        push_in_http_port=control,
        push_in_spec=f"tcp://127.0.0.1:{pull}",
        push_in_sub_specs=[f"tcp://127.0.0.1:{sub}"],
        command_spec=f"tcp://127.0.0.1:{cmd}",
        **changes,
    )

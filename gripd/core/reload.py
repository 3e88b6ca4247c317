"""What a reload of pushpin.conf changes (sans-I/O): every setting is either applied live or
needs a restart, and the configuration in force after a reload takes the new value of each live
setting and keeps the old value of each other one.

Live settings are those a running instance can take without dropping a connection: timeouts,
limits, keys, the publish rate, history, CORS, ``debug``, the log level, origin options. Those
bound to sockets and processes (ports, addresses, ZeroMQ specs, workers, the bus, the run
directory) need a restart; a reload logs them as such and keeps their old values. Every field
of :class:`~gripd.core.config.Config` is in exactly one of the sets below (a test checks it),
so a new setting must be classified when it is added.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gripd.core.config import Config

#: Applied by a reload (new connections and requests see them at once; held ones at their next
#: use of the setting).
LIVE: frozenset[str] = frozenset(
    {
        "log_level",
        "debug",
        "auto_cross_origin",
        "accept_x_forwarded_protocol",
        "set_x_forwarded_protocol",
        "x_forwarded_for",
        "x_forwarded_for_trusted",
        "orig_headers_need_mark",
        "accept_pushpin_route",
        "log_from",
        "log_user_agent",
        "sig_iss",
        "sig_key",
        "upstream_key",
        "sockjs_url",
        "max_open_requests",
        "push_in_http_max_headers_size",
        "push_in_http_max_body_size",
        "message_rate",
        "message_hwm",
        "message_block_size",
        "message_wait",
        "id_cache_ttl",
        "connection_subscription_max",
        "subscription_linger",
        "client_maxconn",
        "client_buffer_size",
        "client_write_buffer_max",
        "origin_connect_timeout",
        "origin_response_timeout",
        "max_request_body",
        "ws_max_message_size",
        "slow_client_policy",
        "client_header_timeout",
        "client_idle_timeout",
        "client_pipeline_max",
        "client_pipeline_bytes_max",
        "origin_response_head_max",
        "history_size",
        "history_ttl",
        "history_gone_event",
        "publish_key",
        "publish_iss",
        "http2_max_streams",
        "http2_reset_budget",
        "http2_control_budget",
        "control_keep_alive",
    }
)

#: Bound to sockets, files or processes made at start: a reload logs "needs restart" and keeps
#: the old value.
RESTART: frozenset[str] = frozenset(
    {
        "rundir",
        "ipc_prefix",
        "port_offset",
        "stats_connection_ttl",
        "services",
        "http_port",
        "https_ports",
        "local_ports",
        "logdir",
        "routesfile",
        "stats_report_interval",
        "prometheus_port",
        "prometheus_prefix",
        "push_in_spec",
        "push_in_sub_specs",
        "push_in_sub_connect",
        "push_in_http_addr",
        "push_in_http_port",
        "stats_spec",
        "command_spec",
        "stats_subscription_ttl",
        "stats_format",
        "update_on_first_subscription",
        "fd_reserve",
        "zmq_max_message_size",
        "workers",
        "history_channels_max",
        "bus",
        "log_format",
        "wildcard_channels",
        "tls_reload_interval",
        "http2",
    }
)

#: Not settings: where the file is, and what reading it produced.
NOT_SETTINGS: frozenset[str] = frozenset({"config_path", "config_dir", "extra", "warnings"})

# Values that may hold a secret (a key itself, or a password in the Redis URL of ``bus``): a
# reload names them, never shows them.
_SECRET = frozenset({"publish_key", "sig_key", "upstream_key", "bus"})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The configuration in force after the reload, the live settings it changed, and the
    settings that changed in the file but need a restart (their old values are kept)."""

    config: Config
    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]

    def describe(self, old: Config) -> list[str]:
        """Log lines, one per changed live setting (``name: old -> new``)."""
        lines = []
        for name in self.changed:
            if name in _SECRET:
                lines.append(f"{name} changed")
            else:
                before, after = getattr(old, name), getattr(self.config, name)
                lines.append(f"{name}: {show(before)} -> {show(after)}")
        return lines

    def restart_lines(self, old: Config) -> list[str]:
        """Log lines, one per setting that changed but needs a restart (its value in force
        is shown unless it may hold a secret)."""
        return [
            f"{name} changed, needs restart"
            if name in _SECRET
            else f"{name} changed, needs restart; keeping {show(getattr(old, name))}"
            for name in self.needs_restart
        ]


def show(value: object) -> str:
    """A setting's value for a log line, cut at 200 characters."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What applying ``new`` (just read from the file) to an instance running ``old`` does."""
    changed: list[str] = []
    restart: list[str] = []
    keep: dict[str, object] = {}
    for f in dataclasses.fields(Config):
        name = f.name
        if name in NOT_SETTINGS:
            continue
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if name in LIVE:
            changed.append(name)
        else:  # RESTART (and, defensively, anything not classified)
            restart.append(name)
            keep[name] = before
    merged = dataclasses.replace(new, **keep) if keep else new  # type: ignore[arg-type]
    return ReloadPlan(merged, tuple(changed), tuple(restart))

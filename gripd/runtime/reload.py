"""Reload of pushpin.conf while running, on SIGHUP and when the file changes on disk.

The file is read again with the command line's overrides (``--id``, ``--port``);
:func:`gripd.core.reload.plan_reload` decides what changes. Settings that can change live are
applied by the process's ``apply`` callback (which may refuse, e.g. a key file that cannot be
read, by raising :class:`ConfigError`); settings that need a restart are logged and keep their old
values. A file that cannot be read or parsed keeps the whole old configuration, and the log names
file and line. No connection is closed by a reload.

With workers, the hub reloads and sends the resulting configuration to every worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gripd.core.config import Config
from gripd.core.errors import ConfigError
from gripd.core.forward import ForwardSettings
from gripd.core.history import HistoryPolicy
from gripd.core.reload import plan_reload
from gripd.core.sig import parse_key
from gripd.io.filestamp import file_stamp
from gripd.io.handler.history import LocalHistory

if TYPE_CHECKING:
    from gripd.core.interest import ChannelInterest
    from gripd.core.pubauth import PublishAuth
    from gripd.io.handler.pipeline import PublishPipeline
    from gripd.runtime.services import Services

log = logging.getLogger("gripd")

#: Pushpin's log levels (``log_level``, ``--loglevel``) as Python logging levels.
LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

#: Seconds between looks at the config file's (mtime, size, inode).
CONFIG_POLL_INTERVAL = 1.0


class ConfigReloader:
    """Reloads one process's configuration. ``current`` gives the configuration in force,
    ``loader`` reads the file again (raising ConfigError), ``apply`` puts a new configuration in
    force (raising ConfigError to refuse it)."""

    def __init__(
        self,
        current: Callable[[], Config],
        loader: Callable[[], Config],
        apply: Callable[[Config], None],
    ) -> None:
        self._current = current
        self._loader = loader
        self._apply = apply
        path = current().config_path
        self.path = path
        self._stamp = file_stamp(path) if path else None

    def reload(self) -> bool:
        """Read the file and apply what changed; True when a live setting changed."""
        if self.path:
            self._stamp = file_stamp(self.path)
        old = self._current()
        try:
            new = self._loader()
        except ConfigError as e:
            log.error("config not reloaded: %s; keeping the previous configuration", e)
            return False
        plan = plan_reload(old, new)
        for line in plan.restart_lines(old):
            log.warning("config reload: %s", line)
        if not plan.changed:
            if not plan.needs_restart:
                log.info("config reloaded: no change")
            return False
        try:
            self._apply(plan.config)
        except ConfigError as e:
            log.error("config not reloaded: %s; keeping the previous configuration", e)
            return False
        log.info("config reloaded: %s", "; ".join(plan.describe(old)))
        return True

    async def watch(self) -> None:
        """Reload whenever the file's (mtime, size, inode) changes."""
        path = self.path
        if not path:
            return
        while True:
            await asyncio.sleep(CONFIG_POLL_INTERVAL)
            stamp = file_stamp(path)
            if stamp is not None and stamp != self._stamp:
                self.reload()


def forward_settings(config: Config) -> ForwardSettings:
    """What requests to origins carry (F9, F14-F16); raises ConfigError for a key file that
    cannot be read (so a reload can be refused before anything changed)."""
    base = config.config_dir
    return ForwardSettings(
        sig_iss=config.sig_iss,
        sig_key=parse_key(config.sig_key, base_dir=base, read_file=read_bytes),
        upstream_key=parse_key(config.upstream_key, base_dir=base, read_file=read_bytes),
        accept_x_forwarded_protocol=config.accept_x_forwarded_protocol,
        set_x_forwarded_protocol=config.set_x_forwarded_protocol,
        x_forwarded_for=tuple(config.x_forwarded_for),
        x_forwarded_for_trusted=tuple(config.x_forwarded_for_trusted),
        orig_headers_need_mark=tuple(config.orig_headers_need_mark),
        accept_pushpin_route=config.accept_pushpin_route,
    )


def read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def apply_instance_settings(
    config: Config,
    *,
    services: Services | None,
    auth: PublishAuth | None,
    pipeline: PublishPipeline | None,
    history: object,
    interest: ChannelInterest,
) -> None:
    """A reload's part for what exists once per instance (the hub, or a single process): the
    publish inputs (``auth`` from ``services.publish_auth_for``, read before anything
    changed), the pipeline's rate and sequencing, the in-memory history's default policy
    (the Redis store takes it at start only) and the subscription linger."""
    if services is not None:
        services.reconfigure(config, auth)
    if pipeline is not None:
        pipeline.reconfigure(config)
    if isinstance(history, LocalHistory):
        history.set_default(HistoryPolicy(config.history_size, config.history_ttl))
    interest.linger = float(config.subscription_linger)


def set_log_level(level: int) -> None:
    """Pushpin's 0-3 log level, on the root logger (as at start)."""
    logging.getLogger().setLevel(LEVELS.get(max(0, min(level, 3)), logging.INFO))

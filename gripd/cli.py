"""Command line: ``gripd`` (Pushpin's runner flags, F1) and ``gripd publish`` (F51).

``gripd [--config FILE | --default-config] [--port [ADDR:]PORT] [--route LINE]... [--id N]
[--loglevel N] [--verbose] [--logfile FILE]``. Without ``--config``, the files Pushpin searches
are tried (``./config/pushpin.conf``, ``./pushpin.conf``, ``./examples/config/pushpin.conf``,
``/etc/pushpin/pushpin.conf``); when none exists, or with ``--default-config``, gripd runs on its
embedded default (Pushpin's shipped configuration with the ``* test`` route), where Pushpin would
exit. The first log lines say which configuration is in use.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gripd import __version__, build
from gripd.core.config import (
    DEFAULT_PUSHPIN_CONF,
    Config,
    default_config,
    find_config_file,
    load_config,
    parse_listen_list,
    parse_log_level,
)
from gripd.core.errors import ConfigError
from gripd.runtime.reload import set_log_level

# Pushpin's level names (src/corelib/log.cpp): [ERR] [WARN] [INFO] [DEBUG].
_LEVEL_NAMES = {"CRITICAL": "ERR", "ERROR": "ERR", "WARNING": "WARN"}


class _Formatter(logging.Formatter):
    """Pushpin's log line shape: ``[INFO] 2026-11-28 15:32:55.123 message``."""

    pushpin_lines = True  # TickLog writes this shape itself, without a LogRecord per line

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        return f"[{level}] {ts}.{int(record.msecs):03d} [{record.name}] {msg}"


# What every LogRecord has; anything else on a record came from the log call's ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_JSON_KEYS = frozenset({"time", "level", "event", "msg", "exc", "stack"})


class JsonFormatter(logging.Formatter):
    """``[gripd] log_format = json``: one JSON object per line, ASCII only (a message's line
    breaks are escaped), with ``time`` (UTC, ISO 8601, milliseconds), ``level`` (Pushpin's
    names: ERR, WARN, INFO, DEBUG), ``event`` (the logger's name), ``msg``, then the fields the
    log call gave with ``extra=`` (``conn``, ``route``, ``peer``...), then ``exc`` (a
    traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "time": f"{ts}.{int(record.msecs):03d}Z",
            "level": _LEVEL_NAMES.get(record.levelname, record.levelname),
            "event": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in _JSON_KEYS:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gripd",
        description="GRIP proxy, drop-in compatible with Pushpin 1.36. "
        "`gripd publish --help` for the publish command; "
        "`gripd demo --help` for a demo in the browser.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        metavar="FILE",
        help="pushpin.conf to use (default: the first of ./config/pushpin.conf, ./pushpin.conf, "
        "./examples/config/pushpin.conf, /etc/pushpin/pushpin.conf that exists, else the "
        "embedded default)",
    )
    source.add_argument(
        "--default-config",
        action="store_true",
        help="run on the embedded default (Pushpin's shipped pushpin.conf, route '* test') "
        "even where a pushpin.conf exists",
    )
    p.add_argument("--logfile", metavar="FILE", help="write logs to FILE instead of stderr")
    p.add_argument(
        "--loglevel",
        metavar="N",
        help="0 error, 1 warning, 2 info (default), 3 debug; Pushpin's "
        "per-service form 2,proxy:3 is accepted (the first number is used)",
    )
    p.add_argument("--verbose", action="store_true", help="same as --loglevel=3")
    p.add_argument(
        "--port",
        metavar="[ADDR:]PORT",
        help="one plain-HTTP listener instead of http_port, https_ports and local_ports",
    )
    p.add_argument(
        "--id", type=int, metavar="N", help="instance id: ipc prefix pN- and port offset N*10"
    )
    p.add_argument(
        "--route",
        action="append",
        metavar="LINE",
        help="a routes-file line (repeatable); replaces the routes file",
    )
    p.add_argument("-m", "--merge-output", action="store_true", help="accepted for Pushpin compat")
    p.add_argument(
        "-v", "--version", action="version", version=f"gripd {__version__} ({build.describe()})"
    )
    return p


def _no_file(path: str) -> str:
    """The embedded default reads no file: a missing include uses the built-in internal.conf."""
    raise OSError(path)


def load(args: argparse.Namespace) -> Config:
    """The configuration the flags ask for; raises ConfigError."""
    cwd = os.getcwd()
    path = None if args.default_config else args.config or find_config_file(cwd, os.path.exists)
    offset = args.id * 10 if args.id is not None else None
    prefix = f"p{args.id}-" if args.id is not None else None
    if path is None:
        cfg = default_config(cwd)
        if args.id is not None:
            # The embedded default's text with --id applied (F1), still without a routes file.
            cfg = dataclasses.replace(
                load_config(
                    DEFAULT_PUSHPIN_CONF,
                    path=None,
                    read_file=_no_file,
                    port_offset_override=offset,
                    ipc_prefix_override=prefix,
                ),
                config_dir=cfg.config_dir,
                routesfile=cfg.routesfile,
            )
        cfg = _user_rundir(cfg)
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file: {e.strerror}", path) from None
        cfg = load_config(
            text,
            path=os.path.abspath(path),
            read_file=lambda p: Path(p).read_text(),
            port_offset_override=offset,
            ipc_prefix_override=prefix,
        )
    if args.port:
        ports = parse_listen_list(args.port)
        if not ports or ports[0].port < 1:
            raise ConfigError(f"invalid --port: {args.port}")
        # F1: --port replaces every client listener: no https_ports, no local_ports.
        cfg = dataclasses.replace(cfg, http_port=ports[:1], https_ports=[], local_ports=[])
    return cfg


def _user_rundir(cfg: Config) -> Config:
    """The embedded default's ipc sockets (stats) go to a directory this user can create:
    Pushpin's shipped ``/var/run/pushpin`` needs root, and the default must run anywhere."""
    if os.access(os.path.dirname(cfg.rundir.rstrip("/")) or "/", os.W_OK):
        return cfg
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    rundir = os.path.join(base, f"gripd-{os.getuid()}")
    return dataclasses.replace(
        cfg, rundir=rundir, stats_spec=cfg.stats_spec.replace(cfg.rundir, rundir)
    )


def setup_logging(level: int, logfile: str | None, log_format: str = "text") -> None:
    """Log to ``logfile`` (else stderr) at Pushpin's ``level`` (0-3), in Pushpin's text lines
    or, with ``log_format`` ``json``, one JSON object per line."""
    handler: logging.Handler
    handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else _Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_log_level(level)


def _raise_nofile_limit() -> None:
    """Every held client is a file descriptor (two for a proxied WebSocket): use the hard
    limit rather than the often much lower soft one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load(args)
        level = cfg.log_level
        if args.loglevel is not None:
            level = parse_log_level(args.loglevel)[0]
        if args.verbose:
            level = 3
    except ConfigError as e:
        print(f"gripd: {e}", file=sys.stderr)
        return 1
    setup_logging(level, args.logfile, cfg.log_format)
    _raise_nofile_limit()
    log_config_source(cfg, args)
    workers = cfg.workers or cpu_count()
    early: list[Any] = []
    admission: Any = None
    if workers > 1:
        # Import everything, then fork the workers before any loop or thread exists: they
        # start with every module loaded.
        import gripd.runtime.hub
        import gripd.runtime.worker  # noqa: F401
        from gripd.runtime.admission import Admission
        from gripd.runtime.spawn import fork_worker

        admission = Admission.create(workers)
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(workers):
            early.append(fork_worker(admission.fd, [p for _, p in early]))

    # A reload (SIGHUP, or the file changed) reads the file again with the same flags; the
    # embedded default has no file to read again.
    loader = (lambda: load(args)) if cfg.config_path is not None else None
    level_fixed = args.loglevel is not None or bool(args.verbose)

    async def main() -> None:
        if workers == 1:
            from gripd.runtime.app import App

            await App(
                cfg,
                route_lines=args.route,
                config_loader=loader,
                log_level_fixed=level_fixed,
            ).run()
        else:
            from gripd.runtime.hub import Hub

            hub = Hub(
                cfg,
                workers=workers,
                route_lines=args.route,
                log_level=level,
                logfile=args.logfile,
                admission=admission,
                prestarted=early,
                config_loader=loader,
                log_level_fixed=level_fixed,
            )
            await hub.run()

    try:
        run_loop(main())
    except (ConfigError, OSError) as e:
        # One line, no traceback: a bad value or an address that cannot be bound (its setting
        # named by BindError), the usual reasons a service does not come up. With JSON logs on
        # stderr it is a JSON line there like every other.
        json_stderr = cfg.log_format == "json" and not args.logfile
        if args.logfile or json_stderr:
            logging.getLogger("gripd").error("%s", e)
        if not json_stderr:
            print(f"gripd: {e}", file=sys.stderr)
        return 1
    return 0


def log_config_source(cfg: Config, args: argparse.Namespace) -> None:
    """Say which configuration (and which build) is in use, and warn about the lines of it that
    were dropped:
    on a machine with Pushpin installed, ``/etc/pushpin/pushpin.conf`` is found by the search
    and a newcomer expecting the embedded default should see that at once."""
    log = logging.getLogger("gripd")
    if cfg.config_path is not None:
        how = "" if args.config else " (found by the search; --default-config to ignore it)"
        log.info("using configuration file %s%s", cfg.config_path, how)
    elif args.default_config:
        log.info("using the embedded default configuration (--default-config)")
    else:
        log.info("no configuration file found; using the embedded default")
    log.info("gripd %s (%s)", __version__, build.describe())
    for w in cfg.warnings:
        log.warning("%s", w)


def cpu_count() -> int:
    """CPUs this process may run on (the default for ``[gripd] workers``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# The young generation's collection threshold (CPython's default is 700 allocations): a proxied
# request or a long-poll cycle allocates a few hundred short-lived objects, so the default ran a
# collection every few requests, though the objects die by reference counting.
GC_THRESHOLD0 = 20_000


def run_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on uvloop when installed, else on asyncio's default loop."""
    gc.freeze()  # what was loaded at start (modules, config) is never collected
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "publish":
        from gripd.publish_cli import main as publish_main

        return publish_main(argv[1:])
    if argv and argv[0] == "demo":
        from gripd.demo import main as demo_main

        return demo_main(argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())

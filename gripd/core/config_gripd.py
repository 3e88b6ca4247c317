"""The ``[gripd]`` section's own settings that need more than a number or a flag: workers,
the bus URL, the history gone event, the log format, the slow-client policy and the publish key.
Read by :func:`gripd.core.config.load_config` through its reader (errors name file:line)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote as pct
from urllib.parse import urlsplit

from gripd.core.errors import ConfigError
from gripd.core.headers import unquote
from gripd.core.sig import parse_key

if TYPE_CHECKING:
    from gripd.core.config import _Reader


WORKERS_MAX = 1024


def _workers(r: _Reader) -> int | None:
    """``[gripd] workers``: a positive integer; unset means one per CPU (decided at start)."""
    e = r.entry("gripd", "workers")
    if e is None or unquote(e[0]).strip().lower() in ("", "auto"):
        return None
    n = r.int_("gripd", "workers", 1, minimum=1)
    if n > WORKERS_MAX:
        raise r.error("gripd", "workers", f"must be at most {WORKERS_MAX}")
    return n


def parse_bus_url(url: str) -> tuple[str, str, int, int, str | None, str | None]:
    """``redis://[user:password@]host[:port][/db]`` (or ``rediss://`` for TLS) ->
    (scheme, host, port, db, username, password). Raises ValueError naming the problem."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise ValueError(f"not a valid URL: {e}") from None
    if u.scheme not in ("redis", "rediss"):
        raise ValueError("must start with redis:// or rediss://")
    if not u.hostname:
        raise ValueError("has no host")
    if u.query or u.fragment:
        raise ValueError("must not have a query or fragment")
    path = u.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("database must be a number")
    db = int(path) if path else 0
    if db > 1_000_000:
        raise ValueError("database number is too large")
    user = pct(u.username) if u.username else None
    password = pct(u.password) if u.password is not None else None
    return u.scheme, u.hostname, port or 6379, db, user, password


def _bus(r: _Reader) -> str:
    value = r.str_("gripd", "bus", "").strip()
    if not value:
        return ""
    try:
        parse_bus_url(value)
    except ValueError as e:
        # The value is not echoed: it may carry a password.
        entry = r.entry("gripd", "bus")
        where = (entry[1], entry[2]) if entry is not None else (None, None)
        raise ConfigError(f"[gripd] bus: {e}", *where) from None
    return value


def _gone_event(r: _Reader) -> str:
    """An SSE event name: one line of text (it is written after ``event:``)."""
    value = r.str_("gripd", "history_gone_event", "").strip()
    if any(c in value for c in "\r\n\0"):
        raise r.error("gripd", "history_gone_event", "must be one line")
    return value


LOG_FORMATS = ("text", "json")


def _log_format(r: _Reader) -> str:
    """``[gripd] log_format``: ``text`` (Pushpin's lines) or ``json``."""
    value = r.str_("gripd", "log_format", "text").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise r.error("gripd", "log_format", "must be text or json")
    return value


def _slow_policy(r: _Reader) -> str:
    value = r.str_("gripd", "slow_client_policy", "drop")
    if value not in ("drop", "close"):
        raise r.error("gripd", "slow_client_policy", f"must be drop or close (got {value!r})")
    return value


def _publish_key(r: _Reader, base_dir: str, read_file: Callable[[str], str]) -> str:
    """``[gripd] publish_key``, parsed now so that an unusable key (bad base64, unreadable file,
    not an EC P-256 or RSA PEM key) is an error naming file:line. Never echoed: it is secret."""
    value = r.str_("gripd", "publish_key", "").strip()

    def read_bytes(path: str) -> bytes:
        try:
            return read_file(path).encode("utf-8")
        except ValueError as e:  # not text, so not PEM
            raise OSError(f"not a PEM file ({e.__class__.__name__})") from None

    try:
        parse_key(value, base_dir=base_dir, read_file=read_bytes)
    except ConfigError as e:
        entry = r.entry("gripd", "publish_key")
        where = (entry[1], entry[2]) if entry is not None else (None, None)
        raise ConfigError(f"[gripd] publish_key: {e.message}", *where) from None
    return value


def _publish_iss(r: _Reader) -> str:
    value = r.str_("gripd", "publish_iss", "").strip()
    if any(c in value for c in "\r\n\0"):
        raise r.error("gripd", "publish_iss", "must be one line")
    if value and not r.str_("gripd", "publish_key", "").strip():
        raise r.error("gripd", "publish_iss", "needs publish_key (nothing would be checked)")
    return value


TLS_RELOAD_MIN = 0.1
TLS_RELOAD_MAX = 86_400.0


def _tls_reload_interval(r: _Reader) -> float:
    """``[gripd] tls_reload_interval``: seconds between looks at the ``https_ports``
    certificate files (changed files are loaded without a restart); default 5."""
    value = r.float_("gripd", "tls_reload_interval", 5.0)
    if value < TLS_RELOAD_MIN:  # polling the files must not become a busy loop
        raise r.error("gripd", "tls_reload_interval", f"must be at least {TLS_RELOAD_MIN:g}")
    if value > TLS_RELOAD_MAX:
        raise r.error("gripd", "tls_reload_interval", f"must be at most {TLS_RELOAD_MAX:g}")
    return value


def _control_keep_alive(r: _Reader, header_timeout: float) -> bool:
    """``[gripd] control_keep_alive``: persistent control API connections. An idle one is
    closed by ``client_header_timeout``, so the two go together (else idle connections would
    stay open without a bound)."""
    value = r.bool_("gripd", "control_keep_alive", False)
    if value and header_timeout <= 0:
        raise r.error(
            "gripd",
            "control_keep_alive",
            "needs client_header_timeout above 0 (it closes idle persistent connections)",
        )
    return value


def _wildcard_channels(r: _Reader) -> bool:
    """``[gripd] wildcard_channels``: channel names ending in ``*`` are prefix patterns
    (:mod:`gripd.core.wildcard`). Off by default: then ``*`` is an ordinary character."""
    return r.bool_("gripd", "wildcard_channels", False)

"""pushpin.conf: a pure parser producing one flat, typed :class:`Config` (F1-F5).

Pushpin reads its INI file with ``QSettings`` plus ``Settings`` (SRC src/corelib/settings.cpp):

- ``[global] include=`` names a second INI whose values are defaults; the main file wins. The
  legacy value ``include=internal.conf`` means ``{libdir}/internal.conf``; a relative include is
  resolved against the main file's directory.
- Every value has ``{libdir}``, ``{rundir}`` and ``{ipc_prefix}`` substituted. The template values
  come from the *main* file (``global/libdir`` else the compiled libdir; ``global/rundir`` else the
  deprecated ``runner/rundir``; ``global/ipc_prefix``), as in Pushpin.
- ``port_offset`` (``[global]`` or ``--id n`` → ``n*10``) is added to the port of every
  ``tcp://host:PORT`` spec and to ``push_in_http_port`` (not to the client listeners, F1).
- A key absent from both files takes Pushpin's *code* default (F2-F5), not the shipped value.

Where Pushpin silently turns a bad number into 0 (``QVariant::toInt``), gripd raises
:class:`ConfigError` naming the file and line. The only I/O is the ``read_file`` callable.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gripd.core.config_gripd import (
    _bus,
    _control_keep_alive,
    _gone_event,
    _log_format,
    _publish_iss,
    _publish_key,
    _slow_policy,
    _tls_reload_interval,
    _wildcard_channels,
    _workers,
)
from gripd.core.errors import ConfigError
from gripd.core.headers import split_unquoted, unquote

__all__ = [
    "DEFAULT_PUSHPIN_CONF",
    "INTERNAL_CONF",
    "Config",
    "Listen",
    "config_search_paths",
    "default_config",
    "find_config_file",
    "load_config",
    "parse_listen_list",
    "parse_log_level",
]

# Pushpin 1.36's internal.conf (CFG /usr/lib/pushpin/internal.conf, comments dropped): used when
# the file named by ``include=`` is absent, so a Debian pushpin.conf works on any machine.
INTERNAL_CONF = """\
[proxy]
condure_in_specs=ipc://{rundir}/{ipc_prefix}condure-out
condure_in_stream_specs=ipc://{rundir}/{ipc_prefix}condure-out-stream
condure_out_specs=ipc://{rundir}/{ipc_prefix}condure-in
m2a_in_specs=ipc://{rundir}/{ipc_prefix}m2zhttp-out,ipc://{rundir}/{ipc_prefix}m2zws-out
m2a_in_stream_specs=ipc://{rundir}/{ipc_prefix}m2zhttp-out-stream,ipc://{rundir}/{ipc_prefix}m2zws-out-stream
m2a_out_specs=ipc://{rundir}/{ipc_prefix}m2zhttp-in,ipc://{rundir}/{ipc_prefix}m2zws-in
zurl_out_specs=ipc:///var/run/zurl/zurl-in
zurl_out_stream_specs=ipc:///var/run/zurl/zurl-in-stream
zurl_in_specs=ipc:///var/run/zurl/zurl-out
handler_inspect_spec=ipc://{rundir}/{ipc_prefix}inspect
handler_accept_spec=ipc://{rundir}/{ipc_prefix}accept
handler_retry_in_spec=ipc://{rundir}/{ipc_prefix}retry
handler_ws_control_in_spec=ipc://{rundir}/{ipc_prefix}ws-control-in
handler_ws_control_out_spec=ipc://{rundir}/{ipc_prefix}ws-control-out
stats_spec=ipc://{rundir}/{ipc_prefix}proxy-stats
command_spec=ipc://{rundir}/{ipc_prefix}proxy-command
intreq_in_specs=ipc://{rundir}/{ipc_prefix}intreq-in
intreq_in_stream_specs=ipc://{rundir}/{ipc_prefix}intreq-in-stream
intreq_out_specs=ipc://{rundir}/{ipc_prefix}intreq-out

[handler]
proxy_inspect_spec=ipc://{rundir}/{ipc_prefix}inspect
proxy_accept_spec=ipc://{rundir}/{ipc_prefix}accept
proxy_retry_out_spec=ipc://{rundir}/{ipc_prefix}retry
proxy_ws_control_in_spec=ipc://{rundir}/{ipc_prefix}ws-control-out
proxy_ws_control_out_spec=ipc://{rundir}/{ipc_prefix}ws-control-in
proxy_stats_spec=ipc://{rundir}/{ipc_prefix}proxy-stats
proxy_command_spec=ipc://{rundir}/{ipc_prefix}proxy-command
condure_in_stream_specs=ipc://{rundir}/{ipc_prefix}condure-out-stream
condure_out_specs=ipc://{rundir}/{ipc_prefix}condure-in
m2a_in_stream_specs=ipc://{rundir}/{ipc_prefix}m2zhttp-out-stream,ipc://{rundir}/{ipc_prefix}m2zws-out-stream
m2a_out_specs=ipc://{rundir}/{ipc_prefix}m2zhttp-in,ipc://{rundir}/{ipc_prefix}m2zws-in
proxy_intreq_out_specs=ipc://{rundir}/{ipc_prefix}intreq-in
proxy_intreq_out_stream_specs=ipc://{rundir}/{ipc_prefix}intreq-in-stream
proxy_intreq_in_specs=ipc://{rundir}/{ipc_prefix}intreq-out
"""

# Debian's shipped /etc/pushpin/pushpin.conf (1.36, comments dropped): the embedded default.
DEFAULT_PUSHPIN_CONF = """\
[global]
include={libdir}/internal.conf
rundir=/var/run/pushpin
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,pushpin-proxy,pushpin-handler
http_port=7999
logdir=/var/log/pushpin
log_level=2
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
mongrel2_bin=mongrel2
m2sh_bin=m2sh
zurl_bin=zurl

[proxy]
routesfile=routes
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=changeme
upstream_key=
sockjs_url=http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js
updates_check=off
organization_name=

[handler]
push_in_spec=tcp://127.0.0.1:5560
push_in_sub_specs=tcp://127.0.0.1:5562
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port=5561
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=ipc://{rundir}/{ipc_prefix}stats
command_spec=tcp://127.0.0.1:5563
message_rate=2500
message_hwm=25000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
"""

_CONFIG_DIR = "/etc/pushpin"  # Pushpin's compiled CONFIGDIR (F1)

# tcp://host:PORT, host possibly a bracketed IPv6 literal (Pushpin itself skips those).
# ASCII digits only: ``\d`` and ``int()`` also take other scripts' digits, Qt's toInt does not.
_TCP_PORT_RE = re.compile(r"(tcp://(?:\[[^\]]*\]|[^:/,\s\[]*):)(\d+)", re.ASCII)
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
# Significant digits past any 64-bit value; Python's int() refuses more than 4300.
_MAX_DIGITS = 20
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class Listen:
    """One client listener: ``addr`` is an IP/host without brackets (``0.0.0.0`` = all)."""

    addr: str
    port: int


# [runner] client_buffer_size: a request head bound, also sent as HTTP/2's SETTINGS value.
CLIENT_BUFFER_MAX = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    """Everything gripd reads from pushpin.conf, flat, keyed by pushpin.conf names (F2-F5).

    Section ``[gripd]`` (ignored by Pushpin) holds gripd's own knobs:

    - ``client_write_buffer_max``: bytes queued for one client connection before the slow-client
      policy applies (drop/close), so one stalled reader cannot grow memory without bound.
    - ``origin_connect_timeout``: seconds to connect to one target before failing over (F10).
    - ``origin_response_timeout``: seconds to wait for the origin's response head.
    - ``max_request_body``: hard cap in bytes on a proxied request body (413/400 beyond it).
    - ``ws_max_message_size``: largest WebSocket message accepted from a client or a WebSocket
      origin; a bigger one closes that WebSocket with 1009 (RFC 6455).
    - ``slow_client_policy``: ``drop`` (default: the message is dropped for that client) or
      ``close`` (the client's connection is closed) when its output is over
      ``client_write_buffer_max``; either way the connection id, route and peer are logged.
    - ``client_header_timeout``: seconds a client (or control API peer) has to complete a request
      head, counted from its first byte (or from accept); past it: 408 and close. 0 = off.
    - ``client_idle_timeout``: seconds a keep-alive connection may sit idle between requests
      before it is closed (held connections are not idle). 0 = off.
    - ``control_keep_alive``: the HTTP control API keeps connections open for more requests
      (Pushpin closes after each answer, the default); needs ``client_header_timeout`` above 0,
      which closes idle persistent connections.
    - ``client_pipeline_max`` / ``client_pipeline_bytes_max``: pipelined requests, and their bytes,
      read and queued behind an unfinished one before reading from that connection pauses.
    - ``origin_response_head_max``: largest origin response head; past it the request gets 502.
    - ``fd_reserve``: file descriptors kept free for the publish inputs and origin connections;
      a client connection accepted into the reserve is closed at once.
    - ``zmq_max_message_size``: largest ZeroMQ message frame accepted on the PULL, SUB and
      command sockets (``ZMQ_MAXMSGSIZE``); ZeroMQ drops the peer's connection past it.
    - ``workers``: worker processes sharing the client ports; None (unset) = one per CPU, 1 =
      a single process.
    - ``bus``: ``redis://[user:password@]host[:port][/db]`` (or ``rediss://``) to share channels
      with other instances through Redis; empty = this instance only.
    - ``log_format``: ``text`` (default: Pushpin's log lines) or ``json`` (one JSON object per
      line, for log collectors).
    - ``publish_key``: when set, the HTTP control API and the command socket accept only
      requests with ``Authorization: Bearer <JWT>`` signed with it (``sig_key``'s forms: a
      secret, ``base64:...``, or ``file:<path>`` to an ES256/RS256 PEM key); empty = no check.
    - ``publish_iss``: the ``iss`` such a token must have; empty = any.

    ``extra`` holds every key seen (both files merged, main wins), per section, with templates and
    port offset applied, so new or unmodelled keys (``zurl_out_specs``, ``updates_check``...) stay
    reachable.
    """

    config_path: str | None
    config_dir: str
    # [global]
    rundir: str
    ipc_prefix: str
    port_offset: int
    stats_connection_ttl: int
    # [runner]
    services: list[str]
    http_port: list[Listen]
    https_ports: list[Listen]
    local_ports: list[str]
    logdir: str
    log_level: int
    client_buffer_size: int
    client_maxconn: int
    # [proxy]
    routesfile: str | None
    debug: bool
    auto_cross_origin: bool
    accept_x_forwarded_protocol: bool
    set_x_forwarded_protocol: str
    x_forwarded_for: list[str]
    x_forwarded_for_trusted: list[str]
    orig_headers_need_mark: list[str]
    accept_pushpin_route: bool
    log_from: bool
    log_user_agent: bool
    sig_iss: str
    sig_key: str
    upstream_key: str
    sockjs_url: str
    stats_report_interval: int
    prometheus_port: str
    prometheus_prefix: str
    max_open_requests: int
    # [handler]
    push_in_spec: str
    push_in_sub_specs: list[str]
    push_in_sub_connect: bool
    push_in_http_addr: str
    push_in_http_port: int
    push_in_http_max_headers_size: int
    push_in_http_max_body_size: int
    stats_spec: str
    command_spec: str
    message_rate: int
    message_hwm: int
    message_block_size: int
    message_wait: int
    id_cache_ttl: int
    connection_subscription_max: int
    subscription_linger: int
    stats_subscription_ttl: int
    stats_format: str
    update_on_first_subscription: bool
    # [gripd]
    client_write_buffer_max: int = 1_048_576
    origin_connect_timeout: float = 10.0
    origin_response_timeout: float = 60.0
    max_request_body: int = 100_000_000
    ws_max_message_size: int = 1_048_576
    slow_client_policy: str = "drop"
    client_header_timeout: float = 30.0
    client_idle_timeout: float = 60.0
    client_pipeline_max: int = 32
    client_pipeline_bytes_max: int = 1_048_576
    origin_response_head_max: int = 65_536
    fd_reserve: int = 64
    zmq_max_message_size: int = 10_000_000
    workers: int | None = None
    history_size: int = 0  # items kept per channel; 0 = no history (Pushpin's behaviour)
    history_ttl: float = 300.0  # seconds an item is kept; 0 = no age limit
    history_channels_max: int = 10_000  # channels with history kept in memory (LRU)
    history_gone_event: str = ""  # SSE event name sent when a resume id is gone; "" = none
    bus: str = ""
    publish_key: str = field(default="", repr=False)  # may be the secret itself
    publish_iss: str = ""
    log_format: str = "text"  # "text" (Pushpin's lines) or "json"
    wildcard_channels: bool = False  # channel names ending in "*" are prefix patterns
    tls_reload_interval: float = 5.0  # seconds between looks at the https_ports certificates
    http2: bool = True  # offer HTTP/2 (ALPN h2) on the https_ports listeners
    control_keep_alive: bool = False  # persistent control API connections (Pushpin: closes)
    http2_max_streams: int = 100  # concurrent requests on one HTTP/2 connection
    http2_reset_budget: int = 200  # early stream resets before GOAWAY; a quarter refills per s
    http2_control_budget: int = 1000  # PING/SETTINGS/... frames; a fifth refills per second
    extra: dict[str, dict[str, str]] = field(default_factory=dict)
    # ``file:line: ...`` for each line of the files that was dropped or read in a lenient way
    warnings: tuple[str, ...] = field(default=(), compare=False)


# --- INI reading ---------------------------------------------------------------------------------

# (value, filename, line) per key, per section
_Entry = tuple[str, str, int]
_Ini = dict[str, dict[str, _Entry]]


def _strip_comment(value: str) -> str:
    """Drop a ``;`` comment outside double quotes (QSettings INI syntax)."""
    quoted = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            return value[:i]
    return value


def _parse_ini(text: str, filename: str, warnings: list[str] | None = None) -> _Ini:
    """Sections → key → (raw value, file, line). Keys are case-sensitive (QSettings); the last
    duplicate wins. Keys before any section go to ``General``. As in QSettings, a header
    without ``]`` names the section by the rest of its line (Pushpin reads ``[runner`` as
    ``[runner]``), ``[]`` starts a section nobody reads, and other lines without ``=`` are
    dropped; each of these adds a ``file:line: ...`` note to ``warnings``."""
    out: _Ini = {}
    section = "General"
    notes = [] if warnings is None else warnings
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        where = f"{filename}:{lineno}:"
        if line[0] == "[":
            line = _strip_comment(line).rstrip()
            end = line.find("]")
            section = line[1 : len(line) if end < 0 else end].strip()
            if not section:
                notes.append(f"{where} {line!r} names no section: the keys below it are not read")
            elif end < 0:
                notes.append(f"{where} {line!r} has no closing ']': read as [{section}]")
            continue
        if "=" not in line:
            notes.append(f"{where} {line!r} is neither key=value nor [section]: ignored")
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if not key:
            notes.append(f"{where} {line!r} has no key before '=': ignored")
            continue
        out.setdefault(section, {})[key] = (_strip_comment(value).strip(), filename, lineno)
    return out


def _split_list(value: str) -> list[str]:
    """A QSettings comma list: split outside quotes, strip, unquote, drop empty items."""
    items = (unquote(p.strip()) for p in split_unquoted(value, ","))
    return [i for i in items if i]


def _small_int(digits: str) -> int | None:
    """ASCII ``[+-]?[0-9]+`` (already checked) as an int; None past 64-bit magnitudes."""
    sig = digits.lstrip("+-").lstrip("0")
    if len(sig) > _MAX_DIGITS:
        return None
    v = int(sig or "0")
    return -v if digits.startswith("-") else v


def _shift_tcp_ports(value: str, offset: int) -> str:
    def shift(m: re.Match[str]) -> str:
        port = _small_int(m.group(2))
        return m.group(0) if port is None else m.group(1) + str(port + offset)

    if offset == 0 or "tcp://" not in value:
        return value
    return _TCP_PORT_RE.sub(shift, value)


class _Reader:
    """Typed look-ups over the merged files, with templates and port offset applied."""

    def __init__(self, main: _Ini, include: _Ini, vars_: dict[str, str], port_offset: int) -> None:
        self.merged: _Ini = {}
        for ini in (include, main):  # main file last: it wins
            for section, keys in ini.items():
                self.merged.setdefault(section, {}).update(keys)
        self.vars = vars_
        self.port_offset = port_offset

    def resolve(self, value: str) -> str:
        for name, sub in self.vars.items():  # libdir, rundir, ipc_prefix (Pushpin's order)
            value = value.replace("{" + name + "}", sub)
        return _shift_tcp_ports(value, self.port_offset)

    def entry(self, section: str, key: str) -> _Entry | None:
        return self.merged.get(section, {}).get(key)

    def error(self, section: str, key: str, message: str) -> ConfigError:
        e = self.entry(section, key)
        if e is None:
            return ConfigError(f"[{section}] {key}: {message}")
        return ConfigError(f"[{section}] {key}: {message} (got {e[0]!r})", e[1], e[2])

    def str_(self, section: str, key: str, default: str = "") -> str:
        e = self.entry(section, key)
        return default if e is None else self.resolve(unquote(e[0]))

    def list_(self, section: str, key: str) -> list[str]:
        e = self.entry(section, key)
        return [] if e is None else [self.resolve(s) for s in _split_list(e[0])]

    def int_(
        self,
        section: str,
        key: str,
        default: int,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        e = self.entry(section, key)
        if e is None or e[0] == "":  # empty counts as unset (Pushpin would read 0)
            return default
        v = self.resolve(unquote(e[0])).strip()
        n = _small_int(v) if _INT_RE.fullmatch(v) else None
        if n is None:
            raise self.error(section, key, "must be an integer")
        if minimum is not None and n < minimum:
            raise self.error(section, key, f"must be at least {minimum}")
        if maximum is not None and n > maximum:
            raise self.error(section, key, f"must be at most {maximum}")
        return n

    def float_(self, section: str, key: str, default: float, *, allow_zero: bool = False) -> float:
        """A finite positive number; with ``allow_zero`` also 0 (for timeouts where 0 = off)."""
        e = self.entry(section, key)
        if e is None or e[0] == "":
            return default
        v = unquote(e[0]).strip()
        f = float(v) if _FLOAT_RE.fullmatch(v) else math.nan
        if not (f >= 0 if allow_zero else f > 0) or f == math.inf:  # 1e999 is inf
            what = "a positive number or 0" if allow_zero else "a positive number"
            raise self.error(section, key, f"must be {what}")
        return f

    def bool_(self, section: str, key: str, default: bool = False) -> bool:
        """true/false/1/0/yes/no/on/off, any case; empty = default. Pushpin (QVariant::toBool)
        treats every other non-empty string, even ``no``, as true; gripd refuses those."""
        e = self.entry(section, key)
        if e is None or e[0] == "":
            return default
        v = unquote(e[0]).strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise self.error(section, key, "must be true or false")


# --- public parsers ------------------------------------------------------------------------------


def parse_listen_list(value: str) -> list[Listen]:
    """``http_port``/``https_ports``/``--port`` syntax (F1, F3): comma list of ``port``,
    ``addr:port`` or ``[v6addr]:port``. No address (or ``*``) means ``0.0.0.0``."""
    out: list[Listen] = []
    for item in _split_list(value):
        addr, sep, port_s = item.rpartition(":")
        if not sep:
            addr = ""
        elif addr.startswith("["):
            if not addr.endswith("]") or len(addr) < 3:
                raise ConfigError(f"invalid port: {item}")
            addr = addr[1:-1]
        elif ":" in addr:  # unbracketed IPv6
            raise ConfigError(f"invalid port: {item} (put IPv6 addresses in brackets)")
        port = _small_int(port_s) if port_s.isascii() and port_s.isdigit() else None
        if port is None or not 0 <= port <= 65535:
            raise ConfigError(f"invalid port: {item}")
        out.append(Listen(addr if addr not in ("", "*") else "0.0.0.0", port))
    return out


def parse_log_level(value: str) -> tuple[int, dict[str, int]]:
    """``--loglevel``/``log_level`` (F1, F3): ``"2"`` or ``"2,condure:3,pushpin-proxy:4"`` →
    (default level, per-service levels). The default is 2 when only services are named.
    Messages are Pushpin's (src/runner/app.cpp)."""
    default = 2
    levels: dict[str, int] = {}
    if not value.strip():
        return default, levels
    for part in (p.strip() for p in value.split(",")):
        if not part:
            raise ConfigError("log level component cannot be empty")
        name, sep, level = part.partition(":")
        if sep:
            if not name:
                raise ConfigError("log level component name cannot be empty")
            n = _small_int(level) if level.isascii() and level.isdigit() else None
            if n is None:
                raise ConfigError(
                    f"log level for service {name} must be greater than or equal to 0"
                )
            levels[name] = n
        else:
            n = _small_int(part) if _INT_RE.fullmatch(part) else None
            if n is None or n < 0:
                raise ConfigError("log level must be greater than or equal to 0")
            default = n
    return default, levels


def config_search_paths(cwd: str) -> list[str]:
    """The files Pushpin's runner tries without ``--config``, in order (F1)."""
    return [
        posixpath.join(cwd, "config", "pushpin.conf"),
        posixpath.join(cwd, "pushpin.conf"),
        posixpath.join(cwd, "examples", "config", "pushpin.conf"),
        posixpath.join(_CONFIG_DIR, "pushpin.conf"),
    ]


def find_config_file(cwd: str, exists: Callable[[str], bool]) -> str | None:
    """The first of :func:`config_search_paths` for which ``exists`` is true, else None.

    Pushpin exits with ``no configuration file found. Tried: ...`` in that case; gripd instead
    runs with :func:`default_config` (the CLI decides)."""
    for p in config_search_paths(cwd):
        if exists(p):
            return p
    return None


def _resolve_path(base_dir: str, p: str) -> str:
    return p if posixpath.isabs(p) else posixpath.normpath(posixpath.join(base_dir, p))


def load_config(
    main_text: str,
    *,
    path: str | None,
    read_file: Callable[[str], str],
    port_offset_override: int | None = None,
    ipc_prefix_override: str | None = None,
    libdir: str = "/usr/lib/pushpin",
) -> Config:
    """Parse pushpin.conf text into a :class:`Config` (F2-F5).

    ``path`` is the main file's path (made absolute by the caller; None for text without a file,
    then relative paths stay relative to ``.``). ``read_file`` reads the include and may raise
    OSError: a missing ``internal.conf`` is replaced by :data:`INTERNAL_CONF`; any other missing
    include counts as empty, as QSettings does. ``port_offset_override`` is ``--id n`` → ``n*10``
    (or the handler's ``--port-offset``); ``ipc_prefix_override`` is ``--ipc-prefix``/``--id``.
    Raises :class:`ConfigError` with file and line for malformed values.
    """
    filename = path if path is not None else "<config>"
    config_dir = posixpath.dirname(path) if path else "."
    config_dir = config_dir or "."
    warnings: list[str] = []
    main = _parse_ini(main_text, filename, warnings)

    def main_raw(section: str, key: str) -> str | None:
        e = main.get(section, {}).get(key)
        return None if e is None else unquote(e[0])

    # Template values come from the main file only (Settings' constructor runs before include).
    lib = main_raw("global", "libdir") or libdir
    rundir = main_raw("global", "rundir")
    if rundir is None:
        rundir = main_raw("runner", "rundir") or ""  # deprecated location
    ipc_prefix = main_raw("global", "ipc_prefix")
    if ipc_prefix is None:
        ipc_prefix = "pushpin-"
    if ipc_prefix_override is not None:
        ipc_prefix = ipc_prefix_override
    vars_ = {"libdir": lib, "rundir": rundir, "ipc_prefix": ipc_prefix}

    if port_offset_override is not None:
        port_offset = port_offset_override
    else:
        po = _Reader(main, {}, {}, 0)
        port_offset = po.int_("global", "port_offset", 0)

    include: _Ini = {}
    inc = main_raw("global", "include") or ""
    if inc == "internal.conf":  # legacy spelling, rewritten by Pushpin
        inc = "{libdir}/internal.conf"
    if inc:
        inc = _resolve_path(config_dir, _Reader({}, {}, vars_, port_offset).resolve(inc))
        try:
            include = _parse_ini(read_file(inc), inc, warnings)
        except OSError:
            if posixpath.basename(inc) == "internal.conf":
                include = _parse_ini(INTERNAL_CONF, "<built-in internal.conf>")

    r = _Reader(main, include, vars_, port_offset)

    # [runner]
    try:
        http_port = parse_listen_list(r.str_("runner", "http_port"))
    except ConfigError as e:
        raise r.error("runner", "http_port", e.message) from None
    try:
        https_ports = parse_listen_list(r.str_("runner", "https_ports"))
    except ConfigError as e:
        raise r.error("runner", "https_ports", e.message) from None
    if any(p.port < 1 for p in https_ports):
        raise r.error("runner", "https_ports", "port must be greater than or equal to 1")
    try:
        log_level, _ = parse_log_level(r.str_("runner", "log_level"))
    except ConfigError as e:
        raise r.error("runner", "log_level", e.message) from None

    # [proxy]
    routes = r.str_("proxy", "routesfile")
    sxfp = r.str_("proxy", "set_x_forwarded_protocol")

    # [handler]
    sub_specs = r.list_("handler", "push_in_sub_specs")
    single = r.str_("handler", "push_in_sub_spec")
    if single:
        sub_specs.append(single)  # the singular key is appended (F5)
    push_port = r.int_("handler", "push_in_http_port", 0)
    if push_port > 0:
        push_port += port_offset
    if not 0 <= push_port <= 65535:
        raise r.error("handler", "push_in_http_port", "port out of range")

    def sized(key: str, legacy: str, default: int) -> int:
        # F5: 1.36 reads push_in_max_*; the documented push_in_http_max_* wins when both are set
        if r.entry("handler", key) is not None:
            return r.int_("handler", key, default, minimum=1)
        return r.int_("handler", legacy, default, minimum=1)

    stats_format = r.str_("handler", "stats_format") or "tnetstring"
    if stats_format not in ("tnetstring", "json"):
        raise r.error("handler", "stats_format", "must be tnetstring or json")

    def either(key: str, first: str, second: str) -> str:
        return r.str_(first, key) or r.str_(second, key)

    extra = {s: {k: r.resolve(e[0]) for k, e in keys.items()} for s, keys in r.merged.items()}
    header_timeout = r.float_("gripd", "client_header_timeout", 30.0, allow_zero=True)

    return Config(
        config_path=path,
        config_dir=config_dir,
        rundir=r.str_("global", "rundir") or r.str_("runner", "rundir"),
        ipc_prefix=ipc_prefix,
        port_offset=port_offset,
        stats_connection_ttl=r.int_("global", "stats_connection_ttl", 120),
        services=r.list_("runner", "services"),
        http_port=http_port,
        https_ports=https_ports,
        local_ports=r.list_("runner", "local_ports"),
        logdir=r.str_("runner", "logdir"),
        log_level=log_level,
        client_buffer_size=r.int_(
            "runner", "client_buffer_size", 8192, minimum=1, maximum=CLIENT_BUFFER_MAX
        ),
        client_maxconn=r.int_("runner", "client_maxconn", 50000, minimum=1),
        routesfile=_resolve_path(config_dir, routes) if routes else None,
        debug=r.bool_("proxy", "debug"),
        auto_cross_origin=r.bool_("proxy", "auto_cross_origin"),
        accept_x_forwarded_protocol=r.bool_("proxy", "accept_x_forwarded_protocol"),
        set_x_forwarded_protocol=sxfp if sxfp in ("true", "proto-only") else "",
        x_forwarded_for=r.list_("proxy", "x_forwarded_for"),
        x_forwarded_for_trusted=r.list_("proxy", "x_forwarded_for_trusted"),
        orig_headers_need_mark=r.list_("proxy", "orig_headers_need_mark"),
        accept_pushpin_route=r.bool_("proxy", "accept_pushpin_route"),
        log_from=r.bool_("proxy", "log_from"),
        log_user_agent=r.bool_("proxy", "log_user_agent"),
        sig_iss=r.str_("proxy", "sig_iss", "pushpin"),
        sig_key=r.str_("proxy", "sig_key"),
        upstream_key=r.str_("proxy", "upstream_key"),
        sockjs_url=r.str_("proxy", "sockjs_url"),
        # Both processes read these; the shipped file sets stats_report_interval in [handler].
        stats_report_interval=r.int_(
            "handler" if r.entry("handler", "stats_report_interval") else "proxy",
            "stats_report_interval",
            10,
            minimum=0,
        ),
        prometheus_port=either("prometheus_port", "proxy", "handler"),
        prometheus_prefix=either("prometheus_prefix", "proxy", "handler"),
        max_open_requests=r.int_("proxy", "max_open_requests", -1),
        push_in_spec=r.str_("handler", "push_in_spec"),
        push_in_sub_specs=sub_specs,
        push_in_sub_connect=r.bool_("handler", "push_in_sub_connect"),
        push_in_http_addr=r.str_("handler", "push_in_http_addr"),
        push_in_http_port=push_port,
        push_in_http_max_headers_size=sized(
            "push_in_http_max_headers_size", "push_in_max_headers_size", 10000
        ),
        push_in_http_max_body_size=sized(
            "push_in_http_max_body_size", "push_in_max_body_size", 1000000
        ),
        stats_spec=r.str_("handler", "stats_spec"),
        command_spec=r.str_("handler", "command_spec"),
        message_rate=r.int_("handler", "message_rate", -1),
        message_hwm=r.int_("handler", "message_hwm", -1),
        message_block_size=r.int_("handler", "message_block_size", -1),
        message_wait=r.int_("handler", "message_wait", 5000, minimum=0),
        id_cache_ttl=r.int_("handler", "id_cache_ttl", 0, minimum=0),
        connection_subscription_max=r.int_("handler", "connection_subscription_max", 20),
        subscription_linger=r.int_("handler", "subscription_linger", 60, minimum=0),
        stats_subscription_ttl=r.int_("handler", "stats_subscription_ttl", 60, minimum=0),
        stats_format=stats_format,
        update_on_first_subscription=r.bool_("handler", "update_on_first_subscription", True),
        client_write_buffer_max=r.int_("gripd", "client_write_buffer_max", 1_048_576, minimum=1),
        origin_connect_timeout=r.float_("gripd", "origin_connect_timeout", 10.0),
        origin_response_timeout=r.float_("gripd", "origin_response_timeout", 60.0),
        max_request_body=r.int_("gripd", "max_request_body", 100_000_000, minimum=0),
        ws_max_message_size=r.int_("gripd", "ws_max_message_size", 1_048_576, minimum=125),
        slow_client_policy=_slow_policy(r),
        client_header_timeout=header_timeout,
        client_idle_timeout=r.float_("gripd", "client_idle_timeout", 60.0, allow_zero=True),
        client_pipeline_max=r.int_("gripd", "client_pipeline_max", 32, minimum=0),
        client_pipeline_bytes_max=r.int_(
            "gripd", "client_pipeline_bytes_max", 1_048_576, minimum=0
        ),
        origin_response_head_max=r.int_("gripd", "origin_response_head_max", 65_536, minimum=256),
        fd_reserve=r.int_("gripd", "fd_reserve", 64, minimum=0),
        zmq_max_message_size=r.int_("gripd", "zmq_max_message_size", 10_000_000, minimum=1024),
        workers=_workers(r),
        bus=_bus(r),
        publish_key=_publish_key(r, config_dir, read_file),
        publish_iss=_publish_iss(r),
        history_size=r.int_("gripd", "history_size", 0, minimum=0),
        history_ttl=r.float_("gripd", "history_ttl", 300.0, allow_zero=True),
        history_channels_max=r.int_("gripd", "history_channels_max", 10_000, minimum=1),
        history_gone_event=_gone_event(r),
        log_format=_log_format(r),
        wildcard_channels=_wildcard_channels(r),
        tls_reload_interval=_tls_reload_interval(r),
        http2=r.bool_("gripd", "http2", True),
        control_keep_alive=_control_keep_alive(r, header_timeout),
        # SETTINGS values are 32-bit; beyond these bounds the budgets would protect nothing.
        http2_max_streams=r.int_("gripd", "http2_max_streams", 100, minimum=1, maximum=10_000),
        http2_reset_budget=r.int_("gripd", "http2_reset_budget", 200, minimum=4, maximum=1_000_000),
        http2_control_budget=r.int_(
            "gripd", "http2_control_budget", 1000, minimum=5, maximum=1_000_000
        ),
        extra=extra,
        warnings=tuple(warnings),
    )


def default_config(cwd: str) -> Config:
    """The embedded default used when no config file exists: Debian's shipped pushpin.conf +
    internal.conf (message_rate=2500, message_hwm=25000, id_cache_ttl=60, sig_key=changeme,
    set_x_forwarded_protocol=proto-only, http_port 7999 on all addresses, push_in_http
    127.0.0.1:5561).
    ``routesfile`` is None: the caller uses the shipped routes ``* test``
    (:data:`gripd.core.routes.DEFAULT_ROUTES`)."""

    def no_file(p: str) -> str:
        raise OSError(p)

    cfg = load_config(DEFAULT_PUSHPIN_CONF, path=None, read_file=no_file)
    return replace(cfg, config_dir=cwd, routesfile=None)

"""The routes file: line parser, route table and lookup (F6-F11, F50).

Behaviour follows Pushpin 1.36 (SRC ``src/proxy/routesfile.cpp``, ``src/proxy/domainmap.cpp``):

- A line is ``<condition>[,prop[=val]...] <target>[,prop[=val]...] ...``; parts are separated by
  spaces (only ``' '``), ``#`` outside quotes ends the line, ``"..."`` quotes allow only the
  escapes ``\\\\`` and ``\\"``. A first token containing ``=`` means "no domain" (id-only route).
- A repeated option keeps its *last* value, except ``header=`` and ``sub=`` which accumulate.
  Flag options (``debug``, ``ssl`` on a target...) are set by their presence, whatever value
  is written (``debug=false`` turns debug *on* in Pushpin too); gripd adds a warning for that.
- Bad lines are skipped with a warning; unknown options are ignored (gripd warns, Pushpin is
  silent) and the route is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from gripd.core.errors import ConfigError
from gripd.core.headers import Headers, field_problem, is_safe_text, lower_text, remove, show
from gripd.core.qtcompat import decimal_int

__all__ = [
    "DEFAULT_ROUTES",
    "Route",
    "RouteSyntaxError",
    "RouteTable",
    "RouteWarning",
    "Section",
    "Target",
    "apply_route_headers",
    "parse_line",
    "rewrite_path",
    "test_target_path",
]

HISTORY_OPTION_MAX = 1_000_000  # history_size / history_ttl route options (items, seconds)

DEFAULT_ROUTES = "* test\n"  # Pushpin's shipped /etc/pushpin/routes (F6)

_COND_FLAGS = frozenset({"orig_headers", "debug", "aco", "session", "no_grip"})
_COND_VALUES = frozenset(
    {
        "proto",
        "ssl",
        "id",
        "path_beg",
        "sig_iss",
        "sig_key",
        "prefix",
        "as_host",
        "path_rem",
        "replace_beg",
        "jsonp_mode",
        "jsonp_cb",
        "jsonp_body",
        "jsonp_defcb",
        "jsonp_defmethod",
        "sockjs",
        "sockjs_as_path",
        "header",
        "history_size",
        "history_ttl",
    }
)
_TARGET_FLAGS = frozenset(
    {"ssl", "untrusted", "trust_connect_host", "insecure", "over_http", "one_event"}
)
_TARGET_VALUES = frozenset({"host", "sub", "ipc_file_mode"})


@dataclass(frozen=True, slots=True)
class Target:
    """One route target (F10, F11). Targets are tried in order on connect failure."""

    kind: Literal["host", "test", "zhttp", "zhttpreq"]
    host: str = ""
    port: int = 0
    spec: str = ""
    ssl: bool = False
    untrusted: bool = False
    trust_connect_host: bool = False
    insecure: bool = False
    host_header: str | None = None
    subs: tuple[str, ...] = ()
    over_http: bool = False
    one_event: bool = False

    def label(self) -> str:
        """How Pushpin names the target in ``Tried: ...`` and logs (proxyutil targetToString)."""
        if self.kind == "test":
            return "test"
        if self.kind != "host":
            return f"{self.kind}/{self.spec}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    """One routes-file line (F7-F9). ``domain`` is ``""`` (id-only), ``"*"`` or a lower-cased
    host. ``headers`` are ``header=`` options in file order: apply them with
    :func:`apply_route_headers`. ``jsonp_defmethod`` is resolved (GET, or POST in basic mode)."""

    id: str
    explicit_id: bool
    domain: str
    proto: Literal["http", "ws"] | None
    ssl: bool | None
    path_beg: str | None
    targets: tuple[Target, ...]
    prefix: str = ""
    path_rem: int = 0
    replace_beg: str | None = None
    as_host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    debug: bool = False
    no_grip: bool = False
    aco: bool = False
    orig_headers: bool = False
    session: bool = False
    sig_iss: str | None = None
    sig_key: str | None = None
    jsonp_mode: str = "extended"
    jsonp_cb: str = "callback"
    jsonp_body: str | None = None
    jsonp_defcb: str | None = None
    jsonp_defmethod: str | None = "GET"
    sockjs: str | None = None
    sockjs_as_path: str | None = None
    # gripd's own: per-route history for the channels this route's responses subscribe to
    # (None: the [gripd] history_size / history_ttl defaults)
    history_size: int | None = None
    history_ttl: int | None = None
    filename: str = ""
    line: int = 0

    @property
    def stats_route(self) -> str:
        """Pushpin's ``statsRoute`` (F43): the route's own ``id``, or "" when the line has
        none (an id made up from the line's position is not reported)."""
        return self.id if self.explicit_id else ""


@dataclass(frozen=True, slots=True)
class RouteWarning:
    """A skipped line or ignored option, located for the log. ``error`` marks a line that
    could not be parsed (a live reload keeps the previous table then); duplicates and ignored
    options are not errors."""

    filename: str
    line: int
    message: str
    error: bool = False

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.message}"


# --- line tokenizer ------------------------------------------------------------------------------


class RouteSyntaxError(ConfigError):
    """A line that cannot be tokenized; ``message`` is the warning text."""


@dataclass(slots=True)
class Section:
    """One space-separated part of a line: its leading value and its ``name[=value]`` props."""

    value: str
    props: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, value, has '=')


def _read_token(line: str, i: int) -> tuple[str, int, str]:
    """Read up to the next unquoted ``,``, ``' '``, ``#`` or end; decode quoted parts.
    Returns (decoded text, index of the stop char or len(line), stop char or '')."""
    out: list[str] = []
    n = len(line)
    while i < n:
        ch = line[i]
        if ch in ", #":
            return "".join(out), i, ch
        if ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise RouteSyntaxError("unterminated quoted string")
                ch = line[i]
                if ch == '"':
                    break
                if ch == "\\":
                    i += 1
                    if i >= n or line[i] not in '\\"':
                        raise RouteSyntaxError("invalid escape in quoted string")
                    ch = line[i]
                out.append(ch)
                i += 1
        else:
            out.append(ch)
        i += 1
    return "".join(out), n, ""


def parse_line(line: str) -> list[Section]:
    """Tokenize one routes line (F6) into sections; ``[]`` for blank/comment lines.

    Raises :class:`RouteSyntaxError` (``expecting prop``, ``empty prop name``, bad quoting)."""
    sections: list[Section] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] == " ":
            i += 1
        if i >= n or line[i] == "#":
            return sections
        start = i
        text, i, stop = _read_token(line, i)
        if "=" in text:
            # no initial value: re-read this token as the first prop of an empty section
            sections.append(Section(""))
            i, stop = start, ","
        else:
            sections.append(Section(text))
            if stop == ",":
                i += 1
        while stop == ",":
            text, i, stop = _read_token(line, i)
            if not text:
                raise RouteSyntaxError("expecting prop")
            name, eq, value = text.partition("=")
            if not name:
                raise RouteSyntaxError("empty prop name")
            sections[-1].props.append((name, value, bool(eq)))
            if stop == ",":
                i += 1


# --- building routes ------------------------------------------------------------------------------


class _Props:
    """Multi-valued props with Pushpin's look-up rules (QMultiHash: last value wins)."""

    def __init__(self, props: list[tuple[str, str, bool]]) -> None:
        self.props = props

    def has(self, name: str) -> bool:
        return any(p[0] == name for p in self.props)

    def get(self, name: str) -> str | None:
        for n, v, _ in reversed(self.props):
            if n == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v, _ in self.props if n == name]


def _to_int(value: str) -> int | None:
    """A signed decimal integer (ASCII digits), or None; a huge one is None too (not a crash)."""
    return decimal_int(value.strip())


def _option_warnings(
    props: list[tuple[str, str, bool]], flags: frozenset[str], values: frozenset[str], what: str
) -> list[str]:
    out: list[str] = []
    for name, value, eq in props:
        if name in flags:
            if eq:
                out.append(f"{what} option {name} takes no value; set anyway (got {value!r})")
        elif name not in values:
            out.append(f"unknown {what} option {name!r} ignored")
    return out


def _implicit_id(domain: str, proto: str | None, ssl: bool | None, path_beg: str | None) -> str:
    # Pushpin's idFromCondition (domainmap.cpp) swaps the ssl words: ssl=no gives "ssl" and
    # ssl=yes gives "no-ssl". Kept as is so Pushpin-Route ids and logs match Pushpin.
    ssl_s = "*" if ssl is None else ("no-ssl" if ssl else "ssl")
    return ",".join([domain or "*", proto or "*", ssl_s, path_beg or "*"])


def _parse_target(sec: Section) -> Target | str:
    """A Target, or the warning text for a bad one."""
    val = sec.value
    p = _Props(sec.props)
    host, port, spec = "", 0, ""
    kind: Literal["host", "test", "zhttp", "zhttpreq"]
    if val == "test":
        kind = "test"
    elif val.startswith("zhttp/"):
        kind, spec = "zhttp", val[6:]
    elif val.startswith("zhttpreq/"):
        kind, spec = "zhttpreq", val[9:]
    else:
        kind = "host"
        if val.startswith("["):  # bracketed IPv6 (a 1.41 addition; harmless superset)
            end = val.find("]")
            if end == -1 or val[end + 1 : end + 2] != ":":
                return "target bad format"
            host, sport = val[1:end], val[end + 2 :]
        else:
            host, sep, sport = val.partition(":")
            if not sep:
                return "target bad format"
        n = _to_int(sport)
        if n is None or not 1 <= n <= 65535:
            return "target invalid port"
        port = n
    host_header = p.get("host")
    if host_header and not is_safe_text(host_header):
        return "target host contains CR, LF or NUL"  # it becomes the Host header value
    return Target(
        kind=kind,
        host=host,
        port=port,
        spec=spec,
        ssl=p.has("ssl"),
        untrusted=p.has("untrusted"),
        trust_connect_host=p.has("trust_connect_host"),
        insecure=p.has("insecure"),
        host_header=host_header or None,
        subs=tuple(s for s in p.all("sub") if s),
        over_http=p.has("over_http"),
        one_event=p.has("one_event"),
    )


def _build_route(
    sections: list[Section], filename: str, line: int
) -> tuple[Route | None, list[str]]:
    """A Route (None if the line must be skipped) and warning texts, following parseRouteLine."""
    if len(sections) < 2:
        return None, ["must specify condition and at least one target"]
    cond = sections[0]
    p = _Props(cond.props)
    notes = _option_warnings(cond.props, _COND_FLAGS, _COND_VALUES, "route")

    domain = "*" if cond.value == "*" else lower_text(cond.value)
    proto: Literal["http", "ws"] | None = None
    v = p.get("proto")
    if v is not None:
        if v == "http":
            proto = "http"
        elif v == "ws":
            proto = "ws"
        else:
            return None, ["proto must be set to 'http' or 'ws'"]
    ssl: bool | None = None
    v = p.get("ssl")
    if v is not None:
        if v not in ("yes", "no"):
            return None, ["ssl must be set to 'yes' or 'no'"]
        ssl = v == "yes"
    route_id = p.get("id")
    path_beg = p.get("path_beg")
    if path_beg is not None and not path_beg:
        return None, ["path_beg cannot be empty"]
    path_rem = 0
    v = p.get("path_rem")
    if v is not None:
        n = _to_int(v)
        if n is None:
            notes.append(f"path_rem is not a number, ignored (got {v!r})")
        else:
            path_rem = max(n, 0)
    jsonp_mode = p.get("jsonp_mode")
    if jsonp_mode is None:
        jsonp_mode = "extended"
    elif jsonp_mode not in ("basic", "extended"):
        return None, ["jsonp_mode must be set to 'basic' or 'extended'"]
    defmethod = p.get("jsonp_defmethod")
    if defmethod is None:
        defmethod = "POST" if jsonp_mode == "basic" else "GET"
    headers: list[tuple[str, str]] = []
    for h in p.all("header"):
        at = h.find(":")
        if at < 1:
            return None, ["header must use format 'name:value'"]
        name, value = h[:at], h[at + 1 :].lstrip(" ")
        # Sent to the origin as is: a non-token name or a CR/LF/NUL in the value would split
        # the request (RFC 9110 5.1, 5.5). Pushpin does not check; the line is skipped here.
        problem = field_problem(name, value)
        if problem is not None:
            return None, [f"header {problem} is invalid: '{show(h)}'"]
        headers.append((name, value))
    history: dict[str, int] = {}
    for name in ("history_size", "history_ttl"):
        v = p.get(name)
        if v is not None:
            n = _to_int(v)
            if n is None or not 0 <= n <= HISTORY_OPTION_MAX:
                return None, [f"{name} must be a number from 0 to {HISTORY_OPTION_MAX}"]
            history[name] = n
    as_host = p.get("as_host")
    if as_host and not is_safe_text(as_host):
        return None, ["as_host contains CR, LF or NUL"]
    jsonp_cb = p.get("jsonp_cb")

    targets: list[Target] = []
    for sec in sections[1:]:
        t = _parse_target(sec)
        if isinstance(t, str):
            return None, [t]
        notes += _option_warnings(sec.props, _TARGET_FLAGS, _TARGET_VALUES, "target")
        targets.append(t)

    route = Route(
        id=route_id if route_id else _implicit_id(domain, proto, ssl, path_beg),
        explicit_id=bool(route_id),
        domain=domain,
        proto=proto,
        ssl=ssl,
        path_beg=path_beg,
        targets=tuple(targets),
        prefix=p.get("prefix") or "",
        path_rem=path_rem,
        replace_beg=p.get("replace_beg"),
        as_host=as_host or None,
        headers=tuple(headers),
        debug=p.has("debug"),
        no_grip=p.has("no_grip"),
        aco=p.has("aco"),
        orig_headers=p.has("orig_headers"),
        session=p.has("session"),
        sig_iss=p.get("sig_iss"),
        sig_key=p.get("sig_key"),
        jsonp_mode=jsonp_mode,
        jsonp_cb="callback" if jsonp_cb is None else jsonp_cb,
        jsonp_body=p.get("jsonp_body"),
        jsonp_defcb=p.get("jsonp_defcb"),
        jsonp_defmethod=defmethod,
        sockjs=p.get("sockjs") or None,
        sockjs_as_path=p.get("sockjs_as_path") or None,
        history_size=history.get("history_size"),
        history_ttl=history.get("history_ttl"),
        filename=filename,
        line=line,
    )
    return route, notes


def _beg_len(route: Route) -> int:
    return len(route.path_beg.encode()) if route.path_beg else 0


def _is_match(r: Route, ws: bool, ssl: bool, path: str) -> bool:
    return (
        (r.proto is None or (r.proto == "ws") == ws)
        and (r.ssl is None or r.ssl == ssl)
        and (r.path_beg is None or path.startswith(r.path_beg))
    )


def _specificity(r: Route) -> tuple[bool, int, bool]:
    """F7 ranking: proto set, then longer path_beg, then ssl set. Matching routes never tie
    (a tie means the same condition, which is rejected as a duplicate), so line order does
    not matter. Pushpin's isMoreSpecificMatch differs in one corner: it lets a later route with
    ``ssl`` set and a *shorter* ``path_beg`` win, so its result there depends on line order;
    gripd follows the documented ranking instead."""
    return (r.proto is not None, _beg_len(r), r.ssl is not None)


def _host_only(host: str) -> str:
    """``Host`` value → lower-cased host without port or IPv6 brackets (as QUrl::host())."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


_NO_KEY = "condition has no domain or id"


class RouteTable:
    """Parsed routes, looked up by host/path (F7) or by id (F8)."""

    __slots__ = ("_by_domain", "_by_id", "_shared_ids", "routes")

    def __init__(self, routes: list[Route] | None = None) -> None:
        self.routes: tuple[Route, ...] = ()
        self._by_domain: dict[str, list[Route]] = {}
        self._by_id: dict[str, Route] = {}
        self._shared_ids: set[str] = set()
        for r in routes or []:
            self._add(r)

    def _add(self, r: Route) -> str | None:
        """Add a route; the warning text if it is rejected (addRule)."""
        if not r.domain and not r.explicit_id:
            return _NO_KEY
        if r.domain:
            for b in self._by_domain.get(r.domain, []):
                if (b.proto, b.ssl, b.path_beg) == (r.proto, r.ssl, r.path_beg):
                    return "skipping duplicate condition"
            self._by_domain.setdefault(r.domain, []).append(r)
        if r.id in self._by_id or r.id in self._shared_ids:
            self._by_id.pop(r.id, None)
            self._shared_ids.add(r.id)  # duplicate ids make the id unusable
        else:
            self._by_id[r.id] = r
        self.routes += (r,)
        return None

    @classmethod
    def _parse_lines(
        cls, lines: list[tuple[str, int, str]]
    ) -> tuple[RouteTable, list[RouteWarning]]:
        table = cls()
        warnings: list[RouteWarning] = []
        for filename, lineno, text in lines:
            try:
                sections = parse_line(text)
            except RouteSyntaxError as e:
                warnings.append(RouteWarning(filename, lineno, e.message, error=True))
                continue
            if not sections:
                continue
            route, notes = _build_route(sections, filename, lineno)
            bad = route is None  # only the reason is in ``notes`` then
            warnings += [RouteWarning(filename, lineno, m, error=bad) for m in notes]
            if route is None:
                continue
            shared_before = route.id in table._shared_ids or route.id in table._by_id
            msg = table._add(route)
            if msg is not None:
                no_key = msg == _NO_KEY
                warnings.append(RouteWarning(filename, lineno, msg, error=no_key))
            elif shared_before and route.explicit_id:
                warnings.append(
                    RouteWarning(filename, lineno, f"duplicate id {route.id!r}; id unusable")
                )
        return table, warnings

    @classmethod
    def parse(cls, text: str, filename: str = "routes") -> tuple[RouteTable, list[RouteWarning]]:
        """Parse a routes file (F6): bad lines are skipped with a warning, the rest kept."""
        lines = text.split("\n")
        return cls._parse_lines(
            [(filename, n, s.removesuffix("\r")) for n, s in enumerate(lines, start=1)]
        )

    @classmethod
    def from_lines(
        cls, lines: list[str], filename: str = "<route>"
    ) -> tuple[RouteTable, list[RouteWarning]]:
        """Routes given as ``--route`` lines (F1); warnings name ``<route>:<n>`` (n-th line)."""
        return cls._parse_lines([(filename, n, s) for n, s in enumerate(lines, start=1)])

    def lookup(self, host: str, path: str, *, ws: bool, ssl: bool) -> Route | None:
        """The route for a request (F7): if any route names this host exactly, only those are
        considered (no fallback to ``*``); among matches the most specific wins: proto set,
        then longer path_beg, then ssl set.
        ``host`` may carry a port; ``path`` is the encoded path without query."""
        h = _host_only(host)
        rules = self._by_domain.get(h)
        if rules is None:
            rules = self._by_domain.get("*")
        if rules is None:
            return None
        best: Route | None = None
        for r in rules:
            if _is_match(r, ws, ssl, path) and (
                best is None or _specificity(r) > _specificity(best)
            ):
                best = r
        return best

    def lookup_by_id(self, route_id: str) -> Route | None:
        """The route with this id (explicit or implicit), None if unknown or shared (F8)."""
        return self._by_id.get(route_id)

    def is_id_shared(self, route_id: str) -> bool:
        """True when several routes have this id. Pushpin then ignores ``Pushpin-Route`` and
        looks the request up by host instead; an unknown id gives no route."""
        return route_id in self._shared_ids

    def __len__(self) -> int:
        return len(self.routes)


# --- per-request helpers -------------------------------------------------------------------------


def rewrite_path(route: Route, path: str) -> str:
    """The origin request path for ``path`` (encoded, may include ``?query``) (F9).

    As in proxysession.cpp: ``replace_beg`` removes ``len(path_beg)`` bytes and prepends its
    value (it overrides ``path_rem``); otherwise ``path_rem`` removes the first n bytes. The
    query string is kept. An emptied path becomes ``/`` (what Pushpin sends, verified). A result
    not starting with ``/`` (``path_rem`` cutting into a segment) is kept as is: Pushpin answers
    that request with 502 ``Error while proxying to origin.`` (verified on 1.36)."""
    p, q, query = path.partition("?")
    if route.replace_beg is not None:
        n = _beg_len(route)
        prepend = route.replace_beg
    else:
        n = route.path_rem
        prepend = ""
    if n > 0:
        p = p.encode()[n:].decode(errors="replace")
    return (prepend + p or "/") + q + query


def test_target_path(route: Route, path: str) -> str:
    """The path the built-in test handler sees (F50): with ``path_beg``, that prefix minus a
    trailing ``/`` is removed (``/test/`` on ``/test/stream`` → ``/stream``). Applied after
    :func:`rewrite_path`, as in proxysession.cpp. The result may be empty (``/test`` on
    ``/test``); Pushpin's test handler answers that with 404."""
    if not route.path_beg:
        return path
    n = _beg_len(route) - (1 if route.path_beg.endswith("/") else 0)
    if n <= 0:
        return path
    p, q, query = path.partition("?")
    return p.encode()[n:].decode(errors="replace") + q + query


class _HasHeaderOptions(Protocol):
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


def apply_route_headers(route: _HasHeaderOptions, headers: Headers) -> Headers:
    """Apply ``header=`` options to a request's headers (F9): each removes that name, then adds
    the value unless it is empty. Pushpin applies them last-written first (QMultiHash order), so
    for a repeated name the first one in the file wins."""
    out = headers
    for name, value in reversed(route.headers):
        out = remove(out, name)
        if value:
            out = [*out, (name, value)]
    return out

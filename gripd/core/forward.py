"""What gripd sends to the origin: request header rewriting and client trust (F12-F16, F4, F9).

Follows Pushpin 1.36 ``ProxyUtil::manipulateRequestHeaders`` and the code around it in
proxysession.cpp / wsproxysession.cpp, checked against a running Pushpin (loopback, echoing
origin). The observable order on the wire is: ``Host`` first (zurl always sends it first), then
the client's remaining headers in their order, then what Pushpin appends, in this order:
route ``header=`` values, ``eb9bf0f5-*`` copies, ``Grip-Sig``, ``Grip-Feature``, ``Grip-Last``,
``X-Forwarded-Proto``/``-Protocol``, ``X-Forwarded-For``, and (WebSocket)
``Sec-WebSocket-Extensions: grip``.

Framing is left to the origin client: ``Content-Length`` and ``Transfer-Encoding`` are removed
here; zurl appends its own ``Content-Length`` last (and adds ``Accept: */*`` when the client
sent no ``Accept``, and its own ``Accept-Encoding`` which it decodes). For WebSocket requests the
client's ``Upgrade``, ``Sec-WebSocket-Key`` and ``Sec-WebSocket-Version`` are removed too: the
origin-side WebSocket client sends its own handshake headers (zurl appends them last).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gripd.core.headers import Headers, get, lower_text, split_unquoted
from gripd.core.routes import apply_route_headers
from gripd.core.sig import SigningKey, validate_token

# F13: the exact 1.36 string [verified].
GRIP_FEATURE = (
    "status, session, link:next, filter:skip-self, filter:skip-users, filter:require-sub, "
    "filter:build-id, filter:var-subst"
)

ORIG_MARK = "eb9bf0f5-"  # F14 prefix for copies of the client's original headers

# F12: only apply to the incoming hop. Pushpin does NOT drop the headers named in Connection
# (verified: "Connection: X-Hop" + "X-Hop: 1" reaches the origin with X-Hop).
_HOP_BY_HOP = (
    "Connection",
    "Keep-Alive",
    "Accept-Encoding",
    "Content-Encoding",
    "Transfer-Encoding",
    "Expect",
)
# Framing, set by the origin client from the body it sends.
_FRAMING = ("Content-Length",)
# WebSocket handshake headers the origin-side WebSocket client generates itself.
_WS_HANDSHAKE = ("Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version")

_QT_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
# Lower-cased names removed from every forwarded request; Host is re-added first at the end.
_DROP_HTTP = frozenset(n.lower() for n in (*_HOP_BY_HOP, *_FRAMING, "Host"))
_DROP_WS = _DROP_HTTP | {n.lower() for n in _WS_HANDSHAKE}


class RouteLike(Protocol):
    """The fields of ``gripd.core.routes.Route`` used here."""

    @property
    def as_host(self) -> str | None: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def no_grip(self) -> bool: ...
    @property
    def orig_headers(self) -> bool: ...
    @property
    def sig_iss(self) -> str | None: ...
    @property
    def sig_key(self) -> str | None: ...


class TargetLike(Protocol):
    """The fields of ``gripd.core.routes.Target`` used here."""

    @property
    def host_header(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class XffRule:
    """An ``x_forwarded_for`` rule (F16): keep the last ``truncate`` values (-1: all) and
    maybe ``append`` the peer address."""

    truncate: int = -1
    append: bool = False


def parse_xff_rule(items: Iterable[str]) -> XffRule:
    """Parse ``truncate:N`` / ``append`` items as Pushpin's app.cpp does: unknown items are
    ignored, and a non-integer ``truncate:`` stops parsing (keeping what was parsed before)."""
    truncate, append = -1, False
    for raw in items:
        item = raw.strip()  # QSettings trims list items ("truncate:0, append" works)
        if item.startswith("truncate:"):
            if not _QT_INT_RE.fullmatch(item[9:]):
                break
            truncate = int(item[9:])
        elif item == "append":
            append = True
    return XffRule(truncate, append)


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    """The ``[proxy]`` settings that shape forwarded requests, built once from the config.

    ``set_x_forwarded_protocol``: ``"true"`` adds X-Forwarded-Proto and X-Forwarded-Protocol,
    ``"proto-only"`` only the first, anything else neither (F4). ``accept_pushpin_route``
    (F4, extra field) strips ``Pushpin-Route`` once it has selected the route.
    """

    sig_iss: str
    sig_key: SigningKey | None
    upstream_key: SigningKey | None
    accept_x_forwarded_protocol: bool
    set_x_forwarded_protocol: str
    x_forwarded_for: tuple[str, ...]
    x_forwarded_for_trusted: tuple[str, ...]
    orig_headers_need_mark: tuple[str, ...]
    accept_pushpin_route: bool = False
    xff_rule: XffRule = field(init=False, repr=False)
    xff_trusted_rule: XffRule = field(init=False, repr=False)
    set_proto: bool = field(init=False, repr=False)
    set_protocol: bool = field(init=False, repr=False)
    need_mark_set: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Derived once, not per request (frozen: assign through object.__setattr__).
        mode = self.set_x_forwarded_protocol
        object.__setattr__(self, "xff_rule", parse_xff_rule(self.x_forwarded_for))
        object.__setattr__(self, "xff_trusted_rule", parse_xff_rule(self.x_forwarded_for_trusted))
        object.__setattr__(self, "set_proto", mode in ("true", "proto-only"))
        object.__setattr__(self, "set_protocol", mode == "true")
        need = frozenset(n.strip().lower() for n in self.orig_headers_need_mark if n.strip())
        object.__setattr__(self, "need_mark_set", need)


@dataclass(slots=True, init=False)
class ClientRequestInfo:
    """The client request as received. ``path`` includes the query; ``tls`` is already
    adjusted by :func:`client_is_tls`; ``ws`` marks a WebSocket handshake."""

    method: str
    path: str
    headers: Headers
    peer_ip: str
    tls: bool
    ws: bool

    # An explicit __init__ (init=False): a compiled build (mypyc) compiles it; the one the
    # dataclass decorator generates stays interpreted and cost ~5x more per object.
    def __init__(
        self, method: str, path: str, headers: Headers, peer_ip: str, tls: bool, ws: bool = False
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.peer_ip = peer_ip
        self.tls = tls
        self.ws = ws


def _forwarded_tls_value(headers: Headers) -> str | None:
    # X-Forwarded-Proto, or when that is absent/empty X-Forwarded-Protocol (engine.cpp).
    value = get(headers, "X-Forwarded-Proto")
    if not value:
        value = get(headers, "X-Forwarded-Protocol")
    return value


def client_is_tls(headers: Headers, transport_tls: bool, settings: ForwardSettings) -> bool:
    """F4 ``accept_x_forwarded_protocol``: ``https``/``wss`` (exact, case-sensitive) in the
    forwarded-protocol header marks the request TLS; it never downgrades a TLS connection."""
    if transport_tls or not settings.accept_x_forwarded_protocol:
        return transport_tls
    return _forwarded_tls_value(headers) in ("https", "wss")


def is_trusted_client(headers: Headers, settings: ForwardSettings, now: float) -> bool:
    """F15: the first ``Grip-Sig`` verifies with ``upstream_key`` and has not expired."""
    key = settings.upstream_key
    if key is None:
        return False
    token = get(headers, "Grip-Sig")
    if not token:
        return False
    return validate_token(token, key, now)


def _xff_values(headers: Headers) -> list[str]:
    """Every X-Forwarded-For value, split on commas outside quotes and trimmed, as Pushpin's
    ``getAll``/``takeAll`` (an empty header contributes nothing; inner empties are kept)."""
    out: list[str] = []
    for k, v in headers:
        if v and k.lower() == "x-forwarded-for":
            out.extend(_split_xff(v))
    return out


def _split_xff(value: str) -> list[str]:
    """One non-empty X-Forwarded-For value's items (see :func:`_xff_values`)."""
    parts = split_unquoted(value, ",")
    if parts[-1] == "":
        parts.pop()  # a comma ending the value starts no new value ("a," is one)
    return [p.strip() for p in parts]


def logical_client_address(
    headers: Headers, peer_ip: str, settings: ForwardSettings, trusted: bool
) -> str:
    """F16: the address for logs and stats: the first X-Forwarded-For value when there is
    one, it is an IP address and the applicable rule's truncate is not 0; else the peer.

    Note the default rule (truncate unset) also takes the client's X-Forwarded-For, as Pushpin.
    """
    rule = settings.xff_trusted_rule if trusted else settings.xff_rule
    if rule.truncate != 0:
        values = _xff_values(headers)
        if values:
            try:
                return str(ipaddress.ip_address(values[0]))
            except ValueError:
                pass
    return peer_ip


def _split_authority(authority: str) -> tuple[str, int | None]:
    """``host[:port]`` -> (host, port). Bracketed IPv6 keeps its brackets. A non-numeric port
    becomes 0, as QString::toInt in Pushpin's applyHost."""
    if authority.startswith("["):
        end = authority.find("]")
        if end != -1:
            host, rest = authority[: end + 1], authority[end + 1 :]
            if rest.startswith(":"):
                return host, _port(rest[1:])
            return host, None
    at = authority.find(":")
    if at == -1:
        return authority, None
    return authority[:at], _port(authority[at + 1 :])


def _port(text: str) -> int:
    if text.isascii() and text.isdigit():  # what Host headers carry: no regex needed
        return int(text)
    return int(text) if _QT_INT_RE.fullmatch(text) else 0


def origin_host_header(client_authority: str, route: RouteLike, target: TargetLike) -> str:
    """The Host sent to the origin (F12): the client's, replaced by the route's ``as_host``,
    replaced by the target's ``host=`` (the target wins: it is applied last). A value without
    a port drops the port. The host is lower-cased, as QUrl does [verified]."""
    # Only the winning value is split: each later one replaces host and port entirely.
    authority = target.host_header or route.as_host or client_authority
    host, port_num = _split_authority(authority)
    host = lower_text(host)
    return host if port_num is None else f"{host}:{port_num}"


def signing_for_route(
    route: RouteLike, settings: ForwardSettings, parse: Callable[[str], SigningKey | None]
) -> tuple[str, SigningKey | None]:
    """F9: the route's ``sig_iss`` and ``sig_key`` when both are set (and the key parses to a
    key), else the global ones. ``parse`` turns the route's key text into a key; pass a
    memoizing one (route keys may be files, relative to the routes file's directory)."""
    if route.sig_iss and route.sig_key:
        key = parse(route.sig_key)
        if key is not None:
            return route.sig_iss, key
    return settings.sig_iss, settings.sig_key


def _special_names(
    ws: bool, pushpin_route: bool, grip_sig: bool, grip_feature: bool, fwd_proto: bool
) -> frozenset[str]:
    """The lower-cased names :func:`origin_request_headers` takes out of the client's headers
    (X-Forwarded-For and Host are collected on the way) for one combination of options."""
    names = set(_DROP_WS if ws else _DROP_HTTP)
    names.add("x-forwarded-for")
    if ws:
        names.add("sec-websocket-extensions")
    if pushpin_route:
        names.add("pushpin-route")
    if grip_sig:
        names.add("grip-sig")
    if grip_feature:
        names.add("grip-feature")
    if fwd_proto:
        names.update(("x-forwarded-proto", "x-forwarded-protocol"))
    return frozenset(names)


# Every combination, built once: index with ws | pushpin_route << 1 | grip_sig << 2 |
# grip_feature << 3 | fwd_proto << 4 (an immutable table, not a cache).
_SPECIAL = tuple(
    _special_names(bool(i & 1), bool(i & 2), bool(i & 4), bool(i & 8), bool(i & 16))
    for i in range(32)
)


def origin_request_headers(
    req: ClientRequestInfo,
    route: RouteLike,
    target: TargetLike,
    settings: ForwardSettings,
    *,
    token: str | None,
    trusted: bool,
    host_header: str | None = None,
    last_ids: Sequence[tuple[str, str]] = (),
    internal: bool = False,
) -> Headers:
    """The headers for the origin request (F12-F16), Host first, without framing headers.

    ``token`` is the Grip-Sig to send (from :class:`gripd.core.sig.TokenCache` with
    :func:`signing_for_route`), None for none. ``trusted`` is :func:`is_trusted_client`'s
    answer: a trusted client keeps its Grip-* headers, gets no Grip-Sig/Grip-Feature and the
    ``x_forwarded_for_trusted`` rule. ``host_header`` is the client's authority when it did not
    come in a Host header (default: the Host header, else ``localhost`` as condure uses).
    ``last_ids`` are (channel, id) pairs sent as ``Grip-Last`` on retries/next-link requests;
    ``internal`` marks such requests from the handler, whose Grip-* headers are kept (F13).

    This runs for every proxied request, so the steps Pushpin applies one after the other
    (route ``header=``, F14 marks, hop-by-hop and Grip-* filters, the removals before each
    appended header, X-Forwarded-For collection) are fused into one pass that lower-cases each
    name once. That is exact because each step either filters by name or appends at the end,
    no appended name is one a later step removes, and no filter matches an ``eb9bf0f5-`` name.
    """
    grip = not route.no_grip
    ws = req.ws
    add_grip = grip and not trusted
    fwd_proto = settings.accept_x_forwarded_protocol or settings.set_proto or settings.set_protocol
    special = _SPECIAL[
        ws
        | settings.accept_pushpin_route << 1
        | (add_grip and bool(token)) << 2
        | add_grip << 3
        | fwd_proto << 4
    ]
    strip_grip = not trusted and not internal
    orig = route.orig_headers
    # F14: with orig_headers (untrusted client) every header not in orig_headers_need_mark is
    # copied with the mark, before any filter; the copies and the headers the client already
    # marked go after the kept ones. Without orig_headers client-marked headers are dropped.
    copy_orig = orig and not trusted
    check_mark = not orig or not trusted
    need_mark = settings.need_mark_set

    # Route header= options remove names and append values: the rare case keeps that step.
    items = apply_route_headers(route, list(req.headers)) if route.headers else req.headers
    out: Headers = [("Host", "")]  # the real Host is set at the end, once it is known
    marked: Headers = []
    xff: list[str] = []
    first_host: str | None = None
    for k, v in items:
        lk = k.lower()
        if check_mark and lk.startswith(ORIG_MARK):
            if copy_orig:
                marked.append((k, v))
            continue
        if copy_orig and lk not in need_mark:
            marked.append((ORIG_MARK + k, v))
        if lk in special:
            if lk == "x-forwarded-for":
                if v:
                    xff.extend(_split_xff(v))
            elif lk == "host" and first_host is None:
                first_host = v
            continue
        if strip_grip and lk.startswith("grip-"):
            continue
        out.append((k, v))
    if marked:
        out += marked

    if add_grip:
        if token:
            out.append(("Grip-Sig", token))
        out.append(("Grip-Feature", GRIP_FEATURE))
        for channel, last_id in last_ids:
            out.append(("Grip-Last", f"{channel}; last-id={last_id}"))

    if req.tls and (settings.set_proto or settings.set_protocol):
        scheme = "wss" if ws else "https"
        if settings.set_proto:
            out.append(("X-Forwarded-Proto", scheme))
        if settings.set_protocol:
            out.append(("X-Forwarded-Protocol", scheme))

    # F16: all values are taken out, truncated, maybe extended, and re-added as one header.
    rule = settings.xff_trusted_rule if trusted else settings.xff_rule
    if rule.truncate >= 0:
        xff = xff[max(len(xff) - rule.truncate, 0) :]
    if rule.append and req.peer_ip:
        # A Unix-socket client (local_ports) has no address: Pushpin then sends no value.
        xff.append(req.peer_ip)
    if xff:
        out.append(("X-Forwarded-For", ", ".join(xff)))

    if ws and grip:
        # wsproxysession: never pass the client's extensions; offer grip on GRIP routes.
        out.append(("Sec-WebSocket-Extensions", "grip"))

    # The client's own Host, not one set by a route header= (Pushpin derives the origin Host
    # from the request URI and overwrites the header with it).
    if route.headers:
        first_host = get(req.headers, "Host")
    authority = host_header or first_host or "localhost"
    out[0] = ("Host", origin_host_header(authority, route, target))
    return out

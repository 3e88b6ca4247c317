"""What to do with a parsed client request head: answer it, queue it or start a session.

Pushpin's request-session start (requestsession.cpp) as a pure decision: route lookup by
host/path/ws/ssl or by ``Pushpin-Route`` (F4, F7, F8), the JSON-P rewrite (F46), the
``Pushpin-Check`` notice (F53), "No route for host" (F6), the WebSocket-over-HTTP trust check
(F41) and the ``max_open_requests`` limit (F4). The runtime carries the decision out; nothing
here mutates the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from gripd.core import headers as hdr
from gripd.core.errors import ClientError
from gripd.core.forward import ForwardSettings, client_is_tls, is_trusted_client
from gripd.core.http import HttpResponse, text_response
from gripd.core.jsonp import JsonpConfig, JsonpRequest, parse_jsonp_request
from gripd.core.routes import Route, RouteTable

# F53: Pushpin answers a request carrying ``Pushpin-Check`` with its license notice; gripd
# answers with its own (it is a different program, under Apache-2.0).
CHECK_NOTICE = (
    "gripd, a GRIP proxy compatible with Pushpin.\n"
    "\n"
    "Licensed under the Apache License, Version 2.0. You may obtain a copy of the\n"
    "License at http://www.apache.org/licenses/LICENSE-2.0\n"
)

WOH_FORBIDDEN = "Client not allowed to send WebSocket events directly.\n"  # F41


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """The config the decision reads. ``forward`` supplies ``accept_pushpin_route`` (F4),
    ``accept_x_forwarded_protocol`` (ssl routes) and ``upstream_key`` (trust, F15/F41);
    ``max_open_requests`` < 0 means no limit."""

    forward: ForwardSettings
    auto_cross_origin: bool = False
    max_open_requests: int = -1


@dataclass(slots=True, init=False)
class Respond:
    """gripd answers the request itself. The runtime applies ``rewrite`` first, then sends
    ``response`` JSON-P wrapped (when rewritten) or CORS-decorated when ``aco`` (F45/F46)."""

    response: HttpResponse
    aco: bool
    rewrite: JsonpRequest | None

    # An explicit __init__ (init=False): a compiled build (mypyc) compiles it; the one the
    # dataclass decorator generates stays interpreted and cost ~5x more per object.
    def __init__(
        self, response: HttpResponse, aco: bool, rewrite: JsonpRequest | None = None
    ) -> None:
        self.response = response
        self.aco = aco
        self.rewrite = rewrite


@dataclass(slots=True, init=False)
class _Session:
    """A request for a session: a WebSocket session when ``ws``, else a proxy session, on
    ``route``, with the request rewritten by ``rewrite`` first. ``trusted``: the client is a
    trusted upstream proxy (F15)."""

    route: Route
    trusted: bool
    ws: bool
    rewrite: JsonpRequest | None

    def __init__(
        self, route: Route, trusted: bool, ws: bool, rewrite: JsonpRequest | None = None
    ) -> None:  # explicit: see Respond
        self.route = route
        self.trusted = trusted
        self.ws = ws
        self.rewrite = rewrite


class Wait(_Session):
    """``max_open_requests`` is reached (F4): queue the request and stop reading from the
    client until a session ends."""

    __slots__ = ()


class Begin(_Session):
    """Start the session for the request."""

    __slots__ = ()


Decision = Respond | Wait | Begin


def _strip_port(host: str) -> str:
    """``Host`` authority without its port; IPv6 brackets are removed (case is kept)."""
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_host_path(url: str, headers: hdr.Headers) -> tuple[str, str]:
    """The host (port stripped) and path (no query) a request is routed by. An absolute-form
    target (``http://h:1/p``) names the host instead of the ``Host`` header."""
    host_header = hdr.get(headers, "host") or ""
    if url.startswith(("http://", "https://")):
        host_header = url.split("://", 1)[1].split("/", 1)[0]
    path = url.split("?", 1)[0]
    if path.startswith(("http://", "https://")):
        rest = path.split("://", 1)[1]
        path = rest[rest.find("/") :] if "/" in rest else "/"
    return _strip_port(host_header), path


def find_route(
    host: str,
    path: str,
    headers: hdr.Headers,
    upgrade: bool,
    routes: RouteTable,
    forward: ForwardSettings,
    *,
    tls: bool = False,
) -> Route | None:
    """The route for a request: by ``Pushpin-Route`` id when accepted and the id is not shared
    (F4/F8; an unknown id gives none), else by host/path/ws/ssl (F7). ``tls``: the request
    came over a TLS listener (F3 ``https_ports``); the ``ssl=`` condition also follows F4
    ``accept_x_forwarded_protocol``."""
    route_id = ""
    if forward.accept_pushpin_route:
        route_id = (hdr.get(headers, "pushpin-route") or "").strip()
    if route_id and not routes.is_id_shared(route_id):
        return routes.lookup_by_id(route_id)
    ssl = client_is_tls(headers, tls, forward)
    return routes.lookup(host, path, ws=upgrade, ssl=ssl)


def dispatch(
    method: str,
    url: str,
    headers: hdr.Headers,
    upgrade: bool,
    routes: RouteTable,
    settings: DispatchSettings,
    *,
    open_requests: int,
    now: float,
    tls: bool = False,
) -> Decision:
    """Decide what serves this request head. ``upgrade``: the head asks for a protocol
    upgrade; ``open_requests``: sessions in flight; ``now``: wall-clock seconds (Grip-Sig
    expiry for the upstream trust check); ``tls``: it came over a TLS listener.

    Pushpin's order: JSON-P, then ``Pushpin-Check``, then "no route". Its own answers from the
    JSON-P step on are JSON-P wrapped or CORS-decorated like any other."""
    host, path = request_host_path(url, headers)
    route = find_route(host, path, headers, upgrade, routes, settings.forward, tls=tls)
    aco = settings.auto_cross_origin or (route is not None and route.aco)
    jr: JsonpRequest | None = None
    if aco and not upgrade:
        try:  # F46: JSON-P turns a GET into the request its parameters describe
            cfg = JsonpConfig.from_route(route) if route is not None else JsonpConfig()
            jr = parse_jsonp_request(method, url, headers, cfg)
        except ClientError as e:
            return Respond(text_response(e.status, e.message + "\n"), True)
        if jr is not None:
            headers = jr.headers
    if hdr.contains(headers, "pushpin-check"):
        return Respond(text_response(200, CHECK_NOTICE), aco, jr)  # F53
    if route is None:
        return Respond(text_response(502, f"No route for host: {host}\n"), aco, jr)  # F6
    trusted = False
    if settings.forward.upstream_key is not None:
        trusted = is_trusted_client(headers, settings.forward, now)
    ws = upgrade and "websocket" in (hdr.get(headers, "upgrade") or "").lower()
    ctype = (hdr.get(headers, "content-type") or "").split(";")[0].strip().lower()
    if (
        not ws
        and ctype == "application/websocket-events"
        and route.targets[0].over_http
        and not trusted
    ):
        # F41: only a trusted upstream proxy may speak WebSocket-over-HTTP to us
        return Respond(text_response(403, WOH_FORBIDDEN), aco, jr)
    limit = settings.max_open_requests
    if 0 <= limit <= open_requests:
        # F4 max_open_requests: like Pushpin, stop taking requests (HTTP sessions with the
        # origin and WebSocket sessions) until one finishes.
        return Wait(route, trusted, ws, jr)
    return Begin(route, trusted, ws, jr)

"""Request dispatch (F4, F6, F7, F8, F41, F46, F53): routing, own answers and the session
decision, in Pushpin's order (JSON-P, then ``Pushpin-Check``, then "no route")."""

from __future__ import annotations

import dataclasses

import pytest

from gripd.core.dispatch import (
    CHECK_NOTICE,
    WOH_FORBIDDEN,
    Begin,
    Decision,
    DispatchSettings,
    Respond,
    Wait,
    _strip_port,
    dispatch,
    request_host_path,
)
from gripd.core.forward import ForwardSettings
from gripd.core.headers import Headers
from gripd.core.http import HttpResponse
from gripd.core.routes import Route, RouteTable
from gripd.core.sig import SigningKey, claims_json, encode_token

NOW = 1_795_880_000.0
UPKEY = SigningKey("HS256", secret=b"upkey")
WOH = "application/websocket-events"

ROUTES = """\
a.com,id=a h:1
a.com,path_beg=/api/ h:2
a.com,proto=ws h:3
a.com,ssl=yes h:4
::1,id=v6 h:5
aco.com,aco h:6
aco.com,aco,path_beg=/b/,jsonp_body=b,jsonp_defcb=dcb h:7
woh.com,id=woh h:8,over_http
shared.com,id=dup h:9
other.com,id=dup h:10
"""


def table(text: str = ROUTES) -> RouteTable:
    t, warnings = RouteTable.parse(text)
    assert not [w for w in warnings if w.error]
    return t


TABLE = table()


def fwd(**kw: object) -> ForwardSettings:
    base: dict[str, object] = {
        "sig_iss": "pushpin",
        "sig_key": None,
        "upstream_key": None,
        "accept_x_forwarded_protocol": False,
        "set_x_forwarded_protocol": "proto-only",
        "x_forwarded_for": (),
        "x_forwarded_for_trusted": (),
        "orig_headers_need_mark": (),
    }
    base.update(kw)
    return ForwardSettings(**base)  # type: ignore[arg-type]


def run(
    url: str = "/",
    headers: Headers | None = None,
    *,
    method: str = "GET",
    upgrade: bool = False,
    routes: RouteTable = TABLE,
    forward: ForwardSettings | None = None,
    aco: bool = False,
    limit: int = -1,
    open_requests: int = 0,
    now: float = NOW,
) -> Decision:
    h = [("Host", "a.com")] if headers is None else headers
    settings = DispatchSettings(forward or fwd(), auto_cross_origin=aco, max_open_requests=limit)
    return dispatch(method, url, h, upgrade, routes, settings, open_requests=open_requests, now=now)


def begin(d: Decision) -> Begin:
    assert isinstance(d, Begin), d
    return d


def respond(d: Decision) -> Respond:
    assert isinstance(d, Respond), d
    return d


def target_port(route: Route) -> int:
    return route.targets[0].port


def grip_sig(exp: float) -> str:
    return encode_token(claims_json("up", int(exp)), UPKEY)


# --- host and path (F7) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.com", "a.com"),
        ("a.com:8080", "a.com"),
        ("Example.COM:80", "Example.COM"),  # case kept (the "No route" message shows it)
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[::1", "[::1"),  # no closing bracket: left as is
        ("::1", "::1"),  # bare IPv6: several colons, no port taken off
        ("", ""),
    ],
)
def test_strip_port(host: str, expected: str) -> None:
    assert _strip_port(host) == expected


@pytest.mark.parametrize(
    ("url", "host_header", "expected"),
    [
        ("/x?q=1", "a.com:81", ("a.com", "/x")),
        ("/x", None, ("", "/x")),
        ("http://b.com:81/p/q?x=1", "a.com", ("b.com", "/p/q")),  # absolute form wins
        ("https://b.com", "a.com", ("b.com", "/")),
        ("http://[::1]:8080/v", "a.com", ("::1", "/v")),
        ("*", "a.com", ("a.com", "*")),
    ],
)
def test_request_host_path(url: str, host_header: str | None, expected: tuple[str, str]) -> None:
    headers: Headers = [] if host_header is None else [("Host", host_header)]
    assert request_host_path(url, headers) == expected


def test_routes_by_host_path_ws_and_ssl() -> None:
    """F7: the most specific matching route; ws and ssl take part in the match."""
    assert target_port(begin(run("/x")).route) == 1
    assert target_port(begin(run("/api/v")).route) == 2
    up = [("Host", "a.com"), ("Upgrade", "websocket")]
    d = begin(run("/x", up, upgrade=True))
    assert (target_port(d.route), d.ws) == (3, True)
    xfp = [("Host", "a.com"), ("X-Forwarded-Proto", "https")]
    assert target_port(begin(run("/x", xfp)).route) == 1  # not accepted by default
    accept = fwd(accept_x_forwarded_protocol=True)
    assert target_port(begin(run("/x", xfp, forward=accept)).route) == 4  # F4


def test_absolute_form_url_picks_the_host() -> None:
    d = begin(run("http://a.com:8080/api/x?y=1", [("Host", "nowhere.example")]))
    assert target_port(d.route) == 2


def test_ipv6_host_with_brackets() -> None:
    assert target_port(begin(run("/", [("Host", "[::1]:7999")])).route) == 5
    assert target_port(begin(run("http://[::1]/", [])).route) == 5
    r = respond(run("/", [("Host", "[::2]:80")]))
    assert r.response.body == b"No route for host: ::2\n"


# --- Pushpin-Route (F4 accept_pushpin_route, F8) --------------------------------------------


ACCEPT = fwd(accept_pushpin_route=True)


def test_pushpin_route_selects_by_id_when_accepted() -> None:
    h = [("Host", "nowhere.example"), ("Pushpin-Route", " woh ")]
    assert target_port(begin(run("/", h, forward=ACCEPT)).route) == 8
    # not accepted: the header is ignored, the host decides
    assert respond(run("/", h)).response.code == 502


def test_pushpin_route_unknown_id_gives_no_route() -> None:
    h = [("Host", "a.com"), ("Pushpin-Route", "nope")]
    r = respond(run("/", h, forward=ACCEPT))
    assert (r.response.code, r.response.body) == (502, b"No route for host: a.com\n")


def test_pushpin_route_shared_id_falls_back_to_host() -> None:
    """Two routes with id ``dup``: Pushpin ignores the header and routes by host."""
    h = [("Host", "other.com"), ("Pushpin-Route", "dup")]
    assert target_port(begin(run("/", h, forward=ACCEPT)).route) == 10
    h = [("Host", "a.com"), ("Pushpin-Route", "dup")]
    assert target_port(begin(run("/", h, forward=ACCEPT)).route) == 1


def test_pushpin_route_empty_value_uses_host() -> None:
    h = [("Host", "a.com"), ("Pushpin-Route", "  ")]
    assert target_port(begin(run("/", h, forward=ACCEPT)).route) == 1


# --- own answers: JSON-P errors, Pushpin-Check, no route (F46, F53, F6) -----------------------


def test_no_route_answers_502() -> None:
    """F6: no matching route: 502 naming the host (port stripped, case kept)."""
    r = respond(run("/", [("Host", "Nowhere.Example:81")]))
    assert r.response.code == 502
    assert r.response.body == b"No route for host: Nowhere.Example\n"
    assert dict(r.response.headers)["Content-Type"] == "text/plain"
    assert (r.aco, r.rewrite) == (False, None)
    assert respond(run("/", [("Host", "x")], aco=True)).aco  # auto_cross_origin decorates it


def test_pushpin_check_answers_the_notice() -> None:
    """F53: before "no route", so it works for any host; ``aco`` follows the route."""
    for host, aco in (("a.com", False), ("aco.com", True), ("nowhere.example", False)):
        r = respond(run("/", [("Host", host), ("Pushpin-Check", "1")]))
        assert (r.response.code, r.response.body) == (200, CHECK_NOTICE.encode())
        assert (r.aco, r.rewrite) == (aco, None)


def test_jsonp_error_is_a_400_before_check_and_no_route() -> None:
    """F46: a bad JSON-P request is answered 400 (CORS-decorated, not wrapped) even when the
    request also has Pushpin-Check or no route matches under auto_cross_origin."""
    r = respond(run("/x?callback=", [("Host", "aco.com"), ("Pushpin-Check", "1")]))
    assert (r.response.code, r.aco, r.rewrite) == (400, True, None)
    assert r.response.body.startswith(b"Invalid callback parameter")
    r = respond(run("/x?callback=cb&_method=", [("Host", "nowhere.example")], aco=True))
    assert (r.response.code, r.aco) == (400, True)


def test_jsonp_rewrite_is_returned_not_applied() -> None:
    """F46: the rewritten request travels in the decision; the input is left alone."""
    headers: Headers = [("Host", "aco.com"), ("Accept", "text/html"), ("X-C", "c")]
    before = list(headers)
    d = begin(run("/x?callback=cb&_method=POST&_body=hi&k=v", headers))
    assert headers == before
    jr = d.rewrite
    assert jr is not None
    assert (jr.method, jr.uri, jr.body, jr.callback) == ("POST", "/x?k=v", b"hi", "cb")
    assert jr.headers == [("Host", "aco.com"), ("Accept", "*/*"), ("X-C", "c")]
    assert (target_port(d.route), d.ws, d.trusted) == (6, False, False)


def test_jsonp_body_param_with_default_callback() -> None:
    jr = begin(run("/b/x?b=%7B%7D", [("Host", "aco.com")])).rewrite
    assert jr is not None
    assert (jr.callback, jr.body, jr.uri) == ("dcb", b"{}", "/b/x")


def test_jsonp_needs_aco_and_no_upgrade() -> None:
    assert begin(run("/x?callback=cb", [("Host", "a.com")])).rewrite is None
    assert begin(run("/x?callback=cb", [("Host", "a.com")], aco=True)).rewrite is not None
    up = [("Host", "aco.com"), ("Upgrade", "websocket")]
    assert begin(run("/x?callback=", up, upgrade=True)).rewrite is None  # not even an error
    assert begin(run("/x?callback=cb", [("Host", "aco.com")], method="POST")).rewrite is None


def test_jsonp_rewrite_then_pushpin_check_from_headers_param() -> None:
    """Pushpin-Check is looked for in the rewritten headers, and the answer is wrapped."""
    url = "/x?callback=cb&_headers=%7B%22Pushpin-Check%22%3A%221%22%7D"
    r = respond(run(url, [("Host", "aco.com")]))
    assert (r.response.code, r.aco) == (200, True)
    assert r.rewrite is not None and r.rewrite.callback == "cb"


def test_jsonp_rewrite_then_no_route_is_wrapped() -> None:
    r = respond(run("/x?callback=cb", [("Host", "nowhere.example")], aco=True))
    assert r.response.code == 502
    assert r.rewrite is not None and r.rewrite.uri == "/x"


# --- WebSocket-over-HTTP trust (F41, F15) -----------------------------------------------------


def test_woh_events_from_untrusted_client_is_403() -> None:
    """F41: application/websocket-events to an over_http route needs a trusted Grip-Sig."""
    h = [("Host", "woh.com"), ("Content-Type", "Application/WebSocket-Events; x=1")]
    r = respond(run("/", h, method="POST"))
    assert (r.response.code, r.response.body) == (403, WOH_FORBIDDEN.encode())
    keyed = fwd(upstream_key=UPKEY)
    expired = [*h, ("Grip-Sig", grip_sig(NOW))]
    assert respond(run("/", expired, method="POST", forward=keyed)).response.code == 403
    no_key = [*h, ("Grip-Sig", grip_sig(NOW + 60))]
    assert respond(run("/", no_key, method="POST")).response.code == 403


def test_woh_events_from_trusted_client_begins() -> None:
    h = [("Host", "woh.com"), ("Content-Type", WOH), ("Grip-Sig", grip_sig(NOW + 60))]
    d = begin(run("/", h, method="POST", forward=fwd(upstream_key=UPKEY)))
    assert (target_port(d.route), d.trusted, d.ws) == (8, True, False)


def test_woh_events_to_plain_route_is_not_checked() -> None:
    d = begin(run("/", [("Host", "a.com"), ("Content-Type", WOH)], method="POST"))
    assert (target_port(d.route), d.trusted) == (1, False)


def test_ws_upgrade_with_events_content_type_is_a_websocket() -> None:
    h = [("Host", "woh.com"), ("Upgrade", "WebSocket"), ("Content-Type", WOH)]
    d = begin(run("/", h, upgrade=True))
    assert (d.ws, d.trusted) == (True, False)


def test_non_websocket_upgrade_is_checked_like_http() -> None:
    h = [("Host", "woh.com"), ("Upgrade", "h2c"), ("Content-Type", WOH)]
    assert respond(run("/", h, upgrade=True)).response.code == 403
    d = begin(run("/", [("Host", "a.com"), ("Upgrade", "h2c")], upgrade=True))
    assert d.ws is False


def test_trust_needs_upstream_key_and_uses_now() -> None:
    h = [("Host", "a.com"), ("Grip-Sig", grip_sig(NOW + 60))]
    assert begin(run("/", h)).trusted is False  # no upstream_key configured
    keyed = fwd(upstream_key=UPKEY)
    assert begin(run("/", h, forward=keyed)).trusted is True
    assert begin(run("/", h, forward=keyed, now=NOW + 61)).trusted is False


# --- max_open_requests (F4) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "open_requests", "waits"),
    [
        (-1, 0, False),
        (-1, 10_000, False),
        (0, 0, True),  # 0: nothing starts until the limit is raised
        (1, 0, False),
        (1, 1, True),
        (1, 2, True),
        (2, 1, False),
    ],
)
def test_max_open_requests(limit: int, open_requests: int, waits: bool) -> None:
    d = run("/", limit=limit, open_requests=open_requests)
    assert isinstance(d, Wait if waits else Begin)


def test_wait_carries_route_trust_ws_and_rewrite() -> None:
    up = [("Host", "a.com"), ("Upgrade", "websocket")]
    d = run("/", up, upgrade=True, limit=0)
    assert isinstance(d, Wait)
    assert (target_port(d.route), d.ws, d.trusted, d.rewrite) == (3, True, False, None)
    d = run("/x?callback=cb", [("Host", "aco.com")], limit=0)
    assert isinstance(d, Wait) and d.rewrite is not None


def test_own_answers_do_not_wait() -> None:
    """The limit only holds back sessions: errors and the notice are answered at once."""
    assert isinstance(run("/", [("Host", "x")], limit=0), Respond)
    assert isinstance(run("/", [("Host", "a.com"), ("Pushpin-Check", "")], limit=0), Respond)


def test_decisions_are_values() -> None:
    # Plain slotted dataclasses with explicit constructors (compiled by mypyc in the compiled
    # build): every field is set, and two decisions with the same fields are equal.
    d = begin(run("/"))
    same = Begin(d.route, d.trusted, d.ws)
    assert same == d and dataclasses.astuple(same) == dataclasses.astuple(d)
    assert Begin(d.route, d.trusted, not d.ws) != d
    r = Respond(HttpResponse(404), aco=False)
    assert (r.response.code, r.aco, r.rewrite) == (404, False, None)

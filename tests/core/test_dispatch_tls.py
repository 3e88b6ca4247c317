"""The transport's TLS flag in route selection (F3 ``https_ports``, F7 ``ssl=``, F4
``accept_x_forwarded_protocol``)."""

from __future__ import annotations

from gripd.core.dispatch import Begin, DispatchSettings, dispatch, find_route
from gripd.core.forward import ForwardSettings
from gripd.core.routes import RouteTable

ROUTES = "a.com,ssl=yes h:1\na.com,ssl=no h:2\nb.com,ssl=yes h:3\n"


def table() -> RouteTable:
    t, warnings = RouteTable.parse(ROUTES)
    assert not warnings
    return t


def fwd(accept: bool = False) -> ForwardSettings:
    return ForwardSettings(
        sig_iss="pushpin",
        sig_key=None,
        upstream_key=None,
        accept_x_forwarded_protocol=accept,
        set_x_forwarded_protocol="proto-only",
        x_forwarded_for=(),
        x_forwarded_for_trusted=(),
        orig_headers_need_mark=(),
    )


def target(host: str, tls: bool, headers: list[tuple[str, str]] | None = None, **kw: bool) -> str:
    h = [("Host", host), *(headers or [])]
    d = dispatch(
        "GET",
        "/",
        h,
        False,
        table(),
        DispatchSettings(fwd(**kw)),
        open_requests=0,
        now=0.0,
        tls=tls,
    )
    if not isinstance(d, Begin):
        return "none"
    return d.route.targets[0].host + ":" + str(d.route.targets[0].port)


def test_ssl_condition_follows_the_listener() -> None:
    assert target("a.com", tls=True) == "h:1"
    assert target("a.com", tls=False) == "h:2"
    assert target("b.com", tls=False) == "none"
    assert target("b.com", tls=True) == "h:3"


def test_forwarded_proto_never_downgrades_tls() -> None:
    xfp = [("X-Forwarded-Proto", "http")]
    assert target("a.com", tls=True, headers=xfp, accept=True) == "h:1"
    assert (
        target("a.com", tls=False, headers=[("X-Forwarded-Proto", "https")], accept=True) == "h:1"
    )
    # without accept_x_forwarded_protocol the header is not believed
    assert target("a.com", tls=False, headers=[("X-Forwarded-Proto", "https")]) == "h:2"


def test_find_route_default_is_plain() -> None:
    r = find_route("a.com", "/", [], False, table(), fwd())
    assert r is not None and r.targets[0].port == 2
    r = find_route("a.com", "/", [], False, table(), fwd(), tls=True)
    assert r is not None and r.targets[0].port == 1

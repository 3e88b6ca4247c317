"""The one-pass origin request headers (F12-F16, F4, F9) give exactly what the step-by-step
implementation gave.

``origin_request_headers`` walks the client's headers once (lower-casing each name once) and
``origin_host_header`` splits only the winning authority, with a fast path for plain ports; this
module keeps a copy of the earlier implementation (route ``header=`` options, F14 marks, hop-by-hop
and Grip-* filters, then one ``remove`` per appended header, each a full pass) as the reference
and compares outputs (names as written, values, order) on generated inputs: duplicated and
mixed-case names (also non-ASCII ones whose lower case differs in length), the special names
with and without the ``eb9bf0f5-`` mark, values with commas, quotes and spaces, trusted,
untrusted and internal requests, WebSocket and HTTP, TLS with every
``set_x_forwarded_protocol`` mode, X-Forwarded-For rules, Grip-Last ids, tokens and routes with
``header=``, ``as_host``, ``orig_headers`` and ``no_grip``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gripd.core.forward import (
    _DROP_HTTP,
    _DROP_WS,
    GRIP_FEATURE,
    ORIG_MARK,
    ClientRequestInfo,
    ForwardSettings,
    RouteLike,
    TargetLike,
    _split_authority,
    logical_client_address,
    origin_host_header,
    origin_request_headers,
)
from gripd.core.headers import Headers, get, remove, split_unquoted
from tests.core.test_forward import FakeRoute, FakeTarget

# --- Reference: the implementation before the one-pass rewrite (helpers that did not change
# are called, not copied) -------------------------------------------------------------------


def ref_apply_route_headers(route: RouteLike, headers: Headers) -> Headers:
    out = headers
    for name, value in reversed(route.headers):
        out = remove(out, name)
        if value:
            out = [*out, (name, value)]
    return out


def ref_xff_values(headers: Headers) -> list[str]:
    out: list[str] = []
    for k, v in headers:
        if k.lower() == "x-forwarded-for" and v:
            parts = split_unquoted(v, ",")
            if parts[-1] == "":
                parts.pop()
            out.extend(p.strip() for p in parts)
    return out


def ref_logical_client_address(
    headers: Headers, peer_ip: str, settings: ForwardSettings, trusted: bool
) -> str:
    rule = settings.xff_trusted_rule if trusted else settings.xff_rule
    if rule.truncate != 0:
        values = ref_xff_values(headers)
        if values:
            try:
                return str(ipaddress.ip_address(values[0]))
            except ValueError:
                pass
    return peer_ip


def ref_origin_host_header(client_authority: str, route: RouteLike, target: TargetLike) -> str:
    host, port = _split_authority(client_authority)
    if route.as_host:
        host, port = _split_authority(route.as_host)
    if target.host_header:
        host, port = _split_authority(target.host_header)
    host = host.lower()
    return host if port is None else f"{host}:{port}"


def _ref_orig_headers(headers: Headers, need_mark: frozenset[str]) -> Headers:
    kept: Headers = []
    marked: Headers = []
    for k, v in headers:
        if k[:9].lower() == "eb9bf0f5-":
            marked.append((k, v))
        else:
            kept.append((k, v))
            if k.lower() not in need_mark:
                marked.append((ORIG_MARK + k, v))
    return kept + marked


def ref_origin_request_headers(
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
    headers = ref_apply_route_headers(route, list(req.headers))
    grip = not route.no_grip

    if route.orig_headers and not trusted:
        headers = _ref_orig_headers(headers, settings.need_mark_set)
    elif not route.orig_headers:
        headers = [(k, v) for k, v in headers if k[:9].lower() != "eb9bf0f5-"]

    drop = _DROP_WS if req.ws else _DROP_HTTP
    if settings.accept_pushpin_route:
        drop = drop | {"pushpin-route"}
    strip_grip = not trusted and not internal
    headers = [
        (k, v)
        for k, v in headers
        if k.lower() not in drop and not (strip_grip and k[:5].lower() == "grip-")
    ]

    if not trusted and grip:
        if token:
            headers = remove(headers, "Grip-Sig")
            headers.append(("Grip-Sig", token))
        headers = remove(headers, "Grip-Feature")
        headers.append(("Grip-Feature", GRIP_FEATURE))
        for channel, last_id in last_ids:
            headers.append(("Grip-Last", f"{channel}; last-id={last_id}"))

    if settings.accept_x_forwarded_protocol or settings.set_proto or settings.set_protocol:
        headers = remove(headers, "X-Forwarded-Proto", "X-Forwarded-Protocol")
    if req.tls and (settings.set_proto or settings.set_protocol):
        scheme = "wss" if req.ws else "https"
        if settings.set_proto:
            headers.append(("X-Forwarded-Proto", scheme))
        if settings.set_protocol:
            headers.append(("X-Forwarded-Protocol", scheme))

    rule = settings.xff_trusted_rule if trusted else settings.xff_rule
    xff = ref_xff_values(headers)
    headers = remove(headers, "X-Forwarded-For")
    if rule.truncate >= 0:
        xff = xff[max(len(xff) - rule.truncate, 0) :]
    if rule.append and req.peer_ip:
        xff.append(req.peer_ip)
    if xff:
        headers.append(("X-Forwarded-For", ", ".join(xff)))

    if req.ws:
        headers = remove(headers, "Sec-WebSocket-Extensions")
        if grip:
            headers.append(("Sec-WebSocket-Extensions", "grip"))

    authority = host_header or get(req.headers, "Host") or "localhost"
    headers.insert(0, ("Host", ref_origin_host_header(authority, route, target)))
    return headers


# --- Generated inputs ---------------------------------------------------------------------------


SPECIAL_NAMES = (
    "Host",
    "Connection",
    "Keep-Alive",
    "Accept-Encoding",
    "Content-Encoding",
    "Transfer-Encoding",
    "Expect",
    "Content-Length",
    "Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Pushpin-Route",
    "Grip-Sig",
    "Grip-Feature",
    "Grip-Last",
    "Grip-Channel",
    "Grip-",
    "Grip",
    "X-Forwarded-Proto",
    "X-Forwarded-Protocol",
    "X-Forwarded-For",
    "Accept",
    "User-Agent",
    "X-Custom",
    "eb9bf0f5-",
    "eb9bf0f5",
    "eb9bf0f5-Host",
    "eb9bf0f5-X-Forwarded-For",
    "eb9bf0f5-Grip-Sig",
    # Non-ASCII: lower() changes the length (U+0130) or maps to ASCII (Kelvin sign) or depends
    # on context (final sigma); the fused code lower-cases whole names, the reference prefixes.
    "Grİp-Sig",
    "\u0130",
    "\u212aeep-Alive",
    "X-\u03a3",
    "eb9bf0f5-\u0130",
    "Stra\u00dfe",
)


def _recase(name: str, bits: int) -> str:
    return "".join(c.upper() if bits >> (i % 30) & 1 else c.lower() for i, c in enumerate(name))


names = st.one_of(
    st.builds(_recase, st.sampled_from(SPECIAL_NAMES), st.integers(0, 2**30 - 1)),
    st.sampled_from(SPECIAL_NAMES),
    st.text(alphabet="aAbB-eE9fF05gGrRiIpP\u0130\u212a", min_size=0, max_size=12),
)
values = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            ",",
            "a,",
            ",a",
            "1.2.3.4",
            " 10.0.0.1 , 10.0.0.2,",
            '"a,b", c',
            '"unterminated, x',
            '\\"x\\", y',
            "203.0.113.7, 198.51.100.2",
            "example.com:8080",
            "::1",
            "https",
            "wss",
        ]
    ),
    st.text(alphabet=' ,"\\\t;=a1.:-\u00e9', max_size=16),
)
# The second kind repeats a few names often (first Host wins, every X-Forwarded-For counts).
FEW_NAMES = ("Host", "host", "HOST", "X-Forwarded-For", "x-forwarded-for", "Grip-Sig", "eb9bf0f5-a")
header_lists = st.one_of(
    st.lists(st.tuples(names, values), max_size=14),
    st.lists(st.tuples(st.sampled_from(FEW_NAMES), values), min_size=2, max_size=6),
)
authorities = st.one_of(
    st.sampled_from(
        [
            "",
            "Example.COM",
            "example.com:8080",
            "Example.com:080",
            "h:0",
            "h:00",
            "h:",
            "h:x",
            "h: 8",
            "h:+8",
            "h:-8",
            "h:8 ",
            "h:\u0663",
            "h:\u00b2",
            "h:123456789",
            "h:1234567890123",
            "[::1]",
            "[::1]:8080",
            "[::1]:08",
            "[::1]x",
            "[bad",
            "[bad:80",
            "a:b:c",
            "\u0130:80",
            "\u03a3\u03a3:8",
            "\u212a",
        ]
    ),
    st.text(alphabet="aZ0189:[]. +-\u0663\u0130", max_size=12),
)
opt_authorities = st.one_of(st.none(), authorities)
xff_items = st.lists(
    st.sampled_from(
        [
            "truncate:-1",
            "truncate:0",
            "truncate:1",
            "truncate:2",
            "truncate:x",
            "append",
            " append ",
        ]
    ),
    max_size=3,
).map(tuple)
forward_settings = st.builds(
    ForwardSettings,
    sig_iss=st.just("pushpin"),
    sig_key=st.none(),
    upstream_key=st.none(),
    accept_x_forwarded_protocol=st.booleans(),
    set_x_forwarded_protocol=st.sampled_from(["true", "proto-only", "false", ""]),
    x_forwarded_for=xff_items,
    x_forwarded_for_trusted=xff_items,
    orig_headers_need_mark=st.lists(names, max_size=3).map(tuple),
    accept_pushpin_route=st.booleans(),
)
routes = st.builds(
    FakeRoute,
    as_host=opt_authorities,
    headers=st.lists(st.tuples(names, st.sampled_from(["", "v", "a, b"])), max_size=3).map(tuple),
    no_grip=st.booleans(),
    orig_headers=st.booleans(),
)
targets = st.builds(FakeTarget, host_header=opt_authorities)
requests = st.builds(
    ClientRequestInfo,
    method=st.just("GET"),
    path=st.just("/"),
    headers=header_lists,
    peer_ip=st.sampled_from(["", "127.0.0.1", "::1"]),
    tls=st.booleans(),
    ws=st.booleans(),
)
last_id_lists = st.lists(
    st.tuples(st.sampled_from(["a", "b c"]), st.sampled_from(["1", ""])), max_size=2
)


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    # Both must fail the same way too (int() refuses ports of over 4300 digits).
    try:
        return ("ok", call())
    except ValueError as e:
        return ("error", type(e).__name__)


@settings(max_examples=3000, deadline=None)
@given(
    req=requests,
    route=routes,
    target=targets,
    fs=forward_settings,
    token=st.sampled_from([None, "", "TOKEN"]),
    trusted=st.booleans(),
    internal=st.booleans(),
    host_header=st.one_of(st.none(), authorities),
    last_ids=last_id_lists,
)
@example(
    req=ClientRequestInfo("GET", "/", [("host", "A:80"), ("Grip-Sig", "x")], "1.2.3.4", True),
    route=FakeRoute(orig_headers=True, headers=(("Host", "r"), ("X-Forwarded-For", "9.9.9.9"))),
    target=FakeTarget(),
    fs=ForwardSettings("i", None, None, True, "true", ("append",), (), ("accept",), True),
    token="T",
    trusted=False,
    internal=True,
    host_header=None,
    last_ids=[("c", "1")],
)
def test_origin_request_headers_matches_reference(
    req: ClientRequestInfo,
    route: FakeRoute,
    target: FakeTarget,
    fs: ForwardSettings,
    token: str | None,
    trusted: bool,
    internal: bool,
    host_header: str | None,
    last_ids: list[tuple[str, str]],
) -> None:
    """F12-F16: identical header list (names as written, values, order) for every input."""
    before = list(req.headers)

    def run(fn: Callable[..., Headers]) -> tuple[str, object]:
        return _outcome(
            lambda: fn(
                req,
                route,
                target,
                fs,
                token=token,
                trusted=trusted,
                internal=internal,
                host_header=host_header,
                last_ids=last_ids,
            )
        )

    want, got = run(ref_origin_request_headers), run(origin_request_headers)
    assert got == want
    assert req.headers == before  # the client's list is not modified


@settings(max_examples=2000, deadline=None)
@given(client=authorities, as_host=opt_authorities, host_header=opt_authorities)
@example(client="h:" + "1" * 5000, as_host=None, host_header=None)
@example(client="h:1", as_host=None, host_header="[::1]:" + "2" * 5000)
def test_origin_host_header_matches_reference(
    client: str, as_host: str | None, host_header: str | None
) -> None:
    """F12: the Host sent to the origin, also for odd ports (signs, spaces, zeros, non-ASCII)."""
    route, target = FakeRoute(as_host=as_host), FakeTarget(host_header=host_header)
    want = _outcome(lambda: ref_origin_host_header(client, route, target))
    got = _outcome(lambda: origin_host_header(client, route, target))
    assert got == want


@settings(max_examples=1000, deadline=None)
@given(headers=header_lists, fs=forward_settings, trusted=st.booleans())
def test_logical_client_address_matches_reference(
    headers: Headers, fs: ForwardSettings, trusted: bool
) -> None:
    """F16: the X-Forwarded-For split (quoted or not) is unchanged."""
    want = ref_logical_client_address(headers, "10.9.8.7", fs, trusted)
    assert logical_client_address(headers, "10.9.8.7", fs, trusted) == want


def test_reference_is_exercised() -> None:
    """The reference above is the earlier behaviour: spot-check a known request (F12, F13, F16)."""
    fs = ForwardSettings("i", None, None, False, "proto-only", ("append",), (), ())
    req = ClientRequestInfo(
        "GET",
        "/",
        [("Host", "Ex.com:80"), ("X-Forwarded-For", "1.1.1.1"), ("Connection", "x")],
        "2.2.2.2",
        True,
    )
    want = [
        ("Host", "ex.com:80"),
        ("Grip-Sig", "T"),
        ("Grip-Feature", GRIP_FEATURE),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
    ]
    args = (req, FakeRoute(), FakeTarget(), fs)
    assert ref_origin_request_headers(*args, token="T", trusted=False) == want
    assert origin_request_headers(*args, token="T", trusted=False) == want

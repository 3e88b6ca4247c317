"""Request forwarding rules (F12-F16, F4, F9).

The ``test_pushpin_*`` cases replay requests sent through a running Pushpin 1.36 (Debian
package, loopback, an origin echoing the request head) and compare with what the origin got,
minus what zurl itself adds (``Accept: */*`` when absent, its ``Accept-Encoding``, and
``Content-Length``/WebSocket handshake headers at the end).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.forward import (
    GRIP_FEATURE,
    ClientRequestInfo,
    ForwardSettings,
    XffRule,
    client_is_tls,
    is_trusted_client,
    logical_client_address,
    origin_host_header,
    origin_request_headers,
    parse_xff_rule,
    signing_for_route,
)
from gripd.core.headers import Headers
from gripd.core.sig import SigningKey, TokenCache

NOW = 1_795_880_000
UPKEY = SigningKey("HS256", secret=b"upkey")
TOK = "SIG"


@dataclass(frozen=True)
class FakeRoute:
    as_host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    no_grip: bool = False
    orig_headers: bool = False
    sig_iss: str | None = None
    sig_key: str | None = None


@dataclass(frozen=True)
class FakeTarget:
    host_header: str | None = None


def settings(**kw: object) -> ForwardSettings:
    base: dict[str, object] = {
        "sig_iss": "pushpin",
        "sig_key": SigningKey("HS256", secret=b"changeme"),
        "upstream_key": UPKEY,
        "accept_x_forwarded_protocol": False,
        "set_x_forwarded_protocol": "proto-only",
        "x_forwarded_for": (),
        "x_forwarded_for_trusted": (),
        "orig_headers_need_mark": (),
    }
    base.update(kw)
    return ForwardSettings(**base)  # type: ignore[arg-type]


def request(headers: Headers, *, tls: bool = False, ws: bool = False) -> ClientRequestInfo:
    return ClientRequestInfo("GET", "/p", headers, "127.0.0.1", tls, ws)


def upstream_token(exp: int) -> str:
    return TokenCache().token("up", UPKEY, exp - 3600)


def forward(
    headers: Headers,
    s: ForwardSettings | None = None,
    route: FakeRoute | None = None,
    target: FakeTarget | None = None,
    *,
    tls: bool = False,
    ws: bool = False,
    trusted: bool = False,
    token: str | None = TOK,
    **kw: object,
) -> Headers:
    return origin_request_headers(
        request(headers, tls=tls, ws=ws),
        route or FakeRoute(),
        target or FakeTarget(),
        s or settings(),
        token=token,
        trusted=trusted,
        **kw,  # type: ignore[arg-type]
    )


GRIP_TAIL: Headers = [("Grip-Sig", TOK), ("Grip-Feature", GRIP_FEATURE)]


# -- live Pushpin 1.36 replays ----------------------------------------------------------------


def test_pushpin_hop_by_hop_grip_xff_truncate() -> None:
    s = settings(set_x_forwarded_protocol="true", x_forwarded_for=("truncate:1", "append"))
    got = forward(
        [
            ("Host", "A.Test"),
            ("User-Agent", "ua"),
            ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
            ("Grip-Foo", "x"),
            ("Accept-Encoding", "gzip"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("X-Forwarded-For", "3.3.3.3"),
            ("X-Forwarded-Proto", "https"),
            ("Keep-Alive", "5"),
            ("Content-Length", "0"),
            ("X-Last", "z"),
            ("Connection", "close"),
        ],
        s,
    )
    assert got == [
        ("Host", "a.test"),
        ("User-Agent", "ua"),
        ("X-Hop", "1"),  # Pushpin keeps headers named in Connection
        ("X-Last", "z"),
        *GRIP_TAIL,
        ("X-Forwarded-For", "3.3.3.3, 127.0.0.1"),
    ]


def test_pushpin_route_headers_and_as_host() -> None:
    # b.test,as_host=AsHost.example:81,header=X-Foo:bar,header=User-Agent:,header=Grip-Added:1
    route = FakeRoute(
        as_host="AsHost.example:81",
        headers=(("X-Foo", "bar"), ("User-Agent", ""), ("Grip-Added", "1")),
    )
    s = settings(x_forwarded_for=("truncate:1", "append"), orig_headers_need_mark=("X-Secret",))
    got = forward(
        [
            ("Host", "b.test"),
            ("User-Agent", "ua"),
            ("X-Foo", "client"),
            ("X-Secret", "s"),
            ("eb9bf0f5-X-Secret", "marked"),
            ("Grip-Foo", "x"),
            ("X-A", "1"),
            ("Connection", "close"),
        ],
        s,
        route,
    )
    assert got == [
        ("Host", "ashost.example:81"),
        ("X-Secret", "s"),
        ("X-A", "1"),
        ("X-Foo", "bar"),
        *GRIP_TAIL,
        ("X-Forwarded-For", "127.0.0.1"),
    ]


def test_pushpin_target_host_wins_over_as_host() -> None:
    route = FakeRoute(as_host="ashost.example")
    got = forward(
        [("Host", "c.test"), ("X-A", "1")], route=route, target=FakeTarget("TgtHost.example:99")
    )
    assert got[0] == ("Host", "tgthost.example:99")


def test_pushpin_orig_headers_no_grip() -> None:
    s = settings(x_forwarded_for=("truncate:1", "append"), orig_headers_need_mark=("X-Secret",))
    got = forward(
        [
            ("Host", "D.Test:8080"),
            ("User-Agent", "ua"),
            ("X-Foo", "client"),
            ("X-Secret", "s"),
            ("eb9bf0f5-X-Secret", "marked"),
            ("Grip-Foo", "x"),
            ("X-A", "1"),
            ("Connection", "close"),
        ],
        s,
        FakeRoute(orig_headers=True, no_grip=True),
    )
    assert got == [
        ("Host", "d.test:8080"),
        ("User-Agent", "ua"),
        ("X-Foo", "client"),
        ("X-Secret", "s"),
        ("X-A", "1"),
        ("eb9bf0f5-Host", "D.Test:8080"),
        ("eb9bf0f5-User-Agent", "ua"),
        ("eb9bf0f5-X-Foo", "client"),
        ("eb9bf0f5-X-Secret", "marked"),
        ("eb9bf0f5-Grip-Foo", "x"),
        ("eb9bf0f5-X-A", "1"),
        ("eb9bf0f5-Connection", "close"),  # copied before hop-by-hop removal
        ("X-Forwarded-For", "127.0.0.1"),
    ]


def test_pushpin_trusted_client() -> None:
    s = settings(set_x_forwarded_protocol="true", x_forwarded_for=("truncate:1", "append"))
    hdrs: Headers = [
        ("Host", "a.test:7999"),
        ("Grip-Sig", "T"),
        ("Grip-Foo", "x"),
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
        ("X-Forwarded-Proto", "https"),
        ("Connection", "close"),
    ]
    assert forward(hdrs, s, trusted=True) == [
        ("Host", "a.test:7999"),
        ("Grip-Sig", "T"),
        ("Grip-Foo", "x"),
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),  # trusted rule is empty: as is
    ]
    assert forward(hdrs, s) == [
        ("Host", "a.test:7999"),
        *GRIP_TAIL,
        ("X-Forwarded-For", "2.2.2.2, 127.0.0.1"),
    ]


def test_pushpin_trusted_orig_headers_keeps_marks() -> None:
    s = settings(
        accept_x_forwarded_protocol=True,
        set_x_forwarded_protocol="true",
        x_forwarded_for_trusted=("truncate:0", "append"),
    )
    hdrs: Headers = [
        ("Host", "d.test"),
        ("Grip-Sig", "T"),
        ("X-Forwarded-Proto", "https"),
        ("X-A", "1"),
        ("eb9bf0f5-X-A", "0"),
        ("X-Forwarded-For", "5.5.5.5"),
    ]
    tls = client_is_tls(hdrs, False, s)
    got = forward(hdrs, s, FakeRoute(orig_headers=True, no_grip=True), tls=tls, trusted=True)
    assert got == [
        ("Host", "d.test"),
        ("Grip-Sig", "T"),
        ("X-A", "1"),
        ("eb9bf0f5-X-A", "0"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Protocol", "https"),
        ("X-Forwarded-For", "127.0.0.1"),
    ]


def test_pushpin_route_host_header_is_overridden_and_first_option_wins() -> None:
    s = settings(accept_x_forwarded_protocol=True, set_x_forwarded_protocol="true")
    hdrs: Headers = [
        ("Host", "e.test"),
        ("X-Forwarded-Protocol", "wss"),
        ("X-Forwarded-For", "5.5.5.5,"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("Connection", "close"),
    ]
    route = FakeRoute(headers=(("Host", "evil.example"), ("X-Z", "1"), ("X-Z", "2")))
    got = forward(hdrs, s, route, tls=client_is_tls(hdrs, False, s))
    assert got == [
        ("Host", "e.test"),
        ("X-Z", "1"),
        *GRIP_TAIL,
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Protocol", "https"),
        ("X-Forwarded-For", "5.5.5.5, 6.6.6.6"),
    ]


def test_pushpin_no_host_is_localhost_and_framing_removed() -> None:
    got = forward([("X-B", "1"), ("Transfer-Encoding", "chunked"), ("Content-Length", "3")])
    assert got == [("Host", "localhost"), ("X-B", "1"), *GRIP_TAIL]
    got = forward([("X-B", "1")], host_header="Abs.Example:8000")
    assert got[0] == ("Host", "abs.example:8000")


def test_pushpin_passes_other_headers() -> None:
    hdrs: Headers = [
        ("Host", "a.test"),
        ("Accept", "text/html"),
        ("Upgrade", "h2c"),
        ("TE", "trailers"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-T"),
        ("Expect", "100-continue"),
        ("Content-Encoding", "gzip"),
    ]
    assert forward(hdrs) == [("Host", "a.test"), *hdrs[1:6], *GRIP_TAIL]


def test_pushpin_websocket() -> None:
    hdrs: Headers = [
        ("Host", "a.test"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Sec-WebSocket-Protocol", "chat"),
        ("Origin", "http://x"),
        ("X-B", "1"),
        ("Grip-Foo", "1"),
    ]
    s = settings(x_forwarded_for=("append",))
    assert forward(hdrs, s, ws=True) == [
        ("Host", "a.test"),
        ("Sec-WebSocket-Protocol", "chat"),
        ("Origin", "http://x"),
        ("X-B", "1"),
        *GRIP_TAIL,
        ("X-Forwarded-For", "127.0.0.1"),
        ("Sec-WebSocket-Extensions", "grip"),
    ]
    no_grip = forward(hdrs, s, FakeRoute(no_grip=True), ws=True, tls=True)
    assert no_grip == [
        ("Host", "a.test"),
        ("Sec-WebSocket-Protocol", "chat"),
        ("Origin", "http://x"),
        ("X-B", "1"),
        ("X-Forwarded-Proto", "wss"),
        ("X-Forwarded-For", "127.0.0.1"),
    ]


# -- individual rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "rule"),
    [
        ((), XffRule(-1, False)),
        (("append",), XffRule(-1, True)),
        (("truncate:0",), XffRule(0, False)),
        (("truncate:3", "append"), XffRule(3, True)),
        (("truncate:0", " append"), XffRule(0, True)),  # QSettings trims list items
        (("truncate:2", "truncate:5"), XffRule(5, False)),
        (("truncate:x", "append"), XffRule(-1, False)),  # bad int: stop parsing
        (("append", "truncate:x"), XffRule(-1, True)),
        (("Append", "truncate", "bogus"), XffRule(-1, False)),
        (("truncate:-2",), XffRule(-2, False)),
    ],
)
def test_parse_xff_rule(items: tuple[str, ...], rule: XffRule) -> None:
    assert parse_xff_rule(items) == rule


@pytest.mark.parametrize(
    ("rule", "trusted_rule", "trusted", "xff", "expected"),
    [
        ((), (), False, ["a, b", "c"], "a, b, c"),  # empty rule: values merged, nothing added
        ((), (), False, [], None),
        (("append",), (), False, [], "127.0.0.1"),
        (("append",), (), False, ["a"], "a, 127.0.0.1"),
        (("truncate:0",), (), False, ["a", "b"], None),
        (("truncate:0", "append"), (), False, ["a"], "127.0.0.1"),
        (("truncate:2",), (), False, ["a, b, c"], "b, c"),
        (("truncate:9",), (), False, ["a, b"], "a, b"),
        (("truncate:-1", "append"), (), False, ["a"], "a, 127.0.0.1"),
        (("truncate:0",), ("append",), True, ["a"], "a, 127.0.0.1"),
        (("append",), ("truncate:0",), True, ["a"], None),
        ((), (), False, ["a,", "", ",b", '"x,y", z'], 'a, , b, "x,y", z'),
    ],
)
def test_xff_rules(
    rule: tuple[str, ...],
    trusted_rule: tuple[str, ...],
    trusted: bool,
    xff: list[str],
    expected: str | None,
) -> None:
    s = settings(x_forwarded_for=rule, x_forwarded_for_trusted=trusted_rule)
    hdrs: Headers = [("Host", "h"), *(("X-Forwarded-For", v) for v in xff), ("X-Z", "1")]
    got = forward(hdrs, s, FakeRoute(no_grip=True), trusted=trusted)
    values = [v for k, v in got if k == "X-Forwarded-For"]
    assert values == ([] if expected is None else [expected])
    if expected is not None:
        assert got[-1] == ("X-Forwarded-For", expected)  # moved to the end


@pytest.mark.parametrize(
    ("mode", "accept", "tls", "ws", "expected"),
    [
        ("proto-only", False, True, False, [("X-Forwarded-Proto", "https")]),
        ("proto-only", False, False, False, []),
        (
            "true",
            False,
            True,
            False,
            [("X-Forwarded-Proto", "https"), ("X-Forwarded-Protocol", "https")],
        ),
        (
            "true",
            False,
            True,
            True,
            [("X-Forwarded-Proto", "wss"), ("X-Forwarded-Protocol", "wss")],
        ),
        ("", False, True, False, [("X-Forwarded-Proto", "spoof"), ("X-Forwarded-Protocol", "s")]),
        ("false", True, True, False, []),  # accept alone strips incoming headers
        (
            "yes",
            False,
            True,
            False,
            [("X-Forwarded-Proto", "spoof"), ("X-Forwarded-Protocol", "s")],
        ),
    ],
)
def test_x_forwarded_proto(mode: str, accept: bool, tls: bool, ws: bool, expected: Headers) -> None:
    s = settings(set_x_forwarded_protocol=mode, accept_x_forwarded_protocol=accept)
    hdrs: Headers = [("X-Forwarded-Proto", "spoof"), ("X-Forwarded-Protocol", "s"), ("X-A", "1")]
    got = forward(hdrs, s, FakeRoute(no_grip=True), tls=tls, ws=ws)
    assert [h for h in got if h[0].startswith("X-Forwarded-Proto")] == expected


@pytest.mark.parametrize(
    ("headers", "transport", "accept", "expected"),
    [
        ([("X-Forwarded-Proto", "https")], False, True, True),
        ([("X-Forwarded-Proto", "wss")], False, True, True),
        ([("X-Forwarded-Proto", "HTTPS")], False, True, False),
        ([("X-Forwarded-Proto", "http")], True, True, True),  # never downgrades
        ([("X-Forwarded-Proto", "https")], False, False, False),
        ([("X-Forwarded-Protocol", "https")], False, True, True),
        ([("X-Forwarded-Proto", ""), ("X-Forwarded-Protocol", "https")], False, True, True),
        ([("X-Forwarded-Proto", "http"), ("X-Forwarded-Protocol", "https")], False, True, False),
        ([], False, True, False),
    ],
)
def test_client_is_tls(headers: Headers, transport: bool, accept: bool, expected: bool) -> None:
    assert client_is_tls(headers, transport, settings(accept_x_forwarded_protocol=accept)) is (
        expected
    )


def test_grip_headers_stripped_unless_trusted_or_internal() -> None:
    hdrs: Headers = [
        ("Host", "h"),
        ("grip-sig", "old"),
        ("GRIP-Last", "c; last-id=1"),
        ("Grip-Feature", "x"),
        ("Gripper", "keep"),
    ]
    assert forward(hdrs) == [("Host", "h"), ("Gripper", "keep"), *GRIP_TAIL]
    assert forward(hdrs, trusted=True) == hdrs
    internal = forward(hdrs, internal=True, token=None)
    assert internal == [
        ("Host", "h"),
        ("grip-sig", "old"),
        ("GRIP-Last", "c; last-id=1"),
        ("Gripper", "keep"),
        ("Grip-Feature", GRIP_FEATURE),
    ]
    internal = forward(hdrs, internal=True)
    assert [k for k, _ in internal] == ["Host", "GRIP-Last", "Gripper", "Grip-Sig", "Grip-Feature"]


def test_grip_feature_without_sig_key_and_no_grip_routes() -> None:
    assert forward([("Host", "h")], token=None) == [("Host", "h"), ("Grip-Feature", GRIP_FEATURE)]
    assert forward([("Host", "h")], route=FakeRoute(no_grip=True)) == [("Host", "h")]
    assert forward([("Host", "h"), ("Grip-X", "1")], route=FakeRoute(no_grip=True)) == [
        ("Host", "h")
    ]


def test_grip_last_ids() -> None:
    got = forward([("Host", "h")], last_ids=[("a", "1"), ("b", "x")])
    assert got[-2:] == [("Grip-Last", "a; last-id=1"), ("Grip-Last", "b; last-id=x")]
    assert forward([("Host", "h")], trusted=True, last_ids=[("a", "1")]) == [("Host", "h")]


def test_eb9bf0f5_stripped_without_orig_headers() -> None:
    hdrs: Headers = [("Host", "h"), ("EB9BF0F5-Cookie", "x"), ("X", "1")]
    assert forward(hdrs, route=FakeRoute(no_grip=True)) == [("Host", "h"), ("X", "1")]
    assert forward(hdrs, route=FakeRoute(no_grip=True), trusted=True) == [("Host", "h"), ("X", "1")]


def test_orig_headers_need_mark_is_case_insensitive() -> None:
    s = settings(orig_headers_need_mark=(" cookie ",))
    got = forward([("Host", "h"), ("Cookie", "c")], s, FakeRoute(orig_headers=True, no_grip=True))
    assert got == [("Host", "h"), ("Cookie", "c"), ("eb9bf0f5-Host", "h")]


def test_pushpin_route_header_stripped_when_accepted() -> None:
    hdrs: Headers = [("Host", "h"), ("Pushpin-Route", "r1")]
    route = FakeRoute(no_grip=True)
    assert forward(hdrs, settings(accept_pushpin_route=True), route) == [("Host", "h")]
    assert forward(hdrs, settings(), route) == hdrs


@pytest.mark.parametrize(
    ("client", "as_host", "target_host", "expected"),
    [
        ("Example.COM", None, None, "example.com"),
        ("example.com:8080", None, None, "example.com:8080"),
        ("example.com:8080", "up.example", None, "up.example"),  # as_host drops the port
        ("example.com", "up.example:81", None, "up.example:81"),
        ("example.com", "up.example:81", "t.example", "t.example"),
        ("example.com", None, "t.example:9", "t.example:9"),
        ("example.com", "up:abc", None, "up:0"),  # Qt toInt failure
        ("[::1]:8080", None, None, "[::1]:8080"),
        ("[::1]", None, None, "[::1]"),
        ("h", "[FE80::1]:81", None, "[fe80::1]:81"),
    ],
)
def test_origin_host_header(
    client: str, as_host: str | None, target_host: str | None, expected: str
) -> None:
    assert origin_host_header(client, FakeRoute(as_host=as_host), FakeTarget(target_host)) == (
        expected
    )


# -- trust and logical address ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "upstream", "expected"),
    [
        ([("Grip-Sig", upstream_token(NOW + 10))], UPKEY, True),
        ([("grip-sig", upstream_token(NOW + 10))], UPKEY, True),
        ([("Grip-Sig", upstream_token(NOW))], UPKEY, False),  # expired
        ([("Grip-Sig", upstream_token(NOW + 10))], SigningKey("HS256", secret=b"x"), False),
        ([("Grip-Sig", upstream_token(NOW + 10))], None, False),
        ([("Grip-Sig", "")], UPKEY, False),
        ([], UPKEY, False),
        ([("Grip-Sig", "junk"), ("Grip-Sig", upstream_token(NOW + 10))], UPKEY, False),
    ],
)
def test_is_trusted_client(headers: Headers, upstream: SigningKey | None, expected: bool) -> None:
    assert is_trusted_client(headers, settings(upstream_key=upstream), NOW) is expected


@pytest.mark.parametrize(
    ("rule", "xff", "expected"),
    [
        ((), ["1.2.3.4, 5.6.7.8"], "1.2.3.4"),  # even with no rule, as Pushpin
        ((), [" 1.2.3.4 ,x", "9.9.9.9"], "1.2.3.4"),
        (("truncate:0", "append"), ["1.2.3.4"], "10.0.0.1"),
        (("truncate:1",), ["1.2.3.4"], "1.2.3.4"),
        ((), ["unknown, 1.2.3.4"], "10.0.0.1"),
        ((), [", 1.2.3.4"], "10.0.0.1"),
        ((), ["2001:DB8::0001"], "2001:db8::1"),
        ((), ["1.2.3.4:80"], "10.0.0.1"),
        ((), [""], "10.0.0.1"),
        ((), [], "10.0.0.1"),
    ],
)
def test_logical_client_address(rule: tuple[str, ...], xff: list[str], expected: str) -> None:
    hdrs: Headers = [("X-Forwarded-For", v) for v in xff]
    assert logical_client_address(hdrs, "10.0.0.1", settings(x_forwarded_for=rule), False) == (
        expected
    )


def test_logical_client_address_uses_trusted_rule() -> None:
    s = settings(x_forwarded_for=("truncate:0",), x_forwarded_for_trusted=())
    hdrs: Headers = [("X-Forwarded-For", "1.2.3.4")]
    assert logical_client_address(hdrs, "10.0.0.1", s, False) == "10.0.0.1"
    assert logical_client_address(hdrs, "10.0.0.1", s, True) == "1.2.3.4"


# -- signing choice ---------------------------------------------------------------------------


def test_signing_for_route() -> None:
    gkey = SigningKey("HS256", secret=b"global")
    rkey = SigningKey("HS256", secret=b"route")
    s = settings(sig_iss="g", sig_key=gkey)
    parsed: list[str] = []

    def parse(spec: str) -> SigningKey | None:
        parsed.append(spec)
        return None if spec == "nokey" else rkey

    cases: list[tuple[FakeRoute, tuple[str, SigningKey | None]]] = [
        (FakeRoute(sig_iss="r", sig_key="k"), ("r", rkey)),
        (FakeRoute(sig_iss="r"), ("g", gkey)),
        (FakeRoute(sig_key="k"), ("g", gkey)),
        (FakeRoute(sig_iss="", sig_key="k"), ("g", gkey)),
        (FakeRoute(sig_iss="r", sig_key="nokey"), ("g", gkey)),
    ]
    for route, expected in cases:
        assert signing_for_route(route, s, parse) == expected
    assert parsed == ["k", "nokey"]
    assert signing_for_route(FakeRoute(), replace(s, sig_key=None), parse) == ("g", None)


# -- properties -------------------------------------------------------------------------------

header_names = st.sampled_from(
    [
        "Host",
        "Connection",
        "keep-alive",
        "Accept-Encoding",
        "Content-Encoding",
        "Transfer-Encoding",
        "Expect",
        "Content-Length",
        "Grip-Sig",
        "grip-channel",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "eb9bf0f5-X",
        "Upgrade",
        "X-A",
        "Cookie",
    ]
)
header_lists = st.lists(st.tuples(header_names, st.text("abc ,.1", max_size=8)), max_size=12)


@given(hdrs=header_lists, trusted=st.booleans(), ws=st.booleans(), no_grip=st.booleans())
def test_forward_invariants(hdrs: Headers, trusted: bool, ws: bool, no_grip: bool) -> None:
    s = settings(x_forwarded_for=("append",))
    got = forward(hdrs, s, FakeRoute(no_grip=no_grip), ws=ws, trusted=trusted)
    names = [k.lower() for k, _ in got]
    assert names[0] == "host" and names.count("host") == 1
    for banned in (
        "connection",
        "keep-alive",
        "accept-encoding",
        "content-encoding",
        "transfer-encoding",
        "expect",
        "content-length",
        "eb9bf0f5-x",
    ):
        assert banned not in names
    assert names.count("x-forwarded-for") <= 1
    if not trusted:
        grip = [k for k, v in got if k.lower().startswith("grip-")]
        assert grip == ([] if no_grip else ["Grip-Sig", "Grip-Feature"])
        assert ("x-forwarded-for" in names) is True
    assert ("upgrade" in names) is (not ws and any(k == "Upgrade" for k, _ in hdrs))


def test_input_headers_not_mutated() -> None:
    hdrs: Headers = [("Host", "h"), ("Connection", "close"), ("X-Forwarded-For", "a")]
    before = list(hdrs)
    forward(hdrs, settings(x_forwarded_for=("append",)), FakeRoute(headers=(("X", "1"),)))
    assert hdrs == before

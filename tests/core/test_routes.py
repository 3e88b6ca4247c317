"""Routes file (F6-F11): tokenizer, options, warnings, F7 lookup, ids, path rewriting (F9, F50)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core import routes as rt
from gripd.core.routes import (
    DEFAULT_ROUTES,
    Route,
    RouteSyntaxError,
    RouteTable,
    Target,
    apply_route_headers,
    parse_line,
    rewrite_path,
)


def one(line: str) -> Route:
    table, warnings = RouteTable.parse(line + "\n")
    assert len(table) == 1, warnings
    return table.routes[0]


def warns(text: str) -> list[str]:
    return [str(w) for w in RouteTable.parse(text, "r")[1]]


# --- tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", []),
        ("   # only a comment", []),
        ("* test", [("*", []), ("test", [])]),
        ("  a.com   h:80  ", [("a.com", []), ("h:80", [])]),
        ("*,debug,id=x h:1", [("*", [("debug", "", False), ("id", "x", True)]), ("h:1", [])]),
        (",id=x test", [("", [("id", "x", True)]), ("test", [])]),
        ("id=x test", [("", [("id", "x", True)]), ("test", [])]),
        ("id=x,debug test", [("", [("id", "x", True), ("debug", "", False)]), ("test", [])]),
        ("* test # trailing comment", [("*", []), ("test", [])]),
        ("* test#comment", [("*", []), ("test", [])]),
        ("*,id=a#b test", [("*", [("id", "a", True)])]),  # '#' ends the line mid-token
        ('*,header="X: a b" test', [("*", [("header", "X: a b", True)]), ("test", [])]),
        ('*,prefix="a\\"b\\\\c" test', [("*", [("prefix", 'a"b\\c', True)]), ("test", [])]),
        ('*,prefix=x"y,z"w test', [("*", [("prefix", "xy,zw", True)]), ("test", [])]),
        ('*,prefix="#" test', [("*", [("prefix", "#", True)]), ("test", [])]),
        ('"a=b" test', [("", [("a", "b", True)]), ("test", [])]),  # decoded '=' → prop
        ("*\ttest", [("*\ttest", [])]),  # only spaces separate
        ("*,id=a=b h:1", [("*", [("id", "a=b", True)]), ("h:1", [])]),
    ],
)
def test_parse_line(line: str, expected: list[tuple[str, list[tuple[str, str, bool]]]]) -> None:
    assert [(s.value, s.props) for s in parse_line(line)] == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("*, test", "expecting prop"),
        ("*, ", "expecting prop"),
        ("*,", "expecting prop"),
        ("*,,x test", "expecting prop"),
        ("*,=x test", "empty prop name"),
        ("=x test", "empty prop name"),
        ('*,prefix="abc test', "unterminated quoted string"),
        ('*,prefix="a\\nb" test', "invalid escape in quoted string"),
        ('*,prefix="a\\', "invalid escape in quoted string"),
    ],
)
def test_parse_line_errors(line: str, message: str) -> None:
    with pytest.raises(RouteSyntaxError) as ei:
        parse_line(line)
    assert ei.value.message == message


@given(st.text(alphabet=st.characters(blacklist_characters='\n\r"\\'), max_size=20))
def test_quoted_value_roundtrip(value: str) -> None:
    sections = parse_line(f'*,prefix="{value}" test')
    assert sections[0].props == [("prefix", value, True)]


@given(st.text(max_size=40))
def test_parse_line_never_crashes(line: str) -> None:
    try:
        parse_line(line)
    except RouteSyntaxError:
        pass


# --- conditions and options -------------------------------------------------------------------


def test_shipped_routes() -> None:
    table, warnings = RouteTable.parse(DEFAULT_ROUTES)
    assert warnings == []
    r = table.lookup("anything", "/", ws=False, ssl=False)
    assert r is not None and r.targets == (Target("test"),) and r.id == "*,*,*,*"


def test_all_condition_options() -> None:
    r = one(
        "Example.COM,proto=ws,ssl=yes,id=main,path_beg=/api/,sig_iss=iss,sig_key=base64:a2V5,"
        "prefix=p-,orig_headers,as_host=origin:8080,path_rem=3,replace_beg=/v2/,"
        'header=X-A:1,"header=X-B: two",header=X-C:,debug,aco,session,no_grip,'
        "jsonp_mode=basic,jsonp_cb=cb,jsonp_body=b,jsonp_defcb=f,"
        "sockjs=/sock,sockjs_as_path=/ws h:80"
    )
    assert r.domain == "example.com"
    assert (r.proto, r.ssl, r.path_beg) == ("ws", True, "/api/")
    assert (r.id, r.explicit_id) == ("main", True)
    assert (r.sig_iss, r.sig_key) == ("iss", "base64:a2V5")
    assert r.prefix == "p-" and r.orig_headers and r.as_host == "origin:8080"
    assert (r.path_rem, r.replace_beg) == (3, "/v2/")
    assert r.headers == (("X-A", "1"), ("X-B", "two"), ("X-C", ""))
    assert r.debug and r.aco and r.session and r.no_grip
    assert (r.jsonp_mode, r.jsonp_cb, r.jsonp_body, r.jsonp_defcb) == ("basic", "cb", "b", "f")
    assert r.jsonp_defmethod == "POST"  # basic-mode default
    assert (r.sockjs, r.sockjs_as_path) == ("/sock", "/ws")
    assert (r.filename, r.line) == ("routes", 1)


def test_condition_defaults() -> None:
    r = one("* h:80")
    assert (r.domain, r.proto, r.ssl, r.path_beg) == ("*", None, None, None)
    assert (r.explicit_id, r.prefix, r.path_rem, r.replace_beg, r.as_host) == (
        False,
        "",
        0,
        None,
        None,
    )
    assert not (r.debug or r.aco or r.session or r.no_grip or r.orig_headers)
    assert (r.sig_iss, r.sig_key, r.sockjs, r.sockjs_as_path) == (None, None, None, None)
    assert (r.jsonp_mode, r.jsonp_cb, r.jsonp_body, r.jsonp_defcb, r.jsonp_defmethod) == (
        "extended",
        "callback",
        None,
        None,
        "GET",
    )


def test_last_value_wins_and_explicit_defmethod() -> None:
    r = one("*,prefix=a,prefix=b,proto=ws,proto=http,jsonp_defmethod=PUT h:80")
    assert (r.prefix, r.proto, r.jsonp_defmethod) == ("b", "http", "PUT")


def test_flags_set_by_presence_with_warning() -> None:
    table, warnings = RouteTable.parse("*,debug=false h:80,ssl=no\n", "r")
    r = table.routes[0]
    assert r.debug is True and r.targets[0].ssl is True  # as Pushpin: presence sets the flag
    assert [str(w) for w in warnings] == [
        "r:1: route option debug takes no value; set anyway (got 'false')",
        "r:1: target option ssl takes no value; set anyway (got 'no')",
    ]


def test_unknown_options_warn_but_keep_route() -> None:
    table, warnings = RouteTable.parse("*,log_level=3 h:80,weight=2\n", "r")
    assert len(table) == 1
    assert [str(w) for w in warnings] == [
        "r:1: unknown route option 'log_level' ignored",
        "r:1: unknown target option 'weight' ignored",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*\n", ["r:1: must specify condition and at least one target"]),
        ("\n\n*,proto=tcp h:1\n", ["r:3: proto must be set to 'http' or 'ws'"]),
        ("*,ssl=true h:1\n", ["r:1: ssl must be set to 'yes' or 'no'"]),
        ("*,path_beg= h:1\n", ["r:1: path_beg cannot be empty"]),
        ("*,jsonp_mode=x h:1\n", ["r:1: jsonp_mode must be set to 'basic' or 'extended'"]),
        ("*,header=NoColon h:1\n", ["r:1: header must use format 'name:value'"]),
        ("*,header=:v h:1\n", ["r:1: header must use format 'name:value'"]),
        ("* host\n", ["r:1: target bad format"]),
        ("* h:0\n", ["r:1: target invalid port"]),
        ("* h:65536\n", ["r:1: target invalid port"]),
        ("* h:8x\n", ["r:1: target invalid port"]),
        # past Python's 4300-digit int() limit: a warning, not a ValueError (fuzzing find)
        ("* h:" + "9" * 5000 + "\n", ["r:1: target invalid port"]),
        ("* h:\u00b2\n", ["r:1: target invalid port"]),  # str.isdigit() but not int()-able
        ("* h:80 bad\n", ["r:1: target bad format"]),
        ("*,header=X:  a b h:1\n", ["r:1: target bad format"]),  # unquoted space splits
        ("*, h:1\n", ["r:1: expecting prop"]),
        ('*,prefix="x h:1\n', ["r:1: unterminated quoted string"]),
        ("*,debug test\n", []),
        ("*,history_size=x h:1\n", ["r:1: history_size must be a number from 0 to 1000000"]),
        ("*,history_ttl=-5 h:1\n", ["r:1: history_ttl must be a number from 0 to 1000000"]),
        ("*,history_size=1000001 h:1\n", ["r:1: history_size must be a number from 0 to 1000000"]),
        ("*,history_size=10,history_ttl=60 test\n", []),
        ("*,path_rem=x test\n", ["r:1: path_rem is not a number, ignored (got 'x')"]),
        (
            "*,path_rem=" + "1" * 5000 + " test\n",
            [f"r:1: path_rem is not a number, ignored (got {'1' * 5000!r})"],
        ),
    ],
)
def test_warnings(text: str, expected: list[str]) -> None:
    assert warns(text) == expected


def test_bad_lines_skipped_rest_kept() -> None:
    table, warnings = RouteTable.parse("a.com h:1\n*,proto=x h:2\n\n# c\nb.com h:3\n", "f")
    assert [r.domain for r in table.routes] == ["a.com", "b.com"]
    assert [(w.filename, w.line) for w in warnings] == [("f", 2)]


def test_crlf_lines() -> None:
    table, warnings = RouteTable.parse("a.com h:1\r\nb.com h:2\r\n")
    assert warnings == [] and [r.targets[0].port for r in table.routes] == [1, 2]


# --- targets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected", "label"),
    [
        ("test", Target("test"), "test"),
        ("127.0.0.1:8000", Target("host", host="127.0.0.1", port=8000), "127.0.0.1:8000"),
        ("[::1]:8000", Target("host", host="::1", port=8000), "[::1]:8000"),
        ("zhttp/tcp://h:9", Target("zhttp", spec="tcp://h:9"), "zhttp/tcp://h:9"),
        ("zhttpreq/ipc://x", Target("zhttpreq", spec="ipc://x"), "zhttpreq/ipc://x"),
        (
            "h:443,ssl,untrusted,trust_connect_host,insecure,host=api.example,over_http,one_event",
            Target(
                "host",
                host="h",
                port=443,
                ssl=True,
                untrusted=True,
                trust_connect_host=True,
                insecure=True,
                host_header="api.example",
                over_http=True,
                one_event=True,
            ),
            "h:443",
        ),
        ("h:1,sub=a,sub=,sub=b", Target("host", host="h", port=1, subs=("a", "b")), "h:1"),
        ("h:1,host=,ipc_file_mode=777", Target("host", host="h", port=1), "h:1"),
    ],
)
def test_targets(spec: str, expected: Target, label: str) -> None:
    t = one(f"* {spec}").targets[0]
    assert t == expected
    assert t.label() == label


def test_multiple_targets_in_order() -> None:
    r = one("* a:1 b:2,ssl test")
    assert [t.label() for t in r.targets] == ["a:1", "b:2", "test"]
    assert r.targets[1].ssl


# --- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "route_id"),
    [
        ("* h:1", "*,*,*,*"),
        ("a.com h:1", "a.com,*,*,*"),
        ("a.com,proto=ws h:1", "a.com,ws,*,*"),
        ("a.com,proto=http,path_beg=/x h:1", "a.com,http,*,/x"),
        # Pushpin's idFromCondition swaps the words: ssl=no → "ssl", ssl=yes → "no-ssl"
        ("*,ssl=no h:1", "*,*,ssl,*"),
        ("*,ssl=yes h:1", "*,*,no-ssl,*"),
        ("*,id=mine h:1", "mine"),
    ],
)
def test_ids(line: str, route_id: str) -> None:
    table, _ = RouteTable.parse(line)
    r = table.routes[0]
    assert r.id == route_id
    assert table.lookup_by_id(route_id) is r


def test_id_only_route() -> None:
    table, warnings = RouteTable.parse("id=hidden h:1\n")
    assert warnings == [] and len(table) == 1
    assert table.lookup("x", "/", ws=False, ssl=False) is None
    hidden = table.lookup_by_id("hidden")
    assert hidden is not None and hidden.domain == ""


def test_no_domain_no_id() -> None:
    assert warns(",debug h:1\n") == ["r:1: condition has no domain or id"]


def test_duplicate_ids_make_id_unusable() -> None:
    text = "a.com,id=x h:1\nb.com,id=x h:2\nc.com,id=x h:3\nd.com,id=y h:4\n"
    table, warnings = RouteTable.parse(text, "r")
    assert len(table) == 4  # routes stay reachable by host
    assert table.lookup_by_id("x") is None
    assert table.is_id_shared("x") and not table.is_id_shared("y")
    assert not table.is_id_shared("unknown") and table.lookup_by_id("unknown") is None
    assert table.lookup("b.com", "/", ws=False, ssl=False) is not None
    assert [str(w) for w in warnings] == [
        "r:2: duplicate id 'x'; id unusable",
        "r:3: duplicate id 'x'; id unusable",
    ]


def test_duplicate_conditions_later_skipped() -> None:
    text = "a.com,path_beg=/x h:1\nA.com,path_beg=/x h:2\na.com,path_beg=/x,proto=ws h:3\n"
    table, warnings = RouteTable.parse(text, "r")
    assert [str(w) for w in warnings] == ["r:2: skipping duplicate condition"]
    r = table.lookup("a.com", "/x", ws=False, ssl=False)
    assert r is not None and r.targets[0].port == 1
    # same condition under another domain is not a duplicate
    assert warns("a.com h:1\nb.com h:2\n* h:3\n") == []


def test_from_lines() -> None:
    table, warnings = RouteTable.from_lines(["* h:1", "*,proto=x h:2", "* h:3"])
    assert len(table) == 1
    assert [str(w) for w in warnings] == [
        "<route>:2: proto must be set to 'http' or 'ws'",
        "<route>:3: skipping duplicate condition",
    ]


# --- F7 lookup ---------------------------------------------------------------------------------

LOOKUP_ROUTES = """\
* star:1
*,path_beg=/api star-api:1
*,path_beg=/api/v2 star-api2:1
*,proto=ws star-ws:1
*,ssl=yes star-ssl:1
*,proto=ws,path_beg=/api star-ws-api:1
a.com,path_beg=/only a-only:1
b.com b:1
b.com,proto=http,path_beg=/x b-http-x:1
b.com,path_beg=/x/y/z b-xyz:1
c.com,path_beg=/longer/path c-long:1
c.com,ssl=yes,path_beg=/l c-ssl-short:1
"""


@pytest.mark.parametrize(
    ("host", "path", "ws", "ssl", "expected"),
    [
        ("other.org", "/", False, False, "star"),
        ("other.org", "/api/x", False, False, "star-api"),
        ("other.org", "/api/v2/x", False, False, "star-api2"),
        ("other.org", "/apix", False, False, "star-api"),  # plain prefix match
        ("other.org", "/", True, False, "star-ws"),  # proto set beats unset
        ("other.org", "/api/v2/x", True, False, "star-ws-api"),  # ...even vs longer path_beg
        ("other.org", "/", False, True, "star-ssl"),  # ssl set beats unset at equal length
        # longer path_beg beats ssl (documented F7; Pushpin's code would pick star-ssl here
        # because it comes later in the file)
        ("other.org", "/api", False, True, "star-api"),
        ("a.com", "/only/x", False, False, "a-only"),
        ("a.com", "/", False, False, None),  # host-specific rules hide '*' (no fallback)
        ("A.COM:8443", "/only", False, False, "a-only"),  # case and port ignored
        ("b.com", "/", False, False, "b"),
        ("b.com", "/x/y/z", False, False, "b-http-x"),  # proto beats longer path_beg
        ("b.com", "/x/y/z", True, False, "b-xyz"),  # http rule does not match ws
        ("c.com", "/longer/path", False, True, "c-long"),
        ("c.com", "/lo", False, True, "c-ssl-short"),
        ("c.com", "/longer/path", False, False, "c-long"),
        ("[::1]:7999", "/", False, False, "star"),
    ],
)
def test_lookup(host: str, path: str, ws: bool, ssl: bool, expected: str | None) -> None:
    table, warnings = RouteTable.parse(LOOKUP_ROUTES)
    assert warnings == []
    r = table.lookup(host, path, ws=ws, ssl=ssl)
    assert (r.targets[0].host if r else None) == expected


def test_lookup_order_of_lines_does_not_matter_for_specificity() -> None:
    lines = LOOKUP_ROUTES.splitlines()
    fwd, _ = RouteTable.parse("\n".join(lines))
    rev, _ = RouteTable.parse("\n".join(reversed(lines)))
    for host in ("z", "b.com", "c.com"):
        for path in ("/", "/api", "/api/v2/q", "/zzz", "/x/y/z", "/longer/path"):
            for ws in (False, True):
                for ssl in (False, True):
                    a = fwd.lookup(host, path, ws=ws, ssl=ssl)
                    b = rev.lookup(host, path, ws=ws, ssl=ssl)
                    assert (a and a.id) == (b and b.id)


def test_lookup_empty_table_and_ipv6_domain() -> None:
    assert RouteTable.parse("")[0].lookup("a", "/", ws=False, ssl=False) is None
    table, _ = RouteTable.parse("::1 h:1\n")
    assert table.lookup("[::1]:80", "/", ws=False, ssl=False) is not None


def test_ws_and_http_proto_conditions() -> None:
    table, _ = RouteTable.parse("*,proto=http h:1\n")
    assert table.lookup("x", "/", ws=False, ssl=False) is not None
    assert table.lookup("x", "/", ws=True, ssl=False) is None
    table, _ = RouteTable.parse("*,ssl=no h:1\n")
    assert table.lookup("x", "/", ws=False, ssl=False) is not None
    assert table.lookup("x", "/", ws=False, ssl=True) is None


# --- path rewriting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "path", "expected"),
    [
        ("* h:1", "/a/b?q=1", "/a/b?q=1"),
        ("*,path_beg=/svc,path_rem=4 h:1", "/svc/x?y", "/x?y"),
        ("*,path_beg=/svc,path_rem=4 h:1", "/svc", "/"),  # emptied path → "/" (verified)
        ("*,path_beg=/svc,path_rem=4 h:1", "/svc?x=1", "/?x=1"),
        ("*,path_rem=100 h:1", "/abc", "/"),
        ("*,path_rem=1 h:1", "/abc", "abc"),  # Pushpin 502s on this; kept as is
        ("*,path_rem=-3 h:1", "/abc", "/abc"),
        ("*,path_beg=/old/,replace_beg=/new/ h:1", "/old/x?q", "/new/x?q"),
        # replace_beg overrides path_rem (verified on Pushpin)
        ("*,path_beg=/rb/,replace_beg=/new/,path_rem=1 h:1", "/rb/abc?z", "/new/abc?z"),
        ("*,path_rem=1,path_beg=/rb/,replace_beg=/new/ h:1", "/rb/abc", "/new/abc"),
        ("*,path_beg=/strip,replace_beg h:1", "/strip/x", "/x"),
        ("*,replace_beg=/pre h:1", "/x", "/pre/x"),  # no path_beg: only prepends
    ],
)
def test_rewrite_path(line: str, path: str, expected: str) -> None:
    assert rewrite_path(one(line), path) == expected


@pytest.mark.parametrize(
    ("line", "path", "expected"),
    [
        ("* test", "/stream", "/stream"),
        ("*,path_beg=/test/ test", "/test/stream?x", "/stream?x"),
        ("*,path_beg=/test test", "/test/response", "/response"),
        ("*,path_beg=/test test", "/test", ""),
        ("*,path_beg=/ test", "/ws", "/ws"),
    ],
)
def test_test_target_path(line: str, path: str, expected: str) -> None:
    # imported via the module so pytest does not collect the function itself
    assert rt.test_target_path(one(line), path) == expected


@given(st.text(alphabet="/abcxyz", max_size=12), st.integers(0, 15))
def test_rewrite_path_rem_is_a_suffix(path: str, n: int) -> None:
    r = one(f"*,path_rem={n} h:1")
    out = rewrite_path(r, "/" + path + "?k=v")
    assert out.endswith("?k=v")
    body = out[: -len("?k=v")]
    assert body == ("/" + path)[n:] or (body == "/" and not ("/" + path)[n:])


def test_apply_route_headers_matches_pushpin_order() -> None:
    # verified on Pushpin 1.36: header=X-A:first,header=X-A:second,"header=X-B:  b1",
    # header=X-C:,header=X-D:d with client X-A/X-B/X-C gives X-D: d, X-B: b1, X-A: first
    r = one('*,header=X-A:first,header=X-A:second,"header=X-B:  b1",header=X-C:,header=X-D:d h:1')
    out = apply_route_headers(r, [("Host", "h"), ("x-a", "client"), ("X-B", "c"), ("X-C", "c")])
    assert out == [("Host", "h"), ("X-D", "d"), ("X-B", "b1"), ("X-A", "first")]


# --- header text sent to the origin (RFC 9110 5.1, 5.5) --------------------------------------
# ``header=``, ``as_host`` and a target's ``host`` become origin request headers as written, so
# a CR, LF or NUL (or a header name that is not a token) makes the line an error, skipped with
# its file:line. Pushpin 1.36 does not check (docs/compatibility.md).


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*,header=X:a\rb h:1\n", ["r:1: header value is invalid: 'X:a\\rb'"]),
        ("*,header=X:a\x00b h:1\n", ["r:1: header value is invalid: 'X:a\\x00b'"]),
        ('*,"header=X Y:1" h:1\n', ["r:1: header name is invalid: 'X Y:1'"]),
        ("*,header=X\rY:1 h:1\n", ["r:1: header name is invalid: 'X\\rY:1'"]),
        ("*,as_host=a\rb h:1\n", ["r:1: as_host contains CR, LF or NUL"]),
        ("* h:1,host=a\x00b\n", ["r:1: target host contains CR, LF or NUL"]),
    ],
)
def test_header_injection_lines_are_errors(text: str, expected: list[str]) -> None:
    table, warnings = RouteTable.parse(text + "b.com h:2\n", "r")
    assert [str(w) for w in warnings] == expected
    assert [w.error for w in warnings] == [True]  # the line is skipped, a reload refused
    assert [r.domain for r in table.routes] == ["b.com"]


def test_header_injection_in_route_arguments() -> None:
    """``--route`` lines are not split on newlines, so an LF can reach the parser there."""
    table, warnings = RouteTable.from_lines(["*,header=X:a\nSet-Cookie:e=1 h:1"])
    assert len(table) == 0
    assert [str(w) for w in warnings] == [
        "<route>:1: header value is invalid: 'X:a\\nSet-Cookie:e=1'"
    ]


def test_history_route_options() -> None:
    """gripd's own route options: history for the channels this route's responses subscribe
    to; unset means the ``[gripd]`` defaults."""
    text = "*,path_beg=/a,history_size=10,history_ttl=0 test\n* test\n"
    table, warnings = RouteTable.parse(text, "r")
    assert not warnings
    routes = table.routes
    assert (routes[0].history_size, routes[0].history_ttl) == (10, 0)
    assert (routes[1].history_size, routes[1].history_ttl) == (None, None)

"""F46 JSON-P. Expected requests and bytes were captured from Pushpin 1.36 (route ``aco``) unless
a case says it is a deliberate deviation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.errors import ClientError
from gripd.core.headers import Headers
from gripd.core.http import HttpResponse
from gripd.core.jsonp import (
    JsonpConfig,
    JsonpRequest,
    JsonpStream,
    encode_error_response,
    json_string,
    parse_jsonp_request,
    qt_text,
    wrap_held_response,
    wrap_response,
)

CLIENT: Headers = [
    ("Host", "Example.COM:8080"),
    ("Accept", "text/html"),
    ("X-Client", "c"),
    ("Connection", "close"),
]
EXT = JsonpConfig()
BASIC = JsonpConfig(mode="basic")
JB = JsonpConfig(callback_param="jcb", body_param="jb", default_callback="dcb")
TAIL: Headers = [
    ("Host", "Example.COM:8080"),
    ("Accept", "*/*"),
    ("X-Client", "c"),
    ("Connection", "close"),
]


def _req(callback: str = "cb", mode: str = "extended") -> JsonpRequest:
    return JsonpRequest("GET", "/x", [], b"", callback, "basic" if mode == "basic" else "extended")


# --- request -----------------------------------------------------------------------------------

REQUESTS = [
    (
        "everything",
        EXT,
        "/x?z=1&callback=cb&_method=PUT&_headers=%7B%22X-H%22%3A%22v%22%2C%22Host%22%3A%22h%22"
        "%2C%22b%22%3A%221%22%2C%22A%22%3A%222%22%2C%22accept%22%3A%22q%22%7D"
        "&_body=hello%20world&y=2",
        CLIENT,
        JsonpRequest(
            "PUT",
            "/x?z=1&y=2",
            [("A", "2"), ("X-H", "v"), ("b", "1"), *TAIL],
            b"hello world",
            "cb",
            "extended",
        ),
    ),
    (
        "no-query-left",
        EXT,
        "/x?callback=cb",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"", "cb", "extended"),
    ),
    (
        "basic-posts",
        BASIC,
        "/b?callback=cb",
        CLIENT,
        JsonpRequest("POST", "/b", TAIL, b"", "cb", "basic"),
    ),
    (
        "basic-body",
        BASIC,
        "/b?callback=cb&_body=%7B%7D",
        CLIENT,
        JsonpRequest("POST", "/b", TAIL, b"{}", "cb", "basic"),
    ),
    (
        # Default callback + body param; _body is then ordinary and stays.
        "jsonp-body-defcb",
        JB,
        "/jb?jb=%7B%22q%22%3A1%7D&_body=zz",
        CLIENT,
        JsonpRequest(
            "GET",
            "/jb?_body=zz",
            [("Content-Type", "application/json"), *TAIL],
            b'{"q":1}',
            "dcb",
            "extended",
        ),
    ),
    (
        # The client's Content-Type is carried over too (two Content-Types, as Pushpin).
        "jsonp-body-cb",
        JB,
        "/jb?jcb=my.cb&jb=x&callback=notme",
        [*CLIENT, ("Content-Type", "text/plain")],
        JsonpRequest(
            "GET",
            "/jb?callback=notme",
            [("Content-Type", "application/json"), *TAIL, ("Content-Type", "text/plain")],
            b"x",
            "my.cb",
            "extended",
        ),
    ),
    (
        "dup-headers-last-wins",
        EXT,
        "/x?callback=cb&_headers=%7B%22a%22%3A%22x%22%2C%22a%22%3A%22y%22%7D",
        CLIENT,
        JsonpRequest("GET", "/x", [("a", "y"), *TAIL], b"", "cb", "extended"),
    ),
    (
        # UTF-8 header values are kept as bytes (latin-1 str); the client's X-Client stays too.
        "headers-utf8",
        EXT,
        "/x?callback=cb&_headers=%7B%22X-U%22%3A%22%C3%A9%5Cu00e9%22%2C%22x-client%22%3A%22dup%22%7D",
        CLIENT,
        JsonpRequest(
            "GET",
            "/x",
            [("X-U", "\xc3\xa9\xc3\xa9"), ("x-client", "dup"), *TAIL],
            b"",
            "cb",
            "extended",
        ),
    ),
    (
        "headers-ws",
        EXT,
        "/x?callback=cb&_headers=%20%7B%7D%20",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"", "cb", "extended"),
    ),
    # A stray "%" anywhere in the query makes every "%" of it literal (Qt tolerant mode).
    (
        "stray-percent-callback",
        EXT,
        "/x?callback=%zz",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"", "%zz", "extended"),
    ),
    (
        "stray-percent-body",
        EXT,
        "/x?callback=cb&_body=%zz",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"%zz", "cb", "extended"),
    ),
    (
        "double-encoded-body",
        EXT,
        "/x?callback=cb&_body=%2541",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"%41", "cb", "extended"),
    ),
    (
        "first-callback-wins",
        EXT,
        "/x?callback=a&callback=b",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"", "a", "extended"),
    ),
    (
        "encoded-key",
        EXT,
        "/x?%63allback=cb&z=1",
        CLIENT,
        JsonpRequest("GET", "/x?z=1", TAIL, b"", "cb", "extended"),
    ),
    (
        "encoded-body-key",
        EXT,
        "/x?callback=cb&_bod%79=1&_body=a+b%2Bc",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"1", "cb", "extended"),
    ),
    (
        "plus-is-literal",
        EXT,
        "/j?callback=c+b&_body=a+b",
        CLIENT,
        JsonpRequest("GET", "/j", TAIL, b"a+b", "c+b", "extended"),
    ),
    (
        "callback-raw-bytes",
        EXT,
        "/x?callback=a%3Cb%3E%0A%22c%00",
        CLIENT,
        JsonpRequest("GET", "/x", TAIL, b"", 'a<b>\n"c\x00', "extended"),
    ),
    # QUrlQuery writes "=" in a value back as %3D; the rest of the query is as received.
    (
        "requery-equals",
        EXT,
        "/j?a==b&callback=cb",
        CLIENT,
        JsonpRequest("GET", "/j?a=%3Db", TAIL, b"", "cb", "extended"),
    ),
    (
        "requery-empty-items",
        EXT,
        "/j?a=1&&b=2&callback=cb",
        CLIENT,
        JsonpRequest("GET", "/j?a=1&&b=2", TAIL, b"", "cb", "extended"),
    ),
    (
        "requery-no-value",
        EXT,
        "/j?=x&y&callback=cb",
        CLIENT,
        JsonpRequest("GET", "/j?=x&y", TAIL, b"", "cb", "extended"),
    ),
    (
        "requery-reserved",
        EXT,
        "/j?a=%3D%26%23%2B%25&callback=cb",
        CLIENT,
        JsonpRequest("GET", "/j?a=%3D%26%23%2B%25", TAIL, b"", "cb", "extended"),
    ),
    (
        "method-space-free",
        EXT,
        "/x?callback=cb&_method=patch",
        [],
        JsonpRequest("patch", "/x", [("Accept", "*/*")], b"", "cb", "extended"),
    ),
    (
        "defmethod",
        JsonpConfig(default_method="DELETE"),
        "/x?callback=cb",
        [],
        JsonpRequest("DELETE", "/x", [("Accept", "*/*")], b"", "cb", "extended"),
    ),
]


@pytest.mark.parametrize(
    ("name", "cfg", "uri", "headers", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS]
)
def test_parse_jsonp_request(
    name: str, cfg: JsonpConfig, uri: str, headers: Headers, expected: JsonpRequest
) -> None:
    assert parse_jsonp_request("GET", uri, headers, cfg) == expected


@pytest.mark.parametrize(
    ("method", "uri", "cfg"),
    [
        ("POST", "/x?callback=cb", EXT),
        ("HEAD", "/x?callback=cb", EXT),
        ("GET", "/x", EXT),
        ("GET", "/x?cb=1", EXT),
        ("GET", "/x?callback=cb", JB),  # jsonp_cb renames the parameter
        ("GET", "/jbonly?jb=x", JsonpConfig(body_param="jb")),  # needs jsonp_defcb too
        ("GET", "/x?_body=x", JsonpConfig(default_callback="d")),  # needs jsonp_body too
    ],
)
def test_jsonp_does_not_apply(method: str, uri: str, cfg: JsonpConfig) -> None:
    assert parse_jsonp_request(method, uri, CLIENT, cfg) is None


@pytest.mark.parametrize(
    ("query", "cfg", "message"),
    [
        ("callback=", EXT, "Invalid callback parameter."),
        ("callback", EXT, "Invalid callback parameter."),
        ("callback=cb&_method=", EXT, "Invalid _method parameter."),
        ("callback=cb&_method=%01", EXT, "Invalid _method parameter."),
        ("callback=cb&_method=a%ADb", EXT, "Invalid _method parameter."),
        ("callback=cb&_method=a%7Fb", EXT, "Invalid _method parameter."),
        # Deviations: Pushpin forwards these, which breaks the origin request line.
        ("callback=cb&_method=g%20t", EXT, "Invalid _method parameter."),
        ("callback=cb&_method=a%A0b", EXT, "Invalid _method parameter."),
        ("callback=cb&_headers=%5B%5D", EXT, "Invalid _headers parameter."),
        ("callback=cb&_headers=%7B%22a%22%3A1%7D", EXT, "Invalid _headers parameter."),
        ("callback=cb&_headers=", EXT, "Invalid _headers parameter."),
        ("callback=cb&_headers=%7B", EXT, "Invalid _headers parameter."),
        ("callback=cb&_headers=%7B%22a%22%3ANaN%7D", EXT, "Invalid _headers parameter."),
        ("callback=cb&_headers=%FF", EXT, "Invalid _headers parameter."),
        # Deviations: a header that could split the origin request.
        (
            "callback=cb&_headers=%7B%22a%22%3A%22x%5Cr%5CnY%3A%201%22%7D",
            EXT,
            "Invalid _headers parameter.",
        ),
        ("callback=cb&_headers=%7B%22a%20b%22%3A%22x%22%7D", EXT, "Invalid _headers parameter."),
        ("callback=cb&_body=", EXT, "Invalid _body parameter."),
        ("callback=cb&_body", EXT, "Invalid _body parameter."),
        ("jcb=c&jb=", JB, "Invalid body parameter."),
        ("jb=", JB, "Invalid body parameter."),
    ],
)
def test_bad_parameters(query: str, cfg: JsonpConfig, message: str) -> None:
    with pytest.raises(ClientError) as ei:
        parse_jsonp_request("GET", "/x?" + query, CLIENT, cfg)
    assert ei.value.message == message
    assert ei.value.status == 400


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "*,aco,jsonp_mode=basic,jsonp_cb=,jsonp_body=jb,jsonp_defcb=d 127.0.0.1:1",
            JsonpConfig("basic", "callback", "jb", "d", "POST"),
        ),
        (
            "*,aco,jsonp_cb=c,jsonp_defmethod=PUT 127.0.0.1:1",
            JsonpConfig(callback_param="c", default_method="PUT"),
        ),
        ("*,aco 127.0.0.1:1", JsonpConfig(default_method="GET")),
    ],
)
def test_config_from_route(line: str, expected: JsonpConfig) -> None:
    from gripd.core.routes import RouteTable

    table, _ = RouteTable.parse(line)
    assert JsonpConfig.from_route(table.routes[0]) == expected


_param = st.sampled_from(
    ["callback", "_method", "_headers", "_body", "jb", "jcb", "x", "", "%63allback"]
)
_value = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", "%", "%zz", "%7B%7D", "%7B%22a%22%3A%22b%22%7D", "%5B%5D", "GET", "%00", "="]
    ),
)
_query = st.lists(st.tuples(_param, st.sampled_from(["=", ""]), _value), max_size=6).map(
    lambda items: "&".join(k + eq + v for k, eq, v in items)
)
_cfg = st.builds(
    JsonpConfig,
    mode=st.sampled_from(["basic", "extended"]),
    callback_param=st.sampled_from(["callback", "jcb", ""]),
    body_param=st.sampled_from([None, "jb", ""]),
    default_callback=st.sampled_from([None, "d", ""]),
    default_method=st.sampled_from([None, "PUT", ""]),
)


@given(
    st.text(max_size=8),
    _query,
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4),
    _cfg,
)
def test_only_client_error_escapes(
    path: str, query: str, headers: Headers, cfg: JsonpConfig
) -> None:
    try:
        out = parse_jsonp_request("GET", "/" + path + "?" + query, headers, cfg)
    except ClientError as e:
        assert e.status == 400 and e.message.startswith("Invalid ")
        return
    if out is not None:
        assert out.callback
        assert out.method
        assert ("Accept", "*/*") in out.headers
        assert out.uri.startswith("/" + path)


# --- responses (proxy path) --------------------------------------------------------------------


def test_wrap_response_extended_exact() -> None:
    resp = HttpResponse(
        201,
        'Yay \xc3\xa9 "q"',
        [
            ("Content-Type", "application/json"),
            ("X-A", "1"),
            ("Cache-Control", "max-age=5"),
            ("x-a", "2"),
            ("X-A", "3"),
            ("cache-control", "private"),
            ("Z", "\xc3\xa9"),
            ("Content-Length", "12"),
        ],
        b'{"a": "b"}\r\n',
    )
    out = wrap_response(resp, _req())
    assert (out.code, out.reason) == (200, "OK")
    assert out.headers == [
        ("Content-Type", "application/javascript"),
        ("Cache-Control", "max-age=5"),
        ("cache-control", "private"),
    ]
    assert out.body == (
        b'/**/cb({"code": 201, "reason": "Yay \xc3\xa9 \\"q\\"", "headers": {"Cache-Control":'
        b'"max-age=5","Content-Length":"12","Content-Type":"application/json","X-A":"1","Z":'
        b'"\xc3\xa9","cache-control":"private","x-a":"2"}, "body": "{\\"a\\": \\"b\\"}\\r\\n"});\n'
    )


def test_wrap_response_basic_exact() -> None:
    resp = HttpResponse(201, "Yay", [("Cache-Control", "max-age=5"), ("X", "1")], b'{"a": "b"}\r\n')
    out = wrap_response(resp, _req(mode="basic"))
    assert out.body == b'/**/cb({"a": "b"});\n'
    assert out.headers == [
        ("Content-Type", "application/javascript"),
        ("Cache-Control", "max-age=5"),
    ]
    # Only one trailing newline is trimmed.
    assert (
        wrap_response(HttpResponse(body=b"ab\n\n\n"), _req(mode="basic")).body
        == b"/**/cb(ab\n\n);\n"
    )


def test_wrap_response_proxy_error_exact() -> None:
    resp = HttpResponse(
        502,
        "Bad Gateway",
        [("Content-Type", "text/plain"), ("Content-Length", "32")],
        b"Error while proxying to origin.\n",
    )
    out = wrap_response(resp, _req())
    assert out.body == (
        b'/**/cb({"code": 502, "reason": "Bad Gateway", "headers": {"Content-Length":"32",'
        b'"Content-Type":"text/plain"}, "body": "Error while proxying to origin.\\n"});\n'
    )
    assert len(out.body) == 157


def test_wrap_response_binary_body_exact() -> None:
    body = (
        b'a\x01\x1f\x7f"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\xff|\xe2\x82|\xe2\x82A|'
        b"\xc0\xaf|\xed\xa0\x80|\xef\xbf\xbe|\xf4\x90\x80\x80|\xf0\x9f\x98|\xe2"
    )
    out = wrap_response(HttpResponse(200, "OK", [("Content-Length", "52")], body), _req())
    r = b"\xef\xbf\xbd"
    assert out.body == (
        b'/**/cb({"code": 200, "reason": "OK", "headers": {"Content-Length":"52"}, "body": '
        b'"a\\u0001\\u001f\x7f\\"\\\\/\\b\\f\\n\\r\\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|'
        + r
        + b"|"
        + r * 2
        + b"|"
        + r * 2
        + b"A|"
        + r * 2
        + b"|"
        + r * 3
        + b"|\xef\xbf\xbe|"
        + r * 4
        + b"|"
        + r * 3
        + b"|"
        + r
        + b'"});\n'
    )
    assert len(out.body) == 192


def test_wrap_response_nul_truncates_and_bad_utf8_reason() -> None:
    resp = HttpResponse(200, "O\xffK", [("X-H", "a\xffb"), ("Content-Length", "3")], b"a\x00b")
    assert wrap_response(resp, _req()).body == (
        b'/**/cb({"code": 200, "reason": "O\xef\xbf\xbdK", "headers": {"Content-Length":"3",'
        b'"X-H":"a\xef\xbf\xbdb"}, "body": "a"});\n'
    )


def test_wrap_response_raw_callback_and_skips_hop_headers() -> None:
    resp = HttpResponse(
        200, "OK", [("Connection", "x"), ("Transfer-Encoding", "chunked"), ("E", "")]
    )
    out = wrap_response(resp, _req(callback='a<b>\n"c\x00'))
    assert out.body == (
        b'/**/a<b>\n"c\x00({"code": 200, "reason": "OK", "headers": {"E":null}, "body": ""});\n'
    )


def test_stream_extended_exact() -> None:
    s = JsonpStream(_req())
    head, start = s.start(
        200, "OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
    )
    assert (head.code, head.reason, head.headers) == (
        200,
        "OK",
        [("Content-Type", "application/javascript")],
    )
    out = start + s.feed(b"hello\n") + s.feed(b"world\r\n") + s.finish()
    assert out == (
        b'/**/cb({"code": 200, "reason": "OK", "headers": {"Cache-Control":"no-store",'
        b'"Content-Type":"text/plain"}, "body": "hello\\nworld\\r\\n"});\n'
    )


def test_stream_basic_exact() -> None:
    s = JsonpStream(_req(mode="basic"))
    _, start = s.start(200, "OK", [("Content-Type", "text/plain")])
    pieces = [start, s.feed(b"hello\n"), s.feed(b"world\r\n"), s.finish()]
    assert pieces == [b"/**/cb(", b"hello", b"\nworld", b");\n"]


def test_stream_keeps_split_utf8_whole() -> None:
    s = JsonpStream(_req())
    s.start(200, "OK", [])
    assert s.feed(b"a\xe2\x82") == b"a"
    assert s.feed(b"\xac") == "€".encode()
    assert s.feed(b"\xe2") == b""
    assert s.finish() == b'\xef\xbf\xbd"});\n'


@given(
    st.binary(max_size=40).filter(lambda b: b"\x00" not in b),
    st.lists(st.integers(0, 40), max_size=5),
)
def test_stream_equals_whole_response(body: bytes, cuts: list[int]) -> None:
    for mode in ("basic", "extended"):
        req = _req(mode=mode)
        s = JsonpStream(req)
        _, start = s.start(200, "OK", [("X", "1")])
        out = start
        prev = 0
        for cut in sorted(set(cuts)):
            out += s.feed(body[prev:cut])
            prev = max(prev, cut)
        out += s.feed(body[prev:]) + s.finish()
        whole = wrap_response(HttpResponse(200, "OK", [("X", "1")], body), req).body
        assert out == whole


# --- responses (handler path) ------------------------------------------------------------------


def test_wrap_held_extended_exact() -> None:
    resp = HttpResponse(
        200,
        "OK",
        [
            ("Content-Type", "text/plain"),
            ("X-T", "t"),
            ("x-t", "u"),
            ("Cache-Control", "no-store"),
            ("Content-Length", "8"),
        ],
        b'time"ut\n',
    )
    out = wrap_held_response(resp, _req())
    assert (out.code, out.reason) == (200, "OK")
    assert out.headers == [
        ("X-T", "t"),
        ("x-t", "u"),
        ("Cache-Control", "no-store"),
        ("Content-Type", "application/javascript"),
    ]
    assert out.body == (
        b'/**/cb({"body":"time\\"ut\\n","code":200,"headers":{"Cache-Control":"no-store",'
        b'"Content-Type":"text/plain","X-T":"t, u"},"reason":"OK"});\n'
    )
    assert len(out.body) == 136


def test_wrap_held_published_exact() -> None:
    resp = HttpResponse(
        203,
        "R\xc3\xa9",
        [
            ("Content-Type", "text/plain"),
            ("X-T", "t"),
            ("X-E", ""),
            ("X-N", "v"),
            ("Content-Length", "99"),
        ],
        b"a\x00b\xff",
    )
    out = wrap_held_response(resp, _req())
    assert out.headers == [
        ("X-T", "t"),
        ("X-E", ""),
        ("X-N", "v"),
        ("Content-Type", "application/javascript"),
    ]
    assert out.body == (
        b'/**/cb({"body":"a","code":203,"headers":{"Content-Type":"text/plain","X-E":"",'
        b'"X-N":"v","X-T":"t"},"reason":"R\xc3\xa9"});\n'
    )


@pytest.mark.parametrize(
    ("headers", "body", "out_headers", "out_body"),
    [
        (
            [("Content-Type", "text/plain"), ("X-T", "t"), ("Content-Length", "8")],
            b"timeout\n",
            [("X-T", "t"), ("Content-Type", "application/javascript")],
            b"/**/cb(timeout);\n",
        ),
        (
            [("X-E", ""), ("Content-Type", "x/y")],
            b"nf\r\n",
            [("X-E", ""), ("Content-Type", "application/javascript")],
            b"/**/cb(nf);\n",
        ),
    ],
)
def test_wrap_held_basic_exact(
    headers: Headers, body: bytes, out_headers: Headers, out_body: bytes
) -> None:
    out = wrap_held_response(HttpResponse(404, "Not Found", headers, body), _req(mode="basic"))
    assert (out.code, out.headers, out.body) == (200, out_headers, out_body)


# --- text conversion ---------------------------------------------------------------------------


def _qt_oracle(data: bytes) -> str:
    """Qt 5 QUtf8::convertToUnicode, byte by byte (independent of the module's approach)."""
    data = data.split(b"\x00", 1)[0]
    out: list[str] = []
    i = 0
    while i < len(data):
        b = data[i]
        if b < 0x80:
            out.append(chr(b))
            i += 1
            continue
        need = 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF5 else 0
        seq = data[i : i + need]
        try:
            if need and len(seq) == need:
                out.append(seq.decode("utf-8"))
                i += need
                continue
        except UnicodeDecodeError:
            pass
        out.append("\ufffd")
        i += 1
    return "".join(out)


@given(st.binary(max_size=30))
def test_qt_text_matches_qt_algorithm(data: bytes) -> None:
    assert qt_text(data) == _qt_oracle(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a/b", b'"a/b"'),
        ("\x7f", b'"\x7f"'),
        ("\x00\x1b", b'"\\u0000\\u001b"'),
        ("é", b'"\xc3\xa9"'),
    ],
)
def test_json_string_like_qjsondocument(text: str, expected: bytes) -> None:
    assert json_string(text) == expected


def test_encode_error_response() -> None:
    r = encode_error_response()
    assert (r.code, r.body) == (500, b"Upstream response could not be JSON-P encoded.\n")
    assert r.headers == [("Content-Type", "text/plain")]

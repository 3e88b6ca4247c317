"""Routes files (F6-F11) and what is done per request with a route (F7, F9, F50).

Input: one flag byte, then the file's bytes (read as UTF-8 with replacement, as gripd reads
files). Each route found is then looked up by host/path and id, and its path rewriting and
header options applied. Flags pick ws/ssl for the lookups.

Allowed outcomes: a ``RouteTable`` and warnings (a bad line is skipped with a warning, never an
error), and paths/headers out of the helpers. Anything else is a find.
"""

from __future__ import annotations

from gripd.core.routes import (
    RouteTable,
    apply_route_headers,
    rewrite_path,
    test_target_path,
)

from ._common import flags_and_rest

SEEDS = [
    b"\x00* localhost:8080\n",
    b"\x01* test\n# comment\nexample.com,id=ex,path_beg=/api/,replace_beg=/v1/ localhost:80\n",
    b"\x02*,proto=ws,ssl=yes,debug,prefix=p_,as_host=h2,sockjs=/sockjs,sockjs_as_path=/s,"
    b'header="X-A: b" '
    b"127.0.0.1:81,over_http,ssl,insecure,untrusted,trust_connect_host,one_event,host=h,sub=/x\n",
    b"\x03*.example.com,path_rem=4,session,no_grip,jsonp_mode=basic,jsonp_cb=cb,jsonp_defcb=d "
    b"zhttp/tcp://127.0.0.1:5000 localhost:81\n",
    b"\x00id=x,path_beg=/a,sig_iss=i,sig_key=base64:a2V5,jsonp_body=body,"
    b'jsonp_defmethod=POST "localhost:1"\n',
]

TOKENS = [
    b"*",
    b" ",
    b",",
    b"=",
    b'"',
    b"\\",
    b"#",
    b"\n",
    b"test",
    b"localhost:80",
    b"[::1]:80",
    b"id=",
    b"path_beg=",
    b"path_rem=",
    b"replace_beg=",
    b"proto=ws",
    b"proto=http",
    b"ssl=yes",
    b"prefix=",
    b"header=",
    b"over_http",
    b"insecure",
    b"host=",
    b"sub=",
    b"untrusted",
    b"trust_connect_host",
    b"one_event",
    b"ipc_file_mode=",
    b"as_host=",
    b"sockjs=",
    b"sockjs_as_path=",
    b"no_grip",
    b"session",
    b"debug",
    b"sig_key=",
    b"sig_iss=",
    b"jsonp_mode=basic",
    b"jsonp_cb=",
    b"jsonp_defcb=",
    b"jsonp_body=",
    b"jsonp_defmethod=",
    b"zhttp/",
    b"zhttpreq/",
]

_PATHS = ("/", "/api/x?y=1", "/a", "/\u00e9t\u00e9?x")


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    text = rest.decode("utf-8", "replace")
    table, warnings = RouteTable.parse(text, "routes")
    for w in warnings:
        assert str(w).startswith("routes:")
    ws, ssl = bool(flags & 1), bool(flags & 2)
    for route in table.routes:
        host = route.domain.replace("*", "x") or "localhost"
        for path in _PATHS:
            table.lookup(host + ":80", path, ws=ws, ssl=ssl)
            assert isinstance(rewrite_path(route, path), str)
            assert isinstance(test_target_path(route, path), str)
        table.lookup_by_id(route.id)
        table.is_id_shared(route.id)
        apply_route_headers(route, [("Host", host), ("X-A", "1")])

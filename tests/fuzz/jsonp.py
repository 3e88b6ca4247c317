"""JSON-P requests (F46): a client GET's query turned into the request to forward, and the
origin's answer wrapped for it (whole, and as a stream cut into pieces).

Input: one flag byte, then the query string (after ``?``); a NUL, if present, starts the origin
response body. Flags: bit 0 — basic mode (else extended); bit 1 — the route has ``jsonp_body``
and ``jsonp_defcb``; bit 2 — a ``jsonp_defmethod``; bits 3-5 — the stream's piece size.

Allowed outcomes: None (JSON-P does not apply), a ``JsonpRequest``, or ``ClientError`` (400);
then wrapped responses as bytes. Anything else is a find.
"""

from __future__ import annotations

from gripd.core.errors import ClientError
from gripd.core.http import HttpResponse
from gripd.core.jsonp import (
    JsonpConfig,
    JsonpStream,
    parse_jsonp_request,
    wrap_held_response,
    wrap_response,
)

from ._common import chunked, flags_and_rest

_CLIENT = [("Host", "example.com"), ("User-Agent", "fuzz")]

SEEDS = [
    b"\x00callback=cb",
    b'\x00callback=cb&_method=POST&_headers={"X-A":"b"}&_body=hello\x00{"a":1}\n',
    b"\x07jb=%7B%22x%22%3A1%7D&callback=f\x00body\r\n",
    b"\x01callback=a.b%5B0%5D&x=1&y\x00\xff\xfe\x00tail",
    b"\x02_body=x&jb=y\x00" + "é".encode() * 20,
]

TOKENS = [
    b"callback=",
    b"_method=",
    b"_headers=",
    b"_body=",
    b"jb=",
    b"&",
    b"=",
    b"%",
    b"%00",
    b"%7B",
    b"%22",
    b"+",
    b'{"',
    b'":"',
    b'"}',
]


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    query, _, body = rest.partition(b"\0")
    cfg = JsonpConfig(
        mode="basic" if flags & 1 else "extended",
        body_param="jb" if flags & 2 else None,
        default_callback="d" if flags & 2 else None,
        default_method="PUT" if flags & 4 else None,
    )
    uri = "/path?" + query.decode("latin-1")  # the listener's latin-1 request target
    try:
        req = parse_jsonp_request("GET", uri, _CLIENT, cfg)
    except ClientError as e:
        assert e.status == 400
        return
    if req is None:
        return
    assert isinstance(req.uri, str) and isinstance(req.body, bytes)
    resp = HttpResponse(200, "OK", [("Content-Type", "application/json")], body)
    assert isinstance(wrap_response(resp, req).body, bytes)
    assert isinstance(wrap_held_response(resp, req).body, bytes)
    stream = JsonpStream(req)
    _, out = stream.start(200, "OK", resp.headers)
    for piece in chunked(body, flags >> 3):
        out += stream.feed(piece)
    out += stream.finish()

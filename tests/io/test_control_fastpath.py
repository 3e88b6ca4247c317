"""The control API's short cuts (F28) give what the general code gives: the header block fed to
httptools for plain CRLF heads, the cached encoding of fixed answers, and the publish body's
JSON reading (a BOM, a second BOM, NaN)."""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.errors import PublishError
from gripd.core.publish import PublishItem, parse_publish_body
from gripd.io.inputs import control_http as ch
from gripd.io.inputs import control_wire as cw

_LOG = logging.getLogger("test.control")

NAMES = [
    b"Host",
    b"Content-Length",
    b"content-LENGTH",
    b"Transfer-Encoding",
    b"TRANSFER-encoding",
    b"X-Content-Length",
    b"Content-Length ",
    b" Content-Length",
    b"Content-Lengthx",
    b"Expect",
    b"",
    b"X-Gripd-Content-Length",
]
VALUES = [b" 12", b"12", b"", b" a:b", b" a\rb", b" x\r", b"\t1 ", b" \xe9"]


def _random_lines(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 6)):
        lines.append(rng.choice(NAMES) + b":" + rng.choice(VALUES) + b"\r\n")
    return b"".join(lines) + b"\r\n"


def test_plain_heads_take_the_short_cut_with_the_same_block() -> None:
    """Every head whose lines all end in CRLF and have a ":" is fed to httptools exactly as the
    line-by-line rebuild would feed it (Content-Length/Transfer-Encoding renamed, any case)."""
    rng = random.Random(7)
    matched = 0
    for _ in range(3000):
        lines = _random_lines(rng)
        assert cw.PLAIN_HEADER_LINES.fullmatch(lines) is not None, lines
        assert cw.REQUEST_LINE + cw.rename_framing(lines) == cw.header_block(lines), lines
        matched += b"X-Gripd-" in cw.rename_framing(lines)
    assert matched > 100  # the renaming was exercised


@pytest.mark.parametrize(
    "lines",
    [
        b"A: b\n\r\n",  # a bare LF
        b"A: b\r\nno colon\r\n\r\n",
        b"A: b\r\n\n",
        b"\n",
        b"Content-Length: 1\r\n continued\r\n\r\n",
    ],
)
def test_other_heads_are_rebuilt(lines: bytes) -> None:
    """Heads with a bare LF or a line without ":" do not take the short cut."""
    assert cw.PLAIN_HEADER_LINES.fullmatch(lines) is None


def test_cached_encoding_is_the_encoding() -> None:
    for args in [
        (200, "OK", [("Content-Type", "text/plain")], b"Published\n", False),
        (200, "OK", [("Content-Type", "text/plain")], b"Published\n", True),
        (200, "OK", [("Content-Type", "application/json")], b'{"message":"Published"}\n', False),
        (200, "OK", [("Content-Type", "text/plain")], b"Published\n", False),  # from the cache
        (200, "OK", [("Allow", "POST"), ("Content-Type", "text/plain")], b"x\n", False),
        (200, "OK", [("Content-Type", "text/plain")], b"x" * 100, False),
    ]:
        code, reason, headers, body, http10 = args
        assert cw.encode_cached(code, reason, headers, body, http10) == cw.encode(
            code, reason, headers, body, http10
        )


PUB = b'{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}'


def test_publish_body_json() -> None:
    """F28: one UTF-8 BOM is allowed, a second is not valid JSON, nor are NaN or bad UTF-8."""
    assert [i.channel for i in parse_publish_body(b"\xef\xbb\xbf" + PUB)] == ["c"]
    for bad in [b"\xef\xbb\xbf\xef\xbb\xbf" + PUB, b"\xff" + PUB, PUB.replace(b'"x"', b"NaN")]:
        with pytest.raises(PublishError, match=r"^Body is not valid JSON\.$"):
            parse_publish_body(bad)


_LINE_BYTES = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b":", b""))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(NAMES), _LINE_BYTES),
            st.one_of(st.sampled_from(VALUES), st.binary(max_size=12)),
        ),
        max_size=6,
    )
)
def test_short_cut_block_for_generated_heads(pairs: list[tuple[bytes, bytes]]) -> None:
    """As above, for generated names and values (any bytes but LF in a name; a value may hold
    CR, colons and bytes over 0x7f): whenever a head takes the short cut, its block is the
    rebuilt one."""
    lines = b"".join(n + b":" + v.replace(b"\n", b"") + b"\r\n" for n, v in pairs) + b"\r\n"
    if cw.PLAIN_HEADER_LINES.fullmatch(lines) is None:
        return
    assert cw.REQUEST_LINE + cw.rename_framing(lines) == cw.header_block(lines)


class _Transport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


def _parse(proto: ch.ControlProtocol, head: bytes) -> tuple[object, ...]:
    """What ``_parse_head`` makes of ``head``: its fields, or the error answer written."""
    transport = _Transport()
    proto._transport = transport  # type: ignore[assignment]
    proto._state, proto._replied = "head", False
    ok = proto._parse_head(head)
    fields = (proto._method, proto._uri, proto._http10, proto._headers, proto._content_length)
    return (ok, transport.data, *fields, proto._has_te, proto._expect, proto._persist)


PROFILES = [
    [b"Host: 127.0.0.1:5561", b"Content-Type: application/json"],
    [b"Host: h", b"Connection: close", b"Expect: 100-continue"],
    [b"Transfer-Encoding: chunked", b"Accept: application/json"],
    [b"X-A: Content-Length: 5", b"Authorization: Bearer x"],
    [b"X-Gripd-Content-Length: 3"],
    [],
]
CL_VALUES = [b"0", b"7", b"12", b"99", b"1234567890", b"12345678901", b" 12", b"1a", b"", b"-1"]


def test_head_cache_gives_what_parsing_gives() -> None:
    """F28: heads parsed through a server's cache of header blocks (the same headers, another
    Content-Length) give exactly what parsing each one gives: fields, or the 400 answer;
    duplicate Content-Length lines, one inside another header's value, other spellings and
    values that are not plain digits included."""
    rng = random.Random(11)
    cache = cw.HeadCache()
    cached = ch.ControlProtocol(
        _Sink(),
        max_headers_size=10000,
        max_body_size=10**6,
        logger=_LOG,
        keep_alive=True,
        heads=cache,
    )
    plain = ch.ControlProtocol(
        _Sink(), max_headers_size=10000, max_body_size=10**6, logger=_LOG, keep_alive=True
    )
    hits = 0
    for _ in range(3000):
        lines = list(rng.choice(PROFILES))
        for _ in range(rng.choice([0, 1, 1, 1, 2])):
            name = rng.choice([b"Content-Length", b"Content-Length", b"content-length"])
            sep = rng.choice([b": ", b": ", b":"])
            lines.insert(rng.randrange(len(lines) + 1), name + sep + rng.choice(CL_VALUES))
        version = rng.choice([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
        head = b"POST /publish/ " + version + b"\r\n" + b"".join(ln + b"\r\n" for ln in lines)
        head += b"\r\n"
        key = cw.HeadCache.key(head[head.find(b"\n") + 1 :])
        hits += key is not None and cache.get(key[0]) is not None
        assert _parse(cached, head) == _parse(plain, head), head
    assert hits > 200  # the cache was used


class _Sink:
    def publish(self, items: list[PublishItem], *, source: str) -> None:
        pass

    def recover(self) -> None:
        pass

"""The control API's short cuts (F28) give what the general code gives: the header block fed to
httptools for plain CRLF heads, the cached encoding of fixed answers, and the publish body's
JSON reading (a BOM, a second BOM, NaN)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.errors import PublishError
from gripd.core.publish import parse_publish_body
from gripd.io.inputs import control_http as ch

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
        assert ch._PLAIN_HEADER_LINES.fullmatch(lines) is not None, lines
        assert ch._REQUEST_LINE + ch._rename_framing(lines) == ch._header_block(lines), lines
        matched += b"X-Gripd-" in ch._rename_framing(lines)
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
    assert ch._PLAIN_HEADER_LINES.fullmatch(lines) is None


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
        assert ch._encode_cached(code, reason, headers, body, http10) == ch._encode(
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
    if ch._PLAIN_HEADER_LINES.fullmatch(lines) is None:
        return
    assert ch._REQUEST_LINE + ch._rename_framing(lines) == ch._header_block(lines)

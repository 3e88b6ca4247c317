"""The control API's HTTP/1.x framing, apart from its connections (:mod:`.control_http`):
reading a request's header block like Pushpin (through httptools, with the framing headers
renamed so that httptools applies none of its own body rules), a cache of header blocks
already parsed, and encoding the answers (Pushpin's ``Connection: close`` and
``Content-Length``, or a persistent connection's)."""

from __future__ import annotations

import re
import typing

from gripd.core.headers import Headers

# Header lines passed on unchanged (after REQUEST_LINE): each has a ":" and ends in CRLF.
PLAIN_HEADER_LINES = re.compile(rb"(?:[^\n:]*:[^\n]*\r\n)*\r\n")
# Header lines (lower-cased, after their line's LF) whose names become X-Gripd-<name>: the
# framing headers, so that httptools applies none of its body rules, and any name a client
# sent with that prefix already, so that taking one prefix off gives every name back as sent.
_RENAMED_LINES = (b"\ncontent-length:", b"\ntransfer-encoding:", b"\nx-gripd-")


class HeadParser:
    """Collects what httptools reports for one request head: the headers, with the one
    ``X-Gripd-`` prefix :func:`rename_framing` added taken off, and on the way the first
    Content-Length and Expect values and whether a Transfer-Encoding was sent."""

    __slots__ = ("cl_count", "connection", "content_length", "done", "expect", "has_te", "headers")

    def __init__(self) -> None:
        self.headers: Headers = []
        self.done = False
        self.content_length: str | None = None
        self.has_te = False
        self.expect: str | None = None
        self.connection = ""  # the Connection values, lower-cased, comma-joined
        self.cl_count = 0  # Content-Length headers

    def on_header(self, name: bytes, value: bytes) -> None:
        k = name.decode("latin-1")
        v = value.decode("latin-1")
        lk = k.lower()
        if lk.startswith("x-gripd-"):
            k = k[8:]
            lk = lk[8:]
        self.headers.append((k, v))
        if lk == "content-length":
            self.cl_count += 1
            if self.content_length is None:
                self.content_length = v
        elif lk == "transfer-encoding":
            self.has_te = True
        elif lk == "expect" and self.expect is None:
            self.expect = v
        elif lk == "connection":
            self.connection = f"{self.connection},{v.lower()}" if self.connection else v.lower()

    def on_headers_complete(self) -> None:
        self.done = True


def encode(
    code: int, reason: str, headers: Headers, body: bytes, http10: bool, keep: bool = False
) -> bytes:
    """Pushpin's reply framing: given headers, then ``Connection: close``, ``Content-Length``.
    ``keep`` (a persistent connection): no ``Connection: close``; ``Connection: keep-alive``
    for HTTP/1.0, where closing is the default."""
    lines = [f"HTTP/{'1.0' if http10 else '1.1'} {code} {reason}\r\n"]
    for k, v in headers:
        if k.lower() not in ("connection", "transfer-encoding", "content-length"):
            lines.append(f"{k}: {v}\r\n")
    if not keep:
        lines.append("Connection: close\r\n")
    elif http10:
        lines.append("Connection: keep-alive\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(lines).encode("latin-1", "replace") + body


# The few fixed answers (``Published``, ``Updated``, ``Pushpin API``, ``Not Found``, in text or
# JSON) are encoded once: (code, reason, Content-Type, body, HTTP/1.0, keep) -> the bytes.
_ENCODED: dict[tuple[int, str, str, bytes, bool, bool], bytes] = {}
_ENCODED_MAX = 32  # entries; bodies that vary (error texts) are not cached
_ENCODED_BODY_MAX = 64  # bytes


def encode_cached(
    code: int, reason: str, headers: Headers, body: bytes, http10: bool, keep: bool = False
) -> bytes:
    """:func:`encode`, from :data:`_ENCODED` for one Content-Type and a short body."""
    if len(headers) != 1 or len(body) > _ENCODED_BODY_MAX:
        return encode(code, reason, headers, body, http10, keep)
    name, value = headers[0]
    if name != "Content-Type":
        return encode(code, reason, headers, body, http10, keep)
    key = (code, reason, value, body, http10, keep)
    out = _ENCODED.get(key)
    if out is None:
        out = encode(code, reason, headers, body, http10, keep)
        if len(_ENCODED) < _ENCODED_MAX:
            _ENCODED[key] = out
    return out


REQUEST_LINE = b"GET / HTTP/1.1\r\n"  # what httptools is fed before the header lines


def header_block(lines: bytes) -> bytes:
    """The head fed to httptools for the header ``lines`` (what follows the request line, up
    to and with the blank line): the fixed request line, then each line that has a ``:``,
    without its CR, ending in CRLF, Content-Length, Transfer-Encoding and ``X-Gripd-*`` names
    renamed ``X-Gripd-<name>``; then the blank line."""
    out = [REQUEST_LINE[:-2]]
    for ln in lines.split(b"\n"):
        if ln.endswith(b"\r"):
            ln = ln[:-1]
        if b":" not in ln:
            continue
        name, _, value = ln.partition(b":")
        low = name.lower()
        if low in (b"content-length", b"transfer-encoding") or low.startswith(b"x-gripd-"):
            name = b"X-Gripd-" + name
        out.append(name + b":" + value)
    return b"\r\n".join(out) + b"\r\n\r\n"


def rename_framing(lines: bytes) -> bytes:
    """``lines`` (header lines) with each Content-Length, Transfer-Encoding or ``X-Gripd-*``
    header's name (any case) prefixed by ``X-Gripd-``, as :func:`header_block` does line by
    line."""
    low = b"\n" + lines.lower()
    at: list[int] = []
    for pattern in _RENAMED_LINES:
        i = low.find(pattern)
        while i >= 0:
            at.append(i)  # where the name starts in ``lines`` (``low`` has one byte more)
            i = low.find(pattern, i + 1)
    if not at:
        return lines
    at.sort()
    parts: list[bytes] = []
    prev = 0
    for i in at:
        parts += (lines[prev:i], b"X-Gripd-")
        prev = i
    parts.append(lines[prev:])
    return b"".join(parts)


_CL_LINE = b"Content-Length: "  # as publisher libraries write it


class ParsedHead(typing.NamedTuple):
    """A parsed header block, for :class:`HeadCache`."""

    headers: Headers
    cl_index: int  # where its one Content-Length header is in ``headers``
    has_te: bool
    expect: str | None
    connection: str


class HeadCache:
    """Header blocks parsed before on one server, keyed by the block without its
    Content-Length value: a publisher sends the same headers with each request, only the body
    length changes, so httptools need not see them again. Only blocks with one
    ``Content-Length: <digits>`` line are kept, and that value must be digits again to be taken
    from a later request (httptools accepted the rest of the same bytes)."""

    __slots__ = ("_entries",)

    MAX: typing.Final = 64  # entries; then the cache starts over

    def __init__(self) -> None:
        self._entries: dict[bytes, ParsedHead] = {}

    @staticmethod
    def key(lines: bytes) -> tuple[bytes, bytes] | None:
        """(``lines`` without the Content-Length value, the value), or None when ``lines`` has
        no ``Content-Length: <1 to 10 digits>`` line in that spelling."""
        i = lines.find(_CL_LINE)
        if i < 0 or (i > 0 and lines[i - 1] != 0x0A):  # not at a line's start
            return None
        start = i + len(_CL_LINE)
        end = lines.find(b"\r\n", start)
        value = lines[start:end]
        if end < 0 or not 0 < len(value) <= 10 or not value.isdigit():
            return None
        return lines[:start] + lines[end:], value

    def get(self, key: bytes) -> ParsedHead | None:
        return self._entries.get(key)

    def put(self, key: bytes, head: ParsedHead) -> None:
        entries = self._entries
        if len(entries) >= self.MAX:
            entries.clear()
        entries[key] = head

"""Qt-compatible primitives: what Pushpin's Qt 5 code accepts, reproduced for parsing (sans-I/O).

Pushpin reads GRIP instructions and control messages with Qt's JSON parser, ``QByteArray::toInt``,
``QByteArray::fromBase64`` and ``QUrl`` validity. Origins written against Pushpin may rely on
that leniency, so ``instruct.py`` and ``wscontrol.py`` share these (checked against Qt 5.15 in
``tests/core/test_instruct.py``).
"""

from __future__ import annotations

import binascii
import ipaddress
import math
import re

import msgspec

from gripd.core.errors import InstructError

# ---------------------------------------------------------------------------------------------
# Qt-compatible primitives

_QT_WS = " \t\n\v\f\r"  # QByteArray::trimmed() / C isspace
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# More significant digits than any 64-bit integer has: out of every range Qt converts to.
_MAX_DIGITS = 20
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DELETE = bytes(c for c in range(256) if c not in _B64_ALPHABET)


def trim(s: str) -> str:
    return s.strip(_QT_WS)


def raw_bytes(s: str) -> bytes:
    """Header text (latin-1 decoded wire bytes) back to bytes; total for any str."""
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def from_utf8(s: str) -> str:
    """Qt ``QString::fromUtf8`` of header bytes: invalid sequences become U+FFFD. ASCII text
    (most header values) is its own decoding: returned as it is, without the round trip."""
    if s.isascii():
        return s
    return raw_bytes(s).decode("utf-8", "replace")


def to_header_text(s: str) -> str:
    """A JSON string as a header value: UTF-8 bytes kept as latin-1 text (our Headers form)."""
    return s.encode("utf-8", "replace").decode("latin-1")


def decimal_int(body: str) -> int | None:
    """``[+-]?[0-9]+`` (ASCII digits) as an int, or None when it is not one or has more
    significant digits than any 64-bit value: Python's ``int()`` refuses strings past 4300
    digits (ValueError), and no Qt integer conversion accepts such a value anyway."""
    if not _INT_RE.fullmatch(body):
        return None
    digits = body.lstrip("+-").lstrip("0")
    if len(digits) > _MAX_DIGITS:
        return None
    v = int(digits or "0")
    return -v if body.startswith("-") else v


def to_int(s: str | None) -> int | None:
    """``QByteArray::toInt(&ok)``: optional surrounding ASCII whitespace, optional sign,
    decimal digits, within int32; None when not ok. Qt stops at a NUL byte."""
    if s is None:
        return None
    if 0 < len(s) < 10 and s.isascii() and s.isdigit():
        return int(s)  # the usual value (Grip-Timeout: 55): under 10 digits fits in int32
    s = s.split("\0", 1)[0]
    body = s.lstrip(_QT_WS).rstrip(_QT_WS)
    if not _INT_RE.fullmatch(body):
        return None
    v = decimal_int(body)
    return v if v is not None and _INT32_MIN <= v <= _INT32_MAX else None


def _wrap_int32(v: int) -> int:
    return ((v + 2**31) % 2**32) - 2**31


def from_base64(data: bytes) -> bytes:
    """Qt5 ``QByteArray::fromBase64`` (default options): characters outside the alphabet,
    including ``=``, are skipped; leftover bits at the end are dropped."""
    clean = data.translate(None, _B64_DELETE)
    rem = len(clean) % 4
    if rem == 1:
        clean = clean[:-1]
        rem = 0
    if rem:
        clean += b"=" * (4 - rem)
    return binascii.a2b_base64(clean)


# ---------------------------------------------------------------------------------------------
# QUrl::fromEncoded(..).isValid() approximation for Grip-Link (tolerant mode)

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def _host_valid(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        inner = host[1:-1]
        if inner[:1] in ("v", "V"):
            return (
                re.fullmatch(r"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+", inner) is not None
            )
        try:
            ipaddress.IPv6Address(inner.split("%", 1)[0])
        except ValueError:
            return False
        return True
    raw = host.encode("utf-8", "surrogatepass")
    if b"%" in raw:
        if re.search(rb"%(?![0-9A-Fa-f]{2})", raw):
            return False
        raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
    try:
        host = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # After decoding, ASCII is limited to letters, digits, '-', '_' and '.' (Qt's IDNA check).
    if any(c.isascii() and not (c.isalnum() or c in "-_.") for c in host):
        return False
    # Qt's IDNA processing (STD3 rules) rejects empty labels and labels with a '-' at either end
    labels = host.split(".")
    if labels[-1] == "":
        labels.pop()
    return all(lbl and lbl[0] != "-" and lbl[-1] != "-" for lbl in labels) or host == ""


def url_valid(url: str) -> bool:
    """Approximates Qt5 ``QUrl::fromEncoded(url).isValid()``: Qt's tolerant mode repairs most
    things; what it rejects is a bad scheme before ``:``, a relative path with ``:`` before any
    ``/``, a bad port and a bad host."""
    m = re.match(r"[^:/?#]*:", url)
    rest = url
    if m is not None:
        if _SCHEME_RE.fullmatch(url[: m.end() - 1]) is None:
            return False  # "Relative URL's path component contains ':' before any '/'"
        rest = url[m.end() :]
    if not rest.startswith("//"):
        return True
    authority = re.match(r"[^/?#]*", rest[2:])
    assert authority is not None
    hostport = authority.group(0).split("@", 1)[-1]
    host = hostport
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            return False
        host, tail = hostport[: close + 1], hostport[close + 1 :]
        if tail and not tail.startswith(":"):
            return False
        port = tail[1:] if tail else ""
    elif ":" in hostport:
        host, port = hostport.split(":", 1)
    else:
        port = ""
    if port:
        n = decimal_int(port) if port.isascii() and port.isdigit() else None
        if n is None or n > 65535:
            return False
    return _host_valid(host)


# ---------------------------------------------------------------------------------------------
# JSON decoding compatible with Qt5's QJsonDocument::fromJson


class _JsonError(Exception):
    pass


_JSON_WS = " \t\n\r"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUM_RE = re.compile(r"-?(?:0|[0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")
_STR_RAW_RE = re.compile(r'[^"\\]*')
_MAX_DEPTH = 1024


def reject_json_constant(name: str) -> object:
    """``json.loads``'s ``parse_constant``: refuse ``NaN``, ``Infinity`` and ``-Infinity``,
    which Python's ``json`` reads but are not JSON (Qt's parser refuses them)."""
    raise ValueError(f"not JSON: {name}")


_msgspec_decode = msgspec.json.Decoder().decode


def read_json(body: bytes) -> object:
    """JSON as Pushpin reads it (Qt 5's ``QJsonDocument::fromJson``: GRIP instructions, publish
    bodies, ZeroMQ ``J`` messages). Well-formed JSON is read by msgspec; what msgspec refuses
    goes to a parser of Qt 5's grammar, which accepts a UTF-8 BOM, raw control characters,
    unknown escapes and lone surrogate escapes in strings, and numbers like ``.5`` or ``1.``.
    Raises ``ValueError`` for what Qt refuses (``NaN``, a number beyond a double, bad UTF-8 in a
    string, a scalar at the top when msgspec did not read the body, ...)."""
    try:
        return _msgspec_decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    try:
        return _LenientJson(body).parse()
    except (_JsonError, IndexError, ValueError, OverflowError) as e:
        raise ValueError(f"not JSON: {e}") from None


def decode_json(body: bytes) -> object:
    """:func:`read_json` for GRIP instructions and WebSocket control messages: an object or an
    array, else ``InstructError``."""
    try:
        doc = read_json(body)
    except ValueError:
        raise InstructError("failed to parse application/grip-instruct content as JSON") from None
    if not isinstance(doc, (dict, list)):  # Qt5 only accepts an object or array at top level
        raise InstructError("failed to parse application/grip-instruct content as JSON")
    return doc


class _LenientJson:
    """An iterative (no recursion) parser following Qt5 qjsonparser.cpp's grammar."""

    def __init__(self, body: bytes) -> None:
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]
        # Bytes are mapped 1:1 to code points; strings are UTF-8 validated when extracted.
        self.s = body.decode("latin-1")
        self.i = 0

    def ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in _JSON_WS:
            i += 1
        self.i = i

    def parse(self) -> object:
        return self._parse()

    def _string(self) -> str:
        s = self.s
        pieces: list[str] = []
        while True:
            m = _STR_RAW_RE.match(s, self.i)
            assert m is not None
            pieces.append(m.group(0).encode("latin-1").decode("utf-8"))  # strict: Qt rejects
            self.i = m.end()
            ch = s[self.i]
            self.i += 1
            if ch == '"':
                break
            e = s[self.i]
            self.i += 1
            if e == "u":
                hexd = s[self.i : self.i + 4]
                if len(hexd) != 4 or not all(c in "0123456789abcdefABCDEF" for c in hexd):
                    raise _JsonError("bad \\u escape")
                pieces.append(chr(int(hexd, 16)))
                self.i += 4
            elif e in _ESCAPES:
                pieces.append(_ESCAPES[e])
            elif ord(e) < 0x80:
                pieces.append(e)  # Qt: an unknown escape stands for the character itself
            else:
                raise _JsonError("escaped non-ASCII byte")
        text = "".join(pieces)
        # \u escapes are UTF-16 units: join surrogate pairs, keep lone ones (as QString does).
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")

    def _scalar(self, first: str) -> object:
        s, i = self.s, self.i - 1
        for lit, val in (("null", None), ("true", True), ("false", False)):
            if s.startswith(lit, i):
                self.i = i + len(lit)
                return val
        if first in "nft,]}":
            raise _JsonError("illegal value")
        m = _NUM_RE.match(s, i)
        assert m is not None
        num = m.group(0)
        self.i = m.end()
        v = float(num)  # ValueError for "", "-", "." ...
        if not math.isfinite(v):
            raise _JsonError("number out of range")
        return v

    def _parse(self) -> object:
        s = self.s
        self.ws()
        if s[self.i] not in "[{":
            raise _JsonError("top level must be an object or array")
        root: object = None
        # Open containers, innermost last, each with its pending key (objects only).
        stack: list[tuple[dict[str, object] | list[object], list[str]]] = []
        while True:
            self.ws()
            ch = s[self.i]
            if ch in "{[":
                self.i += 1
                if len(stack) >= _MAX_DEPTH:
                    raise _JsonError("too deep")
                c: dict[str, object] | list[object] = {} if ch == "{" else []
                if stack:
                    self._attach(stack, c)
                else:
                    root = c
                stack.append((c, []))
                self.ws()
                if s[self.i] == ("}" if ch == "{" else "]"):
                    self.i += 1
                    stack.pop()
                else:
                    if ch == "{":
                        self._key(stack)
                    continue  # parse the first member
            else:
                self.i += 1
                self._attach(stack, self._string() if ch == '"' else self._scalar(ch))
            # After a value: separators and closers.
            while stack:
                self.ws()
                container = stack[-1][0]
                ch = s[self.i]
                self.i += 1
                if ch == ",":
                    if isinstance(container, dict):
                        self._key(stack)
                    break
                if ch != ("}" if isinstance(container, dict) else "]"):
                    raise _JsonError("expected ',' or a closer")
                stack.pop()
            if not stack:
                self.ws()
                if self.i != len(s):
                    raise _JsonError("garbage at end")
                return root

    def _key(self, stack: list[tuple[dict[str, object] | list[object], list[str]]]) -> None:
        s = self.s
        self.ws()
        if s[self.i] != '"':
            raise _JsonError("expected key")
        self.i += 1
        key = self._string()
        self.ws()
        if s[self.i] != ":":
            raise _JsonError("expected ':'")
        self.i += 1
        stack[-1][1].append(key)

    @staticmethod
    def _attach(
        stack: list[tuple[dict[str, object] | list[object], list[str]]], value: object
    ) -> None:
        container, keys = stack[-1]
        if isinstance(container, dict):
            container[keys.pop()] = value  # duplicate keys: the last one wins, as in Qt
        else:
            container.append(value)


# ---------------------------------------------------------------------------------------------
# QVariant conversions of JSON values


def variant_to_int(v: object) -> int | None:
    """``QVariant::canConvert(Int)`` then ``toInt()``: None when not convertible (null, list,
    object); strings that are not integers give 0; doubles are rounded (qRound64) and then
    truncated to 32 bits like ``int(qlonglong)``."""
    if v is None or isinstance(v, (list, dict)):
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        body = v.strip()
        if not body.isascii() or not _INT_RE.fullmatch(body):
            return 0
        n = decimal_int(body)
        return _wrap_int32(n) if n is not None and -(2**63) <= n < 2**63 else 0
    if isinstance(v, (int, float)):
        try:
            d = float(v)
        except OverflowError:
            d = math.inf
        if not math.isfinite(d) or not -(2.0**63) <= math.floor(d + 0.5) < 2.0**63:
            return 0  # x86 out-of-range conversion gives INT64_MIN, whose low 32 bits are 0
        return _wrap_int32(math.floor(d + 0.5))
    return None  # pragma: no cover - no other JSON types

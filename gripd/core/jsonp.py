"""JSON-P (F46): turning a GET with a callback into the real request, and wrapping answers.

Pushpin 1.36 does this in two places with two different JSON shapes [verified]:

- the proxy (``src/proxy/requestsession.cpp``) wraps responses it relays from the origin and its
  own errors: ``/**/cb({"code": 200, "reason": "OK", "headers": {...}, "body": "..."});`` with
  spaces, headers = first value per exact name -> :func:`wrap_response`, or, when the origin's
  response is still streaming at the start, :class:`JsonpStream` (chunked, no Cache-Control);
- the handler (``src/handler/httpsession.cpp`` respond) wraps a response hold's timeout
  response and a published ``http-response``: compact, keys sorted
  (``{"body":...,"code":...,"headers":...,"reason":...}``), headers merged case-insensitively
  with ``", "``, every other header kept -> :func:`wrap_held_response`.

A stream hold (and a GRIP response without a hold) is never wrapped: its initial response gets
CORS instead (:func:`gripd.core.cors.apply_cors`), and published stream content goes out as is.

Text is converted as Qt 5 does (``QString::fromUtf8(QByteArray)``): it stops at the first NUL
byte and each byte that does not start a complete valid UTF-8 sequence becomes U+FFFD. Strings
are escaped as QJsonDocument does: ``\\" \\\\ \\b \\f \\n \\r \\t``, other controls as
``\\u00xx``, everything else (DEL, ``/``, non-ASCII) raw UTF-8. Header values are ``str``
holding latin-1-decoded bytes, as everywhere in gripd; so is :attr:`JsonpRequest.callback`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Literal, Protocol

from gripd.core.errors import ClientError
from gripd.core.headers import Headers, get
from gripd.core.http import HOP_BY_HOP_RESPONSE, HttpResponse, text_response
from gripd.core.qtcompat import reject_json_constant

Mode = Literal["basic", "extended"]

CONTENT_TYPE = "application/javascript"
ENCODE_ERROR = "Upstream response could not be JSON-P encoded."

# Pushpin's 400 messages (requestsession.cpp tryApplyJsonp); the listener adds the "\n".
ERR_CALLBACK = "Invalid callback parameter."
ERR_METHOD = "Invalid _method parameter."
ERR_HEADERS = "Invalid _headers parameter."
ERR_BODY = "Invalid body parameter."
ERR_UNDERSCORE_BODY = "Invalid _body parameter."

_PERCENT_HEX = re.compile(rb"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LONE_SURROGATE = re.compile("[\udc80-\udcff]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")


class _JsonpRouteLike(Protocol):
    """The route fields :meth:`JsonpConfig.from_route` reads (gripd.core.routes.Route)."""

    @property
    def jsonp_mode(self) -> str: ...
    @property
    def jsonp_cb(self) -> str: ...
    @property
    def jsonp_body(self) -> str | None: ...
    @property
    def jsonp_defcb(self) -> str | None: ...
    @property
    def jsonp_defmethod(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class JsonpConfig:
    """A route's JSON-P options (F46): ``jsonp_mode``, ``jsonp_cb``, ``jsonp_body``,
    ``jsonp_defcb``, ``jsonp_defmethod``. ``default_method`` None (or empty) means GET in
    extended mode and POST in basic mode, as Pushpin's domainmap.cpp."""

    mode: Mode = "extended"
    callback_param: str = "callback"
    body_param: str | None = None
    default_callback: str | None = None
    default_method: str | None = None

    @classmethod
    def from_route(cls, route: _JsonpRouteLike) -> JsonpConfig:
        mode: Mode = "basic" if route.jsonp_mode == "basic" else "extended"
        return cls(
            mode=mode,
            callback_param=route.jsonp_cb or "callback",
            body_param=route.jsonp_body or None,
            default_callback=route.jsonp_defcb or None,
            default_method=route.jsonp_defmethod or None,
        )


@dataclass(frozen=True, slots=True)
class JsonpRequest:
    """The request to forward in place of a JSON-P GET, and how to wrap its answer.

    ``uri`` is path + query without the JSON-P parameters (no ``?`` when none are left);
    ``headers`` are the client's with ``_headers`` added, Host and ``Accept: */*`` in Pushpin's
    order; ``body`` is from ``_body`` or the route's body parameter."""

    method: str
    uri: str
    headers: Headers
    body: bytes
    callback: str
    mode: Mode


# --- request side ---------------------------------------------------------------------------


def _decode_percent(text: str) -> bytes:
    """Decode every ``%XX``; any other byte (a stray ``%`` too) is kept."""
    raw = text.encode("latin-1", "replace")
    if b"%" not in raw:
        return raw
    return _PERCENT_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


@dataclass(slots=True)
class _Item:
    raw: str
    key: bytes
    value: bytes
    has_value: bool


def _parse_query(query: str) -> list[_Item]:
    """Split a query as QUrlQuery does, on ``&`` then the first ``=``.

    Qt parses the request URI in tolerant mode: one ``%`` not followed by two hex digits
    makes every ``%`` of the query literal (``%41`` stays ``%41``) [verified]."""
    literal = _STRAY_PERCENT.search(query) is not None
    items: list[_Item] = []
    for raw in query.split("&"):
        key, eq, value = raw.partition("=")
        if literal:
            k, v = key.encode("latin-1", "replace"), value.encode("latin-1", "replace")
        else:
            k, v = _decode_percent(key), _decode_percent(value)
        items.append(_Item(raw, k, v, bool(eq)))
    return items


def _first(items: list[_Item], name: bytes) -> _Item | None:
    for item in items:
        if item.key == name:
            return item
    return None


def _qt_printable(method: str) -> bool:
    """QChar::isPrint over the latin-1 decoded method: no Cc (C0, DEL, C1) and no U+00AD."""
    return all(not (c < " " or "\x7f" <= c <= "\x9f" or c == "\xad") for c in method)


def _parse_headers_param(value: bytes) -> Headers:
    """``_headers``: a JSON object of string values, sorted by name as Qt's QVariantMap
    (duplicate names: the last wins [verified]); Host and Accept are ignored."""
    try:
        doc = json.loads(value.decode("utf-8"), parse_constant=reject_json_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ClientError(ERR_HEADERS) from None
    if not isinstance(doc, dict):
        raise ClientError(ERR_HEADERS)
    out: Headers = []
    for key in sorted(doc, key=_utf16_key):
        val = doc[key]
        if not isinstance(val, str):
            raise ClientError(ERR_HEADERS)
        if key.lower() in ("host", "accept"):
            continue
        # Stored as latin-1-decoded UTF-8 bytes; a lone surrogate becomes "?" as in Qt.
        name = key.encode("utf-8", "replace").decode("latin-1")
        text = val.encode("utf-8", "replace").decode("latin-1")
        # Not Pushpin (it passes these on to zurl): a name that is not a token or a value with
        # CR, LF or NUL could split the origin request, so it is rejected the same way.
        if _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(text) is not None:
            raise ClientError(ERR_HEADERS)
        out.append((name, text))
    return out


def _utf16_key(s: str) -> bytes:
    """QString ordering: by UTF-16 code unit."""
    return s.encode("utf-16-be", "surrogatepass")


def parse_jsonp_request(
    method: str, uri: str, headers: Headers, cfg: JsonpConfig
) -> JsonpRequest | None:
    """F46: the request JSON-P turns this one into, or None when JSON-P does not apply.

    Applies to a GET whose query has the callback parameter, or, when the route has both
    ``jsonp_defcb`` and ``jsonp_body``, the body parameter. Only call it when
    ``auto_cross_origin`` or the route's ``aco`` is on. Raises :class:`ClientError` (400) with
    Pushpin's message for an empty callback, an empty/unprintable (or, unlike Pushpin, not a
    token) ``_method``, a ``_headers`` that is not a JSON object of strings, or an empty body
    parameter.
    """
    if method != "GET":
        return None
    path, qmark, query = uri.partition("?")
    if not qmark:
        return None
    cb_name = (cfg.callback_param or "callback").encode("utf-8", "replace")
    body_name = cfg.body_param.encode("utf-8", "replace") if cfg.body_param else None
    items = _parse_query(query)

    cb_item = _first(items, cb_name)
    if cb_item is None and (
        not cfg.default_callback or body_name is None or _first(items, body_name) is None
    ):
        return None

    removed: set[bytes] = set()
    if cb_item is not None:
        if not cb_item.value:
            raise ClientError(ERR_CALLBACK)
        callback = cb_item.value.decode("latin-1")
        removed.add(cb_name)
    else:
        callback = (cfg.default_callback or "").encode("utf-8", "replace").decode("latin-1")

    new_method = ""
    m_item = _first(items, b"_method")
    if m_item is not None:
        new_method = m_item.value.decode("latin-1")
        # Pushpin: non-empty and QChar::isPrint. Also a token here, so a space cannot split
        # the origin request line (Pushpin forwards "g t" as is).
        if not new_method or not _qt_printable(new_method) or not _TOKEN.fullmatch(new_method):
            raise ClientError(ERR_METHOD)
        removed.add(b"_method")

    new_headers: Headers = []
    h_item = _first(items, b"_headers")
    if h_item is not None:
        new_headers = _parse_headers_param(h_item.value)
        removed.add(b"_headers")

    body = b""
    if body_name is not None:
        # jsonp_body replaces _body, which is then left in the query [verified].
        b_item = _first(items, body_name)
        if b_item is not None:
            if not b_item.value:
                raise ClientError(ERR_BODY)
            body = b_item.value
            new_headers = [(k, v) for k, v in new_headers if k.lower() != "content-type"]
            new_headers.append(("Content-Type", "application/json"))
            removed.add(body_name)
    else:
        b_item = _first(items, b"_body")
        if b_item is not None:
            if not b_item.value:
                raise ClientError(ERR_UNDERSCORE_BODY)
            body = b_item.value
            removed.add(b"_body")

    kept = [_requery(it.raw) for it in items if it.key not in removed]
    new_uri = path + "?" + "&".join(kept) if kept else path

    host = get(headers, "Host")
    if host is not None:
        new_headers.append(("Host", host))
    new_headers.append(("Accept", "*/*"))
    new_headers.extend((k, v) for k, v in headers if k.lower() not in ("host", "accept"))

    return JsonpRequest(
        method=new_method or cfg.default_method or ("POST" if cfg.mode == "basic" else "GET"),
        uri=new_uri,
        headers=new_headers,
        body=body,
        callback=callback,
        mode=cfg.mode,
    )


def _requery(raw: str) -> str:
    """An item as QUrlQuery writes it back: ``=`` inside the value becomes ``%3D``
    (``a==b`` -> ``a=%3Db`` [verified]); all else as received."""
    key, eq, value = raw.partition("=")
    return key + eq + value.replace("=", "%3D") if eq else raw


# --- response side --------------------------------------------------------------------------


def qt_text(data: bytes) -> str:
    """``QString::fromUtf8(QByteArray)`` in Qt 5: up to the first NUL, and every byte that does
    not start a complete valid sequence replaced by U+FFFD (one per byte, unlike Python's
    ``errors="replace"``) [verified against Pushpin 1.36]."""
    nul = data.find(b"\x00")
    if nul != -1:
        data = data[:nul]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # surrogateescape maps exactly the undecodable bytes, one escape each.
        return _LONE_SURROGATE.sub("\ufffd", data.decode("utf-8", "surrogateescape"))


def json_string(text: str) -> bytes:
    """A JSON string literal escaped as QJsonDocument (Qt 5) writes it, UTF-8 encoded."""
    return encode_basestring(text).encode("utf-8")


def _latin1(value: str) -> bytes:
    return value.encode("latin-1", "replace")


def _trim_newline(body: bytes) -> bytes:
    if body.endswith(b"\r\n"):
        return body[:-2]
    if body.endswith(b"\n"):
        return body[:-1]
    return body


def _proxy_headers_json(headers: Headers) -> bytes:
    """requestsession.cpp: the first value of each exact (case-sensitive) name, sorted; an
    empty value becomes ``null`` (a QVariant holding an empty QByteArray)."""
    first: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in HOP_BY_HOP_RESPONSE:
            continue
        key = qt_text(_latin1(name))
        if key not in first:
            first[key] = value
    parts = []
    for key in sorted(first, key=_utf16_key):
        text = qt_text(_latin1(first[key]))
        parts.append(json_string(key) + b":" + (json_string(text) if text else b"null"))
    return b"{" + b",".join(parts) + b"}"


def _proxy_start(callback: str, mode: Mode, code: int, reason: str, headers: Headers) -> bytes:
    out = b"/**/" + _latin1(callback) + b"("
    if mode == "extended":
        out += b'{"code": %d, "reason": %b, "headers": %b, "body": ' % (
            code,
            json_string(qt_text(_latin1(reason))),
            _proxy_headers_json(headers),
        )
    return out


def wrap_response(resp: HttpResponse, req: JsonpRequest) -> HttpResponse:
    """F46, proxy path: the whole origin response (or a proxy error) as ``200 OK``
    ``application/javascript``, plus every ``Cache-Control`` of ``resp`` [verified].

    Extended: ``/**/cb({"code": N, "reason": "...", "headers": {...}, "body": "..."});\\n``;
    basic: ``/**/cb(<body less one trailing newline>);\\n``. Pass ``resp.headers`` as Pushpin
    saw them: the origin's, including its ``Content-Length`` (hop-by-hop ones are skipped), and
    for a proxy error ``Content-Type`` + ``Content-Length``. CORS is not applied to the result.
    """
    start = _proxy_start(req.callback, req.mode, resp.code, resp.reason, resp.headers)
    if req.mode == "extended":
        body = start + json_string(qt_text(resp.body)) + b"});\n"
    else:
        body = start + _trim_newline(resp.body) + b");\n"
    headers: Headers = [("Content-Type", CONTENT_TYPE)]
    headers.extend((k, v) for k, v in resp.headers if k.lower() == "cache-control")
    return HttpResponse(200, "OK", headers, body)


def encode_error_response() -> HttpResponse:
    """Pushpin's answer when a response cannot be JSON-P encoded. With Qt's lossy text
    conversion that never happens (nor here); kept for the message text (F47)."""
    return text_response(500, ENCODE_ERROR + "\n")


class JsonpStream:
    """F46, proxy path, for an origin response still arriving when the answer starts:
    ``start`` gives the head (``200 OK``, ``Content-Type: application/javascript`` only; send
    the body chunked) and the opening bytes, ``feed`` each body piece, ``finish`` the end.

    Basic mode holds back a trailing newline of each piece until more arrives, and drops it at
    the end, as Pushpin. Extended mode escapes each piece; unlike Pushpin (which converts each
    piece alone, a FIXME there) a UTF-8 sequence split across pieces is kept whole. A NUL ends
    the text of its piece, as in Pushpin.
    """

    __slots__ = ("_callback", "_held", "_mode")

    def __init__(self, req: JsonpRequest) -> None:
        self._mode = req.mode
        self._callback = req.callback
        self._held = b""

    def start(self, code: int, reason: str, headers: Headers) -> tuple[HttpResponse, bytes]:
        head = HttpResponse(200, "OK", [("Content-Type", CONTENT_TYPE)], b"")
        start = _proxy_start(self._callback, self._mode, code, reason, headers)
        if self._mode == "extended":
            start += b'"'
        return head, start

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        if self._mode == "basic":
            body = _trim_newline(buf)
            self._held = buf[len(body) :]
            return body
        nul = buf.find(b"\x00")
        if nul != -1:
            buf, self._held = buf[:nul], b""
        else:
            cut = _complete_utf8_prefix(buf)
            buf, self._held = buf[:cut], buf[cut:]
        return json_string(qt_text(buf))[1:-1]

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        if self._mode == "basic":
            return b");\n"  # the held newline is trimmed at the end
        return json_string(qt_text(held))[1:-1] + b'"});\n'


def _complete_utf8_prefix(buf: bytes) -> int:
    """Length of ``buf`` without a trailing incomplete (but so far valid-looking) UTF-8
    sequence of at most 3 bytes."""
    n = len(buf)
    for back in range(1, min(3, n) + 1):
        b = buf[n - back]
        if b < 0x80:
            return n
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n - back if need > back else n
    return n


def wrap_held_response(resp: HttpResponse, req: JsonpRequest) -> HttpResponse:
    """F46, handler path: a response hold's timeout response or a published ``http-response``.

    Extended body: ``/**/cb({"body":"...","code":N,"headers":{...},"reason":"..."});\\n``
    (QJsonDocument compact, keys sorted; each header name once, first spelling, values joined
    with ``", "``); basic: ``/**/cb(<body less one trailing newline>);\\n``. The answer is
    ``200 OK`` with ``resp``'s headers less Content-Length and Content-Type, then
    ``Content-Type: application/javascript`` [verified].
    """
    headers = [(k, v) for k, v in resp.headers if k.lower() != "content-length"]
    if req.mode == "extended":
        merged: dict[str, list[str]] = {}
        spelling: dict[str, str] = {}
        for name, value in headers:
            lname = name.lower()
            if lname not in spelling:
                spelling[lname] = name
                merged[name] = []
            merged[spelling[lname]].append(qt_text(_latin1(value)))
        hjson = b",".join(
            json_string(qt_text(_latin1(k))) + b":" + json_string(", ".join(merged[k]))
            for k in sorted(merged, key=_utf16_key)
        )
        inner = b'{"body":%b,"code":%d,"headers":{%b},"reason":%b}' % (
            json_string(qt_text(resp.body)),
            resp.code,
            hjson,
            json_string(qt_text(_latin1(resp.reason))),
        )
    else:
        inner = _trim_newline(resp.body)
    body = b"/**/" + _latin1(req.callback) + b"(" + inner + b");\n"
    out = [(k, v) for k, v in headers if k.lower() != "content-type"]
    out.append(("Content-Type", CONTENT_TYPE))
    return HttpResponse(200, "OK", out, body)

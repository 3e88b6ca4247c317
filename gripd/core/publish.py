"""Publish items and their formats (F28, F29, F30), and applying an http-response to a hold (F22).

Validation follows Pushpin 1.36 ``PublishItem::fromVariant`` / ``PublishFormat::fromVariant``
(src/handler/publishitem.cpp, publishformat.cpp) check by check and in the same order, so the
first error reported, and its text, are Pushpin's. Values come either from JSON (the HTTP control
API, ``J``-prefixed ZeroMQ messages) or from tnetstring (``binary=True``: strings are ``bytes``,
``*-bin`` keys are not base64; see F31).

Pushpin converts numbers with Qt's ``QVariant::toInt`` rules, which are reproduced in
``_to_int``: strings are parsed as decimal (else 0), doubles round half up, and the result is
truncated to 32 bits. Those quirks are observable (``"code": "abc"`` publishes with code 0) and
were verified against a running Pushpin 1.36.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch

from gripd.core.errors import PublishError
from gripd.core.headers import Headers, field_problem, is_safe_text, parse_list, show
from gripd.core.http import HttpResponse, reason_phrase
from gripd.core.qtcompat import decimal_int, read_json

# The hub hands items to its workers pickled (never anything read from the network). Each
# class pickles by its constructor arguments (``__reduce__``): 2-3x faster, and half the bytes,
# of the default for slotted dataclasses.


@dataclass(slots=True, init=False)
class HttpResponseFormat:
    """F30 ``http-response``: what a held long-poll request is answered with."""

    action: Literal["send", "hint", "close"]
    code: int | None
    reason: str | None
    headers: Headers
    body: bytes | None
    body_patch: list[Any] | None
    content_filters: list[str] | None

    # An explicit __init__ (init=False): a compiled build (mypyc) compiles it; the one the
    # dataclass decorator generates stays interpreted and cost ~5x more per object.
    def __init__(
        self,
        action: Literal["send", "hint", "close"] = "send",
        code: int | None = None,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes | None = None,
        body_patch: list[Any] | None = None,
        content_filters: list[str] | None = None,
    ) -> None:
        self.action = action
        self.code = code
        self.reason = reason
        self.headers = [] if headers is None else headers
        self.body = body
        self.body_patch = body_patch
        self.content_filters = content_filters

    def __reduce__(self) -> tuple[Any, ...]:  # by constructor arguments (above)
        return (
            HttpResponseFormat,
            (
                self.action,
                self.code,
                self.reason,
                self.headers,
                self.body,
                self.body_patch,
                self.content_filters,
            ),
        )


@dataclass(slots=True, init=False)
class HttpStreamFormat:
    """F30 ``http-stream``: bytes appended to held streams, or a hint/close."""

    action: Literal["send", "hint", "close"]
    content: bytes
    content_filters: list[str] | None

    def __init__(
        self,
        action: Literal["send", "hint", "close"] = "send",
        content: bytes = b"",
        content_filters: list[str] | None = None,
    ) -> None:  # explicit: see HttpResponseFormat
        self.action = action
        self.content = content
        self.content_filters = content_filters

    def __reduce__(self) -> tuple[Any, ...]:  # by constructor arguments (above)
        return (HttpStreamFormat, (self.action, self.content, self.content_filters))


@dataclass(slots=True, init=False)
class WsMessageFormat:
    """F30 ``ws-message``: a message (or close) for WebSocket subscribers."""

    action: Literal["send", "close", "hint", "refresh"]
    type: Literal["text", "binary", "ping", "pong"]
    content: bytes
    code: int | None
    reason: str | None
    content_filters: list[str] | None

    def __init__(
        self,
        action: Literal["send", "close", "hint", "refresh"] = "send",
        type: Literal["text", "binary", "ping", "pong"] = "text",
        content: bytes = b"",
        code: int | None = None,
        reason: str | None = None,
        content_filters: list[str] | None = None,
    ) -> None:  # explicit: see HttpResponseFormat
        self.action = action
        self.type = type
        self.content = content
        self.code = code
        self.reason = reason
        self.content_filters = content_filters

    def __reduce__(self) -> tuple[Any, ...]:  # by constructor arguments (above)
        return (
            WsMessageFormat,
            (self.action, self.type, self.content, self.code, self.reason, self.content_filters),
        )


@dataclass(slots=True, init=False)
class PublishItem:
    """F29: one published item; any subset of the three formats may be present."""

    channel: str
    id: str | None
    prev_id: str | None
    http_response: HttpResponseFormat | None
    http_stream: HttpStreamFormat | None
    ws_message: WsMessageFormat | None
    meta: dict[str, str]
    size: int | None
    no_seq: bool

    def __init__(
        self,
        channel: str,
        id: str | None = None,
        prev_id: str | None = None,
        http_response: HttpResponseFormat | None = None,
        http_stream: HttpStreamFormat | None = None,
        ws_message: WsMessageFormat | None = None,
        meta: dict[str, str] | None = None,
        size: int | None = None,
        no_seq: bool = False,
    ) -> None:  # explicit: see HttpResponseFormat
        self.channel = channel
        self.id = id
        self.prev_id = prev_id
        self.http_response = http_response
        self.http_stream = http_stream
        self.ws_message = ws_message
        self.meta = {} if meta is None else meta
        self.size = size
        self.no_seq = no_seq

    def __reduce__(self) -> tuple[Any, ...]:  # by constructor arguments (above)
        return (
            PublishItem,
            (
                self.channel,
                self.id,
                self.prev_id,
                self.http_response,
                self.http_stream,
                self.ws_message,
                self.meta,
                self.size,
                self.no_seq,
            ),
        )


_ITEM = "publish item object"
_INT_RE = re.compile(r"[ \t\n\r\v\f]*([+-]?[0-9]+)[ \t\n\r\v\f]*\Z")
_INT64_MIN = -(2**63)
_B64_STRIP = re.compile(rb"[^A-Za-z0-9+/]")


def _fail(message: str) -> PublishError:
    return PublishError(message)


def _keyed(v: object) -> dict[str, Any] | None:
    """``v`` as a str-keyed dict (tnetstring keys may be bytes), or None if not an object."""
    if not isinstance(v, dict):
        return None
    if type(v) is dict:
        for k in v:
            if type(k) is not str:
                break
        else:
            return v  # JSON objects: already str-keyed (callers only read the result)
    out: dict[str, Any] = {}
    for k, val in v.items():
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        out[str(k)] = val
    return out


def _as_str(v: object) -> str | None:
    """Qt ``getString``: a string or byte string (decoded as UTF-8), else None."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    return None


def _as_bytes(v: object) -> bytes | None:
    if isinstance(v, str):
        return v.encode("utf-8", "replace")
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    return None


def _get_string(obj: dict[str, Any], pn: str, key: str, *, required: bool = False) -> str | None:
    if key not in obj:
        if required:
            raise _fail(f"{pn} does not contain '{key}'")
        return None
    s = _as_str(obj[key])
    if s is None:
        raise _fail(f"{pn} contains '{key}' with wrong type")
    return s


def _trunc32(n: int) -> int:
    n &= 0xFFFFFFFF
    return n - 0x100000000 if n >= 0x80000000 else n


def _round_qint64(d: float) -> int:
    """``qRound64`` (half rounds up) with x86's overflow result for out-of-range values."""
    if not math.isfinite(d):
        return _INT64_MIN
    r = math.floor(d + 0.5)
    if not _INT64_MIN <= r < 2**63:
        return _INT64_MIN
    return r


def _to_int(v: object) -> int | None:
    """Qt ``canConvert(Int)`` + ``toInt()``: None when the type can't convert (null, list, map)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        if _INT64_MIN <= v < 2**63:
            return _trunc32(v)
        try:
            return _trunc32(_round_qint64(float(v)))  # Qt parses big integers as doubles
        except OverflowError:
            return 0
    if isinstance(v, float):
        return _trunc32(_round_qint64(v))
    s = _as_str(v)
    if s is not None:
        m = _INT_RE.match(s)
        if m is None:
            return 0
        n = decimal_int(m.group(1))  # None past 64 bits (int() fails past 4300 digits)
        return _trunc32(n) if n is not None and _INT64_MIN <= n < 2**63 else 0
    return None


def _b64decode(s: str) -> bytes:
    """Lenient base64 like ``QByteArray::fromBase64``: skips foreign characters, no padding."""
    data = _B64_STRIP.sub(b"", s.encode("utf-8", "replace"))
    if len(data) % 4 == 1:
        data = data[:-1]
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:  # pragma: no cover - input is normalised above
        return b""


def _content_filters(obj: dict[str, Any], pn: str) -> list[str] | None:
    if "content-filters" not in obj:
        return None
    v = obj["content-filters"]
    if not isinstance(v, list):
        raise _fail(f"{pn} contains 'content-filters' with wrong type")
    out: list[str] = []
    for f in v:
        s = _as_str(f)
        if s is None:
            raise _fail("content-filters contains element with wrong type")
        out.append(s)
    return out


def _action(obj: dict[str, Any], pn: str) -> Literal["send", "hint", "close"]:
    action = _get_string(obj, pn, "action")
    if action is None or action == "send":
        return "send"
    if action == "hint":
        return "hint"
    if action == "close":
        return "close"
    # Pushpin fails here without setting a message: the API answers "Invalid format: ".
    # ("refresh" for ws-message arrives in Pushpin 1.38; 1.36 rejects it the same way.)
    raise _fail("")


def _check_header(name: str, value: str) -> None:
    """Reject what would split the response (RFC 9110 5.1, 5.5). Pushpin 1.36 writes such
    headers raw; gripd refuses the item (docs/compatibility.md, deliberate differences)."""
    problem = field_problem(name, value)
    if problem == "name":
        raise _fail(f"headers contains invalid name '{show(name)}'")
    if problem == "value":
        raise _fail(f"headers contains '{show(name)}' with invalid value")


def _headers(v: object, pn: str, binary: bool) -> Headers:
    out: Headers = []
    if isinstance(v, list):
        for h in v:
            if not isinstance(h, list):
                raise _fail("headers contains element with wrong type")
            if len(h) != 2:
                raise _fail("headers contains list with wrong number of elements")
            name = _as_str(h[0])
            if name is None:
                raise _fail("header contains name element with wrong type")
            val = _as_str(h[1])
            if val is None:
                raise _fail("header contains value element with wrong type")
            _check_header(name, val)
            out.append((name, val))
        return out
    d = _keyed(v)
    if d is None:
        raise _fail(f"{pn} contains 'headers' with wrong type")
    # A JSON object becomes a QVariantMap, which iterates in key order.
    # (a tnetstring dict becomes a QVariantHash, whose order is arbitrary: keep it as given).
    keys = list(d) if binary else sorted(d)
    for k in keys:
        val = _as_str(d[k])
        if val is None:
            raise _fail(f"headers contains '{k}' with wrong type")
        _check_header(k, val)
        out.append((k, val))
    return out


def _http_response(v: object, binary: bool) -> HttpResponseFormat:
    pn = "'http-response'"
    obj = _keyed(v)
    if obj is None:
        raise _fail(f"{pn} is not an object")
    out = HttpResponseFormat(action=_action(obj, pn))
    if out.action != "send":
        return out
    if "code" in obj:
        code = _to_int(obj["code"])
        if code is None:
            raise _fail(f"{pn} contains 'code' with wrong type")
        if not 0 <= code <= 999:
            raise _fail(f"{pn} contains 'code' with invalid value")
        out.code = code
    else:
        out.code = 200
    reason = _get_string(obj, pn, "reason")
    if reason and not is_safe_text(reason):  # it goes into the status line
        raise _fail(f"{pn} contains 'reason' with invalid value")
    out.reason = reason if reason else None
    if "headers" in obj:
        out.headers = _headers(obj["headers"], pn, binary)
    out.content_filters = _content_filters(obj, pn)
    if not binary and "body-bin" in obj:
        s = _get_string(obj, pn, "body-bin")
        out.body = _b64decode(s or "")
    elif "body" in obj:
        body = _as_bytes(obj["body"])
        if body is None:
            raise _fail(f"{pn} contains 'body' with wrong type")
        out.body = body
    elif "body-patch" in obj:
        patch = obj["body-patch"]
        if not isinstance(patch, list):
            raise _fail(f"{pn} contains 'body-patch' with wrong type")
        out.body_patch = patch
    elif binary:
        raise _fail(f"{pn} does not contain 'body' or 'body-patch'")
    else:
        raise _fail(f"{pn} does not contain 'body', 'body-bin', or 'body-patch'")
    return out


def _http_stream(v: object, binary: bool) -> HttpStreamFormat:
    pn = "'http-stream'"
    obj = _keyed(v)
    if obj is None:
        raise _fail(f"{pn} is not an object")
    out = HttpStreamFormat(action=_action(obj, pn))
    if out.action != "send":
        return out
    out.content_filters = _content_filters(obj, pn)
    if not binary and "content-bin" in obj:
        s = _get_string(obj, pn, "content-bin")
        out.content = _b64decode(s or "")
    elif "content" in obj:
        content = _as_bytes(obj["content"])
        if content is None:
            raise _fail(f"{pn} contains 'content' with wrong type")
        out.content = content
    elif binary:
        raise _fail(f"{pn} does not contain 'content'")
    else:
        raise _fail(f"{pn} does not contain 'content' or 'content-bin'")
    return out


_WS_TYPES: dict[str, Literal["text", "binary", "ping", "pong"]] = {
    "text": "text",
    "binary": "binary",
    "ping": "ping",
    "pong": "pong",
}


def _ws_message(v: object, binary: bool) -> WsMessageFormat:
    pn = "'ws-message'"
    obj = _keyed(v)
    if obj is None:
        raise _fail(f"{pn} is not an object")
    out = WsMessageFormat(action=_action(obj, pn))
    if out.action == "send":
        type_str = _get_string(obj, pn, "type")
        mtype: Literal["text", "binary", "ping", "pong"] | None = None
        if type_str is not None:
            mtype = _WS_TYPES.get(type_str)
            if mtype is None:
                raise _fail(f"{pn} contains 'type' with unknown value")
        out.content_filters = _content_filters(obj, pn)
        if "content-bin" in obj:
            cb = obj["content-bin"]
            if binary:
                if not isinstance(cb, bytes | bytearray):
                    raise _fail(f"{pn} contains 'content-bin' with wrong type")
                out.content = bytes(cb)
            else:
                if not isinstance(cb, str):
                    raise _fail(f"{pn} contains 'content-bin' with wrong type")
                out.content = _b64decode(cb)
            out.type = mtype or "binary"
        elif "content" in obj:
            content = _as_bytes(obj["content"])
            if content is None:
                raise _fail(f"{pn} contains 'content' with wrong type")
            out.content = content
            out.type = mtype or "text"
        elif mtype in (None, "text", "binary"):
            raise _fail(f"{pn} does not contain 'content' or 'content-bin'")
        else:
            out.type = mtype
    elif out.action == "close":
        if "code" in obj:
            code = _to_int(obj["code"])
            if code is None:
                raise _fail(f"{pn} contains 'code' with wrong type")
            if code < 0:
                raise _fail(f"{pn} contains 'code' with invalid value")
            out.code = code
        reason = _get_string(obj, pn, "reason")
        out.reason = reason if reason else None
    return out


def parse_item(obj: object, *, binary: bool = False, channel: str | None = None) -> PublishItem:
    """Validate one item (F29, F30) and return it, or raise ``PublishError``.

    ``obj`` is a decoded JSON object, or with ``binary=True`` a decoded tnetstring (strings are
    bytes; ``body-bin``/``content-bin`` for HTTP are not recognised, ``content-bin`` for WS is
    raw). A non-empty ``channel`` (the ZeroMQ SUB frame) wins over the item's. Formats may be
    under ``formats`` or directly on the item (go-pubcontrol). Messages are Pushpin's, without
    the API's ``Invalid format: `` prefix.
    """
    item_obj = _keyed(obj)
    if item_obj is None:
        raise _fail(f"{_ITEM} is not an object")
    # A non-empty SUB-frame channel wins; otherwise the item must name one.
    ch = channel or (_get_string(item_obj, _ITEM, "channel", required=True) or "")
    item = PublishItem(channel=ch)
    item.id = _get_string(item_obj, _ITEM, "id")
    if item.id is not None and not is_safe_text(item.id):
        # The id is sent back to the origin as a Grip-Last header value (F23, F27).
        raise _fail(f"{_ITEM} contains 'id' with invalid value")
    item.prev_id = _get_string(item_obj, _ITEM, "prev-id")

    if "formats" in item_obj:
        formats = _keyed(item_obj["formats"])
        if formats is None:
            raise _fail(f"{_ITEM} contains 'formats' with wrong type")
    else:
        formats = {
            k: item_obj[k] for k in ("http-response", "http-stream", "ws-message") if k in item_obj
        }
    if not formats:
        raise _fail("no formats specified")
    # Unknown format names count as "specified" but yield nothing (as in Pushpin).
    if "http-response" in formats:
        item.http_response = _http_response(formats["http-response"], binary)
    if "http-stream" in formats:
        item.http_stream = _http_stream(formats["http-stream"], binary)
    if "ws-message" in formats:
        item.ws_message = _ws_message(formats["ws-message"], binary)

    if "meta" in item_obj:
        meta = _keyed(item_obj["meta"])
        if meta is None:
            raise _fail(f"{_ITEM} contains 'meta' with wrong type")
        for k, v in meta.items():
            s = _as_str(v)
            if s is None:
                raise _fail(f"'meta' contains '{k}' with wrong type")
            item.meta[k] = s

    if "size" in item_obj:
        size = _to_int(item_obj["size"])
        if size is None:
            raise _fail(f"{_ITEM} contains 'size' with wrong type")
        if size < 0:
            raise _fail(f"{_ITEM} contains 'size' with invalid value")
        item.size = size

    if "no-seq" in item_obj:
        no_seq = item_obj["no-seq"]
        if not isinstance(no_seq, bool):
            raise _fail(f"{_ITEM} contains 'no-seq' with wrong type")
        item.no_seq = no_seq
    return item


def parse_publish_body(body: bytes) -> list[PublishItem]:
    """F28: validate a whole ``/publish`` body; all items are checked before any is returned.

    Raises ``PublishError`` whose ``str()`` is the API's answer text (without the newline).
    """
    try:
        doc = read_json(body)  # as Pushpin's Qt reads it
    except ValueError:
        raise PublishError("Body is not valid JSON.") from None
    if isinstance(doc, list):
        raise PublishError("Invalid format.")
    if not isinstance(doc, dict):  # Qt only accepts an object or array at the top
        raise PublishError("Body is not valid JSON.")
    if "items" not in doc:
        raise PublishError("Invalid format: object does not contain 'items'")
    vitems = doc["items"]
    if not isinstance(vitems, list):
        raise PublishError("Invalid format: object contains 'items' with wrong type")
    items: list[PublishItem] = []
    for v in vitems:
        try:
            items.append(parse_item(v))
        except PublishError as e:
            raise PublishError(f"Invalid format: {e}") from None
    return items


def _qt_number(v: int | float) -> str:
    """A number as ``QJsonDocument::toJson`` writes it (integral doubles without ``.0``)."""
    if isinstance(v, int) and _INT64_MIN <= v < 2**63:
        return str(v)
    f = float(v)
    if not math.isfinite(f):
        return "null"
    if f == int(f) and abs(f) < 2**64:
        return str(int(f))
    return repr(f)


def _qt_json(v: Any) -> str:
    """Compact JSON like Qt 5.15: keys sorted, raw UTF-8, the same string escapes as ``json``."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int | float):
        return _qt_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(_qt_json(x) for x in v) + "]"
    if isinstance(v, dict):
        parts = [json.dumps(str(k), ensure_ascii=False) + ":" + _qt_json(v[k]) for k in sorted(v)]
        return "{" + ",".join(parts) + "}"
    raise TypeError(type(v).__name__)  # pragma: no cover - json.loads yields only the above


def apply_body_patch(held_body: bytes, patch: list[Any]) -> bytes:
    """Apply an RFC 6902 patch to a JSON object/array body, keeping its trailing newline (F22)."""
    try:
        doc = read_json(held_body)
    except ValueError:
        raise PublishError("failed to parse original response body as JSON") from None
    if not isinstance(doc, dict | list):
        raise PublishError("failed to parse original response body as JSON")
    try:
        result = jsonpatch.apply_patch(doc, patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise PublishError(f"failed to apply JSON patch: {e}") from None
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as e:
        raise PublishError(f"failed to apply JSON patch: {e}") from None
    if not isinstance(result, dict | list):
        raise PublishError("failed to apply JSON patch: result is not an object or array")
    out = _qt_json(result).encode("utf-8", "replace")
    if held_body.endswith(b"\r\n"):
        out += b"\r\n"
    elif held_body.endswith(b"\n"):
        out += b"\n"
    return out


def expose_headers(fmt: HttpResponseFormat) -> list[str]:
    """Names listed in the published ``Grip-Expose-Headers`` (comma-split, F20)."""
    values = [v for k, v in fmt.headers if k.lower() == "grip-expose-headers"]
    return [name for name, _ in parse_list(values)]


def apply_http_response(held: HttpResponse, fmt: HttpResponseFormat) -> HttpResponse:
    """F22: the response a held long-poll client gets for an http-response ``send``.

    Headers are the held response's, overridden by name by the published ones (minus
    ``Grip-*``); then any header named in the published ``Grip-Expose-Headers`` is removed
    (Pushpin's behaviour, inverted as it looks; F20). ``body_patch`` failures raise
    ``PublishError`` (the caller answers 502).
    """
    code = fmt.code if fmt.code is not None else 200
    reason = fmt.reason or reason_phrase(code)
    published = [(k, v) for k, v in fmt.headers if not k.lower().startswith("grip-")]
    names = {k.lower() for k, _ in published}
    headers: Headers = [(k, v) for k, v in held.headers if k.lower() not in names]
    headers.extend(published)
    exposed = {n.lower() for n in expose_headers(fmt)}
    if exposed:
        headers = [(k, v) for k, v in headers if k.lower() not in exposed]
    if fmt.body_patch is not None:
        body = apply_body_patch(held.body, fmt.body_patch)
    else:
        body = fmt.body if fmt.body is not None else b""
    return HttpResponse(code, reason, headers, body)


@dataclass(slots=True)
class ControlReply:
    """What the HTTP control API answers (F28), and what to do once the answer is written."""

    code: int
    reason: str
    headers: Headers
    body: bytes
    items: list[PublishItem] | None = None  # publish these after replying
    recover: bool = False  # run the recover command after replying (F27)
    log: str = ""  # Pushpin's ``control: ...`` info line (F53)


_NOT_ACCEPTABLE = "Not Acceptable. Supported formats are text/plain and application/json.\n"


def _control_reply(
    method: str,
    uri: str,
    code: int,
    body: str,
    *,
    content_type: str = "text/plain",
    extra: Headers | None = None,
    items: list[PublishItem] | None = None,
    recover: bool = False,
) -> ControlReply:
    headers: Headers = list(extra or [])
    headers.append(("Content-Type", content_type))
    log = f"control: {method} {uri} code={code} {len(body)}"
    if items is not None:
        log += f" items={len(items)}"
    return ControlReply(
        code,
        reason_phrase(code),
        headers,
        # A message may quote a JSON key holding a lone surrogate; Qt's toUtf8 writes '?'.
        body.encode("utf-8", "replace"),
        items,
        recover=recover,
        log=log,
    )


def _message(text: str, content_type: str) -> str:
    """A success answer's text in the chosen type: ``{"message":...}`` for JSON."""
    if content_type == "application/json":
        return json.dumps({"message": text}, separators=(",", ":")) + "\n"
    return text + "\n"


def handle_control_request(method: str, uri: str, headers: Headers, body: bytes) -> ControlReply:
    """F28: route one complete control API request (Pushpin's ``controlHttpServer_requestReady``).

    ``uri`` is the request target as sent (a query string makes the path unknown); one trailing
    ``/`` is ignored. The Accept check comes first and applies to every path; the last acceptable
    type listed wins.
    """
    path = uri[:-1] if len(uri) > 1 and uri.endswith("/") else uri
    content_type = "text/plain"
    accept = [v for k, v in headers if k.lower() == "accept"]
    if accept:
        chosen = ""
        for first, _ in parse_list(accept):
            if first in ("text/plain", "text/*", "*/*", "*"):
                chosen = "text/plain"
            elif first in ("application/json", "application/*"):
                chosen = "application/json"
        if not chosen:
            return _control_reply(method, uri, 406, _NOT_ACCEPTABLE)
        content_type = chosen

    if path == "/":
        return _control_reply(method, uri, 200, "Pushpin API\n")
    if path not in ("/publish", "/recover"):
        return _control_reply(method, uri, 404, "Not Found\n")
    if method != "POST":
        allow: Headers = [("Allow", "POST")]
        return _control_reply(method, uri, 405, f"Method not allowed: {method}.\n", extra=allow)
    if path == "/recover":
        return _control_reply(
            method,
            uri,
            200,
            _message("Updated", content_type),
            content_type=content_type,
            recover=True,
        )
    try:
        items = parse_publish_body(body)
    except PublishError as e:
        return _control_reply(method, uri, 400, f"{e}\n")
    return _control_reply(
        method,
        uri,
        200,
        _message("Published", content_type),
        content_type=content_type,
        items=items,
    )

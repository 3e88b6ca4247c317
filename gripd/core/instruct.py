"""GRIP instruction parsing (F18-F21): an origin response -> an :class:`Instruct`.

Sans-I/O and pure. The behaviour mirrors Pushpin 1.36 ``Instruct::fromResponse``
(src/handler/instruct.cpp) including its quirks, because gripd must be a drop-in replacement:

* header values are parsed with Pushpin's own grammar (fanout/common ``HttpHeaders``), which
  differs from a generic RFC parser (see :func:`_parse_params`);
* integers follow Qt's ``QByteArray::toInt`` (surrounding ASCII whitespace and a sign are OK);
* base64 follows Qt's lenient ``QByteArray::fromBase64`` (invalid characters are skipped);
* the JSON form follows Qt5's lenient ``QJsonDocument`` parser and ``QVariant`` conversions;
* the header and JSON forms are evaluated in one pass, so headers and JSON can mix as in Pushpin.

Error messages are Pushpin's, verbatim (they appear after "Failed to parse accept instructions: "
in debug mode, F47).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gripd.core.errors import InstructError
from gripd.core.headers import (
    Headers,
    field_problem,
    get,
    is_safe_text,
    show,
    split_unquoted,
)
from gripd.core.http import HOP_BY_HOP_RESPONSE, HttpResponse, reason_phrase
from gripd.core.qtcompat import (
    decode_json as _decode_json,
)
from gripd.core.qtcompat import (
    from_base64 as _qt_from_base64,
)
from gripd.core.qtcompat import (
    from_utf8 as _from_utf8,
)
from gripd.core.qtcompat import (
    raw_bytes as _raw,
)
from gripd.core.qtcompat import (
    to_header_text as _to_header_text,
)
from gripd.core.qtcompat import (
    to_int as _qt_to_int,
)
from gripd.core.qtcompat import (
    trim as _trim,
)
from gripd.core.qtcompat import (
    url_valid as _qurl_valid,
)
from gripd.core.qtcompat import (
    variant_to_int as _variant_to_int,
)
from gripd.core.wildcard import pattern_error

DEFAULT_RESPONSE_TIMEOUT = 55
MINIMUM_RESPONSE_TIMEOUT = 5
DEFAULT_KEEP_ALIVE_TIMEOUT = 55
DEFAULT_NEXTLINK_TIMEOUT = 120
GRIP_INSTRUCT_CONTENT_TYPE = "application/grip-instruct"
# The handler never relays these (they apply to the origin hop only); the length is recomputed
# by whoever writes the response (F20).
_DROP = HOP_BY_HOP_RESPONSE | {"content-length"}
TOO_MANY_SUBSCRIPTIONS = "httpsession: too many subscriptions"  # Pushpin's log text


@dataclass(slots=True, init=False)
class Channel:
    """A channel to subscribe to (F20 ``Grip-Channel`` / F21 ``hold.channels``)."""

    name: str  # with the route prefix already prepended
    prev_id: str | None
    filters: list[str]

    # An explicit __init__ (init=False): a compiled build (mypyc) compiles it; the one the
    # dataclass decorator generates stays interpreted and cost ~5x more per object.
    def __init__(
        self, name: str, prev_id: str | None = None, filters: list[str] | None = None
    ) -> None:
        self.name = name
        self.prev_id = prev_id
        self.filters = [] if filters is None else filters


@dataclass(slots=True)
class KeepAlive:
    """Stream-hold keep-alive (F20 ``Grip-Keep-Alive`` / F21 ``hold.keep-alive``)."""

    data: bytes  # decoded per format= raw|cstring|base64 (may be empty for JSON)
    timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT  # seconds, minimum 1
    mode: Literal["idle", "interval"] = "idle"  # JSON keep-alive behaves like interval (F21)


@dataclass(slots=True)
class NextLink:
    """A ``Grip-Link: <url>; rel=next`` (F25). ``url`` is as given (may be relative)."""

    url: str
    timeout: int = DEFAULT_NEXTLINK_TIMEOUT


@dataclass(slots=True, init=False)
class Instruct:
    """Parsed GRIP instructions plus the response the client gets (see parse_instruct)."""

    hold_mode: Literal["response", "stream"] | None
    channels: list[Channel]
    timeout: int  # response hold timeout in seconds (default 55, min 5)
    keep_alive: KeepAlive | None
    next_link: NextLink | None
    meta: dict[str, str]
    response: HttpResponse
    warnings: list[str]
    # Grip-Link entries with another rel than "next" as (rel, url); unused in 1.36 (1.41: gone).
    other_links: list[tuple[str, str]]

    # An explicit __init__: see Channel.
    def __init__(
        self,
        hold_mode: Literal["response", "stream"] | None,
        channels: list[Channel],
        timeout: int,
        keep_alive: KeepAlive | None,
        next_link: NextLink | None,
        meta: dict[str, str],
        response: HttpResponse,
        warnings: list[str],
        other_links: list[tuple[str, str]] | None = None,
    ) -> None:
        self.hold_mode = hold_mode
        self.channels = channels
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.next_link = next_link
        self.meta = meta
        self.response = response
        self.warnings = warnings
        self.other_links = [] if other_links is None else other_links


# ---------------------------------------------------------------------------------------------
# Detection (F18)


def is_grip_response(headers: Headers) -> bool:
    """F18: the proxy hands a response to the handler if its Content-Type (the part before the
    first ``;``, compared exactly as Pushpin's proxysession does: case-sensitive, untrimmed) is
    ``application/grip-instruct``, or if any header name starts with ``Grip-`` (any case)."""
    ct = get(headers, "Content-Type")
    if ct is not None and ct.split(";", 1)[0] == GRIP_INSTRUCT_CONTENT_TYPE:
        return True
    return any(k[:5].lower() == "grip-" for k, _ in headers)


def _cstring_unescape(data: bytes) -> bytes | None:
    """F20 ``format=cstring``: ``\\\\ \\r \\n \\xHH``. Other escapes are silently dropped (both
    characters); a dangling ``\\`` or a bad ``\\x`` is an error. Like Pushpin, an empty result
    also counts as an error (Qt's null QByteArray)."""
    out = bytearray()
    n = 0
    length = len(data)
    while n < length:
        c = data[n]
        if c == 0x5C:  # backslash
            if n + 1 >= length:
                return None
            n += 1
            e = data[n]
            if e == 0x5C:
                out.append(0x5C)
            elif e == 0x72:  # r
                out.append(0x0D)
            elif e == 0x6E:  # n
                out.append(0x0A)
            elif e == 0x78:  # x
                if n + 2 >= length:
                    return None
                hexd = data[n + 1 : n + 3]
                if not all(ch in b"0123456789abcdefABCDEF" for ch in hexd):
                    return None
                out.append(int(hexd, 16))
                n += 2
        else:
            out.append(c)
        n += 1
    return bytes(out) if out else None


def decode_keep_alive_data(data: str, fmt: str) -> bytes:
    """Decode ``Grip-Keep-Alive`` data per ``format=`` (F20): ``raw`` (or empty), ``cstring``,
    ``base64``. ``data`` is header text (latin-1 decoded). Raises InstructError."""
    raw = _raw(data)
    if fmt in ("", "raw"):
        return raw
    if fmt == "cstring":
        out = _cstring_unescape(raw)
        if out is None:
            raise InstructError("failed to parse Grip-Keep-Alive cstring format")
        return out
    if fmt == "base64":
        return _qt_from_base64(raw)
    raise InstructError(f"no such Grip-Keep-Alive format '{_from_utf8(fmt)}'")


# ---------------------------------------------------------------------------------------------
# Pushpin's header-value grammar (fanout/common httpheaders.cpp)

# (name, value); value None = Qt null QByteArray (no '=' or an empty quoted string).
_Param = tuple[str, "str | None"]
_EQ_OR_SEMI = re.compile(r"[=;]")


def _header_split(value: str) -> list[str]:
    """``headerSplit``: split on unquoted commas, trim each part; empty inner parts are kept,
    but nothing follows a final comma."""
    if value == "":
        return []
    parts = split_unquoted(value, ",")
    if parts[-1] == "":
        parts.pop()
    return [_trim(p) for p in parts]


def _parse_params(s: str, parse_first: bool = False) -> list[_Param] | None:
    """``HttpHeaders::parseParameters``. Unlike headers.parse_parameters: the first element
    (unless ``parse_first``) is cut at the first ``;`` even inside quotes and keeps its quotes;
    a value is quoted only if ``"`` directly follows ``=`` and text after the closing quote is
    ignored; an unterminated quote or dangling escape makes the whole element invalid (None)."""
    if '"' not in s:
        return _parse_unquoted_params(s, parse_first)
    return _parse_params_full(s, parse_first)


def _parse_params_full(s: str, parse_first: bool = False) -> list[_Param] | None:
    """:func:`_parse_params` by the whole grammar, for any text (the reference of the
    unquoted shortcut)."""
    out: list[_Param] = []
    n = len(s)
    start = 0
    if not parse_first:
        at = s.find(";")
        if at != -1:
            out.append((_trim(s[:at]), None))
            start = at + 1
        else:
            out.append((_trim(s), None))
            start = n
    while start < n:
        m = _EQ_OR_SEMI.search(s, start)
        if m is None:
            out.append((_trim(s[start:]), None))
            break
        at = m.start()
        var = _trim(s[start:at])
        if s[at] == ";":
            out.append((var, None))
            start = at + 1
            continue
        at += 1
        val: str | None
        if at < n and s[at] == '"':
            at += 1
            chars: list[str] = []
            complete = False
            i = at
            while i < n:
                ch = s[i]
                if ch == "\\":
                    if i + 1 >= n:
                        return None
                    i += 1
                    chars.append(s[i])
                elif ch == '"':
                    complete = True
                    at = i + 1
                    break
                else:
                    chars.append(ch)
                i += 1
            if not complete:
                return None
            val = "".join(chars) if chars else None
            semi = s.find(";", at)
            start = semi + 1 if semi != -1 else n
        else:
            semi = s.find(";", at)
            if semi != -1:
                val = _trim(s[at:semi])
                start = semi + 1
            else:
                val = _trim(s[at:])
                start = n
        out.append((var, val))
    return out


def _parse_unquoted_params(s: str, parse_first: bool) -> list[_Param]:
    """:func:`_parse_params` for text without ``"`` (most values, e.g. ``ch; prev-id=3``), where
    its scan comes down to splitting on ``;``: each piece is ``name`` (value None) or
    ``name=value`` (cut at the first ``=``), both trimmed. The scan stops at the end of the
    text, so an empty last piece (the text ends with ``;``) gives no element."""
    pieces = s.split(";")
    out: list[_Param] = []
    if not parse_first:
        out.append((_trim(pieces[0]), None))
        del pieces[0]
    if pieces and pieces[-1] == "":
        pieces.pop()
    for piece in pieces:
        name, eq, value = piece.partition("=")
        out.append((_trim(name), _trim(value) if eq else None))
    return out


def _pget(params: list[_Param], key: str) -> str | None:
    """``HttpHeaderParameters::get``: first match by name, any case, element 0 included."""
    lkey = key.lower()
    for k, v in params:
        if k.lower() == lkey:
            return v
    return None


def _pcontains(params: list[_Param], key: str) -> bool:
    lkey = key.lower()
    return any(k.lower() == lkey for k, _ in params)


def _all_as_params(values: list[str], parse_first: bool = False) -> list[list[_Param]]:
    """``getAllAsParameters`` over a header's ``values``: every comma part of every value;
    invalid parts are skipped."""
    out: list[list[_Param]] = []
    for value in values:
        if not parse_first and not _has_syntax(value):
            # The common plain value (a channel name): _header_split gives [trimmed value] or
            # nothing, and _parse_params of a part without ";" is [(part, None)].
            if value:
                out.append([(_trim(value), None)])
            continue
        for part in _header_split(value):
            params = _parse_params(part, parse_first)
            if params is not None:
                out.append(params)
    return out


def _has_syntax(value: str) -> bool:
    """Whether ``value`` has a character the header grammar gives a meaning (``,;"``)."""
    return "," in value or ";" in value or '"' in value


def _as_params(value: str | None) -> list[_Param]:
    """``getAsParameters`` of a header's first ``value`` (not comma-split); empty if
    absent/empty/invalid."""
    if not value:
        return []
    return _parse_params(value) or []


def _child(obj: object, pn: str, key: str, required: bool) -> object:
    """``VariantUtil::getChild``: missing/null optional children are None."""
    if not isinstance(obj, dict):
        raise InstructError(f"{pn} is not an object")
    if key not in obj:
        if required:
            raise InstructError(f"{pn} does not contain '{key}'")
        return None
    return obj[key]


def _get_str(obj: object, pn: str, key: str, required: bool) -> str | None:
    v = _child(obj, pn, key, required)
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise InstructError(f"{pn} contains '{key}' with wrong type")
    return v


def _get_list(obj: object, pn: str, key: str, required: bool) -> list[object]:
    v = _child(obj, pn, key, required)
    if v is None and not required:
        return []
    if not isinstance(v, list):
        raise InstructError(f"{pn} contains '{key}' with wrong type")
    return v


def _get_obj(obj: object, pn: str, key: str) -> dict[str, object] | None:
    v = _child(obj, pn, key, False)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InstructError(f"{pn} contains '{key}' with wrong type")
    return v


def _qmap_items(d: dict[str, object]) -> list[tuple[str, object]]:
    """A JSON object as Qt iterates it (QVariantMap): sorted by UTF-16 code units."""
    return sorted(d.items(), key=lambda kv: kv[0].encode("utf-16-be", "surrogatepass"))


# ---------------------------------------------------------------------------------------------
# The parser


class _State:
    """What the parser has read so far (a plain class: made once per GRIP response)."""

    __slots__ = ("channels", "hold_mode", "ka_data", "ka_mode", "ka_timeout", "meta", "timeout")

    def __init__(self) -> None:
        self.hold_mode: Literal["response", "stream"] | None = None
        self.channels: list[Channel] = []
        self.timeout = -1
        self.ka_mode: Literal["idle", "interval"] | None = None
        self.ka_data = b""
        self.ka_timeout = -1
        self.meta: dict[str, str] = {}


def parse_instruct(
    code: int,
    reason: str,
    headers: Headers,
    body: bytes,
    *,
    channel_prefix: str = "",
    connection_subscription_max: int = 20,
    wildcard: bool = False,
) -> Instruct:
    """Parse an origin response's GRIP instructions (F20 headers, F21 JSON body).

    Raises InstructError with Pushpin's message on invalid input. A hold without channels is
    not an error (Pushpin holds it until the timeout). Channels get ``channel_prefix``; more
    than ``connection_subscription_max`` are truncated with a warning. With ``wildcard``
    (``[gripd] wildcard_channels``) a channel name with a ``*`` other than one at its end
    (:func:`gripd.core.wildcard.pattern_error`) is an error. ``response`` is what the
    client gets, minus hop-by-hop headers and Content-Length (the length is recomputed).
    """
    # One pass over the headers instead of a case-insensitive scan per lookup: the Grip-*
    # headers by lower-cased name (most responses have only Grip-Hold and Grip-Channel, so the
    # other lookups are dict misses), the first Content-Type, and the headers the client may
    # get. Nothing here raises, so the checks below keep Pushpin's order (first error wins).
    grip: dict[str, list[str]] = {}
    content_type: str | None = None
    kept: Headers = []  # neither Grip-* nor dropped (see _DROP)
    for k, v in headers:
        lk = k.lower()
        if lk[:5] == "grip-":
            values = grip.get(lk)
            if values is None:
                grip[lk] = [v]
            else:
                values.append(v)
            continue
        if lk == "content-type" and content_type is None:
            content_type = v
        if lk not in _DROP:
            kept.append((k, v))

    st = _State()
    if grip:  # a response without Grip-* headers has nothing to parse here
        _parse_header_form(st, grip)

    resp_code = code
    resp_reason = reason
    status = _first(grip, "grip-status")
    if status:
        code_str, _, status_reason = status.partition(" ")
        parsed = _qt_to_int(code_str)
        if parsed is None or not 0 <= parsed <= 999:
            raise InstructError("Grip-Status contains invalid status code")
        resp_code, resp_reason = parsed, status_reason

    links = grip.get("grip-link")
    next_link, other_links = _parse_links(links) if links else (None, [])

    resp_headers = kept
    expose_values = grip.get("grip-expose-headers")
    if expose_values:
        expose = {e.lower() for v in expose_values for e in _header_split(v)}
        if expose:
            resp_headers = [h for h in kept if h[0].lower() in expose]
    resp_body = body

    # The first parameter element is the text before the first ";", trimmed; only when that is
    # the GRIP type does the whole value need parsing (an invalid one does not count, F21).
    if (
        content_type
        and _trim(content_type.split(";", 1)[0]) == GRIP_INSTRUCT_CONTENT_TYPE
        and _as_params(content_type)
    ):
        if code != 200:
            raise InstructError("response code for application/grip-instruct content must be 200")
        doc = _decode_json(body)
        if not isinstance(doc, dict):
            raise InstructError("instruct must be an object")
        if "hold" in doc:
            _parse_json_hold(st, doc["hold"])
        resp_headers, resp_body = [], b""
        if "response" in doc:
            jresp = doc["response"]
            if not isinstance(jresp, dict):
                raise InstructError("")  # Pushpin fails here without setting a message
            resp_code, resp_reason, resp_headers, resp_body = _parse_json_response(
                jresp, resp_code, resp_reason
            )
        # The headers from the JSON still need the filter the origin's got in the first pass.
        resp_headers = [h for h in resp_headers if h[0].lower() not in _DROP]

    if not resp_reason:
        resp_reason = reason_phrase(resp_code)
    timeout = DEFAULT_RESPONSE_TIMEOUT if st.timeout == -1 else st.timeout
    timeout = max(timeout, MINIMUM_RESPONSE_TIMEOUT)

    keep_alive = None
    if st.ka_timeout != -1:
        # JSON sets no mode: Pushpin's NoKeepAlive mode never restarts the timer (F21).
        keep_alive = KeepAlive(st.ka_data, max(st.ka_timeout, 1), st.ka_mode or "interval")

    warnings: list[str] = []
    channels = st.channels
    if len(channels) > connection_subscription_max:
        channels = channels[: max(connection_subscription_max, 0)]
        warnings.append(TOO_MANY_SUBSCRIPTIONS)
    for c in channels:
        if wildcard:
            why = pattern_error(c.name)
            if why is not None:
                raise InstructError(why)
        c.name = channel_prefix + c.name

    return Instruct(
        hold_mode=st.hold_mode,
        channels=channels,
        timeout=timeout,
        keep_alive=keep_alive,
        next_link=next_link,
        meta=st.meta,
        response=HttpResponse(resp_code, resp_reason, resp_headers, resp_body),
        warnings=warnings,
        other_links=other_links,
    )


def _first(grip: dict[str, list[str]], lname: str) -> str | None:
    """The first value of the Grip-* header ``lname`` (lower case), or None."""
    values = grip.get(lname)
    return values[0] if values else None


def _parse_header_form(st: _State, grip: dict[str, list[str]]) -> None:
    """Grip-Hold, Grip-Channel, Grip-Timeout, Grip-Keep-Alive, Grip-Set-Meta, in Pushpin's
    order (the first error wins). ``grip``: the Grip-* values by lower-cased name."""
    hold = _first(grip, "grip-hold")
    if hold is not None:
        if hold == "response":
            st.hold_mode = "response"
        elif hold == "stream":
            st.hold_mode = "stream"
        else:
            raise InstructError("Grip-Hold must be set to either 'response' or 'stream'")

    for params in _all_as_params(grip.get("grip-channel", [])):
        if len(params) == 1:  # a plain name: no prev-id, no filters
            st.channels.append(Channel(_from_utf8(params[0][0])))
            continue
        prev = _pget(params, "prev-id")
        st.channels.append(
            Channel(
                name=_from_utf8(params[0][0]),
                prev_id=_from_utf8(prev) if prev is not None else None,
                # "filter" is matched case-sensitively, unlike other parameter names
                filters=[_from_utf8(v or "") for k, v in params[1:] if k == "filter"],
            )
        )

    timeout = _first(grip, "grip-timeout")
    if timeout is not None:
        t = _qt_to_int(timeout)
        if t is None:
            raise InstructError("failed to parse Grip-Timeout")
        if t < 0:
            raise InstructError("Grip-Timeout has invalid value")
        st.timeout = t

    ka = _as_params(_first(grip, "grip-keep-alive"))
    if ka:
        val = ka[0][0]
        if not val:
            raise InstructError("Grip-Keep-Alive cannot be empty")
        mode = _pget(ka, "mode") or ""
        if mode in ("", "idle"):
            st.ka_mode = "idle"
        elif mode == "interval":
            st.ka_mode = "interval"
        else:
            raise InstructError(f"no such Grip-Keep-Alive mode '{_from_utf8(mode)}'")
        if _pcontains(ka, "timeout"):
            t = _qt_to_int(_pget(ka, "timeout"))
            if t is None:
                raise InstructError("failed to parse Grip-Keep-Alive timeout value")
            if t < 0:
                raise InstructError("Grip-Keep-Alive timeout has invalid value")
            st.ka_timeout = t
        else:
            st.ka_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT
        st.ka_data = decode_keep_alive_data(val, _pget(ka, "format") or "")

    metas = grip.get("grip-set-meta")
    for params in _all_as_params(metas, parse_first=True) if metas else ():
        if not params:
            raise InstructError("Grip-Set-Meta cannot be empty")
        key, mval = params[0]
        st.meta[_from_utf8(key)] = _from_utf8(mval or "")


# What QUrl's tolerant parser percent-encodes in a link (observed with Pushpin 1.36: space, tab,
# ``^|{}`` and non-ASCII bytes). Left raw, a space or tab would split the request line of the
# link's GET (``GET /a b HTTP/1.1``), so gripd encodes them once, here.
_LINK_UNSAFE = re.compile(r'[\x00-\x20"<>\\^`{|}\x7f-\U0010ffff]')


def _encode_link(url: str) -> str:
    """``url`` (header text) with the characters a request target cannot carry percent-encoded
    as their bytes (F25). Existing ``%XX`` escapes are kept as written."""
    return _LINK_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in _raw(m.group(0))), url)


def _parse_links(values: list[str]) -> tuple[NextLink | None, list[tuple[str, str]]]:
    """F25 ``Grip-Link`` (its ``values``). Only ``rel=next`` links are validated (1.36); the
    last one wins. Elements without parameters are ignored."""
    next_link: NextLink | None = None
    others: list[tuple[str, str]] = []
    for params in _all_as_params(values):
        if len(params) < 2:
            continue
        rel = _pget(params, "rel")
        link = params[0][0]
        if rel != "next":
            if len(link) > 2 and link[0] == "<" and link[-1] == ">":
                others.append((rel or "", _encode_link(link[1:-1])))
            continue
        if len(link) <= 2 or link[0] != "<" or link[-1] != ">":
            raise InstructError("failed to parse Grip-Link value")
        url = link[1:-1]
        if not _qurl_valid(_from_utf8(url)):
            raise InstructError("Grip-Link contains invalid link")
        timeout = DEFAULT_NEXTLINK_TIMEOUT
        if _pcontains(params, "timeout"):
            t = _qt_to_int(_pget(params, "timeout"))
            if t is None:
                raise InstructError("failed to parse Grip-Link timeout value")
            if t < 0:
                raise InstructError("Grip-Link timeout has invalid value")
            timeout = t
        next_link = NextLink(_encode_link(url), timeout)
    return next_link, others


def _parse_json_hold(st: _State, hold: object) -> None:
    """F21 ``hold``: mode, channels (required), timeout, keep-alive, meta."""
    if not isinstance(hold, dict):
        raise InstructError("instruct contains 'hold' with wrong type")
    mode = _get_str(hold, "hold", "mode", False)
    if mode is None or mode == "response":
        st.hold_mode = "response"
    elif mode == "stream":
        st.hold_mode = "stream"
    else:
        raise InstructError("hold 'mode' must be set to either 'response' or 'stream'")

    for vch in _get_list(hold, "hold", "channels", True):
        name = _get_str(vch, "channel", "name", True)
        assert name is not None
        prev_id = _get_str(vch, "channel", "prev-id", False)
        # Both go back to the origin in Grip-Last header values (F23, F25): no CR/LF/NUL.
        if not is_safe_text(name):
            raise InstructError("channel contains 'name' with invalid value")
        if prev_id is not None and not is_safe_text(prev_id):
            raise InstructError("channel contains 'prev-id' with invalid value")
        filters: list[str] = []
        for vf in _get_list(vch, "channel", "filters", False):
            if not isinstance(vf, str):
                raise InstructError("filters contains value with wrong type")
            filters.append(vf)
        st.channels.append(Channel(name, prev_id, filters))

    if "timeout" in hold:
        t = _variant_to_int(hold["timeout"])
        if t is None:
            raise InstructError("hold contains 'timeout' with wrong type")
        if t < 0:
            raise InstructError("hold contains 'timeout' with invalid value")
        st.timeout = t

    ka = _get_obj(hold, "hold", "keep-alive")
    if ka is not None:
        if "content-bin" in ka:
            cb = _get_str(ka, "keep-alive", "content-bin", False) or ""
            st.ka_data = _qt_from_base64(cb.encode("utf-8", "replace"))
        elif "content" in ka:
            content = ka["content"]
            if not isinstance(content, str):
                raise InstructError("keep-alive contains 'content' with wrong type")
            st.ka_data = content.encode("utf-8", "replace")
        if "timeout" in ka:
            t = _variant_to_int(ka["timeout"])
            if t is None:
                raise InstructError("keep-alive contains 'timeout' with wrong type")
            if t < 0:
                raise InstructError("keep-alive contains 'timeout' with invalid value")
            st.ka_timeout = t
        else:
            st.ka_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT

    meta = _get_obj(hold, "hold", "meta")
    if meta is not None:
        for key, val in _qmap_items(meta):
            if not isinstance(val, str):
                raise InstructError(f"'meta' contains '{key}' with wrong type")
            st.meta[key] = val


def _check_header(name: str, value: str) -> None:
    """JSON header text is not checked by any HTTP parser: refuse what would split the client's
    response (RFC 9110 5.1, 5.5). Pushpin 1.36 does not check; see docs/compatibility.md."""
    problem = field_problem(name, value)
    if problem == "name":
        raise InstructError(f"headers contains invalid name '{show(name)}'")
    if problem == "value":
        raise InstructError(f"headers contains '{show(name)}' with invalid value")


def _parse_json_response(
    jresp: dict[str, object], code: int, reason: str
) -> tuple[int, str, Headers, bytes]:
    """F21 ``response``: code (default: the origin's), reason, headers (object or list of
    pairs), body or body-bin. The origin's own headers and body are not used."""
    pn = "response"
    if "code" in jresp:
        c = _variant_to_int(jresp["code"])
        if c is None:
            raise InstructError("response contains 'code' with wrong type")
        if not 0 <= c <= 999:
            raise InstructError("response contains 'code' with invalid value")
        code, reason = c, ""
    jreason = _get_str(jresp, pn, "reason", False)
    if jreason:
        if not is_safe_text(jreason):  # it goes into the status line (RFC 9112 4)
            raise InstructError("response contains 'reason' with invalid value")
        reason = _to_header_text(jreason)

    headers: Headers = []
    if "headers" in jresp:
        vheaders = jresp["headers"]
        if isinstance(vheaders, list):
            for vh in vheaders:
                if not isinstance(vh, list):
                    raise InstructError("headers contains element with wrong type")
                if len(vh) != 2:
                    raise InstructError("headers contains list with wrong number of elements")
                if not isinstance(vh[0], str):
                    raise InstructError("header contains name element with wrong type")
                if not isinstance(vh[1], str):
                    raise InstructError("header contains value element with wrong type")
                _check_header(vh[0], vh[1])
                headers.append((_to_header_text(vh[0]), _to_header_text(vh[1])))
        elif isinstance(vheaders, dict):
            for key, val in _qmap_items(vheaders):
                if not isinstance(val, str):
                    raise InstructError(f"headers contains '{key}' with wrong type")
                _check_header(key, val)
                headers.append((_to_header_text(key), _to_header_text(val)))
        else:
            raise InstructError("response contains 'headers' with wrong type")

    body = b""
    if "body-bin" in jresp:
        bb = _get_str(jresp, pn, "body-bin", False) or ""
        body = _qt_from_base64(bb.encode("utf-8", "replace"))
    elif "body" in jresp:
        vbody = jresp["body"]
        if not isinstance(vbody, str):
            raise InstructError("response contains 'body' with wrong type")
        body = vbody.encode("utf-8", "replace")
    return code, reason, headers, body

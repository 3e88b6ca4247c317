"""GRIP over WebSocket (F37-F39): the ``grip`` extension, origin message classes, control messages.

In GRIP mode the origin talks to gripd inside its WebSocket: text messages starting with ``c:``
carry JSON control messages (subscribe, set-meta, keep-alive, ...), messages starting with the
negotiated prefix (default ``m:``) are relayed to the client without it, and anything else is
dropped. Parsing mirrors Pushpin 1.36 ``src/handler/wscontrolmessage.cpp`` (error texts verbatim)
plus the defaults applied in ``src/handler/engine.cpp``; extension parsing mirrors
``src/proxy/wsproxysession.cpp`` (``getExtension``/``parseParams``). Pure and sans-I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import AnyStr, Final, Literal

from gripd.core.errors import InstructError
from gripd.core.headers import is_safe_text, is_token, split_unquoted

# Qt-compatible JSON/QVariant primitives shared with the HTTP instruct parser.
from gripd.core.qtcompat import decode_json as _decode_json
from gripd.core.qtcompat import from_base64 as _qt_from_base64
from gripd.core.qtcompat import variant_to_int as _variant_to_int
from gripd.core.wildcard import pattern_error

DEFAULT_MESSAGE_PREFIX = "m:"
CONTROL_PREFIX = "c:"
DEFAULT_KEEP_ALIVE_TIMEOUT = 55  # engine.cpp DEFAULT_WS_KEEPALIVE_TIMEOUT (seconds)
DEFAULT_SEND_DELAYED_TIMEOUT = 1  # engine.cpp DEFAULT_WS_SENDDELAYED_TIMEOUT (seconds)

# Subscription meta one WebSocket may hold (F36), set by ``set-meta`` or ``Set-Meta-*`` (F41).
# Pushpin 1.36 keeps any number of keys; gripd caps them so an origin cannot grow one
# connection without bound, and so the ``Meta-*`` headers sent with every WebSocket-over-HTTP
# request (F40) stay small. A set past a cap is ignored; replacing and deleting always work.
META_KEYS_MAX: Final = 100
META_BYTES_MAX: Final = 16 * 1024  # UTF-8 bytes of every name and value together

MessageType = Literal["text", "binary", "ping", "pong"]
KeepAliveMode = Literal["idle", "interval"]

_PN = "grip control object"
_QT_WS = " \t\n\v\f\r"  # QByteArray::trimmed()
_MESSAGE_TYPES: tuple[MessageType, ...] = ("text", "binary", "ping", "pong")


class WsControlError(InstructError):
    """An invalid GRIP control message; Pushpin logs it (debug) and ignores the message."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``subscribe``: ``channel`` without the route prefix (the caller prepends it)."""

    channel: str
    filters: tuple[str, ...] = ()
    # gripd's own field: the id of the last item the client saw, to be replayed from history
    # (ignored unless the channel keeps history; a value that is not a string is ignored)
    last_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class Detach:
    """Close the origin side, keep the client (F39)."""


@dataclass(frozen=True, slots=True)
class SetMeta:
    """``value`` None (omitted or null) deletes ``name``; an empty string is stored."""

    name: str
    value: str | None


def meta_size(meta: Mapping[str, str]) -> int:
    """UTF-8 bytes of ``meta``'s names and values (what :data:`META_BYTES_MAX` counts)."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())


def set_meta(
    meta: dict[str, str], name: str, value: str | None, *, fold_case: bool = False
) -> bool:
    """Apply one meta change to ``meta`` in place: ``value`` None deletes ``name``.

    ``fold_case`` matches names case-insensitively (``Set-Meta-*`` headers, F41; the old entry
    is removed and the new one goes last, as Pushpin does). Returns False, leaving ``meta``
    unchanged, when the result would have more than :data:`META_KEYS_MAX` keys or
    :data:`META_BYTES_MAX` bytes."""
    if fold_case:
        lname = name.lower()
        old = [k for k in meta if k.lower() == lname]
    else:
        old = [name] if name in meta else []
    if value is None:
        for k in old:
            del meta[k]
        return True
    keys = len(meta) - len(old) + 1
    size = meta_size(meta) - sum(len(k.encode()) + len(meta[k].encode()) for k in old)
    size += len(name.encode()) + len(value.encode())
    if keys > META_KEYS_MAX or size > META_BYTES_MAX:
        return False
    for k in old:
        del meta[k]
    meta[name] = value
    return True


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """``content`` None turns keep-alives off. ``timeout`` is seconds with the default applied
    (0 or absent -> 55); the caller subtracts a random <= 1 s. Mode is ``interval`` only when
    given exactly so, else ``idle``."""

    content: bytes | None
    message_type: MessageType = "text"
    timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    mode: KeepAliveMode = "idle"


@dataclass(frozen=True, slots=True)
class SendDelayed:
    """Send ``content`` after ``timeout`` s (0 or absent -> 1); replaces (first flushing) a
    pending one. Without content Pushpin sends an empty message, so content is b"" then."""

    content: bytes
    message_type: MessageType = "text"
    timeout: int = DEFAULT_SEND_DELAYED_TIMEOUT


@dataclass(frozen=True, slots=True)
class FlushDelayed:
    """Send the pending delayed message now."""


@dataclass(frozen=True, slots=True)
class Session:
    """``session``: ``id`` None or empty clears the session id."""

    id: str | None


# Alias that does not clash with ``gripd.core.instruct.KeepAlive`` (used by gripd/io/ws_session).
KeepAliveMsg = KeepAlive

ControlMessage = (
    Subscribe | Unsubscribe | Detach | SetMeta | KeepAlive | SendDelayed | FlushDelayed | Session
)


# ---------------------------------------------------------------------------------------------
# Control messages (F39)


def _get_str(obj: dict[str, object], key: str, required: bool) -> str | None:
    """``VariantUtil::getString``: a missing or (Qt5) null optional value is None."""
    if key not in obj or (obj[key] is None and not required):
        if required:
            raise WsControlError(f"{_PN} does not contain '{key}'")
        return None
    v = obj[key]
    if not isinstance(v, str):
        raise WsControlError(f"{_PN} contains '{key}' with wrong type")
    return v


def _message_type(obj: dict[str, object]) -> MessageType:
    t = _get_str(obj, "message-type", False)
    if t is None:
        # Pushpin defaults to text before looking at the content, so even content-bin without
        # message-type is sent as a text message.
        return "text"
    for mt in _MESSAGE_TYPES:
        if t == mt:
            return mt
    raise WsControlError(f"{_PN} contains 'message-type' with unknown value")


def _content(obj: dict[str, object]) -> bytes | None:
    """``content-bin`` (base64, Qt-lenient) wins over ``content`` (UTF-8); null is wrong type."""
    if "content-bin" in obj:
        v = obj["content-bin"]
        if not isinstance(v, str):
            raise WsControlError(f"{_PN} contains 'content-bin' with wrong type")
        # Qt's toUtf8 writes '?' for a lone surrogate, which fromBase64 then skips.
        return _qt_from_base64(v.encode("utf-8", "replace"))
    if "content" in obj:
        v = obj["content"]
        if not isinstance(v, str):
            raise WsControlError(f"{_PN} contains 'content' with wrong type")
        return v.encode("utf-8", "surrogatepass")
    return None


def _timeout(obj: dict[str, object], content: bytes | None, default: int) -> int:
    # Pushpin reads the timeout only when there is content; 0 means the default.
    if content is None or "timeout" not in obj:
        return default
    t = _variant_to_int(obj["timeout"])
    if t is None:
        raise WsControlError(f"{_PN} contains 'timeout' with wrong type")
    if t < 0:
        raise WsControlError(f"{_PN} contains 'timeout' with invalid value")
    return t if t > 0 else default


def control_message_from_json(doc: object, *, wildcard: bool = False) -> ControlMessage:
    """F39: a decoded JSON value as a control message (``WsControlMessage::fromVariant``).
    With ``wildcard`` (``[gripd] wildcard_channels``) a subscribe or unsubscribe channel with a
    ``*`` other than one at its end is an error."""
    if not isinstance(doc, dict):
        raise WsControlError("grip control packet is not an object")
    mtype = _get_str(doc, "type", True)
    if mtype in ("subscribe", "unsubscribe"):
        channel = _get_str(doc, "channel", True)
        if not channel:
            raise WsControlError(f"{_PN} contains 'channel' with invalid value")
        if wildcard:
            why = pattern_error(channel)
            if why is not None:
                raise WsControlError(why)
        if mtype == "unsubscribe":
            return Unsubscribe(channel)
        lid = doc.get("last-id")
        last_id = lid if isinstance(lid, str) else None
        vfilters = doc.get("filters")
        if vfilters is None:
            return Subscribe(channel, (), last_id)
        if not isinstance(vfilters, list):
            raise WsControlError(f"{_PN} contains 'filters' with wrong type")
        for f in vfilters:
            if not isinstance(f, str):
                raise WsControlError("filters contains value with wrong type")
        return Subscribe(channel, tuple(vfilters), last_id)
    if mtype == "detach":
        return Detach()
    if mtype == "session":
        return Session(_get_str(doc, "id", False))
    if mtype == "set-meta":
        name = _get_str(doc, "name", True)
        # WebSocket-over-HTTP sends meta to the origin as ``Meta-<name>: <value>`` (F40), so
        # the name must be a token and the value free of CR/LF/NUL (RFC 9110 5.1, 5.5).
        if not name or not is_token(name):
            raise WsControlError(f"{_PN} contains 'name' with invalid value")
        value = _get_str(doc, "value", False)
        if value is not None and not is_safe_text(value):
            raise WsControlError(f"{_PN} contains 'value' with invalid value")
        return SetMeta(name, value)
    if mtype in ("keep-alive", "send-delayed"):
        msg_type = _message_type(doc)
        content = _content(doc)
        if mtype == "send-delayed":
            timeout = _timeout(doc, content, DEFAULT_SEND_DELAYED_TIMEOUT)
            return SendDelayed(content if content is not None else b"", msg_type, timeout)
        timeout = _timeout(doc, content, DEFAULT_KEEP_ALIVE_TIMEOUT)
        mode = _get_str(doc, "mode", False)
        return KeepAlive(content, msg_type, timeout, "interval" if mode == "interval" else "idle")
    if mtype == "flush-delayed":
        return FlushDelayed()
    raise WsControlError(f"'type' contains unknown value: {mtype}")


def parse_control_message(payload: bytes | str, *, wildcard: bool = False) -> ControlMessage:
    """F39: parse the JSON after ``c:``. Invalid JSON, a JSON value other than an object or
    array, or an invalid message raises :class:`WsControlError` (the caller logs and ignores)."""
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    try:
        doc = _decode_json(raw)
    except InstructError as e:
        raise WsControlError("grip control message is not valid json") from e
    return control_message_from_json(doc, wildcard=wildcard)


# ---------------------------------------------------------------------------------------------
# The grip extension (F37/F41)


def _parse_ext_params(s: str) -> dict[str, str] | None:
    """Pushpin wsproxysession ``parseParams``: ``k=v``/``k="v"``/``k`` separated by ``;``;
    None on a dangling ``=``, an unterminated quote or a trailing backslash in quotes.
    Note its quirk: ``k= "v"`` (space before the quote) keeps the quotes in the value."""
    out: dict[str, str] = {}
    n = len(s)
    start = 0
    while start < n:
        at = min((i for i in (s.find("=", start), s.find(";", start)) if i != -1), default=-1)
        if at == -1:
            out[s[start:].strip(_QT_WS)] = ""
            break
        var = s[start:at].strip(_QT_WS)
        val = ""
        if s[at] == ";":
            start = at + 1
        elif at + 1 >= n:
            return None
        elif s[at + 1] == '"':
            chars: list[str] = []
            i = at + 2
            while True:
                if i >= n:
                    return None  # unterminated quote
                c = s[i]
                if c == "\\":
                    if i + 1 >= n:
                        return None
                    chars.append(s[i + 1])
                    i += 2
                elif c == '"':
                    break
                else:
                    chars.append(c)
                    i += 1
            val = "".join(chars)
            semi = s.find(";", i + 1)
            start = semi + 1 if semi != -1 else n
        else:
            semi = s.find(";", at + 1)
            end = semi if semi != -1 else n
            val = s[at + 1 : end].strip(_QT_WS)
            start = end + 1 if semi != -1 else n
        out[var] = val
    return out


def _ext_values(header_value: str | Sequence[str] | None) -> list[str]:
    values = [header_value] if isinstance(header_value, str) else list(header_value or ())
    # HttpHeaders::takeAll splits on commas outside quotes and trims each element.
    return [p.strip(_QT_WS) for v in values for p in split_unquoted(v, ",")]


def grip_extension_raw(header_value: str | Sequence[str] | None) -> str | None:
    """The first ``grip`` element of ``Sec-WebSocket-Extensions`` as written (F37: forwarded
    to a trusted client as is), or None. The name is matched case-sensitively, like Pushpin."""
    for ext in _ext_values(header_value):
        semi = ext.find(";")
        name = ext[:semi].strip(_QT_WS) if semi != -1 else ext
        if name == "grip":
            return ext
    return None


def parse_grip_extension(header_value: str | Sequence[str] | None) -> str | None:
    """F37/F41: the message prefix if ``Sec-WebSocket-Extensions`` (one value or every value)
    has the ``grip`` extension, else None. Default prefix ``m:``; ``message-prefix=""`` gives
    ``""``. Unparseable parameters make the extension count as absent (Pushpin does so)."""
    ext = grip_extension_raw(header_value)
    if ext is None:
        return None
    semi = ext.find(";")
    params = _parse_ext_params(ext[semi + 1 :]) if semi != -1 else {}
    if params is None:
        return None
    return params.get("message-prefix", DEFAULT_MESSAGE_PREFIX)


# ---------------------------------------------------------------------------------------------
# Origin -> client messages in GRIP mode (F38)


def _prefix_as(prefix: str, data: AnyStr) -> AnyStr:
    """The prefix in the type of ``data``. Header text is latin-1-decoded wire bytes, so for
    bytes it is re-encoded as latin-1 and for text it is those bytes read as UTF-8."""
    try:
        raw = prefix.encode("latin-1")
    except UnicodeEncodeError:
        raw = prefix.encode("utf-8", "surrogatepass")
    if isinstance(data, bytes):
        return raw
    return raw.decode("utf-8", "replace")


def classify_origin_message(
    data: AnyStr, is_text: bool, prefix: str, *, single_frame: bool = True
) -> tuple[Literal["control", "relay"], AnyStr] | tuple[Literal["drop"], None]:
    """F38: what to do with a complete text/binary message from a GRIP-mode origin.

    ``("control", json)`` for a text message starting with ``c:`` (parse the payload with
    :func:`parse_control_message`; Pushpin ignores it if it came in more than one frame:
    pass ``single_frame=False``); ``("relay", data)`` with ``prefix`` removed when the message
    (text or binary) starts with it; otherwise ``("drop", None)`` (log "dropping unprefixed
    message"). Ping, pong and close frames are not classified: they are always relayed."""
    if isinstance(data, bytes):
        control: AnyStr = CONTROL_PREFIX.encode("ascii")
    else:
        control = CONTROL_PREFIX
    if is_text and data.startswith(control):
        if not single_frame:
            return ("drop", None)
        return ("control", data[len(control) :])
    p = _prefix_as(prefix, data)
    if data.startswith(p):
        return ("relay", data[len(p) :])
    return ("drop", None)

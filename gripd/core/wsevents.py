"""WebSocket-over-HTTP (F40/F41): the event codec, request/response headers, batching (sans-I/O).

A WebSocket connection to an ``over_http`` target becomes a series of HTTP POSTs whose bodies
are *events*: ``TYPE\\r\\n`` or ``TYPE <hex-len>\\r\\n<bytes>\\r\\n``. This module encodes and
decodes them, builds the POST's headers from the client's handshake headers, validates the
backend's answer (status, Content-Type, Keep-Alive-Interval, Set-Meta-*, the ``grip`` extension)
and derives the client's ``101`` headers. Behaviour follows Pushpin 1.36
``src/proxy/websocketoverhttp.cpp``; places where gripd is stricter are marked.

Nothing here does I/O or reads a clock; the connection id's randomness is passed in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gripd.core.errors import OriginError
from gripd.core.headers import Headers, get, get_all
from gripd.core.qtcompat import decimal_int
from gripd.core.wscontrol import parse_grip_extension, set_meta

CONTENT_TYPE = "application/websocket-events"
MAX_BATCH_BYTES = 200_000  # F40: message bytes per request (BUFFER_SIZE)
FRAME_SIZE_MAX = 16_384  # F41: events are split into frames of at most this size
RESPONSE_BODY_MAX = 1_000_000  # F41: a longer response body is an error
REJECT_BODY_MAX = 100_000  # F41: body relayed to the client when OPEN is rejected
MIN_KEEP_ALIVE_INTERVAL = 20  # F41: smaller positive Keep-Alive-Interval values are raised

# Event types Pushpin sends and understands (others are decoded but ignored by Pushpin).
OPEN = "OPEN"
TEXT = "TEXT"
BINARY = "BINARY"
PING = "PING"
PONG = "PONG"
CLOSE = "CLOSE"
DISCONNECT = "DISCONNECT"

MessageKind = Literal["text", "binary", "ping", "pong"]
_KIND_TO_TYPE: dict[str, str] = {"text": TEXT, "binary": BINARY, "ping": PING, "pong": PONG}
_TYPE_TO_KIND: dict[str, MessageKind] = {
    TEXT: "text",
    BINARY: "binary",
    PING: "ping",
    PONG: "pong",
}

_HEX_RE = re.compile(rb"[0-9A-Fa-f]+")
_QT_WS = " \t\n\v\f\r"  # QByteArray::toInt / trimmed() whitespace
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT32_MAX = 2**31 - 1


class WsEventsError(OriginError):
    """The backend's WebSocket-over-HTTP answer is unusable (bad body, status or first event).

    The connection is dropped; on the opening request the client gets ``502``-style handling
    unless the error is a :class:`WohRejected`."""


class WohRejected(WsEventsError):
    """F41: status not 200 or Content-Type not exactly ``application/websocket-events``.

    On the opening request the client is answered with ``status``, ``headers`` and ``body``
    (already cut to 100,000 bytes); later it means the connection is dropped."""

    def __init__(self, status: int, reason: str, headers: Headers, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body[:REJECT_BODY_MAX]
        ctype = get(headers, "Content-Type")
        super().__init__(f"backend rejected WebSocket-over-HTTP: status {status}, type {ctype!r}")


@dataclass(frozen=True, slots=True)
class WsEvent:
    """One event; ``content`` None means the event is written without a length (``TYPE\\r\\n``)."""

    type: str
    content: bytes | None = None


# ---------------------------------------------------------------------------------------------
# Codec (F40)


def encode_events(events: Iterable[WsEvent]) -> bytes:
    """``TYPE\\r\\n`` or ``TYPE <lower-hex-len>\\r\\n<content>\\r\\n`` for each event, in order."""
    out: list[bytes] = []
    for e in events:
        t = e.type.encode("ascii")
        if not t or b" " in t or b"\r" in t or b"\n" in t:
            raise ValueError(f"invalid event type {e.type!r}")
        if e.content is None:
            out.append(t + b"\r\n")
        else:
            out.append(b"%s %x\r\n%s\r\n" % (t, len(e.content), e.content))
    return b"".join(out)


def decode_events(body: bytes) -> list[WsEvent]:
    """Parse a response body into events; raise :class:`WsEventsError` if it is malformed.

    An empty body is no events. The type is any text before the first space (latin-1; unknown
    types are left to the caller, which ignores them like Pushpin). Stricter than Pushpin, which
    silently accepts a short content or any two bytes after it: here the content must be
    complete and followed by CRLF, except that the final CRLF of the body may be missing
    (Pushpin accepts that, so origins may rely on it)."""
    out: list[WsEvent] = []
    n = len(body)
    pos = 0
    while pos < n:
        eol = body.find(b"\r\n", pos)
        if eol == -1:
            raise WsEventsError(f"event line not terminated by CRLF at offset {pos}")
        line = body[pos:eol]
        pos = eol + 2
        sp = line.find(b" ")
        if sp == -1:
            out.append(WsEvent(line.decode("latin-1")))
            continue
        etype = line[:sp].decode("latin-1")
        hexlen = line[sp + 1 :]
        if not _HEX_RE.fullmatch(hexlen):
            raise WsEventsError(
                f"event {etype!r} has an invalid content length {hexlen.decode('latin-1')!r}"
            )
        clen = int(hexlen, 16)
        if pos + clen > n:
            raise WsEventsError(
                f"event {etype!r} content truncated: {clen} bytes declared, {n - pos} present"
            )
        content = body[pos : pos + clen]
        pos += clen
        tail = body[pos : pos + 2]
        if tail != b"\r\n" and not (pos + len(tail) == n and b"\r\n".startswith(tail)):
            raise WsEventsError(f"event {etype!r} content not followed by CRLF")
        pos += 2
        out.append(WsEvent(etype, content))
    return out


def message_event(kind: MessageKind, data: bytes) -> WsEvent:
    """F40: a client message as an event. Ping/pong carry content only when it is not empty."""
    etype = _KIND_TO_TYPE[kind]
    if etype in (PING, PONG) and not data:
        return WsEvent(etype)
    return WsEvent(etype, data)


def event_message_kind(event: WsEvent) -> MessageKind | None:
    """F41: the client message kind for a TEXT/BINARY/PING/PONG event, else None."""
    return _TYPE_TO_KIND.get(event.type)


def encode_close_content(code: int | None, reason: str = "") -> bytes | None:
    """CLOSE content: 2-byte big-endian code + UTF-8 reason; None (no content) without a code."""
    if code is None:
        return None
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"close code out of range: {code}")
    return code.to_bytes(2, "big") + reason.encode("utf-8")


def close_event(code: int | None, reason: str = "") -> WsEvent:
    """F40: the CLOSE event for a client close (``CLOSE\\r\\n`` when there is no code)."""
    return WsEvent(CLOSE, encode_close_content(code, reason))


def decode_close_content(content: bytes | None) -> tuple[int | None, str]:
    """F41: (code, reason) from CLOSE content; fewer than 2 bytes means no code. Invalid UTF-8
    in the reason is replaced (Qt ``QString::fromUtf8``)."""
    if content is None or len(content) < 2:
        return None, ""
    return int.from_bytes(content[:2], "big"), content[2:].decode("utf-8", "replace")


def split_frames(data: bytes, max_size: int = FRAME_SIZE_MAX) -> list[bytes]:
    """F41: a message's payload cut into frame payloads of at most ``max_size`` (at least one)."""
    if not data:
        return [b""]
    return [data[i : i + max_size] for i in range(0, len(data), max_size)]


# ---------------------------------------------------------------------------------------------
# Batching (F40)


def _content_len(e: WsEvent) -> int:
    return len(e.content) if e.content is not None else 0


def batch(
    messages: Sequence[WsEvent], max_bytes: int = MAX_BATCH_BYTES, max_events: int = 0
) -> tuple[list[WsEvent], list[WsEvent]]:
    """Split queued message events into (this request's events, the rest).

    Whole messages only, in order, while their content totals at most ``max_bytes``; always at
    least one message when any is queued. ``max_events`` > 0 caps the count (``one_event`` is
    1). A message larger than ``max_bytes`` can never be sent: :class:`WsEventsError` (Pushpin
    fails the connection when its write buffer fills with an incomplete message)."""
    taken: list[WsEvent] = []
    total = 0
    for e in messages:
        if max_events > 0 and len(taken) >= max_events:
            break
        size = _content_len(e)
        if size > max_bytes:
            if taken:
                break  # send what fits first; the error comes with the next batch
            raise WsEventsError(f"message of {size} bytes exceeds the {max_bytes}-byte limit")
        if taken and total + size > max_bytes:
            break
        taken.append(e)
        total += size
    return taken, list(messages[len(taken) :])


# ---------------------------------------------------------------------------------------------
# Request headers (F40)

# Not forwarded from the client's handshake. Pushpin's list is Upgrade, Accept, Connection-Id,
# Content-Length, Sec-WebSocket-Extensions and Meta-*; Connection and Keep-Alive never reach the
# backend either (observed with 1.36). gripd also drops the client's Content-Type (Pushpin sends
# it *and* its own, giving the backend two) and Transfer-Encoding/Expect, which would corrupt the
# POST's framing.
_WOH_DROP = frozenset(
    n.lower()
    for n in (
        "Upgrade",
        "Accept",
        "Connection-Id",
        "Content-Length",
        "Content-Type",
        "Sec-WebSocket-Extensions",
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Expect",
    )
)


def new_connection_id(random16: bytes) -> str:
    """F40: the 36-character ``Connection-Id`` (a version-4 UUID) from 16 random bytes."""
    return str(uuid.UUID(bytes=random16, version=4))


def woh_request_headers(
    headers: Headers,
    meta: Mapping[str, str],
    connection_id: str,
    body_length: int | None = None,
    *,
    grip: bool = True,
) -> Headers:
    """F40: the headers of one WebSocket-over-HTTP POST.

    ``headers`` are the client's handshake headers as already prepared for the origin (route
    headers, Grip-Sig, Grip-Feature, X-Forwarded-*: see ``forward.origin_request_headers``).
    Client ``Meta-*`` headers are dropped (anti-spoofing) and the stored ``meta`` is sent as
    ``Meta-<Name>``. ``grip`` (a GRIP route) adds ``Sec-WebSocket-Extensions: grip``.
    ``body_length`` adds Content-Length when given."""
    out: Headers = [
        (k, v) for k, v in headers if k.lower() not in _WOH_DROP and k[:5].lower() != "meta-"
    ]
    if grip:
        out.append(("Sec-WebSocket-Extensions", "grip"))
    out.append(("Accept", CONTENT_TYPE))
    out.append(("Connection-Id", connection_id))
    out.append(("Content-Type", CONTENT_TYPE))
    if body_length is not None:
        out.append(("Content-Length", str(body_length)))
    for name, value in meta.items():
        out.append((f"Meta-{name}", value))
    return out


# ---------------------------------------------------------------------------------------------
# Response (F41)


@dataclass(frozen=True, slots=True)
class WohResponse:
    """A valid backend answer.

    ``keep_alive_interval``: None when the header is absent (keep the current setting), 0 to
    disable keep-alives, else seconds (>= 20). ``meta_updates``: ``Set-Meta-*`` as (name, value)
    in order, an empty value deleting (apply with :func:`apply_meta_updates`). ``grip_prefix``:
    the message prefix when the ``grip`` extension is present, else None."""

    events: list[WsEvent]
    keep_alive_interval: int | None
    meta_updates: list[tuple[str, str]]
    grip_prefix: str | None


def _is_set_meta(name: str) -> bool:
    # Pushpin requires at least one character after the prefix.
    return len(name) >= 10 and name[:9].lower() == "set-meta-"


def parse_keep_alive_interval(value: str | None) -> int | None:
    """F41 ``Keep-Alive-Interval``: None if absent, 0 (disabled) unless a positive integer,
    else at least 20. Integers follow Qt ``toInt`` (whitespace and a sign allowed, int32)."""
    if value is None:
        return None
    body = value.split("\0", 1)[0].strip(_QT_WS)
    if not _INT_RE.fullmatch(body):
        return 0
    x = decimal_int(body)  # None past 64-bit range: not a positive int32 either
    if x is None or x <= 0 or x > _INT32_MAX:
        return 0
    return max(x, MIN_KEEP_ALIVE_INTERVAL)


def parse_woh_response(
    status: int, reason: str, headers: Headers, body: bytes, *, opening: bool
) -> WohResponse:
    """F41: validate one backend response and extract what the connection needs.

    Raises :class:`WohRejected` for a wrong status or Content-Type (compared exactly, first
    value), :class:`WsEventsError` for a body over 1,000,000 bytes or malformed events, and,
    when ``opening`` (the answer to ``OPEN``), unless the events start with ``OPEN`` or are
    empty with a keep-alive interval set."""
    if status != 200 or get(headers, "Content-Type") != CONTENT_TYPE:
        raise WohRejected(status, reason, headers, body)
    if len(body) > RESPONSE_BODY_MAX:
        raise WsEventsError(f"response body over {RESPONSE_BODY_MAX} bytes")
    interval = parse_keep_alive_interval(get(headers, "Keep-Alive-Interval"))
    updates = [(k[9:], v) for k, v in headers if _is_set_meta(k)]
    events = decode_events(body)
    if opening:
        if not events and not interval:
            raise WsEventsError("first response has no events and no Keep-Alive-Interval")
        if events and events[0].type != OPEN:
            raise WsEventsError(f"first event is {events[0].type!r}, not 'OPEN'")
    ext = get_all(headers, "Sec-WebSocket-Extensions")
    return WohResponse(events, interval, updates, parse_grip_extension(ext) if ext else None)


def apply_meta_updates(
    meta: Mapping[str, str], updates: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """F41: a new meta dict with ``Set-Meta-*`` applied. Names match case-insensitively; a set
    value replaces the old entry (moving it last, as Pushpin does), an empty value deletes it.
    A set past ``META_KEYS_MAX`` / ``META_BYTES_MAX`` (core/wscontrol) is ignored."""
    out = dict(meta)
    for name, value in updates:
        set_meta(out, name, value or None, fold_case=True)
    return out


# Removed from the backend's opening response before it becomes the client's 101: Pushpin's
# private headers (F41) plus the ones the client-facing WebSocket layer writes itself
# (Connection, Upgrade, Sec-WebSocket-Accept; observed replaced with 1.36) and the backend
# response's framing (Transfer-Encoding).
_101_DROP = frozenset(
    n.lower()
    for n in (
        "Content-Length",
        "Content-Type",
        "Keep-Alive-Interval",
        "Sec-WebSocket-Extensions",
        "Connection",
        "Upgrade",
        "Sec-WebSocket-Accept",
        "Transfer-Encoding",
    )
)


def woh_client_101_headers(headers: Headers) -> Headers:
    """F41: the backend's opening-response headers to copy into the client's ``101``, in order.

    The caller appends ``Upgrade``, ``Connection`` and ``Sec-WebSocket-Accept`` (and, for a
    trusted client or non-GRIP route, the backend's raw grip extension, F37)."""
    return [(k, v) for k, v in headers if k.lower() not in _101_DROP and not _is_set_meta(k)]

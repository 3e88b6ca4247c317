"""The history read API's wire format (``GET /channels/<channel>/items`` on the control port):
its query, and items written back in the JSON shape ``POST /publish/`` takes, so an answer
publishes again to equal items."""

from __future__ import annotations

import base64
import json
import re
import typing
from urllib.parse import parse_qsl, unquote_to_bytes

from gripd.core.headers import Headers, parse_list
from gripd.core.history import READ_LIMIT_MAX, Replay
from gripd.core.publish import HttpResponseFormat, HttpStreamFormat, PublishItem, WsMessageFormat

HISTORY_LIMIT_DEFAULT: typing.Final = 100  # items answered when the request gives no ``limit``
_ITEMS_PREFIX = "/channels/"
_ITEMS_SUFFIX = "/items"
_DIGITS = re.compile(r"[0-9]+\Z")


def _put_bytes(out: dict[str, typing.Any], key: str, data: bytes) -> None:
    """``key`` as text when ``data`` is UTF-8, else ``key-bin`` in base64 (the publish format's
    two spellings, so the item publishes back to the same bytes)."""
    try:
        out[key] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[key + "-bin"] = base64.b64encode(data).decode("ascii")


def _http_response_json(fmt: HttpResponseFormat) -> dict[str, typing.Any]:
    if fmt.action != "send":
        return {"action": fmt.action}
    out: dict[str, typing.Any] = {"code": 200 if fmt.code is None else fmt.code}
    if fmt.reason:
        out["reason"] = fmt.reason
    if fmt.headers:
        out["headers"] = [[k, v] for k, v in fmt.headers]  # a list keeps order and repeats
    if fmt.content_filters is not None:
        out["content-filters"] = list(fmt.content_filters)
    if fmt.body is None and fmt.body_patch is not None:
        out["body-patch"] = _as_json(fmt.body_patch)
    else:
        _put_bytes(out, "body", fmt.body or b"")
    return out


def _http_stream_json(fmt: HttpStreamFormat) -> dict[str, typing.Any]:
    if fmt.action != "send":
        return {"action": fmt.action}
    out: dict[str, typing.Any] = {}
    if fmt.content_filters is not None:
        out["content-filters"] = list(fmt.content_filters)
    _put_bytes(out, "content", fmt.content)
    return out


def _ws_message_json(fmt: WsMessageFormat) -> dict[str, typing.Any]:
    out: dict[str, typing.Any] = {}
    if fmt.action == "send":
        out["type"] = fmt.type  # explicit: content-bin alone would mean "binary"
        if fmt.content_filters is not None:
            out["content-filters"] = list(fmt.content_filters)
        _put_bytes(out, "content", fmt.content)
        return out
    out["action"] = fmt.action
    if fmt.action == "close":
        if fmt.code is not None:
            out["code"] = fmt.code
        if fmt.reason:
            out["reason"] = fmt.reason
    return out


def item_json(item: PublishItem) -> dict[str, typing.Any]:
    """``item`` as one element of a ``POST /publish`` body's ``items``: publishing it again
    gives back an equal item."""
    out: dict[str, typing.Any] = {"channel": item.channel}
    if item.id is not None:
        out["id"] = item.id
    if item.prev_id is not None:
        out["prev-id"] = item.prev_id
    formats: dict[str, typing.Any] = {}
    if item.http_response is not None:
        formats["http-response"] = _http_response_json(item.http_response)
    if item.http_stream is not None:
        formats["http-stream"] = _http_stream_json(item.http_stream)
    if item.ws_message is not None:
        formats["ws-message"] = _ws_message_json(item.ws_message)
    out["formats"] = formats
    if item.meta:
        out["meta"] = dict(item.meta)
    if item.size is not None:
        out["size"] = item.size
    if item.no_seq:
        out["no-seq"] = True
    return out


def history_body(replay: Replay, asked_after: bool) -> bytes:
    """The read API's JSON answer. ``gone`` is true when the request named an ``after`` id
    that the channel's history does not hold (so the items cannot continue from it)."""
    doc = {
        "items": [item_json(i) for i in replay.items],
        "last-id": replay.top,
        "gone": asked_after and replay.status != "ok",
    }
    # ASCII escapes: a channel, id or header may hold a lone surrogate (from a JSON publish)
    return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"


def _as_json(v: typing.Any) -> typing.Any:
    """A ``body-patch`` published over ZeroMQ as tnetstring holds byte strings (keys too):
    as JSON text."""
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(_as_json(k)): _as_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_as_json(x) for x in v]
    return v


def items_channel(path: str) -> str | None:
    """The still percent-encoded channel of ``/channels/<channel>/items`` (one trailing ``/``
    allowed), or None when ``path`` is another path."""
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    if not (path.startswith(_ITEMS_PREFIX) and path.endswith(_ITEMS_SUFFIX)):
        return None
    encoded = path[len(_ITEMS_PREFIX) : -len(_ITEMS_SUFFIX)]
    return encoded if len(path) > len(_ITEMS_PREFIX) + len(_ITEMS_SUFFIX) else None


def accepts_json(headers: Headers) -> bool:
    values = [v for k, v in headers if k.lower() == "accept"]
    if not values:
        return True
    ok = ("application/json", "application/*", "*/*", "*")
    return any(first in ok for first, _ in parse_list(values))


class HistoryQuery(typing.NamedTuple):
    channel: str
    after: str | None
    limit: int


def parse_items_query(encoded_channel: str, query: str) -> HistoryQuery | str:
    """The channel and parameters of a read, or the text of the 400 answer."""
    try:
        channel = unquote_to_bytes(encoded_channel).decode("utf-8")
    except UnicodeDecodeError:
        return "Invalid channel: not UTF-8 once percent-decoded."
    after: str | None = None
    limit = HISTORY_LIMIT_DEFAULT
    try:
        params = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return "Invalid query: not UTF-8 once percent-decoded."
    for k, v in params:
        if k == "after":
            after = v or None  # after= (empty) reads like no after: the newest items
        elif k == "limit":
            if _DIGITS.match(v) is None:
                return "Invalid limit: must be a whole number, 0 or more."
            # a huge limit is capped (len check first: int() of thousands of digits is slow)
            limit = READ_LIMIT_MAX if len(v) > 9 else min(int(v), READ_LIMIT_MAX)
    return HistoryQuery(channel, after, limit)

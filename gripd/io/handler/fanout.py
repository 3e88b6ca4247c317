"""Delivering one published item to the local subscribers of its channel (F22, F24, F30, F35).

Each format is encoded once and the same bytes go to every subscriber (DESIGN "encode once");
only a subscriber with content filters (``build-id``, ``var-subst``) gets its own copy.
Delivery filters (``skip-self``, ``skip-users``, ``require-sub``) are checked before the action,
as Pushpin does, so a dropped item is not acted on at all (hint and close included). Before them
come, in Pushpin's order, the prev-id check (HTTP holds) and the published ``content-filters``
check, so an out-of-sequence or mismatched item acts even if a delivery filter would drop it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from websockets.frames import Opcode

from gripd.core.cors import apply_cors
from gripd.core.errors import PublishError
from gripd.core.filters import (
    FilterContext,
    FilterError,
    check_content_filters,
    process_content,
    send_allowed,
)
from gripd.core.http import encode_chunk, encode_full
from gripd.core.jsonp import wrap_held_response
from gripd.core.publish import PublishItem, apply_body_patch, apply_http_response
from gripd.core.wildcard import first_match, item_filters
from gripd.io.handler.holds import ResponseHold, StreamHold
from gripd.io.handler.ws_session import WsSession
from gripd.io.ws_endpoint import OPCODES, encode_message

if TYPE_CHECKING:
    from gripd.io.handler.engine import Engine

log = logging.getLogger("gripd.engine")

_DROP = object()

Sub = ResponseHold | StreamHold | WsSession


def _context(s: Sub, item: PublishItem) -> FilterContext:
    prev = getattr(s, "prev_ids", None) or {}
    return FilterContext(
        sub_meta=s.meta or {},
        pub_meta=item.meta,
        channels=None if isinstance(s, WsSession) else s.channels,  # F35: none for WS in 1.36
        prev_ids={ch: pid for ch, pid in prev.items() if pid is not None},
        route_prefix=s.route.prefix,
    )


def _wildcard(s: Sub) -> bool:
    app = s.app if isinstance(s, WsSession) else s.engine.app
    return app.config.wildcard_channels


def filters_for(s: Sub, channel: str) -> list[str] | None:
    """``s``'s filters for an item on ``channel``: those of the channel itself, else (with
    ``wildcard_channels``) those of the first of ``s``'s patterns that matches it."""
    f = s.filters
    if not f:
        return None
    return item_filters(s.channels, f, channel, _wildcard(s))


def holds_channel(s: Sub, channel: str) -> bool:
    """Whether ``s`` is subscribed to ``channel``, itself or (with ``wildcard_channels``)
    through one of its patterns."""
    if channel in s.channels:
        return True
    return _wildcard(s) and first_match(s.channels, channel) is not None


def allowed(s: Sub, item: PublishItem) -> bool:
    """Delivery filters of ``s`` for ``item``'s channel."""
    fl = filters_for(s, item.channel)
    return not fl or send_allowed(fl, _context(s, item))


def check_listed(s: Sub, item: PublishItem, content_filters: list[str] | None) -> None:
    """F30: raise ``ContentFilterMismatch`` unless a published ``content-filters`` list equals
    ``s``'s content filters for the channel (absent: anything goes)."""
    if content_filters is not None:
        fl = filters_for(s, item.channel)
        check_content_filters(content_filters, fl or [])


def content_for(s: Sub, item: PublishItem, content: bytes) -> bytes:
    """The content ``s`` gets after its content filters; raises FilterError."""
    fl = filters_for(s, item.channel)
    if not fl:
        return content
    return process_content(fl, _context(s, item), content)


def _admit(
    engine: Engine, s: ResponseHold | StreamHold, item: PublishItem, listed: list[str] | None
) -> bool:
    """Pushpin's per-subscriber order for HTTP holds: the prev-id check (F23/F26), then the
    published ``content-filters`` (F30), then the delivery filters (F35)."""
    if not s.follows(item.channel, item.prev_id, item.id):
        engine.last_ids.forget_last_id(item.channel)
        s.resync()  # out of sequence: retry the request or re-fetch the link
        return False
    if listed is not None:
        try:
            check_listed(s, item, listed)
        except FilterError as e:
            s.fail(str(e))
            return False
    return not (s.filters and not allowed(s, item))


def publish_stream(engine: Engine, item: PublishItem, subs: list[object]) -> int:
    """Pushpin's order per subscriber (httpsession ``trySendQueue``): the prev-id check (every
    action), the ``content-filters`` check, the delivery filters, then the action. A hold whose
    next link is being fetched queues the item instead (httpsession ``publish``)."""
    fmt = item.http_stream
    assert fmt is not None
    n = 0
    raw = fmt.content
    chunk = encode_chunk(raw)
    now = engine.loop.time()
    for s in subs:
        if not isinstance(s, StreamHold):
            continue
        r = s.resume
        if r is not None:
            if r.hold_back(item):
                continue  # waits for the replay, or the replay carried it
            if not r.skip and r.buffer is None:
                s.resume = None
        link = s.link
        if link is not None and link.task is not None:
            link.enqueue(item)  # sent, or dropped, once the link's answer is applied
            continue
        if _stream_one(engine, s, item, chunk, now):
            n += 1
    return n


def _stream_one(engine: Engine, s: StreamHold, item: PublishItem, chunk: bytes, now: float) -> bool:
    """One http-stream item for one stream hold; True when it acted (sent, hint or close)."""
    fmt = item.http_stream
    assert fmt is not None
    if not _admit(engine, s, item, fmt.content_filters):
        return False
    if fmt.action == "close":
        s.close_stream()
    elif fmt.action == "hint":
        s.update()  # F24: fetch the next link, if any
    else:
        raw = fmt.content
        if s.filters:
            try:
                mine = content_for(s, item, raw)
            except FilterError as e:
                s.fail(str(e))
                return False
            return s.deliver(encode_chunk(mine), mine, now, item.channel)
        return s.deliver(chunk, raw, now, item.channel)
    return True


def send_link_queue(engine: Engine, s: StreamHold, queue: list[PublishItem]) -> None:
    """Items queued while ``s``'s next link was fetched, once its stream hold is applied
    (httpsession ``prepareToSendQueueOrHold``): leading items of channels no longer held or
    that do not follow the new prev-ids are dropped, the rest are sent in order. Sending stops
    (and the rest is dropped, as Pushpin clears its queue) when the hold ends or fetches its
    link again (a hint or an out-of-sequence item)."""
    i = 0
    prev = s.prev_ids
    while i < len(queue):
        item = queue[i]
        if not holds_channel(s, item.channel):
            i += 1
            continue
        expected = prev.get(item.channel) if prev is not None else None
        if expected is not None and expected != item.prev_id:
            i += 1
            continue
        break
    now = engine.loop.time()
    for item in queue[i:]:
        if not s.active or (s.link is not None and s.link.task is not None):
            break
        if not holds_channel(s, item.channel):
            continue  # Pushpin: "received publish for channel with no subscription"
        fmt = item.http_stream
        assert fmt is not None
        _stream_one(engine, s, item, encode_chunk(fmt.content), now)


def publish_response(engine: Engine, item: PublishItem, subs: list[object]) -> int:
    """Pushpin's order (httpsession ``publish``): prev-id check (every action), the
    ``content-filters`` check, the delivery filters, then ``send`` or ``hint``."""
    fmt = item.http_response
    assert fmt is not None
    n = 0
    cache: dict[object, bytes] = {}
    listed = fmt.content_filters
    for s in subs:
        if not isinstance(s, ResponseHold):
            continue
        r = s.resume
        if r is not None and r.hold_back(item):
            continue  # waits for the answer from history
        if not _admit(engine, s, item, listed):
            continue
        if fmt.action == "hint":
            s.retry()
            n += 1
            continue
        if fmt.action != "send":
            continue
        mine = fmt
        key: object = s.resp_key
        if s.filters:
            try:
                # Pushpin filters the body a ``body-patch`` produces too (httpsession publish).
                base = (
                    fmt.body
                    if fmt.body_patch is None
                    else apply_body_patch(s.response.body, fmt.body_patch)
                )
                body = content_for(s, item, base if base is not None else b"")
            except (FilterError, PublishError) as e:
                s.fail(str(e))
                continue
            if body != fmt.body or fmt.body_patch is not None:
                mine = dataclasses.replace(fmt, body=body, body_patch=None)
                key = _DROP  # not shared
        aco = engine.app.aco(s.route)
        if aco:
            key = _DROP  # CORS/JSON-P answers depend on each client's request headers
        data = cache.get(key) if key is not _DROP else None
        if data is None:
            try:  # the held head is undecorated: CORS goes on the merged head (F45)
                out = apply_http_response(s.response, mine)
            except PublishError as e:
                s.fail(str(e))
                continue
            if s.req.jsonp is not None:
                out = wrap_held_response(out, s.req.jsonp)  # F46
            elif aco:
                out.headers = apply_cors(s.req.headers, out.headers)  # F45
            data = encode_full(
                out,
                method=s.req.method,
                keep_alive=s.req.keep_alive,
                http10=s.req.http_version == "1.0",
            )
            if key is not _DROP:
                cache[key] = data
        s.deliver(data)
        n += 1
    return n


def publish_ws(engine: Engine, item: PublishItem, subs: list[object]) -> int:
    """Pushpin's order (engine ``WebSocketMessage``): a ``content-filters`` mismatch drops,
    then the delivery filters, then the action; a filter error drops the message only."""
    fmt = item.ws_message
    assert fmt is not None
    n = 0
    op = OPCODES.get(fmt.type, Opcode.TEXT)
    data = fmt.content
    if op in (Opcode.PING, Opcode.PONG):
        data = data[:125]  # control frames carry at most 125 bytes (RFC 6455 5.5)
    frame = encode_message(op, data) if fmt.action == "send" else b""
    now = engine.loop.time()
    listed = fmt.content_filters
    for s in subs:
        if not isinstance(s, WsSession):
            continue
        resuming = s.resuming
        if resuming is not None:
            r = resuming.get(item.channel)
            if r is not None:
                if r.hold_back(item):
                    continue  # waits for the replay, or the replay carried it
                if not r.skip and r.buffer is None:
                    del resuming[item.channel]
        if listed is not None:
            try:
                check_listed(s, item, listed)
            except FilterError as e:
                log.debug("ws publish channel=%s dropped: %s", item.channel, e)
                continue
        if s.filters and not allowed(s, item):
            continue
        if fmt.action == "close":
            s.close_ws(fmt.code, fmt.reason or "")
        elif fmt.action == "send":
            mine = frame
            if s.filters:
                try:
                    content = content_for(s, item, data)
                except FilterError as e:
                    log.debug("ws publish channel=%s dropped: %s", item.channel, e)
                    continue
                if content != data:
                    mine = encode_message(op, content)
            if not s.deliver(mine, now):
                continue
        else:
            continue
        n += 1
    return n

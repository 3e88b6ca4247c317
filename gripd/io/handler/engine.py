"""The publish engine: subscriptions and fan-out of published items to held connections.

Hot path rules (DESIGN): each item is encoded once per format and the same ``bytes`` go to every
subscriber; stream writes are coalesced per loop tick by the connection's ``queue``; nothing
awaits per subscriber; a client whose output passes ``client_write_buffer_max`` gets the
message dropped, with its connection id, route and peer logged (Pushpin #48022).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gripd.core.errors import InstructError
from gripd.core.filters import FilterError, process_initial_body
from gripd.core.http import HttpResponse, encode_chunk
from gripd.core.instruct import Instruct, parse_instruct
from gripd.core.publish import PublishItem
from gripd.core.registry import Registry
from gripd.io.handler.channels import ChannelTracker
from gripd.io.handler.fanout import publish_response, publish_stream, publish_ws
from gripd.io.handler.holds import ResponseHold, StreamHold, stream_head
from gripd.io.handler.ws_session import WsSession
from gripd.io.observe.events import Events, Mode
from gripd.io.observe.ticklog import TickLog
from gripd.io.origin.nextlink import post_gone

if TYPE_CHECKING:
    from gripd.core.routes import Route
    from gripd.io.context import EngineHost, LastIds
    from gripd.io.listener.client import ClientConnection, Request

log = logging.getLogger("gripd.engine")

FIRST_SUBSCRIPTION_DELAY = 1.0  # Pushpin's SUBSCRIBED_DELAY (F22)

Hold = ResponseHold | StreamHold | WsSession


class Engine:
    """Owns the registry; starts holds; delivers published items.

    Every subscription goes through :meth:`subscribe` / :meth:`unsubscribe_channels`, which keep
    the registry, the channel tracker (``channels``) and the events in step. ``last_ids`` is
    the sequencer's per-channel last-id state (F23, F26), read and reset here."""

    def __init__(
        self,
        app: EngineHost,
        channels: ChannelTracker,
        last_ids: LastIds,
        *,
        first_subscription: bool = True,
    ) -> None:
        self.app = app
        # F22's first-subscription update decided here (one process), or by the hub, which
        # knows the instance's first subscriber and calls :meth:`first_subscription`.
        self.first_subscription_here = first_subscription
        self.loop: asyncio.AbstractEventLoop = app.loop
        self.registry = Registry()
        self.channels = channels
        self.last_ids = last_ids
        self.write_buffer_max = app.config.client_write_buffer_max
        self.events: Events = app.events
        self.ticklog = TickLog("gripd.engine", self.loop)

    # -- holds -------------------------------------------------------------------------------

    def start_response(
        self,
        conn: ClientConnection,
        req: Request,
        route: Route,
        ins: Instruct,
        body: list[bytes],
        *,
        retry: bool = False,
    ) -> None:
        hold = ResponseHold(self, conn, req, route, ins, body)
        conn.set_handler(hold)
        self.subscribe(hold, hold.channels, "response")
        # F23: a prev-id that disagrees with the channel's known last id: retry at once.
        conflict = False
        last_ids = self.last_ids
        for ch, pid in hold.prev_ids.items():
            last = last_ids.last_id(ch) if pid is not None else None
            if last is not None and last != pid:
                last_ids.forget_last_id(ch)
                conflict = True
        if conflict:
            self.loop.call_soon(hold.retry)
        self._log_subscribe(req, hold.channels, retry)

    def write_stream_head(self, conn: ClientConnection, resp: HttpResponse, chunked: bool) -> None:
        head = stream_head(resp, chunked)
        if resp.body:
            head += encode_chunk(resp.body) if chunked else resp.body
        conn.write(head)

    def start_stream(
        self,
        conn: ClientConnection,
        req: Request,
        route: Route,
        ins: Instruct,
        chunked: bool,
        *,
        head_sent: bool = False,
        follow: bool = False,
        retry: bool = False,
    ) -> StreamHold:
        if not head_sent:
            self.write_stream_head(conn, ins.response, chunked)
        hold = StreamHold(self, conn, req, route, ins, chunked)
        conn.set_handler(hold)
        conn.hold_started()
        self.subscribe(hold, hold.channels, "stream")
        self._log_subscribe(req, hold.channels, retry)
        if follow:
            hold.update()
            return hold
        # F26: on the first hold, a prev-id that disagrees with the known last id re-fetches.
        conflict = False
        last_ids = self.last_ids
        for ch, pid in (hold.prev_ids or {}).items():
            last = last_ids.last_id(ch) if pid is not None else None
            if last is not None and last != pid:
                last_ids.forget_last_id(ch)
                conflict = True
        if conflict:
            hold.update()
        return hold

    def subscribe(self, sub: Hold, channels: list[str], mode: Mode) -> None:
        """``sub`` joins ``channels``: registry, channel interest and events, in that order."""
        first = self.registry.subscribe(sub, channels)
        events = self.events
        tracker = self.channels
        # F22's first-subscription update is for HTTP holds (a WebSocket client has no request
        # to retry), as before this went through one place.
        update = (
            self.first_subscription_here
            and self.app.config.update_on_first_subscription
            and mode != "ws"
        )
        for ch in channels:
            # A channel whose last long-poll left less than subscription_linger ago is still
            # held (Pushpin), so a retried hold does not gain it and is no first subscriber.
            gained = tracker.subscribed(ch, mode)
            events.subscribed(ch, mode, ch in first)
            if gained and update:
                self.loop.call_later(FIRST_SUBSCRIPTION_DELAY, self.first_subscription, ch)

    def unsubscribe_channels(self, sub: Hold, channels: list[str] | None, mode: Mode) -> None:
        """``sub`` leaves ``channels`` (all of its channels when None)."""
        if channels is None:
            channels = self.registry.channels_of(sub)
        last = self.registry.unsubscribe(sub, channels)
        events = self.events
        tracker = self.channels
        for ch in channels:
            tracker.unsubscribed(ch, mode)
            events.unsubscribed(ch, mode, ch in last)

    def first_subscription(self, channel: str) -> None:
        """F22: ~1 s after a channel's first subscriber, update its sessions, closing the race
        between a backend's subscribe and its publish (``update_on_first_subscription``)."""
        for s in self.registry.subscribers(channel):
            if isinstance(s, ResponseHold):
                s.retry()
            elif isinstance(s, StreamHold):
                s.update()

    def send_gone(self, url: str, route: Route, peer: str) -> None:
        """A held client with a ``rel=gone`` link went away: tell the origin, best effort
        (one POST, no retries, failures only logged; Pushpin 1.41 behaviour)."""
        self.loop.create_task(post_gone(self.app, route, url, peer))

    def resubscribe(self, hold: StreamHold, channels: list[str]) -> None:
        """A next link's stream hold changed the channel set (F25)."""
        old = set(hold.channels)
        new = set(channels)
        gone = [c for c in hold.channels if c not in new]
        added = [c for c in channels if c not in old]
        hold.channels = list(channels)
        if gone:
            self.unsubscribe_channels(hold, gone, "stream")
        if added:
            self.subscribe(hold, added, "stream")

    def apply_link_response(self, hold: StreamHold, resp: HttpResponse) -> None:
        """F25: append a next link's body and follow its instructions."""
        if not hold.active:
            return
        try:
            ins = parse_instruct(
                resp.code,
                resp.reason,
                resp.headers,
                resp.body,
                channel_prefix=hold.route.prefix,
                connection_subscription_max=self.app.config.connection_subscription_max,
            )
        except InstructError as e:
            hold.fail(f"Failed to parse next link instructions: {e}")
            return
        body = ins.response.body
        if hold.filters and body:
            try:  # F35: the hold's build-id filter runs over the link's body (Pushpin)
                body = process_initial_body(hold.filters.values(), hold.meta or {}, body)
            except FilterError as e:
                hold.fail(str(e))
                return
        hold.write(body)
        if ins.hold_mode == "response":
            hold.fail("Next link returned non-stream hold.")
        elif ins.hold_mode == "stream":
            self.resubscribe(hold, [c.name for c in ins.channels])
            hold.apply_stream_instruct(ins)
        elif ins.next_link is not None:
            hold.apply_stream_instruct(ins)
            hold.update()  # no hold, another link: keep following (F25)
        else:
            hold.close_stream()  # no link and no hold: the response ends

    def unsubscribe(self, hold: Hold) -> None:
        """``hold`` leaves every channel it holds."""
        self.unsubscribe_channels(hold, None, hold.mode)

    def retry(
        self,
        conn: ClientConnection,
        req: Request,
        route: Route,
        body: list[bytes],
        last_ids: list[tuple[str, str]],
    ) -> None:
        """Send a held request to the origin again, on the same client connection (F27)."""
        if not conn.closed:
            self.app.retry_request(conn, req, route, body, last_ids)

    def slow_client(self, hold: StreamHold | WsSession) -> None:
        self.events.dropped("slow_client")
        if self.app.config.slow_client_policy == "close":
            log.warning(
                "publish queue at max, closing: conn=%s route=%s peer=%s",
                hold.conn.id,
                hold.route.id,
                hold.conn.peer,
            )
            hold.conn.abort()
            return
        if hold.dropped == 1 or hold.dropped % 100 == 0:
            log.warning(
                "publish queue at max, dropping: conn=%s route=%s peer=%s dropped=%d",
                hold.conn.id,
                hold.route.id,
                hold.conn.peer,
                hold.dropped,
            )

    def _log_subscribe(self, req: Request, channels: list[str], retry: bool) -> None:
        """F53: ``subscribe http://host/path channel=c [retry]``, as Pushpin's handler logs."""
        if channels and self.ticklog.enabled():
            host = next((v for k, v in req.headers if k.lower() == "host"), "")
            url = req.url if req.url.startswith("http") else f"http://{host}{req.url}"
            tail = " retry" if retry else ""
            for ch in channels:
                self.ticklog.info(f"subscribe {url} channel={ch}{tail}")

    # -- publishing (PublishSink) ------------------------------------------------------------

    def publish(self, items: list[PublishItem], *, source: str = "http") -> None:
        for item in items:
            self.events.message_received(item.channel, source)
            try:
                n = self._publish_one(item)
            except Exception:  # one bad item must not stop the batch or crash the worker
                log.exception("publish channel=%s failed", item.channel)
                continue
            if self.ticklog.enabled():
                self.ticklog.info(f"publish channel={item.channel} receivers={n}")

    def _publish_one(self, item: PublishItem) -> int:
        subs = self.registry.subscribers(item.channel)
        if not subs:
            return 0
        sent = 0
        if item.http_stream is not None:
            n = publish_stream(self, item, subs)
            if n:
                self.events.delivered(item.channel, item.id, "http-stream", n)
            sent += n
        if item.http_response is not None:
            n = publish_response(self, item, subs)
            if n:
                self.events.delivered(item.channel, item.id, "http-response", n)
            sent += n
        if item.ws_message is not None:
            n = publish_ws(self, item, subs)
            if n:
                self.events.delivered(item.channel, item.id, "ws-message", n)
            sent += n
        return sent

    def recover(self) -> None:
        """F27 ``recover``: retry every response hold, re-fetch every stream's next link."""
        for ch in self.registry.channels():
            for s in self.registry.subscribers(ch):
                if isinstance(s, ResponseHold):
                    s.retry()
                elif isinstance(s, StreamHold):
                    s.update()

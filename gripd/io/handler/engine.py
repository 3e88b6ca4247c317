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
from gripd.core.history import READ_LIMIT_MAX, Replay, gone_event
from gripd.core.http import HttpResponse, encode_chunk
from gripd.core.instruct import Instruct, parse_instruct
from gripd.core.publish import PublishItem
from gripd.core.registry import Registry
from gripd.core.stats import delivery_blocks, item_blocks
from gripd.core.wildcard import is_pattern
from gripd.io.handler.channels import ChannelTracker
from gripd.io.handler.fanout import (
    publish_response,
    publish_stream,
    publish_ws,
    send_link_queue,
)
from gripd.io.handler.history import (
    GONE_HEADER,
    HistoryReader,
    ResumeState,
    resume_id,
    route_policy,
    whole,
)
from gripd.io.handler.holds import ResponseHold, StreamHold, stream_head
from gripd.io.handler.ws_session import WsSession
from gripd.io.observe.events import Events, Mode, requests_observed
from gripd.io.observe.ticklog import TickLog
from gripd.io.origin.nextlink import post_gone

if TYPE_CHECKING:
    from gripd.core.routes import Route
    from gripd.io.context import EngineHost, LastIds
    from gripd.io.listener.conn import ClientConn
    from gripd.io.listener.request import Request

log = logging.getLogger("gripd.engine")

FIRST_SUBSCRIPTION_DELAY = 1.0  # Pushpin's SUBSCRIBED_DELAY (F22)
REPLAY_TIMEOUT = 5.0  # a resume whose history read has not answered by then goes on without it

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
        history: HistoryReader | None = None,
    ) -> None:
        self.app = app
        self.history = history  # None: no history configured (Pushpin's behaviour)
        # F22's first-subscription update decided here (one process), or by the hub, which
        # knows the instance's first subscriber and calls :meth:`first_subscription`.
        self.first_subscription_here = first_subscription
        self.loop: asyncio.AbstractEventLoop = app.loop
        self.wildcard = app.config.wildcard_channels
        self.registry = Registry(wildcard=self.wildcard)
        self.channels = channels
        self.last_ids = last_ids
        self.write_buffer_max = app.config.client_write_buffer_max
        self.events: Events = app.events
        self.ticklog = TickLog("gripd.engine", self.loop)

    # -- holds -------------------------------------------------------------------------------

    def start_response(
        self,
        conn: ClientConn,
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
        # F23: a prev-id that disagrees with the channel's known last id: retry at once. With
        # history, the channel's history decides first (it may hold the item that follows).
        behind: list[tuple[str, str]] = []  # (channel, prev-id) that conflict
        ask: list[tuple[str, str]] = []  # (channel, prev-id) to look up in history
        use_history = self.history is not None and route_policy(route, self.app.config).on
        last_ids = self.last_ids
        for ch, pid in (hold.prev_ids or {}).items():
            if pid is None or self._is_pattern(ch):
                continue  # a pattern has no last id and no history of its own
            last = last_ids.last_id(ch)
            if last is not None and last != pid:
                behind.append((ch, pid))
            elif last is None and use_history:
                ask.append((ch, pid))  # unknown here (nobody held it): history may know
        if use_history and (behind or ask):
            self._answer_from_history(hold, (behind or ask)[0], bool(behind))
        elif behind:
            for ch, _ in behind:
                last_ids.forget_last_id(ch)
            self.loop.call_soon(hold.retry)
        self._log_subscribe(req, hold.channels, retry)

    def _answer_from_history(
        self, hold: ResponseHold, behind: tuple[str, str], conflict: bool
    ) -> None:
        """A long-poll whose prev-id is not the channel's last id (or whose last id is not
        known here): answer with the next stored item that has an ``http-response`` format, at
        once and without the origin. Otherwise, with a known conflict, Pushpin's way (forget the
        last id, ask the origin again with ``Grip-Last``); with none, the hold waits, and the
        live items that arrived meanwhile are handed to it in order."""
        history = self.history
        assert history is not None
        ch, pid = behind
        state = ResumeState(pid, [ch])
        hold.resume = state

        def done(r: Replay) -> None:
            if state.buffer is None:
                return
            buffer = state.end()
            hold.resume = None
            if not hold.active:
                return
            item = None
            if r.status == "ok":
                item = next(
                    (
                        i
                        for i in r.items
                        if i.http_response is not None and i.http_response.action == "send"
                    ),
                    None,
                )
            if item is not None:
                hold.prev_ids = {}  # the item follows prev-id by its place in history
                if publish_response(self, item, [hold]):
                    body = item.http_response.body if item.http_response is not None else None
                    bs = self.app.config.message_block_size
                    blocks = delivery_blocks(item.size, body, bs)
                    self.events.delivered(item.channel, item.id, "http-response", 1, blocks)
            elif conflict:
                self.last_ids.forget_last_id(ch)
                hold.retry()
            else:
                for i in buffer:
                    if not hold.active:
                        break
                    publish_response(self, i, [hold])

        state.timer = self.loop.call_later(REPLAY_TIMEOUT, done, Replay("gone"))
        state.finish = lambda: done(Replay("gone"))
        history.read(ch, pid, 100, done)

    def write_stream_head(self, conn: ClientConn, resp: HttpResponse, chunked: bool) -> None:
        head = stream_head(resp, chunked)
        if resp.body:
            head += encode_chunk(resp.body) if chunked else resp.body
        conn.write(head)

    def start_stream(
        self,
        conn: ClientConn,
        req: Request,
        route: Route,
        ins: Instruct,
        chunked: bool,
        *,
        head_sent: bool = False,
        follow: bool = False,
        retry: bool = False,
    ) -> StreamHold:
        last = None
        if (
            not (head_sent or follow or retry)
            and self.history is not None
            and route_policy(route, self.app.config).on
        ):
            last = resume_id(req)
        if not head_sent and last is None:
            self.write_stream_head(conn, ins.response, chunked)
        hold = StreamHold(self, conn, req, route, ins, chunked)
        conn.set_handler(hold)
        conn.hold_started()
        self.subscribe(hold, hold.channels, "stream")
        self._log_subscribe(req, hold.channels, retry)
        resumable = [c for c in hold.channels if not self._is_pattern(c)]
        if last is not None and resumable:
            # A pattern has no history of its own: only its exact channels are resumed.
            self._start_resume(hold, ResumeState(last, resumable, ins.response))
        elif last is not None:
            self.write_stream_head(conn, ins.response, chunked)
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
        route = sub.route
        if self.history is not None and (
            route.history_size is not None or route.history_ttl is not None
        ):
            # The route's own history settings reach the store before any item can be stored
            policy = route_policy(route, self.app.config)
            for ch in channels:
                self.history.set_policy(ch, policy)
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

    def _start_resume(self, hold: StreamHold, state: ResumeState) -> None:
        """Subscribed already (live items wait in ``state``): read what came after the client's
        last id on each channel, then :meth:`finish_resume`."""
        history = self.history
        assert history is not None
        hold.resume = state
        state.timer = self.loop.call_later(REPLAY_TIMEOUT, self.finish_resume, hold)
        state.finish = lambda: self.finish_resume(hold)
        for ch in state.channels:

            def done(r: Replay, ch: str = ch) -> None:
                if hold.resume is not state or state.buffer is None:
                    return  # finished already (timed out, or the client went away)
                state.results[ch] = whole(r, READ_LIMIT_MAX)
                if len(state.results) == len(state.channels):
                    self.finish_resume(hold)

            history.read(ch, state.last_id, READ_LIMIT_MAX, done)

    def finish_resume(self, hold: StreamHold) -> None:
        """Write the head (``Gripd-History: resumed`` or ``gone``), the origin's body, the
        optional gone event, the replay (oldest first, per channel), then the live items that
        waited and were not in the replay. A channel that did not answer counts as gone."""
        state = hold.resume
        if state is None or state.buffer is None:
            return
        buffer = state.end()
        hold.resume = None
        if not hold.active:
            return
        statuses = [
            state.results[c].status if c in state.results else "gone" for c in state.channels
        ]
        verdict = "resumed" if "ok" in statuses else "gone" if "gone" in statuses else None
        resp = state.response
        assert resp is not None
        if verdict is not None:
            resp = HttpResponse(
                resp.code, resp.reason, [*resp.headers, (GONE_HEADER, verdict)], resp.body
            )
        self.write_stream_head(hold.conn, resp, hold.chunked)
        event = self.app.config.history_gone_event
        if verdict == "gone" and event:
            hold.write(gone_event(event, state.last_id))
        replayed: list[PublishItem] = []
        for c in state.channels:
            r = state.results.get(c)
            if r is not None and r.status == "ok":
                replayed.extend(
                    i
                    for i in r.items
                    if i.http_stream is not None and i.http_stream.action == "send"
                )
        for item in replayed:
            publish_stream(self, item, [hold])
        skip = {(i.channel, i.id) for i in replayed if i.id is not None}
        for c, r in state.results.items():
            if r.status == "ok":  # after "gone" nothing tells what the client has: drop nothing
                skip.update((c, k) for k in r.known)
        for item in buffer:
            if item.id is None or (item.channel, item.id) not in skip:
                publish_stream(self, item, [hold])
        if skip and hold.active:
            state.skip = skip
            hold.resume = state

    def resume_ws(self, session: WsSession, channel: str, last_id: str) -> None:
        """A WebSocket subscribe with ``last-id``: replay what the channel stored after it,
        then live messages (which wait meanwhile). Nothing is replayed when the id is gone."""
        history = self.history
        if history is None or not route_policy(session.route, self.app.config).on:
            return
        if self._is_pattern(channel):
            return  # a pattern has no history of its own: live messages only
        state = ResumeState(last_id, [channel])
        if session.resuming is None:
            session.resuming = {}
        session.resuming[channel] = state

        def done(r: Replay) -> None:
            if state.buffer is None:
                return
            state.results[channel] = whole(r, READ_LIMIT_MAX)
            self._finish_ws_resume(session, channel, state)

        state.timer = self.loop.call_later(REPLAY_TIMEOUT, done, Replay("gone"))
        state.finish = lambda: done(Replay("gone"))
        history.read(channel, last_id, READ_LIMIT_MAX, done)

    def _finish_ws_resume(self, session: WsSession, channel: str, state: ResumeState) -> None:
        buffer = state.end()
        resuming = session.resuming
        if resuming is not None and resuming.get(channel) is state:
            del resuming[channel]
        if not session.active:
            return
        r = state.results.get(channel)
        replayed = [
            i
            for i in (r.items if r is not None and r.status == "ok" else ())
            if i.ws_message is not None and i.ws_message.action == "send"
        ]
        for item in replayed:
            publish_ws(self, item, [session])
        skip = {(channel, i.id) for i in replayed if i.id is not None}
        if r is not None and r.status == "ok":
            skip.update((channel, k) for k in r.known)
        for item in buffer:
            if item.id is None or (channel, item.id) not in skip:
                publish_ws(self, item, [session])
        if skip:
            state.skip = skip
            if session.resuming is None:
                session.resuming = {}
            session.resuming[channel] = state
        elif not session.resuming:
            session.resuming = None

    def _is_pattern(self, channel: str) -> bool:
        return self.wildcard and is_pattern(channel)

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
        """A next link's stream hold changed the channel set (F25). The route targets'
        ``sub=`` channels (implicit, F11) stay, as Pushpin keeps ``implicitChannels``."""
        old = set(hold.channels)
        implicit = {ch for t in hold.route.targets for ch in t.subs}
        channels = [*channels, *(c for c in hold.channels if c in implicit and c not in channels)]
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
                wildcard=self.app.config.wildcard_channels,
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
            queued = hold.link.take_queue() if hold.link is not None else []
            self.resubscribe(hold, [c.name for c in ins.channels])
            hold.apply_stream_instruct(ins)
            if queued:
                send_link_queue(self, hold, queued)  # Pushpin's queue, after the new hold
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
        conn: ClientConn,
        req: Request,
        route: Route,
        body: list[bytes],
        last_ids: list[tuple[str, str]],
    ) -> None:
        """Send a held request to the origin again, on the same client connection (F27)."""
        if not conn.closed:
            self.app.retry_request(conn, req, route, body, last_ids)

    def slow_client(self, hold: StreamHold | WsSession) -> None:
        """A message was dropped for ``hold``'s client (its output is past
        ``client_write_buffer_max``): count it, log it, and close the connection under
        ``slow_client_policy=close`` (counted and logged once per connection)."""
        conn = hold.conn
        route = hold.route.id
        t = conn.transport
        closing = conn.closed or t is None or t.is_closing()
        close = self.app.config.slow_client_policy == "close" and not closing
        queued = conn.buffered()
        self.events.slow_client(route, queued, close)
        if not close and (closing or not (hold.dropped == 1 or hold.dropped % 100 == 0)):
            return  # dropped quietly: logged at the 1st and every 100th drop
        extra = {
            "conn": conn.id,
            "route": route,
            "peer": conn.peer,
            "queued": queued,
            "dropped": hold.dropped,
            "policy": "close" if close else "drop",
        }
        if close:
            msg = "publish queue at max, closing: conn=%s route=%s peer=%s"
            log.warning(msg, conn.id, route, conn.peer, extra=extra)
            conn.abort()
        else:
            msg = "publish queue at max, dropping: conn=%s route=%s peer=%s dropped=%d"
            log.warning(msg, conn.id, route, conn.peer, hold.dropped, extra=extra)

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
        bs = self.app.config.message_block_size
        ticklog = self.ticklog if self.ticklog.enabled() else None  # once per batch, not item
        for item in items:
            self.events.message_received(item.channel, source, item_blocks(item, bs))
            try:
                n = self._publish_one(item)
            except Exception:  # one bad item must not stop the batch or crash the worker
                log.exception("publish channel=%s failed", item.channel)
                continue
            if ticklog is not None:
                ticklog.info(f"publish channel={item.channel} receivers={n}")

    def _publish_one(self, item: PublishItem) -> int:
        # Subscribers of the channel and of the patterns matching it, each once (wildcard_channels)
        subs = self.registry.receivers(item.channel)
        if not subs:
            return 0
        sent = 0
        bs = self.app.config.message_block_size  # stats blocks (F43), -1 when off
        if item.http_stream is not None:
            n = publish_stream(self, item, subs)
            if n:
                blocks = delivery_blocks(item.size, item.http_stream.content, bs)
                self.events.delivered(item.channel, item.id, "http-stream", n, blocks)
                size = len(item.http_stream.content)
                if size and requests_observed(self.app.config):
                    # held-stream bytes (stats, F43); content filters may change a hold's
                    # bytes, the published content's length is what is counted
                    self.events.counter("client-content-bytes-sent", size * n)
            sent += n
        if item.http_response is not None:
            n = publish_response(self, item, subs)
            if n:
                blocks = delivery_blocks(item.size, item.http_response.body, bs)
                self.events.delivered(item.channel, item.id, "http-response", n, blocks)
            sent += n
        if item.ws_message is not None:
            n = publish_ws(self, item, subs)
            if n:
                blocks = delivery_blocks(item.size, item.ws_message.content, bs)
                self.events.delivered(item.channel, item.id, "ws-message", n, blocks)
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

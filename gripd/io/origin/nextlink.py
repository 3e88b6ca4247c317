"""Next links ("GRIP Next", F25): the engine's own GET of a ``Grip-Link: <url>; rel=next``.

The link is fetched through the original route (Pushpin 1.35+), with ``Grip-Last`` headers for
the channels that carry prev-ids, and the response is returned whole for the stream hold to
append and to read new instructions from. Failures (connect errors, non-2xx) are retried with
backoff 1, 2, 4, 8, 16 s plus up to 1 s of jitter, as long as nothing of that link was sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from gripd.core.errors import OriginError
from gripd.core.forward import ClientRequestInfo, origin_request_headers
from gripd.core.http import HttpResponse, reason_phrase
from gripd.io.origin.endpoint import endpoints_for
from gripd.io.origin.http import fetch

if TYPE_CHECKING:
    from gripd.core.instruct import NextLink
    from gripd.core.publish import PublishItem
    from gripd.core.routes import Route
    from gripd.io.context import OriginContext
    from gripd.io.handler.holds import StreamHold
    from gripd.io.listener.conn import ClientConn
    from gripd.io.listener.request import Request

log = logging.getLogger("gripd.nextlink")

RETRY_DELAYS = (1, 2, 4, 8, 16)
PUBLISH_QUEUE_MAX = 100  # Pushpin's httpsession queue bound
MAX_LINK_RESPONSE = 1_000_000


def resolve(base: str, link: str) -> str:
    """The absolute URL of ``link`` relative to ``base`` (the request URL)."""
    return urljoin(base, link)


async def fetch_link(
    app: OriginContext,
    route: Route,
    url: str,
    peer_ip: str,
    last_ids: Callable[[], list[tuple[str, str]]],
) -> HttpResponse:
    """GET ``url`` through ``route``'s targets; raise ``OriginError`` when every try failed.

    ``last_ids`` is asked before every attempt: like Pushpin's ``requestNextLink``, a retry
    sends the ``Grip-Last`` values current at that time."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.netloc
    target = route.targets[0]
    info = ClientRequestInfo(
        method="GET",
        path=path,
        headers=[("Host", host)],
        peer_ip=peer_ip,
        tls=parts.scheme in ("https", "wss"),
    )
    token = None if route.no_grip else app.grip_sig_token(route)
    endpoints = endpoints_for(route.targets, route.as_host, host)
    if not endpoints:
        raise OriginError("next link: route has no host targets")
    last_error: OriginError | None = None
    for attempt in range(len(RETRY_DELAYS) + 1):
        if attempt:
            await asyncio.sleep(RETRY_DELAYS[attempt - 1] + random.random())
        headers = origin_request_headers(
            info,
            route,
            target,
            app.forward,
            token=token,
            trusted=False,
            last_ids=last_ids(),
            internal=True,
        )
        t0 = time.monotonic()
        try:
            code, reason, rheaders, body = await fetch(
                app.pool, endpoints, "GET", path, headers, limit=MAX_LINK_RESPONSE
            )
        except OriginError as e:
            last_error = e
            continue
        finally:
            app.metrics.observe_origin_latency(time.monotonic() - t0)
        if 200 <= code < 300:
            return HttpResponse(code, reason or reason_phrase(code), rheaders, body)
        last_error = OriginError(f"next link answered {code}")
    raise last_error or OriginError("Failed to retrieve next link.")


class LinkState:
    """A stream hold's next link: the URL, its periodic re-fetch, the fetch in flight."""

    __slots__ = ("hold", "pending", "queue", "seen", "task", "timeout", "timer", "url")

    def __init__(self, hold: StreamHold) -> None:
        self.hold = hold
        self.url = ""
        self.timeout = 0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.seen: set[str] = set()
        self.pending = False
        # Stream items published while the link is fetched (Pushpin's publish queue).
        self.queue: list[PublishItem] = []

    def enqueue(self, item: PublishItem) -> None:
        """Hold ``item`` until the fetch in flight is applied; Pushpin keeps at most
        ``PUBLISH_QUEUE_MAX`` and drops the rest."""
        if len(self.queue) < PUBLISH_QUEUE_MAX:
            self.queue.append(item)
        else:
            log.debug("publish queue at max, dropping")

    def take_queue(self) -> list[PublishItem]:
        out, self.queue = self.queue, []
        return out

    def set(self, link: NextLink, req: Request, conn: ClientConn) -> None:
        base = self.url
        if not base:
            host = next((v for k, v in req.headers if k.lower() == "host"), "localhost")
            base = f"http://{host}{req.url}" if req.url.startswith("/") else req.url
        self.url = resolve(base, link.url)
        self.timeout = link.timeout
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.timeout > 0:
            self.seen.clear()
            loop = self.hold.engine.loop
            self.timer = loop.call_later(self.timeout, self._periodic)

    def _periodic(self) -> None:
        """F25: re-fetch every ``timeout`` s unless every channel saw a message meanwhile."""
        self.timer = None
        if not all(ch in self.seen for ch in self.hold.channels):
            self.fetch()
        self._arm()

    def fetch(self) -> None:
        # One fetch at a time; none while the client's output is backed up (its transport is
        # over the write high-water mark): each body is appended to that output, so a client
        # that does not read would otherwise grow it by one body per fetch. ``resume`` sends it.
        if self.task is not None or self.hold.conn.writing_paused:
            self.pending = True
            return
        self.task = self.hold.engine.loop.create_task(self._run())

    def resume(self) -> None:
        """The client took its output: send a fetch deferred by ``fetch``."""
        if self.pending and self.task is None and self.hold.active:
            self.pending = False
            self.fetch()

    async def _run(self) -> None:
        hold = self.hold
        n = len(hold.route.prefix)

        def last() -> list[tuple[str, str]]:
            return [(ch[n:], pid) for ch, pid in (hold.prev_ids or {}).items() if pid is not None]

        try:
            resp = await fetch_link(hold.engine.app, hold.route, self.url, hold.conn.peer, last)
        except OriginError:
            self.task = None
            hold.fail("Failed to retrieve next link.")
            return
        self.task = None
        hold.engine.apply_link_response(hold, resp)
        if self.pending and hold.active:
            self.pending = False
            self.fetch()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None
        self.queue = []


async def post_gone(app: OriginContext, route: Route, url: str, peer_ip: str) -> None:
    """``rel=gone`` (Pushpin 1.41): one best-effort POST when the held client disconnects."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    info = ClientRequestInfo(
        method="POST", path=path, headers=[("Host", parts.netloc)], peer_ip=peer_ip, tls=False
    )
    token = None if route.no_grip else app.grip_sig_token(route)
    headers = origin_request_headers(
        info, route, route.targets[0], app.forward, token=token, trusted=False, internal=True
    )
    endpoints = endpoints_for(route.targets, route.as_host, parts.netloc)
    try:
        await fetch(app.pool, endpoints, "POST", path, headers, limit=MAX_LINK_RESPONSE)
    except OriginError as e:
        log.info("gone link %s failed: %s", url, e)

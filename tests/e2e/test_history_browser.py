"""A real browser's ``EventSource`` resumes from gripd's channel history after the server drops it.

Chromium loads a page through gripd whose script opens ``new EventSource('/stream')``; the origin
answers that with a GRIP stream hold (F20, F24) and ``retry: 300`` so the browser comes back
quickly. Items carry an ``id`` (stored in history, ``[gripd] history_size``) and an SSE
``id:`` line. An ``action: close`` publish (F24, F28) ends the stream; the browser reconnects by
itself with ``Last-Event-ID``, and every item published while it was away must arrive once, in
order, before the live ones.

"Away" is made deterministic: the origin holds back its answer to the reconnect request until
the test has published the items the browser must not miss, so no subscription exists for them
whatever the timing. Items without an ``id`` ("probe" events) tell the test when a hold is live;
they are not stored and are left out of the comparison.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.browser import browser_page, page_log, require_browser
from tests.support.e2e import publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Server

if TYPE_CHECKING:  # imported lazily: without Playwright the test skips (or fails in CI)
    from playwright.async_api import Page, Response

CHANNEL = "hist"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>resume</title><link rel="icon" href="data:,">
</head><body>
<script>
window.got = [];
window.opens = 0;
window.errors = 0;
const es = new EventSource('/stream');
es.onopen = () => { window.opens += 1; };
es.onerror = () => { window.errors += 1; };
es.onmessage = (e) => { window.got.push([e.lastEventId, e.data]); };
</script>
</body></html>
"""

HOLD = [
    ("Grip-Hold", "stream"),
    ("Grip-Channel", CHANNEL),
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
]

#: Bound on each wait for the browser (seconds).
WAIT = 10.0 * TIME_SCALE


def item(n: int) -> dict[str, object]:
    """Item ``n``: stored in history under id ``n``, one SSE event with that id."""
    return stream_item(CHANNEL, f"id: {n}\ndata: msg {n}\n\n", id=str(n))


class Run:
    """One test run's browser page, server and origin, with waits that explain their failures."""

    def __init__(self, page: Page, server: Server, origin: Origin) -> None:
        self.page = page
        self.server = server
        self.origin = origin
        self.stream_headers: list[dict[str, str]] = []

    async def js(self, expr: str) -> Any:
        return await self.page.evaluate(expr)

    async def received(self) -> list[tuple[str, str]]:
        """Every message event so far as (lastEventId, data)."""
        got = await self.js("window.got")
        return [(str(i), str(d)) for i, d in got]

    async def numbered(self) -> list[tuple[str, str]]:
        """The received events that are numbered items (probes left out)."""
        return [(i, d) for i, d in await self.received() if d.startswith("msg ")]

    async def describe(self) -> str:
        """What the page, the origin and gripd have seen: for failure messages."""
        try:
            state = await self.js("({got: window.got, opens: window.opens, errors: window.errors})")
        except Exception as e:  # the page itself may be what broke
            state = f"<page unreadable: {e}>"
        reqs = [(r.path, r.header("Last-Event-ID")) for r in self.origin.requests]
        return (
            f"page: {json.dumps(state)}\norigin requests (path, Last-Event-ID): {reqs}\n"
            f"/stream response headers: {self.stream_headers}\n"
            f"page log: {page_log(self.page)}\ngripd log tail:\n{self.server.log_text()[-3000:]}"
        )

    async def until(self, what: str, expr: str, arg: object = None) -> None:
        """Wait until JS ``expr`` (a function of ``arg``) is truthy on the page, within WAIT."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            await self.page.wait_for_function(expr, arg=arg, polling=50, timeout=WAIT * 1000)
        except PlaywrightTimeout:
            pytest.fail(f"timed out waiting for {what}\n{await self.describe()}")

    async def until_data(self, data: str) -> None:
        await self.until(f"event {data!r}", "d => window.got.some(([, x]) => x === d)", arg=data)

    async def probe_live(self, tag: str) -> None:
        """Publish id-less probe events until one reaches the page: the hold is subscribed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        n = 0
        while loop.time() < deadline:
            await publish(self.server, [stream_item(CHANNEL, f"data: probe {tag} {n}\n\n")])
            n += 1
            for _ in range(4):
                data = [d for _, d in await self.received()]
                if any(d.startswith(f"probe {tag} ") for d in data):
                    return
                await asyncio.sleep(0.05)
        pytest.fail(f"no probe {tag!r} event reached the page\n{await self.describe()}")


def gated_stream(
    origin: Origin, gate: asyncio.Event
) -> Callable[[RecordedRequest], Awaitable[Reply]]:
    """The ``/stream`` responder: a stream hold at once for the first request, and for later
    ones only after ``gate`` is set (so the browser stays unsubscribed until then)."""

    async def respond(_req: RecordedRequest) -> Reply:
        if len(origin.requests_for("/stream")) > 1:
            await asyncio.wait_for(gate.wait(), WAIT)
        return Reply(200, HOLD, "retry: 300\n\n")

    return respond


@pytest.mark.timeout(30 * TIME_SCALE)
@pytest.mark.parametrize("workers", [1, 2])
async def test_eventsource_resumes_after_server_close(
    start: StartFn, origin: Origin, workers: int
) -> None:
    require_browser()  # before starting gripd: skip (or fail in CI) at once
    gate = asyncio.Event()
    origin.route("GET", "/", Reply(200, [("Content-Type", "text/html; charset=utf-8")], PAGE))
    origin.route("GET", "/stream", gated_stream(origin, gate))
    s = await start(
        "gripd",
        [f"* 127.0.0.1:{origin.port}"],
        conf={"gripd": {"workers": str(workers), "history_size": "100"}},
    )
    async with browser_page() as page:
        run = Run(page, s, origin)

        def on_response(resp: Response) -> None:
            if resp.url.endswith("/stream"):
                run.stream_headers.append(dict(resp.headers))

        page.on("response", on_response)
        await page.goto(s.base_url() + "/")
        await run.until("the first stream to open", "() => window.opens >= 1")
        await run.probe_live("a")

        # Live: items 1-4 arrive on the first stream.
        for n in range(1, 5):
            await publish(s, [item(n)])
        await run.until_data("msg 4")

        # The server drops the stream; the browser will reconnect with Last-Event-ID: 4.
        await publish(s, [{"channel": CHANNEL, "formats": {"http-stream": {"action": "close"}}}])
        for n in range(5, 8):  # published while the browser has no stream
            await publish(s, [item(n)])
        try:
            reconnect = await origin.wait_for("/stream", 2, within=WAIT)
        except TimeoutError:
            pytest.fail(f"the browser did not reconnect\n{await run.describe()}")
        for n in range(8, 10):  # the reconnect request is in, its hold is not subscribed yet
            await publish(s, [item(n)])
        gate.set()
        await run.until("the second stream to open", "() => window.opens >= 2")
        await run.probe_live("b")

        # Live again: items 10-12 on the resumed stream.
        for n in range(10, 13):
            await publish(s, [item(n)])
        await run.until_data("msg 12")

        assert await run.js("window.errors") >= 1, "the close never reached the browser"
        first = origin.requests_for("/stream")[0]
        assert first.header("Last-Event-ID") is None
        assert reconnect.header("Last-Event-ID") == "4", await run.describe()
        assert len(origin.requests_for("/stream")) == 2, await run.describe()
        expected = [(str(n), f"msg {n}") for n in range(1, 13)]
        assert await run.numbered() == expected, await run.describe()
        assert len(run.stream_headers) == 2, await run.describe()
        assert "gripd-history" not in run.stream_headers[0]
        assert run.stream_headers[1].get("gripd-history") == "resumed", await run.describe()

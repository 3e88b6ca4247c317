"""A configurable test origin (aiohttp.web) that records requests and answers per path.

Usage, inside an async test (it runs in the test's event loop on 127.0.0.1, ephemeral port)::

    origin = Origin()
    origin.route("GET", "/lp", Reply(headers=[("Grip-Hold", "response"),
                                              ("Grip-Channel", "x")], body="timeout\\n"))
    async with origin:
        ...  # routes: f"* 127.0.0.1:{origin.port}"
        req = await origin.wait_for("/lp")       # a RecordedRequest
        assert req.header("Grip-Sig") is not None

- ``route(method, path, reply)``: ``method`` may be ``"*"``; ``path`` matches the path without
  the query string. ``reply`` is a ``Reply`` or a function of the ``RecordedRequest`` returning
  a ``Reply`` (sync or async), so a test can answer differently per call. Later ``route`` calls
  for the same key replace earlier ones. Unrouted paths get ``default`` (404 ``not found``).
- ``requests`` holds every request in arrival order, except the readiness probe of
  ``tests.support.procs`` (``PROBE_PATH``), which is answered but not recorded.
- ``Reply.headers`` is a list of pairs (repeats allowed, e.g. two ``Grip-Channel``); a ``str``
  body is sent as UTF-8 with ``Content-Type: text/plain`` unless a Content-Type is given.
  ``Reply.delay`` waits that many seconds before answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from tests.support.procs import PROBE_PATH

Headers = list[tuple[str, str]]


@dataclass
class Reply:
    """What the origin answers."""

    status: int = 200
    headers: Headers = field(default_factory=list)
    body: bytes | str = b""
    delay: float = 0.0


@dataclass
class RecordedRequest:
    """One request as the origin saw it."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` in order."""
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


Responder = Reply | Callable[[RecordedRequest], Reply | Awaitable[Reply]]


class Origin:
    """The test origin; ``async with`` starts and stops it."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply(404, body="not found\n")
        self.requests: list[RecordedRequest] = []
        self._routes: dict[tuple[str, str], Responder] = {}
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()
        self.port = 0

    def route(self, method: str, path: str, reply: Responder) -> None:
        """Answer ``method path`` (``method`` ``"*"`` = any) with ``reply``."""
        self._routes[(method.upper(), path)] = reply

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path is ``path``."""
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int = 1, within: float = 10.0) -> RecordedRequest:
        """Wait until ``count`` requests for ``path`` arrived; return the ``count``-th."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.requests_for(path)) < count:
            left = deadline - loop.time()
            if left <= 0:
                seen = [r.path for r in self.requests]
                raise TimeoutError(f"no request #{count} for {path} (seen: {seen})")
            self._arrived.clear()
            # The loop re-checks the condition; a missed wake-up only costs a poll interval.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.25))
        return self.requests_for(path)[count - 1]

    async def start(self) -> None:
        """Listen on 127.0.0.1 at an ephemeral port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening and close connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Origin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=[(k, v) for k, v in request.headers.items()],
            body=body,
        )
        if rec.path != PROBE_PATH:
            self.requests.append(rec)
            self._arrived.set()
        responder = (
            self._routes.get((rec.method, rec.path))
            or self._routes.get(("*", rec.path))
            or self.default
        )
        if isinstance(responder, Reply):
            reply = responder
        else:
            result = responder(rec)
            reply = await result if inspect.isawaitable(result) else result
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        headers: CIMultiDict[str] = CIMultiDict(reply.headers)
        data = reply.body
        if isinstance(data, str):
            data = data.encode()
            headers.setdefault("Content-Type", "text/plain")
        return web.Response(status=reply.status, headers=headers, body=data)

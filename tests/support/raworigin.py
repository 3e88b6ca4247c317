"""A raw asyncio origin for misbehaving-origin tests: it answers the readiness probe of
``procs.start_server`` and hands every other connection, after its request head, to ``respond``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from tests.support.procs import PROBE_PATH

_PROBE_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


class RawOrigin:
    """Subclasses write ``respond``; ``cut_off`` is set when the proxy closes the connection
    first (or a read times out), the test's sign that the proxy stopped the origin."""

    def __init__(self, head_wait: float) -> None:
        self.head_wait = head_wait
        self.port = 0
        self.cut_off = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_wait)
            if PROBE_PATH.encode() in head.split(b"\r\n", 1)[0]:
                writer.write(_PROBE_ANSWER)
                return
            await self.respond(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            self.cut_off.set()
        finally:
            writer.close()

"""A tiny raw HTTP/1.1 client for exact-bytes assertions and long-lived streams."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools


@dataclass
class _Resp:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    head_done: bool = False
    done: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        if 100 <= self.status < 200:  # an interim response (100 Continue) came first: skip it
            self.status = 0
            self.headers = []
            self.body = bytearray()
            self.head_done = False
            self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.head_done = not 100 <= self.status < 200

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = self.head_done


class RawResponse:
    """Reads one response from a connection, incrementally."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str = "GET"
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._r = _Resp()
        self._p = httptools.HttpResponseParser(self._r)
        self._r.parser = self._p
        self.raw = bytearray()
        self._taken = 0
        self.eof = False

    @property
    def status(self) -> int:
        return self._r.status

    @property
    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self._r.headers}

    @property
    def header_list(self) -> list[tuple[str, str]]:
        return self._r.headers

    @property
    def done(self) -> bool:
        return self._r.done

    async def _feed(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            self.eof = True
            if not self._r.done:
                try:
                    self._p.feed_data(b"")
                except httptools.HttpParserError:
                    pass
            return
        self.raw += data
        self._p.feed_data(data)

    async def head(self, timeout: float = 10.0) -> None:
        while not self._r.head_done and not self.eof:
            await self._feed(timeout)
        if not self._r.head_done:
            raise ConnectionError("closed before the response head")

    async def read_body_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Wait until the body received so far (after earlier takes) contains ``needle``;
        return and consume everything up to and including it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            i = self._r.body.find(needle, self._taken)
            if i >= 0:
                out = bytes(self._r.body[self._taken : i + len(needle)])
                self._taken = i + len(needle)
                return out
            if self._r.done or self.eof:
                raise ConnectionError(f"response ended without {needle!r}: {bytes(self._r.body)!r}")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {needle!r} in {bytes(self._r.body)!r}")
            await self._feed(left)

    async def read_to_end(self, timeout: float = 10.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._r.done and not self.eof:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"response not complete: {bytes(self._r.body)!r}")
            await self._feed(left)
        out = bytes(self._r.body[self._taken :])
        self._taken = len(self._r.body)
        return out

    def close(self) -> None:
        self.writer.close()


async def open_request(port: int, raw: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``raw`` on a new connection and return the response after its head arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    resp = RawResponse(reader, writer)
    try:
        await resp.head(timeout)
    except BaseException:
        writer.close()  # don't leak the socket when no head arrives
        raise
    return resp


async def raw_request(
    port: int, raw: bytes, timeout: float = 15.0
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: (status, lower-cased headers, body)."""
    resp = await open_request(port, raw, timeout)
    try:
        body = await resp.read_to_end(timeout)
    finally:
        resp.close()
    return resp.status, resp.headers, body


async def read_until_closed(
    reader: asyncio.StreamReader, timeout: float, limit: int = 1 << 20
) -> tuple[bytes, float]:
    """Everything the server sends until it closes (a reset counts as a close), at most
    ``limit`` bytes, and the seconds it took; TimeoutError when still open after ``timeout``."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + timeout
    out = bytearray()
    while len(out) < limit:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"connection still open; got {bytes(out[:300])!r}")
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return bytes(out), loop.time() - t0

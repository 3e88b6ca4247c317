"""Raw WebSocket peers for end-to-end tests: a test origin and a byte-level client (F37–F39).

``WsOrigin`` listens on 127.0.0.1 (ephemeral port) and hands each upgrade request to the test
as an ``OriginConn``; the test decides what happens (accept with chosen headers, reject, send
frames, never read). Plain HTTP requests (the readiness probe of ``tests.support.procs``) get
``200 ok``. Frames are parsed with websockets' sans-I/O ``Protocol`` so the test sees every
frame as sent (fragments, pings, close), not reassembled messages.

``RawWsClient`` is a client on a bare socket: it writes its own handshake and frames (valid or
deliberately broken) and can capture the exact bytes the proxy sends after the ``101``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.utils import accept_key

from tests.support.procs import PROBE_PATH

Headers = list[tuple[str, str]]

WAIT = 5.0  # default bound for every wait here


def _header(headers: Headers, name: str) -> str | None:
    low = name.lower()
    return next((v for k, v in headers if k.lower() == low), None)


async def _read_head(reader: asyncio.StreamReader, within: float) -> tuple[str, Headers]:
    """One HTTP head: (first line, headers)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = raw.decode("latin-1").split("\r\n")
    headers: Headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return lines[0], headers


@dataclass
class Handshake:
    """The upgrade request as the origin saw it."""

    method: str
    path: str
    headers: Headers

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


class _Peer:
    """Frame I/O on an established WebSocket, shared by both peers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, side: Side):
        self.reader = reader
        self.writer = writer
        self.proto = Protocol(side, state=State.OPEN, max_size=None)
        self._frames: list[Frame] = []
        self.eof = False
        self.raw = bytearray()  # every byte received after the handshake

    def _out(self) -> None:
        for data in self.proto.data_to_send():
            if data and not self.writer.is_closing():
                self.writer.write(data)

    def send_frame(self, frame: Frame) -> None:
        """Any frame, exactly (websockets would refuse some of them through its API)."""
        self.writer.write(frame.serialize(mask=self.proto.side is Side.CLIENT))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_text(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send_frame(Frame(Opcode.TEXT, data))

    def send_binary(self, data: bytes) -> None:
        self.send_frame(Frame(Opcode.BINARY, data))

    def send_ping(self, data: bytes = b"") -> None:
        self.send_frame(Frame(Opcode.PING, data))

    def send_pong(self, data: bytes = b"") -> None:
        self.send_frame(Frame(Opcode.PONG, data))

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        data = b"" if code is None else Close(code, reason).serialize()
        self.send_frame(Frame(Opcode.CLOSE, data))

    async def recv_frame(self, within: float = WAIT) -> Frame:
        """The next frame of any kind. websockets answers pings and closes by itself (as a
        normal peer would). Raises EOFError at end of stream, TimeoutError after ``within``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self._frames:
            if self.eof:
                raise EOFError("connection closed")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no frame")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:  # (an OSError subclass: must come first)
                raise
            except OSError:
                data = b""
            self.raw += data
            if data:
                self.proto.receive_data(data)
            else:
                self.eof = True
                self.proto.receive_eof()
                self.writer.close()  # the peer is gone; release our end too
            self._frames += [e for e in self.proto.events_received() if isinstance(e, Frame)]
            self._out()
        return self._frames.pop(0)

    async def recv_message(self, within: float = WAIT) -> tuple[Opcode, bytes]:
        """The next data message (fragments joined) or control frame, as (opcode, payload)."""
        first = await self.recv_frame(within)
        if first.opcode not in (Opcode.TEXT, Opcode.BINARY) or first.fin:
            return first.opcode, bytes(first.data)
        parts = [bytes(first.data)]
        while True:
            f = await self.recv_frame(within)
            parts.append(bytes(f.data))
            if f.fin:
                return first.opcode, b"".join(parts)

    async def recv_close(self, within: float = WAIT) -> tuple[int | None, str]:
        """Skip data until a close frame; its (code, reason). None code for an empty close."""
        while True:
            f = await self.recv_frame(within)
            if f.opcode is Opcode.CLOSE:
                if not f.data:
                    return None, ""
                c = Close.parse(bytes(f.data))
                return c.code, c.reason

    async def wait_eof(self, within: float = WAIT) -> None:
        """Read (and discard frames) until the peer closes the TCP connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.eof:
            with contextlib.suppress(TimeoutError, EOFError):
                await self.recv_frame(max(0.0, deadline - loop.time()))
            if loop.time() >= deadline and not self.eof:
                raise TimeoutError("peer did not close")

    async def read_raw(self, nbytes: int, within: float = WAIT) -> bytes:
        """Exactly the next ``nbytes`` raw bytes (bypassing frame parsing)."""
        data = await asyncio.wait_for(self.reader.readexactly(nbytes), within)
        self.raw += data
        return data

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()


class OriginConn(_Peer):
    """One connection the proxy made to the origin."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hs: Handshake
    ) -> None:
        super().__init__(reader, writer, Side.SERVER)
        self.handshake = hs

    def accept(self, headers: Sequence[tuple[str, str]] = (), *, then: bytes = b"") -> None:
        """Answer 101 with ``headers`` added; ``then`` goes in the same write (the seed
        example's backend writes its first frame right behind the handshake)."""
        key = self.handshake.header("Sec-WebSocket-Key") or ""
        head = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept_key(key)}",
            *(f"{k}: {v}" for k, v in headers),
        ]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + then)

    def accept_grip(
        self, prefix: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Accept offering the grip extension (``prefix`` None: default ``m:``)."""
        ext = "grip" if prefix is None else f'grip; message-prefix="{prefix}"'
        self.accept([("Sec-WebSocket-Extensions", ext), *headers])

    def reject(self, status: int, reason: str, headers: Headers, body: bytes) -> None:
        head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
        head.append(f"Content-Length: {len(body)}")
        head.append("Connection: close")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.writer.close()

    def control(self, text: str) -> None:
        """A ``c:`` GRIP control message (F39)."""
        self.send_text("c:" + text)


class WsOrigin:
    """The test origin; ``async with`` starts and stops it."""

    def __init__(self) -> None:
        self.conns: list[OriginConn] = []
        self._new: asyncio.Queue[OriginConn] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> WsOrigin:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def next_conn(self, within: float = WAIT) -> OriginConn:
        """The next upgrade request to arrive (not yet answered)."""
        return await asyncio.wait_for(self._new.get(), within)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            first, headers = await _read_head(reader, 30)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            writer.close()
            return
        method, path = [*first.split(" "), "", ""][:2]
        up = (_header(headers, "Upgrade") or "").lower()
        if path == PROBE_PATH or up != "websocket":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            writer.close()
            return
        conn = OriginConn(reader, writer, Handshake(method, path, headers))
        self.conns.append(conn)
        self._new.put_nowait(conn)


@dataclass
class ClientHandshake:
    """The proxy's answer to a ``RawWsClient`` handshake."""

    status: int
    headers: Headers = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


class RawWsClient(_Peer):
    """A WebSocket client on a bare socket (masked frames, byte-exact capture)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer, Side.CLIENT)
        self.response = ClientHandshake(0)

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        within: float = WAIT,
    ) -> RawWsClient:
        """Hand-shake on 127.0.0.1:``port``; ``response`` holds the answer (any status)."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), within)
        self = cls(reader, writer)
        key = base64.b64encode(os.urandom(16)).decode()
        head = [
            f"GET {path} HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        first, hdrs = await _read_head(reader, within)
        self.response = ClientHandshake(int(first.split(" ")[1]), hdrs)
        if self.response.status == 101:
            assert _header(hdrs, "Sec-WebSocket-Accept") == accept_key(key)
        return self

    async def capture(self, nbytes: int, within: float = WAIT) -> bytes:
        """The next ``nbytes`` bytes from the proxy, exactly as sent."""
        return await self.read_raw(nbytes, within)

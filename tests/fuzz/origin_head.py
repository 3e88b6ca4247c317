"""Origin response heads through the real ``OriginConnection.data_received`` (httptools).

Input: one flag byte, then the bytes the origin sends; the origin then closes. Flags: bit 0 —
the request was ``HEAD`` (else ``GET``); bits 1-3 — how the bytes are cut into reads.

Allowed outcomes, seen by the exchange's handler: ``head body* end``, or ``head body* error``,
or ``error`` alone, where the error is an ``OriginError`` (the proxy answers 502); exactly one of
end/error once the origin has closed. A find is an exception escaping the connection, an error
logged by the pool (a handler or callback failure), another event order, or a status outside
200-999.
"""

from __future__ import annotations

from gripd.core.errors import OriginError
from gripd.core.headers import Headers
from gripd.io.origin.connection import OriginConnection
from gripd.io.origin.endpoint import Endpoint
from gripd.io.origin.http import OriginExchange, OriginPool

from ._common import FakeLoop, FakeTransport, LogTrap, chunked, flags_and_rest

_LOGGER = "gripd.fuzz.origin"


class Recorder:
    """A ResponseHandler that records events and checks their order as they come."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.status = 0
        self.error: OriginError | None = None

    def on_response_head(self, status: int, reason: str, headers: Headers) -> None:
        assert not self.events, f"head after {self.events}"
        # 1xx are skipped by the connection; a status under 100 has no class (RFC 9110 15).
        assert 200 <= status <= 999, f"status {status}"
        assert isinstance(reason, str)
        self.events.append("head")
        self.status = status

    def on_response_body(self, data: bytes) -> None:
        assert self.events and self.events[-1] in ("head", "body"), f"body after {self.events}"
        assert data
        self.events.append("body")

    def on_response_end(self) -> None:
        assert self.events and self.events[-1] in ("head", "body"), f"end after {self.events}"
        self.events.append("end")

    def on_error(self, exc: OriginError) -> None:
        assert isinstance(exc, OriginError)
        assert not self.events or self.events[-1] in ("head", "body"), f"error after {self.events}"
        self.events.append("error")
        self.error = exc


SEEDS = [
    b"\x00HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfoobar",
    b"\x02HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\nT: x\r\n\r\n",
    b"\x01HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
    b"\x00HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n",
    b"\x04HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
    b"\x00HTTP/1.1 200 OK\r\nContent-Type: application/grip-instruct\r\nContent-Length: 2\r\n"
    b"\r\n{}",
    b"\x00HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"\x06HTTP/1.1 502 Bad\r\nGrip-Hold: stream\r\nGrip-Channel: a\r\nContent-Length: 0\r\n\r\n",
]

TOKENS = [
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"200 OK\r\n",
    b"100 Continue\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Connection: close",
    b"Connection: keep-alive",
    b"0\r\n\r\n",
    b"Grip-Hold: ",
]


def fuzz_one(data: bytes) -> None:
    flags, stream = flags_and_rest(data)
    method = "HEAD" if flags & 1 else "GET"
    with LogTrap(_LOGGER) as trap:
        pool = OriginPool(logger=trap.logger)
        pool._loop = FakeLoop()  # timers are kept, never fired; a task (a replay) is a find
        conn = OriginConnection(pool, Endpoint("127.0.0.1", 1))
        transport = FakeTransport()
        conn.connection_made(transport)
        rec = Recorder()
        ex = OriginExchange(pool, conn.endpoint, rec, method, "none", 0)
        ex.start(conn, b"", reused=False)
        for piece in chunked(stream, flags >> 1):
            if transport.is_closing():
                break  # the connection gave up: nothing more is read
            conn.data_received(piece)
        conn.connection_lost(None)
        trap.check()
    ends = [e for e in rec.events if e in ("end", "error")]
    assert len(ends) == 1, f"events {rec.events}"

"""No request is processed after a ``Connection: close`` request (RFC 9112 §9.6, F3).

Two requests sent in one write, the first with ``Connection: close``: the first is answered,
then the connection closes; the second is never answered nor forwarded to the origin. Pushpin
1.36 does the same (checked by running it), so the tests are differential. The first request is
either proxied (answered later, the second waits behind it) or answered by the proxy itself at
once (``Pushpin-Check``, F53), where both requests are parsed from the same read.

A request gripd rejects itself (two ``Host`` lines, 400 and close) is gripd only, as Pushpin
forwards it: the request pipelined behind it in the same read gets no second answer.

Every read is bounded in size and time.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support import rawhttp
from tests.support.origin import Origin, Reply
from tests.support.procs import Impl

CLOSE = b"Connection: close\r\n"


async def read_until_closed(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` in one write and return everything read until the server closes."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        return (await rawhttp.read_until_closed(r, timeout * TIME_SCALE))[0]
    finally:
        w.close()


@pytest.mark.parametrize("first", ["proxied", "check"])
async def test_request_after_close_request_is_not_processed(
    impl: Impl, start: StartFn, origin: Origin, first: str
) -> None:
    origin.route("GET", "/a", Reply(200, body="a\n"))
    origin.route("GET", "/b", Reply(200, body="b\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    extra = b"Pushpin-Check: 1\r\n" if first == "check" else b""
    out = await read_until_closed(
        s.http_port,
        b"GET /a HTTP/1.1\r\nHost: t\r\n" + extra + CLOSE + b"\r\n"
        b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 ") == 1, (out, s.log_text()[-3000:])
    assert out.startswith(b"HTTP/1.1 200 "), out
    if first == "proxied":
        assert out.endswith(b"\r\n\r\na\n"), out
    await asyncio.sleep(0.3 * TIME_SCALE)  # a forwarded /b would have arrived by now
    assert not origin.requests_for("/b")


async def test_request_after_rejected_request_is_not_processed(
    start: StartFn, origin: Origin
) -> None:
    """gripd only: Pushpin 1.36 forwards a request with two Host lines."""
    origin.route("GET", "/b", Reply(200, body="b\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"])
    out = await read_until_closed(
        s.http_port,
        b"GET /a HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 ") == 1, out
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    await asyncio.sleep(0.3 * TIME_SCALE)
    assert not origin.requests_for("/b")
    assert "Traceback" not in s.log_text()

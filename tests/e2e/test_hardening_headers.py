"""Response splitting end to end: header text that no HTTP parser checked (F20, F21, F22, F28).

Published ``http-response`` headers and reason (F30), and the grip-instruct JSON ``response``
(F21), reach the client's status line and header block. CR, LF or NUL there, or a header name that
is not an RFC 9110 token, would let a publisher or origin add headers (``Set-Cookie``) or whole
responses. gripd refuses such input where it is parsed; Pushpin 1.36 writes it raw (observed,
recorded in the Pushpin legs below and in docs/compatibility.md). Origin response heads go through
httptools, which already refuses CR, LF and NUL inside a value: gripd answers 502 for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from gripd.core.tnetstring import dumps
from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish
from tests.support.origin import Origin, Reply
from tests.support.procs import NO_RATE_LIMIT, Impl, Server
from tests.support.rawhttp import raw_request

LP = [("Grip-Hold", "response"), ("Grip-Channel", "lp")]
EVIL = "a\r\nSet-Cookie: evil=1"


async def settle(s: Server, origin: Origin, path: str, count: int = 1) -> None:
    """Wait until the hold is in place; Pushpin re-requests ~1 s after the first subscription
    (F22), so wait that out there."""
    await origin.wait_for(path, count)
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.2) * TIME_SCALE)


def _lp_item(**fmt: object) -> dict[str, object]:
    return {"channel": "lp", "formats": {"http-response": fmt}}


async def test_published_header_injection_rejected(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F28/F30: a CR/LF in a published header value fails the publish with 400 naming the
    field and nothing of the batch is delivered; the next good item reaches the held client
    without any injected header. (Pushpin 1.36 accepts the item and writes it raw.)"""
    origin.route("GET", "/lp", Reply(200, [*LP, ("X-Custom", "a")], "timeout\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"], conf=NO_RATE_LIMIT)
    held = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await settle(s, origin, "/lp")
        bad = _lp_item(headers={"X": EVIL}, body="bad\n")
        if impl == "pushpin":
            # Observed: accepted, and the held client gets "Set-Cookie: evil=1" as a header.
            assert await asyncio.to_thread(s.publish, [bad]) == (200, "Published\n")
            code, headers, body = await held
            assert (code, headers["x"], headers["set-cookie"]) == (200, "a", "evil=1")
            return
        status, text = await asyncio.to_thread(s.publish, [_lp_item(body="first\n"), bad])
        assert (status, text) == (400, "Invalid format: headers contains 'X' with invalid value\n")
        await asyncio.sleep(0.3 * TIME_SCALE)
        assert not held.done()  # nothing of the rejected batch was published

        await publish(s, [_lp_item(code=201, headers={"X": "safe"}, body="good\n")])
        code, headers, body = await held
        assert (code, body) == (201, b"good\n")
        assert headers["x"] == "safe"
        assert headers["x-custom"] == "a"  # inherited from the held response (F22)
        assert "set-cookie" not in headers
    finally:
        held.cancel()
        with contextlib.suppress(BaseException):
            await held


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (
            {"reason": "OK\r\nSet-Cookie: evil=1"},
            "'http-response' contains 'reason' with invalid value",
        ),
        (
            {"headers": [["X\r\nSet-Cookie", "evil=1"]]},
            "headers contains invalid name 'X\\r\\nSet-Cookie'",
        ),
        ({"headers": {"X": "a\x00b"}}, "headers contains 'X' with invalid value"),
    ],
)
async def test_published_reason_and_name_injection_rejected(
    start: StartFn, origin: Origin, fmt: dict[str, object], message: str
) -> None:
    """gripd only (Pushpin writes these raw): the reason phrase and header names too."""
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"])
    status, text = await asyncio.to_thread(s.publish, [_lp_item(body="b\n", **fmt)])
    assert (status, text) == (400, f"Invalid format: {message}\n")


async def test_grip_instruct_json_header_injection_is_502(start: StartFn, origin: Origin) -> None:
    """F21/F47, gripd only: a grip-instruct JSON ``response`` with a CR/LF in a header value is
    bad GRIP from the origin: 502, never written to the client."""
    instruct = {"response": {"code": 200, "headers": {"X": EVIL}, "body": "x\n"}}
    origin.route(
        "GET",
        "/j",
        Reply(200, [("Content-Type", "application/grip-instruct")], json.dumps(instruct)),
    )
    s = await start("gripd", [f"*,debug 127.0.0.1:{origin.port}"])
    code, headers, body = await raw_request(s.http_port, get("/j"))
    assert code == 502
    assert "set-cookie" not in headers
    assert body == (
        b"Failed to parse accept instructions: headers contains 'X' with invalid value\n"
    )


async def test_zmq_header_injection_dropped_and_logged(start: StartFn, origin: Origin) -> None:
    """F31, gripd only: a PULL item (JSON or tnetstring) with a CR/LF header value is dropped
    and logged like any bad item; the next good item reaches the held client."""
    origin.route("GET", "/lp", Reply(200, LP, "timeout\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=NO_RATE_LIMIT)
    bad_json = b"J" + json.dumps(_lp_item(headers={"X": EVIL}, body="bad\n")).encode()
    bad_tnet = b"T" + dumps(
        {b"channel": b"lp", b"http-response": {b"reason": b"OK\r\nX: y", b"body": b"bad\n"}}
    )
    good = b"J" + json.dumps(_lp_item(body="good\n")).encode()
    ctx = zmq.asyncio.Context()
    held = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await settle(s, origin, "/lp")
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 2000
        sock.connect(f"tcp://127.0.0.1:{s.zmq_pull_port}")
        for frame in (bad_json, bad_tnet, good):
            await sock.send(frame)
        sock.close()
        code, headers, body = await held
        assert (code, body) == (200, b"good\n")
        assert "set-cookie" not in headers and "x" not in headers
        log = s.log_text()
        assert "invalid format: headers contains 'X' with invalid value" in log
        assert "invalid format: 'http-response' contains 'reason' with invalid value" in log
    finally:
        held.cancel()
        with contextlib.suppress(BaseException):
            await held
        ctx.destroy(linger=0)


@contextlib.asynccontextmanager
async def raw_origin(head: bytes) -> AsyncIterator[int]:
    """An origin that answers every connection with ``head`` + ``ok\\n`` and closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(head + b"Content-Length: 3\r\nConnection: close\r\n\r\nok\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n",  # bare CR inside a value
        b"HTTP/1.1 200 OK\r\nX: a\rSet-Cookie: evil=1\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nSet-Cookie: evil=1\r\n",  # bare LF inside a value
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n",
        b"HTTP/1.1 200 O\rSet-Cookie: evil=1\r\n",  # bare CR in the reason phrase
        b"HTTP/1.1 200 OK\r\nX: a\r\n Set-Cookie: evil=1\r\n",  # obsolete line folding
    ],
)
async def test_origin_header_injection_is_502(start: StartFn, head: bytes) -> None:
    """F47, gripd only: origin heads are parsed by httptools, which refuses CR, LF and NUL
    inside a value or reason (and folding): the client gets 502 and nothing of that head."""
    async with raw_origin(head) as port:
        s = await start("gripd", [f"* 127.0.0.1:{port}"])
        code, headers, body = await raw_request(s.http_port, get("/x"))
    assert code == 502
    assert "set-cookie" not in headers and "x" not in headers
    assert body == b"Error while proxying to origin.\n"


async def test_next_link_request_target_is_encoded(impl: Impl, start: StartFn) -> None:
    """F25: a space, tab or ``^`` in a ``Grip-Link`` URL is percent-encoded in the link's GET,
    as Pushpin 1.36 does (QUrl), instead of splitting its request line."""
    lines: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = head.split(b"\r\n", 1)[0]
            if b"/first " in line:
                extra = b"Grip-Hold: stream\r\nGrip-Channel: c\r\n"
                extra += b"Grip-Link: </n ext\t2^?q=1 2>; rel=next\r\n"
                body = b"first\n"
            else:
                lines.append(line)  # the readiness probe and the link request
                extra, body = b"", b"next\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                + extra
                + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        s = await start(impl, [f"* 127.0.0.1:{port}"])
        code, _, body = await raw_request(s.http_port, get("/first"), timeout=20)
    finally:
        server.close()
        await server.wait_closed()
    assert (code, body) == (200, b"first\nnext\n")
    assert lines[-1] == b"GET /n%20ext%092%5E?q=1%202 HTTP/1.1"

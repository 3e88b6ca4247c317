"""The HTTP control API server (F28) on loopback: exact reply bytes, limits, gripcontrol publishing.

Expected bytes were captured from Pushpin 1.36's control API for the same requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gripd.core.publish import PublishItem
from gripd.io.inputs.control_http import ControlLimits, start_control_server


class FakeSink:
    def __init__(self) -> None:
        self.published: list[tuple[list[PublishItem], str]] = []
        self.recovered = 0
        self.fail = False

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        self.published.append((items, source))
        if self.fail:
            raise RuntimeError("sink broke")

    def recover(self) -> None:
        self.recovered += 1


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, FakeSink]]:
    sink = FakeSink()
    srv = await start_control_server(sink, "127.0.0.1", 0, limits=ControlLimits(10000, 1000, 0.0))
    port = srv.sockets[0].getsockname()[1]
    yield port, sink
    srv.close()
    await srv.wait_closed()


async def roundtrip(port: int, *chunks: bytes, pause: float = 0.02) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for c in chunks:
        writer.write(c)
        await writer.drain()
        if len(chunks) > 1:
            await asyncio.sleep(pause)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def reply(
    code: str, body: bytes, ctype: str = "text/plain", extra: str = "", ver: str = "1.1"
) -> bytes:
    return (
        f"HTTP/{ver} {code}\r\n{extra}Content-Type: {ctype}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def err(code: str, message: str, ver: str = "1.1") -> bytes:
    return reply(code, message.encode() + b"\n", ver=ver)


PUB = b'{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}'


def post(path: str, body: bytes, extra: str = "", ver: str = "1.1") -> bytes:
    return f"POST {path} HTTP/{ver}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


CASES: list[tuple[bytes, bytes]] = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", reply("200 OK", b"Pushpin API\n")),
    (b"GET // HTTP/1.1\r\n\r\n", reply("200 OK", b"Pushpin API\n")),
    (b"GET / HTTP/1.1\nX: y\n\n", reply("200 OK", b"Pushpin API\n")),  # bare LF lines
    (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", reply("200 OK", b"Pushpin API\n")),
    (
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        reply("200 OK", b"Pushpin API\n"),
    ),
    (
        b"GET /publish HTTP/1.1\r\n\r\n",
        reply("405 Method Not Allowed", b"Method not allowed: GET.\n", extra="Allow: POST\r\n"),
    ),
    (
        b"DELETE /recover/ HTTP/1.1\r\n\r\n",
        reply("405 Method Not Allowed", b"Method not allowed: DELETE.\n", extra="Allow: POST\r\n"),
    ),
    (
        b"FOO /publish HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        reply("405 Method Not Allowed", b"Method not allowed: FOO.\n", extra="Allow: POST\r\n"),
    ),
    (
        b"POST /publish HTTP/1.1\r\n\r\n",
        err("411 Length Required", "Request requires Content-Length."),
    ),
    (
        b"POST /recover HTTP/1.1\r\n\r\n",
        err("411 Length Required", "Request requires Content-Length."),
    ),
    # A header named X-Gripd-* is the client's own, not a Content-Length (or Accept) in disguise
    (
        b"POST /publish HTTP/1.1\r\nX-Gripd-Content-Length: 2\r\n\r\n{}",
        err("411 Length Required", "Request requires Content-Length."),
    ),
    (
        b"GET / HTTP/1.1\r\nX-Gripd-Accept: image/png\nx-gripd-x-gripd-a: b\r\n\r\n",
        reply("200 OK", b"Pushpin API\n"),
    ),
    (
        b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        err("411 Length Required", "Request requires Content-Length."),
    ),
    (
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        err("411 Length Required", "Request requires Content-Length."),
    ),
    (post("/publish/", b"abc"), err("400 Bad Request", "Body is not valid JSON.")),
    (post("/publish/", b"[]", ver="1.0"), err("400 Bad Request", "Invalid format.", ver="1.0")),
    (
        post("/publish/", b'{"items":[{}]}'),
        err("400 Bad Request", "Invalid format: publish item object does not contain 'channel'"),
    ),
    (
        post("/publish/", b"{}", "Accept: text/html\r\n"),
        err(
            "406 Not Acceptable",
            "Not Acceptable. Supported formats are text/plain and application/json.",
        ),
    ),
    (post("/nope", b"{}"), err("404 Not Found", "Not Found")),
    (b"GET /publish?x=1 HTTP/1.1\r\n\r\n", err("404 Not Found", "Not Found")),
    (
        post("/recover", b"", "Accept: application/json\r\n"),
        reply("200 OK", b'{"message":"Updated"}\n', "application/json"),
    ),
    (
        b"POST /publish HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        err("400 Bad Request", "Bad Content-Length."),
    ),
    (
        b"POST /publish HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        err("400 Bad Request", "Bad Content-Length."),
    ),
    (
        b"POST /publish HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",
        err("400 Bad Request", "Request body too large."),
    ),
    (
        b"POST /publish HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}extra",
        err("400 Bad Request", "Request body exceeded Content-Length."),
    ),
    (
        b"POST /publish HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        err("400 Bad Request", "Request body exceeded Content-Length."),
    ),
    (b"garbage\r\n\r\n", err("400 Bad Request", "Failed to parse request header.")),
    (b"\r\n\r\n", err("400 Bad Request", "Failed to parse request header.")),
    (b" / HTTP/1.1\r\n\r\n", err("400 Bad Request", "Failed to parse request header.")),
    (
        # with both, Content-Length frames the body (Pushpin ignores Transfer-Encoding then)
        b"POST /publish/ HTTP/1.1\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'{"items":[]}',
        reply("200 OK", b"Published\n"),
    ),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 9977 + b"\r\n\r\n", reply("200 OK", b"Pushpin API\n")),
    (
        b"GET / HTTP/1.1\r\nX: " + b"a" * 9978 + b"\r\n\r\n",
        err("400 Bad Request", "Request header too large."),
    ),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000, err("400 Bad Request", "Request header too large.")),
]


@pytest.mark.parametrize(("request_bytes", "expected"), CASES, ids=[repr(c[0][:48]) for c in CASES])
async def test_reply_bytes(
    server: tuple[int, FakeSink], request_bytes: bytes, expected: bytes
) -> None:
    port, sink = server
    assert await roundtrip(port, request_bytes) == expected
    if not expected.startswith(b"HTTP/1.1 200 OK") or b"Published" not in expected:
        assert sink.published == []


async def test_publish_text_and_json(server: tuple[int, FakeSink]) -> None:
    port, sink = server
    assert await roundtrip(port, post("/publish", PUB)) == reply("200 OK", b"Published\n")
    got = await roundtrip(port, post("/publish/", PUB, "Accept: application/json\r\n"))
    assert got == reply("200 OK", b'{"message":"Published"}\n', "application/json")
    assert len(sink.published) == 2
    items, source = sink.published[0]
    assert source == "http"
    assert items[0].channel == "c" and items[0].http_stream is not None
    assert items[0].http_stream.content == b"x"


async def test_byte_by_byte_and_expect_continue(server: tuple[int, FakeSink]) -> None:
    port, sink = server
    req = post("/publish/", PUB, "Expect: 100-continue\r\n")
    got = await roundtrip(port, *[req[i : i + 1] for i in range(len(req))], pause=0)
    assert got == b"HTTP/1.1 100 Continue\r\n\r\n" + reply("200 OK", b"Published\n")
    head, body = req.split(b"\r\n\r\n", 1)
    got = await roundtrip(port, head + b"\r\n\r\n", body)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert len(sink.published) == 2


async def test_recover(server: tuple[int, FakeSink]) -> None:
    port, sink = server
    assert await roundtrip(port, post("/recover/", b"")) == reply("200 OK", b"Updated\n")
    assert sink.recovered == 1


async def test_reply_written_before_publish_and_sink_errors_contained(
    server: tuple[int, FakeSink], caplog: pytest.LogCaptureFixture
) -> None:
    port, sink = server
    sink.fail = True
    with caplog.at_level(logging.INFO, logger="gripd.control"):
        assert await roundtrip(port, post("/publish/", PUB)) == reply("200 OK", b"Published\n")
    assert "control: POST /publish/ code=200 10 items=1" in caplog.messages
    assert any("publish failed" in m for m in caplog.messages)
    sink.fail = False
    assert await roundtrip(port, b"GET / HTTP/1.1\r\n\r\n") == reply("200 OK", b"Pushpin API\n")


async def test_idle_bad_client_does_not_block_others(server: tuple[int, FakeSink]) -> None:
    port, sink = server
    _, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    slow_writer.write(b"POST /publish HTTP/1.1\r\nContent-Length: 500\r\n\r\n{")
    await slow_writer.drain()
    assert await roundtrip(port, post("/publish", PUB)) == reply("200 OK", b"Published\n")
    slow_writer.close()
    await asyncio.sleep(0.05)
    assert len(sink.published) == 1


async def test_gripcontrol_publishes(server: tuple[int, FakeSink]) -> None:
    pytest.importorskip("gripcontrol")
    from gripcontrol import GripPubControl, HttpResponseFormat, HttpStreamFormat

    port, sink = server
    pub: Any = GripPubControl({"control_uri": f"http://127.0.0.1:{port}"})

    def run() -> None:
        pub.publish_http_stream("s", "data: hi\n\n", blocking=True)
        pub.publish_http_response(
            "r",
            HttpResponseFormat(code=201, headers={"X-A": "b"}, body="done\n"),
            id="2",
            prev_id="1",
            blocking=True,
        )
        pub.publish_http_stream("s", HttpStreamFormat(close=True), blocking=True)
        pub.publish_http_response("r", "plain", blocking=True)

    await asyncio.to_thread(run)
    channels = [it.channel for items, _ in sink.published for it in items]
    assert channels == ["s", "r", "s", "r"]
    first, second, third, fourth = (items[0] for items, _ in sink.published)
    assert first.http_stream is not None and first.http_stream.content == b"data: hi\n\n"
    hr = second.http_response
    assert hr is not None and (hr.code, hr.headers, hr.body) == (201, [("X-A", "b")], b"done\n")
    assert (second.id, second.prev_id) == ("2", "1")
    assert third.http_stream is not None and third.http_stream.action == "close"
    assert fourth.http_response is not None and fourth.http_response.body == b"plain"

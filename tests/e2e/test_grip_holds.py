"""GRIP holds end to end (F18–F24, F28, F50), against gripd and Pushpin 1.36 alike."""

from __future__ import annotations

import asyncio
import json

import gripcontrol
import pytest

from tests.conftest import StartFn
from tests.support.e2e import get, publish
from tests.support.origin import Origin, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import open_request, raw_request

LP = [("Grip-Hold", "response"), ("Grip-Channel", "lp")]


async def settle(s: Server, origin: Origin, path: str, count: int = 1) -> None:
    """Wait until the hold is in place. Pushpin re-requests the origin ~1 s after a channel's
    first subscription (F22); wait that out so publishes land on the final hold."""
    await origin.wait_for(path, count)
    await asyncio.sleep(1.6 if s.impl == "pushpin" else 0.2)


async def test_long_poll_answered_by_publish(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/lp", Reply(200, [*LP, ("X-Custom", "a")], "timeout\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    resp_task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    await settle(s, origin, "/lp")
    await publish(
        s,
        [
            {
                "channel": "lp",
                "formats": {
                    "http-response": {"code": 201, "headers": {"X-P": "1"}, "body": "published\n"}
                },
            }
        ],
    )
    status, headers, body = await resp_task
    assert status == 201
    assert body == b"published\n"
    assert headers["x-custom"] == "a"  # inherited from the held response (F22)
    assert headers["x-p"] == "1"
    assert headers["content-length"] == "10"
    assert not any(k.startswith("grip-") for k in headers)


async def test_long_poll_timeout_gives_original(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route(
        "GET", "/t", Reply(200, [*LP, ("Grip-Timeout", "1"), ("X-Custom", "a")], "timeout\n")
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, headers, body = await raw_request(s.http_port, get("/t"), timeout=30)
    elapsed = loop.time() - t0
    assert (status, body) == (200, b"timeout\n")
    assert headers["x-custom"] == "a"
    assert "grip-timeout" not in headers
    assert elapsed >= 4.5  # F20: Grip-Timeout minimum is 5 s


async def test_grip_instruct_json_body(impl: Impl, start: StartFn, origin: Origin) -> None:
    instruct = {
        "hold": {"mode": "response", "channels": [{"name": "j"}], "timeout": 60},
        "response": {"code": 202, "headers": {"X-A": "b"}, "body": "to\n"},
    }
    origin.route(
        "GET",
        "/j",
        Reply(200, [("Content-Type", "application/grip-instruct")], json.dumps(instruct)),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/j"), timeout=30))
    await settle(s, origin, "/j")
    await publish(s, [{"channel": "j", "http-response": {"body": "hi\n"}}])  # go-pubcontrol shape
    status, headers, body = await task
    assert (status, body) == (200, b"hi\n")
    assert headers["x-a"] == "b"


async def test_stream_hold_and_sse(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route(
        "GET",
        "/sse",
        Reply(
            200,
            [
                ("Grip-Hold", "stream"),
                ("Grip-Channel", "s1"),
                ("Content-Type", "text/event-stream"),
            ],
            "",
        ),
    )
    origin.route(
        "GET", "/other", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "s2")], "open\n")
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    a = await open_request(s.http_port, get("/sse"))
    b = await open_request(s.http_port, get("/sse"))
    c = await open_request(s.http_port, get("/other"))
    try:
        for r in (a, b):
            assert r.status == 200
            assert r.headers["transfer-encoding"] == "chunked"
            assert r.headers["content-type"] == "text/event-stream"
            assert r.headers["connection"] == "Transfer-Encoding"  # F24, verified on Pushpin
        assert await c.read_body_until(b"open\n") == b"open\n"
        await settle(s, origin, "/sse", 2)
        for i in range(3):
            await publish(
                s, [{"channel": "s1", "formats": {"http-stream": {"content": f"data: m{i}\n\n"}}}]
            )
        for r in (a, b):
            assert (
                await r.read_body_until(b"data: m2\n\n") == b"data: m0\n\ndata: m1\n\ndata: m2\n\n"
            )
        await publish(s, [{"channel": "s1", "formats": {"http-stream": {"action": "close"}}}])
        for r in (a, b):
            assert await r.read_to_end() == b""
            assert r.done
        assert not c.done  # channels are isolated
        await publish(s, [{"channel": "s2", "http-stream": {"content-bin": "YmluCg=="}}])
        assert await c.read_body_until(b"bin\n") == b"bin\n"
    finally:
        for r in (a, b, c):
            r.close()


@pytest.mark.parametrize("when", ["after", "during"])
async def test_connection_serves_a_request_after_a_stream(
    impl: Impl, start: StartFn, origin: Origin, when: str
) -> None:
    """F24: a chunked stream ended by ``action: close`` ends its response cleanly, and the
    keep-alive connection goes on to the next request, whether the client sends it after the
    end or pipelines it while the stream is held (it is answered once the stream ends)."""
    origin.route(
        "GET", "/st", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "st")], "open\n")
    )
    origin.route("GET", "/next", Reply(200, body="next\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    stream = await open_request(s.http_port, get("/st"))
    try:
        assert await stream.read_body_until(b"open\n") == b"open\n"
        await settle(s, origin, "/st")
        if when == "during":
            stream.writer.write(get("/next"))
            await asyncio.sleep(0.3)
            assert not any(r.path == "/next" for r in origin.requests)  # waits behind the stream
        await publish(s, [{"channel": "st", "formats": {"http-stream": {"action": "close"}}}])
        assert await stream.read_to_end() == b""
        assert stream.done
        if when == "after":
            stream.writer.write(get("/next"))
        # The next response comes on the same connection, right after the stream's last chunk.
        raw = bytes(stream.raw)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not raw.endswith(b"next\n") and loop.time() < deadline:
            data = await asyncio.wait_for(stream.reader.read(65536), deadline - loop.time())
            if not data:
                break
            raw += data
        tail = raw[raw.index(b"0\r\n\r\n") + 5 :]
        assert tail.startswith(b"HTTP/1.1 200 OK\r\n"), raw
        assert tail.endswith(b"\r\n\r\nnext\n"), raw
    finally:
        stream.close()


async def test_stream_keep_alive(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route(
        "GET",
        "/ka",
        Reply(
            200,
            [
                ("Grip-Hold", "stream"),
                ("Grip-Channel", "ka"),
                ("Grip-Keep-Alive", "ka\\n; format=cstring; timeout=2"),
            ],
            "start\n",
        ),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/ka"))
    try:
        assert await r.read_body_until(b"start\n") == b"start\n"
        assert await r.read_body_until(b"ka\n", timeout=8) == b"ka\n"
        assert await r.read_body_until(b"ka\n", timeout=8) == b"ka\n"
    finally:
        r.close()


async def test_grip_status_and_no_hold(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/gs", Reply(200, [("Grip-Status", "299"), ("X-K", "v")], "body\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    resp = await open_request(s.http_port, get("/gs"))
    body = await resp.read_to_end()
    resp.close()
    assert resp.raw.startswith(b"HTTP/1.1 299 Undefined Reason\r\n")
    assert body == b"body\n"
    assert resp.headers["x-k"] == "v"
    assert "grip-status" not in resp.headers


@pytest.mark.parametrize("debug", [False, True])
async def test_invalid_grip_hold_502(
    impl: Impl, start: StartFn, origin: Origin, debug: bool
) -> None:
    origin.route("GET", "/bad", Reply(200, [("Grip-Hold", "forever"), ("Grip-Channel", "x")]))
    route = f"*{',debug' if debug else ''} 127.0.0.1:{origin.port}"
    s = await start(impl, [route])
    status, _, body = await raw_request(s.http_port, get("/bad"))
    assert status == 502
    if debug:
        assert body == (
            b"Failed to parse accept instructions: "
            b"Grip-Hold must be set to either 'response' or 'stream'\n"
        )
    else:
        assert body == b"Error while proxying to origin.\n"


async def test_hold_on_large_request_body_400(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("POST", "/big", Reply(200, LP, "x"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    body = b"z" * 150_000
    status, _, out = await raw_request(
        s.http_port,
        b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body),
    )
    assert (status, out) == (400, b"Request too large to accept GRIP instruct.\n")


async def test_disconnect_unsubscribes_and_others_still_get_messages(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    origin.route("GET", "/d", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "d")], ""))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    gone = await open_request(s.http_port, get("/d"))
    stay = await open_request(s.http_port, get("/d"))
    await settle(s, origin, "/d", 2)
    gone.close()
    await asyncio.sleep(0.3)
    await publish(s, [{"channel": "d", "http-stream": {"content": "still\n"}}])
    assert await stay.read_body_until(b"still\n") == b"still\n"
    stay.close()


async def test_gripcontrol_library_publishes(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/gc", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "gc")], ""))
    origin.route("GET", "/gl", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "gl")], ""))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    stream = await open_request(s.http_port, get("/gc"))
    lp = asyncio.create_task(raw_request(s.http_port, get("/gl"), timeout=30))
    await settle(s, origin, "/gc")
    await origin.wait_for("/gl")
    pub = gripcontrol.GripPubControl({"control_uri": s.control_url()})
    await asyncio.to_thread(pub.publish_http_stream, "gc", "from gripcontrol\n")
    await asyncio.to_thread(pub.publish_http_response, "gl", "lp via gripcontrol\n")
    assert await stream.read_body_until(b"gripcontrol\n") == b"from gripcontrol\n"
    status, _, body = await lp
    assert (status, body) == (200, b"lp via gripcontrol\n")
    stream.close()


async def test_test_target(impl: Impl, start: StartFn) -> None:
    s = await start(impl, ["* test"])
    status, _, body = await raw_request(s.http_port, get("/"))
    assert (status, body) == (200, b"Hello from the Pushpin test handler!\n")
    status, _, body = await raw_request(s.http_port, get("/nope"))
    assert (status, body) == (404, b"no such test resource\n")
    stream = await open_request(s.http_port, get("/stream?channel=tt"))
    assert await stream.read_body_until(b"[stream opened]\n") == b"[stream opened]\n"
    lp = asyncio.create_task(raw_request(s.http_port, get("/response?channel=tt"), timeout=70))
    await asyncio.sleep(1.6 if impl == "pushpin" else 0.3)
    await publish(
        s,
        [
            {
                "channel": "tt",
                "formats": {
                    "http-stream": {"content": "streamed\n"},
                    "http-response": {"body": "answered\n"},
                },
            }
        ],
    )
    assert await stream.read_body_until(b"streamed\n") == b"streamed\n"
    status, _, body = await lp
    assert (status, body) == (200, b"answered\n")
    stream.close()


async def test_hint_rerequests_origin(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F22: ``action: hint`` re-sends the held request; the new answer reaches the client."""
    calls = 0

    def answer(_req: object) -> Reply:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "h")], "held\n")
        return Reply(200, [("X-Call", str(calls))], "fresh\n")

    origin.route("GET", "/hint", answer)
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/hint"), timeout=30))
    await origin.wait_for("/hint")
    await asyncio.sleep(0.3)
    if impl == "pushpin" and calls < 2:
        # Pushpin's first-subscription update (F22) may re-request by itself; either way
        # the second origin answer is the one the client gets.
        await publish(s, [{"channel": "h", "http-response": {"action": "hint"}}])
    elif impl == "gripd":
        await publish(s, [{"channel": "h", "http-response": {"action": "hint"}}])
    status, headers, body = await task
    assert (status, body) == (200, b"fresh\n")
    assert int(headers["x-call"]) >= 2


async def test_body_patch(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route(
        "GET",
        "/patch",
        Reply(
            200,
            [*LP[:1], ("Grip-Channel", "pa"), ("Content-Type", "application/json")],
            '{"a": 1, "b": [1]}\n',
        ),
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/patch"), timeout=30))
    await settle(s, origin, "/patch")
    await publish(
        s,
        [
            {
                "channel": "pa",
                "http-response": {
                    "body-patch": [
                        {"op": "replace", "path": "/a", "value": 2},
                        {"op": "add", "path": "/b/-", "value": 3},
                    ]
                },
            }
        ],
    )
    status, headers, body = await task
    assert status == 200
    assert json.loads(body) == {"a": 2, "b": [1, 3]}
    assert body.endswith(b"\n")  # the original trailing newline is kept (F22)
    assert headers["content-type"] == "application/json"


async def test_route_prefix_applies_to_channels(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/pre", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "c")], ""))
    s = await start(impl, [f"*,prefix=app- 127.0.0.1:{origin.port}"])
    r = await open_request(s.http_port, get("/pre"))
    try:
        await settle(s, origin, "/pre")
        await publish(s, [{"channel": "c", "http-stream": {"content": "unprefixed\n"}}])
        await publish(s, [{"channel": "app-c", "http-stream": {"content": "prefixed\n"}}])
        assert await r.read_body_until(b"prefixed\n") == b"prefixed\n"
    finally:
        r.close()


async def test_recover_retries_response_holds(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F27: POST /recover re-requests every response hold."""
    calls = 0

    def answer(_req: object) -> Reply:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "rc")], "held\n")
        return Reply(200, [], "recovered\n")

    origin.route("GET", "/rec", answer)
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    task = asyncio.create_task(raw_request(s.http_port, get("/rec"), timeout=30))
    await origin.wait_for("/rec")
    await asyncio.sleep(0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.control_port)
    writer.write(b"POST /recover HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n")
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"Updated\n")
    status, _, body = await task
    assert (status, body) == (200, b"recovered\n")


async def test_target_sub_applies_to_http_holds(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F11 ``sub=``: implicit channels for every hold through that target (no route prefix)."""
    origin.route("GET", "/imp", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "own")], ""))
    s = await start(impl, [f"*,prefix=p- 127.0.0.1:{origin.port},sub=implicit"])
    r = await open_request(s.http_port, get("/imp"))
    try:
        await settle(s, origin, "/imp")
        await publish(s, [{"channel": "implicit", "http-stream": {"content": "via sub\n"}}])
        await publish(s, [{"channel": "p-own", "http-stream": {"content": "via own\n"}}])
        assert await r.read_body_until(b"via own\n") == b"via sub\nvia own\n"
    finally:
        r.close()

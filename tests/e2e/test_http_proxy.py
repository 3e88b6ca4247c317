"""Pass-through proxying (F12, F13, F15–F17, F47, F48), run against gripd and Pushpin 1.36.

Every test here is differential: the same scenario and the same assertions for each
implementation in ``impls()``.
"""

from __future__ import annotations

import asyncio
import warnings

import aiohttp
import jwt

from tests.conftest import StartFn
from tests.support.origin import Origin, Reply
from tests.support.procs import Impl
from tests.support.rawhttp import raw_request

FEATURES = (
    "status, session, link:next, filter:skip-self, filter:skip-users, filter:require-sub, "
    "filter:build-id, filter:var-subst"
)


async def test_get_passes_path_query_headers(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/a/b", Reply(201, [("X-Resp", "r1"), ("Content-Type", "text/x")], "ok\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{s.base_url()}/a/b?x=1&y=%20z", headers={"X-Custom": "v", "Authorization": "Bearer 1"}
        ) as r,
    ):
        assert r.status == 201
        assert r.headers["X-Resp"] == "r1"
        assert r.headers["Content-Type"] == "text/x"
        assert await r.read() == b"ok\n"
    req = origin.requests_for("/a/b")[-1]
    assert req.query == "x=1&y= z"  # the test origin records the decoded query
    assert req.header("X-Custom") == "v"
    assert req.header("Authorization") == "Bearer 1"
    # F13: Grip-Sig (HS256, iss=pushpin, key changeme as shipped) and Grip-Feature.
    assert req.header("Grip-Feature") == FEATURES
    token = req.header("Grip-Sig")
    assert token is not None
    with warnings.catch_warnings():  # Pushpin's shipped key is short on purpose
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        claims = jwt.decode(token, "changeme", algorithms=["HS256"])
    assert claims["iss"] == "pushpin"
    assert claims["exp"] > 0
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "HS256"}


async def test_client_grip_headers_are_stripped(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/x", Reply(200, body="x"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{s.base_url()}/x", headers={"Grip-Sig": "forged", "Grip-Last": "a; last-id=1"}
        ) as r,
    ):
        assert r.status == 200
    req = origin.requests_for("/x")[-1]
    assert req.header("Grip-Last") is None
    assert req.header("Grip-Sig") != "forged"


async def test_post_bodies_content_length_and_chunked(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    origin.route("POST", "/p", lambda r: Reply(200, body=b"got " + r.body))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{s.base_url()}/p", data=b"hello body") as r:
            assert await r.read() == b"got hello body"

        async def gen():  # type: ignore[no-untyped-def]
            yield b"part1-"
            yield b"part2"

        async with http.post(f"{s.base_url()}/p", data=gen()) as r:
            assert await r.read() == b"got part1-part2"
    # Expect: 100-continue is answered and not forwarded (F12).
    status, _, body = await raw_request(
        s.http_port,
        b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    )
    assert status == 200 and body == b"got abc"
    assert origin.requests_for("/p")[-1].header("Expect") is None


async def test_large_body_streams_both_ways(impl: Impl, start: StartFn, origin: Origin) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    origin.route("POST", "/echo", lambda r: Reply(200, body=r.body))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{s.base_url()}/echo", data=big) as r:
            assert r.status == 200
            assert await r.read() == big


async def test_head_204_304_and_keep_alive(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("HEAD", "/h", Reply(200, [("Content-Type", "text/plain")], "12345"))
    origin.route("GET", "/n", Reply(204))
    origin.route("GET", "/m", Reply(304, [("ETag", '"e"')]))
    origin.route("GET", "/after", Reply(200, body="after\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.head(f"{s.base_url()}/h") as r:
            assert r.status == 200
            assert await r.read() == b""
        async with http.get(f"{s.base_url()}/n") as r:
            assert r.status == 204
            assert await r.read() == b""
        async with http.get(f"{s.base_url()}/m") as r:
            assert r.status == 304
            assert r.headers["ETag"] == '"e"'
        async with http.get(f"{s.base_url()}/after") as r:  # same connection, still in sync
            assert await r.read() == b"after\n"


async def test_no_route_for_host(impl: Impl, start: StartFn, origin: Origin) -> None:
    s = await start(impl, [f"example.org 127.0.0.1:{origin.port}"], probe=False)
    status, headers, body = await raw_request(
        s.http_port, b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"
    )
    assert status == 502
    assert body == b"No route for host: other.test\n"
    assert headers.get("content-type") == "text/plain"


async def test_origin_down_502(impl: Impl, start: StartFn, dead_port: int) -> None:
    dead = dead_port
    s = await start(impl, [f"* 127.0.0.1:{dead}"], probe=False)
    status, _, body = await raw_request(s.http_port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 502
    assert body == b"Error while proxying to origin.\n"


async def test_origin_down_debug_route(impl: Impl, start: StartFn, dead_port: int) -> None:
    dead = dead_port
    s = await start(impl, [f"*,debug 127.0.0.1:{dead}"], probe=False)
    status, _, body = await raw_request(s.http_port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 502
    assert body == f"Unable to connect to any targets. Tried: 127.0.0.1:{dead}\n".encode()


async def test_failover_to_second_target(
    impl: Impl, start: StartFn, origin: Origin, dead_port: int
) -> None:
    dead = dead_port
    origin.route("GET", "/f", Reply(200, body="second\n"))
    s = await start(impl, [f"* 127.0.0.1:{dead} 127.0.0.1:{origin.port}"])
    status, _, body = await raw_request(s.http_port, b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, body) == (200, b"second\n")


async def test_route_rewrites(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/inner/x", Reply(200, body="rem\n"))
    origin.route("GET", "/new/y", Reply(200, body="beg\n"))
    s = await start(
        impl,
        [
            f"*,path_beg=/svc/,path_rem=4 127.0.0.1:{origin.port}",
            f"*,path_beg=/old/,replace_beg=/new/ 127.0.0.1:{origin.port}",
            f"*,path_beg=/h/,header=X-Added:yes,header=User-Agent: 127.0.0.1:{origin.port}",
        ],
    )
    _, _, body = await raw_request(s.http_port, b"GET /svc/inner/x HTTP/1.1\r\nHost: t\r\n\r\n")
    assert body == b"rem\n"
    _, _, body = await raw_request(s.http_port, b"GET /old/y HTTP/1.1\r\nHost: t\r\n\r\n")
    assert body == b"beg\n"
    origin.route("GET", "/h/z", Reply(200, body="z"))
    await raw_request(s.http_port, b"GET /h/z HTTP/1.1\r\nHost: t\r\nUser-Agent: curl\r\n\r\n")
    req = origin.requests_for("/h/z")[-1]
    assert req.header("X-Added") == "yes"
    assert req.header("User-Agent") is None


async def test_x_forwarded_for_append(impl: Impl, start: StartFn, origin: Origin) -> None:
    origin.route("GET", "/xff", Reply(200, body="x"))
    s = await start(
        impl,
        [f"* 127.0.0.1:{origin.port}"],
        conf={"proxy": {"x_forwarded_for": "truncate:0,append"}},
    )
    await raw_request(
        s.http_port, b"GET /xff HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    )
    assert origin.requests_for("/xff")[-1].header("X-Forwarded-For") == "127.0.0.1"


async def test_malformed_request_400(impl: Impl, start: StartFn, origin: Origin) -> None:
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(b"GET / HTTP/1.1\r\nHost t\r\n bad\x00\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        data = b""
    writer.close()
    # Pushpin 1.36 (condure) closes without answering; gripd answers 400 (do at least as well).
    if impl == "gripd":
        assert data.startswith(b"HTTP/1.1 400 ")
    else:
        assert data == b"" or data.startswith(b"HTTP/1.1 400 ")


async def test_oversized_head(impl: Impl, start: StartFn, origin: Origin) -> None:
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        data = b""
    writer.close()
    if impl == "gripd":
        assert data.startswith(b"HTTP/1.1 431 ")
    else:
        assert data == b"" or data.startswith(b"HTTP/1.1 4")
    # The server still serves other clients.
    origin.route("GET", "/still", Reply(200, body="up\n"))
    status, _, body = await raw_request(s.http_port, b"GET /still HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, body) == (200, b"up\n")

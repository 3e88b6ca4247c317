"""Tests for gripd.io.origin.http and .connection: the httptools origin client, its pool and
failover (F10, F11).

Every scenario talks to a real origin on 127.0.0.1: aiohttp.web for ordinary HTTP, raw asyncio
servers for odd framing. Each scenario runs twice, on the default asyncio loop and on uvloop
(production). Parser glue is also checked without a network, with hypothesis-chosen splits.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.errors import OriginConnectError, OriginError
from gripd.core.headers import Headers
from gripd.io.listener.flusher import Flusher
from gripd.io.origin import connection as origin_conn
from gripd.io.origin import http as origin_mod
from gripd.io.origin.endpoint import Endpoint
from gripd.io.origin.http import OriginExchange, OriginPool

LOCAL = "127.0.0.1"


class Recorder:
    """A ResponseHandler that records every event and resolves ``done`` at end or error."""

    def __init__(self, *, pause_on_body: bool = False) -> None:
        self.events: list[str] = []
        self.status = 0
        self.reason = ""
        self.headers: Headers = []
        self.body = bytearray()
        self.error: OriginError | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_body: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.exchange: OriginExchange | None = None
        self.pause_on_body = pause_on_body

    def on_response_head(self, status: int, reason: str, headers: Headers) -> None:
        self.events.append("head")
        self.status, self.reason, self.headers = status, reason, headers

    def on_response_body(self, data: bytes) -> None:
        self.events.append("body")
        self.body += data
        if not self.first_body.done():
            self.first_body.set_result(None)
            if self.pause_on_body and self.exchange is not None:
                self.exchange.pause_reading()

    def on_response_end(self) -> None:
        self.events.append("end")
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, exc: OriginError) -> None:
        self.events.append("error")
        self.error = exc
        if not self.done.done():
            self.done.set_result(None)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


async def fetch(
    pool: OriginPool,
    port: int,
    method: str = "GET",
    target: str = "/",
    headers: Headers | None = None,
    body: bytes | None = None,
    framing: origin_mod.BodyFraming = "none",
    ep: Endpoint | None = None,
) -> Recorder:
    """One complete request; the recorder has the outcome."""
    rec = Recorder()
    hdrs = [("Host", "origin.test"), *(headers or [])]
    if framing == "length":
        hdrs.append(("Content-Length", str(len(body or b""))))
    elif framing == "chunked":
        hdrs.append(("Transfer-Encoding", "chunked"))
    ex = await pool.open(
        [ep or Endpoint(LOCAL, port)],
        method,
        target,
        hdrs,
        rec,
        body_framing=framing,
        content_length=len(body or b""),
    )
    rec.exchange = ex
    if body:
        mid = len(body) // 2
        ex.send_body(body[:mid])
        ex.send_body(body[mid:])
    ex.end_body()
    await asyncio.wait_for(rec.done, 5)
    return rec


# -- test origins ------------------------------------------------------------------------------


@asynccontextmanager
async def aio_origin() -> AsyncIterator[int]:
    """An aiohttp.web origin; yields its port."""

    async def hello(req: web.Request) -> web.Response:
        return web.Response(text="hello", headers={"X-Custom-Header": "Yes"})

    async def chunked(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for part in (b"one,", b"two,", b"three"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def echo(req: web.Request) -> web.Response:
        data = await req.read()
        info = {
            "X-Method": req.method,
            "X-CL": req.headers.get("Content-Length", "-"),
            "X-TE": req.headers.get("Transfer-Encoding", "-"),
            "X-Host": req.headers.get("Host", "-"),
        }
        return web.Response(body=data, headers=info)

    async def status(req: web.Request) -> web.Response:
        return web.Response(status=int(req.match_info["code"]))

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/chunked", chunked)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/status/{code}", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0, ssl_context=_SERVER_TLS.get("ctx"))
    await site.start()
    assert runner.addresses
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawOrigin:
    """A raw asyncio TCP origin running ``handler`` per connection; counts connections."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.conns = 0
        self.port = 0
        self.closed: asyncio.Event = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawOrigin:
        self._server = await asyncio.start_server(self._serve, LOCAL, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def respond_each(*responses: bytes, close: bool = False) -> RawHandler:
    """Per connection: answer each request in turn with the next canned response."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for resp in responses:
            await read_head(reader)
            writer.write(resp)
            await writer.drain()
        if close:
            return
        await reader.read()  # keep the connection until the client closes it

    return handler


def free_port() -> int:
    """A port on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


# -- scenarios ---------------------------------------------------------------------------------

Scenario = Callable[[], Coroutine[Any, Any, None]]
SCENARIOS: list[Scenario] = []


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS.append(fn)
    return fn


@scenario
async def content_length_response_keeps_header_case_and_reason() -> None:
    async with aio_origin() as port:
        pool = OriginPool()
        rec = await fetch(pool, port, target="/hello")
        assert (rec.status, rec.reason, bytes(rec.body)) == (200, "OK", b"hello")
        assert ("X-Custom-Header", "Yes") in rec.headers
        assert rec.events == ["head", "body", "end"]
        assert pool.idle_count(Endpoint(LOCAL, port)) == 1
        await pool.close()


@scenario
async def chunked_response_is_dechunked_and_reused() -> None:
    async with aio_origin() as port:
        pool = OriginPool()
        rec = await fetch(pool, port, target="/chunked")
        assert bytes(rec.body) == b"one,two,three"
        assert rec.header("Transfer-Encoding") == "chunked"
        rec2 = await fetch(pool, port, target="/hello")
        assert bytes(rec2.body) == b"hello"
        assert pool.connection_count() == 1
        await pool.close()


@scenario
async def request_bodies_length_and_chunked() -> None:
    async with aio_origin() as port:
        pool = OriginPool()
        for framing in ("length", "chunked"):
            body = b"x" * 70000 + framing.encode()
            rec = await fetch(pool, port, "POST", "/echo", body=body, framing=framing)
            assert bytes(rec.body) == body
            assert rec.header("X-Method") == "POST"
            assert rec.header("X-Host") == "origin.test"
            if framing == "length":
                assert rec.header("X-CL") == str(len(body))
            else:
                assert rec.header("X-TE") == "chunked"
        assert pool.connection_count() == 1
        await pool.close()


@scenario
async def head_204_304_with_content_length_have_no_body_and_reuse() -> None:
    # P6: httptools would otherwise read the next response as the body of these.
    async with aio_origin() as port:
        pool = OriginPool()
        for method, target, code in [
            ("HEAD", "/hello", 200),
            ("GET", "/status/204", 204),
            ("GET", "/status/304", 304),
            ("HEAD", "/chunked", 200),
        ]:
            rec = await fetch(pool, port, method, target)
            assert (rec.status, bytes(rec.body), rec.events) == (code, b"", ["head", "end"])
            rec = await fetch(pool, port, target="/hello")
            assert bytes(rec.body) == b"hello"
        assert pool.connection_count() == 1
        await pool.close()


@scenario
async def raw_no_body_statuses_with_content_length() -> None:
    table = [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\n\r\n"),  # no length either: still no body, keep-alive
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
    ]
    follow = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
    for method, first in table:
        async with RawOrigin(respond_each(first, follow)) as srv:
            pool = OriginPool()
            rec = await fetch(pool, srv.port, method)
            assert rec.events == ["head", "end"], (method, first)
            rec = await fetch(pool, srv.port)
            assert bytes(rec.body) == b"next"
            assert srv.conns == 1
            await pool.close()


@scenario
async def interim_100_continue_is_skipped() -> None:
    resp = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-I: 1\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok"
    )
    async with RawOrigin(respond_each(resp)) as srv:
        pool = OriginPool()
        rec = await fetch(pool, srv.port)
        assert (rec.status, rec.reason, bytes(rec.body)) == (201, "Created", b"ok")
        assert rec.headers == [("Content-Length", "2"), ("X-Final", "1")]
        await pool.close()


@scenario
async def close_delimited_response_ends_on_eof_and_is_not_pooled() -> None:
    resp = b"HTTP/1.1 200 OK\r\nX-A: \xe9t\xe9\r\n\r\nall of it"
    async with RawOrigin(respond_each(resp, close=True)) as srv:
        pool = OriginPool()
        rec = await fetch(pool, srv.port)
        assert (bytes(rec.body), rec.events[-1], rec.error) == (b"all of it", "end", None)
        assert ("X-A", "\xe9t\xe9") in rec.headers  # latin-1 decode
        assert pool.idle_count(Endpoint(LOCAL, srv.port)) == 0
        await pool.close()


@scenario
async def connection_close_and_http10_are_not_reused() -> None:
    table = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na",
    ]
    for resp in table:
        async with RawOrigin(respond_each(resp)) as srv:
            pool = OriginPool()
            for _ in range(2):
                rec = await fetch(pool, srv.port)
                assert bytes(rec.body) == b"a"
            assert srv.conns == 2, resp
            await pool.close()
    keep = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na"
    async with RawOrigin(respond_each(keep, keep)) as srv:
        pool = OriginPool()
        for _ in range(2):
            await fetch(pool, srv.port)
        assert srv.conns == 1
        await pool.close()


@scenario
async def idle_eviction_and_max_idle() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
    async with RawOrigin(respond_each(ok, ok)) as srv:
        ep = Endpoint(LOCAL, srv.port)
        pool = OriginPool(idle_timeout=0.05)
        await fetch(pool, srv.port)
        assert pool.idle_count(ep) == 1
        await asyncio.wait_for(srv.closed.wait(), 2)  # evicted: the origin sees the close
        assert pool.idle_count(ep) == 0 and pool.connection_count() == 0
        await fetch(pool, srv.port)
        assert srv.conns == 2
        await pool.close()
    async with RawOrigin(respond_each(ok)) as srv:
        ep = Endpoint(LOCAL, srv.port)
        pool = OriginPool(max_idle_per_endpoint=2)
        recs = await asyncio.gather(*(fetch(pool, srv.port) for _ in range(4)))
        assert all(bytes(r.body) == b"a" for r in recs)
        assert srv.conns == 4
        assert pool.idle_count(ep) == 2 and pool.connection_count() == 2
        await pool.close()
        assert pool.connection_count() == 0
    async with RawOrigin(respond_each(ok, close=True)) as srv:  # origin closes an idle one
        ep = Endpoint(LOCAL, srv.port)
        pool = OriginPool()
        await fetch(pool, srv.port)
        await asyncio.wait_for(srv.closed.wait(), 2)
        for _ in range(100):
            if pool.idle_count(ep) == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.idle_count(ep) == 0 and pool.connection_count() == 0
        await pool.close()


@scenario
async def response_timeout_waiting_for_head() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with RawOrigin(silent) as srv:
        pool = OriginPool(response_timeout=0.1)
        rec = await fetch(pool, srv.port)
        assert rec.events == ["error"] and str(rec.error) == "timeout"
        await asyncio.wait_for(srv.closed.wait(), 2)
        await pool.close()


@scenario
async def response_timeout_ends_at_head_even_if_request_ends_later() -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        await asyncio.sleep(0.3)
        writer.write(b"def")
        await reader.read()

    async with RawOrigin(early) as srv:
        pool = OriginPool(response_timeout=0.1)
        rec = Recorder()
        hdrs = [("Transfer-Encoding", "chunked")]
        ep = Endpoint(LOCAL, srv.port)
        ex = await pool.open([ep], "POST", "/", hdrs, rec, body_framing="chunked")
        await asyncio.wait_for(rec.first_body, 5)
        ex.send_body(b"late")
        ex.end_body()  # after the head: must not re-arm the head timeout
        await asyncio.wait_for(rec.done, 5)
        assert (rec.events[-1], bytes(rec.body)) == ("end", b"abcdef")
        await pool.close()


@scenario
async def response_timeout_waits_while_the_upload_moves() -> None:
    """A chunked upload sending a chunk every 60 ms for 0.4 s with a 0.15 s response timeout:
    not timed out while it moves; the head that comes 0.1 s after the end is in time."""

    async def after_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        while not (await reader.readline()).startswith(b"0\r\n"):
            pass
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    async with RawOrigin(after_upload) as srv:
        pool = OriginPool(response_timeout=0.15)
        rec = Recorder()
        hdrs = [("Transfer-Encoding", "chunked")]
        ex = await pool.open(
            [Endpoint(LOCAL, srv.port)], "POST", "/", hdrs, rec, body_framing="chunked"
        )
        for _ in range(7):
            await asyncio.sleep(0.06)
            ex.send_body(b"x")
        ex.end_body()
        await asyncio.wait_for(rec.done, 5)
        assert (rec.status, bytes(rec.body), rec.error) == (200, b"ok", None)
        silent = Recorder()  # and a request nobody answers still times out
        await pool.open([Endpoint(LOCAL, srv.port)], "GET", "/", [], silent, body_framing="none")
        await asyncio.wait_for(silent.done, 5)
        assert str(silent.error) == "timeout"
        await pool.close()


@scenario
async def response_timeout_on_a_reused_connection_counts_from_its_own_request() -> None:
    """Keep-alive: the first request's timer outlives it on the connection; the second
    request, sent 0.2 s later (past the first one's 0.3 s deadline minus a bit), still gets
    its whole 0.3 s, then times out, and the connection is not reused after."""
    answered = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        answered += 1
        await read_head(reader)  # the second request: never answered
        await reader.read()

    async with RawOrigin(once) as srv:
        pool = OriginPool(response_timeout=0.3)
        loop = asyncio.get_running_loop()
        first = await fetch(pool, srv.port)
        assert (first.status, bytes(first.body)) == (200, b"a")
        await asyncio.sleep(0.2)
        t0 = loop.time()
        second = await fetch(pool, srv.port)
        waited = loop.time() - t0
        assert srv.conns == 1 and answered == 1  # the same connection
        assert str(second.error) == "timeout"
        assert 0.29 <= waited < 2.0, waited
        await asyncio.wait_for(srv.closed.wait(), 2)
        assert pool.connection_count() == 0
        await pool.close()


@scenario
async def connect_timeout_fails_over_then_gives_up() -> None:
    # A TCP server that never answers the TLS ClientHello: the connect (with handshake) times out.
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with RawOrigin(mute) as stuck, aio_origin() as good:
        pool = OriginPool(connect_timeout=0.1)
        eps = [Endpoint(LOCAL, stuck.port, ssl=True, insecure=True), Endpoint(LOCAL, good)]
        rec = Recorder()
        ex = await pool.open(eps, "GET", "/hello", [("Host", "h")], rec, body_framing="none")
        assert ex.endpoint == eps[1]
        await asyncio.wait_for(rec.done, 5)
        assert bytes(rec.body) == b"hello"
        with pytest.raises(OriginConnectError) as info:
            await pool.open(eps[:1], "GET", "/", [], Recorder(), body_framing="none")
        assert info.value.tried == [f"{LOCAL}:{stuck.port}"]
        await pool.close()


@scenario
async def failover_only_on_connect_error() -> None:
    dead1, dead2 = free_port(), free_port()
    async with RawOrigin(respond_each(b"garbage\r\n\r\n")) as bad, aio_origin() as good:
        pool = OriginPool()
        eps = [Endpoint(LOCAL, dead1), Endpoint(LOCAL, bad.port), Endpoint(LOCAL, good)]
        rec = Recorder()
        ex = await pool.open(eps, "GET", "/hello", [("Host", "h")], rec, body_framing="none")
        assert ex.endpoint == eps[1]  # connected: a bad answer is not a reason to fail over
        await asyncio.wait_for(rec.done, 5)
        assert rec.events == ["error"] and "Malformed" in str(rec.error)
        with pytest.raises(OriginConnectError) as info:
            await pool.open(
                [Endpoint(LOCAL, dead1), Endpoint(LOCAL, dead2)],
                "GET",
                "/",
                [],
                Recorder(),
                body_framing="none",
            )
        assert info.value.tried == [f"{LOCAL}:{dead1}", f"{LOCAL}:{dead2}"]
        assert "Tried: " in str(info.value)
        await pool.close()


@scenario
async def origin_dies_mid_body_and_malformed_responses() -> None:
    table = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", ["head", "body", "error"]),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            ["head", "body", "error"],
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Len", ["error"]),
        (b"", ["error"]),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", ["error"]),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ["head", "error"]),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            ["error"],
        ),
    ]
    for resp, events in table:
        async with RawOrigin(respond_each(resp, close=True)) as srv:
            pool = OriginPool()
            rec = await fetch(pool, srv.port)
            assert rec.events == events, resp
            assert isinstance(rec.error, OriginError)
            await asyncio.sleep(0.01)
            assert rec.events == events  # nothing after the error
            await pool.close()


@scenario
async def handler_exception_is_logged_and_reported() -> None:
    class Boom(Recorder):
        def on_response_body(self, data: bytes) -> None:
            raise RuntimeError("handler bug")

    records: list[logging.LogRecord] = []
    log = logging.getLogger("test.origin.boom")
    log.propagate = False
    log.addHandler(_ListHandler(records))
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
    async with RawOrigin(respond_each(ok)) as srv:
        pool = OriginPool(logger=log)
        rec = Boom()
        await pool.open([Endpoint(LOCAL, srv.port)], "GET", "/", [], rec, body_framing="none")
        await asyncio.wait_for(rec.done, 5)
        assert rec.events == ["head", "error"]
        assert [r.exc_info[0] for r in records if r.exc_info] == [RuntimeError]
        assert pool.connection_count() == 0
        await pool.close()


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@scenario
async def garbage_after_response_prevents_reuse() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
    async with RawOrigin(respond_each(ok + b"junk!", ok)) as srv:
        pool = OriginPool()
        rec = await fetch(pool, srv.port)
        assert rec.events == ["head", "body", "end"]
        await fetch(pool, srv.port)
        assert srv.conns == 2
        await pool.close()


@scenario
async def backpressure_pause_leaves_data_unread_and_resume_finishes() -> None:
    total = 32 * 1024 * 1024
    sent = 0

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"z" * 65536
        while sent < total:
            writer.write(block)
            sent += len(block)
            await writer.drain()
        await reader.read()

    async with RawOrigin(big) as srv:
        pool = OriginPool()
        rec = Recorder(pause_on_body=True)
        ex = await pool.open([Endpoint(LOCAL, srv.port)], "GET", "/", [], rec, body_framing="none")
        rec.exchange = ex
        await asyncio.wait_for(rec.first_body, 5)
        await asyncio.sleep(0.3)
        got = len(rec.body)
        assert got < total // 4 and sent < total // 2  # socket buffers filled, origin blocked
        assert not rec.done.done()
        ex.resume_reading()
        await asyncio.wait_for(rec.done, 10)
        assert len(rec.body) == total and rec.events[-1] == "end"
        assert pool.idle_count(Endpoint(LOCAL, srv.port)) == 1  # resumed before pooling
        await pool.close()


@scenario
async def abort_closes_connection_without_callbacks() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
        await writer.drain()
        await reader.read()  # returns at EOF: the client closed

    async with RawOrigin(trickle) as srv:
        pool = OriginPool()
        rec = Recorder()
        ex = await pool.open([Endpoint(LOCAL, srv.port)], "GET", "/", [], rec, body_framing="none")
        await asyncio.wait_for(rec.first_body, 5)
        ex.abort()
        await asyncio.wait_for(srv.closed.wait(), 2)
        await asyncio.sleep(0.01)
        assert rec.events == ["head", "body"]
        assert pool.connection_count() == 0
        await pool.close()


@scenario
async def dead_reused_connection_is_retried_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def one_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(ok)
        await writer.drain()
        await read_head(reader)  # the second request on this connection: drop it unanswered

    async with RawOrigin(one_then_drop) as srv:
        pool = OriginPool()
        await fetch(pool, srv.port)
        rec = await fetch(pool, srv.port)  # reused, dies, replayed on a fresh connection
        assert (rec.events, bytes(rec.body)) == (["head", "body", "end"], b"ok")
        assert srv.conns == 2
        big = b"b" * (origin_mod._REPLAY_MAX + 1)
        rec = await fetch(pool, srv.port, "POST", body=big, framing="length")
        assert rec.events == ["error"]  # too big to replay
        assert "without a response" in str(rec.error)
        await pool.close()


@scenario
async def request_backpressure_callbacks() -> None:
    stop = asyncio.Event()

    async def no_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    async with RawOrigin(no_read) as srv:
        pool = OriginPool()
        calls: list[str] = []
        rec = Recorder()
        hdrs = [("Transfer-Encoding", "chunked")]
        ep = Endpoint(LOCAL, srv.port)
        ex = await pool.open([ep], "POST", "/", hdrs, rec, body_framing="chunked")
        ex.on_request_pause = lambda: calls.append("pause")
        ex.on_request_resume = lambda: calls.append("resume")
        for _ in range(200):
            ex.send_body(b"p" * 65536)
            if calls:
                break
            await asyncio.sleep(0)
        assert calls == ["pause"]
        await pool.close()
        await asyncio.wait_for(rec.done, 2)
        assert rec.events == ["error"]  # pool closed under a running exchange
        stop.set()


@scenario
async def tls_insecure_sni_and_verification() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _self_signed(tmp, "origin.example")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        seen_sni: list[str | None] = []

        def on_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            seen_sni.append(name)

        server_ctx.sni_callback = on_sni
        _SERVER_TLS["ctx"] = server_ctx
        try:
            async with aio_origin() as port:
                pool = OriginPool()
                ep = Endpoint(
                    LOCAL, port, ssl=True, insecure=True, server_hostname="origin.example"
                )
                rec = await fetch(pool, port, target="/hello", ep=ep)
                assert bytes(rec.body) == b"hello"
                assert seen_sni == ["origin.example"]
                # Verified (not insecure): the self-signed cert is untrusted -> a connect error.
                strict = Endpoint(LOCAL, port, ssl=True, server_hostname="origin.example")
                with pytest.raises(OriginConnectError):
                    await fetch(pool, port, ep=strict)
                # Trusting the cert, verification against server_hostname passes; a wrong
                # name fails.
                trusting = ssl.create_default_context(cafile=cert)
                pool._ssl[False] = trusting
                rec = await fetch(pool, port, target="/hello", ep=strict)
                assert bytes(rec.body) == b"hello"
                wrong = Endpoint(LOCAL, port, ssl=True, server_hostname="other.example")
                with pytest.raises(OriginConnectError):
                    await fetch(pool, port, ep=wrong)
                await pool.close()
        finally:
            _SERVER_TLS.clear()


_SERVER_TLS: dict[str, ssl.SSLContext] = {}


def _self_signed(directory: str, name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(LOCAL))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


# -- runners: every scenario on asyncio and on uvloop --------------------------------------------


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda f: f.__name__)
async def test_scenario_asyncio(case: Scenario) -> None:
    await case()


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda f: f.__name__)
def test_scenario_uvloop(case: Scenario) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(case())


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda f: f.__name__)
def test_scenario_uvloop_writes_at_tick_end(
    case: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every scenario again with the request bytes sent at the end of the loop tick, through
    a flusher, as gripd's pool does (bodies past WRITE_NOW in a tick go out at once)."""
    init = OriginPool.__init__

    def with_flusher(self: OriginPool, **kw: Any) -> None:
        kw.setdefault("flusher", Flusher(asyncio.get_running_loop()))
        init(self, **kw)

    monkeypatch.setattr(OriginPool, "__init__", with_flusher)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(case())


# -- parser glue without a network -----------------------------------------------------------------


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_RESPONSES = [
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine Thanks\r\nA-B: c\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n"
        b"0\r\nT: x\r\n\r\n",
        "GET",
        b"abc0123456789abcdef",
    ),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfoobar", "GET", b"foobar"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", "HEAD", b""),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n", "GET", b""),
]


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(range(len(_RESPONSES))),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_split_points_do_not_matter(which: int, cuts: list[int]) -> None:
    raw, method, body = _RESPONSES[which]

    async def run() -> None:
        pool = OriginPool()
        pool._loop = asyncio.get_running_loop()
        conn = origin_conn.OriginConnection(pool, Endpoint(LOCAL, 1))
        transport = _FakeTransport()
        conn.connection_made(transport)
        rec = Recorder()
        ex = OriginExchange(pool, conn.endpoint, rec, method, "none", 0)
        ex.start(conn, b"", reused=False)
        points = sorted({c for c in cuts if c < len(raw)} | {0, len(raw)})
        for a, b in itertools.pairwise(points):
            conn.data_received(raw[a:b])
        assert rec.events[0] == "head" and rec.events[-1] == "end", rec.events
        assert bytes(rec.body) == body
        assert rec.status in (200, 304)
        assert not transport.closing  # clean keep-alive: parked in the pool
        assert pool.idle_count(conn.endpoint) == 1
        await pool.close()

    asyncio.run(run())


def test_endpoint_label_and_hashable() -> None:
    a = Endpoint("example.com", 443, ssl=True)
    assert a.label() == "example.com:443"
    assert a == Endpoint("example.com", 443, ssl=True) and hash(a) == hash(
        Endpoint("example.com", 443, ssl=True)
    )
    assert a != Endpoint("example.com", 443)  # TLS settings are part of the pool key


@pytest.mark.parametrize(
    ("version", "headers", "expected"),
    [
        ("1.1", [], True),
        ("1.1", [("Connection", "close")], False),
        ("1.1", [("connection", "Keep-Alive, Close")], False),
        ("1.0", [], False),
        ("1.0", [("Connection", "keep-alive")], True),
    ],
)
def test_head_keep_alive(version: str, headers: Headers, expected: bool) -> None:
    assert origin_conn._keep_alive(version, headers) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], True),
        ([("Content-Length", "3")], False),
        ([("Transfer-Encoding", "chunked")], False),
        ([("Transfer-Encoding", "gzip, chunked")], False),
        ([("Transfer-Encoding", "gzip")], True),
    ],
)
def test_eof_delimited(headers: Headers, expected: bool) -> None:
    assert origin_conn._is_eof_delimited(headers) is expected


# -- the response head cap (origin_response_head_max) ------------------------------------------

_CAP = 16_384


class _AbortableTransport(_FakeTransport):
    def abort(self) -> None:
        self.closing = True


def _feed(chunks: list[bytes], *, cap: int = _CAP, method: str = "GET") -> tuple[Recorder, int]:
    """Feed ``chunks`` to one exchange with a ``cap``-byte head limit, stopping at the first
    error or end; returns the recorder and how many bytes were fed."""

    async def run() -> tuple[Recorder, int]:
        pool = OriginPool(response_head_max=cap)
        pool._loop = asyncio.get_running_loop()
        conn = origin_conn.OriginConnection(pool, Endpoint(LOCAL, 1))
        conn.connection_made(_AbortableTransport())
        rec = Recorder()
        ex = OriginExchange(pool, conn.endpoint, rec, method, "none", 0)
        ex.start(conn, b"", reused=False)
        fed = 0
        for chunk in chunks:
            if rec.done.done():
                break
            conn.data_received(chunk)
            fed += len(chunk)
        await pool.close()
        return rec, fed

    return asyncio.run(run())


def _head(size: int) -> bytes:
    """A complete response head of exactly ``size`` bytes (one padded header), no body."""
    base = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: \r\n\r\n"
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(base)))


@pytest.mark.parametrize("split", [False, True])
def test_head_at_the_cap_passes_one_byte_more_fails(split: bool) -> None:
    for size, ok in ((_CAP, True), (_CAP + 1, False)):
        raw = _head(size)
        assert len(raw) == size
        chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)] if split else [raw]
        rec, _ = _feed(chunks)
        if ok:
            assert rec.events == ["head", "end"], rec.error
        else:
            assert rec.events == ["error"]
            assert str(rec.error) == f"Response head from origin over {_CAP} bytes"


@pytest.mark.parametrize(
    ("name", "start", "filler"),
    [
        ("endless header lines", b"HTTP/1.1 200 OK\r\n", b"X-a: " + b"b" * 1000 + b"\r\n"),
        ("one header value that never ends", b"HTTP/1.1 200 OK\r\nX-a: ", b"b" * 1000),
        ("a reason phrase that never ends", b"HTTP/1.1 200 O", b"K" * 1000),
        ("endless 1xx interim heads", b"", b"HTTP/1.1 100 Continue\r\nX-a: b\r\n\r\n"),
    ],
)
def test_endless_head_fails_near_the_cap(name: str, start: bytes, filler: bytes) -> None:
    """An origin that never ends its head: refused once past the cap, not buffered forever."""
    chunks = [start] + [filler * 16] * 5_000  # up to ~80 MB if nothing stopped it
    rec, fed = _feed(chunks)
    assert rec.events == ["error"], name
    assert str(rec.error) == f"Response head from origin over {_CAP} bytes"
    assert fed <= _CAP + len(filler) * 16 + len(start)


def test_too_many_header_lines() -> None:
    def head(n: int) -> bytes:
        return b"HTTP/1.1 204 No Content\r\n" + b"X-a: b\r\n" * n + b"\r\n"

    lines = origin_conn.RESPONSE_HEAD_LINES_MAX
    rec, _ = _feed([head(lines)], cap=65_536)
    assert rec.events == ["head", "end"] and len(rec.headers) == lines
    rec, _ = _feed([head(lines + 1)], cap=65_536)
    assert rec.events == ["error"]
    assert str(rec.error) == f"Response head from origin has over {lines} header lines"


def test_endless_chunked_trailer_fails() -> None:
    """Trailers are read and dropped; one that never ends is refused, not buffered."""
    start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-t: "
    rec, fed = _feed([start] + [b"t" * 16_000] * 5_000)
    assert rec.events == ["head", "body", "error"]
    assert str(rec.error) == f"Response trailer from origin over {_CAP} bytes"
    assert fed <= 2 * _CAP + len(start)


def test_long_chunked_body_is_not_a_trailer() -> None:
    """Chunk framing between body bytes never adds up towards the trailer cap."""
    body = b"".join(b"1\r\nx\r\n" for _ in range(20_000))
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    rec, _ = _feed([raw[i : i + 7] for i in range(0, len(raw), 7)])
    assert rec.events[0] == "head" and rec.events[-1] == "end"
    assert bytes(rec.body) == b"x" * 20_000


async def _endless_head_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``200 OK`` then header lines, stopping after 32 MB (bounded) or when cut off."""
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    line = b"X-a: " + b"b" * 1000 + b"\r\n"
    for _ in range(2_000):
        writer.write(line * 16)
        await asyncio.wait_for(writer.drain(), 10)


@scenario
async def endless_response_head_is_cut_off() -> None:
    """Over a real socket, for a proxied request and for ``fetch`` (WebSocket-over-HTTP
    events, next links): the exchange fails at the cap and the origin connection is closed."""
    async with RawOrigin(_endless_head_origin) as o:
        pool = OriginPool(response_head_max=_CAP)
        rec = await fetch(pool, o.port)
        assert rec.events == ["error"]
        assert str(rec.error) == f"Response head from origin over {_CAP} bytes"
        with pytest.raises(OriginError, match="over 16384 bytes"):
            await asyncio.wait_for(
                origin_mod.fetch(
                    pool, [Endpoint(LOCAL, o.port)], "POST", "/", [], b"x", limit=1000
                ),
                5,
            )
        await asyncio.wait_for(o.closed.wait(), 5)
        assert pool.connection_count() == 0
        await pool.close()


def test_head_bytes_do_not_count_as_trailer() -> None:
    """A head just under the cap, then chunk framing before the first body byte: fine."""
    head = _head(_CAP - 100).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    ext = b"5;e=" + b"e" * 1000 + b"\r\n"
    rec, _ = _feed([head, ext, b"hello\r\n0\r\n\r\n"])
    assert rec.events == ["head", "body", "end"], rec.error
    assert bytes(rec.body) == b"hello"


async def test_idle_sweep_stops_when_no_connection_is_idle() -> None:
    """Taking the last idle connection of an endpoint leaves no empty entry, so the one idle
    sweep timer is not re-armed for ever."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
    async with RawOrigin(respond_each(ok)) as srv:
        ep = Endpoint(LOCAL, srv.port)
        pool = OriginPool(idle_timeout=0.05)
        await fetch(pool, srv.port)
        assert pool.idle_count(ep) == 1 and pool._sweeper is not None
        conn = pool._take_idle(ep)  # taken, and not given back (as when an origin closes it)
        assert conn is not None
        conn.close()
        await asyncio.sleep(0.15)  # a few sweep intervals
        assert not pool._idle and pool._sweeper is None
        await pool.close()

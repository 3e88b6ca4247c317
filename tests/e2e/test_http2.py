"""HTTP/2 on gripd's TLS listeners (ALPN ``h2``): GRIP holds and pass-through per stream, flow
control per stream, and bad input (protocol errors, rapid reset, floods).

gripd only: Pushpin 1.36 has no HTTP/2. Certificates come from a CA the tests make (trustme),
in ``<configdir>/runner/certs/default_<port>.crt``/``.key`` as Pushpin's runner reads them (F3).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.errors
import httpx
import pytest
import trustme

from tests.conftest import TIME_SCALE
from tests.support.e2e import publish, stream_item
from tests.support.h2client import RawH2
from tests.support.origin import Origin, Reply
from tests.support.procs import Server, free_ports, start_server
from tests.support.tlscerts import ca_file, client_context, install_default_cert, make_ca

SSE_HOLD = [
    ("Grip-Hold", "stream"),
    ("Grip-Channel", "news"),
    ("Content-Type", "text/event-stream"),
]

WAIT = 10.0 * TIME_SCALE


@dataclass
class TlsServer:
    server: Server
    https_port: int
    ca: trustme.CA
    workdir: Path

    def url(self, path: str) -> str:
        return f"https://localhost:{self.https_port}{path}"


@pytest.fixture
async def tls_start(tmp_path: Path) -> AsyncIterator[Any]:
    servers: list[Server] = []

    async def _start(origin: Origin, conf: dict[str, dict[str, str]] | None = None) -> TlsServer:
        ca = make_ca()
        (port,) = free_ports(1)
        workdir = tmp_path / f"gripd-{len(servers)}"
        install_default_cert(ca, workdir, port)
        full = {"runner": {"https_ports": f"127.0.0.1:{port}"}}
        for sec, kv in (conf or {}).items():
            full.setdefault(sec, {}).update(kv)
        server = await asyncio.to_thread(
            start_server, "gripd", workdir, [f"* 127.0.0.1:{origin.port}"], conf=full
        )
        servers.append(server)
        return TlsServer(server, port, ca, workdir)

    yield _start
    for s in servers:
        await asyncio.to_thread(s.stop)
    for s in servers:  # whatever a test did, gripd never failed inside
        assert "Traceback" not in s.log_text(), s.log_text()[-4000:]


def h2_client(t: TlsServer, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(http2=True, verify=client_context(t.ca), timeout=WAIT, **kw)


async def test_pass_through_over_h2(tls_start: Any, origin: Origin) -> None:
    origin.route("GET", "/hello", Reply(200, [("Content-Type", "text/plain")], "hello\n"))
    origin.route("POST", "/echo", Reply(200, [], "posted\n"))
    t = await tls_start(origin)
    async with h2_client(t) as c:
        r = await c.get(t.url("/hello?x=1"), headers={"cookie": "a=1", "X-Test": "yes"})
        assert r.http_version == "HTTP/2"
        assert (r.status_code, r.text) == (200, "hello\n")
        assert "connection" not in r.headers and "transfer-encoding" not in r.headers
        # A request body bigger than the initial windows (64 KiB) arrives whole.
        body = bytes(range(256)) * 4096  # 1 MiB
        r = await c.post(t.url("/echo"), content=body)
        assert (r.status_code, r.text) == (200, "posted\n")
    seen = await origin.wait_for("/hello")
    assert seen.query == "x=1"
    assert seen.header("host") == f"localhost:{t.https_port}"
    assert seen.header("x-test") == "yes"
    assert seen.header("x-forwarded-proto") == "https"  # set_x_forwarded_protocol (F4)
    posted = await origin.wait_for("/echo")
    assert posted.body == body


async def test_http11_still_offered(tls_start: Any, origin: Origin) -> None:
    origin.route("GET", "/hello", Reply(200, [], "hi\n"))
    t = await tls_start(origin)
    async with httpx.AsyncClient(verify=client_context(t.ca), timeout=WAIT) as c:
        r = await c.get(t.url("/hello"))
        assert (r.http_version, r.text) == ("HTTP/1.1", "hi\n")


async def test_curl_http2(tls_start: Any, origin: Origin, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    origin.route("GET", "/hello", Reply(200, [], "curl\n"))
    t = await tls_start(origin)
    cafile = ca_file(t.ca, tmp_path)
    out = await asyncio.to_thread(
        subprocess.run,
        [
            "curl",
            "-s",
            "--http2",
            "--cacert",
            str(cafile),
            "-w",
            "|%{http_version}",
            t.url("/hello"),
        ],
        capture_output=True,
        timeout=WAIT,
    )
    assert out.stdout == b"curl\n|2"


async def test_response_hold_over_h2(tls_start: Any, origin: Origin) -> None:
    """F22: a long-poll on one stream is answered by a publish; another stream on the same
    connection is answered by its timeout meanwhile."""
    origin.route(
        "GET", "/lp", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "lp")], "timeout\n")
    )
    origin.route(
        "GET",
        "/short",
        Reply(
            200,
            [("Grip-Hold", "response"), ("Grip-Channel", "x"), ("Grip-Timeout", "1")],
            "short timeout\n",
        ),
    )
    t = await tls_start(origin)
    async with h2_client(t) as c:
        lp = asyncio.create_task(c.get(t.url("/lp")))
        short = asyncio.create_task(c.get(t.url("/short")))
        await origin.wait_for("/lp")
        r = await short
        assert (r.http_version, r.text) == ("HTTP/2", "short timeout\n")
        for _ in range(50):
            await publish(
                t.server, [{"channel": "lp", "formats": {"http-response": {"body": "published\n"}}}]
            )
            done, _ = await asyncio.wait({lp}, timeout=0.2)
            if done:
                break
        r = await lp
        assert (r.status_code, r.text) == (200, "published\n")


async def _read_sse(resp: httpx.Response, out: list[str], stop: asyncio.Event) -> None:
    async for chunk in resp.aiter_text():
        out.append(chunk)
        if stop.is_set():
            return


async def test_twenty_sse_streams_on_one_connection(tls_start: Any, origin: Origin) -> None:
    """F24: 20 stream holds share one HTTP/2 connection and all get each publish once."""
    origin.route("GET", "/sse", Reply(200, SSE_HOLD, ""))
    t = await tls_start(origin, {"gripd": {"client_idle_timeout": "60"}})
    n = 20
    async with h2_client(t, limits=httpx.Limits(max_connections=1)) as c:
        streams = []
        for _ in range(n):
            req = c.build_request("GET", t.url("/sse"))
            streams.append(await c.send(req, stream=True))
        assert all(r.http_version == "HTTP/2" for r in streams)
        assert all(r.headers["content-type"] == "text/event-stream" for r in streams)
        got: list[list[str]] = [[] for _ in range(n)]
        stop = asyncio.Event()
        readers = [
            asyncio.create_task(_read_sse(r, g, stop)) for r, g in zip(streams, got, strict=True)
        ]
        # Probe until every stream is subscribed, then publish the real items.
        loop = asyncio.get_running_loop()
        end = loop.time() + WAIT
        while not all("probe" in "".join(g) for g in got) and loop.time() < end:
            await publish(t.server, [stream_item("news", ": probe\n\n")])
            await asyncio.sleep(0.1)
        for i in range(3):
            await publish(t.server, [stream_item("news", f"data: m{i}\n\n")])
        while not all("m2" in "".join(g) for g in got) and loop.time() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stop.set()
        for g in got:
            text = "".join(g).replace(": probe\n\n", "")
            assert text == "data: m0\n\ndata: m1\n\ndata: m2\n\n"
        # One TCP connection carried them all.
        pool = c._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1
        for task in readers:
            task.cancel()
        for r in streams:
            await r.aclose()


async def test_stream_close_action_ends_h2_stream(tls_start: Any, origin: Origin) -> None:
    """F24/F28 ``action: close`` ends the stream cleanly (END_STREAM, not a reset)."""
    origin.route("GET", "/sse", Reply(200, SSE_HOLD, "open\n"))
    t = await tls_start(origin)
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        sid = raw.request("/sse")
        await raw.send()
        assert await raw.until(lambda: b"open\n" in raw.data.get(sid, b""))
        assert raw.headers[sid][":status"] == "200"
        await origin.wait_for("/sse")
        await asyncio.sleep(0.2)
        await publish(t.server, [stream_item("news", "data: a\n\n")])
        assert await raw.until(lambda: b"data: a" in raw.data.get(sid, b""))
        await publish(
            t.server, [{"channel": "news", "formats": {"http-stream": {"action": "close"}}}]
        )
        assert await raw.until(lambda: sid in raw.ended or sid in raw.reset)
        assert sid in raw.ended and sid not in raw.reset
    finally:
        await raw.close()


async def test_slow_stream_does_not_stall_its_neighbour(tls_start: Any, origin: Origin) -> None:
    """A stream whose reader never opens its window gets the slow-client policy
    (client_write_buffer_max); another stream on the same connection gets every message."""
    origin.route("GET", "/sse", Reply(200, SSE_HOLD, ""))
    t = await tls_start(origin, {"gripd": {"client_write_buffer_max": "20000"}})
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]), window=65535)
    try:
        slow = raw.request("/sse")
        fast = raw.request("/sse")
        raw.auto_ack = {fast}  # the slow stream's window is never reopened
        await raw.send()
        assert await raw.until(lambda: slow in raw.headers and fast in raw.headers)
        await origin.wait_for("/sse", 2)
        await asyncio.sleep(0.3)
        payload = "x" * 1000
        n = 200  # 200 KB: far past the slow stream's 64 KiB window and the 20 KB cap
        for i in range(0, n, 20):
            await publish(
                t.server, [stream_item("news", f"data: {i + k} {payload}\n\n") for k in range(20)]
            )
            await raw.pump(0.01)
        assert await raw.until(lambda: f"data: {n - 1} ".encode() in raw.data.get(fast, b""), WAIT)
        fast_text = raw.data[fast].decode()
        assert all(f"data: {i} {payload}\n\n" in fast_text for i in range(n))
        assert len(raw.data.get(slow, b"")) <= 65535  # its window, no more
        assert not raw.terminated
        assert "dropped" in t.server.log_text() or "slow" in t.server.log_text()
    finally:
        await raw.close()


async def test_rapid_reset_gets_goaway(tls_start: Any, origin: Origin) -> None:
    """CVE-2023-44487: a client that opens and resets streams without end is cut off with
    ENHANCE_YOUR_CALM; another connection is undisturbed."""
    origin.route("GET", "/slow", Reply(200, [], "slow\n", delay=5.0))
    origin.route("GET", "/hello", Reply(200, [], "hi\n"))
    t = await tls_start(origin)
    bystander = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        for _ in range(40):
            for _ in range(25):
                sid = raw.request("/slow")
                raw.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            await raw.send()
            if not await raw.pump(0.01) or raw.terminated:
                break
        await raw.until(lambda: raw.terminated is not None or raw.closed, WAIT)
        assert raw.terminated is not None, t.server.log_text()[-3000:]
        assert raw.terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        sid = bystander.request("/hello")
        await bystander.send()
        assert await bystander.until(lambda: sid in bystander.ended, WAIT)
        assert bytes(bystander.data[sid]) == b"hi\n"
    finally:
        await raw.close()
        await bystander.close()


@pytest.mark.parametrize("frame", ["PING", "SETTINGS"])
async def test_control_frame_flood_gets_goaway(tls_start: Any, origin: Origin, frame: str) -> None:
    """A client sending PING or SETTINGS frames without end (each makes gripd answer) is cut
    off with ENHANCE_YOUR_CALM."""
    t = await tls_start(origin)
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        for i in range(3000):
            if frame == "PING":
                raw.h2.ping(i.to_bytes(8, "big"))
            else:
                # A SETTINGS frame written by hand: h2 would wait for each ACK first.
                raw.writer.write(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64")
            if i % 100 == 99:
                await raw.send()
                if not await raw.pump(0.001) or raw.terminated:
                    break
        await raw.until(lambda: raw.terminated is not None or raw.closed, WAIT)
        assert raw.terminated is not None
        assert raw.terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        await raw.close()


async def test_protocol_error_closes_only_that_connection(tls_start: Any, origin: Origin) -> None:
    origin.route("GET", "/hello", Reply(200, [], "hi\n"))
    t = await tls_start(origin)
    bystander = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        # A DATA frame on stream 0 is a connection error (RFC 9113 6.1).
        raw.writer.write(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        await raw.writer.drain()
        await raw.until(lambda: raw.terminated is not None or raw.closed, WAIT)
        assert raw.terminated is not None
        assert raw.terminated.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        sid = bystander.request("/hello")
        await bystander.send()
        assert await bystander.until(lambda: sid in bystander.ended, WAIT)
    finally:
        await raw.close()
        await bystander.close()


async def test_too_large_head_gets_431(tls_start: Any, origin: Origin) -> None:
    """F3 client_buffer_size bounds the request head on HTTP/2 too."""
    origin.route("GET", "/hello", Reply(200, [], "hi\n"))
    t = await tls_start(origin, {"runner": {"client_buffer_size": "4096"}})
    async with h2_client(t) as c:
        r = await c.get(t.url("/hello"))  # gripd's SETTINGS are acknowledged by now
        assert r.text == "hi\n"
        r = await c.get(t.url("/hello"), headers={"x-big": "a" * 6000})
        assert r.status_code == 431  # a stream error: the connection goes on
        r = await c.get(t.url("/hello"))
        assert r.text == "hi\n"


async def test_status_board_json_over_h2(tls_start: Any, origin: Origin) -> None:
    """A JSON body (here, a CORS-decorated own response, F45) keeps its bytes over HTTP/2."""
    t = await tls_start(origin, {"proxy": {"auto_cross_origin": "true"}})
    origin.route(
        "GET", "/j", Reply(200, [("Content-Type", "application/json")], json.dumps({"a": 1}))
    )
    async with h2_client(t) as c:
        r = await c.get(t.url("/j"), headers={"Origin": "https://example.com"})
        assert r.json() == {"a": 1}
        assert r.headers["access-control-allow-origin"] == "https://example.com"


async def test_keep_alive_and_next_links_over_h2(tls_start: Any, origin: Origin) -> None:
    """F24 keep-alives on a held stream, and F25 next links chained into one response, each
    on its own stream of one connection."""
    origin.route(
        "GET",
        "/ka",
        Reply(
            200,
            [
                ("Grip-Hold", "stream"),
                ("Grip-Channel", "quiet"),
                ("Grip-Keep-Alive", "ka\\n; format=cstring; timeout=1"),
            ],
            "start\n",
        ),
    )
    origin.route("GET", "/c0", Reply(200, [("Grip-Link", "</c1>; rel=next")], "zero\n"))
    origin.route("GET", "/c1", Reply(200, [("Grip-Link", "</c2>; rel=next")], "one\n"))
    origin.route("GET", "/c2", Reply(200, [], "two\n"))
    t = await tls_start(origin)
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        ka = raw.request("/ka")
        chain = raw.request("/c0")
        await raw.send()
        assert await raw.until(lambda: chain in raw.ended, WAIT)
        assert bytes(raw.data[chain]) == b"zero\none\ntwo\n"
        assert await raw.until(lambda: raw.data.get(ka, b"").count(b"ka\n") >= 2, WAIT)
        assert bytes(raw.data[ka]).startswith(b"start\nka\n")
        assert ka not in raw.ended
    finally:
        await raw.close()


async def test_jsonp_over_h2(tls_start: Any, origin: Origin) -> None:
    """F46: a JSON-P request is rewritten and its answer wrapped, over HTTP/2 as over 1.1."""
    origin.route("POST", "/j", Reply(201, [("Content-Type", "text/plain")], "hi\n"))
    t = await tls_start(origin, {"proxy": {"auto_cross_origin": "true"}})
    async with h2_client(t) as c:
        r = await c.get(t.url("/j?callback=cb&_method=POST&_body=x"))
        assert r.http_version == "HTTP/2"
        assert r.headers["content-type"] == "application/javascript"
        assert r.content.startswith(b'/**/cb({"code": 201, "reason": "Created", "headers": {')
    seen = await origin.wait_for("/j")
    assert (seen.method, seen.body) == ("POST", b"x")


async def test_sni_certificate_with_h2(tls_start: Any, origin: Origin) -> None:
    """F3 SNI certificates (``<name>.crt``) negotiate HTTP/2 like the default one."""
    origin.route("GET", "/hello", Reply(200, [], "sni\n"))
    t = await tls_start(origin)
    cert = t.ca.issue_cert("other.test")
    certs = t.workdir / "runner" / "certs"
    (certs / "other.test.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (certs / "other.test.key").write_bytes(cert.private_key_pem.bytes())
    ctx = client_context(t.ca, ["h2"])
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while True:  # the new pair is picked up by the certificate watcher (tls_reload_interval)
        _, writer = await asyncio.open_connection(
            "127.0.0.1", t.https_port, ssl=ctx, server_hostname="localhost"
        )
        writer.close()
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", t.https_port, ssl=ctx, server_hostname="other.test"
            )
            break
        except OSError:  # ssl.SSLCertVerificationError until the reload
            assert loop.time() < end, "the SNI certificate was never served"
            await asyncio.sleep(0.5)
    ssl_obj = writer.get_extra_info("ssl_object")
    assert ssl_obj.selected_alpn_protocol() == "h2"
    writer.close()


async def test_stream_past_the_limit_is_refused_alone(tls_start: Any, origin: Origin) -> None:
    """RFC 9113 5.1.2: a stream over SETTINGS_MAX_CONCURRENT_STREAMS is a stream error
    (REFUSED_STREAM); the streams already open, and the connection, go on."""
    origin.route("GET", "/sse", Reply(200, SSE_HOLD, "open\n"))
    t = await tls_start(origin, {"gripd": {"http2_max_streams": "3"}})
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        # Sent before gripd's SETTINGS can have been read: the client does not know the limit.
        sids = [raw.request("/sse") for _ in range(5)]
        await raw.send()
        assert await raw.until(lambda: all(s in raw.reset or s in raw.headers for s in sids))
        refused = [s for s in sids if s in raw.reset]
        assert len(refused) == 2
        assert all(raw.reset[s] == h2.errors.ErrorCodes.REFUSED_STREAM for s in refused)
        assert raw.terminated is None
        await origin.wait_for("/sse", 3)
        await asyncio.sleep(0.3)
        await publish(t.server, [stream_item("news", "data: still here\n\n")])
        held = [s for s in sids if s not in refused]
        assert await raw.until(lambda: all(b"still here" in raw.data.get(s, b"") for s in held))
    finally:
        await raw.close()


@pytest.mark.parametrize("budget", ["8", "200"])
async def test_reset_budget_is_a_setting(tls_start: Any, origin: Origin, budget: str) -> None:
    """``[gripd] http2_reset_budget``: 20 streams opened and reset at once exhaust a budget of
    8 (GOAWAY ENHANCE_YOUR_CALM) and not the default 200 (the connection goes on)."""
    origin.route("GET", "/slow", Reply(200, [], "slow\n", delay=5.0))
    origin.route("GET", "/hello", Reply(200, [], "hi\n"))
    t = await tls_start(origin, {"gripd": {"http2_reset_budget": budget}})
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        for _ in range(20):
            sid = raw.request("/slow")
            raw.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        await raw.send()
        if budget == "8":
            await raw.until(lambda: raw.terminated is not None or raw.closed, WAIT)
            assert raw.terminated is not None
            assert raw.terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        else:
            sid = raw.request("/hello")
            await raw.send()
            assert await raw.until(lambda: sid in raw.ended, WAIT)
            assert bytes(raw.data[sid]) == b"hi\n"
            assert raw.terminated is None
    finally:
        await raw.close()


@pytest.mark.parametrize("path", ["/slow", "/held"])
async def test_reset_stream_ends_its_stats_connection(
    tls_start: Any, origin: Origin, path: str
) -> None:
    """F43 over h2: a stream is a request, so a stream the client resets ends its stats
    connection (``conn`` ``unavailable``) at once, whether it was waiting for the origin or
    held, while the connection itself stays open."""
    from tests.e2e.test_stats_metrics import StatsReader, _is

    origin.route("GET", "/slow", Reply(200, [], "slow\n", delay=8.0))
    origin.route("GET", "/held", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "h")], ""))
    t = await tls_start(origin)
    rundir = t.server.tmp_rundir or (t.workdir / "run")
    reader = StatsReader(f"ipc://{rundir}/gp-stats")
    raw = await RawH2.open(t.https_port, client_context(t.ca, ["h2"]))
    try:
        await asyncio.sleep(0.3 * TIME_SCALE)  # the reader's subscription reaches gripd
        sid = raw.request(path)
        await raw.send()
        # The stream's own connection (TLS): not the readiness probe's, which may be seen too.
        opened = await reader.wait(
            lambda p: p[0] == "conn" and p[1].get("ssl") is True and not p[1].get("unavailable")
        )
        if path == "/held":
            await reader.wait(_is("sub", mode="stream", channel="h"))
        raw.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        await raw.send()
        await reader.wait(_is("conn", id=opened[1]["id"], unavailable=True), timeout=3.0)
        assert not raw.closed and raw.terminated is None
    finally:
        await raw.close()
        await reader.close()

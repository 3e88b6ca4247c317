"""Client TLS listeners (F3 ``https_ports``) and Unix-socket listeners (F3 ``local_ports``)
end to end: certificates from ``<configdir>/runner/certs`` (SNI, default, reload), the
``ssl=`` route condition and ``X-Forwarded-Proto`` (F4, F7), GRIP streams over TLS, and
plain HTTP over a Unix socket. The differential ones run against Pushpin 1.36 too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.support.e2e import get, publish, stream_item
from tests.support.origin import Origin, Reply
from tests.support.procs import (
    REPO_ROOT,
    Impl,
    Server,
    base_conf,
    free_ports,
    merge_conf,
    render_conf,
    start_server,
)
from tests.support.rawhttp import RawResponse, raw_request
from tests.support.tlscerts import ca_file, install_default_cert

SNI_NAME = "sni.test"


@dataclass
class TlsServer:
    server: Server
    https_port: int
    certs: Path
    ca: trustme.CA
    sock_path: Path

    @property
    def impl(self) -> Impl:
        return self.server.impl


def write_pair(certs: Path, name: str, ca: trustme.CA, *hosts: str) -> None:
    cert = ca.issue_cert(*hosts)
    (certs / f"{name}.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (certs / f"{name}.key").write_bytes(cert.private_key_pem.bytes())


StartTls = Callable[..., Awaitable[TlsServer]]


@pytest.fixture
async def start_tls(tmp_path: Path) -> AsyncIterator[StartTls]:
    """``await start_tls(impl, routes, conf=...)``: a server with one https port (default
    certificate for localhost/127.0.0.1, an SNI one for ``sni.test``) and one Unix socket."""
    servers: list[Server] = []
    sock_dir = Path(tempfile.mkdtemp(prefix="gp-sock-"))  # short: sun_path is 108 bytes

    async def _start(
        impl: Impl,
        routes: list[str],
        conf: dict[str, dict[str, str]] | None = None,
        **kw: Any,
    ) -> TlsServer:
        workdir = tmp_path / f"{impl}-{len(servers)}"
        ca = trustme.CA()
        (https_port,) = free_ports(1)
        certs = install_default_cert(ca, workdir, https_port)
        write_pair(certs, SNI_NAME, ca, SNI_NAME)
        sock_path = sock_dir / f"s{len(servers)}.sock"
        full = merge_conf(
            {
                "runner": {
                    "https_ports": f"127.0.0.1:{https_port}",
                    "local_ports": str(sock_path),
                }
            },
            conf,
        )
        server = await asyncio.to_thread(start_server, impl, workdir, routes, conf=full, **kw)
        servers.append(server)
        return TlsServer(server, https_port, certs, ca, sock_path)

    yield _start
    for s in servers:
        await asyncio.to_thread(s.stop)
    shutil.rmtree(sock_dir, ignore_errors=True)


def client_ctx(ca: trustme.CA, *, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = check_hostname
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def tls_open(
    t: TlsServer, sni: str | None = "localhost", *, check_hostname: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1",
            t.https_port,
            ssl=client_ctx(t.ca, check_hostname=check_hostname and sni is not None),
            server_hostname=sni or "",
        ),
        10,
    )


def peer_names(writer: asyncio.StreamWriter) -> set[str]:
    obj = writer.get_extra_info("ssl_object")
    cert = obj.getpeercert()
    return {v for k, v in cert.get("subjectAltName", ())}


async def request_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    """One keep-alive request on an open connection."""
    writer.write(get(path))
    resp = RawResponse(reader, writer)
    await resp.head(10)
    body = await resp.read_to_end(10)
    return resp.status, body


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20
    )


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


# -- https_ports ---------------------------------------------------------------------------------


@needs_curl
async def test_https_request_reaches_origin(
    impl: Impl, start_tls: StartTls, origin: Origin, tmp_path: Path
) -> None:
    """F3/F4: a verified HTTPS request is proxied; with the shipped
    ``set_x_forwarded_protocol=proto-only`` the origin sees ``X-Forwarded-Proto: https``, and
    nothing on the plain port."""
    origin.route("GET", "/x", Reply(200, body="hello\n"))
    t = await start_tls(impl, [f"* 127.0.0.1:{origin.port}"])
    async with httpx.AsyncClient(verify=client_ctx(t.ca), timeout=10) as c:
        r = await c.get(f"https://localhost:{t.https_port}/x")
    assert (r.status_code, r.text) == (200, "hello\n")
    seen = origin.requests_for("/x")[-1]
    assert seen.header_all("X-Forwarded-Proto") == ["https"]
    assert seen.header("X-Forwarded-Protocol") is None

    cafile = ca_file(t.ca, tmp_path)
    res = await asyncio.to_thread(
        curl, "--cacert", str(cafile), f"https://127.0.0.1:{t.https_port}/x"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello\n"

    status, _, body = await raw_request(
        t.server.http_port, get("/x", "X-Forwarded-Proto: https\r\n")
    )
    assert (status, body) == (200, b"hello\n")
    # the client's own header is dropped, and a plain request gets none
    assert origin.requests_for("/x")[-1].header("X-Forwarded-Proto") is None


async def test_set_x_forwarded_protocol_true(
    impl: Impl, start_tls: StartTls, origin: Origin
) -> None:
    origin.route("GET", "/x", Reply(200, body="ok\n"))
    t = await start_tls(
        impl, [f"* 127.0.0.1:{origin.port}"], conf={"proxy": {"set_x_forwarded_protocol": "true"}}
    )
    reader, writer = await tls_open(t)
    try:
        assert await request_on(reader, writer, "/x") == (200, b"ok\n")
    finally:
        writer.close()
    seen = origin.requests_for("/x")[-1]
    assert seen.header_all("X-Forwarded-Proto") == ["https"]
    assert seen.header_all("X-Forwarded-Protocol") == ["https"]


async def test_sni_picks_the_certificate(impl: Impl, start_tls: StartTls, origin: Origin) -> None:
    """F3: ``<name>.crt`` for SNI ``name``; ``default_<port>.crt`` without SNI or for an
    unknown name."""
    origin.route("GET", "/x", Reply(200, body="ok\n"))
    t = await start_tls(impl, [f"* 127.0.0.1:{origin.port}"])
    cases = [(SNI_NAME, {SNI_NAME}), (None, {"localhost", "127.0.0.1"})]
    cases.append(("unknown.test", {"localhost", "127.0.0.1"}))
    for sni, names in cases:
        reader, writer = await tls_open(t, sni, check_hostname=sni == SNI_NAME)
        try:
            assert peer_names(writer) == names, sni
            assert await request_on(reader, writer, "/x") == (200, b"ok\n")
        finally:
            writer.close()


@needs_curl
async def test_sni_with_curl(
    impl: Impl, start_tls: StartTls, origin: Origin, tmp_path: Path
) -> None:
    origin.route("GET", "/x", Reply(200, body="ok\n"))
    t = await start_tls(impl, [f"* 127.0.0.1:{origin.port}"])
    cafile = ca_file(t.ca, tmp_path)
    url = f"https://{SNI_NAME}:{t.https_port}/x"
    resolve = f"{SNI_NAME}:{t.https_port}:127.0.0.1"
    res = await asyncio.to_thread(curl, "--cacert", str(cafile), "--resolve", resolve, url)
    assert res.returncode == 0, res.stderr  # verification passes only with the sni.test cert
    assert res.stdout == "ok\n"


async def test_ssl_route_condition_follows_listener(impl: Impl, start_tls: StartTls) -> None:
    """F7: ``ssl=yes`` matches on the https port only."""
    async with Origin() as tls_origin, Origin() as plain_origin:
        tls_origin.route("GET", "/r", Reply(200, body="tls\n"))
        plain_origin.route("GET", "/r", Reply(200, body="plain\n"))
        plain_origin.route("GET", "/__procs_ready__", Reply(200, body="ready\n"))
        t = await start_tls(
            impl,
            [f"*,ssl=yes 127.0.0.1:{tls_origin.port}", f"* 127.0.0.1:{plain_origin.port}"],
        )
        reader, writer = await tls_open(t)
        try:
            assert await request_on(reader, writer, "/r") == (200, b"tls\n")
        finally:
            writer.close()
        status, _, body = await raw_request(t.server.http_port, get("/r"))
        assert (status, body) == (200, b"plain\n")


async def test_stream_hold_over_tls(impl: Impl, start_tls: StartTls, origin: Origin) -> None:
    """A GRIP stream hold (SSE) on a TLS connection gets its publish (F18–F24 over F3)."""
    origin.route(
        "GET",
        "/s",
        Reply(
            200,
            [
                ("Content-Type", "text/event-stream"),
                ("Grip-Hold", "stream"),
                ("Grip-Channel", "tls-s"),
            ],
            "event: open\ndata:\n\n",
        ),
    )
    t = await start_tls(impl, [f"* 127.0.0.1:{origin.port}"])
    reader, writer = await tls_open(t)
    try:
        writer.write(get("/s"))
        resp = RawResponse(reader, writer)
        await resp.head(10)
        assert resp.status == 200
        await resp.read_body_until(b"event: open\ndata:\n\n", 10)
        await origin.wait_for("/s")
        await asyncio.sleep(1.6 if impl == "pushpin" else 0.3)
        await publish(t.server, [stream_item("tls-s", "data: over tls\n\n")])
        assert await resp.read_body_until(b"data: over tls\n\n", 10)
    finally:
        writer.close()


async def test_bad_handshakes_do_not_disturb_others(
    impl: Impl, start_tls: StartTls, origin: Origin
) -> None:
    """Garbage instead of a ClientHello, a client that says nothing and one that hangs up in
    the middle of a handshake leave an open TLS connection and new ones working."""
    origin.route("GET", "/x", Reply(200, body="ok\n"))
    t = await start_tls(impl, [f"* 127.0.0.1:{origin.port}"])
    reader, writer = await tls_open(t)
    silent = socket.create_connection(("127.0.0.1", t.https_port), timeout=5)
    garbage = socket.create_connection(("127.0.0.1", t.https_port), timeout=5)
    half = socket.create_connection(("127.0.0.1", t.https_port), timeout=5)
    try:
        assert await request_on(reader, writer, "/x") == (200, b"ok\n")
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(2048))
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        half.close()
        await asyncio.sleep(0.3)
        assert await request_on(reader, writer, "/x") == (200, b"ok\n")
        r2, w2 = await tls_open(t)
        try:
            assert await request_on(r2, w2, "/x") == (200, b"ok\n")
        finally:
            w2.close()
        # the garbage connection is answered with an alert or closed, never served
        garbage.settimeout(10)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := garbage.recv(4096):
                data += chunk
        assert b"HTTP/1.1" not in data
    finally:
        writer.close()
        silent.close()
        garbage.close()


async def test_websocket_over_tls(impl: Impl, start_tls: StartTls) -> None:
    """A client WebSocket on the TLS port (wss://) is proxied; the origin's handshake carries
    ``X-Forwarded-Proto: wss`` (F4 with F37)."""
    from websockets.asyncio.client import connect

    from tests.support.wsorigin import WsOrigin

    async with WsOrigin() as o:
        t = await start_tls(impl, [f"* 127.0.0.1:{o.port}"])
        pending = asyncio.ensure_future(
            connect(
                f"wss://localhost:{t.https_port}/chat",
                ssl=client_ctx(t.ca),
                open_timeout=10,
                close_timeout=2,
                ping_interval=None,
            )
        )
        oc = await o.next_conn()
        assert oc.handshake.header_all("X-Forwarded-Proto") == ["wss"]
        oc.accept()
        ws = await asyncio.wait_for(pending, 10)
        try:
            oc.send_text("hello over tls")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello over tls"
            await ws.send("back")
            assert (await oc.recv_message())[1] == b"back"
        finally:
            await ws.close()
            oc.close()


# -- reloading (gripd: Pushpin reloads too, but only when a handshake asks for the name) ---------


async def wait_for_names(t: TlsServer, names: set[str], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    seen: set[str] = set()
    while time.monotonic() < deadline:
        _, w = await tls_open(t, None, check_hostname=False)
        seen = peer_names(w)
        w.close()
        if seen == names:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still served {seen}, not {names}")


async def test_rotation_keeps_open_connections(start_tls: StartTls, origin: Origin) -> None:
    origin.route("GET", "/x", Reply(200, body="ok\n"))
    t = await start_tls(
        "gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"tls_reload_interval": "0.2"}}
    )
    reader, writer = await tls_open(t)
    try:
        assert await request_on(reader, writer, "/x") == (200, b"ok\n")
        write_pair(t.certs, f"default_{t.https_port}", t.ca, "rotated.test", "127.0.0.1")
        await wait_for_names(t, {"rotated.test", "127.0.0.1"})
        # the keep-alive connection from before still works, on its original certificate
        assert await request_on(reader, writer, "/x") == (200, b"ok\n")
        assert peer_names(writer) == {"localhost", "127.0.0.1"}
    finally:
        writer.close()
    assert "tls: certificate default_" in t.server.log_text()


async def test_broken_replacement_is_logged_and_old_kept(
    start_tls: StartTls, origin: Origin
) -> None:
    origin.route("GET", "/x", Reply(200, body="ok\n"))
    t = await start_tls(
        "gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"tls_reload_interval": "0.2"}}
    )
    key = t.certs / f"default_{t.https_port}.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    deadline = time.monotonic() + 15
    while str(key) not in t.server.log_text():
        assert time.monotonic() < deadline, t.server.log_text()
        await asyncio.sleep(0.1)
    assert "keeping the certificate loaded before" in t.server.log_text()
    reader, writer = await tls_open(t)
    try:
        assert peer_names(writer) == {"localhost", "127.0.0.1"}
        assert await request_on(reader, writer, "/x") == (200, b"ok\n")
    finally:
        writer.close()


# -- start errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_missing_certificate_exits_naming_the_file(tmp_path: Path, workers: str) -> None:
    https_port, http_port = free_ports(2)
    conf = base_conf(
        rundir=tmp_path / "run",
        logdir=tmp_path,
        http_port=http_port,
        control_port=free_ports(1)[0],
        pull_port=free_ports(1)[0],
        command_port=free_ports(1)[0],
        sub_port=free_ports(1)[0],
    )
    conf["runner"]["https_ports"] = f"127.0.0.1:{https_port}"
    conf["gripd"] = {"workers": workers}
    path = tmp_path / "pushpin.conf"
    path.write_text(render_conf(conf))
    (tmp_path / "routes").write_text("* test\n")
    (tmp_path / "runner" / "certs").mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    res = subprocess.run(
        [sys.executable, "-m", "gripd", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode != 0
    expected = tmp_path / "runner" / "certs" / f"default_{https_port}.crt"
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("gripd: ")]
    assert len(lines) == 1, res.stderr
    assert str(expected) in lines[0]
    assert "Traceback" not in res.stderr


def test_port_flag_drops_https_and_local(tmp_path: Path) -> None:
    """F1: ``--port`` replaces every client listener, so no certificate is read (there are
    none here) and no Unix socket is made."""
    http_port, https_port, control_port, other = free_ports(4)
    conf = base_conf(
        rundir=tmp_path / "run",
        logdir=tmp_path,
        http_port=other,
        control_port=control_port,
        pull_port=free_ports(1)[0],
        command_port=free_ports(1)[0],
        sub_port=free_ports(1)[0],
    )
    sock_dir = Path(tempfile.mkdtemp(prefix="gp-sock-"))
    sock_path = sock_dir / "p.sock"
    conf["runner"]["https_ports"] = f"127.0.0.1:{https_port}"
    conf["runner"]["local_ports"] = str(sock_path)
    conf["gripd"] = {"workers": "1"}
    path = tmp_path / "pushpin.conf"
    path.write_text(render_conf(conf))
    (tmp_path / "routes").write_text("* test\n")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    log = open(tmp_path / "out.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gripd", "--config", str(path), "--port", f"127.0.0.1:{http_port}"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "out.log").read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{http_port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200  # the test handler (routes "* test")
        assert not sock_path.exists()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", https_port), timeout=2).close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


# -- local_ports ---------------------------------------------------------------------------------


async def unix_request(path: Path, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 10)
    try:
        writer.write(raw)
        resp = RawResponse(reader, writer)
        await resp.head(10)
        return resp.status, resp.headers, await resp.read_to_end(10)
    finally:
        writer.close()


@needs_curl
async def test_unix_socket(impl: Impl, start_tls: StartTls, origin: Origin) -> None:
    """F3 ``local_ports``: plain HTTP over a Unix socket (not TLS: no X-Forwarded-Proto, no
    ``ssl=yes`` route); the client has no address, so X-Forwarded-For gets nothing appended."""
    origin.route("GET", "/u", Reply(200, body="unix\n"))
    t = await start_tls(
        impl,
        [f"* 127.0.0.1:{origin.port}"],
        conf={"proxy": {"x_forwarded_for": "append"}},
    )
    res = await asyncio.to_thread(curl, "--unix-socket", str(t.sock_path), "http://t/u")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "unix\n"
    status, _, body = await unix_request(t.sock_path, get("/u"))
    assert (status, body) == (200, b"unix\n")
    seen = origin.requests_for("/u")[-1]
    assert seen.header("X-Forwarded-Proto") is None
    assert seen.header_all("X-Forwarded-For") == []  # no address to append (as Pushpin)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_unix_socket_with_workers(start_tls: StartTls, origin: Origin, workers: str) -> None:
    """With workers the hub binds the socket once and every worker accepts on it; many
    concurrent connections are all served, and the file is gone after a stop."""
    origin.route("GET", "/u", Reply(200, body="unix\n"))
    t = await start_tls(
        "gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"workers": workers}}
    )
    results = await asyncio.gather(*(unix_request(t.sock_path, get("/u")) for _ in range(40)))
    assert [(r[0], r[2]) for r in results] == [(200, b"unix\n")] * 40
    assert t.sock_path.exists()
    await asyncio.to_thread(t.server.stop)
    assert not t.sock_path.exists()


async def test_unix_socket_stale_file_replaced_live_one_refused(
    start_tls: StartTls, origin: Origin, tmp_path: Path
) -> None:
    """A socket file nobody listens on is replaced (Pushpin removes it too); one a running
    server listens on is not taken over: the second start fails naming local_ports."""
    origin.route("GET", "/u", Reply(200, body="unix\n"))
    sock_dir = Path(tempfile.mkdtemp(prefix="gp-sock-"))
    stale = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # leaves the file, with no listener
    try:
        conf = {"runner": {"local_ports": str(stale)}, "gripd": {"workers": "1"}}
        t = await start_tls("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf)
        status, _, _ = await unix_request(stale, get("/u"))
        assert status == 200
        from tests.support.procs import ServerStartError

        with pytest.raises(ServerStartError) as e:
            await start_tls("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf, timeout=15)
        assert "local_ports" in str(e.value)
        # the first one still serves
        status, _, _ = await unix_request(stale, get("/u"))
        assert status == 200
        del t
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


async def test_unix_socket_served_by_restarted_workers(start_tls: StartTls, origin: Origin) -> None:
    """A restarted worker (a fresh interpreter) is handed the hub's Unix socket too: after both
    original workers are killed, the restarted pair serves it."""
    from tests.support.procs import cmdline, process_tree

    origin.route("GET", "/u", Reply(200, body="unix\n"))
    t = await start_tls("gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"workers": "2"}})
    s = t.server

    def workers() -> list[int]:
        return sorted(p for p in process_tree(s.proc.pid)[1:] if "gripd" in cmdline(p))

    originals = workers()
    assert len(originals) == 2
    for n, victim in enumerate(originals, start=1):
        os.kill(victim, signal.SIGKILL)  # a worker of the server we started
        deadline = time.monotonic() + 20
        while s.log_text().count(" restarted (pid ") < n:
            assert time.monotonic() < deadline, s.log_text()
            await asyncio.sleep(0.1)
    now = workers()
    assert len(now) == 2 and not set(now) & set(originals)
    results = await asyncio.gather(*(unix_request(t.sock_path, get("/u")) for _ in range(20)))
    assert [(r[0], r[2]) for r in results] == [(200, b"unix\n")] * 20
    assert "could not be restarted" not in s.log_text()

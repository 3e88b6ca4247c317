"""The remaining proxy behaviour end to end, against gripd and Pushpin 1.36 alike:
``Pushpin-Check`` (F53), ``accept_pushpin_route`` (F4), the request log line with
``log_from`` / ``log_user_agent`` (F53), ``orig_headers`` (F14), ``Grip-Sig`` signed with
``file:`` EC/RSA private keys (F15) and the global ``debug`` switch (F47).
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import TIME_SCALE, StartFn
from tests.support.origin import Origin, Reply
from tests.support.procs import Impl, Server
from tests.support.rawhttp import raw_request


def req(path: str, extra: str = "", host: str = "t") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def wait_log(s: Server, needle: str, within: float = 5.0) -> str:
    """The first log line containing ``needle`` (waits for it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within * TIME_SCALE
    while True:
        line = next((x for x in s.log_text().splitlines() if needle in x), None)
        if line is not None:
            return line
        if loop.time() > deadline:
            raise AssertionError(f"no log line with {needle!r}:\n{s.log_text()}")
        await asyncio.sleep(0.05)


# --- Pushpin-Check (F53) -----------------------------------------------------------------------


async def test_pushpin_check(impl: Impl, start: StartFn, origin: Origin) -> None:
    """Answered by the proxy itself with its license notice, before routing: the origin is not
    asked and an unroutable host gets it too (the text differs: gripd is another program)."""
    s = await start(impl, [f"a.test 127.0.0.1:{origin.port}"])
    for host in ("a.test", "unrouted.test"):
        status, headers, body = await raw_request(
            s.http_port, req("/x", "Pushpin-Check: 1\r\n", host=host)
        )
        assert status == 200
        assert headers["content-type"] == "text/plain"
        assert headers["content-length"] == str(len(body))
        assert b"License" in body and body.endswith(b"\n")
    assert origin.requests_for("/x") == []


# --- accept_pushpin_route (F4) -----------------------------------------------------------------


async def test_accept_pushpin_route(impl: Impl, start: StartFn, origin: Origin) -> None:
    """``Pushpin-Route: <id>`` picks the route by id (whatever the host) and is stripped; an
    unknown id is "no route"; without the option the header is an ordinary one."""
    origin.route("GET", "/p", Reply(200, body="one\n"))
    async with Origin() as other:
        other.route("GET", "/p", Reply(200, body="two\n"))
        routes = [f"a.test,id=one 127.0.0.1:{origin.port}", f"b.test,id=two 127.0.0.1:{other.port}"]
        on = await start(impl, routes, conf={"proxy": {"accept_pushpin_route": "true"}})
        status, _, body = await raw_request(
            on.http_port, req("/p", "Pushpin-Route: two\r\n", host="a.test")
        )
        assert (status, body) == (200, b"two\n")
        assert other.requests_for("/p")[-1].header("Pushpin-Route") is None
        assert other.requests_for("/p")[-1].header("Host") == "a.test"
        status, _, body = await raw_request(
            on.http_port, req("/p", "Pushpin-Route: nope\r\n", host="a.test")
        )
        assert (status, body) == (502, b"No route for host: a.test\n")
        status, _, body = await raw_request(on.http_port, req("/p", host="a.test"))
        assert (status, body) == (200, b"one\n")

        off = await start(impl, routes)
        status, _, body = await raw_request(
            off.http_port, req("/p", "Pushpin-Route: two\r\n", host="a.test")
        )
        assert (status, body) == (200, b"one\n")
        assert origin.requests_for("/p")[-1].header("Pushpin-Route") == "two"


# --- request log line (F53) --------------------------------------------------------------------


async def test_log_line_options(impl: Impl, start: StartFn, origin: Origin) -> None:
    """Pushpin's logutil format: ``from=`` with ``log_from``, ``ref=`` always, ``route=`` for
    routes with an explicit id, ``ua=`` last with ``log_user_agent``."""
    origin.route("GET", "/p", Reply(200, body="hi\n"))
    origin.route(
        "GET", "/h", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "lg")], "to\n")
    )
    routes = [f"a.test,id=rid 127.0.0.1:{origin.port}", f"b.test 127.0.0.1:{origin.port}"]
    s = await start(impl, routes, conf={"proxy": {"log_from": "true", "log_user_agent": "true"}})
    extra = "Referer: http://r.test/x\r\nUser-Agent: ag/1 (x)\r\n"
    await raw_request(s.http_port, req("/p?q=1", extra, host="a.test"))
    line = await wait_log(s, "GET http://a.test/p?q=1 ")
    assert line.endswith(
        f"GET http://a.test/p?q=1 -> 127.0.0.1:{origin.port} from=127.0.0.1 "
        "ref=http://r.test/x route=rid code=200 3 ua=ag/1 (x)"
    )
    await raw_request(s.http_port, req("/p", host="b.test"))
    line = await wait_log(s, "GET http://b.test/p ")
    assert line.endswith(
        f"GET http://b.test/p -> 127.0.0.1:{origin.port} from=127.0.0.1 code=200 3"
    )
    _, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    try:
        writer.write(req("/h", extra, host="a.test"))
        line = await wait_log(s, "GET http://a.test/h ")
        assert line.endswith(
            f"GET http://a.test/h -> 127.0.0.1:{origin.port} from=127.0.0.1 "
            "ref=http://r.test/x route=rid accept ua=ag/1 (x)"
        )
    finally:
        writer.close()

    plain = await start(impl, routes)
    await raw_request(plain.http_port, req("/p", extra, host="a.test"))
    line = await wait_log(plain, "GET http://a.test/p ")
    assert line.endswith(
        f"GET http://a.test/p -> 127.0.0.1:{origin.port} ref=http://r.test/x route=rid code=200 3"
    )


# --- orig_headers (F14) ------------------------------------------------------------------------

MARK = "eb9bf0f5-"


async def test_orig_headers(impl: Impl, start: StartFn, origin: Origin) -> None:
    """With the route option every client header is also sent marked (``eb9bf0f5-Name``); names
    in ``orig_headers_need_mark`` only when the client sent them marked; without the option,
    marked headers from the client are stripped."""
    origin.route("GET", "/o", Reply(200, body="o\n"))
    routes = [f"a.test,orig_headers 127.0.0.1:{origin.port}", f"b.test 127.0.0.1:{origin.port}"]
    s = await start(impl, routes, conf={"proxy": {"orig_headers_need_mark": "X-Secret"}})
    extra = f"X-A: 1\r\nX-Secret: s\r\n{MARK}X-Pre: p\r\n"
    await raw_request(s.http_port, req("/o", extra, host="a.test"))
    seen = origin.requests_for("/o")[-1]
    assert seen.header("X-A") == "1"
    assert seen.header(MARK + "X-A") == "1"
    assert seen.header(MARK + "Host") == "a.test"
    assert seen.header("X-Secret") == "s"
    assert seen.header(MARK + "X-Secret") is None  # needs the mark from the client
    assert seen.header(MARK + "X-Pre") == "p"  # already marked: kept

    await raw_request(s.http_port, req("/o", f"{MARK}X-Secret: m\r\n", host="a.test"))
    assert origin.requests_for("/o")[-1].header(MARK + "X-Secret") == "m"

    await raw_request(s.http_port, req("/o", extra, host="b.test"))
    seen = origin.requests_for("/o")[-1]
    assert seen.header("X-A") == "1"
    assert not [k for k, _ in seen.headers if k.lower().startswith(MARK)]


# --- Grip-Sig with file: keys (F15) ------------------------------------------------------------


def _write_key(path: Path, kind: str) -> object:
    """Write a PEM private key (PKCS#8) to ``path``; return its public key."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key.public_key()


@pytest.mark.parametrize(("kind", "alg"), [("ec", "ES256"), ("rsa", "RS256")])
async def test_grip_sig_file_keys(
    impl: Impl, start: StartFn, origin: Origin, tmp_path: Path, kind: str, alg: str
) -> None:
    """``sig_key=file:<pem>`` (relative to the config directory) signs Grip-Sig with ES256 for
    an EC key and RS256 for an RSA key; ``iss`` from ``sig_iss``, ``exp`` about an hour."""
    origin.route("GET", "/k", Reply(200, body="k\n"))
    # start() puts the first server's config in tmp_path / f"{impl}-0".
    public = _write_key(tmp_path / f"{impl}-0" / "keys" / "grip.pem", kind)
    s = await start(
        impl,
        [f"* 127.0.0.1:{origin.port}"],
        conf={"proxy": {"sig_key": "file:keys/grip.pem", "sig_iss": "me"}},
    )
    status, _, _ = await raw_request(s.http_port, req("/k"))
    assert status == 200
    token = origin.requests_for("/k")[-1].header("Grip-Sig")
    assert token is not None
    assert jwt.get_unverified_header(token)["alg"] == alg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = jwt.decode(token, public, algorithms=[alg])  # type: ignore[arg-type]
    assert claims["iss"] == "me"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, _write_key(tmp_path / "other.pem", kind), algorithms=[alg])  # type: ignore[arg-type]


# --- debug (F47) -------------------------------------------------------------------------------


async def test_global_debug_error_bodies(impl: Impl, start: StartFn, origin: Origin) -> None:
    """``[proxy] debug=true`` gives every route the detailed error bodies."""
    origin.route("GET", "/bad", Reply(200, [("Grip-Hold", "forever"), ("Grip-Channel", "x")]))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"], conf={"proxy": {"debug": "true"}})
    status, _, body = await raw_request(s.http_port, req("/bad"))
    assert (status, body) == (
        502,
        b"Failed to parse accept instructions: "
        b"Grip-Hold must be set to either 'response' or 'stream'\n",
    )


async def test_subscribe_log_line(impl: Impl, start: StartFn, origin: Origin) -> None:
    """The handler's ``subscribe`` line at the default level, ``retry`` on the F22 update."""
    origin.route(
        "GET", "/h", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "sub")], "to\n")
    )
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    _, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    try:
        writer.write(req("/h?x=1", host="a.test"))
        line = await wait_log(s, "subscribe http://a.test/h?x=1 channel=sub")
        assert line.startswith("[INFO]") and line.endswith("channel=sub")
        await origin.wait_for("/h", 2, 5 * TIME_SCALE)  # the first-subscription update
        await wait_log(s, "subscribe http://a.test/h?x=1 channel=sub retry")
    finally:
        writer.close()

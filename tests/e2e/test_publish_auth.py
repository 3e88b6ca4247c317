"""Authenticated publishing end to end: ``[gripd] publish_key`` / ``publish_iss`` on real gripd
processes, with the publishers people use: ``gripcontrol`` (PyPI) and ``@fanoutio/grip`` (npm),
given only a GRIP URL with ``iss`` and ``key``; raw requests for the exact 401/403 answers; the
command socket's ``args.authorization``; the start-up warning for an open control API. Without
``publish_key`` nothing changes: the differential leg runs against Pushpin 1.36 too.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import gripcontrol
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gripd.runtime.services import _beyond_loopback
from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import command_request, stream_item
from tests.support.procs import Impl, Server, run_gripd_expecting_exit
from tests.support.rawhttp import RawResponse

from .test_workers import STREAMS, conf, open_stream, start_hub, wait_metric

WAIT = 10.0 * TIME_SCALE
SECRET = "publish-secret-for-the-e2e-tests-0123456789"  # PyJWT warns below 32 bytes
RAW_KEY = bytes(range(48))
B64_KEY = "base64:" + base64.b64encode(RAW_KEY).decode()
TEST_ROUTE = ["* test"]  # the built-in target: /stream?channel=X holds a stream


def keyed(workers: str, key: str = SECRET, iss: str = "me", **gripd: str) -> dict[str, Any]:
    """``conf(workers)`` (with Prometheus, to see subscriptions arrive) plus the key."""
    c = conf(workers)
    c["gripd"].update({"publish_key": key, "publish_iss": iss, **gripd})
    return c


async def started(start: StartFn, c: dict[str, Any]) -> Server:
    workers = int(c["gripd"]["workers"])
    if workers > 1:
        return await start_hub(start, TEST_ROUTE, c, workers)
    return await start("gripd", TEST_ROUTE, conf=c)


async def subscribed(s: Server, channel: str, count: int = 1) -> RawResponse:
    stream = await open_stream(s, channel)
    await wait_metric(s, STREAMS, count)
    return stream


def bearer(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256") -> str:
    return "Bearer " + jwt.encode(claims, key, algorithm=alg)


def fresh(iss: str = "me", ttl: int = 300) -> dict[str, Any]:
    return {"iss": iss, "exp": int(time.time()) + ttl}


async def control(
    s: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One raw request to the control API; the whole answer, as sent."""
    lines = [f"{method} {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", s.control_port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await asyncio.wait_for(reader.read(), WAIT)  # the API closes after answering
    finally:
        writer.close()


def answer(code: int, reason: str, message: str, www: bool = False) -> bytes:
    """The control API's text answer (the auth refusals are written like its other errors)."""
    body = (message + "\n").encode()
    extra = "WWW-Authenticate: Bearer\r\n" if www else ""
    return (
        f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: text/plain\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def grip_publisher(s: Server, query: str = "") -> gripcontrol.GripPubControl:
    """A publisher configured from a GRIP URL only, as applications are."""
    url = f"{s.control_url()}/{'?' + query if query else ''}"
    return gripcontrol.GripPubControl(gripcontrol.parse_grip_uri(url))


async def gc_publish(pub: gripcontrol.GripPubControl, channel: str, content: str) -> None:
    await asyncio.to_thread(pub.publish_http_stream, channel, content, blocking=True)


async def gc_refused(pub: gripcontrol.GripPubControl, code: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        await gc_publish(pub, "auth", "refused\n")
    assert f"status code {code} with message: {message}\n" in str(info.value)


def assert_no_token_logged(s: Server, secrets: list[str]) -> None:
    text = s.log_text()
    assert "eyJ" not in text  # no base64url JSON (a JWT's header starts with it)
    for secret in secrets:
        assert secret not in text


# -- gripcontrol ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "workers,key,url_key",
    [("1", SECRET, SECRET), ("2", B64_KEY, B64_KEY)],
    ids=["workers1-secret", "workers2-base64"],
)
async def test_gripcontrol_grip_url_with_iss_and_key(
    start: StartFn, workers: str, key: str, url_key: str
) -> None:
    s = await started(start, keyed(workers, key))
    stream = await subscribed(s, "auth")
    try:
        await gc_publish(grip_publisher(s, f"iss=me&key={url_key}"), "auth", "one\n")
        await gc_refused(grip_publisher(s), 401, "Missing Authorization header.")
        wrong_key = "another-secret-of-the-same-length-0123456789"
        await gc_refused(
            grip_publisher(s, f"iss=me&key={wrong_key}"), 403, "Invalid token: bad signature."
        )
        await gc_refused(
            grip_publisher(s, f"iss=you&key={url_key}"), 403, "Invalid token: wrong 'iss'."
        )
        # key without iss: pubcontrol sends the key itself as the bearer token, not a JWT
        await gc_refused(grip_publisher(s, f"key={SECRET}"), 401, "Invalid token: not a JWT.")
        await gc_publish(grip_publisher(s, f"iss=me&key={url_key}"), "auth", "two\n")
        body = await stream.read_body_until(b"two\n", WAIT)
        assert body == b"one\ntwo\n"  # nothing refused got through
    finally:
        stream.close()
    log = s.log_text()
    assert "code=401 refused: Missing Authorization header. peer 127.0.0.1" in log
    assert "code=403 refused: Invalid token: bad signature. peer 127.0.0.1" in log
    assert "code=403 refused: Invalid token: wrong 'iss'. peer 127.0.0.1" in log
    assert_no_token_logged(s, [SECRET, base64.b64encode(RAW_KEY).decode()])
    assert "publish_key" not in log  # bound to loopback: no warning


# -- raw requests: the exact answers -------------------------------------------------------------


async def test_raw_requests_get_401_and_403(start: StartFn) -> None:
    s = await started(start, keyed("1", history_size="5"))
    good = bearer(fresh())
    publish = json.dumps({"items": [stream_item("raw", "x\n", id="1")]}).encode()

    async def publish_with(value: str | None) -> bytes:
        headers = {"Content-Type": "application/json"}
        if value is not None:
            headers["Authorization"] = value
        return await control(s, "POST", "/publish/", publish, headers)

    assert await publish_with(None) == answer(
        401, "Unauthorized", "Missing Authorization header.", www=True
    )
    invalid = "Invalid Authorization header: expected 'Bearer <token>'."
    assert await publish_with("Basic dXNlcjpwYXNz") == answer(401, "Unauthorized", invalid, True)
    assert await publish_with("Bearer not-a-jwt") == answer(
        401, "Unauthorized", "Invalid token: not a JWT.", www=True
    )
    expired = bearer({"iss": "me", "exp": int(time.time()) - 5})
    assert await publish_with(expired) == answer(403, "Forbidden", "Invalid token: expired.")
    no_exp = bearer({"iss": "me"})
    assert await publish_with(no_exp) == answer(403, "Forbidden", "Invalid token: no 'exp' claim.")
    wrong_iss = bearer(fresh("you"))
    assert await publish_with(wrong_iss) == answer(403, "Forbidden", "Invalid token: wrong 'iss'.")
    bad_sig = bearer(fresh(), "a-different-secret-of-enough-length-012345")
    assert await publish_with(bad_sig) == answer(403, "Forbidden", "Invalid token: bad signature.")
    head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(json.dumps(fresh()).encode()).rstrip(b"=").decode()
    none_alg = f"Bearer {head}.{claims}."
    assert await publish_with(none_alg) == answer(
        403, "Forbidden", "Invalid token: algorithm 'none' is not accepted."
    )
    ok = await publish_with(good)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nPublished\n")

    # every endpoint: /recover and the history read too; "/" (a liveness probe) stays open
    missing = answer(401, "Unauthorized", "Missing Authorization header.", www=True)
    assert await control(s, "POST", "/recover/") == missing
    assert (await control(s, "POST", "/recover/", headers={"Authorization": good})).endswith(
        b"\r\n\r\nUpdated\n"
    )
    read = {"Accept": "application/json"}
    assert await control(s, "GET", "/channels/raw/items", headers=read) == missing
    items = await control(s, "GET", "/channels/raw/items", headers={**read, "Authorization": good})
    assert items.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(items.partition(b"\r\n\r\n")[2])["last-id"] == "1"
    assert await control(s, "GET", "/nowhere") == missing  # unknown paths reveal nothing
    root = await control(s, "GET", "/")
    assert root.startswith(b"HTTP/1.1 200 OK\r\n") and root.endswith(b"Pushpin API\n")

    log = s.log_text()
    assert "control: POST /publish/ code=403 refused: Invalid token: expired. peer 127.0.0.1" in log
    assert "control: GET /channels/raw/items code=401 refused: Missing Authorization" in log
    assert_no_token_logged(s, [SECRET])


async def test_es256_and_rs256_public_keys(start: StartFn, tmp_path: Path) -> None:
    """``file:`` keys: the publisher signs with its private key, gripd holds the public one."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for name, priv in (("ec", ec_key), ("rsa", rsa_key)):
        pem = priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (tmp_path / f"{name}.pem").write_bytes(pem)
    s = await started(start, keyed("1", f"file:{tmp_path / 'ec.pem'}", iss=""))
    items = json.dumps({"items": [stream_item("k", "x\n")]}).encode()
    ok = await control(
        s, "POST", "/publish/", items, {"Authorization": bearer(fresh(), ec_key, "ES256")}
    )
    assert ok.endswith(b"\r\n\r\nPublished\n")
    hs = await control(s, "POST", "/publish/", items, {"Authorization": bearer(fresh())})
    assert hs == answer(403, "Forbidden", "Invalid token: algorithm 'HS256' is not accepted.")
    other = ec.generate_private_key(ec.SECP256R1())
    forged = await control(
        s, "POST", "/publish/", items, {"Authorization": bearer(fresh(), other, "ES256")}
    )
    assert forged == answer(403, "Forbidden", "Invalid token: bad signature.")

    r = await started(start, keyed("1", f"file:{tmp_path / 'rsa.pem'}", iss="me"))
    ok = await control(
        r, "POST", "/publish/", items, {"Authorization": bearer(fresh(), rsa_key, "RS256")}
    )
    assert ok.endswith(b"\r\n\r\nPublished\n")


# -- the command socket --------------------------------------------------------------------------


async def command(s: Server, req: dict[bytes, Any]) -> Any:
    return await command_request(s.command_port, req, WAIT)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_command_socket_needs_args_authorization(start: StartFn, workers: str) -> None:
    s = await started(start, keyed(workers))
    stream = await subscribed(s, "cmd")
    item = {b"channel": b"cmd", b"formats": {b"http-stream": {b"content": b"via command\n"}}}
    try:
        no_token = await command(
            s, {b"id": b"1", b"method": b"publish", b"args": {b"items": [item]}}
        )
        assert no_token == {
            b"id": b"1",
            b"success": False,
            b"condition": b"unauthorized",
            b"value": b"Missing Authorization header.",
        }
        expired = bearer({"iss": "me", "exp": int(time.time()) - 1}).encode()
        args = {b"items": [item], b"authorization": expired}
        assert await command(s, {b"id": b"2", b"method": b"publish", b"args": args}) == {
            b"id": b"2",
            b"success": False,
            b"condition": b"forbidden",
            b"value": b"Invalid token: expired.",
        }
        # every method needs it, even a read
        assert (await command(s, {b"method": b"get-zmq-uris"}))[b"condition"] == b"unauthorized"
        good = bearer(fresh()).encode()
        uris = await command(s, {b"method": b"get-zmq-uris", b"args": {b"authorization": good}})
        assert uris[b"success"] is True
        args = {b"items": [item], b"authorization": good}
        ok = await command(s, {b"id": b"3", b"method": b"publish", b"args": args})
        assert ok == {b"id": b"3", b"success": True, b"value": None}
        body = await stream.read_body_until(b"via command\n", WAIT)
        assert body == b"via command\n"  # the refused publish never arrived
    finally:
        stream.close()
    log = s.log_text()
    assert (
        "command: publish refused (unauthorized): Missing Authorization header. peer 127.0.0.1"
        in log
    )
    assert "command: publish refused (forbidden): Invalid token: expired. peer 127.0.0.1" in log
    assert_no_token_logged(s, [SECRET])


# -- without publish_key: nothing changes (differential with Pushpin) ----------------------------


async def test_without_key_tokens_are_ignored(impl: Impl, start: StartFn) -> None:
    s = await start(impl, TEST_ROUTE)
    items = json.dumps({"items": [stream_item("free", "x\n")]}).encode()
    answers = [
        await control(s, "POST", "/publish/", items, headers)
        for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": bearer(fresh())})
    ]
    assert all(a.endswith(b"\r\n\r\nPublished\n") for a in answers)
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
    # a publisher with iss and key in its GRIP URL still works
    await gc_publish(grip_publisher(s, f"iss=me&key={SECRET}"), "free", "y\n")
    args = {b"authorization": b"Bearer garbage"}
    uris = await command(s, {b"method": b"get-zmq-uris", b"args": args})
    assert uris[b"success"] is True
    if impl == "gripd":
        assert "publish_key" not in s.log_text()  # loopback only: no warning


# -- the start-up warning and bad keys ------------------------------------------------------------


class _Sock:
    def __init__(self, name: object) -> None:
        self.name = name

    def getsockname(self) -> object:
        return self.name


class _Server:
    def __init__(self, *names: object) -> None:
        self.sockets = [_Sock(n) for n in names]


def test_which_control_api_addresses_are_beyond_loopback() -> None:
    """The start-up warning's test (``push_in_http_addr`` such as ``0.0.0.0`` with no key):
    checked on the listening sockets' names, without opening a port beyond loopback here."""
    far = [("0.0.0.0", 5561), ("192.0.2.7", 5561), ("::", 5561, 0, 0)]
    near = [
        ("127.0.0.1", 5561),
        ("::1", 5561, 0, 0),
        ("127.3.4.5", 1),
        ("::ffff:127.0.0.1", 1, 0, 0),
    ]
    for name in far:
        assert _beyond_loopback(_Server(name))  # type: ignore[arg-type]
    for name in near:
        assert not _beyond_loopback(_Server(name))  # type: ignore[arg-type]
    assert _beyond_loopback(_Server(("127.0.0.1", 1), ("0.0.0.0", 1)))  # type: ignore[arg-type]


async def test_no_warning_on_loopback(start: StartFn) -> None:
    """The default (loopback) control API logs no such warning, with or without a key."""
    s = await start("gripd", TEST_ROUTE, conf={"gripd": {"workers": "1"}})
    await asyncio.to_thread(s.stop)
    assert f"control API on 127.0.0.1:{s.control_port}" in s.log_text()
    assert "reachable from other machines" not in s.log_text()


@pytest.mark.parametrize(
    "value,message",
    [
        ("file:missing.pem", "[gripd] publish_key: cannot read key file"),
        ("file:garbage.pem", "[gripd] publish_key: key file"),
        ("base64:***", "[gripd] publish_key: invalid base64 key"),
    ],
)
def test_bad_publish_key_is_a_config_error(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "garbage.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n")
    res, text, path = run_gripd_expecting_exit(tmp_path, {"workers": "1", "publish_key": value})
    line = text.splitlines().index(f"publish_key={value}") + 1
    assert res.returncode == 1
    assert f"gripd: {path}:{line}: {message}" in res.stderr
    assert "***" not in res.stderr


# -- @fanoutio/grip (npm) ------------------------------------------------------------------------

GRIP_NPM = "@fanoutio/grip@4"
_PUBLISH_JS = """\
import { Publisher } from '@fanoutio/grip';
const [config, channel, content] = [JSON.parse(process.argv[2]), process.argv[3], process.argv[4]];
try {
  await new Publisher(config).publishHttpStream(channel, content);
  console.log('ok');
} catch (e) {
  console.log(`error ${e.context?.statusCode} ${e.context?.httpBody ?? e.message}`);
}
"""


def npm_grip(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A directory with ``@fanoutio/grip`` installed and ``publish.mjs`` next to it, cached in
    pytest's cache directory (.pytest_cache, not versioned). Skips when node or npm is missing
    or npm cannot install it (offline), except with ``CI=true``, where that fails."""
    ci = os.environ.get("CI", "").lower() == "true"

    def unavailable(why: str) -> None:
        if ci:
            pytest.fail(why)
        pytest.skip(why)

    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        unavailable("node and npm are needed for the @fanoutio/grip test")
    assert npm is not None
    cache = getattr(request.config, "cache", None)
    base = cache.mkdir("npm-fanoutio-grip") if cache is not None else tmp_path / "npm"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes install it once
        if not (base / "node_modules" / "@fanoutio" / "grip" / "package.json").exists():
            try:
                res = subprocess.run(
                    [npm, "install", "--no-audit", "--no-fund", "--prefix", str(base), GRIP_NPM],
                    capture_output=True,
                    text=True,
                    timeout=150,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                unavailable(f"npm install {GRIP_NPM} timed out")
            else:
                if res.returncode != 0:
                    unavailable(f"npm install {GRIP_NPM} failed: {res.stderr[-800:]}")
        script = base / "publish.mjs"
        if not script.exists() or script.read_text() != _PUBLISH_JS:
            script.write_text(_PUBLISH_JS)
    return base


async def js_publish(base: Path, config: str | dict[str, str], channel: str, content: str) -> str:
    res = await asyncio.to_thread(
        subprocess.run,
        ["node", str(base / "publish.mjs"), json.dumps(config), channel, content],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.timeout(200)
async def test_fanoutio_grip_publishes_with_key(
    start: StartFn, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    base = await asyncio.to_thread(npm_grip, request, tmp_path)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    # HS256 from a GRIP URL (base64: key), as the library's users configure it
    s = await started(start, keyed("2", B64_KEY))
    stream = await subscribed(s, "js")
    try:
        url = f"{s.control_url()}/?iss=me&key={B64_KEY}"
        assert await js_publish(base, url, "js", "from node\n") == "ok"
        refused = await js_publish(base, s.control_url() + "/", "js", "refused\n")
        assert refused == "error 401 Missing Authorization header."
        wrong = await js_publish(base, f"{s.control_url()}/?iss=other&key={B64_KEY}", "js", "no\n")
        assert wrong == "error 403 Invalid token: wrong 'iss'."
        assert await js_publish(base, url, "js", "again\n") == "ok"
        body = await stream.read_body_until(b"again\n", WAIT)
        assert body == b"from node\nagain\n"
    finally:
        stream.close()

    # RS256: the publisher holds the private key, gripd the public one (file:)
    r = await started(start, keyed("1", f"file:{tmp_path / 'rsa.pem'}"))
    stream = await subscribed(r, "rs")
    try:
        config = {"control_uri": r.control_url() + "/", "control_iss": "me", "key": private_pem}
        assert await js_publish(base, config, "rs", "signed with RS256\n") == "ok"
        body = await stream.read_body_until(b"RS256\n", WAIT)
        assert body == b"signed with RS256\n"
    finally:
        stream.close()
    assert_no_token_logged(s, [])
    assert_no_token_logged(r, [])

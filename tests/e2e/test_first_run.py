"""What a newcomer sees on a first run: which configuration is in use, warnings for config lines
that are dropped, ``-v``, and the log lines a WebSocket leaves.

Differential (gripd and Pushpin 1.36) for the WebSocket lines, Pushpin's shape:
``GET ws://host/path -> target code=101 0`` and ``subscribe ws://host/path channel=c``;
gripd-only for the configuration lines (Pushpin logs neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gripd import __version__, build, cli
from tests.conftest import TIME_SCALE, StartFn
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import REPO_ROOT, Impl, Server, base_conf, free_ports, render_conf

WAIT = 5.0 * TIME_SCALE
WOH = "application/websocket-events"


# --- helpers ------------------------------------------------------------------------------------


def log_of(source: Server | Path) -> str:
    if isinstance(source, Server):
        return source.log_text()
    try:
        return source.read_text(errors="replace")
    except OSError:
        return ""


async def wait_log(source: Server | Path, needles: list[str], within: float = WAIT) -> str:
    """The log once every needle is in it; fails naming the missing ones after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        text = await asyncio.to_thread(log_of, source)
        missing = [n for n in needles if n not in text]
        if not missing:
            return text
        if loop.time() > deadline:
            raise AssertionError(f"not in the log: {missing}\nlog:\n{text}")
        await asyncio.sleep(0.05)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), e.get("PYTHONPATH")]))
    e["PYTHONUNBUFFERED"] = "1"
    return e


@contextlib.contextmanager
def gripd_proc(args: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m gripd ARGS`` in its own session, stopped (SIGTERM, then SIGKILL of the group
    this started) on leaving."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gripd", *args],
            cwd=cwd,
            env=env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def http_get(port: int, path: str = "/") -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except OSError:
        return None


async def wait_http(proc: subprocess.Popen[bytes], port: int, log: Path) -> bytes:
    """The body of ``GET /`` on ``port`` once it answers 200 (the process must stay up)."""
    deadline = time.monotonic() + 15 * TIME_SCALE
    while True:
        assert proc.poll() is None, log_of(log)
        got = await asyncio.to_thread(http_get, port)
        if got is not None and got[0] == 200:
            return got[1]
        assert time.monotonic() < deadline, f"port {port} not answering; log:\n{log_of(log)}"
        await asyncio.sleep(0.05)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- WebSocket log lines (differential) ---------------------------------------------------------


async def test_ws_test_target_leaves_connection_and_subscribe_lines(
    impl: Impl, start: StartFn
) -> None:
    s = await start(impl, ["* test"])
    base = f"ws://127.0.0.1:{s.http_port}"
    async with connect(f"{base}/ws", open_timeout=WAIT, ping_interval=None) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hi"
        with pytest.raises(InvalidStatus) as ei:
            await connect(f"{base}/nothere", open_timeout=WAIT)
        assert ei.value.response.status_code == 404
        await wait_log(
            s,
            [
                f"GET {base}/ws -> test code=101 0",
                f"subscribe {base}/ws channel=test",
                f"GET {base}/nothere -> test code=404 22",
            ],
        )


def woh_body(events: list[tuple[str, bytes | None]]) -> bytes:
    out = b""
    for name, content in events:
        if content is None:
            out += name.encode() + b"\r\n"
        else:
            out += f"{name} {len(content):x}\r\n".encode() + content + b"\r\n"
    return out


async def test_woh_grip_subscribe_and_refusal_lines(impl: Impl, start: StartFn) -> None:
    """A WebSocket-over-HTTP origin subscribes its client with ``c:``; another path refuses the
    handshake. The target gets Pushpin's ``[http]`` mark."""
    sub = b"c:" + json.dumps({"type": "subscribe", "channel": "wx"}).encode()

    def answer(req: RecordedRequest) -> Reply:
        if req.body.startswith(b"OPEN\r\n"):
            events = woh_body([("OPEN", None), ("TEXT", sub), ("TEXT", b"m:welcome")])
            return Reply(200, [("Content-Type", WOH), ("Sec-WebSocket-Extensions", "grip")], events)
        return Reply(200, [("Content-Type", WOH)], b"")

    async with Origin() as o:
        o.route("POST", "/g", answer)
        o.route("POST", "/no", lambda req: Reply(403, [("Content-Type", "text/plain")], b"nope\n"))
        s = await start(impl, [f"* 127.0.0.1:{o.port},over_http"])
        base = f"ws://127.0.0.1:{s.http_port}"
        async with connect(f"{base}/g", open_timeout=WAIT, ping_interval=None) as ws:
            assert await asyncio.wait_for(ws.recv(), WAIT) == "welcome"
            with pytest.raises(InvalidStatus) as ei:
                await connect(f"{base}/no", open_timeout=WAIT)
            assert ei.value.response.status_code == 403
            await wait_log(
                s,
                [
                    f"GET {base}/g -> 127.0.0.1:{o.port}[http] code=101 0",
                    f"subscribe {base}/g channel=wx",
                    f"GET {base}/no -> 127.0.0.1:{o.port}[http] code=403 5",
                ],
            )


# --- configuration in use -----------------------------------------------------------------------


async def test_config_file_in_use_is_logged(start: StartFn) -> None:
    s = await start("gripd", ["* test"])
    text = await wait_log(s, [f"using configuration file {s.conf_path}"])
    assert "embedded default" not in text
    # A clean file: no warning names a line of it.
    assert not [ln for ln in text.splitlines() if f"{s.conf_path}:" in ln], text


async def test_dropped_config_lines_are_warned_with_file_and_line(tmp_path: Path) -> None:
    """``[proxy`` (no ``]``) is still the proxy section, as in Pushpin: its routes file is used;
    the stray line is dropped. Both are logged with ``file:line``."""
    http, control, pull, command, sub = free_ports(5)
    conf = base_conf(
        rundir=tmp_path / "run",
        logdir=tmp_path,
        http_port=http,
        control_port=control,
        pull_port=pull,
        command_port=command,
        sub_port=sub,
    )
    conf["gripd"] = {"workers": "1"}
    text = render_conf(conf).replace("[proxy]", "[proxy", 1) + "\nthis line has no equals sign\n"
    path = tmp_path / "pushpin.conf"
    path.write_text(text)
    (tmp_path / "routes").write_text("* test\n")
    lines = text.split("\n")
    header = lines.index("[proxy") + 1
    stray = lines.index("this line has no equals sign") + 1
    log = tmp_path / "gripd.log"
    with gripd_proc(["--config", str(path)], tmp_path, log) as proc:
        assert await wait_http(proc, http, log) == b"Hello from the Pushpin test handler!\n"
        await wait_log(
            log,
            [
                "[WARN] ",
                f"{path}:{header}: '[proxy' has no closing ']': read as [proxy]",
                f"{path}:{stray}: 'this line has no equals sign' is neither key=value nor "
                "[section]: ignored",
            ],
        )


def test_default_config_flag_skips_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pushpin.conf").write_text("[proxy]\nsig_iss=found\n")
    found = cli.load(cli.build_parser().parse_args([]))
    assert found.config_path == str(tmp_path / "pushpin.conf") and found.sig_iss == "found"
    embedded = cli.load(cli.build_parser().parse_args(["--default-config"]))
    assert embedded.config_path is None and embedded.routesfile is None
    assert embedded.sig_iss == "pushpin"


def test_config_and_default_config_exclude_each_other(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "gripd", "--config", "x.conf", "--default-config"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=15 * TIME_SCALE,
    )
    assert res.returncode == 2
    assert "not allowed with argument" in res.stderr


async def test_default_config_runs_where_a_broken_file_is_found(tmp_path: Path) -> None:
    """The search finds ``./pushpin.conf`` (here unusable: gripd refuses it); with
    ``--default-config`` gripd ignores it, says so, and serves the ``* test`` route."""
    (tmp_path / "pushpin.conf").write_text("[runner]\nhttp_port=not-a-port\n")
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gripd"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=15 * TIME_SCALE,
    )
    assert res.returncode == 1
    assert f"{tmp_path / 'pushpin.conf'}:2:" in res.stderr

    # --id moves the control API (5561) and the ZeroMQ ports (5560, 5562, 5563) by id*10.
    ids = [
        i
        for i in random.sample(range(500, 5000), 50)
        if all(port_free(5560 + i * 10 + k) for k in range(4))
    ]
    if not ids:
        pytest.skip("no free block of control ports for --id")
    ident = ids[0]
    (http,) = free_ports(1)
    log = tmp_path / "gripd.log"
    args = ["--default-config", "--id", str(ident), "--port", f"127.0.0.1:{http}"]
    with gripd_proc(args, tmp_path, log) as proc:
        assert await wait_http(proc, http, log) == b"Hello from the Pushpin test handler!\n"
        assert await wait_http(proc, 5561 + ident * 10, log) == b"Pushpin API\n"
        text = await wait_log(log, ["using the embedded default configuration (--default-config)"])
        assert "using configuration file" not in text


# --- -v / --version -----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-v", "--version"])
def test_version_flags(tmp_path: Path, flag: str) -> None:
    """Pushpin's runner has ``-v, --version`` (``pushpin -v``: ``pushpin 1.36.0``), and so
    does gripd."""
    res = subprocess.run(
        [sys.executable, "-m", "gripd", flag],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=15 * TIME_SCALE,
    )
    assert res.returncode == 0, res.stderr
    # As Pushpin's, then which build runs (pure Python, or compiled).
    assert res.stdout.strip() == f"gripd {__version__} ({build.describe()})"
    pushpin = shutil.which("pushpin")
    if pushpin is not None:  # the short flag means the same there
        out = subprocess.run([pushpin, flag], capture_output=True, text=True, timeout=15)
        assert out.returncode == 0 and out.stdout.startswith("pushpin ")

"""gripd's command line, configuration loading and live routes reload, end to end (F1, F6, F50,
F53), with real processes on 127.0.0.1.

Differential over ``impl`` (gripd and Pushpin 1.36) where Pushpin behaves comparably: ``--route``,
a missing ``--config``, bad routes lines, routes reload on change and on SIGHUP, ``--logfile``,
log levels and the access log line. gripd-only: the embedded default, ``--id``, ``--port``,
refused config values (Pushpin silently reads them as 0/true), SIGTERM, ``--help``/``--version``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gripd import __version__, cli
from gripd.core.config import DEFAULT_PUSHPIN_CONF, Config, Listen
from tests.conftest import TIME_SCALE, StartFn
from tests.support.origin import Origin, Reply
from tests.support.procs import (
    REPO_ROOT,
    Impl,
    Server,
    base_conf,
    free_ports,
    merge_conf,
    process_tree,
    publish_http,
    render_conf,
)
from tests.support.rawhttp import RawResponse, open_request, raw_request

TEST_HELLO = b"Hello from the Pushpin test handler!\n"
BAD_ROUTE_WARNING = "must specify condition and at least one target"

# Runs gripd with the config search forced to find nothing, so the embedded default is used even
# where /etc/pushpin/pushpin.conf exists (F1: Pushpin would exit there; gripd runs its default).
EMBEDDED_WRAPPER = (
    "import sys, gripd.cli as c\n"
    "c.find_config_file = lambda *a: None\n"
    "sys.exit(c.main(sys.argv[1:]))\n"
)


# --- helpers ------------------------------------------------------------------------------------


def get(path: str, host: str = "t") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_gripd(
    args: list[str], cwd: Path, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gripd ARGS`` to completion (bounded), capturing output."""
    return subprocess.run(
        [sys.executable, "-m", "gripd", *args],
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout * TIME_SCALE,
    )


def run_impl(impl: Impl, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run gripd or the ``pushpin`` runner with ``args`` to completion (bounded)."""
    if impl == "gripd":
        return run_gripd(args, cwd)
    return subprocess.run(
        ["pushpin", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=15 * TIME_SCALE,
    )


def spawn(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, stdout+stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_pid(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the process we started (by PID), bounded wait, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return None
    return proc.returncode


async def wait_until(
    cond: Callable[[], object], within: float, what: str, step: float = 0.05
) -> None:
    """Poll ``cond`` until truthy, at most ``within`` (scaled) seconds."""
    deadline = time.monotonic() + within * TIME_SCALE
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


async def body_of(port: int, path: str = "/", host: str = "t") -> bytes | None:
    """The body of ``GET path`` through the proxy, or None if nothing answered."""
    try:
        return (await raw_request(port, get(path, host), timeout=5))[2]
    except (OSError, TimeoutError, ConnectionError):
        return None


async def wait_body(
    port: int, want: bytes, within: float, path: str = "/", host: str = "t"
) -> None:
    """Poll ``GET path`` until its body is ``want`` (scaled bound)."""
    deadline = time.monotonic() + within * TIME_SCALE
    last: bytes | None = None
    while time.monotonic() < deadline:
        last = await body_of(port, path, host)
        if last == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"GET {path}: wanted {want!r}, last got {last!r}")


async def publish(port: int, items: list[dict[str, object]]) -> None:
    assert await asyncio.to_thread(publish_http, port, items) == (200, "Published\n")


def stream_item(channel: str, content: str) -> dict[str, object]:
    return {"channel": channel, "formats": {"http-stream": {"content": content}}}


async def settle(s: Server) -> None:
    """Pushpin re-requests the origin ~1 s after a channel's first subscription (F22)."""
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.2) * TIME_SCALE)


def listening_ports(pid: int) -> set[int]:
    """TCP ports ``pid`` and its children (the workers) listen on (their socket inodes matched
    against /proc/net/tcp{,6})."""
    inodes: set[str] = set()
    for p in process_tree(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def line_of(text: str, section: str, key: str) -> int:
    """1-based line of ``key=`` inside ``[section]`` of an INI text."""
    current = ""
    for n, line in enumerate(text.split("\n"), start=1):
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            return n
    raise KeyError((section, key))


def write_conf(workdir: Path, overrides: dict[str, dict[str, str]] | None = None) -> Path:
    """A complete loopback pushpin.conf (procs.base_conf) plus ``routes`` in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "run").mkdir(exist_ok=True)
    http, control, pull, command, sub = free_ports(5)
    conf = base_conf(
        rundir=workdir / "run",
        logdir=workdir,
        http_port=http,
        control_port=control,
        pull_port=pull,
        command_port=command,
        sub_port=sub,
    )
    path = workdir / "pushpin.conf"
    path.write_text(render_conf(merge_conf(conf, overrides)))
    (workdir / "routes").write_text("* test\n")
    return path


@pytest.fixture
async def procs() -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts itself; each is stopped by PID afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        await asyncio.to_thread(stop_pid, p)


# --- 1. embedded default and --id (F1, F50) -----------------------------------------------------


@pytest.mark.parametrize("source", ["file", "embedded"])
@pytest.mark.parametrize(("ident", "prefix", "offset"), [(7, "p7-", 70), (0, "p0-", 0)])
def test_id_sets_ipc_prefix_and_port_offset(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    ident: int,
    prefix: str,
    offset: int,
) -> None:
    """F1: ``--id n`` means ipc prefix ``pn-`` and offset ``n*10`` on every ``tcp://`` spec port
    and ``push_in_http_port``, but not on the client listeners."""
    monkeypatch.chdir(tmp_path)
    args = ["--id", str(ident)]
    if source == "file":
        (tmp_path / "pushpin.conf").write_text(DEFAULT_PUSHPIN_CONF)
        args += ["--config", str(tmp_path / "pushpin.conf")]
    else:
        monkeypatch.setattr(cli, "find_config_file", lambda *a: None)
    cfg: Config = cli.load(cli.build_parser().parse_args(args))
    assert cfg.ipc_prefix == prefix
    assert cfg.port_offset == offset
    assert cfg.push_in_http_port == 5561 + offset
    assert cfg.push_in_http_addr == "127.0.0.1"
    assert cfg.push_in_spec == f"tcp://127.0.0.1:{5560 + offset}"
    assert cfg.push_in_sub_specs == [f"tcp://127.0.0.1:{5562 + offset}"]
    assert cfg.command_spec == f"tcp://127.0.0.1:{5563 + offset}"
    assert cfg.stats_spec == f"ipc:///var/run/pushpin/{prefix}stats"
    assert cfg.extra["proxy"]["handler_accept_spec"] == f"ipc:///var/run/pushpin/{prefix}accept"
    assert cfg.http_port == [Listen("0.0.0.0", 7999)]  # client listeners are not shifted
    if source == "embedded":
        assert cfg.routesfile is None  # the shipped `* test` route
        assert cfg.message_rate == 2500 and cfg.sig_key == "changeme"  # shipped values


@pytest.mark.parametrize("source", ["search", "embedded"])
async def test_default_config_with_id(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], source: str
) -> None:
    """F1/F50: no ``--config`` in an empty directory. ``search`` finds /etc/pushpin/pushpin.conf
    where Pushpin is installed (else gripd's embedded default); ``embedded`` forces the embedded
    default. Either way: the ``* test`` route, and the control API on 127.0.0.1:5561+70."""
    control = 5561 + 70
    if not port_free(control):
        pytest.skip(f"127.0.0.1:{control} is in use by another process")
    (http,) = free_ports(1)
    args = ["--id", "7", "--port", f"127.0.0.1:{http}"]
    cmd = [sys.executable, "-m", "gripd", *args]
    if source == "embedded":
        cmd = [sys.executable, "-c", EMBEDDED_WRAPPER, *args]
    log = tmp_path / "out.log"
    proc = spawn(cmd, tmp_path, log)
    procs.append(proc)

    async def ready() -> bool:
        return await body_of(http) == TEST_HELLO and await body_of(control) == b"Pushpin API\n"

    deadline = time.monotonic() + 15 * TIME_SCALE
    while not await ready():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"not ready; log:\n{log.read_text()}"
        await asyncio.sleep(0.05)

    # 7999 replaced; the control API (5561), ZeroMQ PULL (5560), SUB (5562) and command (5563)
    # sockets all shifted by --id 7 (port offset 70, F1).
    assert listening_ports(proc.pid) == {http, control, 5630, 5632, 5633}
    if source == "embedded":
        assert "using the embedded default" in log.read_text()
    stream = await open_request(http, get("/stream"))  # channel defaults to `test` (F50)
    try:
        assert await stream.read_body_until(b"[stream opened]\n") == b"[stream opened]\n"
        await asyncio.sleep(0.2 * TIME_SCALE)
        await publish(control, [stream_item("test", "via 5631\n")])
        assert await stream.read_body_until(b"via 5631\n") == b"via 5631\n"
    finally:
        stream.close()
    assert await asyncio.to_thread(stop_pid, proc) == 0


# --- 2. --route and --port (F1) -----------------------------------------------------------------


async def test_route_flags_replace_routes_file(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F1: repeated ``--route`` lines replace the routes file entirely."""
    origin.route("GET", "/", Reply(200, body="origin\n"))
    s = await start(
        impl,
        ["* test"],  # the file: ignored
        extra_args=["--route=a.example test", f"--route=* 127.0.0.1:{origin.port}"],
    )
    assert await body_of(s.http_port, host="a.example") == TEST_HELLO
    assert await body_of(s.http_port, host="b.example") == b"origin\n"


async def test_port_flag_replaces_http_port(tmp_path: Path, start: StartFn) -> None:
    """F1: ``--port`` runs one listener instead of ``http_port``."""
    (port,) = free_ports(1)
    s = await start("gripd", ["* test"], extra_args=[f"--port=127.0.0.1:{port}"], probe=False)
    await wait_body(port, TEST_HELLO, 5)
    zmq_ports = {s.zmq_pull_port, s.sub_port, s.command_port}
    assert listening_ports(s.proc.pid) == {port, s.control_port, *zmq_ports}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.http_port), timeout=2).close()


# --- 3. configuration errors --------------------------------------------------------------------

BAD_VALUES = [
    ("runner", "http_port", "abc", "invalid port"),
    ("handler", "stats_format", "xml", "must be tnetstring or json"),
    ("handler", "message_rate", "fast", "must be an integer"),
    ("proxy", "debug", "maybe", "must be true or false"),
    ("handler", "push_in_http_port", "70000", "port out of range"),
    ("runner", "log_level", "-1", "log level must be greater than or equal to 0"),
]


@pytest.mark.parametrize(("section", "key", "value", "reason"), BAD_VALUES)
def test_bad_config_value_exits_with_file_line(
    tmp_path: Path, section: str, key: str, value: str, reason: str
) -> None:
    """A malformed value stops gripd at once, naming file:line and why (Pushpin would read it as
    0 or true and carry on; gripd refuses)."""
    conf = write_conf(tmp_path, {section: {key: value}})
    line = line_of(conf.read_text(), section, key)
    t0 = time.monotonic()
    res = run_gripd(["--config", str(conf)], tmp_path)
    assert time.monotonic() - t0 < 10 * TIME_SCALE
    assert res.returncode != 0
    assert f"{conf}:{line}: " in res.stderr
    assert key in res.stderr and reason in res.stderr and repr(value) in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port=abc"], "invalid port"),
        (["--port=127.0.0.1:0"], "invalid --port"),
        (["--loglevel=-1"], "log level must be greater than or equal to 0"),
        (["--id=x"], "invalid int value"),
    ],
)
def test_bad_flags_exit_nonzero(tmp_path: Path, args: list[str], needle: str) -> None:
    conf = write_conf(tmp_path)
    res = run_gripd(["--config", str(conf), *args], tmp_path)
    assert res.returncode != 0
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_config_file(impl: Impl, tmp_path: Path) -> None:
    """F1: a ``--config`` that does not exist: non-zero exit, the path named (both)."""
    missing = tmp_path / "nope" / "pushpin.conf"
    t0 = time.monotonic()
    res = run_impl(impl, [f"--config={missing}"], tmp_path)
    assert time.monotonic() - t0 < 10 * TIME_SCALE
    assert res.returncode != 0
    assert str(missing) in res.stdout + res.stderr
    if impl == "gripd":
        assert f"{missing}: cannot read config file: No such file or directory" in res.stderr


async def test_bad_routes_line_skipped_with_warning(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F6: a bad routes line is skipped with a ``file:line: msg`` warning; other lines work."""
    origin.route("GET", "/", Reply(200, body="origin\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}", "bad.example", "good.example test"])
    assert await body_of(s.http_port, host="good.example") == TEST_HELLO
    assert await body_of(s.http_port, host="bad.example") == b"origin\n"  # falls to `*`
    warning = re.compile(
        r"^\[WARN\] .*" + re.escape(f"{s.workdir / 'routes'}:2: {BAD_ROUTE_WARNING}") + "$",
        re.MULTILINE,
    )
    await wait_until(lambda: warning.search(s.log_text()), 5, "the routes warning")
    for good in (1, 3):  # the valid lines draw no warning
        assert f"{s.workdir / 'routes'}:{good}:" not in s.log_text()


# --- 4. live routes reload (F6, F53) ------------------------------------------------------------


async def open_held_stream(s: Server, origin: Origin, channel: str) -> RawResponse:
    """A stream hold on channel ``channel`` through the current (origin) route."""
    origin.route(
        "GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", channel)], "open\n")
    )
    held = await open_request(s.http_port, get("/s"))
    assert await held.read_body_until(b"open\n") == b"open\n"
    await origin.wait_for("/s")
    await settle(s)
    return held


@pytest.mark.parametrize("how", ["rewrite", "replace"])
async def test_routes_file_change_reloads(
    impl: Impl, start: StartFn, origin: Origin, how: str
) -> None:
    """F6: the routes file is reloaded ~1 s after it changes (in place, or replaced by rename);
    new requests follow the new routes and a held stream on the old route keeps receiving."""
    origin.route("GET", "/", Reply(200, body="origin\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    held = await open_held_stream(s, origin, "rl")
    try:
        assert await body_of(s.http_port) == b"origin\n"
        routes = s.workdir / "routes"
        if how == "rewrite":
            routes.write_text("* test\n")
        else:
            tmp = s.workdir / "routes.new"
            tmp.write_text("* test\n")
            os.replace(tmp, routes)
        await wait_body(s.http_port, TEST_HELLO, 3)
        await publish(s.control_port, [stream_item("rl", "after reload\n")])
        assert await held.read_body_until(b"after reload\n") == b"after reload\n"
        assert not held.done
    finally:
        held.close()


async def test_sighup_reloads_routes(impl: Impl, start: StartFn, origin: Origin) -> None:
    """F1/F6: SIGHUP reloads the routes at once. The new file has the same size and mtime as the
    old, so a size+mtime watcher cannot see it; Pushpin's inotify reload comes only after 1 s, so
    an answer within 0.5 s is the signal's doing."""
    origin.route("GET", "/", Reply(200, body="origin\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    held = await open_held_stream(s, origin, "hup")
    try:
        assert await body_of(s.http_port) == b"origin\n"
        routes = s.workdir / "routes"
        old = routes.read_text()
        new = "* test #".ljust(len(old) - 1, "x") + "\n"
        assert len(new) == len(old)
        st = routes.stat()
        routes.write_text(new)
        os.utime(routes, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.kill(s.proc.pid, signal.SIGHUP)
        await wait_body(s.http_port, TEST_HELLO, 0.5)
        await publish(s.control_port, [stream_item("hup", "after hup\n")])
        assert await held.read_body_until(b"after hup\n") == b"after hup\n"
        assert s.proc.poll() is None
    finally:
        held.close()


# --- 5. logging (F1, F53) -----------------------------------------------------------------------


@pytest.mark.parametrize("level", [[], ["--loglevel=3"], ["--verbose"]], ids=["default", "3", "v"])
async def test_logfile_levels_and_access_log(
    impl: Impl, start: StartFn, origin: Origin, tmp_path: Path, level: list[str]
) -> None:
    """``--logfile`` receives the log (not stdout/stderr); debug lines only at level 3; the
    access line ``GET http://host/path -> 127.0.0.1:PORT code=200 N`` at the default level."""
    logfile = tmp_path / f"{impl}-custom.log"
    origin.route("GET", "/p", Reply(200, body="hi\n"))
    origin.route("GET", "/st", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "lg")]))
    s = await start(
        impl, [f"* 127.0.0.1:{origin.port}"], extra_args=[f"--logfile={logfile}", *level]
    )

    def log() -> str:
        return logfile.read_text(errors="replace") if logfile.exists() else ""

    assert await body_of(s.http_port, "/p", host="example.test") == b"hi\n"
    access = f"GET http://example.test/p -> 127.0.0.1:{origin.port} code=200 3"
    await wait_until(lambda: access in log(), 5, "the access log line")
    line = next(x for x in log().splitlines() if access in x)
    assert re.match(r"^\[INFO\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", line), line
    assert line.endswith(access)
    held = await open_request(s.http_port, get("/st"))
    try:
        await origin.wait_for("/st")
        await settle(s)
        await publish(s.control_port, [stream_item("lg", "x\n")])
        assert await held.read_body_until(b"x\n") == b"x\n"
    finally:
        held.close()
    if level:
        await wait_until(lambda: "[DEBUG] " in log(), 5, "a debug line")
    else:
        await asyncio.sleep(0.3 * TIME_SCALE)  # let any stray debug line reach the file
        assert "[DEBUG] " not in log()
    assert access not in s.log_text()  # stdout/stderr: nothing of it


# --- 6. SIGTERM ---------------------------------------------------------------------------------


async def test_sigterm_graceful_with_held_connections(start: StartFn) -> None:
    """F1: SIGTERM stops gripd cleanly (exit 0, quickly) even with holds open; clients see EOF."""
    s = await start("gripd", ["* test"])
    stream = await open_request(s.http_port, get("/stream?channel=term"))
    assert await stream.read_body_until(b"[stream opened]\n") == b"[stream opened]\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    try:
        writer.write(get("/response?channel=term"))  # a long-poll hold (F50)
        await writer.drain()
        await asyncio.sleep(0.2 * TIME_SCALE)
        t0 = time.monotonic()
        os.kill(s.proc.pid, signal.SIGTERM)
        code = await asyncio.to_thread(s.proc.wait, 10 * TIME_SCALE)
        elapsed = time.monotonic() - t0
        assert code == 0, s.log_text()
        assert elapsed < 3 * TIME_SCALE
        assert await stream.read_to_end(5) == b""  # closed without a terminating chunk
        assert stream.eof
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the long-poll: just EOF
    finally:
        writer.close()
        stream.close()
    assert "Traceback" not in s.log_text()


# --- 7. --help / --version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--help"], ["--config", "--port", "--route", "--id", "--loglevel", "--logfile"]),
        (["--version"], [f"gripd {__version__}"]),
        (["publish", "--help"], ["channel", "--spec", "--no-eol", "--close"]),
    ],
)
def test_help_and_version(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    res = run_gripd(args, tmp_path)
    assert res.returncode == 0, res.stderr
    for n in needles:
        assert n in res.stdout

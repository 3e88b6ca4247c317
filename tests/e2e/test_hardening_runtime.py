"""Runtime hardening, end to end: a broken routes file on reload (F6), a second instance on the
same configuration (F2, F43), and running out of file descriptors (F3, F28).

Pushpin behaviour observed on 1.36: it loads whatever parses from a broken routes file (often
nothing, so every request gets 502 "No route for host"); gripd keeps the previous table on a
live reload instead (differential test below). A second Pushpin on the same configuration binds
its ``ipc://`` sockets first (taking them from the running one), then logs ``unable to bind to
tcp://...`` / ``failed to bind ...: Address already in use`` and exits 1; gripd binds every TCP
address first and never takes over a live ipc path, so those tests are gripd-only.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from tests.conftest import TIME_SCALE, StartFn
from tests.e2e.test_cli_config import (
    body_of,
    child_env,
    get,
    stream_item,
    wait_body,
    wait_until,
)
from tests.support.origin import Origin, Reply
from tests.support.procs import Impl, Server, free_ports, start_server
from tests.support.rawhttp import open_request

# --- routes reload (F6) -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["change", "sighup"])
async def test_broken_routes_reload_keeps_previous_table(
    impl: Impl, start: StartFn, origin: Origin, how: str
) -> None:
    """F6: a routes file that stops parsing on a live reload. gripd keeps the last good table
    and logs ``file:line`` of the error with "keeping previous routes"; Pushpin 1.36 loads what
    parses (here nothing), so new requests get 502 "No route for host"."""
    origin.route("GET", "/", Reply(200, body="origin\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    assert await body_of(s.http_port) == b"origin\n"
    routes = s.workdir / "routes"
    # A typo (unterminated quote) on line 2: the whole file is unusable.
    routes.write_text(f'# edited\n* 127.0.0.1:{origin.port},path_beg="/x\n')
    if how == "sighup":
        os.kill(s.proc.pid, signal.SIGHUP)
    if impl == "pushpin":
        await wait_body(s.http_port, b"No route for host: t\n", 5)
        return
    pattern = re.compile(
        re.escape(f"{routes}:2:") + r".*keeping previous routes \(1 entries\)", re.MULTILINE
    )
    await wait_until(lambda: pattern.search(s.log_text()), 5, "the keep-previous log line")
    for _ in range(3):
        assert await body_of(s.http_port) == b"origin\n"
    # A fixed file is applied again.
    routes.write_text("* test\n")
    if how == "sighup":
        os.kill(s.proc.pid, signal.SIGHUP)
    await wait_body(s.http_port, b"Hello from the Pushpin test handler!\n", 5)
    assert s.proc.poll() is None


# --- a second instance on the same configuration (F2, F43) -------------------------------------


def run_second(conf: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``gripd --config CONF`` to completion (bounded), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gripd", "--config", str(conf)],
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20 * TIME_SCALE,
    )


def stats_path(s: Server) -> str:
    """Where the test configuration puts the stats socket (procs.base_conf)."""
    rundir = re.search(r"^rundir=(.*)$", s.conf_path.read_text(), re.MULTILINE)
    assert rundir is not None
    return f"{rundir.group(1)}/gp-stats"


async def assert_stats_delivered(s: Server) -> None:
    """A SUB on the first instance's stats socket still gets packets (F43): a request through
    the proxy makes a ``conn`` packet; and its control API still publishes (F28)."""
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"conn ")
    sub.connect(f"ipc://{stats_path(s)}")
    try:
        got = b""
        for _ in range(20):  # the subscription takes a moment to reach the XPUB
            await body_of(s.http_port)
            try:
                got = await asyncio.wait_for(sub.recv(), 0.5 * TIME_SCALE)
                break
            except TimeoutError:
                continue
        assert got.startswith(b"conn "), "no stats packet from the first instance"
    finally:
        sub.close()
        ctx.term()
    assert await asyncio.to_thread(s.publish, [stream_item("x", "hi\n")]) == (200, "Published\n")


def assert_one_line_exit(res: subprocess.CompletedProcess[str], line: str) -> None:
    assert res.returncode == 1, res.stderr
    out = res.stdout + res.stderr
    assert "Traceback" not in out
    errors = [ln for ln in res.stderr.splitlines() if not ln.startswith("[")]
    assert errors == [line]


def second_conf(s: Server, tmp_path: Path, move: list[int]) -> Path:
    """The first instance's configuration with the ports in ``move`` replaced by free ones
    (same rundir and ipc prefix), in its own directory."""
    text = s.conf_path.read_text()
    for port in move:
        new = free_ports(1)[0]
        text = text.replace(f":{port}\n", f":{new}\n").replace(f"={port}\n", f"={new}\n")
    second = tmp_path / "second"
    second.mkdir()
    (second / "routes").write_text("* test\n")
    conf = second / "pushpin.conf"
    conf.write_text(text.replace(str(s.workdir / "log"), str(second)))
    return conf


@pytest.mark.parametrize("taken", ["all", "publish-inputs"])
async def test_second_instance_exits_cleanly_and_leaves_the_first_alone(
    start: StartFn, tmp_path: Path, taken: str
) -> None:
    """The same configuration twice (or only the publish inputs' ports in common): the second
    cannot bind a TCP address, says so in one line naming the setting and exits 1, before it
    touches the first one's stats socket."""
    s = await start("gripd", ["* test"])
    if taken == "all":
        conf = s.conf_path
        want = f"127.0.0.1:{s.http_port} (http_port)"
    else:
        conf = second_conf(s, tmp_path, [s.http_port])
        want = f"127.0.0.1:{s.control_port} (push_in_http_addr/push_in_http_port)"
    res = await asyncio.to_thread(run_second, conf, conf.parent)
    assert_one_line_exit(res, f"gripd: cannot listen on {want}: Address already in use")
    assert s.proc.poll() is None
    await assert_stats_delivered(s)


async def test_live_ipc_path_is_not_taken_over(start: StartFn, tmp_path: Path) -> None:
    """Free TCP ports but the same ``stats_spec`` path: the second instance must not unlink and
    rebind a socket file a live process listens on; it exits 1 with one line."""
    s = await start("gripd", ["* test"])
    ports = [s.http_port, s.control_port, s.zmq_pull_port, s.command_port, s.sub_port]
    conf = second_conf(s, tmp_path, ports)
    res = await asyncio.to_thread(run_second, conf, conf.parent)
    spec = f"ipc://{stats_path(s)}"
    assert_one_line_exit(
        res,
        f"gripd: cannot listen on {spec} (stats_spec): "
        "Address already in use (another process listens on it)",
    )
    await assert_stats_delivered(s)


# --- running out of file descriptors (F3, F28) -------------------------------------------------

NOFILE = 256  # the child's open-file limit: fd_reserve (64) leaves clients ~190 descriptors


def fill_descriptors(port: int, most: int = 600) -> tuple[list[socket.socket], int, int]:
    """Open idle client connections until the proxy has refused 40 of them (at most ``most``);
    returns the sockets and the counts (kept open, refused)."""
    socks: list[socket.socket] = []
    refused = kept = 0
    while len(socks) < most and refused < 40:
        batch = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        socks += batch
        time.sleep(0.2 * TIME_SCALE)
        for s in batch:
            s.setblocking(False)
            try:
                closed = s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            if closed:
                refused += 1
            else:
                kept += 1
    return socks, kept, refused


async def test_clients_cannot_take_the_descriptors_publishing_needs(
    tmp_path: Path, origin: Origin
) -> None:
    """F3/F28: with clients at the open-file limit, a publish through the control API still
    succeeds and reaches a subscriber that connected earlier. Clients past ``limit -
    fd_reserve`` are closed at once, counted and logged at a limited rate; the start warns that
    client_maxconn does not fit the limit."""
    origin.route(
        "GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "fd")], "open\n")
    )
    # One process: the limit and the reserve are per process (each worker has its own table).
    s = await asyncio.to_thread(
        functools.partial(
            start_server,
            "gripd",
            tmp_path / "g",
            [f"* 127.0.0.1:{origin.port}"],
            nofile=NOFILE,
            conf={"gripd": {"workers": "1"}},
        )
    )
    socks: list[socket.socket] = []
    try:
        assert f"the open-file limit is {NOFILE} with fd_reserve=64" in s.log_text()
        held = await open_request(s.http_port, get("/s"))
        assert await held.read_body_until(b"open\n") == b"open\n"
        await asyncio.sleep(0.3 * TIME_SCALE)
        socks, kept, refused = await asyncio.to_thread(fill_descriptors, s.http_port)
        assert refused >= 40 and kept < NOFILE - 64
        for n in range(3):  # each publish needs a descriptor the clients could not take
            assert await asyncio.to_thread(s.publish, [stream_item("fd", f"m{n}\n")]) == (
                200,
                "Published\n",
            )
            assert await held.read_body_until(f"m{n}\n".encode()) == f"m{n}\n".encode()
        assert re.search(
            r"\[WARN\] .*open-file limit nearly reached .*limit 256, fd_reserve 64.*"
            r"refused \d+ client connection\(s\)",
            s.log_text(),
        )
        assert s.log_text().count("open-file limit nearly reached") < 3  # rate limited
        held.close()
    finally:
        for sock in socks:
            sock.close()
        await asyncio.to_thread(s.stop)

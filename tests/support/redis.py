"""A real ``redis-server`` on a free loopback port, for the Redis bus tests.

``running_redis(workdir)`` is the context manager; ``redis_server`` the pytest fixture (import
it into a test module: ``from tests.support.redis import redis_server``). Both give a
:class:`RedisServer`, which unpacks as ``host, port, pid`` and can be killed and restarted on the
same port to test reconnection. Nothing is saved to disk (``--save '' --appendonly no``).

Without ``redis-server`` on PATH the tests are skipped, except under ``CI=true`` where they
fail: CI must run them (``scripts/test.sh`` installs the package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import free_ports

#: Seconds to wait for a started server to answer PING.
START_TIMEOUT = 10.0


def redis_server_path() -> str:
    """The ``redis-server`` binary; skips the test when missing (fails it under CI=true)."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI must run the Redis bus tests)")
        pytest.skip("redis-server is not installed")
    return path


def _pings(host: str, port: int) -> bool:
    """Whether a server answers on ``host:port`` (``-NOAUTH`` counts: it is up)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """One ``redis-server`` process this test started (stopped only by its own PID)."""

    def __init__(self, workdir: Path, *, password: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_ports(1)[0]
        self.password = password
        self.workdir = workdir
        self.binary = redis_server_path()
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __iter__(self) -> Iterator[object]:
        return iter((self.host, self.port, self.pid))

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not running"
        return self._proc.pid

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (again) on the same port and wait until it answers PING."""
        assert not self.running, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        logfile = self.workdir / f"redis-{self.starts}.log"
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(logfile),
            "--daemonize",
            "no",
        ]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        self._proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _pings(self.host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                text = logfile.read_text(errors="replace") if logfile.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{text}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (connections drop at once) and reap it."""
        self._signal(signal.SIGKILL, wait=5.0)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL past 5 s."""
        if not self._signal(signal.SIGTERM, wait=5.0):
            self.kill()

    def restart(self) -> None:
        """Kill the server and start a new one on the same port (an empty one: no data)."""
        self.kill()
        self.start()

    def _signal(self, sig: signal.Signals, *, wait: float) -> bool:
        """Send ``sig`` to this server's PID; True once it has exited (or was not running)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return False
        return True


@contextlib.contextmanager
def running_redis(workdir: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    """A started server, stopped on exit."""
    server = RedisServer(workdir, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` for this test on a free loopback port (see the module docstring)."""
    with running_redis(tmp_path / "redis") as server:
        yield server

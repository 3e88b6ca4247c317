"""``gripd demo [--port N] [--instances 1|2]``: gripd, the demo backend and one URL to open.

Starts the demo backend (:mod:`gripd.demo.origin`, in this process) and one or two gripd
processes on loopback with a generated ``pushpin.conf`` whose route points at the backend (with
``over_http``, for WebSocket-over-HTTP). With two instances a private ``redis-server`` is started
too and both instances use it as their bus, so a message published into one instance reaches the
clients of the other. Prints the page's URL on stdout (nothing else goes to stdout); Ctrl-C (or
SIGTERM) stops every process this command started, and removes its temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from gripd.demo.origin import DemoServer

#: Seconds allowed for each process to come up, and for each to stop before it is killed.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Exit status for bad usage (a busy port, redis-server missing), as argparse uses.
USAGE_ERROR = 2


#: How gripd says that a port it was given is taken.
_BUSY_RE = re.compile(r"cannot listen on \S*:(\d+) .*Address already in use")

#: Starts tried when a port picked for gripd was taken by another process in the meantime.
START_ATTEMPTS = 3


class DemoError(Exception):
    """The demo cannot run; the message says why, ``code`` is the exit status, ``busy_port``
    the port a process could not listen on because it was taken (if that was the reason)."""

    def __init__(self, message: str, code: int = 1, busy_port: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.busy_port = busy_port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gripd demo",
        description="Start gripd and a demo backend on 127.0.0.1 and print the page to open: "
        "one message shown over SSE, HTTP streaming, long-polling and WebSocket.",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=7999,
        metavar="N",
        help="port of the page (the first gripd instance's client port; default 7999)",
    )
    p.add_argument(
        "--instances",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: two gripd instances sharing a private redis-server (needs redis-server)",
    )
    return p


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {n}")
    return n


def port_problem(port: int) -> str | None:
    """Why 127.0.0.1:``port`` cannot be listened on, or None when it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return _in_use(port)
            return f"cannot listen on 127.0.0.1:{port}: {e.strerror}"
    return None


def free_ports(n: int, avoid: int) -> list[int]:
    """``n`` distinct ports nothing listens on now (the OS picks them), never ``avoid``."""
    socks: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)  # held open until all are chosen, so none comes twice
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port != avoid:
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()


def gripd_conf(
    workdir: Path, http_port: int, control_port: int, status_port: int, bus: str | None
) -> str:
    """A pushpin.conf for one demo instance: loopback only, one process, no ZeroMQ sockets,
    channel history on (so long-polls and reconnecting clients miss nothing), the live status
    page on ``status_port``."""
    bus_line = f"bus = {bus}\n" if bus else ""
    return f"""\
[global]
rundir = {workdir / "run"}
ipc_prefix = demo-

[runner]
http_port = 127.0.0.1:{http_port}
client_maxconn = 1000

[proxy]
routesfile = routes

[handler]
push_in_spec =
push_in_sub_specs =
push_in_http_addr = 127.0.0.1
push_in_http_port = {control_port}
command_spec =
stats_spec =
prometheus_port = 127.0.0.1:{status_port}

[gripd]
workers = 1
history_size = 100
history_ttl = 300
{bus_line}"""


def _get_status(port: int, path: str) -> int | None:
    """The status of ``GET path`` on 127.0.0.1:``port``, or None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Child:
    """A process this command started: in its own session (Ctrl-C reaches only us, and we
    stop it), its output in ``log``."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = cwd / f"{name.replace(' ', '-')}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        code = self.proc.poll()
        if code is not None:
            tail = self.log_tail()
            busy = _BUSY_RE.search(tail)
            raise DemoError(
                f"{self.name} exited (status {code}); its last lines:\n{tail}",
                busy_port=int(busy.group(1)) if busy else None,
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to its process group after STOP_TIMEOUT."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)


class Demo:
    """Everything ``gripd demo`` runs, started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, port: int, instances: int, redis_bin: str | None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.port = port
        self.instances = instances
        self.redis_bin = redis_bin
        self.children: list[Child] = []
        self.server: DemoServer | None = None
        self.status_url = ""  # the first instance's live status page, once started
        self.env = dict(os.environ)
        # ``python -m gripd`` must find this gripd even when it is not installed.
        package_root = str(Path(__file__).resolve().parents[2])
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [package_root, self.env.get("PYTHONPATH")])
        )

    def start(self) -> str:
        """Start everything and wait until it answers; returns the page's URL."""
        # A control and a status port per instance, a client port for each but the first,
        # and Redis's.
        ports = free_ports(4 * self.instances - 2, avoid=self.port)
        bus = self._start_redis(ports.pop()) if self.instances > 1 else None
        http_ports = [self.port] + [ports.pop() for _ in range(self.instances - 1)]
        control_ports = [ports.pop() for _ in http_ports]
        status_ports = [ports.pop() for _ in http_ports]
        self.status_url = f"http://127.0.0.1:{status_ports[0]}/status.html"
        names = [f"gripd {n + 1}" for n in range(self.instances)]
        server = DemoServer(
            f"http://127.0.0.1:{control_ports[0]}/publish/",
            list(zip(names, http_ports, strict=True)),
        )
        threading.Thread(target=server.serve_forever, name="demo-origin", daemon=True).start()
        self.server = server
        started = []
        for name, http_port, control_port, status_port in zip(
            names, http_ports, control_ports, status_ports, strict=True
        ):
            wd = self.workdir / name.replace(" ", "-")
            wd.mkdir()
            conf = wd / "pushpin.conf"
            conf.write_text(gripd_conf(wd, http_port, control_port, status_port, bus))
            (wd / "routes").write_text(f"* 127.0.0.1:{server.port},over_http\n")
            argv = [sys.executable, "-m", "gripd", "--config", str(conf)]
            started.append((self._spawn(name, argv, wd), http_port, control_port))
        for child, http_port, control_port in started:
            self._wait_ready(child, http_port, control_port)
        return f"http://127.0.0.1:{self.port}/"

    def _spawn(self, name: str, argv: list[str], cwd: Path) -> Child:
        child = Child(name, argv, cwd, self.env)
        self.children.append(child)
        return child

    def _start_redis(self, port: int) -> str:
        assert self.redis_bin is not None
        wd = self.workdir / "redis"
        wd.mkdir()
        argv = [self.redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(wd), "--daemonize", "no"]
        child = self._spawn("redis-server", argv, wd)
        deadline = time.monotonic() + START_TIMEOUT
        while not _redis_pings(port):
            child.check_running()
            if time.monotonic() > deadline:
                raise DemoError(f"redis-server did not answer within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        return f"redis://127.0.0.1:{port}"

    def _wait_ready(self, child: Child, http_port: int, control_port: int) -> None:
        """Until the control API answers and a page comes back through gripd."""
        deadline = time.monotonic() + START_TIMEOUT
        while _get_status(control_port, "/") != 200 or _get_status(http_port, "/") != 200:
            child.check_running()
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{child.name} did not answer within {START_TIMEOUT:.0f} s; "
                    f"its last lines:\n{child.log_tail()}"
                )
            time.sleep(0.1)

    def watch(self) -> None:
        """Return only by an exception: a child that stopped by itself, or Ctrl-C."""
        while True:
            for child in self.children:
                child.check_running()
            time.sleep(0.5)

    def stop(self) -> None:
        for child in reversed(self.children):  # gripd before redis-server
            child.stop()
        self.children = []
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def start_demo(workdir: Path, port: int, instances: int, redis_bin: str | None) -> tuple[Demo, str]:
    """A started :class:`Demo` and its URL. A start that failed because a port picked for it
    was taken meanwhile (by another process) is tried again with other ports."""
    for attempt in range(1, START_ATTEMPTS + 1):
        demo = Demo(workdir / f"start-{attempt}", port, instances, redis_bin)
        try:
            return demo, demo.start()
        except BaseException as e:
            demo.stop()
            if not isinstance(e, DemoError) or e.busy_port is None:
                raise
            if e.busy_port == port:
                raise DemoError(_in_use(port), USAGE_ERROR) from None
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _in_use(port: int) -> str:
    return (
        f"port {port} is already in use on 127.0.0.1; "
        "stop what listens there or choose another port with --port N"
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the demo until Ctrl-C; the exit status (0 after Ctrl-C, 2 for bad usage)."""
    args = build_parser().parse_args(argv)
    redis_bin = None
    if args.instances > 1:
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            print(
                "gripd demo: --instances 2 needs redis-server on PATH (the two instances share "
                "it as their bus); install Redis (e.g. apt-get install redis-server) or run "
                "without --instances",
                file=sys.stderr,
            )
            return USAGE_ERROR
    problem = port_problem(args.port)
    if problem is not None:
        print(f"gripd demo: {problem}", file=sys.stderr)
        return USAGE_ERROR
    # Ctrl-C and SIGTERM stop the demo, even when started where SIGINT is ignored (``cmd &``).
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    demo: Demo | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="gripd-demo-") as tmp:
            try:
                demo, url = start_demo(Path(tmp), args.port, args.instances, redis_bin)
                what = "two gripd instances on one Redis" if args.instances > 1 else "gripd"
                print(
                    f"gripd demo: {what} and the demo backend are running. "
                    "Open this page in a browser (Ctrl-C stops the demo):",
                    file=sys.stderr,
                    flush=True,
                )
                print(url, flush=True)
                print(
                    f"gripd demo: gripd's live status page: {demo.status_url}",
                    file=sys.stderr,
                    flush=True,
                )
                demo.watch()
            except KeyboardInterrupt:
                print("gripd demo: stopping", file=sys.stderr, flush=True)
            except DemoError as e:
                print(f"gripd demo: {e}", file=sys.stderr, flush=True)
                return e.code
            finally:
                for sig in previous:  # a second Ctrl-C does not cut the clean-up short
                    signal.signal(sig, signal.SIG_IGN)
                if demo is not None:
                    demo.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

"""Start gripd or Pushpin 1.36 on loopback for differential tests and benchmarks.

``start_server(impl, workdir, routes)`` writes one Pushpin-format ``pushpin.conf`` (the Debian
shipped values, F2-F5, with every port moved to a free loopback port) plus a ``routes`` file, starts
the proxy in its own session and waits until it answers. Both implementations get the same file.

Pushpin notes (found by running it):

- The Debian package's ``internal.conf`` points the proxy at a system zurl
  (``ipc:///var/run/zurl/...``), so nothing proxies unless ``zurl`` is added to ``[runner]
  services`` and the proxy's ``zurl_*_specs`` are pointed at the runner's rundir (the runner renders
  ``zurl.conf`` from its template there). zurl's ``deny=127.*`` does not apply: the proxy marks its
  origin requests to ignore policies.
- The runner's children each have their own process group, so ``stop()`` sends SIGTERM to the
  runner (which stops them cleanly) and, after a bound, SIGKILLs every recorded descendant PID.
- ``message_rate``/``message_hwm`` <= 0 both disable the handler's rate limiter (F34; 1.36
  ``src/handler/ratelimiter.cpp``: ``setRate`` treats ``actionsPerSecond <= 0`` as unlimited and
  ``addAction`` checks ``hwm > 0``). The code default is -1, so ``NO_RATE_LIMIT`` uses -1.

``impls()`` lists the implementations to run a differential test against.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Impl = Literal["gripd", "pushpin"]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: conf overrides that disable Pushpin's publish rate limiter and HWM (F34).
NO_RATE_LIMIT: dict[str, dict[str, str]] = {"handler": {"message_rate": "-1", "message_hwm": "-1"}}

#: Requests with this path are the readiness probe; test origins should ignore them.
PROBE_PATH = "/__procs_ready__"

# A UNIX socket path is at most 107 bytes; the longest Pushpin ipc name is ~25 more than rundir.
_MAX_RUNDIR = 80
_IPC_PREFIX = "gp-"


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time; the message carries its log."""


def gripd_runnable() -> bool:
    """Whether ``python -m gripd`` exists yet."""
    return (REPO_ROOT / "gripd" / "__main__.py").exists()


def pushpin_installed() -> bool:
    """Whether the ``pushpin`` runner is on PATH."""
    return shutil.which("pushpin") is not None


def impls() -> list[Impl]:
    """Implementations to test: both when Pushpin is installed or ``CI=true`` (then a missing
    Pushpin makes its leg fail in ``start_server``, not skip), else only gripd.
    ``GRIPD_TEST_IMPLS=gripd`` asks for gripd's legs only (the compiled build's test stage)."""
    if os.environ.get("GRIPD_TEST_IMPLS") == "gripd":
        return ["gripd"]
    if pushpin_installed() or os.environ.get("CI", "").lower() == "true":
        return ["gripd", "pushpin"]
    return ["gripd"]


def raise_nofile_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return the new limit.

    Children inherit it, so call it before starting a server that must hold many sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def base_conf(
    *,
    rundir: Path,
    logdir: Path,
    http_port: int,
    control_port: int,
    pull_port: int,
    command_port: int,
    sub_port: int,
) -> dict[str, dict[str, str]]:
    """The shipped Debian pushpin.conf values (CFG) with loopback ports and a private rundir."""
    return {
        "global": {
            "include": "{libdir}/internal.conf",
            "rundir": str(rundir),
            "ipc_prefix": _IPC_PREFIX,
            "port_offset": "0",
            "stats_connection_ttl": "120",
        },
        "runner": {
            "services": "condure,zurl,pushpin-proxy,pushpin-handler",
            "http_port": f"127.0.0.1:{http_port}",
            "logdir": str(logdir),
            "log_level": "2",
            "client_buffer_size": "8192",
            "client_maxconn": "50000",
            "condure_bin": "condure",
            "zurl_bin": "zurl",
        },
        "proxy": {
            "routesfile": "routes",
            "debug": "false",
            "auto_cross_origin": "false",
            "accept_x_forwarded_protocol": "false",
            "set_x_forwarded_protocol": "proto-only",
            "x_forwarded_for": "",
            "x_forwarded_for_trusted": "",
            "orig_headers_need_mark": "",
            "accept_pushpin_route": "false",
            "log_from": "false",
            "log_user_agent": "false",
            "sig_iss": "pushpin",
            "sig_key": "changeme",
            "upstream_key": "",
            "updates_check": "off",
            # Debian's internal.conf expects a system zurl; use the runner-started one instead.
            "zurl_out_specs": "ipc://{rundir}/{ipc_prefix}zurl-in",
            "zurl_out_stream_specs": "ipc://{rundir}/{ipc_prefix}zurl-in-stream",
            "zurl_in_specs": "ipc://{rundir}/{ipc_prefix}zurl-out",
        },
        "handler": {
            "push_in_spec": f"tcp://127.0.0.1:{pull_port}",
            "push_in_sub_specs": f"tcp://127.0.0.1:{sub_port}",
            "push_in_sub_connect": "false",
            "push_in_http_addr": "127.0.0.1",
            "push_in_http_port": str(control_port),
            "push_in_http_max_headers_size": "10000",
            "push_in_http_max_body_size": "1000000",
            "stats_spec": "ipc://{rundir}/{ipc_prefix}stats",
            "command_spec": f"tcp://127.0.0.1:{command_port}",
            "message_rate": "2500",
            "message_hwm": "25000",
            "message_wait": "5000",
            "id_cache_ttl": "60",
            "connection_subscription_max": "20",
            "subscription_linger": "60",
            "stats_subscription_ttl": "60",
            "stats_report_interval": "10",
            "stats_format": "tnetstring",
        },
    }


def merge_conf(
    base: dict[str, dict[str, str]], overrides: dict[str, dict[str, str]] | None
) -> dict[str, dict[str, str]]:
    """``base`` with ``overrides`` applied key by key (new sections and keys are added)."""
    out = {sec: dict(kv) for sec, kv in base.items()}
    for sec, kv in (overrides or {}).items():
        out.setdefault(sec, {}).update(kv)
    return out


def render_conf(conf: dict[str, dict[str, str]]) -> str:
    """INI text for ``conf`` (sections in insertion order)."""
    lines: list[str] = []
    for sec, kv in conf.items():
        lines.append(f"[{sec}]")
        lines.extend(f"{k}={v}" for k, v in kv.items())
        lines.append("")
    return "\n".join(lines)


def _proc_children() -> dict[int, list[int]]:
    """ppid -> child pids, from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is ppid; the command name (field 2) may contain spaces, so split after ')'.
        rest = stat[stat.rfind(")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    kids = _proc_children()
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_rss_bytes(pid: int) -> int:
    """Summed resident set size of ``pid`` and its descendants (VmRSS from /proc)."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pid`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        user += int(rest[11])  # utime (field 14)
        system += int(rest[12])  # stime (field 15)
    return user / tick, system / tick


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds used so far by ``pid`` and its live descendants."""
    user, system = tree_cpu_times(pid)
    return user + system


def cmdline(pid: int) -> str:
    """``pid``'s command line, arguments joined by spaces ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    return _alive(pid)


def established_peer_ports(pid: int, local_port: int) -> set[int]:
    """Remote ports of the ESTABLISHED TCP connections on ``local_port`` that ``pid`` holds open.

    From /proc: ``pid``'s socket descriptors matched by inode against its ``net/tcp`` and
    ``net/tcp6`` tables. For a server process these are the client ports it serves, which tells
    which of several processes sharing a port (SO_REUSEPORT) got a given client."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{fd_dir}/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    out: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], int(f[9])
            if state == "01" and inode in inodes and int(local.rsplit(":", 1)[1], 16) == local_port:
                out.add(int(remote.rsplit(":", 1)[1], 16))
    return out


@dataclass
class Server:
    """A running proxy under test. Stop it with ``stop()`` (or use it as a context manager)."""

    impl: Impl
    http_port: int
    control_port: int
    zmq_pull_port: int
    command_port: int
    sub_port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path = field(default=Path("/dev/null"))
    conf_path: Path = field(default=Path("/dev/null"))
    tmp_rundir: Path | None = None
    _known_pids: set[int] = field(default_factory=set)

    def base_url(self) -> str:
        """``http://127.0.0.1:<http_port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.http_port}"

    def control_url(self) -> str:
        """The HTTP control API base URL (F28), no trailing slash."""
        return f"http://127.0.0.1:{self.control_port}"

    def log_text(self) -> str:
        """Everything the server (all its processes) has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The server's process tree (Pushpin: runner, condure, zurl, proxy, handler)."""
        if self.proc.poll() is not None:
            return []
        tree = process_tree(self.proc.pid)
        self._known_pids.update(tree)
        return tree

    def rss_bytes(self) -> int:
        """Summed RSS of the whole process tree."""
        self.pids()
        return tree_rss_bytes(self.proc.pid) if self.proc.poll() is None else 0

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the whole process tree."""
        return tree_cpu_seconds(self.proc.pid) if self.proc.poll() is None else 0.0

    def publish(self, items: list[dict[str, Any]], timeout: float = 10.0) -> tuple[int, str]:
        """POST ``{"items": items}`` to ``/publish/`` (F28); returns (status, body)."""
        return publish_http(self.control_port, items, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the main process, wait up to ``timeout`` s, then SIGKILL its process group and
        every descendant seen. Returns the exit status (None if it had to be killed)."""
        self.pids()  # remember descendants while the tree is still intact
        code: int | None = self.proc.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        leftovers = [p for p in self._known_pids if p != self.proc.pid and _alive(p)]
        if code is None or leftovers:
            # Only the group we created (start_new_session) and PIDs we saw in our tree.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for p in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self.tmp_rundir is not None:
            shutil.rmtree(self.tmp_rundir, ignore_errors=True)
        return code

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2 :].split()[0] != "Z"


def publish_http(port: int, items: list[dict[str, Any]], timeout: float = 10.0) -> tuple[int, str]:
    """Blocking publish to the control API on 127.0.0.1:``port``; returns (status, body)."""
    body = json.dumps({"items": items}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/publish/", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _http_status(port: int, path: str, timeout: float) -> int | None:
    """Status of ``GET path`` on 127.0.0.1:``port``, or None if nothing answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# Pushpin's internal ZeroMQ ipc links that must be connected before a GRIP hold works: without
# the handler connected to the proxy's accept/inspect sockets the proxy answers
# "500 Accept service unavailable." (seen on loopback; SRC src/proxy/requestsession.cpp).
_PUSHPIN_GRACE = 0.3
_PUSHPIN_LINKS = ("accept", "inspect", "zurl-in", "zurl-out", "condure-in", "condure-out")


def _ipc_links_connected(rundir: Path) -> bool:
    """Whether every ``_PUSHPIN_LINKS`` socket in ``rundir`` has a connected peer.

    In /proc/net/unix a bound listener has state 01; each accepted connection is listed with the
    same path and state 03 (connected)."""
    want = {f"{rundir}/{_IPC_PREFIX}{name}" for name in _PUSHPIN_LINKS}
    seen: set[str] = set()
    try:
        with open("/proc/net/unix") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[5] == "03" and parts[-1] in want:
                    seen.add(parts[-1])
    except OSError:
        return True  # not Linux: fall back to the HTTP probes only
    return seen == want


def _command(impl: Impl, conf_path: Path) -> list[str]:
    if impl == "pushpin":
        exe = shutil.which("pushpin")
        if exe is None:
            raise ServerStartError("pushpin is not installed (not on PATH)")
        # --merge-output: every service logs to the runner's stdout, i.e. one log file.
        return [exe, f"--config={conf_path}", "--merge-output"]
    return [sys.executable, "-m", "gripd", "--config", str(conf_path)]


#: ``[gripd] workers`` for every gripd started here whose ``conf`` does not set it; None leaves
#: gripd's default (one worker per CPU). The ``one_process`` fixture sets it to "1".
GRIPD_WORKERS: str | None = os.environ.get("GRIPD_TEST_WORKERS") or None


#: ``free_ports`` releases its ports before the server binds them, so another process (an
#: outgoing connection's ephemeral port, a server started at the same time) can take one in
#: between. A start that fails that way is tried again with new ports, this many times in all.
START_ATTEMPTS = 3


def start_server(impl: Impl, workdir: Path, routes: list[str], **kw: Any) -> Server:
    """:func:`_start_server_once` (same arguments), again with new ports when a port it picked
    was taken."""
    first = Path(workdir)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_server_once(impl, workdir, routes, **kw)
        except ServerStartError as e:
            if "Address already in use" not in str(e) or attempt == START_ATTEMPTS:
                raise
        workdir = Path(f"{first}-retry{attempt}")
        # What a test put next to the config (certificates in runner/certs, key files) goes
        # along; what the start writes itself does not.
        if first.is_dir():
            shutil.copytree(
                first,
                workdir,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("run", "log", "*.log", "pushpin.conf", "routes"),
            )
    raise AssertionError("unreachable")


def _start_server_once(
    impl: Impl,
    workdir: Path,
    routes: list[str],
    *,
    conf: dict[str, dict[str, str]] | None = None,
    timeout: float = 40.0,  # Pushpin (five processes) took over 20 s on a loaded 2-core host
    extra_args: list[str] | None = None,
    probe: bool = True,
    nofile: int | None = None,
) -> Server:
    """Write ``pushpin.conf`` + ``routes`` into ``workdir``, start ``impl`` and wait until ready.

    Ready means: ``GET /`` on the control port answers 200, (``probe``) a ``GET PROBE_PATH``
    through the proxy gets any HTTP response (so the origin must answer that path without a
    hold), and for Pushpin its internal ipc links are connected (``_PUSHPIN_LINKS``).
    ``conf`` overrides keys by section. ``nofile`` sets the child's RLIMIT_NOFILE (soft = hard:
    gripd raises its soft limit to the hard one at start).
    Raises ServerStartError with the server's log if it exits or is not ready within ``timeout``.
    """
    raise_nofile_limit()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rundir = workdir / "run"
    tmp_rundir: Path | None = None
    if len(str(rundir)) > _MAX_RUNDIR:
        tmp_rundir = Path(tempfile.mkdtemp(prefix="gp-run-"))
        rundir = tmp_rundir
    rundir.mkdir(parents=True, exist_ok=True)
    logdir = workdir / "log"
    logdir.mkdir(exist_ok=True)
    if impl == "gripd" and GRIPD_WORKERS is not None:
        conf = merge_conf({"gripd": {"workers": GRIPD_WORKERS}}, conf)
    http_port, control_port, pull_port, command_port, sub_port = free_ports(5)
    full = merge_conf(
        base_conf(
            rundir=rundir,
            logdir=logdir,
            http_port=http_port,
            control_port=control_port,
            pull_port=pull_port,
            command_port=command_port,
            sub_port=sub_port,
        ),
        conf,
    )
    conf_path = workdir / "pushpin.conf"
    conf_path.write_text(render_conf(full))
    (workdir / full["proxy"].get("routesfile", "routes")).write_text(
        "".join(r + "\n" for r in routes)
    )
    log_path = workdir / f"{impl}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*_command(impl, conf_path), *(extra_args or [])],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=None if nofile is None else _limit_nofile(nofile),
        )
    server = Server(
        impl=impl,
        http_port=http_port,
        control_port=control_port,
        zmq_pull_port=pull_port,
        command_port=command_port,
        sub_port=sub_port,
        workdir=workdir,
        proc=proc,
        log_path=log_path,
        conf_path=conf_path,
        tmp_rundir=tmp_rundir,
    )
    _STARTED.append(server)
    try:
        _wait_ready(server, rundir, timeout, probe)
    except BaseException:
        server.stop()
        raise
    return server


# Every server this test process started. A test killed by pytest-timeout may never reach its
# fixture's teardown; whatever is still running when the process exits is stopped here, so no
# Pushpin or gripd tree outlives the suite (one did: a runner and its four children).
_STARTED: list[Server] = []


@atexit.register
def _stop_leftovers() -> None:
    for server in _STARTED:
        if server.proc.poll() is None:
            with contextlib.suppress(Exception):
                server.stop(timeout=2.0)


def servers_started() -> list[Server]:
    """Every server this test process has started so far, oldest first."""
    return list(_STARTED)


def _limit_nofile(n: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return limit


def _wait_ready(server: Server, rundir: Path, timeout: float, probe: bool) -> None:
    deadline = time.monotonic() + timeout
    control_ok = False
    links_ok = False
    proxy_ok = not probe
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            raise ServerStartError(
                f"{server.impl} exited with status {code} during startup; log:\n{server.log_text()}"
            )
        server.pids()
        left = max(0.2, min(3.0, deadline - time.monotonic()))
        if not control_ok:
            control_ok = _http_status(server.control_port, "/", left) == 200
        # Pushpin's links come before the probe: a probe sent earlier can have zurl's answer
        # dropped on a link not yet up, and Pushpin then holds that request open for good (with
        # max_open_requests=1 nothing else ever got through).
        if control_ok and not links_ok:
            links_ok = server.impl != "pushpin"
            if not links_ok and _ipc_links_connected(rundir):
                # The ZMTP handshake follows the connect; Pushpin's sockets report writable only
                # after it. No observable signal for that, so allow a short grace period.
                time.sleep(_PUSHPIN_GRACE)
                links_ok = True
        if links_ok and not proxy_ok:
            proxy_ok = _http_status(server.http_port, PROBE_PATH, left) is not None
        if links_ok and proxy_ok:
            return
        time.sleep(0.05)
    raise ServerStartError(
        f"{server.impl} not ready after {timeout:.0f}s "
        f"(control={control_ok}, links={links_ok}, proxy={proxy_ok}); "
        f"log:\n{server.log_text()}"
    )


def run_gripd_expecting_exit(
    tmp_path: Path, gripd_section: dict[str, str], timeout: float = 20.0
) -> tuple[subprocess.CompletedProcess[str], str, Path]:
    """Run gripd on a generated config whose ``[gripd]`` section is ``gripd_section`` (the
    other ports are never bound: a config error stops it first); returns the finished process,
    the config text and its path."""
    ports = dict(http_port=1, control_port=2, pull_port=3, command_port=4, sub_port=5)
    conf = base_conf(rundir=tmp_path / "run", logdir=tmp_path, **ports)
    conf["gripd"] = dict(gripd_section)
    text = render_conf(conf)
    path = tmp_path / "pushpin.conf"
    path.write_text(text)
    (tmp_path / "routes").write_text("* test\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    res = subprocess.run(
        [sys.executable, "-m", "gripd", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return res, text, path

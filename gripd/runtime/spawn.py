"""Starting worker processes.

At start, ``gripd`` imports everything, then *forks* its workers before any event loop, thread
or ZeroMQ context exists (:func:`fork_worker`): a forked worker starts with every module already
imported, so an instance with workers starts about as fast as one process. A worker that dies
later is replaced by a fresh interpreter (:func:`start_worker_process`), since forking a
process whose event loop is running is not safe.

Both return a process handle with the ``subprocess.Popen`` methods the hub uses (``pid``,
``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``) and the hub's end of the worker's
socket pair.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Protocol


class WorkerProcess(Protocol):
    """What the hub needs of a worker process."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def start_worker_process(admission_fd: int) -> tuple[WorkerProcess, socket.socket]:
    """A new worker interpreter (``python -m gripd.runtime.worker``) and the hub's end of its
    socket pair."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gripd.runtime.worker", str(child.fileno()), str(admission_fd)],
            pass_fds=(child.fileno(), admission_fd),
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return proc, parent


class ForkedProcess:
    """A forked child, with the ``Popen`` methods the hub uses (reaped once, thread-safe)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def _reap(self, flags: int) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid == 0:
                return None
            self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self) -> int:
        code = self._reap(0)
        assert code is not None
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_worker(
    admission_fd: int, close_in_child: list[socket.socket]
) -> tuple[WorkerProcess, socket.socket]:
    """Fork a worker now (call before any event loop or thread exists). ``close_in_child``:
    the hub's ends of the workers forked before, which this child must not keep open (a worker
    notices its hub is gone by its socket closing)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            parent.close()
            for s in close_in_child:
                s.close()
            from gripd.runtime.worker import run_worker

            code = run_worker(child, admission_fd)
        finally:
            os._exit(code)
    child.close()
    return ForkedProcess(pid), parent

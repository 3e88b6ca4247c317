"""Starting a worker process: light on purpose, so the hub can start its workers first.

A worker spends most of its start importing gripd (a few hundred milliseconds). The command line
calls :func:`start_worker_process` before it imports the hub's own modules, so the workers'
imports and the hub's run at the same time; the hub then finds its workers already started.
"""

from __future__ import annotations

import socket
import subprocess
import sys


def start_worker_process(admission_fd: int) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new worker process and the hub's end of its socket pair."""
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

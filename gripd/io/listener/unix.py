"""Unix-socket listeners (``[runner] local_ports``, F3, Pushpin 1.35+).

Pushpin's connection manager removes whatever is at the path and binds a new socket there,
with the mode the process umask gives (no ``chmod``). gripd removes only a *stale* socket:
a path that is not a socket, or a socket another process still accepts on, is refused (one
line naming the path), so a second instance on the same configuration cannot take over the
first one's socket and a mistyped path cannot delete a file.

Connections on these listeners are plain HTTP (never TLS, as in Pushpin), and have no peer
address: the request's client address is empty.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from gripd.io.inputs.zmq import BindError, os_reason

BACKLOG = 4096

# local_ports sockets one SCM_RIGHTS message may carry to a worker (Linux's SCM_MAX_FD)
LOCAL_FDS_MAX = 253


def bind_unix(path: str) -> socket.socket:
    """A listening, non-blocking Unix stream socket at ``path`` (a stale socket file there is
    removed first). Raises :class:`BindError` naming ``local_ports`` and the path."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise BindError(path, "local_ports", os_reason(e)) from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise BindError(path, "local_ports", "exists and is not a socket")
        if _in_use(path):
            raise BindError(path, "local_ports", "a running process is listening on it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise BindError(path, "local_ports", os_reason(e)) from None
    return sock


def _in_use(path: str) -> bool:
    """Whether something accepts connections on the socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def file_id(path: str) -> int | None:
    """The inode of the socket file at ``path`` (recorded after binding), None if gone."""
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def unlink_if_same(path: str, ino: int | None) -> None:
    """Remove the socket file at ``path`` if it is still the one bound here (inode ``ino``):
    a later instance may have replaced it."""
    if ino is not None and file_id(path) == ino:
        with contextlib.suppress(OSError):
            os.unlink(path)

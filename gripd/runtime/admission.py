"""Instance-wide admission counts: open client connections and open requests of all workers.

``client_maxconn`` and ``max_open_requests`` (F3, F4) limit the whole instance, as in Pushpin,
not each worker. The hub creates a small shared memory file (``memfd``) with two counters per
worker; each worker writes only its own slots. Admitting is check-then-add over every worker's
slots, so it holds a POSIX record lock on the file meanwhile: without it two workers could both
see room for the last place and both take it. Releasing a place writes only the worker's own
slot and needs no lock (a reader that sees the older, higher count only refuses conservatively).
When a worker dies the hub zeroes its slots, so its connections stop counting.
"""

from __future__ import annotations

import fcntl
import mmap
import os

_SLOT = 8  # bytes per counter (int64)


class Admission:
    """Two counters per worker (connections, open requests) in shared memory."""

    def __init__(self, fd: int, count: int, index: int) -> None:
        self.fd = fd
        self.count = count
        self.index = index
        size = 2 * count * _SLOT
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        self._map = mmap.mmap(fd, size)
        self._slots = memoryview(self._map).cast("q")
        self._conns = 2 * index
        self._open = 2 * index + 1

    @classmethod
    def create(cls, count: int) -> Admission:
        """The hub's view (index 0 is only used for :meth:`reset`)."""
        fd = os.memfd_create("gripd-admission", 0)  # inheritable: off; passed with pass_fds
        return cls(fd, count, 0)

    def _take(self, slot: int, first: int, limit: int) -> bool:
        """Add one to ``slot`` if the instance-wide sum of every second slot from ``first`` is
        under ``limit`` (< 0: no limit), as one step for all workers."""
        s = self._slots
        if limit < 0:
            s[slot] += 1
            return True
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            if sum(s[i] for i in range(first, 2 * self.count, 2)) >= limit:
                return False
            s[slot] += 1
            return True
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def try_connect(self, limit: int) -> bool:
        """Count one more client connection unless the instance has ``limit`` already."""
        return self._take(self._conns, 0, limit)

    def release_connection(self) -> None:
        self._slots[self._conns] -= 1

    def try_open(self, limit: int) -> bool:
        """Count one more open request unless the instance has ``limit`` already."""
        return self._take(self._open, 1, limit)

    def release_open(self) -> None:
        self._slots[self._open] -= 1

    def connections(self) -> int:
        s = self._slots
        return sum(s[i] for i in range(0, 2 * self.count, 2))

    def open_requests(self) -> int:
        s = self._slots
        return sum(s[i] for i in range(1, 2 * self.count, 2))

    def reset(self, index: int) -> None:
        """Worker ``index`` is gone (hub side): its connections and requests stop counting."""
        self._slots[2 * index] = 0
        self._slots[2 * index + 1] = 0

    def close(self) -> None:
        self._slots.release()
        self._map.close()

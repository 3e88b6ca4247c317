"""What tells a watched file changed: its (mtime in ns, size, inode).

The config file, the routes file and the TLS certificates are polled for changes. The inode
is part of the stamp because a file replaced by a rename (how editors and certificate tools
write) can keep the old size and mtime.
"""

from __future__ import annotations

import os

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode)


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def file_stamp(path: str) -> Stamp | None:
    """``path``'s stamp, or None when it cannot be read (missing, no permission)."""
    try:
        return stamp_of(os.stat(path))
    except OSError:
        return None

"""Send as much as a server will take: for tests that check a peer cannot grow gripd's memory."""

from __future__ import annotations

import socket
import time


def push_until_blocked(
    sock: socket.socket, data: bytes, cap: int, quiet: float, limit: float = 60.0
) -> int:
    """Send ``data`` repeatedly on a non-blocking socket until ``cap`` bytes went out, no byte
    could be sent for ``quiet`` s, or ``limit`` s passed; return the bytes the server's side
    accepted (bounded in count and time, as every load loop in the tests)."""
    sock.setblocking(False)
    sent = 0
    view = memoryview(data)
    pos = 0
    last = time.monotonic()
    deadline = last + limit
    while sent < cap and time.monotonic() < deadline:
        try:
            n = sock.send(view[pos:])
        except BlockingIOError:
            if time.monotonic() - last > quiet:
                break
            time.sleep(0.01)
            continue
        sent += n
        pos = (pos + n) % len(data)
        last = time.monotonic()
    return sent

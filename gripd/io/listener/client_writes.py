"""The write side of an HTTP/1.1 client connection: :class:`ClientWrites`, the base class of
:class:`~gripd.io.listener.client.ClientConnection`.

- ``write()`` goes straight to the transport (pass-through, where backpressure matters);
- ``queue()`` coalesces writes per loop tick through the ``Flusher``
  (:mod:`gripd.io.listener.flusher`; fan-out: one syscall per connection per tick, whatever the
  number of messages, DESIGN "hot paths");
- ``close()`` sends what was queued first; ``abort()`` drops it.

Kept apart from the request parsing, pipelining and timeouts in :mod:`gripd.io.listener.client`,
which finish a response through ``flush()`` and the ``_after_flush`` hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from gripd.core.http import HttpResponse, encode_full

if TYPE_CHECKING:
    from gripd.io.context import ClientHost

__all__ = ["ClientWrites"]

#: Bytes written (not queued) for a client in one loop tick that are sent at once.
WRITE_NOW = 64 * 1024


class ClientWrites(asyncio.Protocol):
    """Buffers and writes one client connection's response bytes.

    ``ClientConnection.__init__`` sets every attribute, these slots included; ``app``,
    ``transport`` and ``closed`` are slots of the connection.
    """

    __slots__ = ("_after_flush", "_pending", "_pending_size", "_writing_paused")

    app: ClientHost
    transport: asyncio.Transport | None
    closed: bool
    _pending: list[bytes] | None
    _pending_size: int
    _after_flush: Callable[[], None] | None
    _writing_paused: bool

    def write(self, data: bytes) -> None:
        """Write at the end of this loop tick, as :meth:`queue` (pass-through and single
        responses). Sending every client's bytes together at the end of the tick, rather than
        each as it is ready, measured 5-7 % less CPU per long-poll cycle (bench/RESULTS.md,
        "client writes at the end of the tick"): on loopback each send wakes its reader, and
        sends made back to back find it awake more often."""
        if self.transport is not None and not self.closed:
            self.queue(data)
            if self._pending_size >= WRITE_NOW:
                # A large body goes out now: the transport's flow control (pause_writing, and
                # with it the origin's reading) must see the bytes as they come, not per tick.
                self.flush()

    def queue(self, data: bytes) -> None:
        """Write at the end of this loop tick, coalesced with other queued data (fan-out)."""
        if self.closed:
            return
        if self._pending is None:
            self._pending = [data]
            self._pending_size = len(data)
            self.app.flusher.mark(self)
        else:
            self._pending.append(data)
            self._pending_size += len(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and self.transport is not None and not self.closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self._pending_size = 0
        after, self._after_flush = self._after_flush, None
        if after is not None:
            after()

    def buffered(self) -> int:
        """Bytes accepted for this client but not yet taken by the kernel."""
        t = self.transport
        return self._pending_size + (t.get_write_buffer_size() if t is not None else 0)

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            if self._pending:
                self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            if self._pending:
                self.flush()  # what was written before the abort is sent, as a write would have
            self.transport.abort()

    def send_error_and_close(self, resp: HttpResponse) -> None:
        if not self._closing():
            self.write(encode_full(resp, keep_alive=False))
            self.close()

    def _closing(self) -> bool:
        t = self.transport
        return self.closed or t is None or t.is_closing()

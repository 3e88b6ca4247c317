"""A closed client connection is freed by reference counting, not left to the garbage collector.

httptools' parser holds the connection's callbacks and the connection holds its parser: a cycle,
which only the cycle collector frees. With thousands of held connections its full collections
take tens to hundreds of milliseconds, every client waiting meanwhile, and each connection that
closed kept about a dozen objects alive until then. The connection drops its parser when it
closes (and when HTTP/2 takes its transport), so nothing of it outlives the close.
"""

from __future__ import annotations

import gc

import pytest

from gripd.io.listener.client import ClientConnection
from tests.fuzz._common import FakeTransport
from tests.fuzz.client_head import _CONFIG, StubApp

REQUESTS = {
    "answered": (True, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    "held": (False, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"),
    "half a head": (True, b"GET / HTTP/1.1\r\nHo"),
    "bad request": (True, b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n"),
}


def _left() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is ClientConnection)


@pytest.mark.parametrize("case", list(REQUESTS))
def test_a_closed_connection_is_freed_without_the_cycle_collector(case: str) -> None:
    respond, data = REQUESTS[case]
    gc.collect()
    before = _left()
    gc.disable()
    try:
        app = StubApp(_CONFIG, respond=respond)
        for _ in range(20):
            conn = ClientConnection(app)  # type: ignore[arg-type]
            transport = FakeTransport()
            conn.connection_made(transport)
            conn.data_received(data)
            app.loop.run_ready()
            conn.connection_lost(None)
            app.loop.run_ready()
        del conn, transport, app
        assert _left() == before  # with the cycle, 20 would wait for gc.collect()
    finally:
        gc.enable()

"""A fast benchmark origin: raw asyncio Protocol + httptools on uvloop, one process.

Paths (anything after the prefix is the channel name):

- ``/pass``         200, ``ok\\n``, no GRIP (the pass-through benchmark, F12).
- ``/stream/<ch>``  200 ``text/event-stream`` with ``Grip-Hold: stream`` (F24), empty body.
- ``/lp/<ch>``      200 with ``Grip-Hold: response``, ``Grip-Timeout: 600`` (F22), ``timeout\\n``.
- anything else     404.

Run ``python bench/origin.py --port 0``: it prints ``PORT <n>`` on stdout once listening on
127.0.0.1, then serves until SIGTERM/SIGINT. Responses are precomputed where possible so the
origin is never the bottleneck; ``run.py`` reports its CPU time so that can be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
from typing import cast

import httptools
import uvloop

_PASS = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n"
)


def _stream(channel: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nGrip-Hold: stream\r\n"
        b"Grip-Channel: " + channel + b"\r\nContent-Length: 0\r\n\r\n"
    )


def _long_poll(channel: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: response\r\n"
        b"Grip-Channel: " + channel + b"\r\nGrip-Timeout: 600\r\nContent-Length: 8\r\n\r\ntimeout\n"
    )


def respond(path: bytes) -> bytes:
    """The full response bytes for ``path`` (query string already removed)."""
    if path == b"/pass":
        return _PASS
    if path.startswith(b"/stream/") and len(path) > 8:
        return _stream(path[8:])
    if path.startswith(b"/lp/") and len(path) > 4:
        return _long_poll(path[4:])
    return _NOT_FOUND


class OriginProtocol(asyncio.Protocol):
    """One client connection; HTTP/1.1 keep-alive, pipelining-safe (answers in order)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        self.url = b""
        if self.transport is None:
            return
        self.transport.write(respond(path))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` until a stop signal; print the bound port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(OriginProtocol, "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    await stop
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

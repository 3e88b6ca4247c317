"""A fast benchmark origin: raw asyncio Protocol + httptools on uvloop, one process.

Paths (anything after the prefix is the channel name):

- ``/pass``         200, ``ok\\n``, no GRIP (the pass-through benchmark, F12).
- ``/stream/<ch>``  200 ``text/event-stream`` with ``Grip-Hold: stream`` (F24), empty body.
- ``/lp/<ch>``      200 with ``Grip-Hold: response``, ``Grip-Timeout: 600`` (F22), ``timeout\\n``.
- ``POST /woh/<ch>`` WebSocket-over-HTTP (F40, F41; route it with ``over_http``): a request whose
  events start with ``OPEN`` is answered ``OPEN`` + a TEXT event ``c:{"type":"subscribe",...}``
  with ``Sec-WebSocket-Extensions: grip``; any later request (CLOSE, DISCONNECT, keep-alive) gets an
  empty ``application/websocket-events`` body.
- ``GET /wsg/<ch>`` with ``Upgrade: websocket``: a GRIP WebSocket origin (F37-F39), the seed
  example's pattern: ``101`` with ``Sec-WebSocket-Extensions: grip; message-prefix=""``, one text
  frame ``c:{"channel":"<ch>","type":"subscribe"}``, and then it never reads the socket again.
- anything else     404.

Run ``python bench/origin.py --port 0``: it prints ``PORT <n>`` on stdout once listening on
127.0.0.1, then serves until SIGTERM/SIGINT. Responses are precomputed where possible so the
origin is never the bottleneck; ``run.py`` reports its CPU time so that can be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
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


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _subscribe_control(channel: bytes) -> bytes:
    """A ``c:`` GRIP control message subscribing to ``channel`` (F39)."""
    body = json.dumps({"type": "subscribe", "channel": channel.decode()}, separators=(",", ":"))
    return b"c:" + body.encode()


def woh_response(channel: bytes, events: bytes) -> bytes:
    """The response to one WebSocket-over-HTTP POST (F40/F41).

    The first request (events start with ``OPEN``) is accepted and subscribed; every later one
    (``CLOSE``, ``DISCONNECT``, an empty keep-alive) gets an empty event list. A ``CLOSE`` is not
    echoed: the benchmark never closes cleanly before the end, and Pushpin then just drops it."""
    body = b""
    if events.startswith(b"OPEN"):
        msg = _subscribe_control(channel)
        body = b"OPEN\r\nTEXT %x\r\n%s\r\n" % (len(msg), msg)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\n"
        b"Sec-WebSocket-Extensions: grip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def ws_accept(key: bytes, channel: bytes) -> bytes:
    """``101`` with GRIP and an empty message prefix, then one unmasked text frame carrying
    ``c:{"channel":...,"type":"subscribe"}`` (the frame is < 126 bytes for bench channel names)."""
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    ctl = json.dumps({"channel": channel.decode(), "type": "subscribe"}, separators=(",", ":"))
    payload = b"c:" + ctl.encode()
    assert len(payload) < 126
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        b'Sec-WebSocket-Extensions: grip; message-prefix=""\r\n\r\n'
        + bytes([0x81, len(payload)])
        + payload
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

    def __init__(self, held: set[OriginProtocol]) -> None:
        self.held = held  # upgraded connections that must stay open while nobody reads them
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""
        self.ws_key = b""
        self._upgrade_path = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgrade()
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"sec-websocket-key":
            self.ws_key = value.strip()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def upgrade(self) -> None:
        """A WebSocket upgrade: accept ``/wsg/<ch>`` as a GRIP origin, then stop reading."""
        if self.transport is None:
            return
        path = self._upgrade_path
        if not (path.startswith(b"/wsg/") and len(path) > 5 and self.ws_key):
            self.transport.write(_NOT_FOUND)
            self.transport.close()
            return
        self.transport.write(ws_accept(self.ws_key, path[5:]))
        self.transport.pause_reading()  # "never reads": whatever the proxy sends stays queued
        # A paused uvloop stream is not referenced by the loop: without a strong reference the
        # transport/protocol cycle is garbage-collected and the socket closed (seen as origin
        # disconnects: close 1011 from gripd, silent drops from Pushpin).
        self.held.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.held.discard(self)
        self.transport = None

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        self.url = b""
        body, self.body = self.body, b""
        if self.transport is None:
            return
        if self.parser.should_upgrade():
            self._upgrade_path = path  # answered in upgrade(), after feed_data raises
            return
        if path.startswith(b"/woh/") and len(path) > 5:
            self.transport.write(woh_response(path[5:], body))
        else:
            self.transport.write(respond(path))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` until a stop signal; print the bound port."""
    loop = asyncio.get_running_loop()
    held: set[OriginProtocol] = set()
    server = await loop.create_server(lambda: OriginProtocol(held), "127.0.0.1", port, backlog=4096)
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

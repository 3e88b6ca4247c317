"""Small helpers the end-to-end tests share: raw requests and publishes."""

from __future__ import annotations

import asyncio
from typing import Any

import zmq
import zmq.asyncio

from gripd.core.tnetstring import dumps, loads
from tests.support.procs import Server

#: Bound on waiting for the command socket's answer (seconds).
COMMAND_WAIT = 10.0


async def command_request(port: int, req: dict[bytes, Any], within: float = COMMAND_WAIT) -> Any:
    """One request to the command socket (F42, tnetstring over ZeroMQ REQ) on ``port``."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        await sock.send(dumps(req))
        return loads(await asyncio.wait_for(sock.recv(), within))
    finally:
        sock.close()
        ctx.term()


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    """A raw ``GET`` with ``Host: t``; ``extra`` is more header lines ending in CRLF."""
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


async def publish(s: Server, items: list[dict[str, Any]]) -> None:
    """Publish through the HTTP control API and insist on Pushpin's reply (F28)."""
    status, body = await asyncio.to_thread(s.publish, items)
    assert (status, body) == (200, "Published\n")


def lp_item(channel: str, body: str, **extra: object) -> dict[str, object]:
    return {"channel": channel, "formats": {"http-response": {"body": body}}, **extra}


def stream_item(channel: str, content: str, **extra: object) -> dict[str, object]:
    return {"channel": channel, "formats": {"http-stream": {"content": content}}, **extra}

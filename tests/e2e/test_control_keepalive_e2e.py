"""``[gripd] control_keep_alive`` in a real gripd, one process and with two workers (the
control API then runs in the hub): publishes sent one after another and pipelined on one
connection reach stream subscribers, and the answers keep the connection open (F28 otherwise
closes it, as Pushpin does)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.rawhttp import RawResponse, open_request

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nPublished\n"


def publish(channel: str, content: str) -> bytes:
    body = json.dumps(
        {"items": [{"channel": channel, "formats": {"http-stream": {"content": content}}}]}
    ).encode()
    head = f"POST /publish/ HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answers(reader: asyncio.StreamReader, n: int) -> None:
    got = await asyncio.wait_for(reader.readexactly(n * len(ANSWER)), 10 * TIME_SCALE)
    assert got == ANSWER * n


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_publishes_on_one_connection_reach_subscribers(start: StartFn, workers: str) -> None:
    conf = {"gripd": {"control_keep_alive": "true", "workers": workers}}
    s = await start("gripd", ["* test"], conf=conf)
    streams: list[RawResponse] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", s.control_port)
    try:
        for i in range(3):
            req = f"GET /stream?channel=c{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            streams.append(await open_request(s.http_port, req))
        # Until every subscription is known where publishes go (with workers, the hub learns
        # of them from the workers): warm-up items, pipelined on the kept connection.
        seen = [False] * 3
        for _ in range(50):
            writer.write(b"".join(publish(f"c{i}", "w\n") for i in range(3)))
            await answers(reader, 3)
            for i, st in enumerate(streams):
                if not seen[i]:
                    try:
                        await st.read_body_until(b"w\n", timeout=0.2 * TIME_SCALE)
                        seen[i] = True
                    except TimeoutError:
                        pass
            if all(seen):
                break
        assert all(seen)
        # Then one after another, and pipelined, all on the same connection.
        for k in range(3):
            writer.write(publish(f"c{k}", f"one{k}\n"))
            await answers(reader, 1)
        writer.write(b"".join(publish(f"c{k}", f"pipe{k}\n") for k in range(3)))
        await answers(reader, 3)
        for k, st in enumerate(streams):
            await st.read_body_until(f"one{k}\n".encode())
            await st.read_body_until(f"pipe{k}\n".encode())
        # Connection: close from the publisher: answered with it, then closed.
        writer.write(publish("c0", "last\n").replace(b"Host: t\r\n", b"Connection: close\r\n"))
        tail = await asyncio.wait_for(reader.read(), 10 * TIME_SCALE)
        assert tail.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in tail
        await streams[0].read_body_until(b"last\n")
    finally:
        writer.close()
        for st in streams:
            st.close()

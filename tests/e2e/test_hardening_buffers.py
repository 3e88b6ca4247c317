"""Buffers a peer could grow without bound: the test target's ``/ws`` echo (F50), ZeroMQ
publish inputs (F31) with oversized messages, and a GRIP WebSocket's meta (F36).

Memory is the process tree's resident size (VmRSS from /proc); every loop is bounded in count
and time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import pytest
import zmq
import zmq.asyncio
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from gripd.core.wscontrol import META_KEYS_MAX
from tests.conftest import TIME_SCALE, StartFn
from tests.support.flood import push_until_blocked
from tests.support.procs import Impl, Server
from tests.support.wsorigin import OriginConn, RawWsClient, WsOrigin

MiB = 1024 * 1024


def ws_open(port: int, path: str) -> socket.socket:
    """A raw WebSocket client socket after a 101 (small receive buffer: it never reads)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5 * TIME_SCALE)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head[:200]
    return sock


def masked_frames(opcode: Opcode, payload: bytes, count: int) -> bytes:
    """``count`` client (masked) frames of ``payload``, serialized once."""
    return Frame(opcode, payload).serialize(mask=True) * count


# -- 1. the test target's /ws echo (F50) -----------------------------------------------------


@pytest.mark.parametrize(
    ("opcode", "payload", "cap"),
    [
        (Opcode.PING, b"p" * 125, 40 * MiB),  # each ping is answered with a pong
        (Opcode.TEXT, b"t" * 16000, 100 * MiB),  # each message is echoed
    ],
    ids=["ping", "text"],
)
async def test_ws_echo_client_that_never_reads_is_bounded(
    impl: Impl, start: StartFn, opcode: Opcode, payload: bytes, cap: int
) -> None:
    """A client of ``/ws`` that sends and never reads: the proxy stops reading it once its
    answers back up, so the client can push only what kernel buffers hold and the proxy's
    memory stays well below what was offered; another client still gets its echo."""
    s = await start(impl, ["* test"])
    await asyncio.sleep(0.3 * TIME_SCALE)
    rss0 = s.rss_bytes()
    sock = await asyncio.to_thread(ws_open, s.http_port, "/ws")
    try:
        data = masked_frames(opcode, payload, max(1, 256 * 1024 // (len(payload) + 8)))
        sent = await asyncio.to_thread(
            push_until_blocked, sock, data, cap, 2.0 * TIME_SCALE, 60 * TIME_SCALE
        )
        await asyncio.sleep(0.5 * TIME_SCALE)  # let the proxy work through what it read
        grown = s.rss_bytes() - rss0
        # Measured: 5-10 MB accepted (kernel buffers), gripd grew ~1 MiB, Pushpin 1.36 2-4 MiB.
        # Without the bound gripd read all it was offered (42 MB of pings, 100 MB of text)
        # and grew by 66-100 MiB within the test (~700 MiB over 20 s of pings).
        assert sent < cap // 2, (sent, grown)
        if impl == "gripd":
            assert grown < 16 * MiB, (sent, grown)
        # The proxy still serves others.
        other = await asyncio.to_thread(ws_open, s.http_port, "/ws")
        try:
            other.sendall(Frame(Opcode.TEXT, b"alive").serialize(mask=True))
            got = await asyncio.to_thread(other.recv, 4096)
            assert got == Frame(Opcode.TEXT, b"alive").serialize(mask=False), got
        finally:
            other.close()
    finally:
        sock.close()


# -- 2. ZeroMQ publish input: message size (F31) ---------------------------------------------


async def test_zmq_pull_oversized_message_is_refused(start: StartFn) -> None:
    """gripd only (Pushpin sets no limit): a 40 MB PUSH message over ``zmq_max_message_size``
    is not read, not delivered and does not grow memory by its size; gripd stays up and a
    publish from a fresh socket after it reaches the subscriber."""
    s = await start("gripd", ["* test"], conf={"gripd": {"zmq_max_message_size": "1048576"}})
    ws = await connect(
        f"ws://127.0.0.1:{s.http_port}/ws?channel=z",
        open_timeout=5 * TIME_SCALE,
        ping_interval=None,
        max_size=None,
    )
    ctx = zmq.asyncio.Context()
    try:
        await asyncio.sleep(0.3 * TIME_SCALE)  # the subscription reaches the registry
        rss0 = s.rss_bytes()
        spec = f"tcp://127.0.0.1:{s.zmq_pull_port}"

        def item(content: str) -> bytes:
            doc = {"channel": "z", "formats": {"ws-message": {"content": content}}}
            return b"J" + json.dumps(doc).encode()

        big = ctx.socket(zmq.PUSH)
        big.linger = 0
        big.connect(spec)
        await big.send(item("B" * (40 * MiB)))
        await asyncio.sleep(1.0 * TIME_SCALE)
        grown = s.rss_bytes() - rss0
        big.close()
        small = ctx.socket(zmq.PUSH)
        small.linger = 2000
        small.connect(spec)
        await small.send(item("after"))
        got = await asyncio.wait_for(ws.recv(), 5 * TIME_SCALE)
        assert len(got) == 5, f"the oversized message came ({len(got)} bytes)"
        assert got == "after"
        small.close()
        assert s.proc.poll() is None
        assert grown < 16 * MiB, grown
    finally:
        await ws.close()
        ctx.destroy(linger=0)


# -- 3. GRIP WebSocket meta (F36, F39 set-meta) ----------------------------------------------


async def test_ws_set_meta_past_the_cap_is_ignored(impl: Impl, start: StartFn) -> None:
    """An origin's ``set-meta`` messages add keys up to ``META_KEYS_MAX``; gripd ignores the
    rest (and logs once), Pushpin 1.36 keeps them all. Seen through ``var-subst``: a missing
    variable is a filter error that drops the message."""
    async with WsOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        pending = asyncio.ensure_future(RawWsClient.connect(s.http_port, "/ws"))
        oc = await o.next_conn()
        oc.accept_grip()
        c = await pending
        try:
            assert c.response.status == 101
            await _meta_checks(impl, s, oc, c)
        finally:
            c.close()
            await asyncio.sleep(0.1)  # let the transport close before the loop ends


async def _meta_checks(impl: Impl, s: Server, oc: OriginConn, c: RawWsClient) -> None:
    """``META_KEYS_MAX`` + 20 set-meta, then ``var-subst`` of the last kept and first refused."""
    keys = META_KEYS_MAX + 20
    for i in range(keys):
        oc.control(json.dumps({"type": "set-meta", "name": f"n{i}", "value": f"v{i}"}))
    oc.control(json.dumps({"type": "subscribe", "channel": "m", "filters": ["var-subst"]}))
    await asyncio.sleep((1.6 if impl == "pushpin" else 0.3) * TIME_SCALE)
    last_kept, first_over = META_KEYS_MAX - 1, META_KEYS_MAX
    items = [
        {"channel": "m", "formats": {"ws-message": {"content": f"%(n{n})s"}}}
        for n in (last_kept, first_over)
    ]
    items.append({"channel": "m", "formats": {"ws-message": {"content": "end"}}})
    status, body = await asyncio.to_thread(s.publish, items)
    assert (status, body) == (200, "Published\n")
    got: list[bytes] = []
    while not got or got[-1] != b"end":
        op, data = await c.recv_message()
        assert op is Opcode.TEXT
        got.append(data)
    if impl == "gripd":
        assert got == [f"v{last_kept}".encode(), b"end"]
        lines = [ln for ln in s.log_text().splitlines() if "too much meta" in ln]
        assert len(lines) == 1, lines  # once per connection
        assert "route " in lines[0] and f"'n{first_over}'" in lines[0]
    else:
        assert got == [f"v{last_kept}".encode(), f"v{first_over}".encode(), b"end"]

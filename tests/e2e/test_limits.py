"""Limits end to end: ``client_maxconn`` (F3), ``max_open_requests`` (F4),
``connection_subscription_max`` and ``subscription_linger`` (F5), and gripd's own
``[gripd] client_write_buffer_max`` / ``slow_client_policy`` and ``rel=gone`` links.

Differential (gripd and Pushpin 1.36, same assertions) where Pushpin's behaviour is observable;
gripd-only where gripd promises more (slow-client policy ``close``, ``rel=gone``, the
immediate close over ``client_maxconn``).
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, lp_item, publish
from tests.support.origin import Origin, Reply
from tests.support.procs import NO_RATE_LIMIT, Impl, Server
from tests.support.rawhttp import RawResponse, open_request, raw_request

WAIT = 8.0 * TIME_SCALE


async def settle(s: Server) -> None:
    """Let a subscription take effect; Pushpin re-requests ~1 s after a first subscriber."""
    await asyncio.sleep((1.6 if s.impl == "pushpin" else 0.3) * TIME_SCALE)


async def wait_log(s: Server, pattern: re.Pattern[str], within: float = 5.0) -> re.Match[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within * TIME_SCALE
    while True:
        m = pattern.search(s.log_text())
        if m is not None:
            return m
        if loop.time() > deadline:
            raise AssertionError(f"no log line matching {pattern.pattern!r}:\n{s.log_text()}")
        await asyncio.sleep(0.05)


# --- client_maxconn (F3) -----------------------------------------------------------------------


async def _answers(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], within: float
) -> bytes | None:
    """Send a request on ``conn``; the first bytes of the answer, b"" on close, None if none."""
    reader, writer = conn
    try:
        writer.write(get("/x"))
        return await asyncio.wait_for(reader.read(64), within)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def test_client_maxconn(impl: Impl, start: StartFn, origin: Origin) -> None:
    """Over the limit a new connection gets no answer: Pushpin's condure stops accepting (it
    serves one fewer than the limit [measured]); gripd closes it at once and logs a warning.
    Once the connections go, a new one is served again."""
    origin.route("GET", "/x", Reply(200, body="x\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"], conf={"runner": {"client_maxconn": "3"}})
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        served = 0
        for _ in range(3):
            conns.append(await asyncio.open_connection("127.0.0.1", s.http_port))
            got = await _answers(conns[-1], 1.5)
            if got is not None and got.startswith(b"HTTP/1.1 200"):
                served += 1
        assert served == (3 if impl == "gripd" else 2)
        conns.append(await asyncio.open_connection("127.0.0.1", s.http_port))
        got = await _answers(conns[-1], 1.5)
        assert not got  # no HTTP answer over the limit
        if impl == "gripd":
            assert got == b""  # closed at once, not left waiting
            await wait_log(s, re.compile(r"client_maxconn \(3\) reached: refused 1 connection"))
        for _, w in conns:
            w.close()
        conns.clear()
        await asyncio.sleep(0.5)
        conns.append(await asyncio.open_connection("127.0.0.1", s.http_port))
        got = await _answers(conns[-1], 5)
        assert got is not None and got.startswith(b"HTTP/1.1 200")
    finally:
        for _, w in conns:
            w.close()


# --- max_open_requests (F4) --------------------------------------------------------------------


async def test_max_open_requests_queues(impl: Impl, start: StartFn, origin: Origin) -> None:
    """With ``max_open_requests=1`` a second request waits until the first proxy session is
    done (not refused); a held connection no longer counts once it is accepted."""
    origin.route("GET", "/slow", Reply(200, body="slow\n", delay=0.8))
    origin.route(
        "GET", "/hold", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "mo")], "to\n")
    )
    s = await start(
        impl, [f"* 127.0.0.1:{origin.port}"], conf={"proxy": {"max_open_requests": "1"}}
    )
    held = asyncio.create_task(raw_request(s.http_port, get("/hold"), timeout=30))
    try:
        await origin.wait_for("/hold", 1, WAIT)
        await settle(s)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        results = await asyncio.gather(
            *(raw_request(s.http_port, get("/slow"), timeout=20) for _ in range(3))
        )
        elapsed = loop.time() - t0
        assert [(r[0], r[2]) for r in results] == [(200, b"slow\n")] * 3
        assert elapsed >= 2.2  # one at a time: 3 x 0.8 s
        assert not held.done()
        await publish(s, [lp_item("mo", "done\n")])
        assert (await held)[2] == b"done\n"
    finally:
        held.cancel()


async def test_max_open_requests_counts_websockets(
    impl: Impl, start: StartFn, origin: Origin
) -> None:
    """F4: an open WebSocket session counts against ``max_open_requests`` (Pushpin counts
    ``wsProxyItemsBySession``): a request waits until the WebSocket closes."""
    import websockets

    origin.route("GET", "/x", Reply(200, body="x\n"))
    s = await start(
        impl,
        ["*,path_beg=/ws test", f"* 127.0.0.1:{origin.port}"],
        conf={"proxy": {"max_open_requests": "1"}},
    )
    ws = await websockets.connect(f"ws://127.0.0.1:{s.http_port}/ws/ws")
    try:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hi"
        waiting = asyncio.create_task(raw_request(s.http_port, get("/x"), timeout=20))
        await asyncio.sleep(0.8 * TIME_SCALE)
        assert not waiting.done()
    finally:
        await ws.close()
    status, _, body = await asyncio.wait_for(waiting, WAIT)
    assert (status, body) == (200, b"x\n")


# --- connection_subscription_max, subscription_linger (F5) ------------------------------------


async def test_connection_subscription_max(impl: Impl, start: StartFn, origin: Origin) -> None:
    """Only the first ``connection_subscription_max`` channels of a hold are subscribed; the
    rest are dropped with a warning."""
    origin.route(
        "GET",
        "/h",
        Reply(
            200,
            [
                ("Grip-Hold", "response"),
                ("Grip-Channel", "sa"),
                ("Grip-Channel", "sb, sc"),
            ],
            "to\n",
        ),
    )
    s = await start(
        impl,
        [f"* 127.0.0.1:{origin.port}"],
        conf={"handler": {"connection_subscription_max": "2"}},
    )
    task = asyncio.create_task(raw_request(s.http_port, get("/h"), timeout=30))
    try:
        await origin.wait_for("/h", 1, WAIT)
        await settle(s)
        await publish(s, [lp_item("sc", "c\n")])
        await asyncio.sleep(0.4)
        assert not task.done()  # sc was over the limit
        await publish(s, [lp_item("sb", "b\n")])
        assert (await asyncio.wait_for(task, 5))[2] == b"b\n"
        assert "too many subscriptions" in s.log_text()
    finally:
        task.cancel()


async def test_subscription_linger_zero(impl: Impl, start: StartFn, origin: Origin) -> None:
    """``subscription_linger=0``: the subscription ends with its last hold, so the next
    long-poll on the channel is a first subscriber again and gets the F22 update (compare
    test_reliability's lingering case, default 60 s)."""
    origin.route("GET", "/lp", Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "lz")]))
    s = await start(
        impl, [f"* 127.0.0.1:{origin.port}"], conf={"handler": {"subscription_linger": "0"}}
    )
    task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
    try:
        await origin.wait_for("/lp", 2, WAIT)  # the first subscriber's update
        await asyncio.sleep(0.3)
        await publish(s, [lp_item("lz", "one\n")])
        assert (await task)[2] == b"one\n"
        await asyncio.sleep(1.2)  # the subscription is gone (linger 0; Pushpin's timer is 1 s)
        task = asyncio.create_task(raw_request(s.http_port, get("/lp"), timeout=30))
        await origin.wait_for("/lp", 3, WAIT)
        await origin.wait_for("/lp", 4, WAIT)  # updated again: a first subscriber
        await asyncio.sleep(0.3)
        await publish(s, [lp_item("lz", "two\n")])
        assert (await task)[2] == b"two\n"
    finally:
        task.cancel()


# --- slow clients (gripd: client_write_buffer_max, slow_client_policy) ------------------------

CLOSE_LOG = re.compile(r"publish queue at max, closing: conn=(\S+) route=(\S+) peer=(\S+)")


async def test_slow_client_policy_close(start: StartFn, origin: Origin) -> None:
    """gripd only: with ``slow_client_policy=close`` a stream client whose output passes
    ``client_write_buffer_max`` is disconnected, and the log names its connection, route and
    peer (Pushpin #48022); a reading client on the same channel keeps everything."""
    origin.route("GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "sl")], "o\n"))
    conf = {
        **NO_RATE_LIMIT,
        "gripd": {"client_write_buffer_max": "65536", "slow_client_policy": "close"},
    }
    s = await start("gripd", [f"*,id=slowr 127.0.0.1:{origin.port}"], conf=conf)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.setblocking(False)
    fast: RawResponse | None = None
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(slow, ("127.0.0.1", s.http_port))
        await loop.sock_sendall(slow, get("/s"))
        fast = await open_request(s.http_port, get("/s"))
        assert await fast.read_body_until(b"o\n") == b"o\n"
        await origin.wait_for("/s", 2, WAIT)
        await settle(s)
        piece = "y" * 200_000 + "\n"
        for i in range(100):  # up to 20 MB: more than the kernel's socket buffers
            await publish(s, [{"channel": "sl", "http-stream": {"content": f"{i:02d}{piece}"}}])
            await fast.read_body_until(f"{i:02d}y".encode(), timeout=10)
            if CLOSE_LOG.search(s.log_text()):
                break
        m = await wait_log(s, CLOSE_LOG)
        assert m.group(2, 3) == ("slowr", "127.0.0.1")
        # The slow client is cut off: reading what arrived ends in EOF or a reset.
        ended = False
        deadline = loop.time() + 10 * TIME_SCALE
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(slow, 1 << 20), 2)
            except ConnectionError:
                ended = True
                break
            if not data:
                ended = True
                break
        assert ended
        # Unaffected: the reader still gets the next message.
        await publish(s, [{"channel": "sl", "http-stream": {"content": "after\n"}}])
        await fast.read_body_until(b"after\n", timeout=10)
    finally:
        slow.close()
        if fast is not None:
            fast.close()


# --- rel=gone (gripd: Pushpin 1.41 behaviour) -------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "response"])
async def test_gone_link_on_disconnect(
    impl: Impl, start: StartFn, origin: Origin, mode: str
) -> None:
    """A held client with ``Grip-Link: <...>; rel=gone`` that disconnects makes gripd POST the
    link once (best effort, through the route, signed); a hold that ends by a publish does not.
    Pushpin 1.36 ignores ``rel=gone`` (added in 1.41)."""
    origin.route(
        "GET",
        "/g",
        Reply(
            200,
            [
                ("Grip-Hold", mode),
                ("Grip-Channel", "gn"),
                ("Grip-Link", "</gone/1?who=a>; rel=gone"),
            ],
            "o\n" if mode == "stream" else "to\n",
        ),
    )
    origin.route("POST", "/gone/1", Reply(200, body="ok\n"))
    s = await start(impl, [f"* 127.0.0.1:{origin.port}"])
    held = await open_request(s.http_port, get("/g"), timeout=10) if mode == "stream" else None
    lp: asyncio.Task[tuple[int, dict[str, str], bytes]] | None = None
    if held is None:
        _, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
        writer.write(get("/g"))
    try:
        await origin.wait_for("/g", 1, WAIT)
        await settle(s)
        if held is not None:
            held.close()
        else:
            writer.close()
        if impl == "gripd":
            gone = await origin.wait_for("/gone/1", 1, 5 * TIME_SCALE)
            assert (gone.method, gone.query) == ("POST", "who=a")
            assert gone.header("Grip-Sig") is not None
        else:
            with pytest.raises(TimeoutError):
                await origin.wait_for("/gone/1", 1, 1.5)
        # A hold answered by a publish is not "gone".
        lp = asyncio.create_task(raw_request(s.http_port, get("/g"), timeout=30))
        n = len(origin.requests_for("/g"))
        await origin.wait_for("/g", n + 1, WAIT)
        await settle(s)
        if mode == "response":
            await publish(s, [lp_item("gn", "pub\n")])
            assert (await lp)[2] == b"pub\n"
        else:
            await publish(s, [{"channel": "gn", "formats": {"http-stream": {"action": "close"}}}])
            assert (await lp)[2] == b"o\n"
        await asyncio.sleep(0.8)
        assert len(origin.requests_for("/gone/1")) == (1 if impl == "gripd" else 0)
    finally:
        if lp is not None:
            lp.cancel()

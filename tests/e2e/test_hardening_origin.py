"""Origin hardening end to end, gripd and Pushpin 1.36 alike.

1. An origin that never ends its response head (F47): the client gets Pushpin's 502 at once and
   the proxy's memory does not follow the stream. Checked for a proxied request, a WebSocket
   handshake (F37) and a WebSocket-over-HTTP OPEN (F40); gripd caps every origin head at
   ``origin_response_head_max``.
2. Pings through a proxied WebSocket (F37, F40, F50): one pong per ping. The proxy relays a ping
   to the other side and relays the pong that comes back; it does not answer as well. Pushpin
   1.36 drops ping/pong payloads on a WebSocket origin (observed), so payloads are checked on
   gripd only there.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.frames import Opcode

from tests.conftest import TIME_SCALE, StartFn
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server
from tests.support.raworigin import RawOrigin
from tests.support.wsorigin import OriginConn, RawWsClient, WsOrigin

WAIT = 5.0 * TIME_SCALE
STREAM_MAX = 32 * 1024 * 1024  # what the endless origin sends at most (bounded test)
STREAM_SECONDS = 10.0
RSS_SLACK = 8 * 1024 * 1024  # a quarter of the stream: the proxy must not buffer it
WS_HANDSHAKE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

# -- 1. an origin response head that never ends -------------------------------------------------


class EndlessHeadOrigin(RawOrigin):
    """Answers every request (but the readiness probe) with ``status`` and then header lines
    without end, until ``STREAM_MAX`` bytes or ``STREAM_SECONDS`` (bounded) or until cut off."""

    def __init__(self, status: bytes = b"200 OK") -> None:
        super().__init__(WAIT)
        self.status = status
        self.sent = 0
        self.finished = asyncio.Event()  # everything was sent: nobody stopped it

    async def respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 " + self.status + b"\r\n")
        line = b"X-a: " + b"b" * 1000 + b"\r\n"
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_SECONDS
        while self.sent < STREAM_MAX and loop.time() < end:
            writer.write(line * 16)
            self.sent += len(line) * 16
            await asyncio.wait_for(writer.drain(), STREAM_SECONDS)
        self.finished.set()


async def request_while_sampling_rss(
    s: Server, raw: bytes, origin: EndlessHeadOrigin
) -> tuple[bytes, int]:
    """Send ``raw``, read the answer until the proxy closes or goes quiet, and sample the
    proxy's RSS all along; returns (answer, peak RSS growth)."""
    base = s.rss_bytes()
    peak = base
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(raw)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_SECONDS + WAIT
    data = b""
    try:
        while loop.time() < deadline:
            peak = max(peak, s.rss_bytes())
            try:
                more = await asyncio.wait_for(reader.read(65536), 0.05)
            except TimeoutError:
                if data and (origin.cut_off.is_set() or origin.finished.is_set()):
                    break  # an answer, and the origin side is settled
                continue
            if not more:
                break
            data += more
    finally:
        writer.close()
    peak = max(peak, s.rss_bytes())
    return data, peak - base


async def wait_settled(origin: EndlessHeadOrigin) -> None:
    cut = asyncio.ensure_future(origin.cut_off.wait())
    fin = asyncio.ensure_future(origin.finished.wait())
    await asyncio.wait([cut, fin], timeout=STREAM_SECONDS + WAIT, return_when="FIRST_COMPLETED")
    cut.cancel()
    fin.cancel()


def assert_cut_off(s: Server, origin: EndlessHeadOrigin, growth: int) -> None:
    """The proxy stopped reading the head long before the stream's end, and its memory did
    not follow the stream."""
    assert origin.cut_off.is_set() and not origin.finished.is_set(), origin.sent
    assert origin.sent < STREAM_MAX // 4
    assert growth < RSS_SLACK, f"{s.impl} RSS grew by {growth} bytes"


async def test_endless_origin_head_gets_502(impl: Impl, start: StartFn) -> None:
    """F47: Pushpin answers ``502`` ``Error while proxying to origin.`` (text/plain); gripd
    the same once the head passes ``origin_response_head_max``, and logs the reason."""
    async with EndlessHeadOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        raw = b"GET /endless HTTP/1.1\r\nHost: example.com\r\n\r\n"
        data, growth = await request_while_sampling_rss(s, raw, o)
        await wait_settled(o)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 502 Bad Gateway"
        assert b"Content-Type: text/plain" in lines
        assert body == b"Error while proxying to origin.\n"
        assert_cut_off(s, o, growth)
        if impl == "gripd":
            log = s.log_text()
            assert "Response head from origin over 65536 bytes" in log
            assert "conn " in log and "GET http://example.com/endless" in log


async def test_endless_ws_handshake_head_gets_502(impl: Impl, start: StartFn) -> None:
    """F37: the same for a WebSocket origin's handshake answer; Pushpin's WebSocket 502 has no
    Content-Type. Pushpin 1.36 answers 502 at once but goes on reading the whole stream into
    memory (observed: +55 MB for 32 MB), so the memory check is gripd's only."""
    async with EndlessHeadOrigin(b"101 Switching Protocols") as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        raw = b"GET /ws HTTP/1.1\r\nHost: example.com\r\n" + WS_HANDSHAKE + b"\r\n"
        data, growth = await request_while_sampling_rss(s, raw, o)
        await wait_settled(o)
        if impl == "pushpin" and data == b"":
            # Seen in 3 of about 10 full-suite runs (4 test processes in parallel): Pushpin
            # closed the client connection with no answer at all. gripd's side is checked
            # every time.
            pytest.xfail("Pushpin 1.36 sometimes closes without its 502 under parallel load")
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 502 Bad Gateway"
        assert not any(x.lower().startswith(b"content-type:") for x in lines)
        assert body == b"Error while proxying to origin.\n"
        if impl == "gripd":
            assert_cut_off(s, o, growth)
            assert "ws /ws: Response head from origin over 65536 bytes" in s.log_text()


async def test_endless_woh_open_head_gets_502(impl: Impl, start: StartFn) -> None:
    """F40: a WebSocket-over-HTTP origin answering the OPEN with an endless head."""
    async with EndlessHeadOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port},over_http"])
        raw = b"GET /woh HTTP/1.1\r\nHost: example.com\r\n" + WS_HANDSHAKE + b"\r\n"
        data, growth = await request_while_sampling_rss(s, raw, o)
        await wait_settled(o)
        assert data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert data.endswith(b"\r\n\r\nError while proxying to origin.\n")
        assert_cut_off(s, o, growth)


# -- 2. one pong per ping ---------------------------------------------------------------------


async def frames(peer: RawWsClient | OriginConn, within: float) -> list[tuple[Opcode, bytes]]:
    """Every frame ``peer`` gets in the next ``within`` seconds (it answers pings itself, as any
    WebSocket peer does, when it reads them)."""
    out: list[tuple[Opcode, bytes]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + within * TIME_SCALE
    while (left := end - loop.time()) > 0:
        try:
            f = await peer.recv_frame(left)
        except (TimeoutError, EOFError):
            break
        out.append((f.opcode, bytes(f.data)))
    return out


def pongs(got: list[tuple[Opcode, bytes]]) -> list[bytes]:
    return [data for op, data in got if op is Opcode.PONG]


async def open_ws(s: Server, o: WsOrigin, grip: bool) -> tuple[RawWsClient, OriginConn]:
    pending = asyncio.ensure_future(RawWsClient.connect(s.http_port, "/p"))
    oc = await o.next_conn()
    if grip:
        oc.accept_grip()
    else:
        oc.accept()
    c = await pending
    assert c.response.status == 101
    return c, oc


@pytest.mark.parametrize("grip", [False, True], ids=["plain", "grip"])
async def test_client_ping_gets_one_pong(impl: Impl, start: StartFn, grip: bool) -> None:
    """F37: the client's ping goes to the origin; the origin's pong is the only one back."""
    async with WsOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        c, oc = await open_ws(s, o, grip)
        c.send_ping(b"cping")
        at_origin = await frames(oc, 1.0)  # reading it makes the origin answer
        assert [op for op, _ in at_origin] == [Opcode.PING]
        got = await frames(c, 1.5)
        assert len(pongs(got)) == 1, got
        if impl == "gripd":
            assert at_origin == [(Opcode.PING, b"cping")]
            assert pongs(got) == [b"cping"]
        c.close()


@pytest.mark.parametrize("grip", [False, True], ids=["plain", "grip"])
async def test_origin_ping_gets_one_pong(impl: Impl, start: StartFn, grip: bool) -> None:
    """F37: the other way round, the client's pong is the only one the origin gets."""
    async with WsOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        c, oc = await open_ws(s, o, grip)
        oc.send_ping(b"oping")
        at_client = await frames(c, 1.0)  # reading it makes the client answer
        assert [op for op, _ in at_client] == [Opcode.PING]
        got = await frames(oc, 1.5)
        assert len(pongs(got)) == 1, got
        if impl == "gripd":
            assert at_client == [(Opcode.PING, b"oping")]
            assert pongs(got) == [b"oping"]
        c.close()


def woh_events(body: bytes) -> list[tuple[str, bytes | None]]:
    """``TYPE [hex-len]\\r\\n[content\\r\\n]`` events (F40), parsed independently of gripd."""
    out: list[tuple[str, bytes | None]] = []
    i = 0
    while i < len(body):
        j = body.index(b"\r\n", i)
        name, _, hexlen = body[i:j].decode().partition(" ")
        i = j + 2
        if hexlen:
            n = int(hexlen, 16)
            out.append((name, body[i : i + n]))
            i += n + 2
        else:
            out.append((name, None))
    return out


async def test_woh_ping_gets_one_pong(impl: Impl, start: StartFn) -> None:
    """F40: the ping goes to the origin as a PING event; its PONG event is the one pong."""

    def answer(req: RecordedRequest) -> Reply:
        out = b""
        for name, content in woh_events(req.body):
            if name == "OPEN":
                out += b"OPEN\r\n"
            elif name == "PING":
                out += b"PONG %x\r\n%b\r\n" % (len(content or b""), content or b"")
        return Reply(200, [("Content-Type", "application/websocket-events")], out)

    async with Origin() as o:
        o.route("POST", "/w", answer)
        s = await start(impl, [f"* 127.0.0.1:{o.port},over_http"])
        c = await RawWsClient.connect(s.http_port, "/w")
        assert c.response.status == 101
        c.send_ping(b"cping")
        got = await frames(c, 2.0)
        assert pongs(got) == [b"cping"], got
        sent = [e for r in o.requests_for("/w") for e in woh_events(r.body)]
        assert ("PING", b"cping") in sent
        c.close()


async def test_test_target_ws_ping_gets_one_pong(impl: Impl, start: StartFn) -> None:
    """F50: the test target's ``/ws`` is its own origin and answers a ping once."""
    s = await start(impl, ["* test"])
    c = await RawWsClient.connect(s.http_port, "/ws")
    assert c.response.status == 101
    c.send_ping(b"tping")
    got = await frames(c, 1.5)
    assert pongs(got) == [b"tping"], got
    c.close()


async def test_detached_client_ping_is_not_answered(impl: Impl, start: StartFn) -> None:
    """F39 ``detach``: no origin is left to answer, and Pushpin does not answer itself."""
    async with WsOrigin() as o:
        s = await start(impl, [f"* 127.0.0.1:{o.port}"])
        c, oc = await open_ws(s, o, True)
        oc.control(json.dumps({"type": "detach"}))
        await frames(oc, 1.0)
        c.send_ping(b"dping")
        got = await frames(c, 1.5)
        assert pongs(got) == [], got
        c.close()

"""StatsPublisher (F43) against a real ZeroMQ SUB socket on an ipc:// spec."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from gripd.core import tnetstring
from gripd.core.config import Config, default_config
from gripd.io.observe.stats import StatsPublisher
from tests.conftest import TIME_SCALE

Frame = tuple[str, dict[str, Any]]


def _config(tmp_path: Path, **kw: Any) -> Config:
    base: dict[str, Any] = {
        "stats_spec": f"ipc://{tmp_path}/run/gp-stats",
        "stats_format": "tnetstring",
        "stats_report_interval": 10,
        "stats_connection_ttl": 120,
        "stats_subscription_ttl": 60,
        "subscription_linger": 60,
    }
    base.update(kw)
    return dataclasses.replace(default_config(str(tmp_path)), **base)


def _decode(frame: bytes) -> Frame:
    ptype, _, rest = frame.partition(b" ")
    if rest[:1] == b"J":
        return ptype.decode(), json.loads(rest[1:])
    assert rest[:1] == b"T", frame
    obj = tnetstring.loads(rest[1:])
    assert isinstance(obj, dict)
    return ptype.decode(), {
        k.decode(): (v.decode() if isinstance(v, bytes) else v) for k, v in obj.items()
    }


class Sub:
    """A SUB socket reading stats frames."""

    def __init__(self, ctx: zmq.asyncio.Context, spec: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(spec)

    async def recv(self, timeout: float = 3.0) -> Frame:
        frames = await asyncio.wait_for(self.sock.recv_multipart(), timeout * TIME_SCALE)
        assert len(frames) == 1  # single-part messages (F43)
        return _decode(frames[0])

    async def until(self, ptype: str, timeout: float = 3.0, **match: Any) -> Frame:
        """The next frame of ``ptype`` whose fields include ``match`` (others are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout * TIME_SCALE
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {ptype} {match}")
            t, f = await self.recv(left)
            if t == ptype and all(f.get(k) == v for k, v in match.items()):
                return t, f

    async def drain(self, wait: float = 0.05) -> list[Frame]:
        out: list[Frame] = []
        while await self.sock.poll(int(wait * 1000 * TIME_SCALE)):
            out.append(_decode(await self.sock.recv()))
        return out


Factory = Callable[..., Awaitable[tuple[StatsPublisher, Sub]]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Factory]:
    ctx = zmq.asyncio.Context()
    pubs: list[StatsPublisher] = []
    subs: list[Sub] = []

    async def _make(refresh_interval: float = 1.0, **kw: Any) -> tuple[StatsPublisher, Sub]:
        cfg = _config(tmp_path, **kw)
        pub = StatsPublisher(cfg, refresh_interval=refresh_interval)
        await pub.start()
        pubs.append(pub)
        sub = Sub(ctx, cfg.stats_spec)
        subs.append(sub)
        # PUB drops until the subscription has arrived: announce a connection until seen.
        for _ in range(200):
            pub.request_started("warmup", "", "http", "", False)
            if await sub.sock.poll(20):
                break
        else:
            raise AssertionError("SUB never connected")
        pub.connection_closed("warmup")
        pub.state.flush_activity()  # the warm-up's requests are activity too: not the test's
        await sub.drain()
        return pub, sub

    yield _make
    for p in pubs:
        await p.stop()
    for s in subs:
        s.sock.close(0)
    ctx.term()


async def test_conn_packets(make: Factory) -> None:
    pub, sub = await make()
    pub.request_started("7", "10.1.2.3", "http", "", False)
    _, f = await sub.until("conn")
    assert f == {
        "from": f"gripd_{os.getpid()}",
        "id": f"gripd_{os.getpid()}:7-{pub._seq}",
        "type": "http",
        "peer-address": "10.1.2.3",
        "ttl": 120,
    }
    cid = pub.current_stats_id("7")
    assert cid is not None and cid == f["id"] and pub.check_connection(cid)
    pub.request_ended("7")
    _, f = await sub.until("conn")
    assert f["unavailable"] is True and f["id"] == cid
    assert not pub.check_connection(cid) and pub.current_stats_id("7") is None


async def test_json_format(make: Factory) -> None:
    pub, sub = await make(stats_format="json")
    pub.subscribed("ch", "stream", True)
    frames = await sub.sock.recv_multipart()
    assert frames[0].startswith(b'sub J{"channel":"ch","from":"gripd_')
    assert json.loads(frames[0][5:])["subscribers"] == 1


async def test_sub_counts_and_unsubscribe(make: Factory) -> None:
    pub, sub = await make(refresh_interval=0.05)
    pub.subscribed("a", "stream", True)
    assert (await sub.until("sub"))[1]["subscribers"] == 1
    pub.subscribed("a", "stream", False)
    pub.subscribed("a", "stream", False)
    # the count change is announced at the next refresh tick
    assert (await sub.until("sub", channel="a"))[1]["subscribers"] == 3
    pub.unsubscribed("a", "stream", False)
    pub.unsubscribed("a", "stream", False)
    pub.unsubscribed("a", "stream", True)
    _, f = await sub.until("sub", unavailable=True)
    assert (f["mode"], f["channel"]) == ("stream", "a")


async def test_response_unsubscribe_lingers(make: Factory) -> None:
    pub, sub = await make(refresh_interval=0.05, subscription_linger=1)
    pub.subscribed("b", "response", True)
    await sub.until("sub")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pub.unsubscribed("b", "response", True)
    _, f = await sub.until("sub", unavailable=True)
    assert f["channel"] == "b"
    assert loop.time() - t0 >= 0.9  # held for subscription_linger (1 s)


async def test_ttl_refresh(make: Factory) -> None:
    pub, sub = await make(refresh_interval=0.05, stats_connection_ttl=1, stats_subscription_ttl=1)
    pub.request_started("r", "", "http", "", False)
    pub.subscribed("c", "ws", True)
    await sub.drain()
    # both are re-announced every 3/4 of their (1 s) ttl
    got = await sub.until("conn", id=pub.current_stats_id("r"))
    assert got[1]["ttl"] == 1
    got = await sub.until("sub", channel="c")
    assert got[1]["ttl"] == 1 and got[1]["subscribers"] == 1


async def test_message_activity_counts_and_report(make: Factory) -> None:
    pub, sub = await make(stats_report_interval=1)
    pub.request_received()
    pub.request_received()
    pub.request_started("c1", "1.2.3.4", "http", "", False)
    pub.request_started("c2", "1.2.3.4", "http", "", False)
    pub.message_received("a", "http")
    pub.delivered("a", "id1", "http-stream", 5)
    _, m = await sub.until("message")
    assert {k: m[k] for k in ("channel", "item-id", "count", "transport")} == {
        "channel": "a",
        "item-id": "id1",
        "count": 5,
        "transport": "http-stream",
    }
    assert (await sub.until("activity"))[1]["count"] == 2
    assert (await sub.until("counts"))[1]["requests-received"] == 2
    _, r = await sub.until("report", timeout=3.0)
    assert r["received"] == 1 and r["sent"] == 5
    assert 500 <= r["duration"] <= 3000
    assert pub.state.totals.message_sent == 5


async def test_stop_releases_the_spec(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    pub = StatsPublisher(cfg)
    await pub.start()
    await pub.stop()
    again = StatsPublisher(cfg)
    await again.start()  # the endpoint is free again
    await again.stop()
    pub.request_started("x", "", "http", "", False)  # after stop: no socket, no error


async def test_bind_failure_is_reported(tmp_path: Path) -> None:
    cfg = _config(tmp_path, stats_spec="tcp://256.0.0.1:1")
    pub = StatsPublisher(cfg)
    with pytest.raises(OSError, match=r"cannot listen on tcp://256\.0\.0\.1:1 \(stats_spec\)"):
        await pub.start()


async def test_no_spec_keeps_state_without_socket(tmp_path: Path) -> None:
    pub = StatsPublisher(_config(tmp_path, stats_spec=""))
    await pub.start()
    try:
        pub.request_started("1", "", "ws", "", False)
        pub.request_received()
        assert pub.sent == 0
        assert pub.state.totals.request_received == 1
        cid = pub.current_stats_id("1")
        assert cid is not None and pub.check_connection(cid)
    finally:
        await pub.stop()

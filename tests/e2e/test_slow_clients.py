"""Slow-client visibility on a real gripd, in one process and with workers (where the hub's
Prometheus endpoint shows the whole instance).

A stream client on route ``slowr`` that never reads, while large items go to its channel: the
per-route drop counter rises, the queued-bytes histogram has one sample per drop (each above
``client_write_buffer_max``), and ``/status/slowest`` lists the connection with its route,
peer, queued bytes and the messages it missed. With ``slow_client_policy = close`` the
per-route close counter counts the connection once, and the client is cut off.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish
from tests.support.procs import NO_RATE_LIMIT, Server, free_ports
from tests.support.rawhttp import raw_request

WAIT = 15.0 * TIME_SCALE
BUFFER_MAX = 1_048_576  # client_write_buffer_max (the default, set to be sure)
BIG = {"channel": "big", "formats": {"http-stream": {"content": "x" * 200_000}}}

Samples = dict[str, float]


async def fetch(prom: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await raw_request(prom, get(path), timeout=WAIT)


async def scrape(prom: int) -> Samples:
    code, _, body = await fetch(prom, "/metrics")
    assert code == 200
    out: Samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def status(prom: int) -> dict[str, Any]:
    code, _, body = await fetch(prom, "/status")
    assert code == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


async def start_gripd(start: StartFn, workers: int, policy: str, route: str) -> tuple[Server, int]:
    (prom,) = free_ports(1)
    conf = {
        **NO_RATE_LIMIT,
        "gripd": {
            "workers": str(workers),
            "slow_client_policy": policy,
            "client_write_buffer_max": str(BUFFER_MAX),
        },
        "proxy": {"prometheus_port": f"127.0.0.1:{prom}", "prometheus_prefix": "pp_"},
    }
    s = await start("gripd", [f"*,id={route} test"], conf=conf)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while workers > 1 and f"started {workers} workers" not in s.log_text():
        assert loop.time() < deadline, s.log_text()
        await asyncio.sleep(0.05)
    return s, prom


async def slow_stream(s: Server, prom: int) -> socket.socket:
    """A stream client on channel ``big`` that never reads (a small receive buffer)."""
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", s.http_port))
    slow.sendall(get("/stream?channel=big"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (await status(prom))["subscriptions"]["stream"] != 1:
        assert loop.time() < deadline, "the stream client was never held"
        await asyncio.sleep(0.1)
    return slow


async def publish_until(s: Server, prom: int, metric: str) -> Samples:
    """Publish 800 kB at a time (the control API takes 1 MB) until ``metric`` is above 0."""
    for _ in range(40):  # up to 32 MB: far more than the kernel's socket buffers
        await publish(s, [BIG] * 4)
        got = await scrape(prom)
        if got.get(metric, 0) > 0:
            return got
    raise AssertionError(f"{metric} never rose: {await scrape(prom)}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
async def test_drops_by_route_histogram_and_slowest(start: StartFn, workers: int) -> None:
    s, prom = await start_gripd(start, workers, "drop", "slowr")
    before = await scrape(prom)
    drops = 'pp_gripd_slow_client_route_drops_total{route="slowr"}'
    assert drops not in before  # a route's series appears with its first drop
    assert before["pp_gripd_slow_client_queued_bytes_count"] == 0
    slow = await slow_stream(s, prom)
    try:
        got = await publish_until(s, prom, drops)
        n = got[drops]
        # One histogram sample per dropped message, each over client_write_buffer_max.
        assert got["pp_gripd_slow_client_queued_bytes_count"] == n
        assert got["pp_gripd_slow_client_queued_bytes_sum"] > n * BUFFER_MAX
        assert got['pp_gripd_slow_client_queued_bytes_bucket{le="1.048576e+06"}'] == 0
        assert got['pp_gripd_slow_client_queued_bytes_bucket{le="+Inf"}'] == n
        assert got["pp_gripd_slow_client_drops_total"] == n
        assert got['pp_gripd_dropped_total{reason="slow_client"}'] == n
        assert not any(k.startswith("pp_gripd_slow_client_closes_total") for k in got)
        # More publishes, more drops, on the same route series.
        await publish(s, [BIG] * 4)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while (await scrape(prom))[drops] < n + 4:
            assert loop.time() < deadline, await scrape(prom)
            await asyncio.sleep(0.1)

        # /status/slowest lists it (reports come every 2 s).
        deadline = loop.time() + WAIT
        while True:
            code, headers, body = await fetch(prom, "/status/slowest?n=5")
            assert code == 200 and headers["content-type"] == "application/json", body
            doc = json.loads(body)
            if doc["connections"] and doc["connections"][0].get("dropped", 0) >= n + 4:
                break
            assert loop.time() < deadline, doc
            await asyncio.sleep(0.2)
        assert doc["backed_up"] == 1 and len(doc["connections"]) == 1
        (conn,) = doc["connections"]
        assert (conn["route"], conn["peer"], conn["transport"]) == ("slowr", "127.0.0.1", "http")
        assert conn["queued"] > BUFFER_MAX
        assert conn["age"] >= 0 and conn["worker"] in range(workers)
        assert re.fullmatch(r"\S+", conn["id"])
        # The same connection is /status's slowest, and the drop line in the log names it.
        top = (await status(prom))["slow"]["top"]
        assert [c["id"] for c in top] == [conn["id"]]
        assert f"publish queue at max, dropping: conn={conn['id']} route=slowr" in s.log_text()

        # A bad n is a 400 that says why; the exposition is untouched on other paths.
        for bad in ("0", "101", "ten", "-1"):
            code, _, body = await fetch(prom, f"/status/slowest?n={bad}")
            assert code == 400 and body.startswith(b"n must be a whole number from 1 to 100"), (
                bad,
                body,
            )
    finally:
        slow.close()


@pytest.mark.timeout(120)
async def test_close_policy_counts_closed_connection(start: StartFn) -> None:
    s, prom = await start_gripd(start, 2, "close", "slowc")
    slow = await slow_stream(s, prom)
    try:
        closes = 'pp_gripd_slow_client_closes_total{route="slowc"}'
        got = await publish_until(s, prom, closes)
        assert got[closes] == 1
        assert got['pp_gripd_slow_client_route_drops_total{route="slowc"}'] >= 1
        assert got["pp_gripd_slow_client_queued_bytes_count"] >= 1
        # The connection is gone: later publishes close nothing more, and it is not listed.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while (await status(prom))["connections"]["total"] != 0:
            assert loop.time() < deadline, await status(prom)
            await asyncio.sleep(0.1)
        await publish(s, [BIG] * 4)
        assert (await scrape(prom))[closes] == 1
        assert s.log_text().count("publish queue at max, closing: ") == 1
        deadline = loop.time() + WAIT
        while json.loads((await fetch(prom, "/status/slowest"))[2])["connections"]:
            assert loop.time() < deadline
            await asyncio.sleep(0.2)
    finally:
        slow.close()

"""The multi-worker runtime (``[gripd] workers``) end to end: real ``python -m gripd`` processes.

With ``workers = N`` (N > 1) the hub process owns the publish inputs, stats and Prometheus and
starts N worker processes sharing the client port (SO_REUSEPORT); published items reach only the
workers holding their channels. These tests check that what a single process does (holds F22/F24,
publishing F28/F31, ``recover`` F27 and the command socket F42, stats/metrics F43/F44,
``client_maxconn`` F3, routes reload F6) still holds for the instance as a whole.

Which worker holds a client connection is read from ``/proc``: a worker's descriptors that are
sockets, matched by inode against ``/proc/<pid>/net/tcp`` (ESTABLISHED, local port = the proxy's
``http_port``); the remote port names the client. The kernel spreads connections over the
workers by a hash of the address pair, so tests that need both workers busy open connections
until both hold some (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import zmq
import zmq.asyncio
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import command_request, get, lp_item, publish, stream_item
from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import (
    Server,
    ServerStartError,
    cmdline,
    established_peer_ports,
    pid_alive,
    process_tree,
    run_gripd_expecting_exit,
)
from tests.support.rawhttp import RawResponse, open_request, raw_request

T = TypeVar("T")

WAIT = 10.0 * TIME_SCALE
WORKER_MODULE = "gripd.runtime.worker"
LP = [("Grip-Hold", "response"), ("Grip-Channel", "lp")]


# --- helpers --------------------------------------------------------------------------------------


def conf(workers: int | str = 2) -> dict[str, dict[str, str]]:
    """``[gripd] workers`` plus a Prometheus endpoint (prefix ``pp_``) on a Unix socket in the
    server's rundir (a TCP port chosen here could collide with the ports ``start_server``
    picks)."""
    return {
        "gripd": {"workers": str(workers)},
        "handler": {"prometheus_port": "ipc://{rundir}/gp-prom", "prometheus_prefix": "pp_"},
    }


async def start_hub(
    start: StartFn, routes: list[str], c: dict[str, dict[str, str]], workers: int = 2
) -> Server:
    """Start gripd and wait for the hub's ``started N workers``: the readiness probe passes as
    soon as the first worker listens, before the others have bound the port."""
    s = await start("gripd", routes, conf=c)
    await wait_until(lambda: f"started {workers} workers" in s.log_text(), "every worker ready")
    return s


def worker_pids(s: Server) -> list[int]:
    """The hub's live worker processes: its children (forked at start, so they share its
    command line; a restarted one runs ``python -m gripd.runtime.worker``)."""
    return sorted(p for p in process_tree(s.proc.pid)[1:] if "gripd" in cmdline(p))


def held_by_worker(s: Server) -> dict[int, set[int]]:
    """worker pid -> client ports of the connections it holds."""
    return {pid: established_peer_ports(pid, s.http_port) for pid in worker_pids(s)}


def local_port(resp: RawResponse) -> int:
    return int(resp.writer.get_extra_info("sockname")[1])


async def wait_until(cond: Callable[[], object], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def metrics(s: Server) -> dict[str, float]:
    """The hub's Prometheus exposition (F44) as ``{series: value}``."""
    path = (s.tmp_rundir or s.workdir / "run") / "gp-prom"
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), WAIT)  # the endpoint closes when done
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    out: dict[str, float] = {}
    for ln in body.decode().splitlines():
        if ln and not ln.startswith("#"):
            name, value = ln.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def wait_metric(s: Server, name: str, want: float, within: float = WAIT) -> None:
    """Poll the Prometheus endpoint until ``name`` equals ``want``."""
    deadline = time.monotonic() + within
    seen: float | None = None
    while True:
        seen = (await metrics(s)).get(name)
        if seen == want:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} is {seen}, not {want}")
        await asyncio.sleep(0.05)


STREAMS = 'pp_gripd_subscriptions{mode="stream"}'
RESPONSES = 'pp_gripd_subscriptions{mode="response"}'
CONNS = 'pp_gripd_connections{transport="http"}'


async def open_stream(s: Server, channel: str = "test") -> RawResponse:
    """A stream hold through the built-in test target (F50/F24), its first chunk read."""
    resp = await open_request(s.http_port, get(f"/stream?channel={channel}"), WAIT)
    assert resp.status == 200
    await resp.read_body_until(b"[stream opened]\n", WAIT)
    return resp


async def open_spread(
    s: Server, n: int, opener: Callable[[int], Awaitable[T]], extra: int = 16
) -> list[T]:
    """Open ``n`` held connections, then (at most ``extra``) more until both workers hold some."""
    out = [await opener(i) for i in range(n)]
    for i in range(n, n + extra):
        held = held_by_worker(s)
        if len(held) == 2 and all(held.values()):
            break
        out.append(await opener(i))
    held = held_by_worker(s)
    assert len(held) == 2 and all(held.values()), f"connections not spread: {held}"
    return out


async def open_long_poll(s: Server, origin: Origin, path: str, i: int) -> RawResponse:
    """A long-poll (F22) ``path?c=i`` whose request reached the origin (so it is being held)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(get(f"{path}?c={i}"))
    query = f"c={i}"
    await wait_until(
        lambda: any(r.query == query for r in origin.requests_for(path)), f"{path}?{query}"
    )
    return RawResponse(reader, writer)


async def settle_holds(s: Server, origin: Origin, path: str, n: int) -> Counter[str]:
    """Wait until ``n`` response holds are in place and the origin has stopped seeing requests
    for ``path``: each worker re-requests its holds ~1 s after a channel's first subscription
    there (the F22 quirk), and a publish during that retry would miss the client. Returns the
    requests seen per query string."""

    def seen() -> Counter[str]:
        return Counter(r.query for r in origin.requests_for(path))

    before = seen()
    for _ in range(10):
        await asyncio.sleep(1.5 * TIME_SCALE)  # longer than the F22 delay
        now = seen()
        if now == before and (await metrics(s)).get(RESPONSES) == n:
            return now
        before = now
    raise TimeoutError(f"holds not settled: {seen()}")


def close_all(conns: list[RawResponse]) -> None:
    for c in conns:
        c.close()


# --- processes ------------------------------------------------------------------------------------


async def test_two_workers_are_two_child_processes(start: StartFn) -> None:
    c = conf(2)
    s = await start_hub(start, ["* test"], c)
    tree = process_tree(s.proc.pid)
    assert len(tree) == 3, [cmdline(p) for p in tree]
    assert all("python" in cmdline(p) for p in tree)
    assert "-m gripd " in cmdline(s.proc.pid) and WORKER_MODULE not in cmdline(s.proc.pid)
    assert len(worker_pids(s)) == 2
    status, _, body = await raw_request(s.http_port, get("/"))
    assert (status, body) == (200, b"Hello from the Pushpin test handler!\n")


async def test_one_worker_is_a_single_process(start: StartFn) -> None:
    c = conf(1)
    s = await start("gripd", ["* test"], conf=c)
    assert process_tree(s.proc.pid) == [s.proc.pid]
    status, _, _ = await raw_request(s.http_port, get("/"))
    assert status == 200


async def test_workers_auto_is_one_per_cpu(start: StartFn) -> None:
    c = conf("auto")
    cpus = len(os.sched_getaffinity(0))
    if cpus > 16:
        pytest.skip(f"{cpus} CPUs: too many worker processes for a quick test")
    s = await (
        start_hub(start, ["* test"], c, cpus) if cpus > 1 else start("gripd", ["* test"], conf=c)
    )
    assert len(worker_pids(s)) == (cpus if cpus > 1 else 0)


# --- publishing across workers --------------------------------------------------------------------


async def test_stream_fan_out_across_workers(start: StartFn) -> None:
    """F24/F28: 20 streams spread over both workers each get all 5 items, in order."""
    c = conf(2)
    s = await start_hub(start, ["* test"], c)
    streams = [await open_stream(s) for _ in range(20)]
    try:
        held = held_by_worker(s)
        assert len(held) == 2
        # every stream is held by exactly one worker, and both workers hold some
        ports = {local_port(r) for r in streams}
        assert set().union(*held.values()) == ports
        assert sum(len(v) for v in held.values()) == 20
        assert all(held.values()), f"one worker holds nothing: {held}"
        await wait_metric(s, STREAMS, 20)  # the hub has seen every subscription
        for n in range(1, 6):
            await publish(s, [stream_item("test", f"item {n}\n")])
        want = b"".join(f"item {n}\n".encode() for n in range(1, 6))
        for r in streams:
            assert await r.read_body_until(b"item 5\n", WAIT) == want
        # The workers report their deliveries to the hub's counters after writing them.
        await wait_metric(s, 'pp_gripd_delivered_total{transport="http-stream"}', 100)
        m = await metrics(s)
        assert m['pp_gripd_publish_received_total{source="http"}'] == 5  # counted once, by the hub
        assert m['pp_gripd_delivered_total{transport="http-stream"}'] == 100
    finally:
        close_all(streams)


async def test_items_go_only_to_the_channels_holders(start: StartFn) -> None:
    """A channel held in one worker only still reaches its subscriber; other channels' items do
    not appear on it (the hub routes by channel)."""
    c = conf(2)
    s = await start_hub(start, ["* test"], c)
    a = await open_stream(s, "a")
    b = await open_stream(s, "b")
    try:
        await wait_metric(s, STREAMS, 2)
        await publish(s, [stream_item("b", "to b\n"), stream_item("a", "to a\n")])
        await publish(s, [stream_item("a", "end\n"), stream_item("b", "end\n")])
        assert await a.read_body_until(b"end\n", WAIT) == b"to a\nend\n"
        assert await b.read_body_until(b"end\n", WAIT) == b"to b\nend\n"
    finally:
        close_all([a, b])


async def test_long_poll_across_workers_one_publish_answers_all(
    start: StartFn, origin: Origin
) -> None:
    """F22: 10+ long-polls held in both workers are all answered by one publish."""
    origin.route("GET", "/lp", Reply(200, LP, "timeout\n"))
    c = conf(2)
    s = await start_hub(start, [f"* 127.0.0.1:{origin.port}"], c)
    polls = await open_spread(s, 10, lambda i: open_long_poll(s, origin, "/lp", i))
    try:
        await settle_holds(s, origin, "/lp", len(polls))
        await publish(s, [lp_item("lp", "published\n")])
        for p in polls:
            await p.head(WAIT)
            assert p.status == 200
            assert await p.read_to_end(WAIT) == b"published\n"
    finally:
        close_all(polls)


async def test_websocket_fan_out_across_workers(start: StartFn) -> None:
    """F30/F50: WebSocket subscribers of the test target in both workers all get a ws-message."""
    s = await start_hub(start, ["* test"], conf(2))

    async def opener(i: int) -> ClientConnection:
        return await connect(f"ws://127.0.0.1:{s.http_port}/ws?channel=w", open_timeout=WAIT)

    clients = await open_spread(s, 6, opener)
    try:
        await wait_metric(s, 'pp_gripd_subscriptions{mode="ws"}', len(clients))
        for n in range(3):
            await publish(s, [{"channel": "w", "formats": {"ws-message": {"content": f"m{n}"}}}])
        for ws in clients:
            got = [await asyncio.wait_for(ws.recv(), WAIT) for _ in range(3)]
            assert got == ["m0", "m1", "m2"]
    finally:
        for ws in clients:
            await ws.close()


# --- ZeroMQ PULL and the command socket -----------------------------------------------------------


async def _push(port: int, frame: bytes) -> None:
    ctx = zmq.asyncio.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 2000
        sock.connect(f"tcp://127.0.0.1:{port}")
        await sock.send(frame)
        sock.close()
    finally:
        ctx.term()


async def _command(port: int, req: dict[bytes, object]) -> object:
    return await command_request(port, req, WAIT)


async def test_zmq_pull_publish_reaches_both_workers(start: StartFn, origin: Origin) -> None:
    """F31: an item on the hub's PULL socket answers long-polls held in either worker."""
    origin.route("GET", "/lp", Reply(200, LP, "timeout\n"))
    c = conf(2)
    s = await start_hub(start, [f"* 127.0.0.1:{origin.port}"], c)
    polls = await open_spread(s, 6, lambda i: open_long_poll(s, origin, "/lp", i))
    try:
        await settle_holds(s, origin, "/lp", len(polls))
        item = {"channel": "lp", "formats": {"http-response": {"body": "via zmq\n"}}}
        await _push(s.zmq_pull_port, b"J" + json.dumps(item).encode())
        for p in polls:
            await p.head(WAIT)
            assert await p.read_to_end(WAIT) == b"via zmq\n"
        m = await metrics(s)
        assert m['pp_gripd_publish_received_total{source="zmq-pull"}'] == 1
    finally:
        close_all(polls)


async def test_command_recover_retries_holds_in_every_worker(
    start: StartFn, origin: Origin
) -> None:
    """F27/F42: ``recover`` on the hub's command socket makes every worker re-request its held
    long-polls at the origin (each client's request arrives once more).

    The counts are taken once the F22 first-subscription retries are over."""
    origin.route("GET", "/lp", Reply(200, LP, "timeout\n"))
    c = conf(2)
    s = await start_hub(start, [f"* 127.0.0.1:{origin.port}"], c)
    polls = await open_spread(s, 10, lambda i: open_long_poll(s, origin, "/lp", i))
    n = len(polls)
    try:
        before = await settle_holds(s, origin, "/lp", n)
        assert set(before) == {f"c={i}" for i in range(n)}
        reply = await _command(s.command_port, {b"method": b"recover"})
        assert reply == {b"success": True, b"value": None}
        await origin.wait_for("/lp", before.total() + n, within=WAIT)
        await asyncio.sleep(0.3 * TIME_SCALE)  # nothing more than one retry each
        after = Counter(r.query for r in origin.requests_for("/lp"))
        assert after == before + Counter(before.keys())
        # the retried holds are held again and still answered by a publish
        await wait_metric(s, RESPONSES, n)
        await publish(s, [lp_item("lp", "after recover\n")])
        for p in polls:
            await p.head(WAIT)
            assert await p.read_to_end(WAIT) == b"after recover\n"
    finally:
        close_all(polls)


# --- stats and metrics ----------------------------------------------------------------------------


async def test_metrics_count_the_whole_instance(start: StartFn) -> None:
    """F44: the hub's Prometheus endpoint counts the connections and subscriptions of both
    workers; a channel held in both workers is one channel."""
    c = conf(2)
    s = await start_hub(start, ["* test"], c)
    await wait_metric(s, CONNS, 0)  # the readiness probe has gone
    streams = await open_spread(s, 7, lambda i: open_stream(s))
    n = len(streams)
    try:
        await wait_metric(s, CONNS, n)
        await wait_metric(s, STREAMS, n)
        m = await metrics(s)
        assert m["pp_gripd_channels"] == 1
        assert m["pp_connection_connected"] >= n  # Pushpin's own gauge (peak since the report)
        held = held_by_worker(s)
        assert sum(len(v) for v in held.values()) == n
        # close every stream of one worker: the count follows, the channel is still held
        gone_pid = next(iter(held))
        gone = [r for r in streams if local_port(r) in held[gone_pid]]
        close_all(gone)
        await wait_metric(s, CONNS, n - len(gone))
        await wait_metric(s, STREAMS, n - len(gone))
        assert (await metrics(s))["pp_gripd_channels"] == 1
        close_all(streams)
        await wait_metric(s, CONNS, 0)
        await wait_metric(s, STREAMS, 0)
        await wait_metric(s, "pp_gripd_channels", 0)
    finally:
        close_all(streams)


# --- client_maxconn (F3) --------------------------------------------------------------------------


async def _try_hold(s: Server) -> RawResponse | None:
    """One stream request: the response once its head arrived, None when closed at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
    writer.write(get("/stream"))
    resp = RawResponse(reader, writer)
    try:
        await resp.head(WAIT)
    except (ConnectionError, OSError):
        writer.close()
        return None
    return resp


async def test_client_maxconn_is_instance_wide(start: StartFn) -> None:
    """F3: ``client_maxconn = 4`` with 2 workers serves 4 connections in all, not 4 per worker.
    12 attempts spread over both workers (a per-worker limit would serve up to 8)."""
    c = conf(2)
    c["runner"] = {"client_maxconn": "4"}
    s = await start_hub(start, ["* test"], c)
    await wait_metric(s, CONNS, 0)
    served: list[RawResponse] = []
    refused = 0
    try:
        for _ in range(12):
            r = await _try_hold(s)
            if r is None:
                refused += 1
            else:
                served.append(r)
        assert (len(served), refused) == (4, 8)
        assert "client_maxconn (4) reached" in s.log_text()
        # a held one leaves: a new connection is served again (whichever worker takes it)
        served.pop().close()
        await wait_metric(s, CONNS, 3)
        again: RawResponse | None = None
        for _ in range(20):
            again = await _try_hold(s)
            if again is not None:
                break
            await asyncio.sleep(0.1)
        assert again is not None
        served.append(again)
        assert await _try_hold(s) is None
    finally:
        close_all(served)


async def test_client_maxconn_forgets_a_dead_workers_connections(start: StartFn) -> None:
    """F3 after a crash: the connections a killed worker held stop counting, so as many new
    ones are served as it held (and no more)."""
    c = conf(2)
    c["runner"] = {"client_maxconn": "4"}
    s = await start_hub(start, ["* test"], c)
    await wait_metric(s, CONNS, 0)
    served: list[RawResponse] = []
    try:
        for _ in range(8):  # until the 4 served are on both workers (1 in 8 rounds is not)
            while len(served) < 4:
                r = await _try_hold(s)
                if r is not None:
                    served.append(r)
            held = held_by_worker(s)
            if all(held.values()):
                break
            close_all(served)
            served.clear()
            await wait_metric(s, CONNS, 0)
        held = held_by_worker(s)
        assert all(held.values()), held
        victim = min(held, key=lambda p: len(held[p]))
        lost = len(held[victim])
        os.kill(victim, signal.SIGKILL)  # a worker of the server we started
        await wait_until(
            lambda: re.search(r"worker \d+ restarted", s.log_text()), "the restart to be logged"
        )
        results = [await _try_hold(s) for _ in range(lost + 4)]
        fresh = [r for r in results if r is not None]
        served += fresh
        assert len(fresh) == lost, f"{len(fresh)} served after losing {lost}"
    finally:
        close_all(served)


# --- a worker dies --------------------------------------------------------------------------------


async def test_killed_worker_is_restarted_and_the_other_keeps_serving(start: StartFn) -> None:
    c = conf(2)
    s = await start_hub(start, ["* test"], c)
    streams = await open_spread(s, 10, lambda i: open_stream(s))
    try:
        await wait_metric(s, STREAMS, len(streams))
        held = held_by_worker(s)
        victim, survivor = sorted(held)
        on_victim = [r for r in streams if local_port(r) in held[victim]]
        on_survivor = [r for r in streams if local_port(r) in held[survivor]]
        assert on_victim and on_survivor and len(on_victim) + len(on_survivor) == len(streams)
        os.kill(victim, signal.SIGKILL)  # a worker of the server we started
        for r in on_victim:
            with contextlib.suppress(ConnectionResetError):
                await r.read_to_end(WAIT)
            assert r.eof
        pat = re.compile(rf"worker (\d+) \(pid {victim}\) exited with code -9; restarting it")
        await wait_until(lambda: pat.search(s.log_text()), "the exit to be logged")
        m = pat.search(s.log_text())
        assert m is not None
        index = m.group(1)
        await wait_until(
            lambda: re.search(rf"worker {index} restarted \(pid \d+\)", s.log_text()),
            "the restart to be logged",
        )
        pids = worker_pids(s)
        assert len(pids) == 2 and victim not in pids and survivor in pids
        # the dead worker's connections and subscriptions are gone from the metrics (F44)
        await wait_metric(s, STREAMS, len(on_survivor))
        await wait_metric(s, CONNS, len(on_survivor))
        await publish(s, [stream_item("test", "still here\n")])
        for r in on_survivor:
            assert await r.read_body_until(b"still here\n", WAIT) == b"still here\n"
        # new connections work, on both workers (the restarted one included)
        fresh = await open_spread(s, 6, lambda i: open_stream(s))
        streams += fresh
        new_pid = next(p for p in worker_pids(s) if p != survivor)
        assert established_peer_ports(new_pid, s.http_port)
        await wait_metric(s, STREAMS, len(on_survivor) + len(fresh))
        await publish(s, [stream_item("test", "after restart\n")])
        for r in [*on_survivor, *fresh]:
            assert await r.read_body_until(b"after restart\n", WAIT)
    finally:
        close_all(streams)


async def _connect_on(s: Server, pid: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection accepted by worker ``pid`` (others are closed before sending)."""
    for _ in range(40):
        reader, writer = await asyncio.open_connection("127.0.0.1", s.http_port)
        port = writer.get_extra_info("sockname")[1]
        owner = None
        for _ in range(100):
            owner = next((p for p, v in held_by_worker(s).items() if port in v), None)
            if owner is not None:
                break
            await asyncio.sleep(0.01)
        if owner == pid:
            return reader, writer
        writer.close()
    raise AssertionError(f"no connection landed on worker {pid}")


async def _prev_id_rig(start: StartFn, origin: Origin) -> tuple[Server, RawResponse, int, int]:
    """A stream on channel ``c`` (kept, in worker ``keeper``), then an item ``id=NEW`` on ``c``:
    the instance's last id of ``c`` is NEW. ``/p`` holds with ``prev-id=OLD``; its retry (with
    ``Grip-Last``) is answered ``caught up``. Returns (server, stream, keeper, other)."""

    def lp(r: RecordedRequest) -> Reply:
        if r.header("Grip-Last") is not None:
            return Reply(200, body=f"caught up: {r.header('Grip-Last')}\n")
        return Reply(200, [("Grip-Hold", "response"), ("Grip-Channel", "c; prev-id=OLD")], "t\n")

    origin.route("GET", "/p", lp)
    origin.route("GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "c")], "s\n"))
    c = conf(2)
    c["handler"]["update_on_first_subscription"] = "false"  # no F22 retry to confuse F23's
    s = await start_hub(start, [f"* 127.0.0.1:{origin.port}"], c)
    stream = await open_request(s.http_port, get("/s"), WAIT)
    await stream.read_body_until(b"s\n", WAIT)
    held = held_by_worker(s)
    keeper = next(p for p, v in held.items() if local_port(stream) in v)
    other = next(p for p in held if p != keeper)
    await wait_metric(s, STREAMS, 1)
    await publish(s, [stream_item("c", "one\n", id="NEW")])
    assert await stream.read_body_until(b"one\n", WAIT) == b"one\n"
    return s, stream, keeper, other


async def _prev_id_hold_on(s: Server, pid: int) -> tuple[int, bytes]:
    """Send ``/p`` on a connection of worker ``pid``; F23 retries it at once (the known last id
    NEW differs from its prev-id OLD), so the answer is the retry's."""
    reader, writer = await _connect_on(s, pid)
    writer.write(get("/p"))
    resp = RawResponse(reader, writer)
    try:
        await resp.head(5 * TIME_SCALE)
        return resp.status, await resp.read_to_end(WAIT)
    except TimeoutError:
        return 0, b"(no answer in 5 s: still held, not retried)"
    finally:
        writer.close()


async def test_last_ids_reach_every_worker(start: StartFn, origin: Origin) -> None:
    """F23 across workers: the hub's sequencer sets the last id; the worker that did not deliver
    the item knows it too, so a hold there with a stale prev-id is retried at once."""
    s, stream, _, other = await _prev_id_rig(start, origin)
    try:
        assert await _prev_id_hold_on(s, other) == (200, b"caught up: c; last-id=OLD\n")
    finally:
        stream.close()


async def test_restarted_worker_knows_the_last_ids(start: StartFn, origin: Origin) -> None:
    """F23 after a worker restart: the new worker must know the last ids set before it started."""
    s, stream, keeper, other = await _prev_id_rig(start, origin)
    try:
        os.kill(other, signal.SIGKILL)  # a worker of the server we started
        await wait_until(
            lambda: re.search(r"worker \d+ restarted", s.log_text()), "the restart to be logged"
        )
        new = next(p for p in worker_pids(s) if p != keeper)
        assert await _prev_id_hold_on(s, new) == (200, b"caught up: c; last-id=OLD\n")
    finally:
        stream.close()


# --- signals --------------------------------------------------------------------------------------


def _routes_text(port: int) -> bytes:
    """A routes file of a fixed size (64 bytes) for origin ``port``."""
    line = f"* 127.0.0.1:{port}\n".encode()
    return line + b"#" + b"x" * (62 - len(line)) + b"\n"


def _rewrite_in_place(path: Path, data: bytes) -> tuple[os.stat_result, os.stat_result]:
    """Overwrite ``path`` (same inode, same size) and restore its times: (before, after)."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return before, os.stat(path)


async def _who(s: Server) -> str:
    """Which origin answers a new connection's request."""
    status, _, body = await raw_request(s.http_port, get("/who", "Connection: close\r\n"))
    assert status == 200, body
    return body.decode()


async def test_sighup_reloads_routes_in_every_worker(start: StartFn) -> None:
    """F6: SIGHUP to the hub reloads the routes in both workers. The new routes file keeps the
    old one's inode, size and mtime, so the 1 s poll does not notice it: only SIGHUP does."""
    async with Origin() as a, Origin() as b:
        a.route("GET", "/who", Reply(200, body="A"))
        b.route("GET", "/who", Reply(200, body="B"))
        c = conf(2)
        s = await start_hub(start, [f"* 127.0.0.1:{a.port}"], c)
        path = s.workdir / "routes"
        path.write_bytes(_routes_text(a.port))
        await asyncio.sleep(2.5 * TIME_SCALE)  # the poll picks up the padded file (same route)
        before, after = _rewrite_in_place(path, _routes_text(b.port))
        stamp = (after.st_mtime_ns, after.st_size, after.st_ino)
        assert stamp == (before.st_mtime_ns, before.st_size, before.st_ino)
        await asyncio.sleep(2.5 * TIME_SCALE)  # > 2 poll intervals
        assert [await _who(s) for _ in range(10)] == ["A"] * 10, "reloaded without SIGHUP"
        loaded = s.log_text().count("routes loaded with 1 entries")
        os.kill(s.proc.pid, signal.SIGHUP)  # the hub we started
        for _ in range(100):
            if await _who(s) == "B":
                break
            await asyncio.sleep(0.05)
        answers = [await _who(s) for _ in range(20)]
        assert answers == ["B"] * 20
        assert len(worker_pids(s)) == 2
        await wait_until(
            lambda: s.log_text().count("routes loaded with 1 entries") > loaded, "the reload line"
        )


async def test_sigterm_stops_hub_and_workers(start: StartFn) -> None:
    c = conf(2)
    s = await start_hub(start, ["* test"], c)
    streams = [await open_stream(s) for _ in range(4)]
    workers = worker_pids(s)
    assert len(workers) == 2
    try:
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(s.proc.wait, 15)
        assert code == 0, s.log_text()
        assert time.monotonic() - t0 < 10 * TIME_SCALE
        assert not [p for p in workers if pid_alive(p)]
        for r in streams:
            with contextlib.suppress(ConnectionResetError):
                await r.read_to_end(WAIT)
            assert r.eof
        assert "stopping" in s.log_text()
    finally:
        close_all(streams)


async def test_workers_exit_when_the_hub_dies(start: StartFn) -> None:
    """A hub killed with SIGKILL leaves no orphan workers holding the client port: each notices
    its link closing and stops."""
    s = await start_hub(start, ["* test"], conf(2))
    stream = await open_stream(s)
    workers = worker_pids(s)
    assert len(workers) == 2
    try:
        os.kill(s.proc.pid, signal.SIGKILL)  # the hub we started
        await asyncio.to_thread(s.proc.wait, 10)
        await wait_until(lambda: not [p for p in workers if pid_alive(p)], "the workers to exit")
        with contextlib.suppress(ConnectionResetError):
            await stream.read_to_end(WAIT)
        assert stream.eof
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", s.http_port)
    finally:
        stream.close()


# --- startup errors -------------------------------------------------------------------------------


async def test_second_instance_on_the_same_http_port_fails(start: StartFn) -> None:
    """Workers bind with SO_REUSEPORT, but a second instance (other ports, same ``http_port``)
    must not silently share the port: it exits naming ``http_port``; the first keeps serving."""
    c = conf(2)
    first = await start_hub(start, ["* test"], c)
    c2 = conf(2)
    c2["runner"] = {"http_port": f"127.0.0.1:{first.http_port}"}
    with pytest.raises(ServerStartError) as info:
        await start("gripd", ["* test"], conf=c2)
    text = str(info.value)
    assert "exited with status 1" in text
    assert f"cannot listen on 127.0.0.1:{first.http_port} (http_port)" in text
    assert "Traceback" not in text
    assert len(worker_pids(first)) == 2
    for _ in range(20):
        status, _, body = await raw_request(
            first.http_port, get("/", "Connection: close\r\n"), timeout=WAIT
        )
        assert (status, body) == (200, b"Hello from the Pushpin test handler!\n")


@pytest.mark.parametrize("value", ["0", "x", "-2"])
def test_bad_workers_value_exits_naming_file_and_line(tmp_path: Path, value: str) -> None:
    """``workers`` must be a positive integer (or ``auto``): else exit 1 naming file:line."""
    res, text, path = run_gripd_expecting_exit(tmp_path, {"workers": value}, 20 * TIME_SCALE)
    assert res.returncode == 1, res.stderr
    line = text.split("\n").index(f"workers={value}") + 1
    assert f"{path}:{line}: [gripd] workers: " in res.stderr
    assert repr(value) in res.stderr
    assert "Traceback" not in res.stderr

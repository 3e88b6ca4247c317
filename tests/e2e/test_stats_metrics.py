"""Stats socket (F43) and Prometheus endpoint (F44), differential against Pushpin 1.36.

Both legs get the same pushpin.conf (stats on ``ipc://{rundir}/{ipc_prefix}stats``, a
``prometheus_port`` in ``[handler]``) and the same scenario through the built-in ``test`` route:
a stream hold on channel ``a``, a long-poll on ``b``, one publish to each, then the stream client
leaves. The assertions are shared.

Until ``StatsPublisher`` and ``Metrics`` are wired into ``App``, the gripd leg runs an in-process
``App`` with the two components added to ``app.events`` here (``_GRIPD_WIRED = False``). After
wiring, set ``_GRIPD_WIRED = True`` so the leg runs the real ``python -m gripd`` process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from gripd.core import tnetstring
from gripd.core.config import load_config
from tests.conftest import TIME_SCALE, StartFn
from tests.support.procs import Impl, base_conf, free_ports, merge_conf, render_conf
from tests.support.rawhttp import RawResponse, open_request

_GRIPD_WIRED = True

Frame = tuple[str, dict[str, Any]]


@dataclass
class Proxy:
    impl: Impl
    http_port: int
    control_port: int
    stats_spec: str
    prom_port: int
    close: Callable[[], Awaitable[None]]
    extra: list[Any] = field(default_factory=list)


def _conf(prom_port: int, fmt: str) -> dict[str, dict[str, str]]:
    return {
        "handler": {
            "prometheus_port": f"127.0.0.1:{prom_port}",
            "prometheus_prefix": "pp_",
            "stats_format": fmt,
            "stats_report_interval": "1",
        }
    }


async def _start_inprocess(tmp: Path, conf: dict[str, dict[str, str]]) -> Proxy:
    """gripd in this process with the stats and metrics components wired here."""
    from gripd.io.observe.metrics import Metrics
    from gripd.io.observe.stats import StatsPublisher
    from gripd.runtime.app import App

    rundir = Path(tempfile.mkdtemp(prefix="gp-run-"))
    http_port, control_port, pull_port, command_port, sub_port = free_ports(5)
    full = merge_conf(
        base_conf(
            rundir=rundir,
            logdir=tmp,
            http_port=http_port,
            control_port=control_port,
            pull_port=pull_port,
            command_port=command_port,
            sub_port=sub_port,
        ),
        conf,
    )
    text = render_conf(full)
    conf_path = tmp / "pushpin.conf"
    conf_path.write_text(text)
    cfg = load_config(text, path=str(conf_path), read_file=lambda p: Path(p).read_text())
    app = App(cfg, route_lines=["* test"])
    stats = StatsPublisher(cfg)
    metrics = Metrics(cfg, stats=stats.state)
    assert app.services is not None
    app.services.events.add(stats)
    app.services.events.add(metrics)
    await stats.start()
    await metrics.start()
    await app.start()

    async def close() -> None:
        await app.stop()
        await metrics.stop()
        await stats.stop()
        shutil.rmtree(rundir, ignore_errors=True)

    prom = int(conf["handler"]["prometheus_port"].rsplit(":", 1)[1])
    return Proxy("gripd", http_port, control_port, cfg.stats_spec, prom, close)


@pytest.fixture
async def proxy(
    impl: Impl, start: StartFn, tmp_path: Path
) -> AsyncIterator[Callable[[str], Awaitable[Proxy]]]:
    closers: list[Proxy] = []

    async def _make(fmt: str) -> Proxy:
        (prom_port,) = free_ports(1)
        conf = _conf(prom_port, fmt)
        if impl == "gripd" and not _GRIPD_WIRED:
            p = await _start_inprocess(tmp_path, conf)
        else:
            s = await start(impl, ["* test"], conf=conf)
            rundir = s.tmp_rundir or (s.workdir / "run")

            async def _noop() -> None:
                return None

            p = Proxy(
                impl, s.http_port, s.control_port, f"ipc://{rundir}/gp-stats", prom_port, _noop
            )
        closers.append(p)
        return p

    yield _make
    for p in closers:
        await p.close()


def _decode(frame: bytes) -> Frame:
    ptype, _, rest = frame.partition(b" ")
    if rest[:1] == b"J":
        return ptype.decode(), json.loads(rest[1:])
    obj = tnetstring.loads(rest[1:])
    assert isinstance(obj, dict)
    return ptype.decode(), {
        k.decode(): (v.decode() if isinstance(v, bytes) else v) for k, v in obj.items()
    }


class StatsReader:
    """Collects every stats frame in the background."""

    def __init__(self, spec: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(spec)
        self.frames: list[bytes] = []
        self.packets: list[Frame] = []
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            parts = await self.sock.recv_multipart()
            assert len(parts) == 1
            self.frames.append(parts[0])
            self.packets.append(_decode(parts[0]))

    async def wait(
        self, pred: Callable[[Frame], bool], timeout: float = 10.0, since: int = 0
    ) -> Frame:
        """The first packet matching ``pred``, from index ``since`` of ``packets`` on (so a
        packet from before a step, such as the readiness probe's, cannot answer for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout * TIME_SCALE
        while loop.time() < deadline:
            for p in self.packets[since:]:
                if pred(p):
                    return p
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no matching stats packet in {self.packets}")

    async def wait_report_sums(
        self, done: Callable[[dict[str, int]], bool], timeout: float = 10.0
    ) -> tuple[dict[str, int], Frame]:
        """The counts of every ``report`` packet so far summed (each covers one interval, so
        two publishes may land in two reports), once ``done`` holds for them; and the last
        report."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout * TIME_SCALE
        while loop.time() < deadline:
            reports = [p for p in self.packets if p[0] == "report"]
            sums: dict[str, int] = {}
            for _, fields in reports:
                for k, v in fields.items():
                    if isinstance(v, int):
                        sums[k] = sums.get(k, 0) + v
            if reports and done(sums):
                return sums, reports[-1]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"report sums never matched in {self.packets}")

    async def close(self) -> None:
        self._task.cancel()
        self.sock.close(0)
        self.ctx.term()


def _scrape(port: int) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def _pushpin_values(body: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for ln in body.splitlines():
        if ln.startswith("pp_") and not ln.startswith("pp_gripd_"):
            name, value = ln.split(" ")
            out[name] = int(value)
    return out


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()


def _publish(port: int, items: list[dict[str, Any]]) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/publish/",
        data=json.dumps({"items": items}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


def _is(ptype: str, **match: Any) -> Callable[[Frame], bool]:
    return lambda p: p[0] == ptype and all(p[1].get(k) == v for k, v in match.items())


@pytest.mark.parametrize("fmt", ["tnetstring", "json"])
async def test_stats_and_metrics(proxy: Callable[[str], Awaitable[Proxy]], fmt: str) -> None:
    p = await proxy(fmt)
    reader = StatsReader(p.stats_spec)
    stream: RawResponse | None = None
    try:
        await asyncio.sleep(0.3 * TIME_SCALE)  # let the SUB connect (PUB drops until then)
        status, ctype, before_body = await asyncio.to_thread(_scrape, p.prom_port)
        assert (status, ctype) == (200, "text/plain")
        before = _pushpin_values(before_body)
        # F44: Pushpin's five lines, in order, HELP/TYPE exactly
        heads = [ln for ln in before_body.splitlines() if ln.startswith("# ")][:10]
        assert heads == [
            "# HELP pp_request_received Number of requests received",
            "# TYPE pp_request_received counter",
            "# HELP pp_connection_connected Number of concurrent connections",
            "# TYPE pp_connection_connected gauge",
            "# HELP pp_connection_minute Number of minutes clients have been connected",
            "# TYPE pp_connection_minute counter",
            "# HELP pp_message_received Number of messages received by the publish API",
            "# TYPE pp_message_received counter",
            "# HELP pp_message_sent Number of messages sent to clients",
            "# TYPE pp_message_sent counter",
        ]

        mark = len(reader.packets)  # what comes after is this test's requests'
        stream = await open_request(p.http_port, _get("/stream?channel=a"))
        await stream.read_body_until(b"[stream opened]\n")
        r, w = await asyncio.open_connection("127.0.0.1", p.http_port)
        w.write(_get("/response?channel=b"))  # the head comes with the publish
        poll = RawResponse(r, w)
        await reader.wait(_is("sub", mode="stream", channel="a", subscribers=1))
        await reader.wait(_is("sub", mode="response", channel="b", subscribers=1))
        conn = await reader.wait(_is("conn", type="http"), since=mark)
        assert conn[1]["peer-address"] == "127.0.0.1" and conn[1]["ttl"] == 120
        await asyncio.sleep(0.2 * TIME_SCALE)
        _, _, mid_body = await asyncio.to_thread(_scrape, p.prom_port)
        # the peak since the last stats report, with both requests held (both count requests
        # in flight)
        assert _pushpin_values(mid_body)["pp_connection_connected"] >= 2

        stream_item = {"channel": "a", "id": "i1", "formats": {"http-stream": {"content": "hi\n"}}}
        assert await asyncio.to_thread(_publish, p.control_port, [stream_item]) == 200
        body_item = {"channel": "b", "formats": {"http-response": {"body": "yo\n"}}}
        assert await asyncio.to_thread(_publish, p.control_port, [body_item]) == 200
        await stream.read_body_until(b"hi\n")
        assert await poll.read_to_end() == b"yo\n"
        poll.close()

        m = await reader.wait(_is("message", channel="a"))
        assert {k: m[1].get(k) for k in ("item-id", "count", "transport")} == {
            "item-id": "i1",
            "count": 1,
            "transport": "http-stream",
        }
        m = await reader.wait(_is("message", channel="b"))
        assert "item-id" not in m[1]
        assert (m[1]["count"], m[1]["transport"]) == (1, "http-response")
        await reader.wait(_is("activity"))

        sums, report = await reader.wait_report_sums(lambda s: s.get("sent", 0) >= 2)
        assert sums["received"] == 2 and sums["http-response-sent"] == 1
        report_keys = set(report[1])

        closing = len(reader.packets)
        stream.close()
        stream = None
        await reader.wait(_is("sub", mode="stream", channel="a", unavailable=True), since=closing)
        await reader.wait(_is("conn", unavailable=True), since=closing)

        await asyncio.sleep(2.5 * TIME_SCALE)  # two report intervals: the peak drops to 0
        _, _, after_body = await asyncio.to_thread(_scrape, p.prom_port)
        after = _pushpin_values(after_body)
        delta = {k: after[k] - before[k] for k in before}
        assert delta["pp_request_received"] == 2
        assert delta["pp_message_received"] == 2
        assert delta["pp_message_sent"] == 2
        assert delta["pp_connection_minute"] >= 2
        assert after["pp_connection_connected"] == 0

        # every packet is single-part, in the configured format, with a ``from``
        tag = b"J" if fmt == "json" else b"T"
        assert all(f.split(b" ", 1)[1][:1] == tag for f in reader.frames)
        assert all("from" in f for _, f in reader.packets)
        assert report_keys == {
            "from",
            "connections",
            "minutes",
            "received",
            "sent",
            "http-response-sent",
            "duration",
            "client-header-bytes-received",
            "client-header-bytes-sent",
            "client-content-bytes-received",
            "client-content-bytes-sent",
            "client-messages-received",
            "client-messages-sent",
            "server-header-bytes-received",
            "server-header-bytes-sent",
            "server-content-bytes-received",
            "server-content-bytes-sent",
            "server-messages-received",
            "server-messages-sent",
        }
    finally:
        if stream is not None:
            stream.close()
        await reader.close()


def _header_estimate(head: bytes) -> int:
    """Pushpin's ``estimateResponseHeaderBytes`` of a received stream head: code, reason and
    every header name and value, less the Connection/Transfer-Encoding the server adds."""
    lines = head.decode("latin-1").split("\r\n")
    _, code, reason = lines[0].split(" ", 2)
    n = len(code) + len(reason)
    for ln in lines[1:]:
        if ln:
            k, v = ln.split(": ", 1)
            if k.lower() not in ("connection", "transfer-encoding"):
                n += len(k) + len(v)
    return n


def _sum(reports: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in reports)


async def test_stats_per_request(impl: Impl, start: StartFn) -> None:
    """As Pushpin: one ``conn`` per request (route id, X-Forwarded-For peer, ssl), closed when its
    response ends; reports per route; a held request counts on the empty route, and only the
    held response's bytes are counted (head by Pushpin's estimate, content as sent)."""
    from tests.support.origin import Origin, Reply

    async with Origin() as o:
        o.route("GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "a")], "open\n"))
        o.route("GET", "/p", Reply(200, [("X-Y", "y")], "plain body here\n"))
        (prom,) = free_ports(1)
        conf = {**_conf(prom, "json"), "proxy": {"accept_x_forwarded_protocol": "true"}}
        s = await start(impl, [f"*,id=r1 127.0.0.1:{o.port}"], conf=conf)
        rundir = s.tmp_rundir or (s.workdir / "run")
        reader = StatsReader(f"ipc://{rundir}/gp-stats")
        stream: RawResponse | None = None
        try:
            await asyncio.sleep(0.3 * TIME_SCALE)
            # two pass-through requests on one keep-alive connection
            r, w = await asyncio.open_connection("127.0.0.1", s.http_port)
            got = b""
            for n, extra in ((1, b""), (2, b"X-Forwarded-Proto: https\r\n")):
                w.write(
                    b"GET /p HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n" + extra + b"\r\n"
                )
                while got.count(b"plain body here\n") < n:
                    got += await asyncio.wait_for(r.read(4096), 10 * TIME_SCALE)
            await reader.wait(_is("conn", unavailable=True, route="r1"))
            # activity is counted on the request's route
            await reader.wait(lambda p: p[0] == "activity" and p[1].get("route") == "r1")
            opened = await reader.wait(_is("conn", **{"peer-address": "1.2.3.4"}))
            assert opened[1]["route"] == "r1" and opened[1]["type"] == "http"
            assert "ssl" not in opened[1]

            stream = await open_request(
                s.http_port, b"GET /s HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n"
            )
            await stream.read_body_until(b"open\n")
            head = bytes(stream.raw[: stream.raw.index(b"\r\n\r\n") + 4])
            held = await reader.wait(_is("conn", **{"peer-address": "5.6.7.8"}))
            assert held[1]["route"] == "r1"
            await reader.wait(_is("sub", mode="stream", channel="a", subscribers=1))
            await asyncio.to_thread(
                s.publish,
                [{"channel": "a", "formats": {"http-stream": {"content": "hello world\n"}}}],
            )
            await stream.read_body_until(b"hello world\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10 * TIME_SCALE
            while loop.time() < deadline:  # the held stream's bytes reach a report
                empty = [f for t, f in reader.packets if t == "report" and "route" not in f]
                if _sum(empty, "client-content-bytes-sent") >= len(b"open\n") + 12:
                    break
                await asyncio.sleep(0.05)
            stream.close()
            stream = None
            gone = await reader.wait(_is("conn", id=held[1]["id"], unavailable=True))
            assert "route" not in gone[1]  # the handler (no route) owned the held request
            w.close()

            # one conn id per request: the two requests on one connection had two
            passed = [
                f for t, f in reader.packets if t == "conn" and f.get("peer-address") == "1.2.3.4"
            ]
            assert len({f["id"] for f in passed}) == 2
            # ssl from X-Forwarded-Proto (accept_x_forwarded_protocol), only on the second
            assert [f.get("ssl", False) for f in passed] == [False, True]
            for f in passed:  # each closed (with its route) before the next opened
                assert any(
                    t == "conn" and g["id"] == f["id"] and g.get("unavailable")
                    for t, g in reader.packets
                )

            reports = [f for t, f in reader.packets if t == "report"]
            assert any(f.get("route") == "r1" and f["connections"] >= 1 for f in reports)
            empty = [f for f in reports if "route" not in f]
            # proxied bytes are not counted: only the held stream's
            assert _sum(empty, "client-content-bytes-sent") == len(b"open\n") + 12
            assert _sum([f for f in reports if "route" in f], "client-content-bytes-sent") == 0
            assert _sum(reports, "client-header-bytes-sent") == _header_estimate(head)
        finally:
            if stream is not None:
                stream.close()
            await reader.close()


async def test_stats_blocks(impl: Impl, start: StartFn) -> None:
    """F43 with ``message_block_size``: a ``message`` packet carries the blocks of every
    delivery (the published body in blocks, rounded up, times the subscribers), and the report
    counts ``blocks-received`` once per item and ``blocks-sent`` per delivery."""
    from tests.support.origin import Origin, Reply

    async with Origin() as o:
        o.route("GET", "/s", Reply(200, [("Grip-Hold", "stream"), ("Grip-Channel", "a")], "open\n"))
        (prom,) = free_ports(1)
        conf = _conf(prom, "json")
        conf["handler"]["message_block_size"] = "5"
        s = await start(impl, [f"* 127.0.0.1:{o.port}"], conf=conf)
        rundir = s.tmp_rundir or (s.workdir / "run")
        reader = StatsReader(f"ipc://{rundir}/gp-stats")
        streams: list[RawResponse] = []
        try:
            await asyncio.sleep(0.3 * TIME_SCALE)
            for _ in range(2):
                st = await open_request(s.http_port, b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
                streams.append(st)
                await st.read_body_until(b"open\n")
            await reader.wait(_is("sub", mode="stream", channel="a", subscribers=2))
            content = "hello world\n"  # 12 bytes: 3 blocks of 5
            await asyncio.to_thread(
                s.publish, [{"channel": "a", "formats": {"http-stream": {"content": content}}}]
            )
            for st in streams:
                await st.read_body_until(content.encode())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10 * TIME_SCALE
            while loop.time() < deadline:
                # with workers, each worker's deliveries make their own message packet
                msgs = [f for t, f in reader.packets if t == "message" and f["channel"] == "a"]
                reports = [f for t, f in reader.packets if t == "report"]
                if _sum(msgs, "count") >= 2 and _sum(reports, "blocks-sent") >= 6:
                    break
                await asyncio.sleep(0.05)
            assert _sum(msgs, "count") == 2 and _sum(msgs, "blocks") == 6
            assert _sum(reports, "blocks-received") == 3
            assert _sum(reports, "blocks-sent") == 6
        finally:
            for st in streams:
                st.close()
            await reader.close()


async def test_stats_keep_alive_is_activity(impl: Impl, start: StartFn) -> None:
    """F43: a stream hold's keep-alive counts as activity (one per keep-alive sent, on the
    empty route: the handler's), besides the one for the request itself on its route."""
    from tests.support.origin import Origin, Reply

    async with Origin() as o:
        headers = [
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "ka"),
            ("Grip-Keep-Alive", "k\\n; format=cstring; timeout=1"),
        ]
        o.route("GET", "/s", Reply(200, headers, "open\n"))
        (prom,) = free_ports(1)
        s = await start(impl, [f"*,id=r1 127.0.0.1:{o.port}"], conf=_conf(prom, "json"))
        rundir = s.tmp_rundir or (s.workdir / "run")
        reader = StatsReader(f"ipc://{rundir}/gp-stats")
        stream: RawResponse | None = None
        try:
            await asyncio.sleep(0.3 * TIME_SCALE)
            stream = await open_request(s.http_port, b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
            await stream.read_body_until(b"open\n")
            await stream.read_body_until(b"k\nk\n")  # two keep-alives
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5 * TIME_SCALE

            def counts() -> dict[str, int]:
                out: dict[str, int] = {}
                for t, f in reader.packets:
                    if t == "activity":
                        r = str(f.get("route", ""))
                        out[r] = out.get(r, 0) + int(f["count"])
                return out

            while loop.time() < deadline:
                if counts().get("", 0) >= 2:
                    break
                await asyncio.sleep(0.05)
            got = counts()
            assert got.get("r1", 0) >= 1, got  # the request
            assert got.get("", 0) >= 2, got  # and each keep-alive
        finally:
            if stream is not None:
                stream.close()
            await reader.close()

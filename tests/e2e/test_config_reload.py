"""Reload of the whole pushpin.conf while running (gripd only: Pushpin reloads only routes).

A reload comes from SIGHUP or from a change of the file. Settings that can change live change,
connections already open are kept; settings bound at start (ports, workers) are logged as
needing a restart and keep their old values; a broken file keeps the old configuration and the
log names file and line.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import publish, stream_item
from tests.support.origin import Origin, Reply
from tests.support.procs import Server, free_ports

WAIT = 15.0 * TIME_SCALE

SSE = [("Grip-Hold", "stream"), ("Grip-Channel", "all"), ("Content-Type", "text/event-stream")]


def set_conf(path: Path, section: str, key: str, value: str) -> None:
    """Set ``key=value`` in ``[section]`` of a pushpin.conf (added when absent)."""
    lines = path.read_text().splitlines()
    out: list[str] = []
    current, done = "", False
    for line in lines:
        m = re.fullmatch(r"\[(.+)\]", line.strip())
        if m:
            if current == section and not done:
                out.append(f"{key}={value}")
                done = True
            current = m.group(1)
        elif current == section and line.split("=", 1)[0].strip() == key:
            if not done:
                out.append(f"{key}={value}")
                done = True
            continue
        out.append(line)
    if not done:
        if current != section:
            out.append(f"[{section}]")
        out.append(f"{key}={value}")
    # A new inode and mtime either way: the watcher sees the change at once.
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n")
    os.replace(tmp, path)


async def wait_log(s: Server, pattern: str, count: int = 1) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while loop.time() < end:
        text = s.log_text()
        if len(re.findall(pattern, text)) >= count:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pattern!r} not logged:\n{s.log_text()[-3000:]}")


async def cors_of(s: Server) -> str | None:
    async with httpx.AsyncClient(timeout=WAIT) as c:
        r = await c.get(s.base_url() + "/plain", headers={"Origin": "https://x.example"})
        assert r.status_code == 200
        return r.headers.get("access-control-allow-origin")


class HeldStreams:
    """Many SSE connections held open through gripd, read as bytes."""

    def __init__(self) -> None:
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self, port: int, n: int) -> None:
        sem = asyncio.Semaphore(50)  # ramp: at most 50 connects in flight

        async def one() -> None:
            async with sem:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n")
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), WAIT)
                assert head.startswith(b"HTTP/1.1 200"), head
                self.conns.append((r, w))

        await asyncio.gather(*(one() for _ in range(n)))

    async def all_receive(self, marker: bytes) -> int:
        """How many of the held connections got ``marker`` (read within WAIT)."""

        async def one(r: asyncio.StreamReader) -> bool:
            try:
                await asyncio.wait_for(r.readuntil(marker), WAIT)
                return True
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return False

        got = await asyncio.gather(*(one(r) for r, _ in self.conns))
        return sum(got)

    def close(self) -> None:
        for _, w in self.conns:
            w.close()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_reload_live_settings_keeps_connections(
    start: StartFn, origin: Origin, workers: str
) -> None:
    """Held streams survive reloads; a live setting changes (CORS); a port change is logged
    as needing a restart and the old port stays; a broken file keeps the old settings."""
    origin.route("GET", "/sse", Reply(200, SSE, ""))
    origin.route("GET", "/plain", Reply(200, [], "plain\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"workers": workers}})
    held = HeldStreams()
    n = 5000 if workers == "1" else 2000
    try:
        await held.open(s.http_port, n)
        assert await cors_of(s) is None
        # 1. A live change, by editing the file (the watcher picks it up).
        set_conf(s.conf_path, "proxy", "auto_cross_origin", "true")
        await wait_log(s, r"config reloaded: auto_cross_origin: False -> True")
        await asyncio.sleep(0.5)  # with workers, the hub's message reaches them
        assert await cors_of(s) == "https://x.example"
        # 2. A setting bound at start: logged, old value kept.
        (other,) = free_ports(1)
        set_conf(s.conf_path, "runner", "http_port", f"127.0.0.1:{other}")
        await wait_log(s, r"http_port changed, needs restart")
        assert await cors_of(s) == "https://x.example"  # still served on the old port
        # 3. A broken value: the log names file:line, nothing changes.
        set_conf(s.conf_path, "proxy", "auto_cross_origin", "false")
        set_conf(s.conf_path, "gripd", "client_idle_timeout", "soon")
        text = await wait_log(s, r"config not reloaded: .*pushpin\.conf:\d+")
        assert "client_idle_timeout" in text.split("config not reloaded")[-1]
        assert await cors_of(s) == "https://x.example"
        # 4. Fixed, and applied by SIGHUP as well.
        set_conf(s.conf_path, "gripd", "client_idle_timeout", "60")
        os.kill(s.proc.pid, signal.SIGHUP)
        await wait_log(s, r"config reloaded: auto_cross_origin: True -> False")
        await asyncio.sleep(0.5)
        assert await cors_of(s) is None
        # Every held stream is still there and gets a publish.
        await publish(s, [stream_item("all", "data: after reloads\n\n")])
        assert await held.all_receive(b"after reloads") == n
        assert "Traceback" not in s.log_text()
    finally:
        held.close()


async def test_reload_publish_key_and_debug(start: StartFn, origin: Origin, dead_port: int) -> None:
    """publish_key turns on without a restart (publishes then need a token), and debug
    changes the error bodies gripd sends (F47)."""
    dead = dead_port
    origin.route("GET", "/plain", Reply(200, [], "plain\n"))
    s = await start(
        "gripd",
        [f"* 127.0.0.1:{origin.port}", f"dead.test 127.0.0.1:{dead}"],
        conf={"gripd": {"workers": "1"}},
    )
    async with httpx.AsyncClient(timeout=WAIT) as c:
        plain = await c.get(s.base_url() + "/x", headers={"Host": "dead.test"})
        assert plain.status_code == 502
        status, _ = await asyncio.to_thread(s.publish, [stream_item("a", "x")])
        assert status == 200
        set_conf(s.conf_path, "gripd", "publish_key", "s3cret-key-for-the-tests")
        set_conf(s.conf_path, "proxy", "debug", "true")
        text = await wait_log(s, r"config reloaded: ")
        assert "s3cret" not in text
        status, body = await asyncio.to_thread(s.publish, [stream_item("a", "x")])
        assert status == 401, body
        verbose = await c.get(s.base_url() + "/x", headers={"Host": "dead.test"})
        assert verbose.status_code == 502
        assert verbose.text != plain.text  # debug adds the reason


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_unreadable_key_file_refuses_the_whole_reload(
    start: StartFn, origin: Origin, workers: str
) -> None:
    """A ``sig_key`` naming a file that cannot be read (F9) refuses the reload before anything
    changed, in the hub and in every worker: the CORS change in the same edit is not applied."""
    origin.route("GET", "/plain", Reply(200, [], "plain\n"))
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"workers": workers}})
    set_conf(s.conf_path, "proxy", "auto_cross_origin", "true")
    set_conf(s.conf_path, "proxy", "sig_key", "file:missing.key")
    await wait_log(s, r"config not reloaded: .*missing\.key")
    await asyncio.sleep(0.5)
    assert await cors_of(s) is None
    assert "config reloaded:" not in s.log_text()

"""Smoke test of the process fixtures: pass-through (F12, F13, F15) and a long-poll hold released
by an HTTP control API publish (F22, F28), the same assertions for every implementation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.support.origin import Origin, RecordedRequest, Reply
from tests.support.procs import Impl, Server, gripd_runnable, impls, start_server


def _params() -> list[object]:
    out: list[object] = []
    for impl in impls():
        marks = []
        if impl == "gripd" and not gripd_runnable():
            marks.append(pytest.mark.skip(reason="gripd not runnable yet"))
        if impl == "pushpin":
            marks.append(pytest.mark.pushpin)
        out.append(pytest.param(impl, marks=marks, id=impl))
    return out


def _origin() -> Origin:
    origin = Origin()
    origin.route(
        "GET",
        "/hello",
        Reply(headers=[("Content-Type", "text/plain"), ("X-Custom", "a")], body="hello\n"),
    )
    origin.route(
        "GET",
        "/lp",
        Reply(
            headers=[
                ("Content-Type", "text/plain"),
                ("Grip-Hold", "response"),
                ("Grip-Channel", "smoke"),
            ],
            body="timeout\n",
        ),
    )
    return origin


async def _publish_until(server: Server, task: asyncio.Task[tuple[int, str]]) -> list[int]:
    """Publish to channel ``smoke`` every 0.2 s until ``task`` is done (at most 10 s).

    Republishing covers the gap between the origin answering and the hold being subscribed."""
    statuses: list[int] = []
    item = {"channel": "smoke", "formats": {"http-response": {"body": "published\n"}}}
    for _ in range(50):
        status, body = await asyncio.to_thread(server.publish, [item])
        statuses.append(status)
        assert (status, body) == (200, "Published\n")
        done, _ = await asyncio.wait({task}, timeout=0.2)
        if done:
            break
    return statuses


@pytest.mark.parametrize("impl", _params())
async def test_passthrough_and_longpoll(impl: Impl, tmp_path: Path) -> None:
    async with _origin() as origin:
        server = await asyncio.to_thread(
            start_server, impl, tmp_path, [f"* 127.0.0.1:{origin.port}"]
        )
        try:
            await _exercise(server, origin)
        except BaseException:
            print(server.log_text())  # shown by pytest on failure
            raise
        finally:
            await asyncio.to_thread(server.stop)


async def _exercise(server: Server, origin: Origin) -> None:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Pass-through: the origin's answer comes back unchanged; the origin sees a Grip-Sig
        # (sig_key=changeme, F15) and the proxy-added Grip-Feature header (F13).
        async with session.get(server.base_url() + "/hello") as resp:
            assert resp.status == 200
            assert await resp.text() == "hello\n"
            assert resp.headers["X-Custom"] == "a"
        req: RecordedRequest = await origin.wait_for("/hello")
        assert req.method == "GET"
        assert req.header("Grip-Sig") is not None
        assert (req.header("Grip-Feature") or "").startswith("status, session")

        async def long_poll() -> tuple[int, str]:
            async with session.get(server.base_url() + "/lp") as r:
                return r.status, await r.text()

        task = asyncio.create_task(long_poll())
        await origin.wait_for("/lp")
        await asyncio.sleep(0.1)
        assert not task.done(), "a response hold must send nothing before a publish (F22)"
        statuses = await _publish_until(server, task)
        assert task.done(), f"held request not released after {len(statuses)} publishes"
        assert await task == (200, "published\n")

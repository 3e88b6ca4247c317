"""Shared fixtures: real gripd / Pushpin processes and a real origin on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.origin import Origin
from tests.support.procs import Impl, Server, impls, servers_started, start_server

#: Timing-sensitive waits scale by this factor (DESIGN: CI machines have 2 cores).
TIME_SCALE = float(os.environ.get("GRIPD_TEST_TIME_SCALE", "1"))

StartFn = Callable[..., Awaitable[Server]]

#: How much of each server's log a failed test report shows (its last lines).
LOG_TAIL_LINES = 120

#: The number of servers started before a test (``pytest_runtest_protocol``).
_SERVERS_BEFORE = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Remember which servers existed before the test, so its report can show the new ones."""
    item.stash[_SERVERS_BEFORE] = len(servers_started())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report carries the tail of the log of every server it started (a flake
    seen once in CI is then explained by what the server said, not guessed at)."""
    report: pytest.TestReport = yield
    if report.failed:
        for server in servers_started()[item.stash.get(_SERVERS_BEFORE, 0) :]:
            tail = "\n".join(server.log_text().splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"{server.impl} log ({server.log_path})", tail))
    return report


@pytest.fixture(params=impls())
def impl(request: pytest.FixtureRequest) -> Impl:
    """Each differential test runs once per implementation (gripd, and Pushpin when present)."""
    value: Impl = request.param
    return value


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[StartFn]:
    """``await start(impl, routes, conf=...)``: a running server, stopped after the test.

    Starting runs in a thread so an origin living in the test's loop can answer the
    readiness probe."""
    servers: list[Server] = []

    async def _start(impl: Impl, routes: list[str], **kw: Any) -> Server:
        workdir = tmp_path / f"{impl}-{len(servers)}"
        server = await asyncio.to_thread(start_server, impl, workdir, routes, **kw)
        servers.append(server)
        return server

    yield _start
    for s in servers:
        await asyncio.to_thread(s.stop)


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with Origin() as o:
        yield o


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port where nothing listens, for the whole test: the port is bound (so no
    other test can take it, as it could a port that was merely free) but not listening, so
    a connection to it is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()

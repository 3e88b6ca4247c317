"""Binding guards (F43, F31, F42): live ``ipc://`` paths are never taken over, bind failures
name their setting, and descriptor-shortage logging is rate limited (F3)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from gripd.core.config import Config, default_config
from gripd.io.inputs.command import CommandServer
from gripd.io.inputs.zmq import BindError, ZmqInputs, ipc_in_use
from gripd.io.observe.stats import StatsPublisher
from gripd.runtime.app import App, RateLog


def _config(tmp_path: Path, **kw: Any) -> Config:
    return dataclasses.replace(default_config(str(tmp_path)), **kw)


class _Sink:
    def publish(self, items: list[Any], *, source: str) -> None:
        pass


def test_ipc_in_use_tells_live_from_stale(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    assert not ipc_in_use(path)  # no file
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        assert ipc_in_use(path)
    finally:
        live.close()
    assert os.path.exists(path)
    assert not ipc_in_use(path)  # a stale socket file: nobody accepts


async def test_stats_refuses_a_live_path_and_leaves_it_working(tmp_path: Path) -> None:
    spec = f"ipc://{tmp_path}/stats"
    first = StatsPublisher(_config(tmp_path, stats_spec=spec))
    await first.start()
    try:
        second = StatsPublisher(_config(tmp_path, stats_spec=spec))
        with pytest.raises(BindError, match=rf"^cannot listen on {spec} \(stats_spec\): Address"):
            await second.start()
        await second.stop()
        # The first one's socket file is still its own: a SUB receives what it sends.
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"conn ")
        sub.connect(spec)
        try:
            got = None
            for n in range(40):
                first.request_started(str(n), "1.2.3.4", "http", "", False)
                first._topics_checked = -1.0  # re-read subscriptions at once
                if sub.poll(50):
                    got = sub.recv()
                    break
            assert got is not None and got.startswith(b"conn ")
        finally:
            sub.close()
            ctx.term()
    finally:
        await first.stop()


async def test_stale_ipc_path_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "stats"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # leaves the file, as a killed process does
    pub = StatsPublisher(_config(tmp_path, stats_spec=f"ipc://{path}"))
    await pub.start()
    await pub.stop()


@pytest.mark.parametrize("phase", [False, True])
async def test_start_phases_bind_only_their_kind(tmp_path: Path, phase: bool) -> None:
    """The app binds every TCP endpoint before any ipc:// path (``start(ipc=False)`` then
    ``start(ipc=True)``)."""
    ctx = zmq.asyncio.Context()
    cfg = _config(
        tmp_path,
        push_in_spec=f"ipc://{tmp_path}/pull",
        push_in_sub_specs=["tcp://127.0.0.1:*"],
        push_in_sub_connect=False,
        command_spec=f"ipc://{tmp_path}/cmd",
    )
    inputs = ZmqInputs(cfg, _Sink(), context=ctx)
    command = CommandServer(
        cfg, sink=_Sink(), recover=lambda: None, is_connected=lambda c: False, context=ctx
    )
    try:
        await inputs.start(ipc=phase)
        await command.start(ipc=phase)
        assert (inputs.pull is not None) is phase
        assert (inputs.sub is not None) is not phase
        assert (command.sock is not None) is phase
        assert (tmp_path / "pull").is_socket() is phase
    finally:
        await inputs.stop()
        await command.stop()
        ctx.term()


async def test_zmq_bind_failure_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = _config(tmp_path, push_in_spec=f"tcp://127.0.0.1:{port}", push_in_sub_specs=[])
        inputs = ZmqInputs(cfg, _Sink())
        with pytest.raises(BindError) as e:
            await inputs.start()
        await inputs.stop()
    assert str(e.value) == (
        f"cannot listen on tcp://127.0.0.1:{port} (push_in_spec): Address already in use"
    )


def test_rate_log_counts_between_lines() -> None:
    r = RateLog(10.0)
    assert r.note(100.0) == 1
    assert [r.note(100.0 + i) for i in range(1, 5)] == [0, 0, 0, 0]
    assert r.note(110.5) == 5  # the four silent ones and this one
    assert r.total == 6


async def test_emfile_from_accept_is_logged_at_a_limited_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio's loop reports every failed accept to the exception handler (uvloop closes the
    connection itself, libuv's EMFILE trick): gripd logs one line per interval with a count."""
    app = App(_config(tmp_path, stats_spec=""))
    loop = asyncio.get_running_loop()
    other: list[dict[str, Any]] = []
    app._prev_handler = lambda _loop, ctx: other.append(ctx)
    emfile = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    ctx: dict[str, Any] = {"message": "socket.accept() out of system resource"}
    with caplog.at_level(logging.ERROR, logger="gripd"):
        for _ in range(50):
            app._loop_exception(loop, {**ctx, "exception": emfile})
        app._loop_exception(loop, {"message": "something else"})
    lines = [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()]
    assert lines == [
        f"accept failed 1 time(s) since the last report: Too many open files (limit "
        f"{app.fd_limit}, fd_reserve 64); waiting connections stay queued"
    ]
    assert app.accept_errors.total == 50 and app.accept_errors.pending == 49
    assert other == [{"message": "something else"}]
    assert app.services is not None
    app.services.zmq.term()

"""The embedded default must run for a non-root user: its ipc rundir moves when needed."""

from __future__ import annotations

import os

import pytest

from gripd import cli
from gripd.core.config import default_config


def test_embedded_rundir_moves_when_not_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = default_config("/tmp")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    moved = cli._user_rundir(cfg)
    assert moved.rundir == f"/run/user/1234/gripd-{os.getuid()}"
    assert moved.stats_spec.startswith(f"ipc:///run/user/1234/gripd-{os.getuid()}/")
    assert cfg.rundir not in moved.stats_spec


def test_embedded_rundir_kept_when_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = default_config("/tmp")
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    assert cli._user_rundir(cfg) is cfg

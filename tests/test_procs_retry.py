"""The test harness's start retry (a picked port was taken) carries the files a test put next
to the config (key files, runner/certs) into the retry's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import procs


def test_retry_carries_the_tests_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "gripd-0"
    (first / "keys").mkdir(parents=True)
    (first / "keys" / "grip.pem").write_text("key")
    (first / "runner" / "certs").mkdir(parents=True)
    (first / "runner" / "certs" / "default_1.crt").write_text("crt")
    (first / "run").mkdir()
    (first / "pushpin.conf").write_text("old")
    seen: list[Path] = []

    def once(impl: Any, workdir: Path, routes: list[str], **kw: Any) -> Any:
        seen.append(workdir)
        if len(seen) == 1:
            raise procs.ServerStartError("bind: Address already in use")
        return workdir

    monkeypatch.setattr(procs, "_start_server_once", once)
    procs.start_server("gripd", first, ["* test"])
    retry = seen[1]
    assert retry != first
    assert (retry / "keys" / "grip.pem").read_text() == "key"
    assert (retry / "runner" / "certs" / "default_1.crt").read_text() == "crt"
    assert not (retry / "run").exists() and not (retry / "pushpin.conf").exists()

"""Which build runs: ``gripd.build`` reads it off the package's files, and each stage of
``scripts/test.sh`` checks that it tests the build it means to (pure, then mypyc-compiled)."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gripd.core.headers
import gripd.io.listener.client
from gripd import build
from tests.support.procs import REPO_ROOT

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so


def test_compiled_modules_are_read_off_the_files(tmp_path: Path) -> None:
    pkg = tmp_path / "gripd"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "headers.py").write_text("")
    (pkg / "core" / f"headers{SUFFIX}").write_bytes(b"")
    (pkg / "core" / "http.py").write_text("")
    (pkg / "core" / "http.so").write_bytes(b"")  # the plain suffix counts once, too
    (pkg / "core" / "notes.txt").write_text("")
    assert build.compiled_modules(pkg) == ["gripd.core.headers", "gripd.core.http"]
    (pkg / "core" / f"headers{SUFFIX}").unlink()
    (pkg / "core" / "http.so").unlink()
    assert build.compiled_modules(pkg) == []


def _is_extension(module: object) -> bool:
    path = getattr(module, "__file__", None) or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.skipif(
    "GRIPD_EXPECT_COMPILED" not in os.environ,
    reason="set by scripts/test.sh for each of its stages (pure, then compiled)",
)
def test_the_build_under_test_is_the_one_meant() -> None:
    compiled = os.environ["GRIPD_EXPECT_COMPILED"] == "1"
    # In this process: the modules the tests import. (A pure stage that finds compiled modules
    # runs on a tree built in place: remove its gripd/**/*.so.)
    found = build.compiled_modules()
    assert bool(found) is compiled, found
    assert _is_extension(gripd.core.headers) is compiled, gripd.core.headers.__file__
    assert _is_extension(gripd.io.listener.client) is compiled, gripd.io.listener.client.__file__
    # And in the gripd processes the end-to-end tests start (the same environment).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "gripd", "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT.parent,
        timeout=60,
        check=True,
    ).stdout
    assert ("(compiled, " in out) is compiled, out
    assert ("(pure Python)" in out) is not compiled, out


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GRIPD_MYPYC", "yes", "GRIPD_MYPYC must be 0, 1 or require, not 'yes'"),
        ("GRIPD_MYPYC_SPLIT", "yes", "GRIPD_MYPYC_SPLIT must be 0 or 1, not 'yes'"),
        ("GRIPD_MYPYC_OPT", "9", "GRIPD_MYPYC_OPT must be 0, 1, 2 or 3, not '9'"),
    ],
)
def test_build_settings_are_checked(name: str, value: str, message: str) -> None:
    """A misspelt build setting stops the build with its name, not a silent default."""
    env = {**os.environ, name: value}
    out = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert out.returncode == 1
    assert message in out.stderr

"""DESIGN: gripd/core is sans-I/O. Walk every module's imports and fail on I/O or clocks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "gripd" / "core"
FORBIDDEN = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "zmq",
    "redis",
    "uvloop",
    "httptools",
    "aiohttp",
    "subprocess",
    "signal",
    "time",
    "random",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_has_no_io_imports(path: Path) -> None:
    bad = _imports(path) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import asyncio\nfrom time import monotonic\n")
    assert _imports(f) & FORBIDDEN == {"asyncio", "time"}


IO = CORE.parent / "io"


def _modules(path: Path) -> set[str]:
    """Full dotted names of every module ``path`` imports (also under TYPE_CHECKING)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(IO.glob("*.py")), ids=lambda p: p.name)
def test_io_module_does_not_import_runtime(path: Path) -> None:
    # Adapters get the narrow interfaces of gripd.io.context, never the application object.
    bad = {m for m in _modules(path) if m == "gripd.runtime" or m.startswith("gripd.runtime.")}
    assert not bad, f"{path.name} imports {sorted(bad)}"

"""Which build of gripd this is: pure Python, or with its hot modules compiled by mypyc.

The compiled build (``GRIPD_MYPYC=1 pip install .``) puts a C extension module beside each
compiled ``.py`` file, and Python imports the extension first; so the build is read off the
installed package's files.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path


def compiled_modules(root: Path | None = None) -> list[str]:
    """The modules of the package at ``root`` (default: this gripd) installed as C extensions,
    as dotted names, sorted; empty for the pure-Python package."""
    root = root or Path(__file__).resolve().parent
    # Most specific first (".cpython-311-x86_64-linux-gnu.so" before ".so"), as the import
    # system tries them.
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    out: set[str] = set()
    for path in root.rglob("*.*"):
        name = path.as_posix()
        for suffix in suffixes:
            if name.endswith(suffix):
                rel = path.relative_to(root.parent).as_posix()[: -len(suffix)]
                out.add(rel.replace("/", "."))
                break
    return sorted(out)


def describe() -> str:
    """``compiled, N modules`` or ``pure Python``: for ``--version``, the log and status."""
    n = len(compiled_modules())
    return f"compiled, {n} modules" if n else "pure Python"

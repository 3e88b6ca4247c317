"""Helpers of the in-process micro-benchmarks (``instruct_parse.py``, ``origin_headers.py``):
a best-of-rounds timer and loading a module either from the tree or from another copy of its
file (a saved older version), so two versions are timed one after the other on one machine."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from collections.abc import Callable
from types import ModuleType


def load_module(name: str, path: str | None) -> ModuleType:
    """Module ``name`` (e.g. ``gripd.core.forward``) from the tree, or the file at ``path``."""
    if path is None:
        return importlib.import_module(name)
    alias = name.replace(".", "_") + "_impl"
    spec = importlib.util.spec_from_file_location(alias, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[alias] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def best_us(call: Callable[..., object], args: tuple[object, ...], n: int, rounds: int) -> float:
    """Best of ``rounds`` rounds of ``n`` calls of ``call(*args)``, in microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            call(*args)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6

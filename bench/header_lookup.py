"""Header lookup benchmark: the in-process cost of ``gripd.core.headers.get`` and its kin.

Usage: ``python bench/header_lookup.py [--n 200000] [--rounds 5] [--impl PATH]``.

The proxy looks request and response headers up by name several times per request (``Host``,
``Content-Length``, ``Transfer-Encoding``, ``Expect``, ``Referer``...), most of them misses.
This times :func:`~gripd.core.headers.get` (a hit on the first line, a miss), ``get_all`` and
``contains`` on the wrk-like (3 lines) and browser-like (12 lines) heads of
``bench/origin_headers.py``, and the tree's :func:`gripd.core.requestcheck.check_host`. Prints
the best of ``--rounds`` rounds of ``--n`` calls, in microseconds per call. ``--impl PATH``
loads the header functions from another copy of ``headers.py`` (a saved older version;
``check_host`` is always the tree's). For the compiled build, run it with ``PYTHONPATH`` set to
a compiled copy of the tree. In-process only: no sockets, no server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.microbench import best_us, load_module  # noqa: E402
from bench.origin_headers import BROWSER, WRK  # noqa: E402
from gripd.core.requestcheck import check_host  # noqa: E402


def cases(mod: Any) -> dict[str, Callable[[], object]]:
    """One zero-argument call per case."""
    get, get_all, contains = mod.get, mod.get_all, mod.contains
    out: dict[str, Callable[[], object]] = {}
    for label, head in (("wrk-like, 3 lines", WRK), ("browser-like, 12 lines", BROWSER)):
        out[f"get Host (first line), {label}"] = partial(get, head, "host")
        out[f"get a missing name, {label}"] = partial(get, head, "x-forwarded-proto")
        out[f"get_all Host, {label}"] = partial(get_all, head, "host")
        out[f"contains a missing name, {label}"] = partial(contains, head, "expect")
        out[f"check_host, {label}"] = partial(check_host, head)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=200000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--impl", help="path of another headers.py to time instead of the tree's")
    args = ap.parse_args()
    mod = load_module("gripd.core.headers", args.impl)
    print(f"header lookups, best of {args.rounds} rounds of {args.n} calls")
    print(f"implementation: {args.impl or mod.__file__}\n")
    print("| case | µs per call |")
    print("|---|---|")
    for name, call in cases(mod).items():
        print(f"| {name} | {best_us(call, (), args.n, args.rounds):.3f} |")


if __name__ == "__main__":
    main()

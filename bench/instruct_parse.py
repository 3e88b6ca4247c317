"""GRIP instruct parsing benchmark: the in-process cost of one ``parse_instruct`` call.

Usage: ``python bench/instruct_parse.py [--n 20000] [--rounds 5] [--impl PATH]``.

Times :func:`gripd.core.instruct.parse_instruct` on a few representative origin responses (the
header sets a long-poll or streaming origin sends) and prints the best of ``--rounds`` rounds of
``--n`` parses each, in microseconds per parse. ``--impl PATH`` loads ``parse_instruct`` from
another copy of the module (for example a saved older version) instead, so two versions can be
measured one after the other on the same machine. In-process only: no sockets, no server.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from gripd.core.headers import Headers  # noqa: E402

_ORDINARY: Headers = [
    ("Content-Type", "text/plain"),
    ("Content-Length", "0"),
    ("Date", "Sun, 06 Dec 2026 08:00:00 GMT"),
    ("Server", "origin/1.0"),
]

CASES: dict[str, Headers] = {
    "response hold, 1 channel": [
        ("Grip-Hold", "response"),
        ("Grip-Channel", "test"),
        *_ORDINARY,
    ],
    "stream hold, keep-alive": [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("Date", "Sun, 06 Dec 2026 08:00:00 GMT"),
        ("Server", "origin/1.0"),
        ("Grip-Hold", "stream"),
        ("Grip-Channel", "events"),
        ("Grip-Keep-Alive", "\\n; format=cstring; timeout=20"),
    ],
    "response hold, 3 channels + prev-id": [
        ("Grip-Hold", "response"),
        ("Grip-Channel", "a; prev-id=1"),
        ("Grip-Channel", "b; prev-id=2"),
        ("Grip-Channel", "c; prev-id=3"),
        ("Grip-Timeout", "30"),
        *_ORDINARY,
    ],
    "no GRIP, 8 ordinary headers": [
        *_ORDINARY,
        ("Cache-Control", "no-cache"),
        ("ETag", '"abc123"'),
        ("Vary", "Accept-Encoding"),
        ("X-Request-Id", "0123456789abcdef"),
    ],
}

ParseFn = Callable[..., object]


def load_parse(impl: str | None) -> ParseFn:
    """``parse_instruct`` from the tree, or from the module file at ``impl``."""
    if impl is None:
        from gripd.core.instruct import parse_instruct

        return parse_instruct
    spec = importlib.util.spec_from_file_location("instruct_impl", impl)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["instruct_impl"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    fn: ParseFn = mod.parse_instruct
    return fn


def per_parse_us(parse: ParseFn, headers: Headers, n: int, rounds: int) -> float:
    """Best of ``rounds`` rounds of ``n`` parses, in microseconds per parse."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            parse(200, "OK", headers, b"")
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=20000, help="parses per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--impl", help="path of another instruct.py to time instead of the tree's")
    args = ap.parse_args()
    parse = load_parse(args.impl)
    print(f"parse_instruct, best of {args.rounds} rounds of {args.n} parses")
    print(f"implementation: {args.impl or 'gripd.core.instruct'}\n")
    print("| headers | µs per parse |")
    print("|---|---|")
    for name, headers in CASES.items():
        print(f"| {name} | {per_parse_us(parse, headers, args.n, args.rounds):.2f} |")


if __name__ == "__main__":
    main()

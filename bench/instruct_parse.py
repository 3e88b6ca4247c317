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
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.microbench import best_us, load_module  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=20000, help="parses per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--impl", help="path of another instruct.py to time instead of the tree's")
    args = ap.parse_args()
    parse = load_module("gripd.core.instruct", args.impl).parse_instruct
    print(f"parse_instruct, best of {args.rounds} rounds of {args.n} parses")
    print(f"implementation: {args.impl or 'gripd.core.instruct'}\n")
    print("| headers | µs per parse |")
    print("|---|---|")
    for name, headers in CASES.items():
        us = best_us(parse, (200, "OK", headers, b""), args.n, args.rounds)
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()

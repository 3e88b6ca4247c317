"""Origin request header benchmark: the in-process cost of one ``origin_request_headers`` call.

Usage: ``python bench/origin_headers.py [--n 50000] [--rounds 5] [--impl PATH]``.

Times :func:`gripd.core.forward.origin_request_headers` (which includes
:func:`~gripd.core.forward.origin_host_header`) for three representative client requests: a
wrk-like GET (Host and two headers, untrusted, no token), a browser-like GET (12 headers
including X-Forwarded-For, a Grip-Sig token to send, ``x_forwarded_for=append``) and a WebSocket
upgrade. Prints the best of ``--rounds`` rounds of ``--n`` calls each, in microseconds per call.
``--impl PATH`` loads the function from another copy of the module (for example a saved older
version), so two versions can be measured one after the other on the same machine. In-process
only: no sockets, no server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.microbench import best_us, load_module  # noqa: E402
from gripd.core.headers import Headers  # noqa: E402
from gripd.core.routes import Route, Target  # noqa: E402
from gripd.core.sig import SigningKey  # noqa: E402

TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxNzk1ODgzNjAwfQ."
    "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2ln"
)

WRK: Headers = [
    ("Host", "127.0.0.1:7999"),
    ("User-Agent", "wrk"),
    ("Accept", "*/*"),
]

BROWSER: Headers = [
    ("Host", "example.com:7999"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Referer", "https://example.com/index.html"),
    ("Cookie", "session=0123456789abcdef; theme=dark"),
    ("Connection", "keep-alive"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Cache-Control", "max-age=0"),
    ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
    ("X-Request-Id", "0123456789abcdef0123456789abcdef"),
]

WEBSOCKET: Headers = [
    ("Host", "example.com:7999"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Origin", "https://example.com"),
]

ROUTE = Route(
    id="",
    explicit_id=False,
    domain="*",
    proto=None,
    ssl=None,
    path_beg=None,
    targets=(Target(kind="host", host="127.0.0.1", port=8080),),
)

OrhFn = Callable[..., Any]


def cases(mod: Any) -> dict[str, Callable[[], object]]:
    """One zero-argument call per case, arguments bound as the proxy handler passes them."""

    def settings(xff: tuple[str, ...]) -> Any:
        # The [proxy] defaults, as gripd.runtime.reload builds them.
        return mod.ForwardSettings(
            sig_iss="pushpin",
            sig_key=SigningKey("HS256", secret=b"changeme"),
            upstream_key=None,
            accept_x_forwarded_protocol=False,
            set_x_forwarded_protocol="proto-only",
            x_forwarded_for=xff,
            x_forwarded_for_trusted=(),
            orig_headers_need_mark=(),
        )

    fn: OrhFn = mod.origin_request_headers
    Info = mod.ClientRequestInfo
    plain, append = settings(()), settings(("append",))
    target = ROUTE.targets[0]
    wrk = Info("GET", "/", WRK, "127.0.0.1", False)
    browser = Info("GET", "/page?x=1", BROWSER, "192.0.2.10", False)
    ws = Info("GET", "/ws", WEBSOCKET, "192.0.2.10", False, ws=True)
    return {
        "wrk-like GET (3 headers, no token)": lambda: fn(
            wrk, ROUTE, target, plain, token=None, trusted=False
        ),
        "browser-like GET (12 headers, XFF, token, xff append)": lambda: fn(
            browser, ROUTE, target, append, token=TOKEN, trusted=False
        ),
        "WebSocket upgrade (8 headers, token)": lambda: fn(
            ws, ROUTE, target, plain, token=TOKEN, trusted=False
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=50000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--impl", help="path of another forward.py to time instead of the tree's")
    args = ap.parse_args()
    mod = load_module("gripd.core.forward", args.impl)
    print(f"origin_request_headers, best of {args.rounds} rounds of {args.n} calls")
    print(f"implementation: {args.impl or 'gripd.core.forward'}\n")
    print("| case | µs per call |")
    print("|---|---|")
    for name, call in cases(mod).items():
        print(f"| {name} | {best_us(call, (), args.n, args.rounds):.2f} |")


if __name__ == "__main__":
    main()

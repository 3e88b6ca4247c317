"""ZeroMQ PUSH publisher for the ``zmq`` benchmark scenario (F31, ``push_in_spec``).

Run as its own process: ``python bench/zmqpush.py --port P --count N --channels C [--format J]``.
It connects a PUSH socket to ``tcp://127.0.0.1:P`` and sends ``N`` single-frame items as fast as
the socket accepts them (PUSH blocks at its HWM, so nothing is dropped on this side). Item ``j``
goes to channel ``c<j mod C>`` (or ``fan`` with ``--channels 0``) as an ``http-stream`` item whose
content is ``data: m<j> <monotonic_ns>\\n\\n``; the receiving load generator takes the latency from
that timestamp (CLOCK_MONOTONIC is system-wide on Linux).

Encodings: ``J`` = ``J`` + JSON, ``T`` = ``T`` + tnetstring (strings are byte strings). When all
items are queued it closes with a linger of 30 s so they are flushed, then prints one JSON line:
``{"sent": N, "first_ns": ..., "last_ns": ..., "cpu": <process CPU s>}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import zmq


def tnetstring(value: Any) -> bytes:
    """Encode dicts, lists, str/bytes, ints and bools as a tnetstring (enough for publish items)."""
    if isinstance(value, bool):
        body, tag = (b"true" if value else b"false"), b"!"
    elif isinstance(value, int):
        body, tag = str(value).encode(), b"#"
    elif isinstance(value, str | bytes):
        body, tag = (value.encode() if isinstance(value, str) else value), b","
    elif isinstance(value, dict):
        body, tag = b"".join(tnetstring(k) + tnetstring(v) for k, v in value.items()), b"}"
    elif isinstance(value, list):
        body, tag = b"".join(tnetstring(v) for v in value), b"]"
    elif value is None:
        body, tag = b"", b"~"
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")
    return b"%d:%s%s" % (len(body), body, tag)


def encode(item: dict[str, Any], fmt: str) -> bytes:
    if fmt == "T":
        return b"T" + tnetstring(item)
    return b"J" + json.dumps(item, separators=(",", ":")).encode()


# The bytes ``encode`` gives for this scenario's ``J`` items, by formatting instead of json.dumps:
# at 9 µs per item json.dumps held the pusher near 110k items/s, below what the server takes.
J_TEMPLATE = b'J{"channel":"%s","formats":{"http-stream":{"content":"data: m%d %d\\n\\n"}}}'


def encode_j(channel: str, j: int, ns: int) -> bytes:
    return J_TEMPLATE % (channel.encode(), j, ns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--channels", type=int, default=0, help="0: every item to channel 'fan'")
    ap.add_argument("--format", choices=("J", "T"), default="J")
    ap.add_argument("--hwm", type=int, default=1000)
    args = ap.parse_args(argv)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, args.hwm)
    sock.setsockopt(zmq.LINGER, 30_000)
    sock.setsockopt(zmq.SNDTIMEO, 30_000)  # bound every send: a stalled peer ends the run
    sock.connect(f"tcp://127.0.0.1:{args.port}")
    time.sleep(0.3)  # let the connection come up so the first timestamps are not queue time
    channels = [f"c{i}" for i in range(args.channels)] if args.channels else ["fan"]
    fast = args.format == "J"
    # The template must give what encode() gives, byte for byte.
    check = {"channel": "c1", "formats": {"http-stream": {"content": "data: m7 42\n\n"}}}
    if encode_j("c1", 7, 42) != encode(check, "J"):
        raise SystemExit("zmqpush: J_TEMPLATE no longer matches encode()")
    first_ns = time.monotonic_ns()
    sent = 0
    error = ""
    for j in range(args.count):
        channel = channels[j % len(channels)]
        if fast:
            message = encode_j(channel, j, time.monotonic_ns())
        else:
            item = {
                "channel": channel,
                "formats": {"http-stream": {"content": f"data: m{j} {time.monotonic_ns()}\n\n"}},
            }
            message = encode(item, args.format)
        try:
            sock.send(message)
        except zmq.Again:
            error = f"send timed out after {sent} items"
            break
        sent += 1
    last_ns = time.monotonic_ns()
    sock.close()
    ctx.term()
    result = {
        "sent": sent,
        "first_ns": first_ns,
        "last_ns": last_ns,
        "cpu": time.process_time(),
        "error": error,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

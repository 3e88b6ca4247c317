"""HTTP control API publisher for the ``channels`` benchmark scenario (F28, one POST per item).

Run as its own process: ``python bench/httppush.py --port P --count N --channels C
[--concurrency K] [--batch B] [--deadline S]``. ``K`` connections each send one
``POST /publish/`` with one item (``B`` items) at a time, waiting for its answer before the
next, as a publisher library does
(``gripcontrol`` over a requests session). A connection is reused while the answers allow it
(no ``Connection: close``: gripd with ``[gripd] control_keep_alive``), else a new one is
opened per item (Pushpin, and gripd by default). Item ``j`` goes to channel ``c<j mod C>`` as
an ``http-stream`` item whose content is ``data: m<j> <monotonic_ns>\\n\\n``; the receiving
load generator takes the latency from that timestamp (CLOCK_MONOTONIC is system-wide on
Linux). The run is bounded by ``S`` seconds. At the end it prints one JSON line:
``{"sent": N, "ok": ..., "ok_items": ..., "statuses": {...}, "connections": ..., "first_ns": ...,
"last_ns": ..., "cpu": <process CPU s>, "error": ""}``.

uvloop with raw protocols and httptools: the publisher shares the machine with the server and
must cost little per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httptools
import uvloop


class Counts:
    """What every connection adds to: the next item, the answers, the connections opened."""

    def __init__(self, count: int, channels: int, port: int, batch: int = 1) -> None:
        self.count = count
        self.channels = channels
        self.batch = batch
        self.next = 0
        self.sent = 0
        self.ok = 0  # requests answered 200
        self.ok_items = 0  # the items they carried
        self.statuses: dict[str, int] = {}
        self.connections = 0
        self.last_size = 0  # items in the request take() returned last
        self.head = (
            f"POST /publish/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    def take(self) -> bytes | None:
        """The next request's bytes (``batch`` items, fewer at the end), or None when all
        are sent."""
        first = self.next
        if first >= self.count:
            return None
        end = min(self.count, first + self.batch)
        self.next = end
        now = time.monotonic_ns()
        items = []
        for j in range(first, end):
            channel = f"c{j % self.channels}" if self.channels else "fan"
            content = f"data: m{j} {now}\\n\\n"  # JSON-escaped newlines
            items.append(
                f'{{"channel":"{channel}","formats":{{"http-stream":{{"content":"{content}"}}}}}}'
            )
        body = f'{{"items":[{",".join(items)}]}}'.encode()
        self.sent += end - first
        self.last_size = end - first
        return self.head + b"%d\r\n\r\n" % len(body) + body


class Conn(asyncio.Protocol):
    """One connection: a request, its answer, the next request while the server keeps it."""

    def __init__(self, counts: Counts, closed: asyncio.Future[None]) -> None:
        self.counts = counts
        self.closed = closed
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting = False  # a request sent, its answer not complete
        self.items = 0  # in that request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        req = self.counts.take()
        assert self.transport is not None
        if req is None:
            self.transport.close()
            return
        self.waiting = True
        self.items = self.counts.last_size
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        self.waiting = False
        code = str(self.parser.get_status_code())
        c = self.counts
        c.statuses[code] = c.statuses.get(code, 0) + 1
        if code == "200":
            c.ok += 1
            c.ok_items += self.items
        if self.parser.should_keep_alive():
            self.send()
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:  # closed before its answer: the item may be lost
            c = self.counts
            c.statuses["no answer"] = c.statuses.get("no answer", 0) + 1
        if not self.closed.done():
            self.closed.set_result(None)


async def lane(counts: Counts, port: int) -> None:
    """One of the ``K`` concurrent publishers: connections one after another until done."""
    loop = asyncio.get_running_loop()
    while counts.next < counts.count:
        closed: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda c=closed: Conn(counts, c),  # type: ignore[misc]
            "127.0.0.1",
            port,
        )
        counts.connections += 1
        await closed


async def run(args: argparse.Namespace) -> dict[str, object]:
    counts = Counts(args.count, args.channels, args.port, max(1, args.batch))
    first_ns = time.monotonic_ns()
    error = ""
    try:
        await asyncio.wait_for(
            asyncio.gather(*(lane(counts, args.port) for _ in range(args.concurrency))),
            args.deadline,
        )
    except TimeoutError:
        error = f"not done within {args.deadline} s: {counts.sent} sent"
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    return {
        "sent": counts.sent,
        "ok": counts.ok,
        "ok_items": counts.ok_items,
        "statuses": counts.statuses,
        "connections": counts.connections,
        "first_ns": first_ns,
        "last_ns": time.monotonic_ns(),
        "cpu": time.process_time(),
        "error": error,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--channels", type=int, default=0, help="0: every item to channel 'fan'")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1, help="items per publish request")
    ap.add_argument("--deadline", type=float, default=120.0)
    args = ap.parse_args(argv)
    print(json.dumps(uvloop.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

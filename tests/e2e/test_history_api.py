"""The history read API of a running gripd: ``GET /channels/<channel>/items`` on the control
port answers what the instance stored, in one process and with workers (the history lives in
the hub), and what it answers publishes back through ``POST /publish``. gripd only: Pushpin
1.36 stores nothing and answers this path ``404 Not Found`` (F28).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish, stream_item
from tests.support.origin import Origin, Reply
from tests.support.procs import Server
from tests.support.rawhttp import open_request

from .test_workers import STREAMS, wait_metric

WAIT = 10.0 * TIME_SCALE
SSE = [("Content-Type", "text/event-stream"), ("Grip-Hold", "stream"), ("Grip-Channel", "news")]


def sse(n: int) -> dict[str, object]:
    return stream_item("news", f"id: {n}\ndata: item {n}\n\n", id=str(n))


async def read_items(s: Server, target: str) -> tuple[int, str, bytes]:
    """``GET target`` on the control port: (status, content type, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", s.control_port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next(
        ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("content-type:")
    )
    return int(lines[0].split(" ")[1]), ctype, body


async def items_doc(s: Server, target: str) -> dict[str, Any]:
    code, ctype, body = await read_items(s, target)
    assert (code, ctype) == (200, "application/json"), body
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_read_api_answers_the_stored_items(
    start: StartFn, origin: Origin, workers: str
) -> None:
    origin.route("GET", "/events", Reply(200, SSE, "retry: 300\n\n"))
    copy = [*SSE[:2], ("Grip-Channel", "copy")]
    origin.route("GET", "/copy", Reply(200, copy, "retry: 300\n\n"))
    conf = {
        "gripd": {"workers": workers, "history_size": "5"},
        # Prometheus on a Unix socket, to see when a worker's subscription reached the hub
        "handler": {"prometheus_port": "ipc://{rundir}/gp-prom", "prometheus_prefix": "pp_"},
    }
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf=conf)
    await publish(s, [sse(n) for n in range(1, 9)])  # size 5 keeps 4..8
    no_id = stream_item("news", "data: no id\n\n")
    await publish(s, [no_id])  # delivered live only, never stored
    doc = await items_doc(s, "/channels/news/items")
    assert [i["id"] for i in doc["items"]] == ["4", "5", "6", "7", "8"]
    assert doc["items"][0] == sse(4)
    assert (doc["last-id"], doc["gone"]) == ("8", False)
    page = await items_doc(s, "/channels/news/items?after=5&limit=2")
    assert [i["id"] for i in page["items"]] == ["6", "7"]
    gone = await items_doc(s, "/channels/news/items?after=2")
    assert gone == {"items": [], "last-id": "8", "gone": True}
    assert await items_doc(s, "/channels/nobody/items") == {
        "items": [],
        "last-id": None,
        "gone": False,
    }
    code, ctype, body = await read_items(s, "/channels/news/items?limit=x")
    assert (code, ctype, body) == (
        400,
        "text/plain",
        b"Invalid limit: must be a whole number, 0 or more.\n",
    )

    # What the API answered publishes back to a stream subscriber (on another channel: the
    # duplicate-id cache, id_cache_ttl, would drop the same channel and id again).
    resp = await open_request(s.http_port, get("/copy"), WAIT)
    try:
        await resp.head(WAIT)
        await resp.read_body_until(b"retry: 300\n\n", WAIT)
        await wait_metric(s, STREAMS, 1)
        await publish(s, [{**i, "channel": "copy"} for i in page["items"]])
        body = await resp.read_body_until(b"item 7\n\n", WAIT)
        assert body.endswith(b"id: 6\ndata: item 6\n\nid: 7\ndata: item 7\n\n")
    finally:
        resp.close()


async def test_read_api_with_history_off(start: StartFn, origin: Origin) -> None:
    """History off (the default): nothing is stored, every read is an empty list."""
    s = await start("gripd", [f"* 127.0.0.1:{origin.port}"], conf={"gripd": {"workers": "1"}})
    await publish(s, [sse(1)])
    assert await items_doc(s, "/channels/news/items") == {
        "items": [],
        "last-id": None,
        "gone": False,
    }
    assert (await items_doc(s, "/channels/news/items?after=1"))["gone"] is True

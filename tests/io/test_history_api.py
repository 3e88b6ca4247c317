"""The history read API on the control port, ``GET /channels/<channel>/items``, over real
HTTP on 127.0.0.1, against the in-memory store (``LocalHistory``).

gripd's own endpoint (Pushpin 1.36 has no history): the Pushpin endpoints next to it (F28) must
answer exactly as before, which is checked here for the paths that come close to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.history import READ_LIMIT_MAX, HistoryPolicy, MemoryHistory, Replay
from gripd.core.itemjson import history_body, item_json
from gripd.core.publish import (
    HttpResponseFormat,
    HttpStreamFormat,
    PublishItem,
    WsMessageFormat,
    parse_item,
    parse_publish_body,
)
from gripd.io.handler.history import LocalHistory
from gripd.io.inputs.control_http import start_control_server


class HistorySink:
    """A publish sink that stores what is published in the history, as the pipeline does."""

    def __init__(self, history: LocalHistory | None = None) -> None:
        self.history = history

    def publish(self, items: list[PublishItem], *, source: str) -> None:
        if self.history is not None:
            self.history.append(items)

    def recover(self) -> None:
        pass


class Api:
    def __init__(self, port: int, history: LocalHistory) -> None:
        self.port = port
        self.history = history

    def add(self, channel: str, *ids: str | None) -> None:
        self.history.append([stream_item(channel, i) for i in ids])


def stream_item(channel: str, iid: str | None, content: bytes | None = None) -> PublishItem:
    data = content if content is not None else f"data: {iid}\n\n".encode()
    return PublishItem(channel=channel, id=iid, http_stream=HttpStreamFormat(content=data))


async def start(history: LocalHistory) -> tuple[asyncio.Server, int]:
    srv = await start_control_server(HistorySink(history), "127.0.0.1", 0, history=history)
    return srv, srv.sockets[0].getsockname()[1]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    loop = asyncio.get_running_loop()
    history = LocalHistory(MemoryHistory(HistoryPolicy(size=5, ttl=0.0), channels_max=100), loop)
    srv, port = await start(history)
    yield Api(port, history)
    srv.close()
    await srv.wait_closed()


async def roundtrip(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    return code, headers, body


async def get(port: int, target: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    return split(await roundtrip(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()))


async def get_json(port: int, target: str) -> dict[str, Any]:
    code, headers, body = await get(port, target)
    assert code == 200, body
    assert headers["content-type"] == "application/json"
    assert body.endswith(b"\n")
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


def ids(doc: dict[str, Any]) -> list[str | None]:
    return [i.get("id") for i in doc["items"]]


async def test_newest_items_oldest_first(api: Api) -> None:
    api.add("c", "1", "2", "3")
    doc = await get_json(api.port, "/channels/c/items")
    assert doc == {
        "items": [
            {"channel": "c", "id": i, "formats": {"http-stream": {"content": f"data: {i}\n\n"}}}
            for i in ("1", "2", "3")
        ],
        "last-id": "3",
        "gone": False,
    }
    assert ids(await get_json(api.port, "/channels/c/items?limit=2")) == ["2", "3"]
    assert ids(await get_json(api.port, "/channels/c/items/?limit=0")) == []
    assert (await get_json(api.port, "/channels/c/items?limit=0"))["last-id"] == "3"


async def test_after_pages_forward(api: Api) -> None:
    api.add("c", "a", "b", "c", "d")
    first = await get_json(api.port, "/channels/c/items?after=a&limit=2")
    assert ids(first) == ["b", "c"] and first["gone"] is False and first["last-id"] == "d"
    nxt = await get_json(api.port, f"/channels/c/items?limit=2&after={first['items'][-1]['id']}")
    assert ids(nxt) == ["d"]
    end = await get_json(api.port, "/channels/c/items?after=d")
    assert end == {"items": [], "last-id": "d", "gone": False}
    # an empty after reads like none: the newest items
    assert ids(await get_json(api.port, "/channels/c/items?after=&limit=1")) == ["d"]


async def test_items_without_id_are_not_stored(api: Api) -> None:
    api.add("c", "1", None, "2")
    assert ids(await get_json(api.port, "/channels/c/items")) == ["1", "2"]


async def test_after_trimmed_id_is_gone(api: Api) -> None:
    api.add("c", *[str(n) for n in range(1, 9)])  # size 5: 1..3 are trimmed
    for trimmed in ("1", "3"):
        doc = await get_json(api.port, f"/channels/c/items?after={trimmed}")
        assert doc == {"items": [], "last-id": "8", "gone": True}
    assert ids(await get_json(api.port, "/channels/c/items?after=4")) == ["5", "6", "7", "8"]
    assert ids(await get_json(api.port, "/channels/c/items")) == ["4", "5", "6", "7", "8"]
    never = await get_json(api.port, "/channels/c/items?after=nope")
    assert never["gone"] is True and never["items"] == []


async def test_unknown_channel_is_empty(api: Api) -> None:
    doc = await get_json(api.port, "/channels/never-published/items")
    assert doc == {"items": [], "last-id": None, "gone": False}
    doc = await get_json(api.port, "/channels/never-published/items?after=x")
    assert doc == {"items": [], "last-id": None, "gone": True}


async def test_channel_is_percent_decoded(api: Api) -> None:
    api.add("a/b c+é", "1")
    api.add("a", "2")
    doc = await get_json(api.port, "/channels/a%2Fb%20c%2B%C3%A9/items")
    assert doc["items"][0]["channel"] == "a/b c+é" and ids(doc) == ["1"]
    # a raw "/" belongs to the channel too (everything between /channels/ and /items)
    assert ids(await get_json(api.port, "/channels/a/b%20c+%C3%A9/items")) == ["1"]
    assert ids(await get_json(api.port, "/channels/a/items")) == ["2"]
    code, headers, body = await get(api.port, "/channels/%ff/items")
    assert (code, headers["content-type"], body) == (
        400,
        "text/plain",
        b"Invalid channel: not UTF-8 once percent-decoded.\n",
    )


async def test_after_is_query_decoded(api: Api) -> None:
    api.add("c", "x+y", "x y", "z")
    assert ids(await get_json(api.port, "/channels/c/items?after=x%2By")) == ["x y", "z"]
    assert ids(await get_json(api.port, "/channels/c/items?after=x+y")) == ["z"]  # + is a space


@pytest.mark.parametrize("limit", ["abc", "-1", "", "1.5", "+3", "0x10", "%20"])
async def test_bad_limit_is_400(api: Api, limit: str) -> None:
    code, headers, body = await get(api.port, f"/channels/c/items?limit={limit}")
    assert (code, headers["content-type"], body) == (
        400,
        "text/plain",
        b"Invalid limit: must be a whole number, 0 or more.\n",
    )


async def test_limit_default_and_cap() -> None:
    loop = asyncio.get_running_loop()
    history = LocalHistory(MemoryHistory(HistoryPolicy(size=2000), channels_max=10), loop)
    srv, port = await start(history)
    try:
        history.append([stream_item("big", str(n)) for n in range(1500)])
        default = await get_json(port, "/channels/big/items")
        assert ids(default) == [str(n) for n in range(1400, 1500)]
        for huge in (str(READ_LIMIT_MAX + 1), "99999999999", "9" * 5000):
            doc = await get_json(port, f"/channels/big/items?limit={huge}")
            assert len(doc["items"]) == READ_LIMIT_MAX
            assert doc["items"][-1]["id"] == "1499"
        doc = await get_json(port, "/channels/big/items?after=0&limit=5000")
        assert ids(doc) == [str(n) for n in range(1, READ_LIMIT_MAX + 1)]
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
async def test_other_methods_are_405(api: Api, method: str) -> None:
    raw = await roundtrip(
        api.port, f"{method} /channels/c/items HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode()
    )
    body = f"Method not allowed: {method}.\n".encode()
    assert (
        raw
        == (
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        + body
    )


async def test_accept(api: Api) -> None:
    api.add("c", "1")
    for ok in ("application/json", "*/*", "text/html, application/*;q=0.5"):
        code, _, _ = await get(api.port, "/channels/c/items", f"Accept: {ok}\r\n")
        assert code == 200
    code, _, body = await get(api.port, "/channels/c/items", "Accept: text/plain\r\n")
    assert (code, body) == (406, b"Not Acceptable. Supported format is application/json.\n")


async def test_pushpin_paths_unchanged(api: Api) -> None:
    """F28: the paths around the new one still answer as Pushpin does."""
    for target in (
        "/channels",
        "/channels/",
        "/channels/c",
        "/channels//items",
        "/channels/items",
        "/channels/c/items/x",
        "/items",
    ):
        raw = await roundtrip(api.port, f"GET {target} HTTP/1.1\r\n\r\n".encode())
        assert raw == (
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: 10\r\n\r\nNot Found\n"
        ), target
    raw = await roundtrip(api.port, b"GET / HTTP/1.1\r\n\r\n")
    assert raw.endswith(b"\r\n\r\nPushpin API\n")
    raw = await roundtrip(api.port, b"GET /publish HTTP/1.1\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\n")


async def test_no_history_reader_answers_empty() -> None:
    srv = await start_control_server(HistorySink(), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        assert await get_json(port, "/channels/c/items") == {
            "items": [],
            "last-id": None,
            "gone": False,
        }
        assert (await get_json(port, "/channels/c/items?after=1"))["gone"] is True
    finally:
        srv.close()
        await srv.wait_closed()


PUBLISHED = [
    {"channel": "r", "id": "1", "formats": {"http-stream": {"content": "data: 1\n\n"}}},
    {
        "channel": "r",
        "id": "2",
        "prev-id": "1",
        "formats": {
            "http-response": {
                "code": 201,
                "reason": "Made",
                "headers": {"X-B": "2", "X-A": "1"},
                "body-bin": "/wA=",
            },
            "http-stream": {"content-bin": "gICA", "content-filters": ["skip-self"]},
            "ws-message": {"content-bin": "/w=="},
        },
        "meta": {"user": "u"},
    },
    {
        "channel": "r",
        "id": "3",
        "formats": {
            "http-response": {"body-patch": [{"op": "add", "path": "/a", "value": 1}]},
            "ws-message": {"type": "text", "content": "héllo"},
        },
        "size": 7,
        "no-seq": True,
    },
    {
        "channel": "r",
        "id": "4",
        "formats": {
            "http-response": {"action": "hint"},
            "http-stream": {"action": "close"},
            "ws-message": {"action": "close", "code": 4000, "reason": "bye"},
        },
    },
]


async def test_round_trip_through_the_publish_api(api: Api) -> None:
    """What the read API answers is a publish body that gives back the published items."""
    body = json.dumps({"items": PUBLISHED}).encode()
    raw = await roundtrip(
        api.port, f"POST /publish HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    assert raw.endswith(b"\r\n\r\nPublished\n")
    code, _, answer = await get(api.port, "/channels/r/items")
    assert code == 200
    assert parse_publish_body(answer) == parse_publish_body(body)
    doc = json.loads(answer)
    second = doc["items"][1]["formats"]
    assert second["http-response"]["body-bin"] == "/wA="  # not UTF-8: base64
    assert second["http-response"]["headers"] == [["X-A", "1"], ["X-B", "2"]]
    assert second["ws-message"] == {"type": "binary", "content-bin": "/w=="}
    assert doc["items"][2]["formats"]["ws-message"] == {"type": "text", "content": "héllo"}


class SlowReader:
    """A reader that answers later (as a remote store does), or never, or fails."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls: list[tuple[str, str | None, int]] = []

    def read(
        self, channel: str, after: str | None, limit: int, done: Callable[[Replay], None]
    ) -> None:
        self.calls.append((channel, after, limit))
        if self.mode == "fail":
            raise RuntimeError("store broke")
        if self.mode == "unreachable":  # what a remote store answers when it cannot read
            done(Replay("gone"))
        if self.mode == "later":
            item = stream_item(channel, "9")
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, done, Replay("ok", (item,), "9"))
            loop.call_later(0.1, done, Replay("ok", (), "10"))  # a second answer is ignored

    def set_policy(self, channel: str, policy: HistoryPolicy) -> None:
        pass


@pytest.mark.parametrize(
    ("mode", "code", "body"),
    [
        ("later", 200, b'{"items":[{"channel":"c","id":"9","formats":{"http-stream":'),
        ("never", 503, b"History not available, try again.\n"),
        ("fail", 500, b"Internal error.\n"),
        ("unreachable", 200, b'{"items":[],"last-id":null,"gone":true}\n'),
    ],
)
async def test_reader_answering_later(mode: str, code: int, body: bytes) -> None:
    reader = SlowReader(mode)
    srv = await start_control_server(
        HistorySink(),
        "127.0.0.1",
        0,
        history=reader,
        history_timeout=0.5,
    )
    port = srv.sockets[0].getsockname()[1]
    try:
        got_code, _, got = await get(port, "/channels/c/items?after=8&limit=3")
        assert (got_code, got[: len(body)]) == (code, body)
        assert reader.calls == [("c", "8", 3)]
        await asyncio.sleep(0.1)  # the late second answer finds the connection gone
    finally:
        srv.close()
        await srv.wait_closed()


# ---- item_json: every valid item publishes back to an equal item ----

_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)
_safe = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0"), max_size=8
)
_token = st.text("abcXYZ-_!#019", min_size=1, max_size=6)
_bytes = st.binary(max_size=8) | _text.map(lambda s: s.encode())
_filters = st.none() | st.lists(_text, max_size=2)


@st.composite
def _items(draw: st.DrawFn) -> PublishItem:
    resp = draw(
        st.none()
        | st.builds(HttpResponseFormat, action=st.sampled_from(["hint", "close"]))
        | st.builds(
            HttpResponseFormat,
            code=st.integers(0, 999),
            reason=st.none() | _safe.filter(bool),
            headers=st.lists(st.tuples(_token, _safe), max_size=3),
            body=_bytes,
            content_filters=_filters,
        )
        | st.builds(
            HttpResponseFormat,
            code=st.just(200),
            body=st.none(),
            body_patch=st.lists(st.dictionaries(_text, _text, max_size=2), max_size=2),
        )
    )
    stream = draw(
        st.none()
        | st.builds(HttpStreamFormat, action=st.sampled_from(["hint", "close"]))
        | st.builds(HttpStreamFormat, content=_bytes, content_filters=_filters)
    )
    ws = draw(
        st.none()
        | st.builds(WsMessageFormat, action=st.just("hint"))
        | st.builds(
            WsMessageFormat,
            action=st.just("close"),
            code=st.none() | st.integers(0, 2**31 - 1),
            reason=st.none() | _text.filter(bool),
        )
        | st.builds(
            WsMessageFormat,
            type=st.sampled_from(["text", "binary", "ping", "pong"]),
            content=_bytes,
            content_filters=_filters,
        )
    )
    if resp is None and stream is None and ws is None:
        stream = HttpStreamFormat(content=b"x")
    return PublishItem(
        channel=draw(_text.filter(bool)),
        id=draw(st.none() | _safe),
        prev_id=draw(st.none() | _text),
        http_response=resp,
        http_stream=stream,
        ws_message=ws,
        meta=draw(st.dictionaries(_text, _text, max_size=2)),
        size=draw(st.none() | st.integers(0, 2**31 - 1)),
        no_seq=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None)
@given(_items())
def test_item_json_round_trips(item: PublishItem) -> None:
    doc = json.loads(json.dumps(item_json(item)))  # through JSON text, as on the wire
    assert parse_item(doc) == item


async def test_unreadable_store_without_after_is_503() -> None:
    """A store that answers ``gone`` to a read of the newest items could not read at all."""
    srv = await start_control_server(
        HistorySink(), "127.0.0.1", 0, history=SlowReader("unreachable")
    )
    port = srv.sockets[0].getsockname()[1]
    try:
        code, headers, body = await get(port, "/channels/c/items")
        assert (code, headers["content-type"], body) == (
            503,
            "text/plain",
            b"History not available, try again.\n",
        )
    finally:
        srv.close()
        await srv.wait_closed()


def test_tnetstring_patch_is_answered_as_text() -> None:
    """An item published over ZeroMQ (tnetstring: strings are bytes) reads back as JSON."""
    item = parse_item(
        {
            b"channel": b"z",
            b"id": b"1",
            b"formats": {
                b"http-response": {b"body-patch": [{b"op": b"add", b"path": b"/a", b"value": b"v"}]}
            },
        },
        binary=True,
    )
    body = history_body(Replay("ok", (item,), "1"), False)
    doc = json.loads(body)
    patch = doc["items"][0]["formats"]["http-response"]["body-patch"]
    assert patch == [{"op": "add", "path": "/a", "value": "v"}]

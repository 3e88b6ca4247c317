"""Tests for gripd.core.wsevents: WebSocket-over-HTTP codec, batching and headers (F40/F41).

Expected values come from Pushpin 1.36 src/proxy/websocketoverhttp.cpp and from running 1.36
against a loopback backend (request headers, the CLOSE body, the client's 101 headers).
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.errors import GripError, OriginError
from gripd.core.headers import Headers
from gripd.core.wsevents import (
    BINARY,
    CLOSE,
    DISCONNECT,
    OPEN,
    PING,
    PONG,
    TEXT,
    WohRejected,
    WohResponse,
    WsEvent,
    WsEventsError,
    apply_meta_updates,
    batch,
    close_event,
    decode_close_content,
    decode_events,
    encode_close_content,
    encode_events,
    event_message_kind,
    message_event,
    new_connection_id,
    parse_keep_alive_interval,
    parse_woh_response,
    split_frames,
    woh_client_101_headers,
    woh_request_headers,
)

CT = ("Content-Type", "application/websocket-events")

# ---------------------------------------------------------------------------------------------
# Codec


@pytest.mark.parametrize(
    ("events", "wire"),
    [
        ([], b""),
        ([WsEvent(OPEN)], b"OPEN\r\n"),
        ([WsEvent(TEXT, b"hello")], b"TEXT 5\r\nhello\r\n"),
        ([WsEvent(TEXT, b"")], b"TEXT 0\r\n\r\n"),
        ([WsEvent(BINARY, bytes(range(26)))], b"BINARY 1a\r\n" + bytes(range(26)) + b"\r\n"),
        ([WsEvent(PING)], b"PING\r\n"),
        ([WsEvent(PONG, b"x")], b"PONG 1\r\nx\r\n"),
        # F40 [verified]: a client close(1000, "bye")
        ([WsEvent(CLOSE, b"\x03\xe8bye")], b"CLOSE 5\r\n\x03\xe8bye\r\n"),
        ([WsEvent(CLOSE)], b"CLOSE\r\n"),
        ([WsEvent(DISCONNECT)], b"DISCONNECT\r\n"),
        (
            [WsEvent(OPEN), WsEvent(TEXT, b"a\r\nb"), WsEvent(CLOSE)],
            b"OPEN\r\nTEXT 4\r\na\r\nb\r\nCLOSE\r\n",
        ),
        ([WsEvent(TEXT, b"x" * 4096)], b"TEXT 1000\r\n" + b"x" * 4096 + b"\r\n"),
    ],
)
def test_encode_and_decode_table(events: list[WsEvent], wire: bytes) -> None:
    assert encode_events(events) == wire
    assert decode_events(wire) == events


@pytest.mark.parametrize("etype", ["", "TE XT", "A\r\nB", "B\n", "ÜBER"])
def test_encode_rejects_unencodable_types(etype: str) -> None:
    with pytest.raises(ValueError):
        encode_events([WsEvent(etype)])


@pytest.mark.parametrize(
    ("wire", "events"),
    [
        # uppercase hex is accepted (QByteArray::toInt base 16)
        (b"TEXT A\r\n0123456789\r\n", [WsEvent(TEXT, b"0123456789")]),
        (b"TEXT 00a\r\n0123456789\r\n", [WsEvent(TEXT, b"0123456789")]),
        # Pushpin tolerates a missing final CRLF (or half of it) at the end of the body
        (b"OPEN\r\nTEXT 2\r\nhi", [WsEvent(OPEN), WsEvent(TEXT, b"hi")]),
        (b"TEXT 2\r\nhi\r", [WsEvent(TEXT, b"hi")]),
        # unknown and empty types are decoded; the session ignores them like Pushpin
        (b"\r\nFOO\r\n", [WsEvent(""), WsEvent("FOO")]),
        (b"X 1\r\n\xff\r\n", [WsEvent("X", b"\xff")]),
        (b"\xc9V\r\n", [WsEvent("\xc9V")]),  # latin-1, never a decode error
    ],
)
def test_decode_lenient_cases(wire: bytes, events: list[WsEvent]) -> None:
    assert decode_events(wire) == events


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"OPEN", "not terminated by CRLF"),
        (b"OPEN\r\nTEXT", "not terminated by CRLF"),
        (b"OPEN\n", "not terminated by CRLF"),
        (b"TEXT zz\r\nhello\r\n", "invalid content length 'zz'"),
        (b"TEXT \r\n\r\n", "invalid content length ''"),
        (b"TEXT -5\r\nhello\r\n", "invalid content length '-5'"),
        (b"TEXT 0x5\r\nhello\r\n", "invalid content length '0x5'"),
        (b"TEXT 5 \r\nhello\r\n", "invalid content length '5 '"),
        (b"TEXT 5\r\nhel", "content truncated: 5 bytes declared, 3 present"),
        (b"TEXT ffffffffffffffff\r\nx\r\n", "content truncated"),
        (b"TEXT 3\r\nhello\r\nOPEN\r\n", "'TEXT' content not followed by CRLF"),
        (b"TEXT 5\r\nhelloXXOPEN\r\n", "content not followed by CRLF"),
        (b"TEXT 5\r\nhelloX", "content not followed by CRLF"),
    ],
)
def test_decode_errors(wire: bytes, reason: str) -> None:
    with pytest.raises(WsEventsError) as ei:
        decode_events(wire)
    assert reason in str(ei.value)
    assert isinstance(ei.value, OriginError)


_types = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
)
_events = st.lists(st.builds(WsEvent, _types, st.none() | st.binary(max_size=300)), max_size=8)


@given(_events)
def test_roundtrip(events: list[WsEvent]) -> None:
    assert decode_events(encode_events(events)) == events


@given(_events, _events)
def test_concatenation_is_event_concatenation(a: list[WsEvent], b: list[WsEvent]) -> None:
    assert decode_events(encode_events(a) + encode_events(b)) == a + b


@given(st.binary(max_size=200))
def test_decode_raises_only_documented_error(body: bytes) -> None:
    try:
        events = decode_events(body)
    except WsEventsError:
        return
    assert all(isinstance(e, WsEvent) for e in events)


@given(_events, st.binary(max_size=20))
def test_decode_garbage_after_valid_events(events: list[WsEvent], tail: bytes) -> None:
    try:
        decode_events(encode_events(events) + tail)
    except WsEventsError:
        pass


# ---------------------------------------------------------------------------------------------
# Messages and CLOSE content


@pytest.mark.parametrize(
    ("kind", "data", "event"),
    [
        ("text", b"hi", WsEvent(TEXT, b"hi")),
        ("text", b"", WsEvent(TEXT, b"")),
        ("binary", b"\x00", WsEvent(BINARY, b"\x00")),
        ("binary", b"", WsEvent(BINARY, b"")),
        ("ping", b"", WsEvent(PING)),  # F40: content only if not empty
        ("ping", b"p", WsEvent(PING, b"p")),
        ("pong", b"", WsEvent(PONG)),
        ("pong", b"q", WsEvent(PONG, b"q")),
    ],
)
def test_message_event(kind: str, data: bytes, event: WsEvent) -> None:
    assert message_event(kind, data) == event  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("etype", "kind"),
    [(TEXT, "text"), (BINARY, "binary"), (PING, "ping"), (PONG, "pong"), (OPEN, None), ("X", None)],
)
def test_event_message_kind(etype: str, kind: str | None) -> None:
    assert event_message_kind(WsEvent(etype, b"")) == kind


@pytest.mark.parametrize(
    ("code", "reason", "content"),
    [
        (1000, "bye", b"\x03\xe8bye"),
        (1000, "", b"\x03\xe8"),
        (4001, "ünï", b"\x0f\xa1" + "ünï".encode()),
        (0, "", b"\x00\x00"),
        (65535, "x", b"\xff\xffx"),
        (None, "", None),
    ],
)
def test_close_content(code: int | None, reason: str, content: bytes | None) -> None:
    assert encode_close_content(code, reason) == content
    assert decode_close_content(content) == (code, reason)
    assert close_event(code, reason) == WsEvent(CLOSE, content)


@pytest.mark.parametrize("code", [-1, 65536, 100000])
def test_close_code_out_of_range(code: int) -> None:
    with pytest.raises(ValueError):
        encode_close_content(code, "")


@pytest.mark.parametrize(
    ("content", "decoded"),
    [
        (b"", (None, "")),
        (b"\x03", (None, "")),  # fewer than 2 bytes: no code (F41)
        (b"\x03\xe9", (1001, "")),
        (b"\x03\xe8\xff", (1000, "\ufffd")),  # invalid UTF-8 replaced
    ],
)
def test_decode_close_content_edge(content: bytes, decoded: tuple[int | None, str]) -> None:
    assert decode_close_content(content) == decoded


@given(st.integers(0, 65535), st.text(max_size=50))
def test_close_roundtrip(code: int, reason: str) -> None:
    reason = reason.encode("utf-8", "replace").decode("utf-8")
    assert decode_close_content(encode_close_content(code, reason)) == (code, reason)


@pytest.mark.parametrize(
    ("size", "sizes"),
    [(0, [0]), (1, [1]), (16384, [16384]), (16385, [16384, 1]), (40000, [16384, 16384, 7232])],
)
def test_split_frames(size: int, sizes: list[int]) -> None:
    data = bytes(i % 251 for i in range(size))
    frames = split_frames(data)
    assert [len(f) for f in frames] == sizes
    assert b"".join(frames) == data


# ---------------------------------------------------------------------------------------------
# Batching


def _t(n: int) -> WsEvent:
    return WsEvent(TEXT, b"x" * n)


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "max_events", "taken"),
    [
        ([], 10, 0, 0),
        ([3, 3, 3], 10, 0, 3),
        ([5, 5], 10, 0, 2),  # exactly at the limit
        ([5, 5, 1], 10, 0, 2),  # whole messages only
        ([10], 10, 0, 1),
        ([1, 10], 10, 0, 1),
        ([3, 3, 3], 10, 1, 1),  # one_event
        ([3, 3, 3], 10, 2, 2),
        ([0, 0, 0], 0, 0, 3),  # zero-length content counts nothing
    ],
)
def test_batch(sizes: list[int], max_bytes: int, max_events: int, taken: int) -> None:
    queue = [_t(n) for n in sizes]
    now, rest = batch(queue, max_bytes, max_events)
    assert now == queue[:taken]
    assert rest == queue[taken:]


def test_batch_counts_content_none_as_zero() -> None:
    queue = [WsEvent(PING), _t(10), WsEvent(PONG)]
    assert batch(queue, 10) == (queue, [])


def test_batch_default_limit_is_200000() -> None:
    queue = [_t(100_000), _t(100_000), _t(1)]
    now, rest = batch(queue)
    assert len(now) == 2 and rest == [queue[2]]
    with pytest.raises(WsEventsError, match="200001 bytes exceeds the 200000-byte limit"):
        batch([_t(200_001)])


def test_batch_oversized_message_after_others_is_sent_later() -> None:
    queue = [_t(1), _t(11), _t(1)]
    now, rest = batch(queue, 10)
    assert now == [queue[0]]
    with pytest.raises(WsEventsError):
        batch(rest, 10)


@given(st.lists(st.integers(0, 50), max_size=20), st.integers(50, 120), st.integers(0, 4))
def test_batch_properties(sizes: list[int], max_bytes: int, max_events: int) -> None:
    queue = [_t(n) for n in sizes]
    now, rest = batch(queue, max_bytes, max_events)
    assert now + rest == queue
    assert sum(len(e.content or b"") for e in now) <= max_bytes
    if queue:
        assert now  # progress whenever something fits
    if max_events:
        assert len(now) <= max_events


# ---------------------------------------------------------------------------------------------
# Request headers (F40)


def test_new_connection_id() -> None:
    cid = new_connection_id(bytes(range(16)))
    assert len(cid) == 36
    assert uuid.UUID(cid).version == 4
    assert cid == new_connection_id(bytes(range(16)))
    assert cid != new_connection_id(bytes(range(1, 17)))


CLIENT: Headers = [
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "t/zswHlVJGevZgVqyiDZ4A=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Extensions", "permessage-deflate"),
    ("Accept", "x/y"),
    ("Connection-Id", "spoof"),
    ("Meta-User", "spoof"),
    ("meta-role", "admin"),
    ("Content-Length", "0"),
    ("Content-Type", "text/foo"),
    ("Keep-Alive", "5"),
    ("Transfer-Encoding", "chunked"),
    ("TE", "trailers"),
    ("X-Client", "c"),
    ("Grip-Sig", "token"),
]


def test_request_headers() -> None:
    out = woh_request_headers(CLIENT, {"User": "alice", "x": "1"}, "CID", 12)
    assert out == [
        ("Host", "example.com"),
        ("Sec-WebSocket-Key", "t/zswHlVJGevZgVqyiDZ4A=="),
        ("Sec-WebSocket-Version", "13"),
        ("TE", "trailers"),
        ("X-Client", "c"),
        ("Grip-Sig", "token"),
        ("Sec-WebSocket-Extensions", "grip"),
        ("Accept", "application/websocket-events"),
        ("Connection-Id", "CID"),
        ("Content-Type", "application/websocket-events"),
        ("Content-Length", "12"),
        ("Meta-User", "alice"),
        ("Meta-x", "1"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "Upgrade",
        "ACCEPT",
        "connection-id",
        "Content-Length",
        "Sec-WebSocket-Extensions",
        "Meta-Anything",
        "META-X",
        "Connection",
        "Keep-Alive",
    ],
)
def test_request_headers_drop(name: str) -> None:
    out = woh_request_headers([(name, "client-value")], {}, "CID")
    assert "client-value" not in [v for _, v in out], out


def test_request_headers_without_grip_or_length() -> None:
    out = woh_request_headers([("X", "1")], {}, "CID", grip=False)
    assert out == [
        ("X", "1"),
        ("Accept", "application/websocket-events"),
        ("Connection-Id", "CID"),
        ("Content-Type", "application/websocket-events"),
    ]


# ---------------------------------------------------------------------------------------------
# Responses (F41)


@pytest.mark.parametrize(
    ("value", "interval"),
    [
        (None, None),
        ("30", 30),
        ("20", 20),
        ("5", 20),  # minimum 20
        ("1", 20),
        (" 25 ", 25),
        ("+25", 25),
        ("0", 0),  # <= 0 disables
        ("-1", 0),
        ("abc", 0),
        ("", 0),
        ("1.5", 0),
        ("2147483647", 2147483647),
        ("2147483648", 0),  # not an int32
        ("9" * 5000, 0),  # past Python's int() digit limit: not an int32 (fuzzing find)
        ("0" * 5000 + "25", 25),  # leading zeros are not significant digits
    ],
)
def test_keep_alive_interval(value: str | None, interval: int | None) -> None:
    assert parse_keep_alive_interval(value) == interval


def test_parse_response_opening() -> None:
    headers: Headers = [
        CT,
        ("Sec-WebSocket-Extensions", 'grip; message-prefix=""'),
        ("Set-Meta-User", "alice"),
        ("set-meta-Foo", ""),
        ("Set-Meta-", "ignored"),
        ("Keep-Alive-Interval", "5"),
    ]
    body = b"OPEN\r\nTEXT 7\r\nm:hello\r\n"
    r = parse_woh_response(200, "OK", headers, body, opening=True)
    assert r == WohResponse(
        [WsEvent(OPEN), WsEvent(TEXT, b"m:hello")], 20, [("User", "alice"), ("Foo", "")], ""
    )


@pytest.mark.parametrize(
    ("ext", "prefix"),
    [(None, None), ("grip", "m:"), ("grip; message-prefix=x", "x"), ("foo", None)],
)
def test_parse_response_grip_prefix(ext: str | None, prefix: str | None) -> None:
    headers: Headers = [CT] + ([("Sec-WebSocket-Extensions", ext)] if ext else [])
    assert parse_woh_response(200, "OK", headers, b"", opening=False).grip_prefix == prefix


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (404, [CT]),
        (101, [CT]),
        (500, []),
        (200, []),
        (200, [("Content-Type", "application/websocket-events; charset=utf-8")]),
        (200, [("Content-Type", "Application/WebSocket-Events")]),
        (200, [("Content-Type", "text/plain"), CT]),  # only the first value counts
    ],
)
def test_parse_response_rejected(status: int, headers: Headers) -> None:
    body = b"x" * 150_000
    with pytest.raises(WohRejected) as ei:
        parse_woh_response(status, "Reason", headers, body, opening=True)
    assert (ei.value.status, ei.value.reason, ei.value.headers) == (status, "Reason", headers)
    assert len(ei.value.body) == 100_000  # F41: rejection body cut to 100,000 bytes
    assert isinstance(ei.value, WsEventsError)


@pytest.mark.parametrize(
    ("headers", "body", "opening", "reason"),
    [
        ([CT], b"", True, "no events and no Keep-Alive-Interval"),
        ([CT, ("Keep-Alive-Interval", "0")], b"", True, "no events"),
        ([CT], b"TEXT 2\r\nhi\r\n", True, "first event is 'TEXT', not 'OPEN'"),
        ([CT], b"open\r\n", True, "not 'OPEN'"),
        ([CT], b"OPEN", True, "not terminated by CRLF"),
        ([CT], b"TEXT 9\r\nhi\r\n", False, "content truncated"),
        ([CT], b"TEXT 1\r\n" + b"x" * 1_000_000, False, "over 1000000 bytes"),
    ],
)
def test_parse_response_errors(headers: Headers, body: bytes, opening: bool, reason: str) -> None:
    with pytest.raises(WsEventsError, match=reason) as ei:
        parse_woh_response(200, "OK", headers, body, opening=opening)
    assert not isinstance(ei.value, WohRejected)
    assert isinstance(ei.value, GripError)


@pytest.mark.parametrize(
    ("headers", "body", "opening", "events", "interval"),
    [
        ([CT, ("Keep-Alive-Interval", "30")], b"", True, [], 30),  # empty first + keep-alive
        ([CT], b"", False, [], None),  # later keep-alive answer
        ([CT], b"TEXT 2\r\nhi\r\nOPEN\r\n", False, [WsEvent(TEXT, b"hi"), WsEvent(OPEN)], None),
        (
            [CT],
            b"OPEN\r\nCLOSE 2\r\n\x03\xe8\r\n",
            True,
            [WsEvent(OPEN), WsEvent(CLOSE, b"\x03\xe8")],
            None,
        ),
    ],
)
def test_parse_response_ok(
    headers: Headers, body: bytes, opening: bool, events: list[WsEvent], interval: int | None
) -> None:
    r = parse_woh_response(200, "OK", headers, body, opening=opening)
    assert (r.events, r.keep_alive_interval) == (events, interval)


@pytest.mark.parametrize(
    ("meta", "updates", "result"),
    [
        ({}, [("User", "alice")], {"User": "alice"}),
        ({"User": "a"}, [("user", "b")], {"user": "b"}),  # case-insensitive replace
        ({"User": "a", "X": "1"}, [("USER", "")], {"X": "1"}),  # empty deletes
        ({"A": "1", "B": "2"}, [("A", "3")], {"B": "2", "A": "3"}),  # replaced entry moves last
        ({"A": "1"}, [("Missing", "")], {"A": "1"}),
        ({}, [("A", "1"), ("a", "")], {}),
    ],
)
def test_apply_meta_updates(
    meta: dict[str, str], updates: list[tuple[str, str]], result: dict[str, str]
) -> None:
    out = apply_meta_updates(meta, updates)
    assert out == result and list(out) == list(result)


def test_client_101_headers() -> None:
    # Observed with 1.36: X-Extra, Keep-Alive, Server, Date, Proxy-Connection and Trailer reach
    # the client; the private headers and the handshake headers the server writes do not.
    backend: Headers = [
        CT,
        ("Content-Length", "20"),
        ("Sec-WebSocket-Extensions", 'grip; message-prefix="m:"'),
        ("Set-Meta-User", "alice"),
        ("Set-Meta-Foo", ""),
        ("Set-Meta-", "short"),
        ("Keep-Alive-Interval", "5"),
        ("X-Extra", "1"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Server", "srv"),
        ("Date", "today"),
        ("Upgrade", "foo"),
        ("Sec-WebSocket-Accept", "bogus"),
        ("Proxy-Connection", "pc"),
        ("Trailer", "X-T"),
        ("transfer-encoding", "chunked"),
    ]
    assert woh_client_101_headers(backend) == [
        ("Set-Meta-", "short"),
        ("X-Extra", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Server", "srv"),
        ("Date", "today"),
        ("Proxy-Connection", "pc"),
        ("Trailer", "X-T"),
    ]

"""Reproducers for fuzzing finds in the listener, the origin client, routes, publish items,
WebSocket-over-HTTP and WebSocket control messages (see docs/fuzzing.md), kept as regression
tests now that each is fixed in its module.

Each test asserts the allowed outcome. A new find in one of these modules gets a test here,
marked ``xfail(strict=True)`` until its fix, whose unexpected pass then fails the suite as a
reminder to drop the mark.
"""

from __future__ import annotations

import json

from gripd.core.errors import PublishError
from gripd.core.publish import handle_control_request, parse_item, parse_publish_body
from gripd.core.routes import RouteTable
from gripd.core.wscontrol import WsControlError, parse_control_message
from gripd.core.wsevents import WsEventsError, parse_woh_response

from . import client_head, origin_head

BIG = "9" * 5000  # past Python's int() digit limit (4300)


def test_no_request_is_dispatched_after_connection_close() -> None:
    # RFC 9112 9.6: after the response to a "close" request, no further request is processed.
    # Flag 0x01: the stub app answers at once; both requests arrive in one read.
    client_head.fuzz_one(
        b"\x01GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    )


def test_nothing_is_written_after_a_rejection_closed_the_connection() -> None:
    # Two Host lines: 400 and close; the junk in the same read then gets a second 400.
    client_head.fuzz_one(b"\x00GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n\x81\x00")


def test_origin_status_under_100_is_an_origin_error() -> None:
    # llhttp reads "002" as status 2, and gripd relays "HTTP/1.1 2 OK" to the client. Such a
    # status has no class (RFC 9110 15); Pushpin 1.36 answers 502 "Error while proxying to
    # origin." (checked by running it; 999 it relays, as gripd does).
    origin_head.fuzz_one(b"\x00HTTP/1.1 002 OK\r\nContent-Length: 0\r\n\r\n")


def test_interim_response_body_is_not_passed_on() -> None:
    # llhttp reads a body after a 1xx head with Content-Length; the handler gets it before any
    # head. Pushpin 1.36 answers this origin 502 "Error while proxying to origin." (checked).
    origin_head.fuzz_one(
        b"\x00HTTP/1.1 199 Odd\r\nContent-Length: 3\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    )


def test_routes_huge_port_is_a_warning() -> None:
    table, warnings = RouteTable.parse(f"* localhost:{BIG}\n")
    assert len(table) == 0 and warnings


def test_publish_json_huge_numeric_string_is_a_publish_error() -> None:
    item = {"channel": "a", "formats": {"http-response": {"code": BIG, "body": ""}}}
    try:
        parse_publish_body(json.dumps({"items": [item]}).encode())
    except PublishError:
        pass


def test_publish_error_naming_a_lone_surrogate_key_is_a_400() -> None:
    # JSON "\ude00" decodes to a lone surrogate; the 400 message names the key and
    # _control_reply's body.encode() raises, so the control API answers 500.
    body = (
        b'{"items":[{"channel":"a","formats":{"http-response":'
        b'{"headers":{"\\ude00":1},"body":""}}}]}'
    )
    reply = handle_control_request("POST", "/publish", [], body)
    assert reply.code == 400


def test_publish_tnetstring_huge_size_is_a_publish_error() -> None:
    item = {
        b"channel": b"a",
        b"formats": {b"http-stream": {b"content": b""}},
        b"size": BIG.encode(),
    }
    try:
        parse_item(item, binary=True)
    except PublishError:
        pass


def test_woh_huge_keep_alive_interval() -> None:
    headers = [("Content-Type", "application/websocket-events"), ("Keep-Alive-Interval", BIG)]
    try:
        resp = parse_woh_response(200, "OK", headers, b"OPEN\r\n", opening=True)
    except WsEventsError:
        return
    assert resp.keep_alive_interval == 0  # not a positive int32: keep-alives off


def test_ws_control_lone_surrogate_content_bin_is_handled() -> None:
    # From a GRIP WebSocket origin: c:{"type":"keep-alive","content-bin":"\ude00"}.
    try:
        parse_control_message(b'{"type":"keep-alive","content-bin":"\\ude00"}')
    except WsControlError:
        pass

"""Pushpin's request log line (F53), shared by proxied requests and WebSocket handshakes."""

from __future__ import annotations

from gripd.core.requestlog import request_log_line
from gripd.core.routes import RouteTable


def test_fields_in_pushpin_order() -> None:
    table, _ = RouteTable.parse("*,id=r1,path_beg=/p h:80\n* h:81\n", "r")
    named, plain = table.routes
    headers = [("Referer", "http://x/"), ("User-Agent", "ua/1")]
    line = request_log_line(
        "GET http://h/p",
        "h:80",
        headers,
        named,
        "code=200 6 retry",
        peer="10.0.0.1",
        user_agent=True,
        trailer=["#c=7"],
    )
    want = (
        "GET http://h/p -> h:80 from=10.0.0.1 ref=http://x/ route=r1 code=200 6 retry ua=ua/1 #c=7"
    )
    assert line == want
    # Implicit route ids, no peer, no user agent, no target: only what Pushpin prints.
    assert request_log_line("GET ws://h/ws", None, [], plain, "code=404 22") == (
        "GET ws://h/ws code=404 22"
    )

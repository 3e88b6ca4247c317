"""The built-in ``test`` target (F50): an origin that lives inside the proxy.

It answers like an origin would, with GRIP headers where a hold is wanted, and its answer then
goes through the same GRIP handling as any origin response. Channels come from ``?channel=``
(repeatable), default ``test``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from gripd.core.http import HttpResponse, reason_phrase

MAX_REQUEST_SIZE = 100_000


def _resp(code: int, body: bytes, *extra: tuple[str, str]) -> HttpResponse:
    return HttpResponse(code, reason_phrase(code), [("Content-Type", "text/plain"), *extra], body)


def answer_test_request(path_and_query: str, body_size: int) -> HttpResponse:
    """The test handler's answer to ``path_and_query`` with a body of ``body_size`` bytes."""
    if body_size > MAX_REQUEST_SIZE:
        return _resp(400, b"request too large\n")
    parts = urlsplit(path_and_query)
    path = parts.path or "/"
    if len(path) >= 2 and path.endswith("/"):
        path = path[:-1]
    channels: list[str] = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "channel" and v not in channels:
            channels.append(v)
    if not channels:
        channels = ["test"]
    if path == "/":
        return _resp(200, b"Hello from the Pushpin test handler!\n")
    if path == "/response":
        return _resp(
            200,
            b"nothing for now\n",
            ("Grip-Hold", "response"),
            ("Grip-Channel", ", ".join(channels)),
        )
    if path == "/stream":
        return _resp(
            200,
            b"[stream opened]\n",
            ("Grip-Hold", "stream"),
            ("Grip-Channel", ", ".join(channels)),
        )
    return _resp(404, b"no such test resource\n")

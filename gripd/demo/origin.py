"""The demo's backend: a plain HTTP server that speaks GRIP, and the template for your own.

It keeps no state and holds no connection open. Every answer is immediate; the ``Grip-*``
response headers tell gripd to keep the client's connection and subscribe it to a channel:

- ``GET /api/sse``: ``Grip-Hold: stream`` with ``Content-Type: text/event-stream`` (an
  ``EventSource``), channel ``chat-sse``;
- ``GET /api/stream``: ``Grip-Hold: stream`` (a ``fetch()`` reading the body), channel ``chat``;
- ``GET /api/poll``: ``Grip-Hold: response`` with ``Grip-Timeout`` (a long-poll), channel
  ``chat``, with ``prev-id`` set to the last message id the client saw;
- ``POST /api/ws``: WebSocket-over-HTTP (the route has ``over_http``): gripd posts the
  client's WebSocket events, the answer to ``OPEN`` accepts it and sends the GRIP control
  message ``c:{"type":"subscribe","channel":"chat"}``;
- ``POST /api/send``: publishes one message to both channels through gripd's HTTP control API
  (``POST /publish/``), with one format per transport.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

#: Longest message accepted, in UTF-8 bytes.
MAX_MESSAGE_BYTES = 4096

#: Channel for the SSE pane (events framed as ``id: ..\ndata: ..\n\n``) and for the other three
#: panes (one JSON object per message).
SSE_CHANNEL = "chat-sse"
CHANNEL = "chat"

#: Message ids are made here (hex); anything else in ``?last=`` is ignored.
_ID_RE = re.compile(r"[0-9a-f]{1,64}")


class DemoServer(ThreadingHTTPServer):
    """The origin server; ``publish_url`` is gripd's ``/publish/`` endpoint, ``instances`` the
    gripd instances (name, port) the page shows."""

    daemon_threads = True

    def __init__(self, publish_url: str, instances: list[tuple[str, int]]) -> None:
        super().__init__(("127.0.0.1", 0), DemoHandler)
        self.publish_url = publish_url
        self.instances = instances
        self.page = resources.files("gripd.demo").joinpath("page.html").read_text("utf-8")

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class DemoHandler(BaseHTTPRequestHandler):
    """One request from gripd (HTTP/1.0: one request per connection, which keeps it simple)."""

    server: DemoServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: gripd logs every request already."""

    # -- the page ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/":
            self.serve_page()
        elif url.path == "/api/sse":
            self.send(200, "retry: 1000\n\n", "text/event-stream", [
                ("Grip-Hold", "stream"),
                ("Grip-Channel", SSE_CHANNEL),
                ("Grip-Keep-Alive", ":\\n\\n; format=cstring; timeout=20"),
            ])  # fmt: skip
        elif url.path == "/api/stream":
            self.send(200, "", "application/x-ndjson", [
                ("Grip-Hold", "stream"),
                ("Grip-Channel", CHANNEL),
                ("Grip-Keep-Alive", "\\n; format=cstring; timeout=20"),
            ])  # fmt: skip
        elif url.path == "/api/poll":
            last = _last_id(url.query)
            channel = CHANNEL if last is None else f"{CHANNEL}; prev-id={last}"
            self.send(200, '{"timeout": true}\n', "application/json", [
                ("Grip-Hold", "response"),
                ("Grip-Channel", channel),
                ("Grip-Timeout", "25"),
            ])  # fmt: skip
        else:
            self.send(404, "Not found.\n")

    def serve_page(self) -> None:
        config = {"instances": [{"name": n, "port": p} for n, p in self.server.instances]}
        blob = json.dumps(config).replace("</", "<\\/")
        self.send(200, self.server.page.replace("__DEMO_CONFIG__", blob), "text/html")

    # -- WebSocket-over-HTTP and publishing ----------------------------------------------------

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/api/ws":
            self.websocket_events()
        elif path == "/api/send":
            self.send_message()
        else:
            self.send(404, "Not found.\n")

    def websocket_events(self) -> None:
        """Answer gripd's batch of client WebSocket events with our own events."""
        out = []
        for name, _content in parse_events(self.read_body(1 << 20)):
            if name == "OPEN":
                last = _last_id(urllib.parse.urlsplit(self.path).query)
                sub: dict[str, str] = {"type": "subscribe", "channel": CHANNEL}
                if last is not None:
                    sub["last-id"] = last  # gripd replays what the client missed
                out += [("OPEN", b""), ("TEXT", b"c:" + json.dumps(sub).encode())]
                out.append(("TEXT", b'm:{"welcome": true}'))  # "m:" = a message to the client
            elif name == "CLOSE":
                out.append(("CLOSE", b""))
        # The client's own TEXT messages are ignored: it publishes with POST /api/send.
        self.send(200, encode_events(out), "application/websocket-events", [
            ("Sec-WebSocket-Extensions", "grip"),  # lets "c:" control messages through
        ])  # fmt: skip

    def send_message(self) -> None:
        body = self.read_body(1 << 20)  # all of it, so that the answer is not cut short
        size = max(len(body), int(self.headers.get("Content-Length") or 0))
        if size > MAX_MESSAGE_BYTES:
            self.send(400, f"Message too long: {size} bytes (at most {MAX_MESSAGE_BYTES}).\n")
            return
        try:
            text = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.send(400, "Message is not valid UTF-8.\n")
            return
        if not text:
            self.send(400, "Message is empty: type something first.\n")
            return
        msg_id = uuid.uuid4().hex[:16]
        msg = {"id": msg_id, "text": text, "time": time.strftime("%H:%M:%S")}
        try:
            publish(self.server.publish_url, publish_items(msg_id, json.dumps(msg)))
        except OSError as e:  # gripd not answering, or answering an error (HTTPError)
            self.send(502, f"Could not publish through gripd: {e}\n")
            return
        self.send(200, json.dumps({"id": msg_id}) + "\n", "application/json")

    # -- plumbing ------------------------------------------------------------------------------

    def read_body(self, limit: int) -> bytes:
        length = min(int(self.headers.get("Content-Length") or 0), limit)
        return self.rfile.read(length) if length > 0 else b""

    def send(
        self,
        code: int,
        body: str | bytes,
        content_type: str = "text/plain",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(code)
        charset = "; charset=utf-8" if content_type.startswith("text/") else ""
        self.send_header("Content-Type", content_type + charset)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def publish_items(msg_id: str, data: str) -> list[dict[str, Any]]:
    """The publish items for one message: each transport gets its own format.

    The ``id`` lets gripd drop duplicates and, with its history on, replay what a client missed
    (a reconnecting ``EventSource`` sends the last ``id:`` line it read)."""
    return [
        {
            "channel": CHANNEL,
            "id": msg_id,
            "formats": {
                "http-stream": {"content": data + "\n"},  # appended to the stream
                "http-response": {"body": data + "\n"},  # answers the long-poll
                "ws-message": {"content": data},  # one WebSocket text message
            },
        },
        {
            "channel": SSE_CHANNEL,
            "id": msg_id,
            "formats": {"http-stream": {"content": f"id: {msg_id}\ndata: {data}\n\n"}},
        },
    ]


def publish(url: str, items: list[dict[str, Any]]) -> None:
    """POST the items to gripd's control API (``http://127.0.0.1:5561/publish/`` by default)."""
    body = json.dumps({"items": items}).encode("utf-8")
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def parse_events(body: bytes) -> list[tuple[str, bytes]]:
    """``application/websocket-events``: each event is ``TYPE\\r\\n``, or
    ``TYPE <hex length>\\r\\n<content>\\r\\n`` when it has content."""
    events = []
    i = 0
    while i < len(body):
        j = body.find(b"\r\n", i)
        if j < 0:
            break
        name, _, size = body[i:j].decode("ascii", "replace").partition(" ")
        i = j + 2
        content = b""
        if size:
            n = int(size, 16)
            content = body[i : i + n]
            i += n + 2
        events.append((name, content))
    return events


def encode_events(events: list[tuple[str, bytes]]) -> bytes:
    """The reverse of :func:`parse_events` (an event without content is ``TYPE\\r\\n``)."""
    out = b""
    for name, content in events:
        if content or name in ("TEXT", "BINARY"):
            out += f"{name} {len(content):x}\r\n".encode() + content + b"\r\n"
        else:
            out += f"{name}\r\n".encode()
    return out


def _last_id(query: str) -> str | None:
    """The ``last`` query parameter when it looks like one of our ids."""
    last = urllib.parse.parse_qs(query).get("last", [""])[0]
    return last if _ID_RE.fullmatch(last) else None

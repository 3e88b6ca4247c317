"""HTTP/1.1 response values and their wire encoding (sans-I/O).

``HttpResponse`` is the one response value passed between the instruct parser, holds and the
listener. ``encode_*`` functions build the bytes the listener writes; a published response or
chunk is encoded once and the same bytes go to every subscriber.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from gripd.core.headers import Headers

# The IANA reason phrases Pushpin 1.36 knows (statusreasons.cpp); any other code gets
# "Undefined Reason" (F20, F47), e.g. 103, 418, 421, 425 and 451.
_REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    306: "Reserved",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable",
    417: "Expectation Failed",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}

# Response headers that describe one hop only (F12, F20): never copied from origin to client.
HOP_BY_HOP_RESPONSE = frozenset(
    {"connection", "keep-alive", "content-encoding", "transfer-encoding"}
)


def reason_phrase(code: int) -> str:
    """The standard reason for ``code``, or Pushpin's ``Undefined Reason`` (F20, F47)."""
    return _REASONS.get(code, "Undefined Reason")


@dataclass(slots=True, init=False)
class HttpResponse:
    """A complete response: status, headers (without framing headers) and body."""

    code: int
    reason: str
    headers: Headers
    body: bytes

    # An explicit __init__ (init=False): a compiled build (mypyc) compiles it; the one the
    # dataclass decorator generates stays interpreted and cost ~5x more per object.
    def __init__(
        self,
        code: int = 200,
        reason: str = "OK",
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.code = code
        self.reason = reason
        self.headers = [] if headers is None else headers
        self.body = body


def body_allowed(code: int, method: str) -> bool:
    """Whether a response with ``code`` to ``method`` carries a body (RFC 9110 6.4.1)."""
    return not (method == "HEAD" or 100 <= code < 200 or code in (204, 304))


def encode_head(code: int, reason: str, headers: Headers) -> bytes:
    """The status line and header block, ending with the blank line."""
    lines = [f"HTTP/1.1 {code} {reason}\r\n"]
    for k, v in headers:
        lines.append(f"{k}: {v}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


def persistent(version: str, connection: Collection[str]) -> bool:
    """Whether a connection stays open after this message (RFC 9112 9.3): never with a
    ``close`` token, HTTP/1.1 otherwise, HTTP/1.0 only with ``keep-alive``, other versions
    never. ``connection``: the Connection header's tokens, trimmed and lower-cased."""
    if "close" in connection:
        return False
    if version == "1.1":
        return True
    return version == "1.0" and "keep-alive" in connection


def encode_full(
    resp: HttpResponse, *, method: str = "GET", keep_alive: bool = True, http10: bool = False
) -> bytes:
    """A whole response with ``Content-Length`` recomputed (F20, F22). An HTTP/1.0 client
    kept alive is told so with ``Connection: keep-alive`` (else it assumes close)."""
    headers = [
        (k, v)
        for k, v in resp.headers
        if k.lower() not in HOP_BY_HOP_RESPONSE and k.lower() != "content-length"
    ]
    if body_allowed(resp.code, "GET"):
        headers.append(("Content-Length", str(len(resp.body))))
    if not keep_alive:
        headers.append(("Connection", "close"))
    elif http10:
        headers.append(("Connection", "keep-alive"))
    head = encode_head(resp.code, resp.reason, headers)
    if body_allowed(resp.code, method):
        return head + resp.body
    return head


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty input gives nothing (the end is ``LAST_CHUNK``)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def text_response(code: int, body: str, headers: Headers | None = None) -> HttpResponse:
    """A ``text/plain`` response as Pushpin sends its own errors (F47)."""
    h: Headers = [("Content-Type", "text/plain")]
    if headers:
        h.extend(headers)
    return HttpResponse(code, reason_phrase(code), h, body.encode())


def interim_head_problem(status: int, headers: Headers) -> str | None:
    """For an origin response head with a status under 200: why it cannot be relayed, or None
    for an ordinary interim response (100 Continue...) that is skipped.

    llhttp reads ``002`` as 2, a status with no class (RFC 9110 15); a 101 was not asked for;
    a 1xx has no content (RFC 9110 15.2), but llhttp would read one by its Content-Length or
    chunks. Pushpin 1.36 answers 502 to all three."""
    if status < 100:
        return f"Invalid status code from origin: {status}"
    if status == 101:
        return "Unexpected protocol upgrade from origin"
    for name, value in headers:
        n = name.lower()
        if n == "transfer-encoding" or (n == "content-length" and value.strip() != "0"):
            return "Interim response from origin has a body"
    return None

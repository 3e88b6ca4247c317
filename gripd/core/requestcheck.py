"""Checks on a parsed client request head before it is routed (sans-I/O).

``check_request`` decides whether a request head may go on to routing and the origin, or must be
answered by gripd itself. It returns the answer, or None to proceed:

- ``CONNECT`` is answered as Pushpin 1.36 answers it (checked by running it): its zurl cannot
  tunnel, so the client gets ``502`` with the generic proxy error body. gripd answers the same
  without contacting the origin, and closes the connection afterwards, since the bytes that follow
  a ``CONNECT`` are tunnel data, not HTTP.
- ``Host`` (RFC 9112 §3.2): more than one ``Host`` field line, or a value that is not
  ``uri-host [ ":" port ]`` (RFC 3986 §3.2.2), gets ``400`` and a close. Pushpin 1.36 forwards
  such requests (the first ``Host``, or an empty one); gripd follows the RFC, because proxies and
  origins that read a different ``Host`` disagree about which site a request is for.
  A missing ``Host`` is left alone (Pushpin fills in ``localhost``; routes may rely on it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gripd.core.headers import Headers, get_all, show
from gripd.core.http import HttpResponse, text_response

# RFC 3986 §3.2.2: IP-literal / IPv4address / reg-name, then an optional port (§3.2.3).
# reg-name = *( unreserved / pct-encoded / sub-delims ); it may be empty.
_HOST_RE = re.compile(
    r"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]"
    r"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    r"(?::[0-9]*)?"
)
# The usual value (a name or IPv4 address, maybe a port) without the alternation: a subset of
# _HOST_RE that ``re`` matches about three times as fast; the rest go on to _HOST_RE.
_HOST_PLAIN_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]*(?::[0-9]*)?")

#: Pushpin 1.36's answer to ``CONNECT`` (its proxy's generic origin error, F47).
CONNECT_BODY = "Error while proxying to origin.\n"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request gripd answers itself: the response, whether to close after it, and a short
    reason for the log."""

    response: HttpResponse
    close: bool
    reason: str


def valid_host(value: str) -> bool:
    """Whether ``value`` is a valid ``Host`` field value (RFC 9112 §3.2, RFC 3986 §3.2.2)."""
    return _HOST_PLAIN_RE.fullmatch(value) is not None or _HOST_RE.fullmatch(value) is not None


def check_host(headers: Headers) -> tuple[str, str] | None:
    """None when the ``Host`` field lines are acceptable, else (what is wrong, for the client;
    the same with the values, for the log)."""
    hosts = get_all(headers, "host")
    if len(hosts) > 1:
        shown = ", ".join(repr(show(h)) for h in hosts[:4])
        return "more than one Host header", f"more than one Host header: {shown}"
    if hosts and not valid_host(hosts[0]):
        return "invalid Host header", f"invalid Host header: {show(hosts[0])!r}"
    return None


def check_request(method: str, headers: Headers) -> Rejection | None:
    """What gripd answers itself for this request head, or None to route it normally."""
    if method == "CONNECT":
        return Rejection(text_response(502, CONNECT_BODY), True, "CONNECT is not supported")
    problem = check_host(headers)
    if problem is not None:
        return Rejection(text_response(400, f"Bad Request: {problem[0]}.\n"), True, problem[1])
    return None

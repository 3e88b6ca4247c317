"""Pushpin's request log line (F53, logutil.cpp ``logRequest``), for proxied requests and
WebSocket handshakes alike: ``GET http://host/path -> target [from=…] [ref=…] [route=…] code=200
6 [ua=…] [#channel=last-id…]``."""

from __future__ import annotations

from collections.abc import Iterable

from gripd.core import headers as hdr
from gripd.core.routes import Route


def request_log_line(
    head: str,
    target: str | None,
    headers: hdr.Headers,
    route: Route,
    outcome: str,
    *,
    peer: str | None = None,
    user_agent: bool = False,
    trailer: Iterable[str] = (),
) -> str:
    """``head`` is ``METHOD uri``; ``target`` None leaves ``-> target`` out (no target could
    be used); ``peer`` is logged as ``from=`` when given (``log_from``); ``user_agent``:
    ``log_user_agent``; ``trailer`` goes last (the retried request's ``#channel=last-id``)."""
    parts = [head]
    if target is not None:
        parts += ["->", target]
    if peer is not None:
        parts.append(f"from={peer}")
    if ref := hdr.get(headers, "referer"):
        parts.append(f"ref={ref}")
    if route.explicit_id:
        parts.append(f"route={route.id}")
    parts.append(outcome)
    if user_agent and (ua := hdr.get(headers, "user-agent")):
        parts.append(f"ua={ua}")
    parts.extend(trailer)
    return " ".join(parts)

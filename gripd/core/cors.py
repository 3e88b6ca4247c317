"""Automatic cross-origin headers (F45), as Pushpin 1.36 ``src/corelib/cors.cpp``.

With ``auto_cross_origin`` or the route option ``aco`` Pushpin does not answer OPTIONS itself:
every response (proxied, held, timed out, published, or one of its own errors) gets six
``Access-Control-*`` headers appended, each only when the response does not already have it
(case-insensitive). Order and values below were captured from Pushpin 1.36 [verified].

Where to call it (verified against Pushpin 1.36): on every response except a JSON-P wrapped one
(:mod:`gripd.core.jsonp`); a stream hold's (or no-hold GRIP) initial response gets CORS even when
the request used JSON-P, because Pushpin never JSON-P wraps those.
"""

from __future__ import annotations

from gripd.core.headers import Headers, get, get_all, split_unquoted
from gripd.core.http import HOP_BY_HOP_RESPONSE

DEFAULT_ALLOW_METHODS = "OPTIONS, HEAD, GET, POST, PUT, DELETE"
MAX_AGE = "3600"

# CORS "simple response headers": never listed in Access-Control-Expose-Headers.
SIMPLE_HEADERS = frozenset(
    {
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "expires",
        "last-modified",
        "pragma",
    }
)

# QByteArray::trimmed() strips exactly these.
_TRIM = " \t\n\v\f\r"


def _split_values(values: list[str]) -> list[str]:
    """Pushpin's ``getAll(name, split=true)``: every comma-separated item outside quotes,
    trimmed, empties dropped (the caller drops them in cors.cpp)."""
    out: list[str] = []
    for value in values:
        for part in split_unquoted(value, ","):
            part = part.strip(_TRIM)
            if part:
                out.append(part)
    return out


def apply_cors(request_headers: Headers, response_headers: Headers) -> Headers:
    """F45: a copy of ``response_headers`` with the missing ``Access-Control-*`` headers
    appended, in Pushpin's order: Allow-Methods, Allow-Headers, Expose-Headers,
    Allow-Credentials, Allow-Origin, Max-Age.

    - Allow-Methods: the request's first ``Access-Control-Request-Method`` if non-empty, else
      ``OPTIONS, HEAD, GET, POST, PUT, DELETE``.
    - Allow-Headers: every ``Access-Control-Request-Headers`` item joined with ``", "``; not
      added when there are none.
    - Expose-Headers: the response's header names (first spelling, case-insensitive unique)
      except simple ones, ``Access-Control-*`` and ``Grip-*``; not added when none are left.
      Hop-by-hop names (Connection, Transfer-Encoding, ...) are skipped too: Pushpin never
      sees them at this point [verified with a chunked origin response].
    - Allow-Credentials ``true``; Allow-Origin = the request's ``Origin`` or ``*``;
      Max-Age ``3600``.
    """
    out = list(response_headers)
    present = {k.lower() for k, _ in out}

    if "access-control-allow-methods" not in present:
        method = get(request_headers, "Access-Control-Request-Method")
        out.append(("Access-Control-Allow-Methods", method or DEFAULT_ALLOW_METHODS))

    if "access-control-allow-headers" not in present:
        allow = _split_values(get_all(request_headers, "Access-Control-Request-Headers"))
        if allow:
            out.append(("Access-Control-Allow-Headers", ", ".join(allow)))

    if "access-control-expose-headers" not in present:
        # Computed over the list as it is now (after the two above), like cors.cpp; those
        # are Access-Control-* and so never listed.
        expose: list[str] = []
        seen: set[str] = set()
        for name, _ in out:
            lname = name.lower()
            if (
                lname in seen
                or lname in SIMPLE_HEADERS
                or lname in HOP_BY_HOP_RESPONSE
                or lname.startswith("access-control-")
                or lname.startswith("grip-")
            ):
                continue
            seen.add(lname)
            expose.append(name)
        if expose:
            out.append(("Access-Control-Expose-Headers", ", ".join(expose)))

    if "access-control-allow-credentials" not in present:
        out.append(("Access-Control-Allow-Credentials", "true"))

    if "access-control-allow-origin" not in present:
        out.append(("Access-Control-Allow-Origin", get(request_headers, "Origin") or "*"))

    if "access-control-max-age" not in present:
        out.append(("Access-Control-Max-Age", MAX_AGE))

    return out

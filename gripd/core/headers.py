"""HTTP header lists and Pushpin's header-value grammar.

Headers are kept as an ordered list of ``(name, value)`` ``str`` pairs (latin-1 decoded), with the
name's case preserved, because order and repeats matter (``Grip-Channel`` may repeat) and clients
should see the origin's spelling. Lookups are case-insensitive.

Value parsing follows Pushpin's ``HttpHeaders::parseParameters`` (fanout/common httpheaders.cpp):
a value is split on commas outside double quotes; each part is ``first; k=v; k2="v 2"``.
"""

from __future__ import annotations

Headers = list[tuple[str, str]]
Params = list[tuple[str, str]]


def get(headers: Headers, name: str) -> str | None:
    """The first value of ``name`` (case-insensitive), or None."""
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return None


def get_all(headers: Headers, name: str) -> list[str]:
    """Every value of ``name``, in order."""
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]


def contains(headers: Headers, name: str) -> bool:
    lname = name.lower()
    return any(k.lower() == lname for k, _ in headers)


def remove(headers: Headers, *names: str) -> Headers:
    """A copy without any header named in ``names`` (case-insensitive)."""
    lnames = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in lnames]


def set_header(headers: Headers, name: str, value: str) -> Headers:
    """A copy where ``name`` has the single value ``value`` (at the first position it had)."""
    lname = name.lower()
    out: Headers = []
    done = False
    for k, v in headers:
        if k.lower() == lname:
            if not done:
                out.append((name, value))
                done = True
        else:
            out.append((k, v))
    if not done:
        out.append((name, value))
    return out


def split_unquoted(value: str, sep: str) -> list[str]:
    """Split ``value`` on ``sep`` where it is outside double quotes (backslash escapes)."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def unquote(value: str) -> str:
    """Strip one level of double quotes and backslash escapes, if the value is quoted."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for ch in inner:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return value


def parse_parameters(part: str) -> tuple[str, Params]:
    """``'a; k=v; k2="x y"; flag'`` -> ``('a', [('k','v'), ('k2','x y'), ('flag','')])``."""
    pieces = split_unquoted(part, ";")
    first = pieces[0].strip()
    params: Params = []
    for piece in pieces[1:]:
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece:
            k, v = piece.split("=", 1)
            params.append((k.strip(), unquote(v.strip())))
        else:
            params.append((piece, ""))
    return first, params


def parse_list(values: list[str]) -> list[tuple[str, Params]]:
    """Parse every comma-separated element of every value (repeated headers concatenate)."""
    out: list[tuple[str, Params]] = []
    for value in values:
        for part in split_unquoted(value, ","):
            if part.strip():
                out.append(parse_parameters(part))
    return out


def param(params: Params, name: str) -> str | None:
    """The value of parameter ``name`` (case-insensitive), or None."""
    lname = name.lower()
    for k, v in params:
        if k.lower() == lname:
            return v
    return None

"""HTTP header lists and Pushpin's header-value grammar.

Headers are kept as an ordered list of ``(name, value)`` ``str`` pairs (latin-1 decoded), with the
name's case preserved, because order and repeats matter (``Grip-Channel`` may repeat) and clients
should see the origin's spelling. Lookups are case-insensitive.

Value parsing follows Pushpin's ``HttpHeaders::parseParameters`` (fanout/common httpheaders.cpp):
a value is split on commas outside double quotes; each part is ``first; k=v; k2="v 2"``.

:func:`field_problem` is the one check for header text that does not come through an HTTP parser
(published items, grip-instruct JSON, routes options, WebSocket control messages): it runs once,
where such input is parsed, so the write path can emit header text as is without splitting risk.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Headers = list[tuple[str, str]]
Params = list[tuple[str, str]]


# CPython's str.lower, also in the compiled build: mypyc's own lower() skips the final-sigma rule
# for non-ASCII text ("ΣΣ" gives "σσ" where Python gives "σς"); called through this name it is
# the CPython method.
_PY_LOWER: Callable[[str], str] = str.lower


def lower_text(s: str) -> str:
    """``s.lower()`` the same in both builds, for text that may be non-ASCII (configuration
    values such as route hosts): header names and HTTP/1 field values are latin-1 and lower
    the same either way."""
    return s.lower() if s.isascii() else _PY_LOWER(s)


def get(headers: Headers, name: str) -> str | None:
    """The first value of ``name`` (case-insensitive), or None.

    ``name`` is ASCII (every caller's is a constant). A field name of another length can't
    match it, so most lines are passed over without lowering them: ``lower()`` keeps the
    length of every latin-1 name, and the one character whose lowercase is longer (U+0130)
    can't lower to ASCII."""
    lname = name.lower()
    n = len(lname)
    for k, v in headers:
        if len(k) == n and k.lower() == lname:
            return v
    return None


def get_all(headers: Headers, name: str) -> list[str]:
    """Every value of ``name``, in order (``name`` as for :func:`get`)."""
    lname = name.lower()
    n = len(lname)
    return [v for k, v in headers if len(k) == n and k.lower() == lname]


def contains(headers: Headers, name: str) -> bool:
    lname = name.lower()
    n = len(lname)
    return any(len(k) == n and k.lower() == lname for k, _ in headers)


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
    if '"' not in value:
        # nothing is quoted (a backslash escapes only inside quotes): a plain split, and the
        # common case for header values
        return value.split(sep)
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


# RFC 9110 5.1/5.6.2: a field name is a token (1*tchar).
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 5.5: CR, LF and NUL are never allowed in a field value (nor in a reason phrase,
# RFC 9112 4); emitting them lets the sender split the response or start a new header.
_UNSAFE_RE = re.compile(r"[\r\n\x00]")
_SHOW_RE = re.compile(r"[\x00-\x1f\x7f]")


def is_token(name: str) -> bool:
    """Whether ``name`` is a valid field name (an RFC 9110 token)."""
    return _TOKEN_RE.fullmatch(name) is not None


def is_safe_text(value: str) -> bool:
    """Whether ``value`` may be written into a header value or status line (no CR, LF, NUL)."""
    return _UNSAFE_RE.search(value) is None


def field_problem(name: str, value: str) -> str | None:
    """``None`` for a header that is safe to write, else ``"name"`` or ``"value"`` (the part at
    fault; the name is checked first)."""
    if not is_token(name):
        return "name"
    if not is_safe_text(value):
        return "value"
    return None


def show(text: str) -> str:
    """``text`` with control characters escaped (``\\r``, ``\\x00``...), for error texts and
    logs that quote untrusted header text."""
    return _SHOW_RE.sub(lambda m: repr(m.group(0))[1:-1], text)

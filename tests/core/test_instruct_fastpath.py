"""The one-pass GRIP header parsing (F20) gives exactly what the earlier per-lookup parser gave.

``parse_instruct`` collects the ``Grip-*`` headers in one pass and has fast paths for plain
parameter values; this module keeps a copy of the earlier implementation (each lookup a
case-insensitive scan of the whole header list, every value through the full Qt-compatible
grammar) as the reference, and compares results (``repr``) and errors (type and message, so
also which error comes first) on generated header lists: mixed-case and duplicated names,
values with ``;``, ``,``, quotes and backslashes, empty and non-ASCII values, bad Grip-Hold,
bad timeouts, Grip-Expose-Headers, grip-instruct JSON bodies (F21).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gripd.core.errors import InstructError
from gripd.core.headers import Headers, contains, get, get_all
from gripd.core.http import HOP_BY_HOP_RESPONSE, HttpResponse, reason_phrase
from gripd.core.instruct import (
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_NEXTLINK_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT,
    GRIP_INSTRUCT_CONTENT_TYPE,
    MINIMUM_RESPONSE_TIMEOUT,
    TOO_MANY_SUBSCRIPTIONS,
    Channel,
    Instruct,
    KeepAlive,
    NextLink,
    _all_as_params,
    _encode_link,
    _header_split,
    _Param,
    _parse_json_hold,
    _parse_json_response,
    _parse_params,
    _parse_params_full,
    _pcontains,
    _pget,
    _State,
    decode_keep_alive_data,
    parse_instruct,
)
from gripd.core.qtcompat import decode_json, from_utf8, raw_bytes, to_int, url_valid
from gripd.core.wildcard import pattern_error

# ---------------------------------------------------------------------------------------------
# The reference: the parser as it was before the one-pass rewrite (a lookup per header name,
# every value through the full grammar, ``_parse_params_full``).


def _ref_all_as_params(
    headers: Headers, name: str, parse_first: bool = False
) -> list[list[_Param]]:
    out: list[list[_Param]] = []
    for value in get_all(headers, name):
        for part in _header_split(value):
            params = _parse_params_full(part, parse_first)
            if params is not None:
                out.append(params)
    return out


def _ref_as_params(headers: Headers, name: str) -> list[_Param]:
    value = get(headers, name)
    if not value:
        return []
    return _parse_params_full(value) or []


def _ref_parse_header_form(st_: _State, headers: Headers) -> None:
    if contains(headers, "Grip-Hold"):
        hold = get(headers, "Grip-Hold")
        if hold == "response":
            st_.hold_mode = "response"
        elif hold == "stream":
            st_.hold_mode = "stream"
        else:
            raise InstructError("Grip-Hold must be set to either 'response' or 'stream'")

    for params in _ref_all_as_params(headers, "Grip-Channel"):
        prev = _pget(params, "prev-id")
        st_.channels.append(
            Channel(
                name=from_utf8(params[0][0]),
                prev_id=from_utf8(prev) if prev is not None else None,
                filters=[from_utf8(v or "") for k, v in params[1:] if k == "filter"],
            )
        )

    if contains(headers, "Grip-Timeout"):
        t = to_int(get(headers, "Grip-Timeout"))
        if t is None:
            raise InstructError("failed to parse Grip-Timeout")
        if t < 0:
            raise InstructError("Grip-Timeout has invalid value")
        st_.timeout = t

    ka = _ref_as_params(headers, "Grip-Keep-Alive")
    if ka:
        val = ka[0][0]
        if not val:
            raise InstructError("Grip-Keep-Alive cannot be empty")
        mode = _pget(ka, "mode") or ""
        if mode in ("", "idle"):
            st_.ka_mode = "idle"
        elif mode == "interval":
            st_.ka_mode = "interval"
        else:
            raise InstructError(f"no such Grip-Keep-Alive mode '{from_utf8(mode)}'")
        if _pcontains(ka, "timeout"):
            t = to_int(_pget(ka, "timeout"))
            if t is None:
                raise InstructError("failed to parse Grip-Keep-Alive timeout value")
            if t < 0:
                raise InstructError("Grip-Keep-Alive timeout has invalid value")
            st_.ka_timeout = t
        else:
            st_.ka_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT
        st_.ka_data = decode_keep_alive_data(val, _pget(ka, "format") or "")

    for params in _ref_all_as_params(headers, "Grip-Set-Meta", parse_first=True):
        if not params:
            raise InstructError("Grip-Set-Meta cannot be empty")
        key, mval = params[0]
        st_.meta[from_utf8(key)] = from_utf8(mval or "")


def _ref_parse_links(headers: Headers) -> tuple[NextLink | None, list[tuple[str, str]]]:
    next_link: NextLink | None = None
    others: list[tuple[str, str]] = []
    for params in _ref_all_as_params(headers, "Grip-Link"):
        if len(params) < 2:
            continue
        rel = _pget(params, "rel")
        link = params[0][0]
        if rel != "next":
            if len(link) > 2 and link[0] == "<" and link[-1] == ">":
                others.append((rel or "", _encode_link(link[1:-1])))
            continue
        if len(link) <= 2 or link[0] != "<" or link[-1] != ">":
            raise InstructError("failed to parse Grip-Link value")
        url = link[1:-1]
        if not url_valid(from_utf8(url)):
            raise InstructError("Grip-Link contains invalid link")
        timeout = DEFAULT_NEXTLINK_TIMEOUT
        if _pcontains(params, "timeout"):
            t = to_int(_pget(params, "timeout"))
            if t is None:
                raise InstructError("failed to parse Grip-Link timeout value")
            if t < 0:
                raise InstructError("Grip-Link timeout has invalid value")
            timeout = t
        next_link = NextLink(_encode_link(url), timeout)
    return next_link, others


def _ref_parse_instruct(
    code: int,
    reason: str,
    headers: Headers,
    body: bytes,
    *,
    channel_prefix: str = "",
    connection_subscription_max: int = 20,
    wildcard: bool = False,
) -> Instruct:
    st_ = _State()
    _ref_parse_header_form(st_, headers)

    resp_code = code
    resp_reason = reason
    status = get(headers, "Grip-Status")
    if status:
        code_str, _, status_reason = status.partition(" ")
        parsed = to_int(code_str)
        if parsed is None or not 0 <= parsed <= 999:
            raise InstructError("Grip-Status contains invalid status code")
        resp_code, resp_reason = parsed, status_reason

    next_link, other_links = _ref_parse_links(headers)

    expose = [e.lower() for v in get_all(headers, "Grip-Expose-Headers") for e in _header_split(v)]
    resp_headers: Headers = []
    for k, v in headers:
        lk = k.lower()
        if lk[:5] == "grip-":
            continue
        if expose and lk not in expose:
            continue
        resp_headers.append((k, v))
    resp_body = body

    ct = _ref_as_params(headers, "Content-Type")
    if ct and ct[0][0] == GRIP_INSTRUCT_CONTENT_TYPE:
        if code != 200:
            raise InstructError("response code for application/grip-instruct content must be 200")
        doc = decode_json(body)
        if not isinstance(doc, dict):
            raise InstructError("instruct must be an object")
        if "hold" in doc:
            _parse_json_hold(st_, doc["hold"])
        resp_headers, resp_body = [], b""
        if "response" in doc:
            jresp = doc["response"]
            if not isinstance(jresp, dict):
                raise InstructError("")
            resp_code, resp_reason, resp_headers, resp_body = _parse_json_response(
                jresp, resp_code, resp_reason
            )

    if not resp_reason:
        resp_reason = reason_phrase(resp_code)
    timeout = DEFAULT_RESPONSE_TIMEOUT if st_.timeout == -1 else st_.timeout
    timeout = max(timeout, MINIMUM_RESPONSE_TIMEOUT)

    keep_alive = None
    if st_.ka_timeout != -1:
        keep_alive = KeepAlive(st_.ka_data, max(st_.ka_timeout, 1), st_.ka_mode or "interval")

    warnings: list[str] = []
    channels = st_.channels
    if len(channels) > connection_subscription_max:
        channels = channels[: max(connection_subscription_max, 0)]
        warnings.append(TOO_MANY_SUBSCRIPTIONS)
    for c in channels:
        if wildcard:
            why = pattern_error(c.name)
            if why is not None:
                raise InstructError(why)
        c.name = channel_prefix + c.name

    drop = HOP_BY_HOP_RESPONSE | {"content-length"}
    resp_headers = [(k, v) for k, v in resp_headers if k.lower() not in drop]

    return Instruct(
        hold_mode=st_.hold_mode,
        channels=channels,
        timeout=timeout,
        keep_alive=keep_alive,
        next_link=next_link,
        meta=st_.meta,
        response=HttpResponse(resp_code, resp_reason, resp_headers, resp_body),
        warnings=warnings,
        other_links=other_links,
    )


# ---------------------------------------------------------------------------------------------
# Generators

NAMES = [
    "Grip-Hold",
    "grip-hold",
    "GRIP-HOLD",
    "Grip-Channel",
    "grip-CHANNEL",
    "Grip-Channel",
    "Grip-Timeout",
    "grip-timeout",
    "Grip-Keep-Alive",
    "Grip-Set-Meta",
    "Grip-Link",
    "Grip-Status",
    "Grip-Expose-Headers",
    "Grip-Other",
    "Content-Type",
    "content-type",
    "Content-Length",
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "Content-Encoding",
    "X-A",
    "x-a",
    "Date",
    "Grïp-Hold",  # not a Grip-* name
    "GR\u0130P-HOLD",  # İ lower-cases to two characters
    "",
]

FRAGMENTS = [
    "a",
    "ch",
    "response",
    "stream",
    " ",
    "\t",
    ";",
    ",",
    "=",
    '"',
    "\\",
    "prev-id",
    "PREV-ID",
    "filter",
    "Filter",
    "skip-self",
    "mode",
    "interval",
    "idle",
    "timeout",
    "format",
    "cstring",
    "base64",
    "raw",
    "rel",
    "next",
    "<",
    ">",
    "/x?a=1",
    "30",
    "-1",
    "+5",
    " 7 ",
    "99999999999",
    "\xe9",
    "\xc3\xa9",  # UTF-8 bytes of é as header text
    "\xff",
    "\u0130",
    "\u2603",
    "\x00",
    "\\n",
    "\\x4",
    "\\x41",
    "aGk=",
    "application/grip-instruct",
    "text/plain",
    "404 Nope",
    "*",
    "a.*",
    "ab*c",
    "X-A",
    "Date",
]

values = st.one_of(
    st.sampled_from(
        ["response", "stream", "", "ch", "30", "application/grip-instruct", "X-A, Date"]
    ),
    st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join),
    st.text(alphabet=st.sampled_from(list(' ;,="\\\t<>=ab\xe9\u0130\x00')), max_size=12),
)
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=6))
header_lists = st.lists(st.tuples(names, values), max_size=10)

BODIES = [
    b"",
    b"{bad",
    b"[]",
    json.dumps({"hold": {"mode": "stream", "channels": [{"name": "j"}]}}).encode(),
    json.dumps(
        {
            "hold": {"channels": [{"name": "j", "prev-id": "1"}], "timeout": 9},
            "response": {
                "code": 201,
                "headers": [["Connection", "x"], ["Content-Length", "3"], ["X-B", "1"]],
                "body": "hey",
            },
        }
    ).encode(),
    json.dumps({"response": {"headers": {"Keep-Alive": "1", "X-C": "2"}}}).encode(),
]


def outcome(fn: object, *args: object, **kw: object) -> tuple[str, str]:
    """The repr of the result, or the exception's type and message."""
    assert callable(fn)
    try:
        return ("ok", repr(fn(*args, **kw)))
    except Exception as e:  # any difference counts, not only InstructError
        return (type(e).__name__, str(e))


def assert_same(
    headers: Headers,
    body: bytes = b"",
    code: int = 200,
    **kw: object,
) -> tuple[str, str]:
    ref = outcome(_ref_parse_instruct, code, "OK", list(headers), body, **kw)
    new = outcome(parse_instruct, code, "OK", list(headers), body, **kw)
    assert new == ref
    return new


# ---------------------------------------------------------------------------------------------
# Tests


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    header_lists,
    st.sampled_from(BODIES),
    st.sampled_from([200, 200, 404]),
    st.sampled_from(["", "p:"]),
    st.sampled_from([20, 1, 0]),
    st.booleans(),
)
@example([("Grip-Hold", "response"), ("Grip-Channel", "a, b ,, c,")], b"", 200, "", 20, False)
@example([("Grip-Hold", "bogus"), ("Grip-Timeout", "x")], b"", 200, "", 20, False)
@example([("Grip-Timeout", "x"), ("Grip-Hold", "bogus")], b"", 200, "", 20, False)
@example([("Grip-Hold", "stream"), ("Grip-Keep-Alive", "; timeout=-1")], b"", 200, "", 20, False)
def test_same_as_reference(
    headers: Headers, body: bytes, code: int, prefix: str, max_subs: int, wildcard: bool
) -> None:
    """F20/F21: generated responses give the same Instruct or the same first error."""
    assert_same(
        headers,
        body,
        code,
        channel_prefix=prefix,
        connection_subscription_max=max_subs,
        wildcard=wildcard,
    )


@pytest.mark.parametrize(
    "headers",
    [
        [("Grip-Hold", "response"), ("Grip-Channel", "test")],
        [("grip-hold", "stream"), ("GRIP-CHANNEL", " spaced\t"), ("Grip-Channel", " ")],
        [("Grip-Hold", "response"), ("Grip-Channel", "")],
        [("Grip-Hold", "response"), ("Grip-Channel", 'a; prev-id="x,y", b')],
        [("Grip-Hold", "response"), ("Grip-Channel", '"a,b"')],
        [("Grip-Hold", "response"), ("Grip-Channel", "a\\,b")],
        [("Grip-Hold", "response"), ("Grip-Channel", "prev-id; prev-id=5")],
        [("Grip-Hold", "response"), ("Grip-Channel", "\xc3\xa9t\xe9; prev-id=\xff")],
        [("Grip-Hold", "response"), ("Grip-Channel", "a; filter=x; Filter=y; filter")],
        [("Grip-Hold", "response"), ("Grip-Channel", 'a; prev-id="unterminated')],
        [("Grip-Hold", "stream"), ("Grip-Hold", "bogus")],
        [("Grip-Hold", "bogus"), ("Grip-Hold", "stream")],
        [("Grip-Hold", "")],
        [("Grip-Hold", "response"), ("Grip-Timeout", " 30 "), ("Grip-Timeout", "x")],
        [("Grip-Hold", "response"), ("Grip-Timeout", "")],
        [("Grip-Hold", "response"), ("Grip-Timeout", "-1")],
        [("Grip-Hold", "response"), ("Grip-Timeout", "2147483648")],
        [("Grip-Timeout", "bad"), ("Grip-Keep-Alive", "x; mode=nope")],
        [("Grip-Keep-Alive", ""), ("Grip-Keep-Alive", "x")],
        [("Grip-Keep-Alive", "\\x41; format=cstring; timeout=20; mode=interval")],
        [("Grip-Keep-Alive", "\\x4; format=cstring")],
        [("Grip-Keep-Alive", "x; format=nope")],
        [("Grip-Set-Meta", 'a=1, b="x,y"'), ("Grip-Set-Meta", ",")],
        [("Grip-Set-Meta", "")],
        [("Grip-Link", "</x?a=1>; rel=next; timeout=9, </y>; rel=prev")],
        [("Grip-Link", "plain"), ("Grip-Link", "<>; rel=next")],
        [("Grip-Status", "404 Not Here"), ("Grip-Status", "bad")],
        [("Grip-Status", "1000")],
        [("Grip-Expose-Headers", "x-a"), ("X-A", "1"), ("X-B", "2"), ("Connection", "close")],
        [("Grip-Expose-Headers", "X-A, date"), ("x-a", "1"), ("Date", "2"), ("X-B", "3")],
        [("Grip-Expose-Headers", ","), ("X-A", "1")],
        [("Grip-Expose-Headers", ""), ("X-A", "1"), ("Content-Length", "2")],
        [("Content-Type", "text/plain"), ("Content-Length", "0"), ("Date", "x"), ("Server", "y")],
        [("Content-Type", ""), ("Content-Type", "application/grip-instruct")],
        [("Content-Type", 'application/grip-instruct; charset="utf-8')],
        [("Content-Type", " application/grip-instruct ; charset=utf-8")],
        [("X", "1"), ("Grïp-Hold", "bogus"), ("GR\u0130P-HOLD", "bogus")],
    ],
)
@pytest.mark.parametrize("body", [b"", BODIES[4]])
def test_same_as_reference_examples(headers: Headers, body: bytes) -> None:
    """F20/F21: hand-picked odd cases (quotes, escapes, duplicates, bad values, non-ASCII)."""
    assert_same(headers, body)
    assert_same(headers, body, channel_prefix="p:", wildcard=True)


def test_reference_is_live() -> None:
    """The comparison can fail: the outcomes differ between inputs (and errors show up)."""
    ok = assert_same([("Grip-Hold", "response"), ("Grip-Channel", "a; prev-id=1")])
    assert ok[0] == "ok" and "prev_id='1'" in ok[1]
    err = assert_same([("Grip-Timeout", "bad"), ("Grip-Hold", "bogus")])
    assert err == ("InstructError", "Grip-Hold must be set to either 'response' or 'stream'")


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(list(' ;,="\\\tab\xe9\u0130\x00')), max_size=16))
def test_split_and_params_fast_paths(value: str) -> None:
    """The plain-value shortcut of ``_all_as_params`` matches the full grammar."""
    for parse_first in (False, True):
        assert _all_as_params([value], parse_first) == _ref_all_as_params(
            [("H", value)], "h", parse_first
        )


@settings(max_examples=1000)
@given(st.text(alphabet=st.sampled_from(list(' ;,="\\\t=ab\xe9\x00')), max_size=16))
def test_parse_params_matches_reference(value: str) -> None:
    """The split-based parameter parser for unquoted text matches the full scan."""
    for parse_first in (False, True):
        assert _parse_params(value, parse_first) == _parse_params_full(value, parse_first)


@given(st.text(max_size=12))
def test_utf8_shortcut(value: str) -> None:
    """ASCII header text decodes to itself, so skipping the round trip changes nothing."""
    assert from_utf8(value) == raw_bytes(value).decode("utf-8", "replace")

"""GRIP filters (F35) and the meta they read (F36), sans-I/O.

Behaviour follows Pushpin 1.36 ``src/handler/filter.cpp``, ``filterstack.cpp``, ``format.cpp`` and
``idformat.cpp`` (read, not copied), including its error strings and the byte positions in them.

Where the filters run (from ``httpsession.cpp`` / ``engine.cpp`` / ``wssession``):

* **Delivery** (``send_allowed``): ``skip-self``, ``skip-users``, ``require-sub`` decide whether a
  published item reaches one subscription; a dropped item is skipped silently.
* **Published content** (``process_content``): every filter of the *channel's* subscription, in
  the subscription's order (duplicates run twice, unknown names are ignored). Only ``build-id``
  and ``var-subst`` change content.
* **Initial / next-link response body** (``process_initial_body`` / ``initial_body_stream``): only
  ``build-id`` (the one "ProxyContent" filter), taken once from the union of all channels' filter
  lists, with the instruct's meta and *no* channel prev-ids, so there ``%I`` errors and only
  ``%(id)I`` works.

On a filter error Pushpin ends the session: a response hold is answered ``502 Bad Gateway``
(``text/plain``, body ``"filter error: <filter>: <reason>\\n"`` in debug mode, else
``"Error while proxying to origin.\\n"``); a stream is closed (debug mode first writes
``"\\n\\n" + message + "\\n"``). For WebSocket sessions the message is only dropped (logged at
debug). A ``content-filters`` mismatch (F30) is handled the same way with its own message.
``str(FilterError)`` is that session error message.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from gripd.core.errors import OriginError

__all__ = [
    "FILTER_NAMES",
    "ContentFilterMismatch",
    "ContentFilterStream",
    "FilterContext",
    "FilterError",
    "Target",
    "check_content_filters",
    "content_filters_match",
    "initial_body_stream",
    "initial_response_filters",
    "message_content_filters",
    "process_content",
    "process_initial_body",
    "send_allowed",
    "targets",
]

#: The filters Pushpin 1.36 knows, in its order; announced in ``Grip-Feature`` (F35).
FILTER_NAMES: tuple[str, ...] = ("skip-self", "skip-users", "require-sub", "build-id", "var-subst")


class Target(enum.Flag):
    """What a filter acts on (Pushpin's ``Filter::Targets``)."""

    NONE = 0
    MESSAGE_DELIVERY = 1
    MESSAGE_CONTENT = 2
    PROXY_CONTENT = 4


_TARGETS: dict[str, Target] = {
    "skip-self": Target.MESSAGE_DELIVERY,
    "skip-users": Target.MESSAGE_DELIVERY,
    "require-sub": Target.MESSAGE_DELIVERY,
    "build-id": Target.MESSAGE_CONTENT | Target.PROXY_CONTENT,
    "var-subst": Target.MESSAGE_CONTENT,
}


def targets(name: str) -> Target:
    """The targets of filter ``name``; ``Target.NONE`` for an unknown name."""
    return _TARGETS.get(name, Target.NONE)


class FilterError(OriginError):
    """A filter failed on some content; the session ends (HTTP) or the message is dropped (WS).

    An ``OriginError``: Pushpin reports it exactly like an origin failure (502 / stream close),
    and what fails (``id_format``, variable names, the ``%`` directives) comes from the origin's
    subscription. It is not a ``PublishError``: the publish request was already accepted.
    ``str()`` is Pushpin's session error text, e.g. ``filter error: build-id: no sub meta
    'id_format'``.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class ContentFilterMismatch(FilterError):
    """F30: a published ``content-filters`` list differs from the subscription's content filters."""


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What the filters see for one delivery (Pushpin's ``Filter::Context``).

    ``channels`` are the session's subscribed channel names as gripd stores them (route prefix
    included); ``route_prefix`` is stripped from names that start with it, because Pushpin's
    filters see the channel names as the origin wrote them (``Instruct::Channel::name``).
    Pass ``None`` for WebSocket sessions and the initial response: Pushpin 1.36 gives those
    filters no channel list, so ``require-sub`` drops any item carrying ``require_sub`` and
    ``build-id`` has no default ID. ``prev_ids`` maps channel (same naming as ``channels``) to
    its current last ID; a channel of ``channels`` missing from it has no prev-id, and a
    ``%(channel)s`` naming it in ``id_format`` fails ("No such variable").
    """

    sub_meta: Mapping[str, str]
    pub_meta: Mapping[str, str]
    channels: Sequence[str] | None
    prev_ids: Mapping[str, str]
    route_prefix: str = ""

    def channel_ids(self) -> dict[str, str | None]:
        """Pushpin's ``prevIds``: origin channel name -> prev-id or None; empty for no list."""
        out: dict[str, str | None] = {}
        if self.channels is None:
            return out
        prefix = self.route_prefix
        for ch in self.channels:
            name = ch[len(prefix) :] if prefix and ch.startswith(prefix) else ch
            out[name] = self.prev_ids.get(ch)
        return out


# ---------------------------------------------------------------------------------------------
# The %-directive scanner (Pushpin's Format::process). Positions in messages are byte offsets.


class _FormatError(Exception):
    pass


class _DirectiveError(Exception):
    pass


# (directive char, field argument or None when absent/empty) -> replacement bytes
_Handler = Callable[[str, bytes | None], bytes]

_PCT = 0x25  # %
_LPAREN = 0x28
_RPAREN = 0x29
_BSLASH = 0x5C


def _is_alpha(c: int) -> bool:
    # C isalpha() under a UTF-8 locale: ASCII letters only.
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _format(fmt: bytes, handler: _Handler, partial: bool) -> tuple[bytes, int]:
    """Expand ``%X``, ``%(arg)X`` and ``%%`` in ``fmt``.

    Returns ``(output, consumed)``. With ``partial`` an incomplete directive at the end is not an
    error: output stops before it and ``consumed`` is its start. Raises ``_FormatError``.
    """
    out = bytearray()
    length = len(fmt)
    n = 0
    while True:
        p = fmt.find(b"%", n)
        if p < 0:
            out += fmt[n:]
            return bytes(out), length
        out += fmt[n:p]
        marker = n = p
        if n + 1 >= length:
            if partial:
                return bytes(out), marker
            raise _FormatError(f"Expected directive after '%' at position {n}")
        n += 1
        c = fmt[n]
        if c == _LPAREN:
            field_start = n
            if n + 1 >= length:
                if partial:
                    return bytes(out), marker
                raise _FormatError(f"Expected character after '(' at position {n}")
            n += 1
            arg = bytearray()
            closed = False
            while n < length:
                c = fmt[n]
                if c == _BSLASH:
                    if n + 1 >= length:
                        if partial:
                            return bytes(out), marker
                        raise _FormatError(f"Expected character after '\\' at position {n}")
                    n += 1
                    arg.append(fmt[n])
                elif c == _RPAREN:
                    closed = True
                    break
                else:
                    arg.append(c)
                n += 1
            if not closed:
                if partial:
                    return bytes(out), marker
                raise _FormatError(f"Unterminated field starting at position {field_start}")
            if n + 1 >= length:
                if partial:
                    return bytes(out), marker
                raise _FormatError(f"Expected directive after ')' at position {n}")
            n += 1
            # Qt: an empty "()" leaves the argument null, the same as no argument at all.
            out += _call(handler, fmt[n], bytes(arg) if arg else None, n)
        elif c == _PCT:
            out.append(_PCT)
        elif _is_alpha(c):
            out += _call(handler, c, None, n)
        else:
            raise _FormatError(f"Unknown directive '{chr(c)}' at position {n}")
        n += 1


def _call(handler: _Handler, c: int, arg: bytes | None, pos: int) -> bytes:
    try:
        return handler(chr(c), arg)  # chr(): Qt shows the byte as Latin-1
    except _DirectiveError as e:
        raise _FormatError(f"{e} at position {pos}") from None


def _var_handler(vars_: Mapping[str, bytes | None]) -> _Handler:
    """``%(name)s`` from ``vars_`` (var-subst and the id_format template)."""

    def handle(kind: str, arg: bytes | None) -> bytes:
        if kind != "s":
            raise _DirectiveError(f"Unknown directive '{kind}'")
        if arg is None:
            raise _DirectiveError("Directive 's' requires argument")
        name = arg.decode("utf-8", "replace")
        value = vars_.get(name)
        if value is None:
            raise _DirectiveError(f"No such variable '{name}'")
        return value

    return handle


def _id_handler(default_id: bytes | None, hex_: bool) -> _Handler:
    """``%I`` (default ID) and ``%(id)I`` (explicit ID), optionally hex-encoded."""

    def handle(kind: str, arg: bytes | None) -> bytes:
        if kind != "I":
            raise _DirectiveError(f"Unknown directive '{kind}'")
        if arg is not None:
            ident = arg
        elif default_id is None:
            raise _DirectiveError("No ID specified and no default ID in context")
        else:
            ident = default_id
        return ident.hex().encode() if hex_ else ident

    return handle


def _utf8(s: str) -> bytes:
    # Qt's toUtf8() turns unpaired surrogates into '?'.
    return s.encode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# The filters. update() may hold back a trailing incomplete directive; finalize() flushes.


class _Fail(Exception):
    pass


class _Filter:
    name: ClassVar[str] = ""

    def __init__(self, ctx: FilterContext) -> None:
        self.ctx = ctx

    def allowed(self) -> bool:
        return True

    def update(self, data: bytes) -> bytes:
        return data

    def finalize(self) -> bytes:
        return b""


class _SkipSelf(_Filter):
    name = "skip-self"

    def allowed(self) -> bool:
        user = self.ctx.sub_meta.get("user", "")
        sender = self.ctx.pub_meta.get("sender", "")
        return not (user and sender and user == sender)


def _qt_trimmed(s: str) -> str:
    """QString::trimmed(): strip QChar::isSpace() characters (not quite str.strip())."""
    lo, hi = 0, len(s)
    while lo < hi and _qt_space(s[lo]):
        lo += 1
    while hi > lo and _qt_space(s[hi - 1]):
        hi -= 1
    return s[lo:hi]


def _qt_space(ch: str) -> bool:
    return ch in "\t\n\v\f\r \x85\xa0" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


class _SkipUsers(_Filter):
    name = "skip-users"

    def allowed(self) -> bool:
        user = self.ctx.sub_meta.get("user", "")
        if not user:
            return True
        skip = self.ctx.pub_meta.get("skip_users", "").split(",")
        return user not in {t for t in (_qt_trimmed(p) for p in skip) if t}


class _RequireSub(_Filter):
    name = "require-sub"

    def allowed(self) -> bool:
        required = self.ctx.pub_meta.get("require_sub", "")
        return not required or required in self.ctx.channel_ids()


class _ContentRenderer:
    """Pushpin's IdFormat::ContentRenderer: incremental ``%I`` rendering."""

    def __init__(self, default_id: bytes | None, hex_: bool) -> None:
        self._handler = _id_handler(default_id, hex_)
        self._buf = b""

    def update(self, data: bytes) -> bytes:
        self._buf += data
        out, used = _format(self._buf, self._handler, True)
        self._buf = self._buf[used:]
        return out

    def finalize(self) -> bytes:
        data, self._buf = self._buf, b""
        return _format(data, self._handler, False)[0]


class _BuildId(_Filter):
    name = "build-id"

    def __init__(self, ctx: FilterContext) -> None:
        super().__init__(ctx)
        self._renderer: _ContentRenderer | None = None

    def _init(self) -> _ContentRenderer:
        if self._renderer is not None:
            return self._renderer
        meta = self.ctx.sub_meta
        id_format = meta.get("id_format")
        if id_format is None:
            raise _Fail("no sub meta 'id_format'")
        ident: bytes | None = None
        ids = self.ctx.channel_ids()
        # Pushpin renders the template only when it has channels (never for WS / initial body).
        if ids:
            vars_ = {k: (None if v is None else _utf8(v)) for k, v in ids.items()}
            try:
                ident = _format(_utf8(id_format), _var_handler(vars_), False)[0]
            except _FormatError as e:
                raise _Fail(f"failed to render ID: {e}") from None
        encoding = meta.get("id_encoding")
        if encoding is not None and encoding != "hex":
            raise _Fail(f"unsupported encoding: {encoding}")
        self._renderer = _ContentRenderer(ident, encoding == "hex")
        return self._renderer

    def update(self, data: bytes) -> bytes:
        renderer = self._init()
        try:
            return renderer.update(data)
        except _FormatError as e:
            raise _Fail(str(e)) from None

    def finalize(self) -> bytes:
        renderer = self._init()
        try:
            return renderer.finalize()
        except _FormatError as e:
            raise _Fail(str(e)) from None


class _VarSubst(_Filter):
    name = "var-subst"

    def update(self, data: bytes) -> bytes:
        # Not incremental: a trailing incomplete directive is an error (Pushpin never streams it).
        vars_ = {k: _utf8(v) for k, v in self.ctx.sub_meta.items()}
        try:
            return _format(data, _var_handler(vars_), False)[0]
        except _FormatError as e:
            raise _Fail(str(e)) from None


_CLASSES: dict[str, type[_Filter]] = {
    c.name: c for c in (_SkipSelf, _SkipUsers, _RequireSub, _BuildId, _VarSubst)
}


class ContentFilterStream:
    """A filter stack over content that may arrive in pieces (Pushpin's ``FilterStack``).

    ``update()`` returns what can be emitted so far, ``finalize()`` the rest; both raise
    ``FilterError``. Used whole by ``process_content`` and chunk-wise for next-link bodies (F25).
    """

    __slots__ = ("_filters",)

    def __init__(self, filters: Iterable[str], ctx: FilterContext) -> None:
        self._filters = [_CLASSES[n](ctx) for n in filters if n in _CLASSES]

    def send_allowed(self) -> bool:
        """False if any delivery filter drops the item."""
        return all(f.allowed() for f in self._filters)

    def update(self, data: bytes) -> bytes:
        buf = data
        for f in self._filters:
            buf = _run(f, buf, final=False)
        return buf

    def finalize(self) -> bytes:
        # Each filter's flushed tail is fed through the filters after it, then they flush too.
        out = b""
        for f in self._filters:
            if out:
                out = _run(f, out, final=False)
            out += _run(f, b"", final=True)
        return out


def _run(f: _Filter, data: bytes, *, final: bool) -> bytes:
    try:
        return f.finalize() if final else f.update(data)
    except _Fail as e:
        raise FilterError(f"filter error: {f.name}: {e}") from None


_CONTENT_FILTERS = frozenset(("build-id", "var-subst"))
_DELIVERY_FILTERS = frozenset(("skip-self", "skip-users", "require-sub"))


def send_allowed(filters: Sequence[str], ctx: FilterContext) -> bool:
    """``skip-self``, ``skip-users``, ``require-sub``: False drops this delivery (F35).

    Unknown filter names are ignored. Pushpin checks this before the action (send, hint or
    close), so a dropped item is not acted on at all.
    """
    if not _DELIVERY_FILTERS.intersection(filters):
        return True
    return ContentFilterStream(filters, ctx).send_allowed()


def process_content(filters: Sequence[str], ctx: FilterContext, content: bytes) -> bytes:
    """Run ``build-id`` and ``var-subst`` over published content, in the subscription's order.

    ``build-id`` replaces ``%I`` / ``%(id)I`` with an ID rendered from sub meta ``id_format``
    (``%(channel)s`` = that channel's prev-id), hex-encoded if ``id_encoding=hex``.
    ``var-subst`` replaces ``%(name)s`` with sub meta ``name``. In both ``%%`` is ``%``.
    Even empty content fails if ``build-id`` lacks ``id_format``. Raises ``FilterError``.
    """
    if not _CONTENT_FILTERS.intersection(filters):
        return content
    stream = ContentFilterStream(filters, ctx)
    out = stream.update(content)
    return out + stream.finalize()


def initial_response_filters(channel_filters: Iterable[Sequence[str]]) -> list[str]:
    """The filters Pushpin applies to the initial (or next-link) response body.

    Those of every channel's list that target proxied content (only ``build-id``), each once,
    in order of first appearance.
    """
    out: list[str] = []
    for filters in channel_filters:
        for name in filters:
            if targets(name) & Target.PROXY_CONTENT and name not in out:
                out.append(name)
    return out


def _initial_context(sub_meta: Mapping[str, str]) -> FilterContext:
    # Pushpin sets only the subscription meta here: no publish meta, no channel prev-ids.
    return FilterContext(sub_meta=sub_meta, pub_meta={}, channels=None, prev_ids={})


def process_initial_body(
    channel_filters: Iterable[Sequence[str]], sub_meta: Mapping[str, str], body: bytes
) -> bytes:
    """Filter the origin's initial response body (F35: build-id applies there too).

    ``sub_meta`` is the instruct's meta. Pushpin skips this for an empty body when a session
    is created (stream hold), but not for a plain no-hold answer with channels, where an
    ``id_format``-less ``build-id`` therefore fails even on an empty body. Raises ``FilterError``.
    """
    names = initial_response_filters(channel_filters)
    if not names:
        return body
    return process_content(names, _initial_context(sub_meta), body)


def initial_body_stream(
    channel_filters: Iterable[Sequence[str]], sub_meta: Mapping[str, str]
) -> ContentFilterStream:
    """A stream for a next-link response body (F25), built when its headers arrive."""
    return ContentFilterStream(
        initial_response_filters(channel_filters), _initial_context(sub_meta)
    )


def message_content_filters(sub_filters: Iterable[str]) -> list[str]:
    """The subscription's filters that act on message content, in order, duplicates kept."""
    return [f for f in sub_filters if targets(f) & Target.MESSAGE_CONTENT]


def content_filters_match(published: Sequence[str] | None, sub_filters: Sequence[str]) -> bool:
    """F30 ``content-filters``: absent matches anything; present (even empty) must equal the
    subscription's content filters exactly (order and duplicates count, delivery and unknown
    filter names on the subscription are ignored)."""
    if published is None:
        return True
    return message_content_filters(sub_filters) == list(published)


def check_content_filters(published: Sequence[str] | None, sub_filters: Sequence[str]) -> None:
    """Raise ``ContentFilterMismatch`` with Pushpin's message unless the lists match."""
    if published is None:
        return
    sub = message_content_filters(sub_filters)
    if sub != list(published):
        raise ContentFilterMismatch(
            f"content filter mismatch: subscription={','.join(sub)} message={','.join(published)}"
        )

"""F35/F36 filters: tables per filter and error (Pushpin 1.36 strings), Pushpin's own filter and
idformat tests ported, and properties (only FilterError escapes; streaming == whole)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.errors import GripError, OriginError, PublishError
from gripd.core.filters import (
    FILTER_NAMES,
    ContentFilterMismatch,
    ContentFilterStream,
    FilterContext,
    FilterError,
    Target,
    check_content_filters,
    content_filters_match,
    initial_body_stream,
    initial_response_filters,
    message_content_filters,
    process_content,
    process_initial_body,
    send_allowed,
    targets,
)


def ctx(
    sub: Mapping[str, str] | None = None,
    pub: Mapping[str, str] | None = None,
    channels: Sequence[str] | None = ("a",),
    prev: Mapping[str, str] | None = None,
    prefix: str = "",
) -> FilterContext:
    return FilterContext(sub or {}, pub or {}, channels, prev or {}, prefix)


def error_of(filters: Sequence[str], c: FilterContext, content: bytes) -> str:
    with pytest.raises(FilterError) as ei:
        process_content(filters, c, content)
    return str(ei.value)


# --- names, targets, error class ------------------------------------------------------------


def test_filter_names_are_pushpins_five_in_order() -> None:
    assert FILTER_NAMES == ("skip-self", "skip-users", "require-sub", "build-id", "var-subst")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("skip-self", Target.MESSAGE_DELIVERY),
        ("skip-users", Target.MESSAGE_DELIVERY),
        ("require-sub", Target.MESSAGE_DELIVERY),
        ("build-id", Target.MESSAGE_CONTENT | Target.PROXY_CONTENT),
        ("var-subst", Target.MESSAGE_CONTENT),
        ("Build-Id", Target.NONE),
        ("", Target.NONE),
    ],
)
def test_targets(name: str, expected: Target) -> None:
    assert targets(name) == expected


def test_filter_error_is_an_origin_error_not_a_publish_error() -> None:
    assert issubclass(FilterError, OriginError)
    assert issubclass(ContentFilterMismatch, FilterError)
    assert not issubclass(FilterError, PublishError)


# --- delivery filters -----------------------------------------------------------------------

SEND_TABLE: list[tuple[str, list[str], FilterContext, bool]] = [
    ("no filters", [], ctx({"user": "a"}, {"sender": "a"}), True),
    ("unknown ignored", ["nope"], ctx({"user": "a"}, {"sender": "a"}), True),
    ("self same", ["skip-self"], ctx({"user": "alice"}, {"sender": "alice"}), False),
    ("self other", ["skip-self"], ctx({"user": "alice"}, {"sender": "bob"}), True),
    ("self case", ["skip-self"], ctx({"user": "alice"}, {"sender": "Alice"}), True),
    ("self both empty", ["skip-self"], ctx({"user": ""}, {"sender": ""}), True),
    ("self no user", ["skip-self"], ctx({}, {"sender": "x"}), True),
    ("self no sender", ["skip-self"], ctx({"user": "x"}, {}), True),
    ("self not asked", ["var-subst"], ctx({"user": "a"}, {"sender": "a"}), True),
    ("users listed", ["skip-users"], ctx({"user": "alice"}, {"skip_users": "bob,alice"}), False),
    ("users trimmed", ["skip-users"], ctx({"user": "al"}, {"skip_users": " x ,\tal\n"}), False),
    ("users nbsp trim", ["skip-users"], ctx({"user": "al"}, {"skip_users": "\xa0al"}), False),
    # QChar::isSpace() is not str.isspace(): U+001C is not trimmed by Qt.
    ("users qt trim", ["skip-users"], ctx({"user": "al"}, {"skip_users": "\x1cal"}), True),
    ("users not listed", ["skip-users"], ctx({"user": "alice"}, {"skip_users": "alicex"}), True),
    ("users no user", ["skip-users"], ctx({"user": ""}, {"skip_users": ",,"}), True),
    ("users no list", ["skip-users"], ctx({"user": "alice"}, {}), True),
    ("sub present", ["require-sub"], ctx(pub={"require_sub": "a"}, channels=["a", "b"]), True),
    ("sub absent", ["require-sub"], ctx(pub={"require_sub": "c"}, channels=["a", "b"]), False),
    ("sub empty", ["require-sub"], ctx(pub={"require_sub": ""}, channels=["a"]), True),
    ("sub no meta", ["require-sub"], ctx(channels=None), True),
    ("sub ws", ["require-sub"], ctx(pub={"require_sub": "a"}, channels=None), False),
    (
        "sub prefixed",
        ["require-sub"],
        ctx(pub={"require_sub": "a"}, channels=["p:a"], prefix="p:"),
        True,
    ),
    (
        "sub prefix not seen",
        ["require-sub"],
        ctx(pub={"require_sub": "p:a"}, channels=["p:a"], prefix="p:"),
        False,
    ),
    (
        "any filter drops",
        ["skip-users", "skip-self", "var-subst"],
        ctx({"user": "a"}, {"sender": "a"}),
        False,
    ),
]


@pytest.mark.parametrize(
    ("filters", "c", "expected"), [t[1:] for t in SEND_TABLE], ids=[t[0] for t in SEND_TABLE]
)
def test_send_allowed(filters: list[str], c: FilterContext, expected: bool) -> None:
    assert send_allowed(filters, c) is expected


def test_pushpin_message_filters() -> None:
    # Ported from Pushpin's filtertest.cpp messageFilters.
    names = ["skip-self", "var-subst"]
    c = ctx({"user": "alice"})
    assert send_allowed(names, c)
    assert process_content(names, c, b"hello %(user)s") == b"hello alice"
    assert not send_allowed(names, ctx({"user": "alice"}, {"sender": "alice"}))


# --- content filters ------------------------------------------------------------------------

RENDER_ID_TEMPLATE = "My name is %(name)s and I eat %(food\\\\fruit(type\\))s 10%% of the time."
IDS = ctx(
    {"id_format": "%(a)s-%(b)s", "user": "alice"}, channels=["a", "b"], prev={"a": "1", "b": "2"}
)
HEX = ctx({"id_format": "%(a)s", "id_encoding": "hex"}, channels=["a"], prev={"a": "C3PO"})

CONTENT_OK: list[tuple[str, list[str], FilterContext, bytes, bytes]] = [
    ("none", [], ctx(), b"%bad", b"%bad"),
    ("delivery only", ["skip-self"], ctx(), b"%bad", b"%bad"),
    ("unknown only", ["x-filter"], ctx(), b"%(", b"%("),
    ("var", ["var-subst"], ctx({"user": "alice"}), b"hello %(user)s", b"hello alice"),
    ("var pct", ["var-subst"], ctx(), b"10%% off", b"10% off"),
    ("var empty val", ["var-subst"], ctx({"e": ""}), b"[%(e)s]", b"[]"),
    ("var utf8", ["var-subst"], ctx({"n\xe9": "\u2603"}), "%(n\xe9)s".encode(), "\u2603".encode()),
    ("var escaped", ["var-subst"], ctx({"a)b": "x"}), b"%(a\\)b)s", b"x"),
    ("var twice", ["var-subst", "var-subst"], ctx({"u": "v"}), b"%%(u)s", b"v"),
    ("id default", ["build-id"], IDS, b"id=%I;", b"id=1-2;"),
    ("id explicit", ["build-id"], IDS, b"%(zz)I", b"zz"),
    ("id empty parens", ["build-id"], IDS, b"%()I", b"1-2"),
    ("id pct", ["build-id"], IDS, b"%%I", b"%I"),
    ("id empty content", ["build-id"], IDS, b"", b""),
    ("id hex", ["build-id"], HEX, b"%I", b"4333504f"),
    ("id hex explicit", ["build-id"], HEX, b"%(R2D2)I", b"52324432"),
    ("id then var", ["build-id", "var-subst"], IDS, b"%I %%(user)s", b"1-2 alice"),
    ("var then id", ["var-subst", "build-id"], IDS, b"%%I %(user)s", b"1-2 alice"),
    (
        "id prefix stripped",
        ["build-id"],
        ctx({"id_format": "%(a)s"}, channels=["p:a"], prev={"p:a": "7"}, prefix="p:"),
        b"%I",
        b"7",
    ),
    (
        "id no vars needed",
        ["build-id"],
        ctx({"id_format": "fixed"}, channels=["a"]),
        b"%I",
        b"fixed",
    ),
    (
        "ws explicit id, template never rendered",
        ["build-id"],
        ctx({"id_format": "%(nope)s"}, channels=None),
        b"%(x)I",
        b"x",
    ),
    (
        "pushpin renderId",
        ["build-id"],
        ctx(
            {"id_format": RENDER_ID_TEMPLATE},
            channels=["name", "food\\fruit(type)"],
            prev={"name": "Alice", "food\\fruit(type)": "apples"},
        ),
        b"%I",
        b"My name is Alice and I eat apples 10% of the time.",
    ),
]


@pytest.mark.parametrize(
    ("filters", "c", "content", "expected"),
    [t[1:] for t in CONTENT_OK],
    ids=[t[0] for t in CONTENT_OK],
)
def test_process_content(
    filters: list[str], c: FilterContext, content: bytes, expected: bytes
) -> None:
    assert process_content(filters, c, content) == expected


V = ["var-subst"]
B = ["build-id"]
CONTENT_ERR: list[tuple[str, list[str], FilterContext, bytes, str]] = [
    ("var unknown", V, ctx(), b"hi %(x)s", "var-subst: No such variable 'x' at position 7"),
    ("var %I", V, ctx(), b"%I", "var-subst: Unknown directive 'I' at position 1"),
    ("var %s", V, ctx(), b"a%s", "var-subst: Directive 's' requires argument at position 2"),
    ("var %()s", V, ctx(), b"%()s", "var-subst: Directive 's' requires argument at position 3"),
    ("var %(x)d", V, ctx({"x": "1"}), b"%(x)d", "var-subst: Unknown directive 'd' at position 4"),
    ("var trailing %", V, ctx(), b"abc%", "var-subst: Expected directive after '%' at position 3"),
    ("var %(", V, ctx(), b"x%(", "var-subst: Expected character after '(' at position 2"),
    ("var open", V, ctx(), b"%(ab", "var-subst: Unterminated field starting at position 1"),
    ("var backslash", V, ctx(), b"%(a\\", "var-subst: Expected character after '\\' at position 3"),
    (
        "var no directive",
        V,
        ctx(),
        b"%(a)",
        "var-subst: Expected directive after ')' at position 3",
    ),
    ("var non-alpha", V, ctx(), b"%!", "var-subst: Unknown directive '!' at position 1"),
    ("var latin1", V, ctx(), b"%\xe9", "var-subst: Unknown directive '\xe9' at position 1"),
    ("var (x)%", V, ctx(), b"%(x)%", "var-subst: Unknown directive '%' at position 4"),
    ("id no format", B, ctx(), b"", "build-id: no sub meta 'id_format'"),
    ("id no format text", B, ctx(), b"plain", "build-id: no sub meta 'id_format'"),
    (
        "id bad encoding",
        B,
        ctx({"id_format": "x", "id_encoding": "base64"}),
        b"%I",
        "build-id: unsupported encoding: base64",
    ),
    (
        "id channel without prev-id",
        B,
        ctx({"id_format": "%(a)s-%(b)s"}, channels=["a", "b"], prev={"a": "1"}),
        b"%I",
        "build-id: failed to render ID: No such variable 'b' at position 10",
    ),
    (
        "id format bad directive",
        B,
        ctx({"id_format": "%d"}, channels=["a"]),
        b"",
        "build-id: failed to render ID: Unknown directive 'd' at position 1",
    ),
    (
        "id no default (ws)",
        B,
        ctx({"id_format": "x"}, channels=None),
        b"a%I",
        "build-id: No ID specified and no default ID in context at position 2",
    ),
    ("id %s", B, IDS, b"%(user)s", "build-id: Unknown directive 's' at position 7"),
    # build-id holds back the trailing "%" and fails in finalize, where the position restarts at 0.
    ("id trailing %", B, IDS, b"abc%", "build-id: Expected directive after '%' at position 0"),
    ("id trailing )", B, IDS, b"ab%(q)", "build-id: Expected directive after ')' at position 3"),
    ("id non-alpha", B, IDS, b"%-", "build-id: Unknown directive '-' at position 1"),
    (
        "id before var, var syntax",
        ["build-id", "var-subst"],
        IDS,
        b"%I %(user)s",
        "build-id: Unknown directive 's' at position 10",
    ),
    (
        "var before id, id syntax",
        ["var-subst", "build-id"],
        IDS,
        b"%(user)s %I",
        "var-subst: Unknown directive 'I' at position 10",
    ),
    (
        "var sees build-id output",
        ["build-id", "var-subst"],
        IDS,
        b"%%b",
        "var-subst: Unknown directive 'b' at position 1",
    ),
    (
        "finalize after var ran",
        ["build-id", "var-subst"],
        IDS,
        b"%%(user)s%(q)",
        "build-id: Expected directive after ')' at position 3",
    ),
]


@pytest.mark.parametrize(
    ("filters", "c", "content", "message"),
    [t[1:] for t in CONTENT_ERR],
    ids=[t[0] for t in CONTENT_ERR],
)
def test_process_content_errors(
    filters: list[str], c: FilterContext, content: bytes, message: str
) -> None:
    assert error_of(filters, c, content) == "filter error: " + message


# --- initial / next-link response body ------------------------------------------------------


@pytest.mark.parametrize(
    ("channel_filters", "expected"),
    [
        ([], []),
        ([["var-subst", "skip-self"]], []),
        ([["var-subst", "build-id"], ["build-id", "skip-self"], ["x"]], ["build-id"]),
        ([[], ["build-id", "build-id"]], ["build-id"]),
    ],
)
def test_initial_response_filters(channel_filters: list[list[str]], expected: list[str]) -> None:
    assert initial_response_filters(channel_filters) == expected


def test_initial_body_explicit_id_only() -> None:
    meta = {"id_format": "%(a)s", "id_encoding": "hex"}
    chans = [["build-id", "var-subst"]]
    # var-subst does not touch the proxied body; build-id has no prev-ids there.
    assert process_initial_body(chans, meta, b"%(R2D2)I %%") == b"52324432 %"
    with pytest.raises(FilterError) as ei:
        process_initial_body(chans, meta, b"%I")
    assert str(ei.value) == (
        "filter error: build-id: No ID specified and no default ID in context at position 1"
    )


def test_initial_body_errors_and_passthrough() -> None:
    with pytest.raises(FilterError, match=r"^filter error: build-id: no sub meta 'id_format'$"):
        process_initial_body([["build-id"]], {}, b"")
    assert process_initial_body([["var-subst"]], {}, b"%(nope)s") == b"%(nope)s"


def test_initial_body_stream_incremental() -> None:
    # Ported from Pushpin's idformattest renderContentIncremental.
    s = initial_body_stream([["build-id"]], {"id_format": "x", "id_encoding": "hex"})
    got = [s.update(p) for p in (b"The ID is %", b"(", b"R2D", b"2", b")", b"I.")]
    assert got == [b"The ID is ", b"", b"", b"", b"", b"52324432."]
    assert s.finalize() == b""


def test_stream_finalize_reports_incomplete_tail() -> None:
    s = initial_body_stream([["build-id"]], {"id_format": "x"})
    assert s.update(b"ok %(x") == b"ok "
    with pytest.raises(FilterError, match=r"Unterminated field starting at position 1$"):
        s.finalize()


def test_stream_without_filters_is_identity() -> None:
    s = initial_body_stream([["var-subst"]], {})
    assert s.update(b"%(") == b"%("
    assert s.finalize() == b""


# --- content-filters check (F30) ------------------------------------------------------------

MATCH_TABLE: list[tuple[list[str] | None, list[str], bool]] = [
    (None, ["build-id"], True),
    (None, [], True),
    ([], [], True),
    ([], ["skip-self", "require-sub", "junk"], True),
    ([], ["var-subst"], False),
    (["build-id"], ["skip-self", "build-id"], True),
    (["build-id", "var-subst"], ["build-id", "var-subst"], True),
    (["var-subst", "build-id"], ["build-id", "var-subst"], False),
    (["build-id"], ["build-id", "build-id"], False),
    (["build-id", "build-id"], ["build-id", "build-id"], True),
    (["build-id", "skip-self"], ["build-id", "skip-self"], False),
    (["junk"], ["junk"], False),
]


@pytest.mark.parametrize(("published", "sub", "expected"), MATCH_TABLE)
def test_content_filters_match(published: list[str] | None, sub: list[str], expected: bool) -> None:
    assert content_filters_match(published, sub) is expected
    if expected:
        check_content_filters(published, sub)
    else:
        with pytest.raises(ContentFilterMismatch):
            check_content_filters(published, sub)


def test_content_filter_mismatch_message() -> None:
    with pytest.raises(ContentFilterMismatch) as ei:
        check_content_filters(["var-subst"], ["skip-self", "build-id", "var-subst"])
    assert str(ei.value) == (
        "content filter mismatch: subscription=build-id,var-subst message=var-subst"
    )
    assert message_content_filters(["var-subst", "x", "build-id", "var-subst"]) == [
        "var-subst",
        "build-id",
        "var-subst",
    ]


# --- properties -----------------------------------------------------------------------------

_names = st.sampled_from([*FILTER_NAMES, "junk", ""])
_text = st.text(alphabet=st.sampled_from("ab%()\\sI-,é\x00 "), max_size=12)
_content = st.binary(max_size=40) | _text.map(lambda s: s.encode())
_meta_keys = st.sampled_from(["user", "id_format", "id_encoding", "a", "b", "sender"])
_metas = st.dictionaries(_meta_keys, _text | st.just("hex"), max_size=5)
_contexts = st.builds(
    FilterContext,
    _metas,
    st.dictionaries(st.sampled_from(["sender", "skip_users", "require_sub"]), _text, max_size=3),
    st.none() | st.lists(st.sampled_from(["a", "b", "p:a"]), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "p:a"]), _text, max_size=3),
    st.sampled_from(["", "p:"]),
)


@given(st.lists(_names, max_size=5), _contexts, _content)
def test_never_raises_anything_but_filter_error(
    filters: list[str], c: FilterContext, content: bytes
) -> None:
    send_allowed(filters, c)
    try:
        out = process_content(filters, c, content)
    except FilterError as e:
        assert str(e).startswith("filter error: ")
        assert isinstance(e, GripError)
    else:
        assert isinstance(out, bytes)


@given(_contexts, _content, st.lists(st.integers(0, 40), max_size=6))
def test_chunked_build_id_equals_whole(c: FilterContext, content: bytes, cuts: list[int]) -> None:
    try:
        whole: bytes | None = process_content(["build-id"], c, content)
    except FilterError:
        whole = None
    bounds = sorted({0, len(content), *(min(x, len(content)) for x in cuts)})
    s = ContentFilterStream(["build-id"], c)
    try:
        parts = [s.update(content[i:j]) for i, j in itertools.pairwise(bounds)]
        chunked: bytes | None = b"".join(parts) + s.finalize()
    except FilterError:
        chunked = None
    assert chunked == whole


@given(
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3), st.binary(max_size=40)
)
def test_var_subst_of_escaped_content_is_identity(meta: dict[str, str], content: bytes) -> None:
    escaped = content.replace(b"%", b"%%")
    assert process_content(["var-subst"], ctx(meta), escaped) == content


@given(_contexts, st.binary(max_size=40).filter(lambda b: b"%" not in b))
def test_content_without_directives_unchanged(c: FilterContext, content: bytes) -> None:
    assert process_content(["var-subst", "skip-self"], c, content) == content

"""Wildcard channels (``[gripd] wildcard_channels``): the pattern syntax, the prefix index, the
registry's and the channel interest's pattern matching, and where a bad pattern is refused
(GRIP instructions F20/F21, WebSocket control messages F39) or, with the option off, is an
ordinary channel name."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from gripd.core.config import load_config
from gripd.core.errors import ConfigError, InstructError
from gripd.core.instruct import parse_instruct
from gripd.core.interest import ChannelInterest
from gripd.core.registry import Registry
from gripd.core.wildcard import PrefixIndex, is_pattern, pattern_error, stem
from gripd.core.wscontrol import Subscribe, Unsubscribe, WsControlError, parse_control_message

# --- syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["news.*", "user.42.*", "a*", "x.y.z", "plain", "*"])
def test_is_pattern(name: str) -> None:
    assert is_pattern(name) == name.endswith("*")


@pytest.mark.parametrize("name", ["news", "news.*", "user.42.*", "a*", "n"])
def test_valid_names(name: str) -> None:
    assert pattern_error(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("*", "needs a prefix"),
        ("a*b", "may only end"),
        ("*a", "may only end"),
        ("a**", "may only end"),
        ("a.*.b", "may only end"),
    ],
)
def test_invalid_names(name: str, why: str) -> None:
    err = pattern_error(name)
    assert err is not None and why in err and name in err


def test_stem() -> None:
    assert stem("news.*") == "news."


# --- the prefix index --------------------------------------------------------------------------


def test_index_match_and_remove() -> None:
    idx: PrefixIndex[str] = PrefixIndex()
    assert not idx and idx.match("news.a") == []
    assert idx.add("news.", "s1") is True
    assert idx.add("news.", "s2") is False
    assert idx.add("news.sport.", "s1") is True
    assert idx.add("user.", "s3") is True
    assert idx.match("news.a") == ["s1", "s2"]
    assert idx.match("news.sport.x") == ["s1", "s2"]  # s1 once, under two prefixes
    assert idx.match("news.") == ["s1", "s2"]
    assert idx.match("news") == []
    assert idx.match("sports.a") == []
    assert list(idx.matching_prefixes("news.sport.x")) == ["news.", "news.sport."]
    assert idx.remove("news.", "s9") is False
    assert idx.remove("news.", "s1") is False
    assert idx.remove("news.", "s2") is True
    assert list(idx.matching_prefixes("news.a")) == []
    assert idx.match("news.a") == []
    assert idx.match("news.sport.y") == ["s1"]
    assert idx.remove("news.sport.", "s1") and idx.remove("user.", "s3")
    assert not idx and idx.match("user.1") == []


def test_index_against_brute_force() -> None:
    """The index agrees with checking every prefix against every channel."""
    rng = random.Random(7)
    alphabet = "ab."
    idx: PrefixIndex[int] = PrefixIndex()
    held: dict[str, set[int]] = {}
    for step in range(3000):
        p = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        m = rng.randint(0, 5)
        if rng.random() < 0.6:
            idx.add(p, m)
            held.setdefault(p, set()).add(m)
        elif m in held.get(p, set()):
            idx.remove(p, m)
            held[p].discard(m)
            if not held[p]:
                del held[p]
        if step % 10 == 0:
            c = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            want = {x for q, ms in held.items() if c.startswith(q) for x in ms}
            got = idx.match(c)
            assert len(got) == len(set(got)) and set(got) == want
    # Every prefix held, and none emptied, at every length a prefix can have.
    for n in range(1, 5):
        for c in map("".join, itertools.product(alphabet, repeat=n)):
            want_prefixes = sorted((q for q in held if c.startswith(q)), key=len)
            assert list(idx.matching_prefixes(c)) == want_prefixes


# --- registry and interest ---------------------------------------------------------------------


def test_registry_receivers_with_patterns() -> None:
    reg = Registry(wildcard=True)
    reg.subscribe("a", ["news.*"])
    reg.subscribe("b", ["news.x", "news.*"])  # both: gets an item once
    reg.subscribe("c", ["news.x"])
    reg.subscribe("d", ["sports.*"])
    assert reg.receivers("news.x") == ["b", "c", "a"]
    assert sorted(map(str, reg.receivers("news.y"))) == ["a", "b"]
    assert reg.receivers("sports.a") == ["d"]
    assert reg.receivers("weather") == []
    reg.unsubscribe("a")
    reg.unsubscribe("b", ["news.*"])
    assert reg.receivers("news.y") == []
    assert reg.receivers("news.x") == ["b", "c"]
    reg.unsubscribe("d")
    assert reg.receivers("sports.a") == []


def test_registry_without_wildcard_star_is_literal() -> None:
    reg = Registry()
    reg.subscribe("a", ["news.*"])
    assert reg.receivers("news.a") == []
    assert reg.receivers("news.*") == ["a"]


def test_interest_matching_with_linger() -> None:
    ci = ChannelInterest(10, wildcard=True)
    assert ci.add("news.*", "response") is True
    assert ci.matching("news.a") == ["news.*"]
    assert "news.a" not in ci  # an actual channel is not interesting by itself
    assert ci.remove("news.*", "response", now=0.0) is False  # lingers
    assert ci.matching("news.a") == ["news.*"]
    assert ci.expire(now=20.0) == ["news.*"]
    assert ci.matching("news.a") == [] and not ci.has_patterns()
    ci.add("a.*", "stream")
    assert ci.remove("a.*", "stream", now=0.0) is True
    assert not ci.has_patterns()
    ci.add("b.*", "ws")
    assert ci.clear() == ["b.*"]
    assert ci.matching("b.x") == []


def test_interest_without_wildcard() -> None:
    ci = ChannelInterest(10)
    ci.add("news.*", "stream")
    assert ci.matching("news.a") == [] and not ci.has_patterns()


# --- where patterns are checked ----------------------------------------------------------------


def test_instruct_header_pattern() -> None:
    """F20: a Grip-Channel pattern is kept as given (with the route prefix)."""
    ins = parse_instruct(
        200,
        "OK",
        [("Grip-Hold", "stream"), ("Grip-Channel", "news.*, x")],
        b"",
        channel_prefix="p_",
        wildcard=True,
    )
    assert [c.name for c in ins.channels] == ["p_news.*", "p_x"]


@pytest.mark.parametrize("bad", ["a*b", "*", "*.x"])
def test_instruct_bad_pattern_is_an_error(bad: str) -> None:
    with pytest.raises(InstructError, match="wildcard channel"):
        parse_instruct(
            200,
            "OK",
            [("Grip-Hold", "response"), ("Grip-Channel", bad)],
            b"",
            wildcard=True,
        )
    # Off: an ordinary channel name, as in Pushpin.
    ins = parse_instruct(200, "OK", [("Grip-Hold", "response"), ("Grip-Channel", bad)], b"")
    assert [c.name for c in ins.channels] == [bad]


def test_instruct_json_bad_pattern() -> None:
    """F21: the same check for grip-instruct channels."""
    body = json.dumps({"hold": {"mode": "stream", "channels": [{"name": "a*b"}]}}).encode()
    headers = [("Content-Type", "application/grip-instruct")]
    with pytest.raises(InstructError, match="may only end"):
        parse_instruct(200, "OK", headers, body, wildcard=True)
    body = json.dumps({"hold": {"mode": "stream", "channels": [{"name": "a.*"}]}}).encode()
    ins = parse_instruct(200, "OK", headers, body, wildcard=True)
    assert [c.name for c in ins.channels] == ["a.*"]


def test_ws_control_patterns() -> None:
    """F39: subscribe / unsubscribe to a pattern; a bad one is a control-message error."""
    msg = parse_control_message(b'{"type":"subscribe","channel":"news.*"}', wildcard=True)
    assert msg == Subscribe("news.*", (), None)
    msg = parse_control_message(b'{"type":"unsubscribe","channel":"news.*"}', wildcard=True)
    assert msg == Unsubscribe("news.*")
    for bad in ("a*b", "*"):
        doc = json.dumps({"type": "subscribe", "channel": bad})
        with pytest.raises(WsControlError, match="wildcard channel"):
            parse_control_message(doc, wildcard=True)
        assert parse_control_message(doc) == Subscribe(bad, (), None)


# --- the setting -------------------------------------------------------------------------------


def _load(text: str) -> bool:
    def no_file(p: str) -> str:
        raise OSError(p)

    return load_config(text, path="/etc/gripd/pushpin.conf", read_file=no_file).wildcard_channels


def test_config_reader() -> None:
    assert _load("") is False
    assert _load("[gripd]\nwildcard_channels=true\n") is True
    assert _load("[gripd]\nwildcard_channels=off\n") is False
    with pytest.raises(ConfigError) as ei:
        _load("[gripd]\n\nwildcard_channels=maybe\n")
    assert ei.value.filename == "/etc/gripd/pushpin.conf" and ei.value.line == 3
    assert "wildcard_channels" in str(ei.value) and "true or false" in str(ei.value)


def test_first_match() -> None:
    from gripd.core.wildcard import first_match

    assert first_match(["news.*"], "news") is None
    assert first_match(["x", "sport.*", "news.*", "news.a.*"], "news.a.b") == "news.*"
    assert first_match(["news.a"], "news.a") is None  # exact names are not patterns


def test_item_filters() -> None:
    """F35 with wildcard_channels: a channel held plainly keeps its own filters (none is none,
    even under a pattern with filters); an item reaching the subscriber through a pattern gets
    the filters of the first held pattern covering it, none if that pattern has none."""
    from gripd.core.wildcard import item_filters

    f = {"news.*": ["skip-self"], "news.a*": ["require-sub"], "x": ["build-id"]}
    held = ["news.a", "news.*", "news.a*", "x"]
    assert item_filters(held, f, "news.a", True) is None  # held itself, no filters of its own
    assert item_filters(held, f, "news.b", True) == ["skip-self"]
    assert item_filters(held, f, "x", True) == ["build-id"]
    assert item_filters(["news.*", "news.a*"], {"news.a*": ["skip-self"]}, "news.ab", True) is None
    assert item_filters(["news.a*", "news.*"], f, "news.ab", True) == ["require-sub"]
    # a pattern no longer held (a WebSocket unsubscribed) gives nothing, wherever its entry is
    assert item_filters(["x"], f, "news.b", True) is None
    # without wildcard_channels "*" is a plain character
    assert item_filters(["news.*"], f, "news.b", False) is None
    assert item_filters(["news.*"], f, "news.*", False) == ["skip-self"]

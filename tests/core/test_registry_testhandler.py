"""Subscription registry bookkeeping and the test target's answers (F50)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gripd.core import headers as hdr
from gripd.core.registry import Registry
from gripd.core.testhandler import answer_test_request as answer


def test_registry_first_and_last() -> None:
    r = Registry()
    assert r.subscribe("s1", ["a", "b"]) == ["a", "b"]
    assert r.subscribe("s2", ["b", "c"]) == ["c"]
    assert r.subscribers("b") == ["s1", "s2"]
    assert r.unsubscribe("s1", ["b"]) == []
    assert r.unsubscribe("s1") == ["a"]
    assert r.unsubscribe("s2") == ["b", "c"]
    assert r.channel_count() == 0 and r.subscriber_count() == 0
    assert r.unsubscribe("nobody") == []


ops = st.lists(st.tuples(st.booleans(), st.sampled_from("xyz"), st.sampled_from("abc")))


@given(ops)
def test_registry_matches_model(seq: list[tuple[bool, str, str]]) -> None:
    r = Registry()
    model: dict[str, set[str]] = {}
    for add, sub, ch in seq:
        if add:
            r.subscribe(sub, [ch])
            model.setdefault(ch, set()).add(sub)
        else:
            r.unsubscribe(sub, [ch])
            model.get(ch, set()).discard(sub)
    for ch in "abc":
        assert set(r.subscribers(ch)) == model.get(ch, set())
        assert r.has_channel(ch) == bool(model.get(ch))


def test_test_target_paths() -> None:
    root = answer("/", 0)
    assert (root.code, root.body) == (200, b"Hello from the Pushpin test handler!\n")
    resp = answer("/response?channel=a&channel=b", 0)
    assert hdr.get(resp.headers, "Grip-Hold") == "response"
    assert hdr.get(resp.headers, "Grip-Channel") == "a, b"
    assert resp.body == b"nothing for now\n"
    stream = answer("/stream/", 0)
    assert hdr.get(stream.headers, "Grip-Hold") == "stream"
    assert hdr.get(stream.headers, "Grip-Channel") == "test"
    assert stream.body == b"[stream opened]\n"
    missing = answer("/nope", 0)
    assert (missing.code, missing.body) == (404, b"no such test resource\n")
    big = answer("/", 100_001)
    assert (big.code, big.body) == (400, b"request too large\n")

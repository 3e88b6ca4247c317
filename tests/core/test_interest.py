"""ChannelInterest: per-mode counts and the one linger (F22, F31, F32)."""

from __future__ import annotations

from gripd.core.interest import ChannelInterest


def test_gained_once_and_lost_with_the_last_stream_subscriber() -> None:
    ci = ChannelInterest(60)
    assert ci.add("c", "stream") is True
    assert ci.add("c", "stream") is False
    assert ci.add("c", "ws") is False
    assert ci.counts("c") == [0, 2, 1]
    assert ci.remove("c", "stream", 0.0) is False
    assert ci.remove("c", "ws", 0.0) is False
    assert ci.remove("c", "stream", 0.0) is True  # no linger for streams
    assert "c" not in ci and ci.counts("c") is None


def test_long_poll_lingers_until_expiry() -> None:
    ci = ChannelInterest(10)
    ci.add("c", "response")
    assert ci.remove("c", "response", 100.0) is False
    assert "c" in ci and not ci.has_subscribers("c")
    assert ci.deadline() == 110.0
    assert ci.expire(109.9) == []
    assert ci.expire(110.0) == ["c"]
    assert "c" not in ci and ci.deadline() is None


def test_a_new_poll_ends_the_linger_and_is_no_gain() -> None:
    ci = ChannelInterest(10)
    ci.add("c", "response")
    ci.remove("c", "response", 0.0)
    assert ci.add("c", "response") is False  # still held: not a first subscriber (F22)
    assert ci.deadline() is None
    ci.remove("c", "response", 5.0)
    assert ci.deadline() == 15.0


def test_expiry_keeps_a_channel_that_came_back_in_another_mode() -> None:
    ci = ChannelInterest(10)
    ci.add("c", "response")
    ci.remove("c", "response", 0.0)
    assert ci.add("c", "stream") is False
    assert ci.expire(20.0) == []
    assert "c" in ci
    assert ci.remove("c", "stream", 21.0) is True


def test_last_stream_leaving_ends_a_lingering_channel_at_once() -> None:
    # Pushpin removes the subscription when the last non-response subscriber goes.
    ci = ChannelInterest(60)
    ci.add("c", "response")
    ci.add("c", "stream")
    assert ci.remove("c", "response", 0.0) is False
    assert ci.remove("c", "stream", 1.0) is True
    assert "c" not in ci
    assert ci.expire(100.0) == []  # nothing lost twice


def test_no_linger_when_zero_and_unbalanced_removes_are_ignored() -> None:
    ci = ChannelInterest(0)
    ci.add("c", "response")
    assert ci.remove("c", "response", 0.0) is True
    assert ci.remove("c", "response", 0.0) is False
    assert ci.remove("never", "ws", 0.0) is False


def test_expiry_order_and_clear() -> None:
    ci = ChannelInterest(5)
    for i, ch in enumerate(["a", "b", "c"]):
        ci.add(ch, "response")
        ci.remove(ch, "response", float(i))
    assert ci.expire(6.0) == ["a", "b"]
    ci.add("d", "ws")
    assert sorted(ci.channels()) == ["c", "d"] and len(ci) == 2
    assert sorted(ci.clear()) == ["c", "d"]
    assert len(ci) == 0

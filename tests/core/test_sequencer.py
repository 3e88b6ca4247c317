"""F32 reordering by prev-id and F33 id dedup (gripd.core.sequencer), pure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core.publish import HttpStreamFormat, PublishItem
from gripd.core.sequencer import (
    CHANNEL_PENDING_MAX,
    DROP_DUPLICATE_ID,
    DROP_PENDING_FULL,
    DROP_SAME_PREV_ID,
    LastIds,
    Sequencer,
)


def it(
    id_: str | None, prev: str | None = None, ch: str = "c", *, no_seq: bool = False
) -> PublishItem:
    return PublishItem(
        channel=ch,
        id=id_,
        prev_id=prev,
        http_stream=HttpStreamFormat(content=f"{id_}\n".encode()),
        no_seq=no_seq,
    )


def ids(items: list[PublishItem]) -> list[str | None]:
    return [i.id for i in items]


def feed(s: Sequencer, items: list[PublishItem], now: float = 0.0) -> list[str | None]:
    out: list[str | None] = []
    for i in items:
        ready, _ = s.add(i, seq=True, now=now)
        out += ids(ready)
    return out


# (arrivals as (id, prev-id), expected delivery order before any timeout, pending left)
ORDER_CASES = [
    pytest.param([("1", None), ("2", "1"), ("3", "2")], ["1", "2", "3"], 0, id="in-order"),
    pytest.param([("1", None), ("3", "2"), ("2", "1")], ["1", "2", "3"], 0, id="swap"),
    pytest.param(
        [("1", None), ("4", "3"), ("3", "2"), ("2", "1")], ["1", "2", "3", "4"], 0, id="reverse"
    ),
    pytest.param([("1", None), ("3", "2")], ["1"], 1, id="gap-waits"),
    pytest.param([("3", "2")], ["3"], 0, id="first-message-always-delivered"),
    pytest.param([("1", None), ("2", None)], ["1", "2"], 0, id="no-prev-id-passes"),
    pytest.param([("1", None), ("9", "1")], ["1", "9"], 0, id="prev-matches-last"),
    pytest.param([(None, None), ("3", "2")], [None, "3"], 0, id="no-id-clears-last"),
    pytest.param(
        [("1", None), ("3", "2"), ("4", "3"), ("2", "1")],
        ["1", "2", "3", "4"],
        0,
        id="chain-flush",
    ),
    pytest.param(
        [("1", None), ("3", "2"), ("5", "4"), ("2", "1")], ["1", "2", "3"], 1, id="chain-stops"
    ),
]


@pytest.mark.parametrize(("arrivals", "expected", "left"), ORDER_CASES)
def test_reordering(
    arrivals: list[tuple[str | None, str | None]], expected: list[str | None], left: int
) -> None:
    s = Sequencer()
    assert feed(s, [it(i, p) for i, p in arrivals]) == expected
    assert s.pending_count() == left
    assert s.has_pending() == bool(left)


def test_last_id_tracks_delivered_items() -> None:
    s = Sequencer()
    feed(s, [it("1"), it("3", "2")])
    assert s.last_id("c") == "1"  # the waiting item did not move it
    feed(s, [it("2", "1")])
    assert s.last_id("c") == "3"
    feed(s, [it(None)])
    assert s.last_id("c") is None


def test_unsequenced_items_pass_and_leave_last_id() -> None:
    s = Sequencer()
    feed(s, [it("1")])
    ready, reason = s.add(it("5", "4"), seq=False, now=0)
    assert (ids(ready), reason) == (["5"], None)
    assert s.last_id("c") == "1"
    # no-seq is the caller's business (seq=False), but a no_seq flag alone changes nothing here
    ready, _ = s.add(it("7", "6", no_seq=True), seq=False, now=0)
    assert ids(ready) == ["7"]


def test_channels_are_independent() -> None:
    s = Sequencer()
    assert feed(s, [it("1", ch="a"), it("1", ch="b"), it("3", "2", ch="a")]) == ["1", "1"]
    assert feed(s, [it("2", "1", ch="b")]) == ["2"]
    assert s.pending_count("a") == 1
    assert s.pending_count("b") == 0


def test_one_waiting_item_per_prev_id() -> None:
    s = Sequencer()
    feed(s, [it("1"), it("3", "2")])
    ready, reason = s.add(it("3b", "2"), seq=True, now=0)
    assert (ready, reason) == ([], DROP_SAME_PREV_ID)
    assert feed(s, [it("2", "1")]) == ["2", "3"]  # the first one wins


def test_pending_bound_per_channel() -> None:
    s = Sequencer()
    feed(s, [it("0")])
    for n in range(CHANNEL_PENDING_MAX):
        assert s.add(it(f"x{n}", f"p{n}"), seq=True, now=0) == ([], None)
    assert s.add(it("over", "pover"), seq=True, now=0) == ([], DROP_PENDING_FULL)
    assert s.pending_count("c") == CHANNEL_PENDING_MAX
    # other channels are not affected by the full one
    feed(s, [it("0", ch="d")])
    assert s.add(it("y", "q", ch="d"), seq=True, now=0) == ([], None)


def test_expire_after_message_wait() -> None:
    s = Sequencer(message_wait_ms=5000)
    feed(s, [it("1")], now=100.0)
    feed(s, [it("3", "2")], now=100.0)
    feed(s, [it("5", "4")], now=102.0)
    assert s.next_deadline() == pytest.approx(105.0)
    assert s.expire(104.999) == []
    assert ids(s.expire(105.0)) == ["3"]
    assert s.last_id("c") == "3"
    assert s.next_deadline() == pytest.approx(107.0)
    assert ids(s.expire(107.5)) == ["5"]
    assert s.next_deadline() is None
    assert not s.has_pending()


def test_expire_releases_the_chain_behind_an_old_item() -> None:
    s = Sequencer(message_wait_ms=1000)
    feed(s, [it("1")], now=0)
    feed(s, [it("3", "2")], now=0)  # waits for 2, which never comes
    feed(s, [it("4", "3")], now=0.5)  # waits for 3
    # at 1.0 only "3" is old enough, but "4" follows it in its chain
    assert ids(s.expire(1.0)) == ["3", "4"]
    assert s.pending_count() == 0


def test_expire_order_is_arrival_order_across_channels() -> None:
    s = Sequencer(message_wait_ms=1000)
    feed(s, [it("1", ch="a"), it("1", ch="b")], now=0)
    feed(s, [it("3", "2", ch="b")], now=0.1)
    feed(s, [it("3", "2", ch="a")], now=0.2)
    out = s.expire(5)
    assert [(i.channel, i.id) for i in out] == [("b", "3"), ("a", "3")]


def test_channel_removed_discards_waiting_and_forgets_last_id() -> None:
    s = Sequencer()
    feed(s, [it("1"), it("3", "2"), it("4", "3")])
    discarded = s.channel_removed("c")
    assert sorted(ids(discarded), key=str) == ["3", "4"]
    assert s.last_id("c") is None
    assert not s.has_pending()
    assert s.expire(1e9) == []
    # the next message is a "first" one again: delivered whatever its prev-id
    assert feed(s, [it("9", "8")]) == ["9"]
    assert s.channel_removed("nope") == []


def test_clear_last_ids_keeps_waiting_items() -> None:
    s = Sequencer()
    feed(s, [it("1"), it("3", "2")])
    s.clear_last_ids()
    assert s.last_id("c") is None
    assert s.pending_count() == 1
    # with no last-id the next item is delivered and releases its chain
    assert feed(s, [it("2", "x")]) == ["2", "3"]


def test_forget_last_id() -> None:
    s = Sequencer()
    feed(s, [it("1")])
    s.forget_last_id("c")
    assert feed(s, [it("5", "4")]) == ["5"]


# -- F33 dedup ---------------------------------------------------------------------------------


def test_dedup_off_by_default() -> None:
    s = Sequencer()
    assert feed(s, [it("1", ch="a"), it("1", ch="a")]) == ["1", "1"]
    assert s.dedup_size() == 0


@pytest.mark.parametrize(
    ("second_at", "dropped"),
    [(0.0, True), (59.999, True), (60.0, False), (61.0, False)],
)
def test_dedup_within_ttl(second_at: float, dropped: bool) -> None:
    s = Sequencer(id_cache_ttl=60)
    assert s.add(it("x"), seq=False, now=0.0) == ([it("x")], None)
    ready, reason = s.add(it("x"), seq=False, now=second_at)
    if dropped:
        assert (ready, reason) == ([], DROP_DUPLICATE_ID)
    else:
        assert (ids(ready), reason) == (["x"], None)


def test_dedup_is_per_channel_and_ignores_items_without_id() -> None:
    s = Sequencer(id_cache_ttl=60)
    assert feed(s, [it("x", ch="a"), it("x", ch="b"), it(None), it(None)]) == ["x", "x", None, None]


def test_dedup_expiry_is_not_extended_by_duplicates() -> None:
    s = Sequencer(id_cache_ttl=10)
    s.add(it("x"), seq=False, now=0)
    assert s.add(it("x"), seq=False, now=9)[1] == DROP_DUPLICATE_ID
    assert s.add(it("x"), seq=False, now=10)[1] is None


def test_dedup_applies_before_sequencing_and_to_waiting_items() -> None:
    s = Sequencer(id_cache_ttl=60)
    feed(s, [it("1"), it("3", "2")])
    # "3" is waiting; a second "3" (even with another prev-id) is a duplicate
    assert s.add(it("3", "1"), seq=True, now=0) == ([], DROP_DUPLICATE_ID)
    assert feed(s, [it("2", "1")]) == ["2", "3"]


def test_dedup_cache_expires_old_entries() -> None:
    s = Sequencer(id_cache_ttl=5)
    for n in range(100):
        s.add(it(str(n)), seq=False, now=n * 0.1)
    assert s.dedup_size() == 50  # entries older than 5 s were evicted on the way
    s.add(it(None), seq=False, now=1000)
    assert s.dedup_size() == 0


def test_dedup_cache_is_bounded_by_count() -> None:
    # gripd-only bound (F33 has TTL only): the oldest sighting is evicted past id_cache_max.
    s = Sequencer(id_cache_ttl=60, id_cache_max=3)
    feed(s, [it("a"), it("b"), it("c"), it("d")])
    assert s.dedup_size() == 3
    assert s.add(it("a"), seq=False, now=0)[1] is None  # evicted: no longer a duplicate
    assert s.add(it("d"), seq=False, now=0)[1] == DROP_DUPLICATE_ID


# -- last-ids bound ----------------------------------------------------------------------------


def test_last_ids_evict_least_recently_set() -> None:
    li = LastIds(3)
    li.set("a", "1")
    li.set("b", "1")
    li.set("c", "1")
    assert li.get("a") == "1"  # a read does not refresh (Pushpin)
    li.set("b", "2")  # a write does
    li.set("d", "1")
    assert "a" not in li
    assert [li.get(k) for k in "bcd"] == ["2", "1", "1"]
    li.set("e", "1")
    assert "c" not in li
    assert len(li) == 3


def test_sequencer_last_ids_bound() -> None:
    s = Sequencer(last_ids_max=2)
    feed(s, [it("1", ch="a"), it("1", ch="b"), it("1", ch="c")])
    assert s.last_id("a") is None  # evicted: its next item counts as a first message
    assert feed(s, [it("5", "4", ch="a")]) == ["5"]
    assert feed(s, [it("5", "4", ch="c")]) == []  # c is still known, so this one waits


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(2, 12))))
def test_any_arrival_order_is_delivered_in_sequence(order: list[int]) -> None:
    """Once the channel has a last-id, a shuffled chain comes out in id order."""
    s = Sequencer()
    out = feed(s, [it("1")])
    out += feed(s, [it(str(n), str(n - 1)) for n in order])
    assert out == [str(n) for n in range(1, 12)]
    assert not s.has_pending()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from([None, "1", "2", "3", "4", "5"]),
            st.sampled_from([None, "1", "2", "3", "4", "5"]),
            st.booleans(),
            st.floats(min_value=0, max_value=3),
        ),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=3),
)
def test_every_item_is_delivered_dropped_or_waiting_exactly_once(
    ops: list[tuple[str, str | None, str | None, bool, float]], ttl: int
) -> None:
    s = Sequencer(message_wait_ms=1000, id_cache_ttl=ttl)
    now = 0.0
    added: list[PublishItem] = []
    delivered: list[PublishItem] = []
    dropped = 0
    for ch, id_, prev, seq, dt in ops:
        now += dt
        delivered += s.expire(now)
        item = it(id_, prev, ch)
        added.append(item)
        ready, reason = s.add(item, seq=seq, now=now)
        dropped += reason is not None
        assert not (ready and reason)
        delivered += ready
        # waiting items are never older than message_wait + the caller's tick
        deadline = s.next_deadline()
        assert deadline is None or deadline > now - 3
    waiting = s.pending_count()
    assert len({id(i) for i in delivered}) == len(delivered)  # nothing delivered twice
    assert len(delivered) + dropped + waiting == len(added)
    delivered += s.expire(now + 2)
    assert not s.has_pending()
    assert len(delivered) + dropped == len(added)

"""The resume seam's small parts: holding live items back (bounded), dropping what the store
already had, a cut replay counting as gone, and where the resume id is read from."""

from __future__ import annotations

from gripd.core.history import Replay
from gripd.core.publish import HttpStreamFormat, PublishItem
from gripd.io.bus.hub import READS_PENDING_MAX, WorkerLink
from gripd.io.handler.history import (
    RESUME_BUFFER_MAX,
    RESUME_ID_MAX,
    ResumeState,
    resume_id,
    whole,
)
from gripd.io.listener.request import Request


def item(n: int | None, channel: str = "c") -> PublishItem:
    return PublishItem(
        channel,
        None if n is None else str(n),
        http_stream=HttpStreamFormat(content=b"%d" % (n or 0)),
    )


def test_live_items_wait_and_the_wait_is_bounded() -> None:
    state = ResumeState("0", ["c"])
    finished: list[int] = []

    def finish() -> None:
        finished.append(len(state.buffer or []))
        state.buffer = None

    state.finish = finish
    for n in range(1, RESUME_BUFFER_MAX):
        assert state.hold_back(item(n))
    assert not finished
    assert state.hold_back(item(RESUME_BUFFER_MAX))
    assert finished == [RESUME_BUFFER_MAX]  # the wait ends with every item kept, in order


def test_items_the_store_had_are_dropped_until_a_newer_one() -> None:
    state = ResumeState("2", ["c"])
    state.buffer = None
    state.skip = {("c", "1"), ("c", "2"), ("c", "3")}
    assert state.hold_back(item(1))
    assert not state.hold_back(item(None))  # no id: delivered, and not a sign of newer items
    assert state.hold_back(item(3))
    assert not state.hold_back(item(3, "other"))  # same id on another channel is not the same
    assert not state.hold_back(item(4))  # newer: from here on everything is live
    assert not state.skip
    assert not state.hold_back(item(2))


def test_a_replay_cut_at_the_limit_is_gone() -> None:
    items = tuple(item(n) for n in range(1, 4))
    assert whole(Replay("ok", items, "3"), 3).status == "ok"  # reaches the newest
    cut = whole(Replay("ok", items, "9", frozenset({"1"})), 3)
    assert (cut.status, cut.items, cut.known) == ("gone", (), frozenset({"1"}))
    assert whole(Replay("ok", items[:2], "9"), 3).status == "ok"  # under the limit: all of it


def request(url: str, headers: list[tuple[str, str]]) -> Request:
    return Request("GET", url, headers, "1.1", True)


def test_resume_id_from_the_header_then_the_query() -> None:
    assert resume_id(request("/e", [("last-event-id", "7")])) == "7"
    assert resume_id(request("/e?last_event_id=8", [("Last-Event-ID", "7")])) == "7"
    assert resume_id(request("/e?x=1&last_event_id=a%20b", [])) == "a b"
    assert resume_id(request("/e", [])) is None
    long = resume_id(request("/e", [("Last-Event-ID", "x" * 5000)]))
    assert long is not None and len(long) == RESUME_ID_MAX + 1  # longer than any stored id


def test_history_reads_waiting_on_the_hub_are_bounded() -> None:
    """A worker's reads wait for the hub's answer; past READS_PENDING_MAX the oldest is
    answered ``gone`` (a hub that answers nothing must not grow the worker's memory)."""
    sent: list[tuple[object, ...]] = []
    link = WorkerLink(sink=None, on_command=lambda msg: None)  # type: ignore[arg-type]
    link.link = type("L", (), {"send": staticmethod(sent.append)})()  # type: ignore[assignment]
    answers: list[tuple[int, str]] = []
    for n in range(READS_PENDING_MAX + 2):
        link.read("c", "1", 10, lambda r, n=n: answers.append((n, r.status)))
    assert answers == [(0, "gone"), (1, "gone")]
    assert len(sent) == READS_PENDING_MAX + 2
    link.on_message(("hrep", READS_PENDING_MAX + 2, "ok", [], None, []))  # the newest read
    assert answers[-1] == (READS_PENDING_MAX + 1, "ok")

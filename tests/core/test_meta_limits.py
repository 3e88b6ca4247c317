"""Caps on one WebSocket's subscription meta (F36): ``set-meta`` control messages (F39) and
``Set-Meta-*`` headers of WebSocket-over-HTTP answers (F41). Pushpin keeps any number of keys;
gripd ignores a set past ``META_KEYS_MAX`` keys or ``META_BYTES_MAX`` bytes."""

from __future__ import annotations

from gripd.core.wscontrol import (
    META_BYTES_MAX,
    META_KEYS_MAX,
    SetMeta,
    meta_size,
    parse_control_message,
    set_meta,
)
from gripd.core.wsevents import apply_meta_updates


def _full() -> dict[str, str]:
    meta: dict[str, str] = {}
    for i in range(META_KEYS_MAX):
        assert set_meta(meta, f"k{i}", "v")
    return meta


def test_caps_are_named_values() -> None:
    assert (META_KEYS_MAX, META_BYTES_MAX) == (100, 16384)


def test_set_replace_delete() -> None:
    meta: dict[str, str] = {}
    assert set_meta(meta, "user", "alice")
    assert set_meta(meta, "user", "bob")
    assert set_meta(meta, "other", "")  # an empty string is a value (F39)
    assert meta == {"user": "bob", "other": ""}
    assert set_meta(meta, "user", None)
    assert set_meta(meta, "absent", None)
    assert meta == {"other": ""}


def test_key_count_cap() -> None:
    meta = _full()
    assert not set_meta(meta, "one-more", "v")
    assert "one-more" not in meta and len(meta) == META_KEYS_MAX
    # At the cap, existing keys can still be replaced and deleted, and a deleted slot reused.
    assert set_meta(meta, "k0", "new")
    assert set_meta(meta, "k1", None)
    assert set_meta(meta, "one-more", "v")
    assert len(meta) == META_KEYS_MAX


def test_byte_cap() -> None:
    meta: dict[str, str] = {}
    big = "x" * (META_BYTES_MAX - 1 - 1)  # name "a" + value: exactly at the cap
    assert set_meta(meta, "a", big)
    assert meta_size(meta) == META_BYTES_MAX - 1
    assert set_meta(meta, "b", "")  # exactly at the cap
    assert not set_meta(meta, "c", "")  # one byte over
    assert set_meta(meta, "a", "small")  # replacing frees the old value's bytes first
    assert set_meta(meta, "b", "y" * 100)
    assert not set_meta(meta, "c", "é" * (META_BYTES_MAX // 2))  # counted in UTF-8 bytes
    assert set(meta) == {"a", "b"}  # "c" was never stored


def test_control_messages_past_the_cap() -> None:
    """A stream of ``set-meta`` messages (as an origin would send) stops adding at the cap."""
    meta: dict[str, str] = {}
    refused = 0
    for i in range(1000):
        msg = parse_control_message(f'{{"type":"set-meta","name":"n{i}","value":"v"}}'.encode())
        assert isinstance(msg, SetMeta)
        refused += not set_meta(meta, msg.name, msg.value)
    assert len(meta) == META_KEYS_MAX and refused == 1000 - META_KEYS_MAX


def test_set_meta_headers_past_the_cap() -> None:
    """F41 ``Set-Meta-*``: case-insensitive replace still works; new names past the cap are
    dropped, across many answers."""
    meta: dict[str, str] = {}
    for batch in range(10):
        meta = apply_meta_updates(meta, [(f"N{batch}-{i}", "v") for i in range(50)])
    assert len(meta) == META_KEYS_MAX
    assert list(meta)[:2] == ["N0-0", "N0-1"]  # the first ones kept, later ones ignored
    meta = apply_meta_updates(meta, [("n0-0", "replaced"), ("n0-1", "")])
    assert "N0-0" not in meta and meta["n0-0"] == "replaced" and "N0-1" not in meta
    meta = apply_meta_updates(meta, [("Big", "z" * META_BYTES_MAX)])
    assert "Big" not in meta

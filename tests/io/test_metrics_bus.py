"""The bus metrics (F44, gripd's own): read from the bus object at each scrape.

A fake bus stands in for :class:`gripd.io.bus.redis.RedisBus` (``connected`` and ``counters``);
the in-process :class:`gripd.io.bus.local.LocalBus` has neither, and its series are absent.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gripd.core.config import default_config
from gripd.core.publish import PublishItem
from gripd.core.stats import StatsState
from gripd.io.bus.local import LocalBus
from gripd.io.observe.metrics import Metrics

BUS_SERIES = (
    "gripd_bus_connected",
    "gripd_bus_items_published_total",
    "gripd_bus_items_received_total",
    "gripd_bus_publish_failed_total",
    "gripd_bus_decode_errors_total",
    "gripd_bus_reconnects_total",
)


class FakeBus:
    """What the metrics read from a Redis bus."""

    def __init__(self) -> None:
        self.connected = False
        self.counters = {
            "published": 0,
            "received": 0,
            "publish_failed": 0,
            "decode_errors": 0,
            "reconnects": 0,
        }


class NullSink:
    def publish(self, items: list[PublishItem], *, source: str) -> None:
        pass


def make(tmp_path: Path, prefix: str = "") -> Metrics:
    cfg = dataclasses.replace(default_config(str(tmp_path)), prometheus_prefix=prefix)
    return Metrics(cfg, stats=StatsState(instance_id="gripd_1"))


def samples(m: Metrics) -> dict[str, str]:
    body = m.exposition().decode()
    return dict(ln.rsplit(" ", 1) for ln in body.splitlines() if ln and not ln.startswith("#"))


def comments(m: Metrics) -> list[str]:
    return [ln for ln in m.exposition().decode().splitlines() if ln.startswith("# ")]


def test_no_bus_and_local_bus_have_no_bus_series(tmp_path: Path) -> None:
    m = make(tmp_path)
    assert not [k for k in samples(m) if "bus_" in k]
    m.bus = LocalBus(NullSink())
    got = samples(m)
    assert not [k for k in got if "bus_" in k]
    assert got['gripd_connections{transport="http"}'] == "0.0"  # the rest is still there


def test_redis_like_bus_values_are_read_at_each_scrape(tmp_path: Path) -> None:
    m = make(tmp_path)
    bus = FakeBus()
    m.bus = bus
    got = samples(m)
    assert {k: got.get(k) for k in BUS_SERIES} == {
        "gripd_bus_connected": "0.0",
        "gripd_bus_items_published_total": "0.0",
        "gripd_bus_items_received_total": "0.0",
        "gripd_bus_publish_failed_total": "0.0",
        "gripd_bus_decode_errors_total": "0.0",
        "gripd_bus_reconnects_total": "0.0",
    }
    bus.connected = True
    bus.counters.update(published=7, received=12, publish_failed=3, decode_errors=2, reconnects=1)
    got = samples(m)
    assert {k: got.get(k) for k in BUS_SERIES} == {
        "gripd_bus_connected": "1.0",
        "gripd_bus_items_published_total": "7.0",
        "gripd_bus_items_received_total": "12.0",
        "gripd_bus_publish_failed_total": "3.0",
        "gripd_bus_decode_errors_total": "2.0",
        "gripd_bus_reconnects_total": "1.0",
    }
    bus.connected = False  # Redis lost again: the gauge follows
    assert samples(m)["gripd_bus_connected"] == "0.0"
    # a counter-type line per counter, and the gauge's help says what the in-process bus does
    text = comments(m)
    assert "# TYPE gripd_bus_connected gauge" in text
    assert "# TYPE gripd_bus_publish_failed_total counter" in text
    help_ = next(ln for ln in text if ln.startswith("# HELP gripd_bus_connected "))
    assert "absent with the in-process bus" in help_
    assert not [k for k in samples(m) if k.startswith("gripd_bus_") and k.endswith("_created")]


def test_bus_series_follow_the_prefix(tmp_path: Path) -> None:
    m = make(tmp_path, prefix="my-app.")
    bus = FakeBus()
    bus.connected = True
    bus.counters["published"] = 5
    m.bus = bus
    got = samples(m)
    assert got["my_app_gripd_bus_connected"] == "1.0"
    assert got["my_app_gripd_bus_items_published_total"] == "5.0"
    assert "my-app.request_received" in got  # Pushpin's five keep the raw prefix
    assert not [k for k in got if k.startswith("gripd_bus")]


def test_a_bus_with_partial_state_is_ignored(tmp_path: Path) -> None:
    """Only an object with a bool ``connected`` and a dict ``counters`` is read."""

    class Half:
        connected = True

    m = make(tmp_path)
    m.bus = Half()
    assert not [k for k in samples(m) if "bus_" in k]

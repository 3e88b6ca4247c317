"""Upper bounds of settings that go into HTTP/2 SETTINGS frames or drive a poll loop: a value
past them is a config error naming file:line, not a failure at the first connection."""

from __future__ import annotations

import pytest

from gripd.core.config import load_config
from gripd.core.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gripd]\nhttp2_max_streams=99999999999\n", "http2_max_streams: must be at most 10000"),
        ("[gripd]\nhttp2_reset_budget=2000000\n", "http2_reset_budget: must be at most 1000000"),
        (
            "[gripd]\nhttp2_control_budget=2000000\n",
            "http2_control_budget: must be at most 1000000",
        ),
        ("[runner]\nclient_buffer_size=99999999999\n", "client_buffer_size: must be at most"),
        ("[gripd]\ntls_reload_interval=0.001\n", "tls_reload_interval: must be at least 0.1"),
    ],
)
def test_out_of_bounds_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(text, path="/etc/p/pushpin.conf", read_file=lambda p: "")
    assert str(e.value).startswith("/etc/p/pushpin.conf:2: ")
    assert message in str(e.value)


def test_bounds_themselves_are_accepted() -> None:
    text = "[gripd]\nhttp2_max_streams=10000\nhttp2_reset_budget=1000000\ntls_reload_interval=0.1\n"
    cfg = load_config(text, path="/etc/p/pushpin.conf", read_file=lambda p: "")
    assert (cfg.http2_max_streams, cfg.http2_reset_budget, cfg.tls_reload_interval) == (
        10000,
        1000000,
        0.1,
    )

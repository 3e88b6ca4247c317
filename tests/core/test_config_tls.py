"""``[runner] https_ports``/``local_ports`` (F3) and ``[gripd] tls_reload_interval`` as read
from pushpin.conf."""

from __future__ import annotations

import pytest

from gripd.core.config import Config, Listen, load_config
from gripd.core.errors import ConfigError


def no_file(path: str) -> str:
    raise OSError(2, "No such file or directory")


def load(text: str) -> Config:
    return load_config(text, path="/etc/gp/pushpin.conf", read_file=no_file)


def test_listeners_parsed() -> None:
    cfg = load("[runner]\nhttps_ports=443,127.0.0.1:8443\nlocal_ports=/run/a.sock,/run/b.sock\n")
    assert cfg.https_ports == [Listen("0.0.0.0", 443), Listen("127.0.0.1", 8443)]
    assert cfg.local_ports == ["/run/a.sock", "/run/b.sock"]
    assert cfg.config_dir == "/etc/gp"  # certificates: /etc/gp/runner/certs


def test_tls_reload_interval() -> None:
    assert load("").tls_reload_interval == 5.0
    assert load("[gripd]\ntls_reload_interval=0.5\n").tls_reload_interval == 0.5
    for bad in ("0", "-1", "x", "100000"):
        with pytest.raises(ConfigError) as e:
            load(f"[gripd]\ntls_reload_interval={bad}\n")
        assert "tls_reload_interval" in str(e.value)
        assert e.value.line == 2

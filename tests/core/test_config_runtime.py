"""``[gripd] workers`` and ``[gripd] bus``: parsed, checked, errors naming file:line."""

from __future__ import annotations

import pytest

from gripd.core.config import load_config
from gripd.core.config_gripd import WORKERS_MAX, parse_bus_url
from gripd.core.errors import ConfigError
from gripd.core.reload import LIVE


def _no_file(path: str) -> str:
    raise OSError(path)


def _load(gripd_section: str) -> object:
    return load_config(f"[gripd]\n{gripd_section}\n", path="/etc/p.conf", read_file=_no_file)


@pytest.mark.parametrize(("value", "expected"), [("", None), ("auto", None), ("1", 1), ("4", 4)])
def test_workers_values(value: str, expected: int | None) -> None:
    cfg = load_config(f"[gripd]\nworkers={value}\n", path="/p.conf", read_file=_no_file)
    assert cfg.workers == expected


def test_workers_unset_means_one_per_cpu() -> None:
    assert load_config("", path="/p.conf", read_file=_no_file).workers is None


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", str(WORKERS_MAX + 1)])
def test_bad_workers_is_a_config_error_naming_the_line(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(f"workers={value}")
    assert str(e.value).startswith("/etc/p.conf:2: [gripd] workers: ")


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("redis://127.0.0.1", ("redis", "127.0.0.1", 6379, 0, None, None)),
        ("redis://h:6390/3", ("redis", "h", 6390, 3, None, None)),
        ("rediss://u:p%40ss@h/1", ("rediss", "h", 6379, 1, "u", "p@ss")),
        ("redis://:secret@[::1]:7000", ("redis", "::1", 7000, 0, None, "secret")),
    ],
)
def test_bus_url_parts(url: str, parts: tuple[object, ...]) -> None:
    assert parse_bus_url(url) == parts
    cfg = load_config(f"[gripd]\nbus={url}\n", path="/p.conf", read_file=_no_file)
    assert cfg.bus == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://h", "must start with redis:// or rediss://"),
        ("redis://", "has no host"),
        ("redis://h/db", "database must be a number"),
        ("redis://h:99999", "not a valid URL"),
        ("redis://h/?x=1", "must not have a query or fragment"),
    ],
)
def test_bad_bus_url_is_a_config_error(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(f"bus={url}")
    assert str(e.value).startswith("/etc/p.conf:2: [gripd] bus: ")
    assert why in str(e.value)


def test_bad_bus_url_does_not_echo_a_password() -> None:
    with pytest.raises(ConfigError) as e:
        _load("bus=redis://:hunter2@h/notanumber")
    assert "hunter2" not in str(e.value)


def test_control_keep_alive_is_off_unless_set() -> None:
    """Off by default (every control API answer closes, as in Pushpin's F28); a boolean;
    anything else names the setting and its line; a reload applies it (new connections)."""
    assert load_config("", path="/p.conf", read_file=_no_file).control_keep_alive is False
    cfg = load_config("[gripd]\ncontrol_keep_alive=true\n", path="/p.conf", read_file=_no_file)
    assert cfg.control_keep_alive is True
    with pytest.raises(ConfigError) as ei:
        load_config("[gripd]\n\ncontrol_keep_alive=sometimes\n", path="/p.conf", read_file=_no_file)
    assert "/p.conf:3" in str(ei.value) and "control_keep_alive" in str(ei.value)
    assert "control_keep_alive" in LIVE


def test_control_keep_alive_needs_a_header_timeout() -> None:
    """Idle persistent control connections are closed by client_header_timeout: turning it off
    with control_keep_alive on is refused, naming the setting and its line."""
    text = "[gripd]\nclient_header_timeout=0\ncontrol_keep_alive=true\n"
    with pytest.raises(ConfigError) as ei:
        load_config(text, path="/p.conf", read_file=_no_file)
    assert "/p.conf:3" in str(ei.value) and "client_header_timeout" in str(ei.value)
    cfg = load_config("[gripd]\nclient_header_timeout=0\n", path="/p.conf", read_file=_no_file)
    assert cfg.control_keep_alive is False

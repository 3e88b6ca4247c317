"""Which settings a reload of pushpin.conf applies live and which need a restart."""

from __future__ import annotations

import dataclasses

from gripd.core.config import Config, load_config
from gripd.core.reload import LIVE, NOT_SETTINGS, RESTART, plan_reload


def conf(extra: str = "") -> Config:
    text = (
        "[runner]\nhttp_port=7999\n[proxy]\ndebug=false\n[handler]\nmessage_rate=2500\n"
        "[gripd]\n" + extra
    )
    return load_config(text, path="/etc/x/pushpin.conf", read_file=lambda p: "")


def test_every_setting_is_classified_once() -> None:
    names = {f.name for f in dataclasses.fields(Config)}
    assert names == LIVE | RESTART | NOT_SETTINGS
    assert not (LIVE & RESTART) and not (LIVE & NOT_SETTINGS) and not (RESTART & NOT_SETTINGS)


def test_live_settings_change_and_others_keep_old_values() -> None:
    old = conf()
    text = (
        "[runner]\nhttp_port=8000\n[proxy]\ndebug=true\n[handler]\nmessage_rate=100\n"
        "[gripd]\nworkers=3\nclient_idle_timeout=5\npublish_key=s3cret\n"
    )
    new = load_config(text, path="/etc/x/pushpin.conf", read_file=lambda p: "")
    plan = plan_reload(old, new)
    assert set(plan.changed) == {"debug", "message_rate", "client_idle_timeout", "publish_key"}
    assert set(plan.needs_restart) == {"http_port", "workers"}
    c = plan.config
    assert (c.debug, c.message_rate, c.client_idle_timeout) == (True, 100, 5.0)
    assert c.http_port == old.http_port and c.workers == old.workers
    lines = plan.describe(old)
    assert "debug: False -> True" in lines
    assert "publish_key changed" in lines
    assert not any("s3cret" in line for line in lines)


def test_nothing_changed() -> None:
    plan = plan_reload(conf(), conf())
    assert (plan.changed, plan.needs_restart) == ((), ())


def test_restart_lines_keep_secrets_out() -> None:
    """A changed ``bus`` URL may carry a Redis password: the reload names it and never shows
    either value; other restart settings show the value kept."""
    old = dataclasses.replace(conf(), bus="redis://user:oldpass@127.0.0.1:6379")
    new = dataclasses.replace(old, bus="redis://user:newpass@127.0.0.1:6379", workers=7)
    plan = plan_reload(old, new)
    assert set(plan.needs_restart) == {"bus", "workers"}
    lines = plan.restart_lines(old)
    assert "bus changed, needs restart" in lines
    assert f"workers changed, needs restart; keeping {old.workers!r}" in lines
    assert not any("pass" in line for line in lines)

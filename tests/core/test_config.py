"""pushpin.conf parsing (F1-F5): shipped files, include, templates, port offset, errors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.config import (
    DEFAULT_PUSHPIN_CONF,
    INTERNAL_CONF,
    Config,
    Listen,
    config_search_paths,
    default_config,
    find_config_file,
    load_config,
    parse_listen_list,
    parse_log_level,
)
from gripd.core.errors import ConfigError

SHIPPED_CONF = Path("/etc/pushpin/pushpin.conf")
SHIPPED_INTERNAL = Path("/usr/lib/pushpin/internal.conf")


def no_file(path: str) -> str:
    raise OSError(path)


def files(mapping: dict[str, str]) -> Callable[[str], str]:
    def read(path: str) -> str:
        if path not in mapping:
            raise OSError(path)
        return mapping[path]

    return read


def load(text: str, **kw: object) -> Config:
    kw.setdefault("path", "/etc/gripd/pushpin.conf")
    kw.setdefault("read_file", no_file)
    return load_config(text, **kw)  # type: ignore[arg-type]


# --- shipped files ---------------------------------------------------------------------------


def test_shipped_debian_config_parses() -> None:
    """F2-F5: the real Debian pushpin.conf + internal.conf give the shipped values."""
    if not (SHIPPED_CONF.exists() and SHIPPED_INTERNAL.exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("Pushpin's shipped config files are required in CI")
        pytest.skip("Pushpin is not installed")
    cfg = load_config(
        SHIPPED_CONF.read_text(),
        path=str(SHIPPED_CONF),
        read_file=lambda p: Path(p).read_text(),
    )
    assert cfg.config_dir == "/etc/pushpin"
    assert cfg.routesfile == "/etc/pushpin/routes"
    assert cfg.http_port == [Listen("0.0.0.0", 7999)]
    assert cfg.services == ["condure", "pushpin-proxy", "pushpin-handler"]
    assert (cfg.message_rate, cfg.message_hwm, cfg.id_cache_ttl) == (2500, 25000, 60)
    assert (cfg.sig_iss, cfg.sig_key) == ("pushpin", "changeme")
    assert cfg.set_x_forwarded_protocol == "proto-only"
    assert (cfg.push_in_http_addr, cfg.push_in_http_port) == ("127.0.0.1", 5561)
    assert cfg.stats_spec == "ipc:///var/run/pushpin/pushpin-stats"
    # from the real include file
    assert cfg.extra["proxy"]["handler_accept_spec"] == "ipc:///var/run/pushpin/pushpin-accept"
    # the embedded copies agree with the real files
    embedded = default_config("/etc/pushpin")
    assert dataclasses.replace(cfg, config_path=None, routesfile=None) == embedded


def test_embedded_internal_conf_matches_real_file() -> None:
    if not SHIPPED_INTERNAL.exists():
        pytest.skip("Pushpin is not installed")
    from gripd.core.config import _parse_ini

    real = _parse_ini(SHIPPED_INTERNAL.read_text(), "a")
    ours = _parse_ini(INTERNAL_CONF, "b")
    strip = {s: {k: v[0] for k, v in keys.items()} for s, keys in real.items()}
    assert strip == {s: {k: v[0] for k, v in keys.items()} for s, keys in ours.items()}


def test_default_config_is_shipped_values() -> None:
    cfg = default_config("/home/u")
    assert cfg.config_path is None and cfg.config_dir == "/home/u"
    assert cfg.routesfile is None
    assert cfg.http_port == [Listen("0.0.0.0", 7999)]
    assert (cfg.message_rate, cfg.message_hwm, cfg.id_cache_ttl) == (2500, 25000, 60)
    assert cfg.sig_key == "changeme" and cfg.set_x_forwarded_protocol == "proto-only"
    assert cfg.push_in_http_port == 5561 and cfg.push_in_http_addr == "127.0.0.1"
    # the built-in internal.conf was used as the include
    assert cfg.extra["handler"]["proxy_accept_spec"] == "ipc:///var/run/pushpin/pushpin-accept"


def test_code_defaults_when_keys_absent() -> None:
    """F2-F5: absent keys take Pushpin's code defaults, not the shipped values."""
    cfg = load("")
    expect = {
        "ipc_prefix": "pushpin-",
        "port_offset": 0,
        "stats_connection_ttl": 120,
        "services": [],
        "http_port": [],
        "log_level": 2,
        "client_buffer_size": 8192,
        "client_maxconn": 50000,
        "routesfile": None,
        "debug": False,
        "set_x_forwarded_protocol": "",
        "sig_iss": "pushpin",
        "sig_key": "",
        "sockjs_url": "",
        "stats_report_interval": 10,
        "max_open_requests": -1,
        "push_in_http_port": 0,
        "push_in_http_max_headers_size": 10000,
        "push_in_http_max_body_size": 1000000,
        "message_rate": -1,
        "message_hwm": -1,
        "message_block_size": -1,
        "message_wait": 5000,
        "id_cache_ttl": 0,
        "connection_subscription_max": 20,
        "subscription_linger": 60,
        "stats_subscription_ttl": 60,
        "stats_format": "tnetstring",
        "update_on_first_subscription": True,
        "client_write_buffer_max": 1_048_576,
        "origin_connect_timeout": 10.0,
        "origin_response_timeout": 60.0,
        "max_request_body": 100_000_000,
    }
    for name, value in expect.items():
        assert getattr(cfg, name) == value, name


# --- include and templates -------------------------------------------------------------------


def test_include_values_are_defaults_main_wins() -> None:
    main = "[global]\ninclude=extra.conf\n[proxy]\nsig_iss=main\n"
    inc = "[proxy]\nsig_iss=inc\nsig_key=fromInclude\n[handler]\nmessage_rate=7\n"
    cfg = load(main, read_file=files({"/etc/gripd/extra.conf": inc}))
    assert cfg.sig_iss == "main"
    assert cfg.sig_key == "fromInclude"
    assert cfg.message_rate == 7


@pytest.mark.parametrize(
    ("include", "expected_path"),
    [
        ("{libdir}/internal.conf", "/opt/pp/internal.conf"),
        ("internal.conf", "/opt/pp/internal.conf"),  # legacy spelling → libdir
        ("sub/x.conf", "/etc/gripd/sub/x.conf"),  # relative → config dir
        ("/abs/x.conf", "/abs/x.conf"),
    ],
)
def test_include_path_resolution(include: str, expected_path: str) -> None:
    seen: list[str] = []

    def read(p: str) -> str:
        seen.append(p)
        return "[handler]\nmessage_hwm=3\n"

    cfg = load(f"[global]\ninclude={include}\n", read_file=read, libdir="/opt/pp")
    assert seen == [expected_path]
    assert cfg.message_hwm == 3


def test_global_libdir_overrides_libdir_argument() -> None:
    seen: list[str] = []

    def read(p: str) -> str:
        seen.append(p)
        return ""

    load("[global]\nlibdir=/mine\ninclude={libdir}/internal.conf\n", read_file=read)
    assert seen == ["/mine/internal.conf"]


def test_missing_internal_conf_falls_back_to_builtin() -> None:
    cfg = load("[global]\nrundir=/r\ninclude={libdir}/internal.conf\n", read_file=no_file)
    assert cfg.extra["proxy"]["handler_inspect_spec"] == "ipc:///r/pushpin-inspect"


def test_missing_other_include_is_empty() -> None:
    cfg = load("[global]\ninclude=/nope/other.conf\n", read_file=no_file)
    assert "proxy" not in cfg.extra


def test_templates_substituted_everywhere() -> None:
    text = (
        "[global]\nrundir=/run/x\nipc_prefix=pp-\n"
        "[runner]\nlocal_ports={rundir}/{ipc_prefix}server\n"
        "[handler]\nstats_spec=ipc://{rundir}/{ipc_prefix}stats\n"
        "command_spec={libdir}/cmd\n"
    )
    cfg = load(text, libdir="/lib/pp")
    assert cfg.local_ports == ["/run/x/pp-server"]
    assert cfg.stats_spec == "ipc:///run/x/pp-stats"
    assert cfg.command_spec == "/lib/pp/cmd"
    assert cfg.extra["runner"]["local_ports"] == "/run/x/pp-server"


def test_rundir_falls_back_to_runner_section() -> None:
    cfg = load("[runner]\nrundir=/old\n[handler]\nstats_spec=ipc://{rundir}/s\n")
    assert cfg.rundir == "/old"
    assert cfg.stats_spec == "ipc:///old/s"


def test_ipc_prefix_override() -> None:
    text = "[global]\nipc_prefix=a-\n[handler]\nstats_spec=ipc://{rundir}/{ipc_prefix}stats\n"
    cfg = load(text, ipc_prefix_override="p3-")
    assert cfg.ipc_prefix == "p3-"
    assert cfg.stats_spec == "ipc:///p3-stats"


# --- port offset -----------------------------------------------------------------------------

PORTS = (
    "[runner]\nhttp_port=7999\n"
    "[handler]\npush_in_spec=tcp://127.0.0.1:5560\n"
    "push_in_sub_specs=tcp://127.0.0.1:5562,tcp://[::1]:5564\n"
    "push_in_http_port=5561\ncommand_spec=tcp://*:5563\nstats_spec=ipc://x:5\n"
)


@pytest.mark.parametrize(
    ("text_offset", "override", "shift"),
    [("", None, 0), ("[global]\nport_offset=3\n", None, 3), ("[global]\nport_offset=3\n", 20, 20)],
)
def test_port_offset_shifts_tcp_specs(text_offset: str, override: int | None, shift: int) -> None:
    cfg = load(text_offset + PORTS, port_offset_override=override)
    assert cfg.port_offset == shift
    assert cfg.push_in_spec == f"tcp://127.0.0.1:{5560 + shift}"
    assert cfg.push_in_sub_specs == [
        f"tcp://127.0.0.1:{5562 + shift}",
        f"tcp://[::1]:{5564 + shift}",
    ]
    assert cfg.command_spec == f"tcp://*:{5563 + shift}"
    assert cfg.push_in_http_port == 5561 + shift
    assert cfg.stats_spec == "ipc://x:5"  # not tcp
    assert cfg.http_port == [Listen("0.0.0.0", 7999)]  # client listeners are not shifted (F1)


def test_zero_push_in_http_port_not_shifted() -> None:
    assert load("[global]\nport_offset=10\n").push_in_http_port == 0


# --- value syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
        ('"true"', True),
    ],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert load(f"[proxy]\ndebug={raw}\n").debug is expected


def test_bad_boolean_names_line() -> None:
    with pytest.raises(ConfigError) as ei:
        load("[proxy]\n\n# c\ndebug=maybe\n")
    assert (ei.value.filename, ei.value.line) == ("/etc/gripd/pushpin.conf", 4)
    assert "debug" in str(ei.value)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("[runner]\nhttp_port=abc\n", "http_port", 2),
        ("[runner]\nhttp_port=70000\n", "http_port", 2),
        ("[runner]\nhttps_ports=0\n", "https_ports", 2),
        ("[runner]\nclient_maxconn=many\n", "client_maxconn", 2),
        ("[runner]\nclient_buffer_size=0\n", "client_buffer_size", 2),
        ("[runner]\nlog_level=-1\n", "log_level", 2),
        ("[handler]\nmessage_rate=1.5\n", "message_rate", 2),
        ("[handler]\n\nstats_format=xml\n", "stats_format", 3),
        ("[handler]\npush_in_http_port=70000\n", "push_in_http_port", 2),
        ("[global]\nport_offset=x\n", "port_offset", 2),
        ("[gripd]\norigin_connect_timeout=0\n", "origin_connect_timeout", 2),
        ("[gripd]\norigin_response_timeout=soon\n", "origin_response_timeout", 2),
        ("[gripd]\nws_max_message_size=0\n", "ws_max_message_size", 2),
        ("[gripd]\nslow_client_policy=kick\n", "slow_client_policy", 2),
        ("[gripd]\nhistory_size=abc\n", "history_size", 2),
        ("[gripd]\nhistory_size=-1\n", "history_size", 2),
        ("[gripd]\n\nhistory_ttl=soon\n", "history_ttl", 3),
        ("[gripd]\nhistory_channels_max=0\n", "history_channels_max", 2),
    ],
)
def test_errors_carry_file_and_line(text: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as ei:
        load(text)
    assert ei.value.line == line
    assert ei.value.filename == "/etc/gripd/pushpin.conf"
    assert key in ei.value.message
    assert str(ei.value).startswith(f"/etc/gripd/pushpin.conf:{line}: ")


@pytest.mark.parametrize("key", ["client_header_timeout", "client_idle_timeout"])
def test_client_timeouts_accept_zero_for_off(key: str) -> None:
    """0 turns these timeouts off (docs/limits.md); it was refused as not positive."""
    cfg = load(f"[gripd]\n{key}=0\n")
    assert getattr(cfg, key) == 0.0
    assert getattr(load(f"[gripd]\n{key}=0.5\n"), key) == 0.5
    for bad in ("-1", "1e999", "x"):
        with pytest.raises(ConfigError, match="must be a positive number or 0"):
            load(f"[gripd]\n{key}={bad}\n")


def test_other_timeouts_stay_positive() -> None:
    with pytest.raises(ConfigError, match=r"must be a positive number \(got"):
        load("[gripd]\norigin_response_timeout=0\n")


def test_error_in_include_names_include_file() -> None:
    read = files({"/etc/gripd/inc.conf": "[handler]\nmessage_hwm=lots\n"})
    with pytest.raises(ConfigError) as ei:
        load("[global]\ninclude=inc.conf\n", read_file=read)
    assert (ei.value.filename, ei.value.line) == ("/etc/gripd/inc.conf", 2)


def test_ini_syntax_details() -> None:
    text = (
        "; comment\n"
        "# comment\n"
        "[proxy]\n"
        "sig_key = spaced ; trailing comment\n"  # ';' starts a comment (verified on Pushpin)
        'upstream_key="has ; semicolon"\n'
        "sig_iss=first\n"
        "sig_iss=second\n"  # last duplicate wins
        "garbage line without equals\n"
        "Debug=true\n"  # keys are case-sensitive: not 'debug'
        "[handler]\n"
        "message_rate=+5\n"
        "message_block_size=\n"  # empty int = unset
    )
    cfg = load(text)
    assert cfg.sig_key == "spaced"
    assert cfg.upstream_key == "has ; semicolon"
    assert cfg.sig_iss == "second"
    assert cfg.debug is False
    assert cfg.extra["proxy"]["Debug"] == "true"
    assert cfg.message_rate == 5
    assert cfg.message_block_size == -1


def test_lists_split_and_stripped() -> None:
    text = (
        "[runner]\nservices= condure , pushpin-proxy,,pushpin-handler \n"
        "[proxy]\nx_forwarded_for=truncate:0, append\norig_headers_need_mark=\n"
        'x_forwarded_for_trusted="a,b", c\n'
    )
    cfg = load(text)
    assert cfg.services == ["condure", "pushpin-proxy", "pushpin-handler"]
    assert cfg.x_forwarded_for == ["truncate:0", "append"]
    assert cfg.x_forwarded_for_trusted == ["a,b", "c"]
    assert cfg.orig_headers_need_mark == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", "true"), ("proto-only", "proto-only"), ("", ""), ("yes", ""), ("TRUE", "")],
)
def test_set_x_forwarded_protocol(raw: str, expected: str) -> None:
    assert load(f"[proxy]\nset_x_forwarded_protocol={raw}\n").set_x_forwarded_protocol == expected


def test_push_in_sub_spec_singular_is_appended() -> None:
    text = "[handler]\npush_in_sub_specs=tcp://a:1\npush_in_sub_spec=tcp://b:2\n"
    assert load(text).push_in_sub_specs == ["tcp://a:1", "tcp://b:2"]


@pytest.mark.parametrize(
    ("text", "headers", "body"),
    [
        ("", 10000, 1000000),
        ("push_in_max_headers_size=5\npush_in_max_body_size=6\n", 5, 6),  # what 1.36 reads
        ("push_in_http_max_headers_size=7\npush_in_http_max_body_size=8\n", 7, 8),
        (
            "push_in_max_headers_size=5\npush_in_http_max_headers_size=7\n"
            "push_in_max_body_size=6\npush_in_http_max_body_size=8\n",
            7,
            8,
        ),
    ],
)
def test_push_in_size_spellings(text: str, headers: int, body: int) -> None:
    cfg = load("[handler]\n" + text)
    assert (cfg.push_in_http_max_headers_size, cfg.push_in_http_max_body_size) == (headers, body)


def test_stats_report_interval_and_prometheus_sections() -> None:
    cfg = load("[proxy]\nstats_report_interval=3\nprometheus_port=9000\n")
    assert cfg.stats_report_interval == 3 and cfg.prometheus_port == "9000"
    cfg = load(
        "[proxy]\nstats_report_interval=3\n[handler]\nstats_report_interval=4\n"
        "prometheus_port=9001\nprometheus_prefix=pp_\n"
    )
    assert cfg.stats_report_interval == 4
    assert (cfg.prometheus_port, cfg.prometheus_prefix) == ("9001", "pp_")


def test_gripd_section() -> None:
    text = (
        "[gripd]\nclient_write_buffer_max=2048\nws_max_message_size=5000\n"
        "origin_connect_timeout=2.5\norigin_response_timeout=30\nmax_request_body=0\nnew_knob=1\n"
    )
    cfg = load(text)
    assert cfg.client_write_buffer_max == 2048
    assert cfg.ws_max_message_size == 5000
    assert cfg.origin_connect_timeout == 2.5
    assert cfg.origin_response_timeout == 30.0
    assert cfg.max_request_body == 0
    assert cfg.extra["gripd"]["new_knob"] == "1"


def test_routesfile_resolution() -> None:
    assert load("[proxy]\nroutesfile=routes\n").routesfile == "/etc/gripd/routes"
    assert load("[proxy]\nroutesfile=../r/routes\n").routesfile == "/etc/r/routes"
    assert load("[proxy]\nroutesfile=/abs/routes\n").routesfile == "/abs/routes"
    assert load("[proxy]\nroutesfile=\n").routesfile is None
    cfg = load_config("[proxy]\nroutesfile=routes\n", path=None, read_file=no_file)
    assert cfg.routesfile == "routes" and cfg.config_dir == "."


def test_log_level_in_config() -> None:
    assert load("[runner]\nlog_level=3,condure:1\n").log_level == 3
    assert load("[runner]\nlog_level=condure:1\n").log_level == 2


# --- listen and log level helpers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7999", [Listen("0.0.0.0", 7999)]),
        ("127.0.0.1:7999", [Listen("127.0.0.1", 7999)]),
        ("[::1]:7999", [Listen("::1", 7999)]),
        ("7999, 8000", [Listen("0.0.0.0", 7999), Listen("0.0.0.0", 8000)]),
        (":80", [Listen("0.0.0.0", 80)]),
        ("*:80", [Listen("0.0.0.0", 80)]),
        ("localhost:0", [Listen("localhost", 0)]),
        ("", []),
    ],
)
def test_parse_listen_list(value: str, expected: list[Listen]) -> None:
    assert parse_listen_list(value) == expected


@pytest.mark.parametrize("value", ["x", "::1:80", "[::1]", "[]:80", "1:", "65536", "-1", "[::1:80"])
def test_parse_listen_list_rejects(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen_list(value)


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=5))
def test_parse_listen_list_roundtrip(ports: list[int]) -> None:
    text = ",".join(f"127.0.0.1:{p}" for p in ports)
    assert parse_listen_list(text) == [Listen("127.0.0.1", p) for p in ports]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", (2, {})),
        ("0", (0, {})),
        ("3,condure:1,pushpin-proxy:4", (3, {"condure": 1, "pushpin-proxy": 4})),
        ("condure:5", (2, {"condure": 5})),
        ("", (2, {})),
    ],
)
def test_parse_log_level(value: str, expected: tuple[int, dict[str, int]]) -> None:
    assert parse_log_level(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2,", "log level component cannot be empty"),
        (":3", "log level component name cannot be empty"),
        ("condure:x", "log level for service condure must be greater than or equal to 0"),
        ("condure:-1", "log level for service condure must be greater than or equal to 0"),
        ("-1", "log level must be greater than or equal to 0"),
        ("abc", "log level must be greater than or equal to 0"),
    ],
)
def test_parse_log_level_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_log_level(value)
    assert ei.value.message == message


# --- search order ----------------------------------------------------------------------------


def test_search_order() -> None:
    assert config_search_paths("/w") == [
        "/w/config/pushpin.conf",
        "/w/pushpin.conf",
        "/w/examples/config/pushpin.conf",
        "/etc/pushpin/pushpin.conf",
    ]


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"/w/config/pushpin.conf", "/w/pushpin.conf"}, "/w/config/pushpin.conf"),
        ({"/w/pushpin.conf", "/etc/pushpin/pushpin.conf"}, "/w/pushpin.conf"),
        ({"/w/examples/config/pushpin.conf"}, "/w/examples/config/pushpin.conf"),
        ({"/etc/pushpin/pushpin.conf"}, "/etc/pushpin/pushpin.conf"),
        (set(), None),
    ],
)
def test_find_config_file(present: set[str], expected: str | None) -> None:
    assert find_config_file("/w", present.__contains__) == expected


def test_default_pushpin_conf_constant_parses_standalone() -> None:
    # the embedded default has no errors and names its own include
    assert "include={libdir}/internal.conf" in DEFAULT_PUSHPIN_CONF
    assert load(DEFAULT_PUSHPIN_CONF).message_rate == 2500


def test_history_settings() -> None:
    """History is off by default (Pushpin stores nothing); every setting is read."""
    cfg = load("")
    assert (cfg.history_size, cfg.history_ttl, cfg.history_gone_event) == (0, 300.0, "")
    cfg = load(
        "[gripd]\nhistory_size=50\nhistory_ttl=0\nhistory_channels_max=7\n"
        "history_gone_event=reset\n"
    )
    assert (cfg.history_size, cfg.history_ttl, cfg.history_channels_max) == (50, 0.0, 7)
    assert cfg.history_gone_event == "reset"

"""pushpin.conf (F2-F5) through ``load_config``, with an include file.

Input: one flag byte, then the main file; a NUL NUL pair, if present, starts the include
file's text (read through ``read_file``). Both are read as UTF-8 with replacement. Flags:
bit 0 — ``--id``-style port offset override; bit 1 — no path (text without a file).

Allowed outcomes: a ``Config``, or ``ConfigError`` (gripd exits naming file and line). Anything
else is a find.
"""

from __future__ import annotations

from gripd.core.config import Config, load_config
from gripd.core.errors import ConfigError

from ._common import flags_and_rest

SEEDS = [
    b"\x00[global]\ninclude={libdir}/internal.conf\nrundir=run\nport_offset=0\n"
    b"[runner]\nservices=condure,pushpin-proxy,pushpin-handler\nhttp_port=7999\n"
    b"https_ports=[::1]:443, 127.0.0.1:8443\nlog_level=2,condure:3\nclient_buffer_size=8192\n"
    b"[proxy]\nroutesfile=routes\ndebug=false\nsig_key=changeme\n"
    b"x_forwarded_for=truncate:0,append\n[handler]\npush_in_http_port=5561\n"
    b"push_in_sub_specs=tcp://127.0.0.1:5562\nstats_format=json\nmessage_rate=2500\n"
    b"[gripd]\nslow_client_policy=close\nclient_header_timeout=2.5\n",
    b"\x01[global]\ninclude=other.conf ; comment\n\x00\x00[handler]\nmessage_hwm=10\n"
    b'[runner]\nhttp_port="127.0.0.1:80"\n',
    b"\x02; only comments\n# and more\nkey=value\n[runner]\nhttp_port=*:0\n",
    b"\x00[handler]\npush_in_http_max_headers_size=10000\npush_in_max_body_size=5\n"
    b"[proxy]\nauto_cross_origin=yes\nmax_open_requests=-1\n[gripd]\nfd_reserve=0\n",
]

TOKENS = [
    b"[global]\n",
    b"[runner]\n",
    b"[proxy]\n",
    b"[handler]\n",
    b"[gripd]\n",
    b"include=",
    b"{libdir}",
    b"{rundir}",
    b"{ipc_prefix}",
    b"port_offset=",
    b"http_port=",
    b"https_ports=",
    b"log_level=",
    b"push_in_http_port=",
    b"push_in_sub_spec=",
    b"stats_format=",
    b"client_buffer_size=",
    b"client_header_timeout=",
    b"origin_response_head_max=",
    b"slow_client_policy=",
    b"tcp://127.0.0.1:",
    b"ipc://",
    b"=",
    b";",
    b'"',
    b"\\",
    b",",
    b"\n",
    b"99999999999999999999",
    b"1e400",
]

_INCLUDE_SPLIT = b"\x00\x00"


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    main, _, include = rest.partition(_INCLUDE_SPLIT)
    inc_text = include.decode("utf-8", "replace")

    def read_file(path: str) -> str:
        if not include:
            raise OSError(path)
        return inc_text

    try:
        cfg = load_config(
            main.decode("utf-8", "replace"),
            path=None if flags & 2 else "/etc/pushpin/pushpin.conf",
            read_file=read_file,
            port_offset_override=10 if flags & 1 else None,
        )
    except ConfigError as e:
        assert str(e)
        return
    assert isinstance(cfg, Config)
    assert cfg.client_buffer_size >= 1 and cfg.client_maxconn >= 1
    assert all(0 <= p.port <= 65535 for p in cfg.http_port)

"""Regression tests for what fuzzing found in the parsers (see docs/fuzzing.md).

Python's ``int()`` refuses strings of more than 4300 digits (``ValueError``) and, like ``re``'s
``\\d`` and ``str.isdigit()``, accepts non-ASCII digits. Each parser below turned such input
into an exception other than its documented one, or accepted digits Pushpin's Qt code rejects.
"""

from __future__ import annotations

import base64
import json
import math

import pytest

from gripd.core import qtcompat, tnetstring
from gripd.core.config import load_config, parse_listen_list, parse_log_level
from gripd.core.errors import ConfigError, InstructError
from gripd.core.instruct import parse_instruct
from gripd.core.sig import SigningKey, encode_token, validate_token
from gripd.core.wscontrol import KeepAlive, parse_control_message

BIG = "9" * 5000  # past Python's int() digit limit
ARABIC_3 = "\u0663"  # ARABIC-INDIC DIGIT THREE: isdigit() and int() accept it


def _conf(text: str) -> object:
    def no_file(p: str) -> str:
        raise OSError(p)

    return load_config(text, path="/etc/pushpin/pushpin.conf", read_file=no_file)


# -- qtcompat (Qt QByteArray::toInt / QVariant::toInt / QUrl port) ------------------------------


@pytest.mark.parametrize("text", [BIG, "-" + BIG, " 0" + BIG + " ", "0" * 5000])
def test_qt_to_int_huge_is_not_ok(text: str) -> None:
    # Qt: out of int32 -> not ok. Leading zeros only: 0.
    expected = 0 if set(text.strip()) == {"0"} else None
    assert qtcompat.to_int(text) == expected


def test_qt_to_int_leading_zeros_keep_value() -> None:
    assert qtcompat.to_int("0" * 5000 + "42") == 42


def test_qt_variant_to_int_huge_string_is_zero() -> None:
    assert qtcompat.variant_to_int(BIG) == 0
    assert qtcompat.variant_to_int("0" * 5000 + "7") == 7


def test_qt_url_valid_huge_port_is_invalid() -> None:
    assert qtcompat.url_valid("http://example.com:" + BIG + "/") is False
    assert qtcompat.url_valid("http://example.com:00080/") is True


# -- tnetstring (F31): the pure codec agrees with the C extension --------------------------------


def test_tnetstring_huge_int_is_a_tnetstring_error() -> None:
    payload = b"%d:%s#" % (len(BIG), BIG.encode())
    with pytest.raises(tnetstring.TnetstringError):
        tnetstring.py_loads(payload)
    with pytest.raises(tnetstring.TnetstringError):
        tnetstring.loads(payload)


# -- pushpin.conf (F2-F5): a ConfigError, never a ValueError ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"[runner]\nclient_buffer_size={BIG}\n",
        f"[global]\nport_offset={BIG}\n",
        f"[runner]\nhttp_port={BIG}\n",
        f"[runner]\nlog_level=condure:{BIG}\n",
        f"[runner]\nlog_level={BIG}\n",
        f"[runner]\nclient_maxconn={ARABIC_3}\n",
        f"[runner]\nhttp_port={ARABIC_3}\n",
        f"[runner]\nlog_level=condure:{ARABIC_3}\n",
        f"[gripd]\nclient_header_timeout={ARABIC_3}\n",
        "[gripd]\nclient_header_timeout=1e999\n",
    ],
)
def test_config_bad_numbers_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        _conf(text)


def test_listen_and_log_level_reject_non_ascii_digits() -> None:
    with pytest.raises(ConfigError):
        parse_listen_list(ARABIC_3)
    with pytest.raises(ConfigError):
        parse_log_level("a:" + ARABIC_3)


def test_tcp_port_offset_leaves_huge_ports_alone() -> None:
    spec = "tcp://127.0.0.1:" + BIG
    cfg = load_config(
        f"[global]\nport_offset=1\n[handler]\npush_in_spec={spec}\n",
        path=None,
        read_file=lambda p: "",
    )
    assert cfg.push_in_spec == spec  # not shifted, and no ValueError


def test_config_float_still_accepts_plain_numbers() -> None:
    cfg = _conf("[gripd]\nclient_header_timeout=2.5\n")
    assert math.isclose(cfg.client_header_timeout, 2.5)  # type: ignore[attr-defined]


# -- through the parsers that use qtcompat (F20 Grip-Timeout, F39 keep-alive timeout) ----------


def test_grip_timeout_huge_is_an_instruct_error() -> None:
    with pytest.raises(InstructError, match="failed to parse Grip-Timeout"):
        parse_instruct(200, "OK", [("Grip-Hold", "response"), ("Grip-Timeout", BIG)], b"")


def test_ws_control_huge_string_timeout_is_the_default() -> None:
    doc = b'{"type":"keep-alive","content":"ka","timeout":"' + BIG.encode() + b'"}'
    msg = parse_control_message(doc)
    assert isinstance(msg, KeepAlive) and msg.timeout == 55  # toInt gives 0: the default


@pytest.mark.parametrize(
    "payload",
    [
        b"8:1:1#1:x,}",  # an integer key
        b"14:1:a,7:1:1#0:~}}",  # an integer key in a nested dict
        b"7:0:~1:x,}",  # a null key
        b"10:0:]0:]1:x,]",  # fine: lists hold anything
    ],
)
def test_tnetstring_codecs_agree_on_dict_keys(payload: bytes) -> None:
    """Dict keys must be strings: the C extension took any type, the pure codec none."""
    try:
        expected: object = tnetstring.py_loads(payload)
    except tnetstring.TnetstringError:
        with pytest.raises(tnetstring.TnetstringError):
            tnetstring.loads(payload)
        return
    assert tnetstring.loads(payload) == expected


# -- Grip-Sig (F15 upstream_key): validate_token answers a bool, whatever the token ------------


_KEY = SigningKey("HS256", secret=b"fuzz")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_grip_sig_deeply_nested_header_is_invalid() -> None:
    # Not signed: any client can send it. json.loads raised RecursionError before the check.
    token = _b64(b"[" * 5000) + "." + _b64(b"{}") + "." + _b64(b"x" * 32)
    assert validate_token(token, _KEY, 1000.0) is False


def test_grip_sig_deeply_nested_claims_are_invalid() -> None:
    assert validate_token(encode_token(b"[" * 5000, _KEY), _KEY, 1000.0) is False


@pytest.mark.parametrize("exp", [BIG, ARABIC_3 * 5])
def test_grip_sig_exp_qt_would_not_convert_is_invalid(exp: str) -> None:
    # Qt's toInt fails on both (too large; not ASCII digits): exp 0, so the token is invalid.
    claims = json.dumps({"exp": exp}, ensure_ascii=False).encode()
    assert validate_token(encode_token(claims, _KEY), _KEY, 1000.0) is False


def test_grip_sig_numeric_string_exp_still_works() -> None:
    claims = b'{"exp":" 2000 "}'
    assert validate_token(encode_token(claims, _KEY), _KEY, 1000.0) is True

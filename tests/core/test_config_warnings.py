"""pushpin.conf lines that are dropped, or read leniently as Pushpin's INI reader (QSettings)
does, each come back as a ``file:line: ...`` warning on ``Config.warnings``.

Checked against Pushpin 1.36: a ``[runner`` header without its ``]`` still names the section
(its ``http_port`` is the one Pushpin listens on).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gripd.core.config import DEFAULT_PUSHPIN_CONF, INTERNAL_CONF, Listen, load_config

PATH = "/etc/gripd/pushpin.conf"


def no_file(path: str) -> str:
    raise OSError(path)


def files(mapping: dict[str, str]) -> Callable[[str], str]:
    def read(path: str) -> str:
        if path not in mapping:
            raise OSError(path)
        return mapping[path]

    return read


def test_header_without_closing_bracket_is_read_as_that_section() -> None:
    text = "[global]\nport_offset=0\n[runner\nhttp_port=8123\n[proxy]\nsig_iss=me\n"
    cfg = load_config(text, path=PATH, read_file=no_file)
    assert cfg.http_port == [Listen("0.0.0.0", 8123)]  # as Pushpin: not the previous section
    assert cfg.extra["global"] == {"port_offset": "0"}
    assert cfg.sig_iss == "me"  # the next well-formed header still switches sections
    assert cfg.warnings == (f"{PATH}:3: '[runner' has no closing ']': read as [runner]",)


def test_header_without_bracket_ends_at_a_comment() -> None:
    cfg = load_config("[runner ; broken\nhttp_port=81\n", path=PATH, read_file=no_file)
    assert cfg.http_port == [Listen("0.0.0.0", 81)]
    assert cfg.warnings == (f"{PATH}:1: '[runner' has no closing ']': read as [runner]",)


def test_line_without_equals_is_dropped_with_a_warning() -> None:
    text = "[proxy]\nsig_iss=a\njust some words\nsig_key=k\n"
    cfg = load_config(text, path=PATH, read_file=no_file)
    assert (cfg.sig_iss, cfg.sig_key) == ("a", "k")
    assert "just some words" not in str(cfg.extra)
    assert cfg.warnings == (
        f"{PATH}:3: 'just some words' is neither key=value nor [section]: ignored",
    )


def test_value_without_key_is_dropped_with_a_warning() -> None:
    cfg = load_config("[proxy]\n = orphan\n", path=PATH, read_file=no_file)
    assert cfg.extra.get("proxy", {}) == {}
    assert cfg.warnings == (f"{PATH}:2: '= orphan' has no key before '=': ignored",)


@pytest.mark.parametrize("header", ["[]", "[ ]", "["])
def test_empty_section_name_hides_the_keys_below_it(header: str) -> None:
    # Before: the keys stayed in the previous section; Pushpin does not read them there.
    text = f"[runner]\nhttp_port=81\n{header}\nhttp_port=82\n"
    cfg = load_config(text, path=PATH, read_file=no_file)
    assert cfg.http_port == [Listen("0.0.0.0", 81)]
    assert cfg.warnings == (
        f"{PATH}:3: {header!r} names no section: the keys below it are not read",
    )


def test_comments_blank_lines_and_good_lines_give_no_warning() -> None:
    text = "; a comment\n# another\n\n   \n[proxy]\nsig_iss = x ; trailing\n[handler] extra\n"
    assert load_config(text, path=PATH, read_file=no_file).warnings == ()


def test_shipped_files_give_no_warning() -> None:
    cfg = load_config(
        DEFAULT_PUSHPIN_CONF,
        path=PATH,
        read_file=files({"/usr/lib/pushpin/internal.conf": INTERNAL_CONF}),
    )
    assert cfg.warnings == ()


def test_warnings_name_the_include_file_and_line() -> None:
    inc = "/etc/gripd/inc.conf"
    main = "[global]\ninclude=inc.conf\nstray\n"
    cfg = load_config(main, path=PATH, read_file=files({inc: "[handler\nmessage_rate=7\n"}))
    assert cfg.message_rate == 7
    assert cfg.warnings == (
        f"{PATH}:3: 'stray' is neither key=value nor [section]: ignored",
        f"{inc}:1: '[handler' has no closing ']': read as [handler]",
    )


def test_text_without_a_file_is_named_config() -> None:
    cfg = load_config("oops\n", path=None, read_file=no_file)
    assert cfg.warnings == ("<config>:1: 'oops' is neither key=value nor [section]: ignored",)


def test_warnings_do_not_change_equality() -> None:
    a = load_config("[proxy]\nsig_iss=x\n", path=PATH, read_file=no_file)
    b = load_config("[proxy]\nsig_iss=x\nnoise\n", path=PATH, read_file=no_file)
    assert b.warnings and a == b

"""``RouteWarning.error`` (F6): which skipped lines make a live reload keep the previous table."""

from __future__ import annotations

import pytest

from gripd.core.routes import RouteTable


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('* test,path_beg="/x', True),  # unterminated quote
        ("bad.example", True),  # no target
        ("*,proto=ftp test", True),  # bad condition value
        ("id=x test", False),  # id-only route: valid
        ("* test,frobnicate", False),  # unknown option: ignored, route kept
    ],
)
def test_error_marks_unparsable_lines(line: str, error: bool) -> None:
    _table, warnings = RouteTable.parse(line + "\n", "r")
    assert any(w.error for w in warnings) is error


def test_duplicate_condition_is_not_an_error() -> None:
    table, warnings = RouteTable.parse("* test\n* test\n", "r")
    assert len(table) == 1
    assert [str(w) for w in warnings] == ["r:2: skipping duplicate condition"]
    assert not warnings[0].error


def test_condition_without_domain_or_id_is_an_error() -> None:
    _table, warnings = RouteTable.parse(",path_beg=/x test\n", "r")
    assert any(w.error and w.line == 1 for w in warnings)

"""TickLog: info lines written in batches, each with the time it was queued."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Iterator

from gripd.io.observe import ticklog
from gripd.io.observe.ticklog import TickLog


class PushpinLines(logging.Formatter):
    """Declares Pushpin's line shape, as gripd's text formatter does: TickLog writes it."""

    pushpin_lines = True


@contextlib.contextmanager
def only_stream(formatter: logging.Formatter | None = None) -> Iterator[io.StringIO]:
    """The root logger writes to one plain stream only (inside the test body: pytest adds its
    own capture handler around it)."""
    out = io.StringIO()
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter or PushpinLines())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


async def test_lines_wait_for_the_delay_then_go_in_one_write() -> None:
    with only_stream() as stream:
        await _wait_then_write(stream)


async def _wait_then_write(stream: io.StringIO) -> None:
    t = TickLog("gripd.test", asyncio.get_running_loop())
    t.info("one")
    await asyncio.sleep(0.02)
    t.info("two")
    assert stream.getvalue() == ""  # nothing written yet
    await asyncio.sleep(ticklog.FLUSH_DELAY + 0.05)
    text = stream.getvalue()
    assert text.startswith("[INFO] ") and text.endswith("] two\n") and text.count("\n") == 2
    lines = text.splitlines()
    assert [line.split("] ", 2)[-1] for line in lines] == ["one", "two"]
    stamps = [re.search(r"\.(\d{3}) \[", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert stamps[0] != stamps[1]  # each line keeps the time it was queued (20 ms apart)


async def test_many_lines_are_written_at_once() -> None:
    with only_stream() as stream:
        _many(stream)


def _many(stream: io.StringIO) -> None:
    t = TickLog("gripd.test", asyncio.get_running_loop())
    for i in range(ticklog.FLUSH_LINES):
        t.info(f"line {i}")
    assert len(stream.getvalue().splitlines()) == ticklog.FLUSH_LINES  # no wait at the cap
    t.info("after")
    t.flush()  # what stop() does
    assert stream.getvalue().splitlines()[-1].endswith("[gripd.test] after")


async def test_other_formatters_get_every_line() -> None:
    """A formatter that does not declare Pushpin's line shape (JSON logs) formats each line
    itself, with the logger's name and the time the line was queued."""
    with only_stream(logging.Formatter("%(name)s|%(message)s")) as stream:
        t = TickLog("gripd.test", asyncio.get_running_loop())
        t.info("one")
        t.flush()
        assert stream.getvalue() == "gripd.test|one\n"

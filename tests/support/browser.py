"""A real headless Chromium for end-to-end tests, driven by Playwright's async API.

The browser is Debian's ``chromium`` package (``scripts/test.sh`` installs it); Playwright comes
from PyPI and never downloads a browser of its own: it launches ``CHROMIUM`` by path. Tests run
as root, where Chromium's sandbox cannot start, hence ``--no-sandbox``.

Usage, inside an async test::

    async with browser_page() as page:
        await page.goto(server.base_url() + "/")

``browser_page()`` skips the test when Chromium or Playwright is missing on a developer
machine, and fails it instead when ``CI=true`` (CI installs both, so a missing one is a broken
install step, not a reason to pass).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Page

#: The browser to launch: ``GRIPD_TEST_CHROMIUM`` if set, else Debian's ``chromium`` on PATH.
CHROMIUM: str | None = os.environ.get("GRIPD_TEST_CHROMIUM") or shutil.which("chromium")

#: Root cannot use Chromium's sandbox; a small /dev/shm (containers) would crash renderers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]

#: Bound on launching the browser and on each Playwright action (milliseconds).
LAUNCH_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 10_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing() -> str | None:
    """Why no browser test can run here (what is not installed), or None when all is there."""
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (pip install -e '.[test]')"
    if CHROMIUM is None or not os.access(CHROMIUM, os.X_OK):
        return "Chromium is not installed (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test when the browser is missing, or fail it when ``CI=true``."""
    why = missing()
    if why is None:
        return
    if _in_ci():
        pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)


@contextlib.asynccontextmanager
async def browser_page(extra_args: tuple[str, ...] = ()) -> AsyncIterator[Page]:
    """A fresh page in a newly launched headless Chromium, closed (with the browser) on exit.
    ``extra_args``: more Chromium switches (say, to trust a test certificate).

    The page's console messages and uncaught errors are recorded: :func:`page_log` returns
    them, for failure messages."""
    require_browser()
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            context = await browser.new_context()
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            page = await context.new_page()
            log: list[str] = []
            _LOGS[id(page)] = log
            page.on("console", lambda m: log.append(f"console.{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
            try:
                yield page
            finally:
                _LOGS.pop(id(page), None)
                await context.close()
        finally:
            await browser.close()


_LOGS: dict[int, list[str]] = {}


def page_log(page: Page) -> list[str]:
    """The console messages and uncaught errors ``page`` has produced so far."""
    return list(_LOGS.get(id(page), []))

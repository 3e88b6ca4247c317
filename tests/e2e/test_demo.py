"""``gripd demo`` end to end: the command, its page in a real browser, and its errors.

``python -m gripd.demo --port P`` runs as a subprocess (gripd, the demo backend and, with
``--instances 2``, a redis-server); the test reads the URL it prints, opens it in headless
Chromium, types a message into the page's box and clicks Send, and expects the message in each
of the four transport panes (SSE, HTTP streaming, long-poll, WebSocket). With two instances the
second instance's panes live in an iframe served by that instance, and the backend publishes into
the first one only: the message reaching them has crossed the Redis bus.

Before the real message, "probe" messages are sent (through the same backend endpoint) until
every pane has shown one: then every transport is subscribed, and the long-poll, which re-polls
with the last id it saw, cannot miss a message published between two polls (gripd's history).

Ctrl-C is SIGINT to the demo's PID: it must exit 0 and leave none of the processes it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import TIME_SCALE
from tests.support.browser import browser_page, page_log, require_browser
from tests.support.procs import REPO_ROOT, free_ports, pid_alive, process_tree
from tests.support.redis import redis_server_path

if TYPE_CHECKING:  # imported lazily: without Playwright the browser tests skip (or fail in CI)
    from playwright.async_api import Frame, Page

TRANSPORTS = ("sse", "stream", "poll", "ws")

#: Bounds: the demo's start (it waits for gripd and Redis itself), each wait on the page, the stop.
START_WAIT = 60.0 * TIME_SCALE
WAIT = 15.0 * TIME_SCALE
STOP_WAIT = 30.0 * TIME_SCALE

#: What each pane shows: transport -> the texts of its messages, oldest first.
PANE_TEXTS_JS = """() => Object.fromEntries([...document.querySelectorAll('.pane')].map(
    p => [p.dataset.transport, [...p.querySelectorAll('li .text')].map(t => t.textContent)]))"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Demo:
    """One ``python -m gripd.demo`` process, its stderr in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.stderr_path = tmp_path / f"demo-stderr-{uuid.uuid4().hex[:6]}.log"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gripd.demo", *args],
                cwd=tmp_path,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.pids: set[int] = set()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def read_url(self) -> str:
        """The URL the demo prints, within START_WAIT (fails with its stderr otherwise)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_WAIT
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=0.2):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline().decode().strip()
                if line.startswith("http://"):
                    self.pids.update(process_tree(self.proc.pid))
                    return line
                if not line and self.proc.poll() is not None:
                    break
        pytest.fail(f"gripd demo printed no URL (exit {self.proc.poll()}):\n{self.stderr()}")

    def interrupt(self) -> int | None:
        """Ctrl-C: SIGINT to the demo; its exit status (None if it had to be killed). Every
        process it started is checked gone, then anything left is killed."""
        self.pids.update(process_tree(self.proc.pid))
        self.proc.send_signal(signal.SIGINT)
        code: int | None
        try:
            code = self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + STOP_WAIT
        while any(pid_alive(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = sorted(p for p in self.pids if pid_alive(p))
        self.kill()
        assert not left, f"processes the demo started are still running: {left}"
        return code

    def kill(self) -> None:
        """SIGKILL whatever of the demo's processes is left (only PIDs seen in its tree)."""
        if self.proc.poll() is None:
            self.pids.update(process_tree(self.proc.pid))
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def pane_texts(frame: Frame) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = await frame.evaluate(PANE_TEXTS_JS)
    return texts


async def describe(page: Page, demo: Demo) -> str:
    """The panes of every frame, the page log and the demo's stderr: for failure messages."""
    parts = []
    for frame in page.frames:
        try:
            parts.append(f"{frame.url}: {await pane_texts(frame)}")
        except Exception as e:  # a frame that broke is itself the news
            parts.append(f"{frame.url}: <unreadable: {e}>")
    return "\n".join([*parts, f"page log: {page_log(page)}", f"demo stderr:\n{demo.stderr()}"])


async def until_every_pane(
    page: Page, demo: Demo, frames: list[Frame], what: str, test: str
) -> None:
    """Wait until every transport pane of every frame has a message for which ``test`` (a JS
    ``text => bool``) holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    expr = f"""() => {{ const ok = {test};
        return [...document.querySelectorAll('.pane')].filter(
            p => [...p.querySelectorAll('li .text')].some(t => ok(t.textContent))).length; }}"""
    while True:
        counts = [await f.evaluate(expr) for f in frames]
        if all(c == len(TRANSPORTS) for c in counts):
            return
        if loop.time() > deadline:
            pytest.fail(
                f"not every pane shows {what} (panes with it: {counts})\n"
                f"{await describe(page, demo)}"
            )
        await asyncio.sleep(0.1)


async def probe_until_live(page: Page, demo: Demo, frames: list[Frame]) -> None:
    """Send probe messages through the backend until every pane has shown one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    n = 0
    while loop.time() < deadline:
        status = await page.evaluate(
            "t => fetch('/api/send', {method: 'POST', body: t}).then(r => r.status)", f"probe {n}"
        )
        assert status == 200, await describe(page, demo)
        n += 1
        for _ in range(5):
            counts = [
                sum(
                    any(t.startswith("probe ") for t in texts)
                    for texts in (await pane_texts(f)).values()
                )
                for f in frames
            ]
            if all(c == len(TRANSPORTS) for c in counts):
                return
            await asyncio.sleep(0.1)
    pytest.fail(f"not every pane received a probe\n{await describe(page, demo)}")


async def send_through_box(page: Page, text: str) -> None:
    """Type ``text`` into the page's box and click Send."""
    await page.fill("#message", text)
    await page.click("#send")


async def until_status(page: Page, demo: Demo, words: str) -> str:
    """Wait for the page's send status to be an error containing ``words``; returns its text."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(
            "w => { const s = document.getElementById('send-status');"
            " return s.classList.contains('error') && s.textContent.includes(w); }",
            arg=words,
            polling=50,
            timeout=WAIT * 1000,
        )
    except PlaywrightTimeout:
        status = await page.text_content("#send-status")
        pytest.fail(
            f"no error with {words!r} on the page (status: {status!r})\n"
            f"{await describe(page, demo)}"
        )
    return str(await page.text_content("#send-status"))


async def open_demo(page: Page, url: str, instances: int) -> list[Frame]:
    """Load the page; returns its frames with panes (the page, then one iframe per other
    instance), once each has its four panes."""
    await page.set_viewport_size({"width": 1000, "height": 700})  # as docs/demo.png
    await page.goto(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        frames = [page.main_frame] + [f for f in page.frames if f.url.endswith("/?panes")]
        if len(frames) == instances:
            counts = [await f.evaluate("document.querySelectorAll('.pane').length") for f in frames]
            if counts == [len(TRANSPORTS)] * instances:
                return frames
        if loop.time() > deadline:
            pytest.fail(f"the page did not show {instances} set(s) of panes: {page_log(page)}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(150 * TIME_SCALE)
def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        data: bytes = resp.read()
        return data


async def test_demo_message_reaches_all_four_panes(tmp_path: Path) -> None:
    require_browser()
    port = free_ports(1)[0]
    demo = Demo(tmp_path, "--port", str(port))
    try:
        url = await asyncio.to_thread(demo.read_url)
        assert url == f"http://127.0.0.1:{port}/"
        async with browser_page() as page:
            frames = await open_demo(page, url, 1)
            await probe_until_live(page, demo, frames)

            message = f"hello from the test {uuid.uuid4().hex[:8]}"
            await send_through_box(page, message)
            await until_every_pane(page, demo, frames, repr(message), f"t => t === {message!r}")
            assert set((await pane_texts(page.main_frame)).keys()) == set(TRANSPORTS)
            assert await page.input_value("#message") == ""  # sent: the box is cleared
            await page.screenshot(path=str(tmp_path / "demo.png"))

            # Bad input: a clear message on the page, nothing published.
            await send_through_box(page, "")
            assert "empty" in await until_status(page, demo, "empty")
            await send_through_box(page, "x" * 5000)
            shown = await until_status(page, demo, "too long")
            assert "5000 bytes" in shown and "4096" in shown, shown
            await page.screenshot(path=str(tmp_path / "demo-error.png"))
            # A message sent after them still arrives, and neither bad one ever did.
            after = f"after the errors {uuid.uuid4().hex[:8]}"
            await send_through_box(page, after)
            await until_every_pane(page, demo, frames, repr(after), f"t => t === {after!r}")
            for transport, texts in (await pane_texts(page.main_frame)).items():
                assert all(t.strip() and len(t) <= 4096 for t in texts), transport
            # The first instance's live status page, named on stderr, counts what was sent.
            found = re.search(
                r"live status page: (http://127\.0\.0\.1:\d+)/status\.html", demo.stderr()
            )
            assert found, demo.stderr()
            status = json.loads(await asyncio.to_thread(_read, found.group(1) + "/status"))
            assert status["totals"]["published"] >= 4, status  # a message: one item per format
            assert status["totals"]["delivered"] >= 4, status
        assert await asyncio.to_thread(demo.interrupt) == 0, demo.stderr()
    finally:
        await asyncio.to_thread(demo.kill)


@pytest.mark.timeout(150 * TIME_SCALE)
async def test_demo_two_instances_on_redis(tmp_path: Path) -> None:
    redis_server_path()  # skips without redis-server (fails under CI=true)
    require_browser()
    port = free_ports(1)[0]
    demo = Demo(tmp_path, "--port", str(port), "--instances", "2")
    try:
        url = await asyncio.to_thread(demo.read_url)
        assert url == f"http://127.0.0.1:{port}/"
        assert any("redis-server" in _cmdline(p) for p in demo.pids), demo.pids
        async with browser_page() as page:
            frames = await open_demo(page, url, 2)
            other_port = urllib.parse.urlsplit(frames[1].url).port
            assert other_port is not None and other_port != port, frames[1].url
            for frame, name in zip(frames, ("gripd 1", "gripd 2"), strict=True):
                instances = await frame.evaluate(
                    "[...document.querySelectorAll('.pane')].map(p => p.dataset.instance)"
                )
                assert instances == [name] * len(TRANSPORTS)
            await probe_until_live(page, demo, frames)

            message = f"across instances {uuid.uuid4().hex[:8]}"
            await send_through_box(page, message)
            # The backend publishes into gripd 1 only: gripd 2's panes got it through Redis.
            await until_every_pane(page, demo, frames, repr(message), f"t => t === {message!r}")
            await page.screenshot(path=str(tmp_path / "demo-two-instances.png"))
        assert await asyncio.to_thread(demo.interrupt) == 0, demo.stderr()
    finally:
        await asyncio.to_thread(demo.kill)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_demo_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "gripd.demo", "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_WAIT,
        )
    assert res.returncode == 2, res
    assert f"port {port} is already in use" in res.stderr, res.stderr
    assert "--port" in res.stderr
    assert res.stdout == ""  # no URL


def test_demo_two_instances_without_redis_is_a_clear_error(tmp_path: Path) -> None:
    env = _env()
    env["PATH"] = str(tmp_path / "empty")  # no redis-server on it
    res = subprocess.run(
        [sys.executable, "-m", "gripd.demo", "--port", str(free_ports(1)[0]), "--instances", "2"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_WAIT,
    )
    assert res.returncode == 2, res
    assert "--instances 2 needs redis-server" in res.stderr, res.stderr
    assert res.stdout == ""


def test_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    for args in (["--instances", "3"], ["--port", "0"], ["--port", "http"]):
        res = subprocess.run(
            [sys.executable, "-m", "gripd.demo", *args],
            cwd=tmp_path,
            env=_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_WAIT,
        )
        assert res.returncode == 2, (args, res)
        assert "usage: gripd demo" in res.stderr, res.stderr


def test_demo_start_retries_a_port_taken_meanwhile_and_names_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port picked for gripd and taken before gripd listens (here: on purpose) makes the
    demo start again with other ports; the page's own port taken that way is the clear error."""
    from gripd.demo import run

    real = run.free_ports
    calls: list[int] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]

        def first_taken(n: int, avoid: int) -> list[int]:
            calls.append(n)
            # The control port is taken from the end of the list.
            return [*real(n - 1, avoid), taken] if len(calls) == 1 else real(n, avoid)

        monkeypatch.setattr(run, "free_ports", first_taken)
        demo, url = run.start_demo(tmp_path / "a", free_ports(1)[0], 1, None)
        try:
            assert len(calls) == 2  # the first start failed on the taken control port
            assert url.startswith("http://127.0.0.1:")
        finally:
            demo.stop()

        with pytest.raises(run.DemoError) as err:
            run.start_demo(tmp_path / "b", taken, 1, None)
        assert err.value.code == 2
        assert f"port {taken} is already in use" in str(err.value)

"""A real Chromium opens 20 ``EventSource`` streams to one host: over HTTP/2 (gripd's TLS
listener, ALPN ``h2``) all 20 connect and each gets the publish; over HTTP/1.1 the browser's
six-connections-per-host limit lets only six connect.

The origin answers ``/sse`` with a GRIP stream hold (F20, F24) and serves the page itself, so
the page and its streams come through gripd from one origin. The certificate is made by the test
(trustme); Chromium is told to accept it with ``--ignore-certificate-errors``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import TIME_SCALE
from tests.support.browser import browser_page, page_log, require_browser
from tests.support.e2e import publish, stream_item
from tests.support.origin import Origin, Reply
from tests.support.procs import Server, free_ports, start_server
from tests.support.tlscerts import install_default_cert, make_ca

STREAMS = 20

PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>h2</title><link rel="icon" href="data:,">
</head><body>
<script>
window.opens = 0;
window.got = {{}};
for (let i = 0; i < {STREAMS}; i++) {{
  const es = new EventSource('/sse?i=' + i);
  es.onopen = () => {{ window.opens += 1; }};
  es.onmessage = (e) => {{ (window.got[i] = window.got[i] || []).push(e.data); }};
}}
</script>
</body></html>
"""

HOLD = [
    ("Grip-Hold", "stream"),
    ("Grip-Channel", "many"),
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
]

WAIT = 10.0 * TIME_SCALE


async def _wait_js(page: object, expr: str, within: float) -> object:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    value: object = None
    while loop.time() < end:
        value = await page.evaluate(expr)  # type: ignore[attr-defined]
        if value:
            return value
        await asyncio.sleep(0.1)
    return value


async def _start(tmp_path: Path, origin: Origin) -> tuple[Server, int]:
    ca = make_ca()
    (port,) = free_ports(1)
    workdir = tmp_path / "gripd"
    install_default_cert(ca, workdir, port)
    server = await asyncio.to_thread(
        start_server,
        "gripd",
        workdir,
        [f"* 127.0.0.1:{origin.port}"],
        conf={"runner": {"https_ports": f"127.0.0.1:{port}"}},
    )
    return server, port


@pytest.mark.parametrize("proto", ["h2", "http/1.1"])
async def test_twenty_event_sources(tmp_path: Path, origin: Origin, proto: str) -> None:
    require_browser()
    origin.route("GET", "/", Reply(200, [("Content-Type", "text/html")], PAGE))
    origin.route("GET", "/sse", Reply(200, HOLD, ""))
    server, https_port = await _start(tmp_path, origin)
    try:
        base = (
            f"https://localhost:{https_port}"
            if proto == "h2"
            else f"http://127.0.0.1:{server.http_port}"
        )
        async with browser_page(("--ignore-certificate-errors",)) as page:
            resp = await page.goto(base + "/")
            assert resp is not None and resp.ok
            expected = STREAMS if proto == "h2" else 6
            opens = await _wait_js(page, f"window.opens >= {expected}", WAIT)
            assert opens, page_log(page)
            await asyncio.sleep(0.5 * TIME_SCALE)  # let any further stream open (none should)
            loop = asyncio.get_running_loop()
            end = loop.time() + WAIT
            n = 0
            while loop.time() < end:
                n += 1
                await publish(server, [stream_item("many", f"data: hello {n}\n\n")])
                count = await page.evaluate("Object.keys(window.got).length")
                if count >= expected:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5 * TIME_SCALE)
            opens_now = await page.evaluate("window.opens")
            got = await page.evaluate("window.got")
            assert opens_now == expected, page_log(page)
            assert len(got) == expected
            for msgs in got.values():
                assert msgs[-1] == f"data: hello {n}".removeprefix("data: ")
            if proto == "h2":
                proto_seen = await page.evaluate(
                    "performance.getEntriesByType('navigation')[0].nextHopProtocol"
                )
                assert proto_seen == "h2"
    finally:
        await asyncio.to_thread(server.stop)

"""``[gripd] log_format = json``: every line gripd writes is one JSON object, from the hub and
from its workers alike, on stderr or in ``--logfile``; the slow-client warning carries its
connection, route and peer as fields. A bad value stops gripd with file:line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from gripd.cli import JsonFormatter
from tests.conftest import TIME_SCALE, StartFn
from tests.support.e2e import get, publish
from tests.support.procs import NO_RATE_LIMIT, run_gripd_expecting_exit
from tests.support.rawhttp import raw_request

WAIT = 15.0 * TIME_SCALE
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEVELS = {"ERR", "WARN", "INFO", "DEBUG"}
BIG = {"channel": "big", "formats": {"http-stream": {"content": "x" * 200_000}}}


def parse(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object with the four fields every line has."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(obj, dict), line
        assert TIME_RE.fullmatch(obj["time"]), line
        assert obj["level"] in LEVELS, line
        assert isinstance(obj["event"], str) and obj["event"].startswith("gripd"), line
        assert isinstance(obj["msg"], str), line
        out.append(obj)
    return out


def record(msg: str, *args: object, **kw: Any) -> logging.LogRecord:
    return logging.LogRecord("gripd.test", logging.WARNING, __file__, 1, msg, args, None, **kw)


def test_formatter_fields_extras_and_exceptions() -> None:
    f = JsonFormatter()
    r = record("a %s\nb", "x")
    r.__dict__.update(conn="7", route="r1", peer="::1", dropped=3, level="spoof", obj=object())
    line = f.format(r)
    assert "\n" not in line and line.isascii()
    obj = json.loads(line)
    assert obj["level"] == "WARN" and obj["event"] == "gripd.test" and obj["msg"] == "a x\nb"
    assert (obj["conn"], obj["route"], obj["peer"], obj["dropped"]) == ("7", "r1", "::1", 3)
    assert obj["obj"].startswith("<object object")  # not JSON: written as text
    assert TIME_RE.fullmatch(obj["time"])
    assert list(obj)[:4] == ["time", "level", "event", "msg"]
    try:
        raise ValueError("boom é")
    except ValueError:
        err = record("failed")
        err.levelno, err.levelname, err.exc_info = logging.ERROR, "ERROR", sys.exc_info()
    obj = json.loads(f.format(err))
    assert obj["level"] == "ERR" and obj["exc"].endswith("ValueError: boom é")
    for name, want in (("DEBUG", "DEBUG"), ("INFO", "INFO"), ("CRITICAL", "ERR")):
        r = record("m")
        r.levelname = name
        assert json.loads(f.format(r))["level"] == want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers, logfile", [(2, False), (1, True)])
async def test_json_lines_from_hub_and_workers(
    start: StartFn, tmp_path: Path, workers: int, logfile: bool
) -> None:
    conf = {**NO_RATE_LIMIT, "gripd": {"workers": str(workers), "log_format": "json"}}
    log_path = tmp_path / "gripd-json.log"
    args = ["--logfile", str(log_path)] if logfile else []
    s = await start("gripd", ["*,id=jr test"], conf=conf, extra_args=args)

    def text() -> str:
        return log_path.read_text() if logfile else s.log_text()

    loop = asyncio.get_running_loop()
    code, _, _ = await raw_request(s.http_port, get("/hello"), timeout=WAIT)
    assert code == 404  # the test target knows no /hello
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        slow.connect(("127.0.0.1", s.http_port))
        slow.sendall(get("/stream?channel=big"))
        deadline = loop.time() + WAIT
        while "channel=big" not in text():  # the subscribe line
            assert loop.time() < deadline, text()
            await asyncio.sleep(0.05)
        for _ in range(40):
            await publish(s, [BIG] * 4)
            if "publish queue at max, dropping" in text():
                break
        deadline = loop.time() + WAIT
        while "publish queue at max, dropping" not in text():
            assert loop.time() < deadline, text()
            await asyncio.sleep(0.1)
    finally:
        slow.close()
    assert s.stop() == 0
    lines = parse(text())
    if logfile:
        assert s.log_text() == ""  # nothing went to stderr or stdout
    msgs = [x["msg"] for x in lines]
    assert any(m.startswith("using configuration file ") for m in msgs), msgs
    # F53's request and subscribe lines, logged by the process serving the client.
    assert any(m.startswith("GET http://t/hello -> test route=jr code=404") for m in msgs), msgs
    assert any(m.startswith("subscribe http://t/stream?channel=big channel=big") for m in msgs)
    if workers > 1:
        assert any(m == f"started {workers} workers" for m in msgs), msgs
    (drop,) = [x for x in lines if x["msg"].startswith("publish queue at max, dropping")]
    assert drop["level"] == "WARN" and drop["event"] == "gripd.engine"
    assert (drop["route"], drop["peer"], drop["policy"], drop["dropped"]) == (
        "jr",
        "127.0.0.1",
        "drop",
        1,
    )
    assert drop["queued"] > 1_048_576
    assert drop["msg"] == (
        f"publish queue at max, dropping: conn={drop['conn']} route=jr peer=127.0.0.1 dropped=1"
    )


def test_bad_log_format_is_a_config_error(tmp_path: Path) -> None:
    res, text, path = run_gripd_expecting_exit(tmp_path, {"workers": "1", "log_format": "xml"})
    line = text.splitlines().index("log_format=xml") + 1
    assert res.returncode == 1
    want = f"gripd: {path}:{line}: [gripd] log_format: must be text or json (got 'xml')"
    assert res.stderr.strip() == want

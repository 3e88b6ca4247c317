"""``gripd publish`` (F51) end to end: run the module, check what it sends and prints.

The differential leg runs Pushpin's ``pushpin-publish`` with the same arguments against the same
capture server and requires identical requests (it is skipped when the binary is missing,
unless ``CI=true``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gripd.io.inputs.control_http import start_control_server
from tests.support.sinks import RecordingSink

ROOT = Path(__file__).resolve().parents[2]


class Capture:
    """A raw HTTP server that records each request and answers with ``response``."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nPublished\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        writer.write(self.response)
        await writer.drain()
        writer.close()


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, Capture]]:
    cap = Capture()
    srv = await asyncio.start_server(cap.handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", cap
    srv.close()
    await srv.wait_closed()


async def run(
    *argv: str, exe: list[str] | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    cmd = exe or [sys.executable, "-m", "gripd.publish_cli"]
    full_env = {k: v for k, v in os.environ.items() if k != "GRIP_URL"}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        *argv,
        cwd=ROOT,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def split(request: bytes) -> tuple[str, dict[str, str], bytes]:
    head, body = request.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return " ".join(lines[0].split(" ")[:2]), headers, body


async def test_publish_to_control_server() -> None:
    sink = RecordingSink()
    srv = await start_control_server(sink, "127.0.0.1", 0)
    spec = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        rc, out, err = await run(
            "--spec",
            spec,
            "--id",
            "2",
            "--prev-id",
            "1",
            "--sender",
            "me",
            "-H",
            "X-A: b",
            "-M",
            "k=v",
            "--no-seq",
            "--code",
            "201",
            "chan",
            "hello",
        )
        assert (rc, out, err) == (0, "Published\n", "")
        rc, out, _ = await run("chan", "--close", env={"GRIP_URL": spec})
        assert (rc, out) == (0, "Published\n")
    finally:
        srv.close()
        await srv.wait_closed()
    first, second = sink.items
    assert (first.channel, first.id, first.prev_id, first.no_seq) == ("chan", "2", "1", True)
    assert first.meta == {"sender": "me", "k": "v"}
    hr = first.http_response
    assert hr is not None and (hr.code, hr.headers, hr.body) == (201, [("X-A", "b")], b"hello\n")
    assert first.http_stream is not None and first.http_stream.content == b"hello\n"
    assert first.ws_message is not None and first.ws_message.content == b"hello"
    assert second.http_response is None
    assert second.http_stream is not None and second.http_stream.action == "close"
    assert second.ws_message is not None and second.ws_message.action == "close"


async def test_request_shape(capture: tuple[str, Capture], tmp_path: Path) -> None:
    spec, cap = capture
    blob = tmp_path / "blob"
    blob.write_bytes(b"ab\xffc")
    assert (await run("--spec", spec + "/base", "c", f"@{blob}"))[0] == 0
    assert (await run("--spec", spec, "--patch", "c", '[{"op":"add","path":"/a","value":1}]'))[
        0
    ] == 0
    line, headers, body = split(cap.requests[0])
    assert line == "POST /base/publish/"
    assert headers["content-type"] == "application/json"
    assert body == (
        b'{"items":[{"channel":"c","formats":{"http-response":{"body-bin":"YWL/Yw==","code":200},'
        b'"http-stream":{"content-bin":"YWL/Yw=="},"ws-message":{"content-bin":"YWL/Yw=="}}}]}'
    )
    assert json.loads(split(cap.requests[1])[2]) == {
        "items": [
            {
                "channel": "c",
                "formats": {
                    "http-response": {
                        "body-patch": [{"op": "add", "path": "/a", "value": 1}],
                        "code": 200,
                    }
                },
            }
        ]
    }


async def test_server_error_is_reported(capture: tuple[str, Capture]) -> None:
    spec, cap = capture
    cap.response = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 16\r\n\r\nInvalid format.\n"
    assert await run("--spec", spec, "c", "x") == (1, "", "Error: Invalid format.\n")
    cap.response = b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nok\n"
    assert await run("--spec", spec, "c", "x") == (1, "", "Error: ok\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["c"], "must specify content"),
        (["--code", "1000", "c", "x"], "code must be an integer between 0 and 999"),
        (["--code", "abc", "c", "x"], "failed to parse code: invalid digit found in string"),
        (
            ["--code", "70000", "c", "x"],
            "failed to parse code: number too large to fit in target type",
        ),
        (["--patch", "c", "{}"], "patch content must be a JSON array"),
        (["-u", "a:b", "c", "x"], "Authentication requires https"),
        (["-H", "bad", "c", "x"], 'header must be in the form "name: value"'),
        (["-M", "bad", "c", "x"], 'meta must be in the form "name=value"'),
        (
            ["c", "@/nonexistent/file"],
            "can't read file /nonexistent/file: No such file or directory (os error 2)",
        ),
        (["--spec", "http:nope", "c", "x"], "invalid URL"),
        (["--spec", "http://127.0.0.1:1", "c", "x"], "Connection refused (os error 111)"),
    ],
)
async def test_local_errors(argv: list[str], message: str) -> None:
    rc, out, err = await run(*argv)
    assert (rc, out, err) == (1, "", f"Error: {message}\n")


async def test_zmq_spec_is_refused_clearly() -> None:
    rc, out, err = await run("--spec", "tcp://127.0.0.1:5560", "c", "x")
    assert rc == 1 and out == ""
    assert err.startswith("Error: ZeroMQ publishing is not supported yet")


DIFF_ARGS = [
    ["chan", "hello"],
    [
        "--id",
        "i1",
        "--prev-id",
        "p0",
        "--sender",
        "me",
        "-H",
        "X-A:  b ",
        "-H",
        "Y: z",
        "-M",
        "k=v",
        "-M",
        "s= t",
        "--no-seq",
        "--code",
        "201",
        "chan",
        'h\u00e9"llo',
    ],
    ["--no-eol", "chan", "x"],
    ["--hint", "chan"],
    # clap's -M is greedy, so options go last for pushpin-publish
    ["--close", "chan", "-M", "a=b"],
    ["--patch", "chan", '[{"op":"replace","path":"/x","value":[1,2.5,"s"]}]'],
]


@pytest.mark.pushpin
@pytest.mark.parametrize("argv", DIFF_ARGS, ids=[" ".join(a) for a in DIFF_ARGS])
async def test_same_request_as_pushpin_publish(
    capture: tuple[str, Capture], argv: list[str]
) -> None:
    exe = shutil.which("pushpin-publish")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pushpin-publish is required in CI")
        pytest.skip("pushpin-publish not installed")
    spec, cap = capture
    assert await run("--spec", spec, *argv) == (0, "Published\n", "")
    assert await run("--spec", spec, *argv, exe=[exe]) == (0, "Published\n", "")
    ours, theirs = (split(r) for r in cap.requests)
    assert ours[0] == theirs[0]
    for name in ("host", "content-type", "content-length"):
        assert ours[1][name] == theirs[1][name]
    assert ours[2] == theirs[2]

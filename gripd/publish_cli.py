"""``gripd publish``: pushpin-publish's command line (F51), built on the stdlib.

Builds the same single item as Pushpin 1.36's ``pushpin-publish`` (src/publish_cli.rs): every
format in one item, ``\\n`` appended to the HTTP payloads unless ``--no-eol`` or ``@file``, a
non-UTF-8 ``body``/``content`` sent as ``*-bin`` base64, keys sorted as serde_json writes them.
An ``http(s):`` spec POSTs ``{"items":[item]}`` to ``<spec>/publish/``; anything else is a
ZeroMQ PUSH spec, which needs pyzmq (see ``_publish_zmq``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_SPEC = "http://localhost:5561"


class CliError(Exception):
    """A failure reported as ``Error: <message>`` with exit status 1."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gripd publish", description="Publish messages to gripd")
    p.add_argument("channel", help="Channel to send to")
    p.add_argument("content", nargs="?", help="Content to use for HTTP body and WebSocket message")
    p.add_argument("--id", default="", help="Payload ID")
    p.add_argument("--prev-id", default="", help="Previous payload ID")
    p.add_argument("--sender", default="", help="Sender meta value")
    p.add_argument("--code", default="200", help="HTTP response code to use")
    p.add_argument(
        "-H", "--header", action="append", default=[], metavar='"K: V"', help="Add HTTP header"
    )
    p.add_argument("-M", "--meta", action="append", default=[], metavar='"K=V"', help="Add meta")
    p.add_argument("--hint", action="store_true", help="Send hint instead of content")
    p.add_argument("--close", action="store_true", help="Close streaming and WebSocket conns")
    p.add_argument("--patch", action="store_true", help="Content is JSON patch")
    p.add_argument("--no-seq", action="store_true", help="Bypass sequencing buffer")
    p.add_argument("--no-eol", action="store_true", help="Don't add newline to HTTP payloads")
    p.add_argument(
        "--spec",
        default=os.environ.get("GRIP_URL", DEFAULT_SPEC),
        help="GRIP URL or ZeroMQ PUSH spec",
    )
    p.add_argument("-u", "--user", metavar="user:pass", help="Authenticate using basic auth")
    return p


def _parse_code(text: str) -> int:
    """Rust's ``u16::from_str``, with its error texts."""
    digits = text[1:] if text.startswith("+") else text
    if not text:
        raise CliError("failed to parse code: cannot parse integer from empty string")
    if not digits or not all("0" <= c <= "9" for c in digits):
        raise CliError("failed to parse code: invalid digit found in string")
    code = int(digits)
    if code > 65535:
        raise CliError("failed to parse code: number too large to fit in target type")
    return code


def _text_or_bin(key: str, data: bytes) -> tuple[str, str]:
    """``(key, text)``, or ``(key-bin, base64)`` when ``data`` is not UTF-8 (tnet_to_json)."""
    try:
        return key, data.decode("utf-8")
    except UnicodeDecodeError:
        return key + "-bin", base64.b64encode(data).decode("ascii")


def _split_pairs(values: list[str], sep: str, what: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for v in values:
        if sep not in v:
            raise CliError(f'{what} must be in the form "name{": " if sep == ":" else "="}value"')
        name, _, val = v.partition(sep)
        out.append((name, val.strip()))
    return out


def build_item(args: argparse.Namespace) -> dict[str, Any]:
    """The item pushpin-publish would send for these arguments (JSON form).

    Checks run in pushpin-publish's order: action (code, content, patch), headers, meta, file.
    """
    code = 200
    patch: list[Any] | None = None
    if not (args.hint or args.close):
        code = _parse_code(args.code)
        if code > 999:
            raise CliError("code must be an integer between 0 and 999")
        if args.content is None:
            raise CliError("must specify content")
        if args.patch:
            try:
                value = json.loads(args.content)
            except ValueError as e:
                raise CliError(str(e)) from None
            if not isinstance(value, list):
                raise CliError("patch content must be a JSON array")
            patch = value
    headers = _split_pairs(args.header, ":", "header")
    meta_pairs = _split_pairs(args.meta, "=", "meta")

    formats: dict[str, Any] = {}
    if args.hint:
        for name in ("http-response", "http-stream", "ws-message"):
            formats[name] = {"action": "hint"}
    elif args.close:
        formats["http-stream"] = {"action": "close"}
        formats["ws-message"] = {"action": "close"}
    else:
        http_response: dict[str, Any] = {"code": code}
        if patch is not None:
            http_response["body-patch"] = patch
        else:
            content: str = args.content
            if content.startswith("@"):
                name = content[1:]
                try:
                    with open(name, "rb") as f:
                        http_content = f.read()
                except OSError as e:
                    raise CliError(f"can't read file {name}: {_os_message(e)}") from None
                ws_content = http_content  # no newline is added to file content
            else:
                ws_content = content.encode("utf-8", "surrogateescape")
                http_content = ws_content + (b"" if args.no_eol else b"\n")
            k, v = _text_or_bin("body", http_content)
            http_response[k] = v
            k, v = _text_or_bin("content", http_content)
            formats["http-stream"] = {k: v}
            k, v = _text_or_bin("content", ws_content)
            formats["ws-message"] = {k: v}
        if headers:
            http_response["headers"] = [[n, v] for n, v in headers]
        formats["http-response"] = http_response

    meta: dict[str, str] = {}
    if args.sender:
        meta["sender"] = args.sender
    for n, v in meta_pairs:
        meta[n] = v
    item: dict[str, Any] = {"channel": args.channel}
    if args.id:
        item["id"] = args.id
    if args.prev_id:
        item["prev-id"] = args.prev_id
    item["formats"] = formats
    if meta:
        item["meta"] = meta
    if args.no_seq:
        item["no-seq"] = True
    return item


def encode_body(item: dict[str, Any]) -> bytes:
    """``{"items":[item]}`` as serde_json writes it: compact, keys sorted, raw UTF-8."""
    doc = {"items": [item]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogateescape"
    )


def _os_message(e: OSError) -> str:
    """An OS error as Rust prints it: ``Connection refused (os error 111)``."""
    if e.errno is not None and e.strerror:
        return f"{e.strerror} (os error {e.errno})"
    return str(e)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """pushpin-publish treats any status but 200 as an error, redirects included."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _check_url(spec: str) -> None:
    """pushpin-publish's ``parse_url`` rules: ``scheme://host[:port][/path]``."""
    _scheme, sep, rest = spec.partition(":")
    if not sep or not rest.startswith("//"):
        raise CliError("invalid URL")
    host = rest[2:].split("/", 1)[0]
    if ":" in host and not host.rsplit(":", 1)[1].isdigit():
        raise CliError("invalid URL")


def publish_http(spec: str, user: str | None, body: bytes, timeout: float = 30.0) -> None:
    """POST the body to ``<spec>/publish/``; raise ``CliError`` with the server's message."""
    _check_url(spec)
    headers = {"Content-Type": "application/json"}
    if user is not None:
        if not spec.startswith("https:"):
            raise CliError("Authentication requires https")
        headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode("ascii")
    req = urllib.request.Request(spec + "/publish/", body, headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as resp:
            status = resp.status
            text = resp.read()
    except urllib.error.HTTPError as e:
        status = e.code
        text = e.read()
    except urllib.error.URLError as e:
        reason = e.reason
        raise CliError(
            _os_message(reason) if isinstance(reason, OSError) else str(reason)
        ) from None
    except OSError as e:
        raise CliError(_os_message(e)) from None
    if status != 200:
        raise CliError(text.decode("utf-8", "replace").strip())


def _publish_zmq(spec: str, item: dict[str, Any]) -> None:
    """ZeroMQ PUSH publishing arrives with the ZeroMQ inputs; until then, say so."""
    raise CliError(
        f"ZeroMQ publishing is not supported yet (spec {spec!r}); "
        "use an http:// or https:// spec such as http://localhost:5561"
    )


def main(argv: list[str]) -> int:
    """Run ``gripd publish``; returns the exit status (0 published, 1 error)."""
    args = _parser().parse_args(argv)
    try:
        item = build_item(args)
        if args.spec.startswith(("https:", "http:")):
            publish_http(args.spec, args.user, encode_body(item))
        else:
            _publish_zmq(args.spec, item)
    except CliError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print("Published")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

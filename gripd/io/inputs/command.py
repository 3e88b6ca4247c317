"""The command socket on ``command_spec`` (F42): zrpc over ZeroMQ, tnetstring only.

Like Pushpin's ``ZrpcManager`` server it is a ROUTER socket, so REQ and DEALER clients both work
and a stuck client cannot block others. A request is ``{id?: bytes, method: bytes, args?: dict}``
(``ZrpcRequestPacket::fromVariant``); the reply is ``{id?, success: true, value}`` or
``{id?, success: false, condition[, value]}`` (``ZrpcResponsePacket::toVariant``), written with
keys in that order (Pushpin's ``QVariantHash`` order is unspecified, so peers never rely on it).

Methods, checked as in 1.36's ``controlServer_requestReady`` and its workers:

- ``conncheck {ids: [bytes]}``: the listed ids that are connected (``is_connected``), request
  order, duplicates removed (Pushpin returns a set). Missing or mistyped ``ids`` → ``bad-request``.
- ``get-zmq-uris``: ``{command, publish-pull, publish-sub}``, each present only when configured;
  ``publish-sub`` is the first SUB spec and is omitted with ``push_in_sub_connect``.
- ``recover`` (F27): runs ``recover()``; value null.
- ``refresh {cid}`` / ``refresh {channel}``: calls ``refresh({"cid": ...})`` /
  ``refresh({"channel": ...})``. A ``cid`` the callback doesn't know (False) is
  ``item-not-found``, as the proxy answers; the channel form ignores failures. Without a callback
  (no WebSocket-over-HTTP sessions exist yet) every cid is unknown and every channel succeeds.
- ``publish {items}``: items are tnetstring (binary) publish items; the first invalid one gives
  ``bad-request`` with value ``Invalid format: <reason>`` and nothing is published. Otherwise the
  reply is sent first, then the items go to the sink (source ``command``).
- anything else: ``method-not-found``.

Authenticated publishing (``[gripd] publish_key``): ZeroMQ messages have no headers, so the
token travels in the request's ``args`` as ``authorization: "Bearer <JWT>"`` (the same value as
the HTTP header, a tnetstring byte string). Without a valid one every method is refused with
``condition: unauthorized`` (no usable token) or ``forbidden`` (token refused) and a one-line
``value`` naming the reason; the rejection is logged with the peer's address, never the token.
No Pushpin client sends this field (pubcontrol's ZeroMQ client only asks ``get-zmq-uris``).

Deviation: Pushpin silently skips malformed requests (wrong frame count, bad tnetstring, no
``method``), which leaves a REQ client waiting forever. gripd answers them with
``condition: bad-format`` (and the request's ``id`` when one could be read), logs, and keeps
serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from gripd.core import tnetstring
from gripd.core.config import Config
from gripd.core.errors import PublishError
from gripd.core.pubauth import PublishGate
from gripd.core.publish import PublishItem, parse_item
from gripd.io.inputs.zmq import (
    PublishTarget,
    in_phase,
    ipc_file_mode_of,
    limit_message_size,
    setup_socket,
)

__all__ = ["CommandReply", "CommandServer", "error_reply", "success_reply"]

_LOG = logging.getLogger("gripd.command")

_NO_VALUE = object()

CommandReply = dict[bytes, Any]


def success_reply(rid: bytes | None, value: object = None) -> CommandReply:
    """``ZrpcResponsePacket`` for success: ``value`` is always present (null when none)."""
    out: CommandReply = {}
    if rid:
        out[b"id"] = rid
    out[b"success"] = True
    out[b"value"] = value
    return out


def error_reply(rid: bytes | None, condition: str, value: object = _NO_VALUE) -> CommandReply:
    """``ZrpcResponsePacket`` for failure: ``value`` only when given."""
    out: CommandReply = {}
    if rid:
        out[b"id"] = rid
    out[b"success"] = False
    out[b"condition"] = condition.encode("utf-8")
    if value is not _NO_VALUE:
        out[b"value"] = value.encode("utf-8") if isinstance(value, str) else value
    return out


class CommandServer:
    """Serves ``command_spec``; construct, ``await start()``, ``await stop()``."""

    def __init__(
        self,
        config: Config,
        *,
        sink: PublishTarget,
        recover: Callable[[], None],
        is_connected: Callable[[str], bool],
        refresh: Callable[[dict[str, str]], bool] | None = None,
        logger: logging.Logger | None = None,
        context: zmq.asyncio.Context | None = None,
        auth: PublishGate | None = None,
    ) -> None:
        self.config = config
        self.auth = auth  # publish_key: requests need args.authorization
        self.sink = sink
        self.recover = recover
        self.is_connected = is_connected
        self.refresh = refresh
        self.log = logger or _LOG
        self._own_context = context is None
        self._ctx = context
        self.sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.requests = 0
        self.malformed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, ipc: bool | None = None) -> None:
        """Bind ``command_spec`` and serve; ``ipc`` False/True: only if it is a TCP/``ipc://``
        endpoint (the app binds TCP first), None: always."""
        spec = self.config.command_spec
        if not spec or self.sock is not None or not in_phase(spec, ipc):
            return
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        limit_message_size(sock, self.config)  # one request cannot take any amount of memory
        mode = ipc_file_mode_of(self.config)
        try:
            setup_socket(sock, [spec], bind=True, ipc_file_mode=mode, setting="command_spec")
        except OSError:
            sock.close(linger=0)
            raise
        self.sock = sock
        self.log.info("control server: %s", spec)
        self._task = asyncio.create_task(self._serve(sock))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        if self._own_context and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def _serve(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            peer = ""
            try:
                if self.auth is not None and self.auth.auth is not None:
                    raw = await sock.recv_multipart(copy=False)
                    peer = _peer_address(raw[-1])  # for the log of a refused request
                    frames = [f.bytes for f in raw]
                else:
                    frames = await sock.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as e:
                if e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                self.log.error("command: receive failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            # QZmq::ReqMessage: routing frames up to the first empty one, then the content.
            try:
                split = frames.index(b"")
            except ValueError:
                split = len(frames)
            envelope, content = frames[:split], frames[split + 1 :]
            if not envelope:
                continue  # ROUTER always prefixes the peer id; nothing to answer otherwise
            try:
                reply, items = self.handle(content, peer=peer)
            except Exception:  # never stop serving
                self.log.exception("command: request failed")
                reply, items = error_reply(None, "bad-format"), None
            try:
                await sock.send_multipart([*envelope, b"", tnetstring.dumps(reply)])
            except zmq.ZMQError as e:
                self.log.warning("command: reply not sent: %s", e)
            if items:
                try:
                    self.sink.publish(items, source="command")
                except Exception:
                    self.log.exception("command: publish failed")

    # -- requests (no I/O) -------------------------------------------------------------------

    def handle(
        self, content: list[bytes], *, peer: str = "", now: float | None = None
    ) -> tuple[CommandReply, list[PublishItem] | None]:
        """Answer one request's content frames; also returns items to publish after replying.
        ``peer`` (the sender's address) and ``now`` (Unix time) are for ``publish_key``."""
        self.requests += 1
        if len(content) != 1:
            return self._malformed("received message with parts != 1", None)
        try:
            req = tnetstring.loads(content[0])
        except tnetstring.TnetstringError:
            return self._malformed("received message with invalid format (tnetstring parse failed)")
        if not isinstance(req, dict):
            return self._malformed("received message with invalid format (parse failed)")
        rid = req.get(b"id")
        if rid is not None and not isinstance(rid, bytes):
            return self._malformed("received message with invalid format (parse failed)")
        method = req.get(b"method")
        args = req.get(b"args", {})
        if not isinstance(method, bytes) or not isinstance(args, dict):
            return self._malformed("received message with invalid format (parse failed)", rid)
        name = method.decode("utf-8", "replace")
        if self.auth is not None and self.auth.auth is not None:
            refused = self._refused(self.auth, rid, name, args, peer, now)
            if refused is not None:
                return refused, None
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("IN command: %s args=%r", name, args)
        if name == "conncheck":
            return self._conncheck(rid, args), None
        if name == "get-zmq-uris":
            return success_reply(rid, self._zmq_uris()), None
        if name == "recover":
            self.recover()
            return success_reply(rid), None
        if name == "refresh":
            return self._refresh(rid, args), None
        if name == "publish":
            return self._publish(rid, args)
        return error_reply(rid, "method-not-found"), None

    def _refused(
        self,
        gate: PublishGate,
        rid: bytes | None,
        name: str,
        args: dict[bytes, Any],
        peer: str,
        now: float | None,
    ) -> CommandReply | None:
        """None when ``args`` carries a valid ``authorization: Bearer <JWT>``, else the error
        reply (``unauthorized`` / ``forbidden``, the reason as value), logged without the token."""
        value = args.get(b"authorization")
        if value is None:
            values: list[str] = []
        elif isinstance(value, bytes):
            values = [value.decode("latin-1")]
        else:
            values = [""]  # not a string: an invalid header
        refused = gate.check(values, time.time() if now is None else now)
        if refused is None:
            return None
        self.log.warning(
            "command: %s refused (%s): %s peer %s",
            name,
            refused.condition,
            refused.message,
            peer or "unknown",
        )
        return error_reply(rid, refused.condition, refused.message)

    def _malformed(
        self, why: str, rid: bytes | None = None
    ) -> tuple[CommandReply, list[PublishItem] | None]:
        self.malformed += 1
        self.log.warning("command: %s, answering bad-format", why)
        return error_reply(rid, "bad-format"), None

    def _conncheck(self, rid: bytes | None, args: dict[bytes, Any]) -> CommandReply:
        ids = args.get(b"ids")
        if not isinstance(ids, list) or not all(isinstance(i, bytes) for i in ids):
            return error_reply(rid, "bad-request")
        found: dict[bytes, None] = {}
        for i in ids:
            if i not in found and self.is_connected(i.decode("utf-8", "replace")):
                found[i] = None
        return success_reply(rid, list(found))

    def _zmq_uris(self) -> dict[bytes, bytes]:
        cfg = self.config
        out: dict[bytes, bytes] = {}
        if cfg.command_spec:
            out[b"command"] = cfg.command_spec.encode("utf-8")
        if cfg.push_in_spec:
            out[b"publish-pull"] = cfg.push_in_spec.encode("utf-8")
        if cfg.push_in_sub_specs and not cfg.push_in_sub_connect:
            out[b"publish-sub"] = cfg.push_in_sub_specs[0].encode("utf-8")
        return out

    def _refresh(self, rid: bytes | None, args: dict[bytes, Any]) -> CommandReply:
        if b"cid" in args:
            cid = args[b"cid"]
            if not isinstance(cid, bytes):
                return error_reply(rid, "bad-request")
            ok = self.refresh is not None and self.refresh({"cid": cid.decode("utf-8", "replace")})
            return success_reply(rid) if ok else error_reply(rid, "item-not-found")
        if b"channel" in args:
            channel = args[b"channel"]
            if not isinstance(channel, bytes):
                return error_reply(rid, "bad-request")
            if self.refresh is not None:
                self.refresh({"channel": channel.decode("utf-8", "replace")})  # errors ignored
            return success_reply(rid)
        return error_reply(rid, "bad-request")

    def _publish(
        self, rid: bytes | None, args: dict[bytes, Any]
    ) -> tuple[CommandReply, list[PublishItem] | None]:
        if b"items" not in args:
            msg = "Invalid format: object does not contain 'items'"
            return error_reply(rid, "bad-request", msg), None
        vitems = args[b"items"]
        if not isinstance(vitems, list):
            msg = "Invalid format: object contains 'items' with wrong type"
            return error_reply(rid, "bad-request", msg), None
        items: list[PublishItem] = []
        for v in vitems:
            try:
                items.append(parse_item(v, binary=True))
            except PublishError as e:
                return error_reply(rid, "bad-request", f"Invalid format: {e}"), None
        return success_reply(rid), items


def _peer_address(frame: zmq.Frame) -> str:
    """The sender's address of a received frame (libzmq's ``Peer-Address``), "" if unknown."""
    try:
        return str(frame.get("Peer-Address"))
    except (zmq.ZMQError, AttributeError, TypeError, ValueError):
        return ""

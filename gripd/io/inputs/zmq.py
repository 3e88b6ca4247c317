"""ZeroMQ publish inputs (F31): the ``push_in_spec`` PULL and ``push_in_sub_specs`` SUB sockets.

Wire format, as Pushpin 1.36's handler (``src/handler/engine.cpp`` ``inPull_readyRead``,
``inSub_readyRead``, ``parseJsonOrTnetstring``):

- PULL messages have exactly one frame, one item each; SUB messages exactly two,
  ``[channel, payload]``, and a non-empty channel frame wins over the item's ``channel``.
- A payload is ``J`` + a JSON object, ``T`` + a tnetstring, or a bare tnetstring. In tnetstring
  items strings are bytes, so ``body``/``content`` are raw and WS ``content-bin`` is raw bytes.
- Anything else is dropped with Pushpin's log line, counted in ``counters`` by reason and
  reported through ``events_out.dropped(reason)``. Nothing a peer sends stops the loop.

Sockets are set up as Pushpin's ``ZUtil::setupSocket``: in bind mode only the first spec is bound;
in connect mode (``push_in_sub_connect``) every spec is connected, with TCP keep-alive 30/6/5.
PULL has HWM 101000 (``DEFAULT_HWM``); SUB's send HWM is 0 (unlimited) so subscription changes are
never dropped. Unlike Pushpin, both (and the command socket) set ``ZMQ_MAXMSGSIZE`` to
``[gripd] zmq_max_message_size``, so one message cannot take any amount of memory: ZeroMQ checks
each frame's size as it arrives and drops the sender's connection past it (see
:func:`limit_message_size`).

SUB interest (F31 "subscription forwarding"): the SUB socket subscribes to a channel when the
channel tracker gains it and unsubscribes when it is lost, so an XPUB publisher sees which
channels are wanted. The tracker applies Pushpin's linger (``removeSub`` runs from the stats
manager's ``unsubscribed`` signal, which lingers response-mode subscriptions, F43): after the
last long-poll leaves, the channel stays ``subscription_linger`` seconds, so a re-polling client
keeps the interest without churn; when the last stream/WS subscriber leaves it goes at once.
ZeroMQ filters by prefix, so a SUB item is only handed on when its channel has local subscribers
under exactly that name (``has_channel``); others are counted in ``filtered``.

Receive loops await one message, then drain up to ``DRAIN_MAX`` more without blocking and hand
them to the sink as one batch (research §3.6: 3-4x the throughput of awaiting each message),
then yield to the event loop, so a large burst reaches clients progressively. While batches
come out full (a backlog), each may take twice as many as the last, up to ``DRAIN_BACKLOG_MAX``:
a client's deliveries of one batch go out in one write, so under a backlog spread over many
channels the writes per item fall (bench/RESULTS.md, "ZeroMQ bursts"); the first batch of a
burst stays small, so its first items go out as soon as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

import zmq
import zmq.asyncio
from mypy_extensions import mypyc_attr

from gripd.core import tnetstring
from gripd.core.config import Config
from gripd.core.errors import PublishError
from gripd.core.publish import PublishItem, parse_item
from gripd.core.qtcompat import read_json
from gripd.io.observe.events import Events

__all__ = [
    "DRAIN_MAX",
    "PULL_HWM",
    "BindError",
    "Drop",
    "PublishTarget",
    "ZmqInputs",
    "decode_payload",
    "in_phase",
    "ipc_file_mode_of",
    "ipc_in_use",
    "is_ipc",
    "limit_message_size",
    "os_reason",
    "parse_pull_message",
    "parse_sub_message",
    "prepare_ipc_path",
    "setup_socket",
    "zmq_reason",
]

_LOG = logging.getLogger("gripd.zmq")

PULL_HWM = 101000  # Pushpin's DEFAULT_HWM for the PULL socket (F31)
DRAIN_MAX = 256  # messages taken per wake-up before yielding to the loop
DRAIN_BACKLOG_MAX = 4096  # the most taken at once while the previous batches came out full
_KEEPALIVE = (30, 6, 5)  # idle, count, interval: Pushpin's SUB settings in connect mode


class PublishTarget(Protocol):
    """Where accepted items go (the engine)."""

    def publish(self, items: list[PublishItem], *, source: str) -> None: ...


class Drop(Exception):
    """A message that is dropped: ``reason`` is the counter key, ``str()`` Pushpin's log text."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- pure message parsing ------------------------------------------------------------------------


_NOBLOCK: Final = int(zmq.NOBLOCK)


def _recv_nowait(recv: Callable[[int, Literal[False]], zmq.Frame]) -> list[bytes]:
    """One waiting message's frames (``recv_multipart(NOBLOCK)``); raises ``zmq.Again``.

    Each part is received as a ``zmq.Frame`` (``copy=False``), whose ``more`` flag pyzmq fills
    in C: asking the socket for ``RCVMORE`` instead goes through a Python enum lookup on every
    call, which cost more than the receive itself (bench/RESULTS.md, "ZeroMQ PULL")."""
    frame = recv(_NOBLOCK, False)
    frames = [frame.bytes]
    while frame.more:  # the other parts of a message are there once its first is
        frame = recv(_NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


def decode_payload(data: bytes) -> tuple[object, bool]:
    """Decode one payload (``parseJsonOrTnetstring``); returns ``(value, binary)`` where
    ``binary`` is True for tnetstring values. Raises :class:`Drop`."""
    if data[:1] == b"J":
        try:
            doc = read_json(data[1:])  # as Pushpin's Qt reads it (F31, same as F28)
        except ValueError:
            raise Drop(
                "bad_json", "received message with invalid format (json parse failed)"
            ) from None
        if not isinstance(doc, dict):
            raise Drop("bad_json", "received message with invalid format (not a valid json object)")
        return doc, False
    body = data[1:] if data[:1] == b"T" else data
    try:
        return tnetstring.loads(body), True
    except tnetstring.TnetstringError:
        raise Drop(
            "bad_tnetstring", "received message with invalid format (tnetstring parse failed)"
        ) from None


def _item(value: object, binary: bool, channel: str | None) -> PublishItem:
    try:
        return parse_item(value, binary=binary, channel=channel)
    except PublishError as e:
        raise Drop("bad_item", f"received message with invalid format: {e}") from None


def parse_pull_message(frames: list[bytes]) -> PublishItem:
    """One PULL message → one item, or :class:`Drop`."""
    if len(frames) != 1:
        raise Drop("bad_frames", "received message with parts != 1")
    value, binary = decode_payload(frames[0])
    return _item(value, binary, None)


def parse_sub_message(frames: list[bytes]) -> PublishItem:
    """One SUB message ``[channel, payload]`` → one item, or :class:`Drop`."""
    if len(frames) != 2:
        raise Drop("bad_frames", "received message with parts != 2")
    value, binary = decode_payload(frames[1])
    channel = frames[0].decode("utf-8", "replace")  # QString::fromUtf8
    return _item(value, binary, channel or None)


# -- socket helpers ------------------------------------------------------------------------------


def ipc_file_mode_of(config: Config) -> int | None:
    raw = config.extra.get("handler", {}).get("ipc_file_mode", "")
    try:
        return int(raw, 8) if raw else None
    except ValueError:
        return None


@mypyc_attr(native_class=False)  # the compiled build cannot subclass OSError natively
class BindError(OSError):
    """An address gripd cannot listen on; ``str()`` is the one line to print (setting named)."""

    def __init__(self, address: str, setting: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address} ({setting}): {reason}")


def os_reason(e: OSError) -> str:
    """The plain ``strerror`` of a bind failure (uvloop wraps it in a longer sentence)."""
    if isinstance(e, socket.gaierror) or not e.errno or e.errno < 0:
        return e.strerror or str(e)  # a name that does not resolve, not an errno
    return os.strerror(e.errno)


def zmq_reason(e: zmq.ZMQError) -> str:
    """A ZeroMQ error's text without the ``(addr=...)`` pyzmq appends."""
    return zmq.strerror(e.errno) if e.errno is not None else str(e)


def is_ipc(spec: str) -> bool:
    """Whether a ZeroMQ endpoint is a unix socket path (``ipc://``)."""
    return spec.startswith("ipc://")


def in_phase(spec: str, ipc: bool | None) -> bool:
    """Whether ``spec`` is bound in start phase ``ipc`` (None: the one phase of a lone start).

    gripd binds every TCP address before any ``ipc://`` path, so an instance that cannot get its
    ports exits before it touches the socket files of one already running on them."""
    return ipc is None or is_ipc(spec) == ipc


def ipc_in_use(path: str) -> bool:
    """Whether a live process accepts on the unix socket ``path``.

    Binding an ``ipc://`` endpoint (ZeroMQ, like asyncio's unix servers) first unlinks the file,
    silently taking the address from whoever owns it; so probe it first. ZeroMQ ipc endpoints
    are unix stream sockets: a successful connect means a listener. A refused connect or a
    missing file is a stale or free path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return False
        except (TimeoutError, BlockingIOError):
            return True  # a listener with a full backlog is still a listener
        except OSError:
            return False  # not ours to judge (EACCES...): the bind reports it
        return True


def prepare_ipc_path(path: str, spec: str, setting: str) -> None:
    """Create an ipc socket's directory; refuse a path a live process listens on."""
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise BindError(spec, setting, os_reason(e)) from None
    if ipc_in_use(path):
        raise BindError(spec, setting, "Address already in use (another process listens on it)")


def setup_socket(
    sock: zmq.asyncio.Socket,
    specs: list[str],
    *,
    bind: bool,
    ipc_file_mode: int | None = None,
    setting: str = "",
) -> None:
    """Pushpin's ``ZUtil::setupSocket``: bind the first spec, or connect to every spec.

    For ``ipc://`` binds the socket file's directory is created first, a path a live process
    listens on is refused, and the file's mode is set to ``ipc_file_mode`` when given. Failures
    raise :class:`BindError` naming ``setting``.
    """
    setting = setting or "zmq"
    if not bind:
        for spec in specs:
            try:
                sock.connect(spec)
            except zmq.ZMQError as e:
                raise OSError(f"cannot connect to {spec} ({setting}): {zmq_reason(e)}") from None
        return
    spec = specs[0]
    path = spec[6:] if is_ipc(spec) else None
    if path:
        prepare_ipc_path(path, spec, setting)
    try:
        sock.bind(spec)
    except zmq.ZMQError as e:
        raise BindError(spec, setting, zmq_reason(e)) from None
    if path and ipc_file_mode is not None:
        os.chmod(path, ipc_file_mode)


def limit_message_size(sock: zmq.Socket[Any], config: Config) -> None:
    """Refuse inbound frames over ``zmq_max_message_size`` bytes (set before bind/connect).

    ZeroMQ's decoder checks each frame's announced size before reading it; a bigger one is a
    protocol error that closes that peer's connection (the frame and anything after it on that
    connection are lost; the peer reconnects by itself). gripd is not told: the socket monitor
    reports only a disconnect, like any other, so nothing is logged. A message of many frames is
    bounded per frame only (PULL and command messages with extra frames are dropped once read).
    """
    sock.setsockopt(zmq.MAXMSGSIZE, config.zmq_max_message_size)


# -- the component -------------------------------------------------------------------------------


class ZmqInputs:
    """The PULL and SUB publish inputs; register it with the channel tracker (``gained`` /
    ``lost``) for SUB interest.

    ``has_channel(name)`` says whether ``name`` has local subscribers (the engine's
    ``registry.has_channel``); by default the channels the SUB socket is subscribed to.
    """

    def __init__(
        self,
        config: Config,
        sink: PublishTarget,
        sub_sink: PublishTarget | None = None,
        *,
        has_channel: Callable[[str], bool] | None = None,
        events_out: Events | None = None,
        logger: logging.Logger | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        # SUB items may go elsewhere: with a shared bus, every instance subscribes to the
        # ZeroMQ publisher itself (Pushpin's scale-out), so its SUB items stay local.
        self.sub_sink = sub_sink or sink
        self.events_out = events_out
        self.log = logger or _LOG
        self._own_context = context is None
        self._ctx = context
        self._interest: set[str] = set()  # channels the SUB socket is subscribed to
        self.has_channel: Callable[[str], bool] = has_channel or self._interest.__contains__
        self.counters: dict[str, int] = {}  # dropped messages by reason
        self.received: dict[str, int] = {"zmq-pull": 0, "zmq-sub": 0}  # items handed on
        self.filtered = 0  # SUB items for channels with no exact-name local subscriber
        self.pull: zmq.asyncio.Socket | None = None
        self.sub: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, ipc: bool | None = None) -> None:
        """Bind/connect the sockets and start the receive loops.

        ``ipc`` False/True binds only the TCP/``ipc://`` endpoints (the app calls both, TCP
        first); None binds everything. A socket is set up once, in its first spec's phase."""
        cfg = self.config
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        mode = ipc_file_mode_of(cfg)
        if cfg.push_in_spec and self.pull is None and in_phase(cfg.push_in_spec, ipc):
            pull = self._ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVHWM, PULL_HWM)
            limit_message_size(pull, cfg)
            try:
                setup_socket(
                    pull, [cfg.push_in_spec], bind=True, ipc_file_mode=mode, setting="push_in_spec"
                )
            except OSError:
                pull.close(linger=0)
                raise
            self.pull = pull
            self.log.info("in pull: %s", cfg.push_in_spec)
            self._tasks.append(asyncio.create_task(self._loop(pull, "zmq-pull", "IN pull")))
        specs = cfg.push_in_sub_specs
        if specs and self.sub is None and in_phase(specs[0], ipc):
            sub = self._ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SNDHWM, 0)  # subscription messages must never be dropped
            limit_message_size(sub, cfg)
            connect = cfg.push_in_sub_connect
            if connect:
                idle, cnt, intvl = _KEEPALIVE
                sub.setsockopt(zmq.TCP_KEEPALIVE, 1)
                sub.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
                sub.setsockopt(zmq.TCP_KEEPALIVE_CNT, cnt)
                sub.setsockopt(zmq.TCP_KEEPALIVE_INTVL, intvl)
            for ch in sorted(self._interest):  # interest gained before start
                sub.setsockopt(zmq.SUBSCRIBE, ch.encode("utf-8"))
            try:
                setup_socket(
                    sub, specs, bind=not connect, ipc_file_mode=mode, setting="push_in_sub_specs"
                )
            except OSError:
                sub.close(linger=0)
                raise
            self.sub = sub
            self.log.info("in sub: %s", ", ".join(specs))
            self._tasks.append(asyncio.create_task(self._loop(sub, "zmq-sub", "IN sub")))

    async def stop(self) -> None:
        """Stop the loops and close the sockets (linger 0) and our context."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for sock in (self.pull, self.sub):
            if sock is not None:
                sock.close(linger=0)
        self.pull = self.sub = None
        if self._own_context and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # -- receiving ---------------------------------------------------------------------------

    async def _loop(self, sock: zmq.asyncio.Socket, source: str, label: str) -> None:
        parse = parse_pull_message if source == "zmq-pull" else parse_sub_message
        # A synchronous view of the same socket, for the non-blocking drain.
        shadow: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        # Its bound recv, taken once: pyzmq's recv_multipart is Python code, and attribute
        # lookups on its sockets go through a __getattr__ hook (a sixth of the CPU per item).
        recv: Callable[[int, Literal[False]], zmq.Frame] = shadow.recv
        more = False  # the last batch stopped at its limit: messages may be waiting
        limit = DRAIN_MAX  # doubles while batches come out full, back to DRAIN_MAX when not
        while True:
            try:
                if more:
                    # Go on with the waiting messages through the same non-blocking view; the
                    # socket is awaited only once that view found the queue empty (awaiting
                    # it with messages already queued could miss its edge-triggered wake-up).
                    try:
                        first = _recv_nowait(recv)
                    except zmq.Again:
                        more = False
                        continue
                else:
                    first = await sock.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as e:
                if e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                self.log.error("%s: receive failed: %s", label, e)
                more = False
                await asyncio.sleep(0.1)
                continue
            batch: list[PublishItem] = []
            frames: list[bytes] | None = first
            n = 0
            while frames is not None:
                self._take(frames, parse, source, label, batch)
                n += 1
                frames = None
                if n < limit:
                    try:
                        frames = _recv_nowait(recv)
                    except zmq.Again:
                        pass
                    except zmq.ZMQError as e:
                        if e.errno not in (zmq.ETERM, zmq.ENOTSOCK):
                            self.log.error("%s: receive failed: %s", label, e)
            more = n >= limit
            limit = min(limit * 2, DRAIN_BACKLOG_MAX) if more else DRAIN_MAX
            if batch:
                self.received[source] += len(batch)
                try:
                    sink = self.sub_sink if source == "zmq-sub" else self.sink
                    sink.publish(batch, source=source)
                except Exception:  # the sink's bug must not stop the input
                    self.log.exception("%s: publish failed", label)
            # Yield before the next batch, so a large burst reaches clients progressively
            # instead of being taken whole before any client write goes out.
            await asyncio.sleep(0)

    def _take(
        self,
        frames: list[bytes],
        parse: Callable[[list[bytes]], PublishItem],
        source: str,
        label: str,
        batch: list[PublishItem],
    ) -> None:
        try:
            item = parse(frames)
        except Drop as d:
            self._drop(label, d)
            return
        except Exception:  # never let one message take the input down
            self.log.exception("%s: unexpected error, skipping", label)
            self._drop(label, Drop("internal_error", "internal error"), logged=True)
            return
        if source == "zmq-sub" and not self.has_channel(item.channel):
            self.filtered += 1  # a prefix match, or interest still lingering: nobody to tell
            return
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s: channel=%s id=%s", label, item.channel, item.id)
        batch.append(item)

    def _drop(self, label: str, d: Drop, *, logged: bool = False) -> None:
        if not logged:
            self.log.warning("%s: %s, skipping", label, d)
        self.counters[d.reason] = self.counters.get(d.reason, 0) + 1
        if self.events_out is not None:
            self.events_out.dropped(d.reason)

    # -- SUB interest (InterestListener) -------------------------------------------------------

    @property
    def sub_channels(self) -> frozenset[str]:
        """Channels the SUB socket is currently subscribed to."""
        return frozenset(self._interest)

    def gained(self, channel: str) -> None:
        """A channel became interesting here: subscribe the SUB socket to it (F31)."""
        if channel not in self._interest:
            self._interest.add(channel)
            if self.sub is not None:
                self.log.debug("SUB socket subscribe: %s", channel)
                self.sub.setsockopt(zmq.SUBSCRIBE, channel.encode("utf-8"))

    def lost(self, channel: str) -> None:
        """A channel is no longer interesting (after the linger): unsubscribe it."""
        if channel in self._interest:
            self._interest.discard(channel)
            if self.sub is not None:
                self.log.debug("SUB socket unsubscribe: %s", channel)
                self.sub.setsockopt(zmq.UNSUBSCRIBE, channel.encode("utf-8"))

"""WebSocket framing on a connection (RFC 6455), over websockets' sans-I/O ``Protocol``.

``WsEndpoint`` turns bytes from a peer into whole messages for a ``WsPeerHandler`` and sends
frames back. The same class serves the client side (``Side.SERVER``: unmasked frames, so a
published frame is encoded once for every subscriber) and the origin side (``Side.CLIENT``).
Invalid frames make the protocol close with 1002/1007/1009 as RFC 6455 says (websockets does
the checking and sends the close frame).

Pings are not answered here: gripd relays a ping to the other side and the far end's pong comes
back, as Pushpin does (F37). websockets' own automatic pong would make each ping answered
twice, so ``_RelayProtocol`` leaves that to the handler (relay it, or ``send_pong`` where gripd
is the far end, as for the test target's ``/ws``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State

#: Published ``ws-message`` types (F30) and WebSocket control messages, as opcodes.
OPCODES: dict[str, Opcode] = {
    "text": Opcode.TEXT,
    "binary": Opcode.BINARY,
    "ping": Opcode.PING,
    "pong": Opcode.PONG,
}

log = logging.getLogger("gripd.ws")

# Server frames are never masked, so a frame serialized once can go to every subscriber.
FRAGMENT_SIZE = 16_384  # F41: messages are sent in frames of at most this size


def encode_message(opcode: Opcode, data: bytes, fragment: int = 1 << 20) -> bytes:
    """Unmasked frame(s) for one message; messages over ``fragment`` bytes are split (F30)."""
    if len(data) <= fragment:
        return Frame(opcode, data).serialize(mask=False)
    parts = []
    for i in range(0, len(data), fragment):
        chunk = data[i : i + fragment]
        op = opcode if i == 0 else Opcode.CONT
        parts.append(Frame(op, chunk, fin=i + fragment >= len(data)).serialize(mask=False))
    return b"".join(parts)


def encode_close(code: int | None, reason: str = "") -> bytes:
    data = b"" if code is None else Close(code, reason).serialize()
    return Frame(Opcode.CLOSE, data).serialize(mask=False)


class WsPeerHandler(TypingProtocol):
    """What a WebSocket endpoint reports."""

    def on_ws_message(self, is_text: bool, data: bytes) -> None: ...
    def on_ws_ping(self, data: bytes) -> None:
        """A ping, not answered by the endpoint: relay it or call ``send_pong``."""

    def on_ws_pong(self, data: bytes) -> None: ...
    def on_ws_close(self, code: int | None, reason: str) -> None: ...


class _RelayProtocol(Protocol):
    """websockets' ``Protocol`` minus the automatic pong (RFC 6455 5.5.2 is met by the far end
    whose pong is relayed back, or by the handler)."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.events.append(frame)  # what Protocol does after queueing its pong
            return
        super().recv_frame(frame)


class GoneHandler:
    """The handler of a released endpoint: whatever still arrives goes nowhere."""

    __slots__ = ()

    def on_ws_message(self, is_text: bool, data: bytes) -> None:
        pass

    def on_ws_ping(self, data: bytes) -> None:
        pass

    def on_ws_pong(self, data: bytes) -> None:
        pass

    def on_ws_close(self, code: int | None, reason: str) -> None:
        pass


_GONE = GoneHandler()


def _nothing(*_: bytes) -> None:
    pass


class WsEndpoint:
    """One side of a WebSocket: parse incoming bytes, serialize outgoing messages."""

    __slots__ = (
        "_frags",
        "_is_text",
        "closed",
        "handler",
        "last_frames",
        "proto",
        "write",
        "write_eof",
    )

    def __init__(
        self,
        side: Side,
        handler: WsPeerHandler,
        write: Callable[[bytes], None],
        write_eof: Callable[[], None],
        *,
        max_size: int | None = 1 << 20,
    ) -> None:
        self.proto: Protocol = _RelayProtocol(side, state=State.OPEN, max_size=max_size)
        self.handler = handler
        self.write = write
        self.write_eof = write_eof
        self._frags: list[bytes] = []
        self._is_text = False
        self.closed = False
        # Frames the message being reported came in: F38 ignores a ``c:`` control message
        # unless it was a single frame, so the origin side needs to know.
        self.last_frames = 1

    @property
    def released(self) -> bool:
        """``release()`` was called (its handler is the one that ignores everything)."""
        return self.handler is _GONE

    def release(self) -> None:
        """Let go of everything once the connection is gone, so that the endpoint and what it
        points at are freed at once by reference counting. Otherwise they wait for the cycle
        collector, whose full passes stall every client: websockets' ``Protocol`` holds its
        parser generator, whose frame holds the ``Protocol``, and the handler usually holds
        this endpoint. Afterwards the endpoint ignores input and sends nothing."""
        if self.released:
            return
        self.closed = True
        self.proto.parser.close()  # its frame is dropped with it
        self.handler = _GONE
        self.write = _nothing
        self.write_eof = _nothing
        self._frags = []

    def feed(self, data: bytes) -> None:
        if self.released:
            return
        proto = self.proto
        proto.receive_data(data)
        events = proto.events_received()
        self._flush()
        for frame in events:
            if isinstance(frame, Frame):  # an OPEN protocol yields frames only
                self._on_frame(frame)
        if proto.state is State.CLOSED and not self.closed:
            self.closed = True

    def feed_eof(self) -> None:
        if self.released:
            return
        self.proto.receive_eof()
        self._flush()

    def _on_frame(self, frame: Frame) -> None:
        op = frame.opcode
        h = self.handler
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if frame.fin:
                self.last_frames = 1
                self._message(op is Opcode.TEXT, bytes(frame.data))
            else:
                self._is_text = op is Opcode.TEXT
                self._frags = [bytes(frame.data)]
        elif op is Opcode.CONT:
            self._frags.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._frags)
                self.last_frames = len(self._frags)
                self._frags = []
                self._message(self._is_text, data)
        elif op is Opcode.PING:
            h.on_ws_ping(bytes(frame.data))
        elif op is Opcode.PONG:
            h.on_ws_pong(bytes(frame.data))
        elif op is Opcode.CLOSE:
            rcvd = self.proto.close_rcvd
            if rcvd is None or rcvd.code == 1005:
                h.on_ws_close(None, "")
            else:
                h.on_ws_close(rcvd.code, rcvd.reason)

    def _message(self, is_text: bool, data: bytes) -> None:
        if is_text:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                # RFC 6455 8.1: invalid UTF-8 in a text message fails the connection with 1007.
                self.proto.fail(1007, "invalid UTF-8 in text message")
                self._flush()
                return
        self.handler.on_ws_message(is_text, data)

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.write(data)
            else:
                self.write_eof()

    # -- sending -----------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return not self.released and self.proto.state is State.OPEN

    def send(self, is_text: bool, data: bytes) -> None:
        if not self.open:
            return
        try:
            if is_text:
                self.proto.send_text(data)
            else:
                self.proto.send_binary(data)
        except ProtocolError as e:
            log.debug("ws send: %s", e)
        self._flush()

    def send_ping(self, data: bytes) -> None:
        if self.open:
            self.proto.send_ping(data)
            self._flush()

    def send_pong(self, data: bytes) -> None:
        if self.open:
            self.proto.send_pong(data)
            self._flush()

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        if self.open:
            try:
                self.proto.send_close(code, reason)
            except ProtocolError:
                self.proto.send_close()
            self._flush()

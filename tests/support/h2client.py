"""A raw HTTP/2 client on the ``h2`` library, for what ordinary clients never do: small
windows, streams left unread, resets, floods and broken frames."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings


class RawH2:
    """One TLS connection speaking HTTP/2 as a client. Events are collected per stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.data: dict[int, bytearray] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack: set[int] | None = None  # None: acknowledge every stream's data

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext, *, window: int | None = None) -> RawH2:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        ssl_obj = writer.get_extra_info("ssl_object")
        assert ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2"
        c = cls(reader, writer)
        c.h2.initiate_connection()
        if window is not None:
            c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        await c.send()
        return c

    async def send(self) -> None:
        out = self.h2.data_to_send()
        if out and not self.writer.is_closing():
            self.writer.write(out)
            await self.writer.drain()

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        extra: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        hs = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", "localhost"),
        ]
        self.h2.send_headers(sid, hs + (extra or []), end_stream=end)
        return sid

    async def pump(self, timeout: float = 0.2) -> bool:
        """Read and handle what arrives within ``timeout``; False once the connection ended."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return True
        except (ConnectionError, ssl.SSLError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        for ev in self.h2.receive_data(data):
            self._event(ev)
        await self.send()
        return True

    def _event(self, ev: Any) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            self.headers[ev.stream_id] = {k: v for k, v in ev.headers}
        elif isinstance(ev, h2.events.DataReceived):
            self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            if self.auto_ack is None or ev.stream_id in self.auto_ack:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif ev.flow_controlled_length:
                # The stream's reader stalls, but the connection's window is given back, as
                # browsers do (they buffer per stream).
                self.h2.increment_flow_control_window(ev.flow_controlled_length)
        elif isinstance(ev, h2.events.StreamEnded):
            self.ended.add(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.reset[ev.stream_id] = int(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.terminated = ev

    async def until(self, cond: Any, within: float = 10.0) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while not cond():
            if loop.time() > end or not await self.pump():
                return bool(cond())
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass

"""A minimal WebSocket client (RFC 6455) on an asyncio protocol, for thousands of sockets.

The ``websockets`` library spends about 125 µs of CPU per received frame (measured on the
development machine), so one process could absorb only ~8,000 frames per second: the load
generator, not the server, would be what is measured. Here each frame is parsed inside
``data_received`` and handed to a plain callback, with no task, queue or future per frame.
It supports what the load tester needs and nothing more: text frames, fragmentation,
ping/pong and the close handshake; no extensions (permessage-deflate is never offered).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER = 16384

OnMessage = Callable[[bytes], None]
OnClose = Callable[[int | None], None]


class HandshakeFailed(OSError):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"WebSocket upgrade refused: HTTP {status} {reason}".strip())
        self.status = status


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    if not payload:
        return key
    length = len(payload)
    stream = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return key + masked.to_bytes(length, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + _mask(payload)


class WireProtocol(asyncio.Protocol):
    def __init__(self, on_message: OnMessage, on_close: OnClose) -> None:
        self.on_message = on_message
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self._upgraded = False
        self._buffer = bytearray()
        self._fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEADER and not self.handshake.done():
                    self.handshake.set_exception(HandshakeFailed(0, "header too large"))
                return
            head = bytes(self._buffer[: end + 4])
            del self._buffer[: end + 4]
            self._upgraded = True
            if not self.handshake.done():
                self.handshake.set_result(head)
        self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        while True:
            available = len(buf)
            if available < 2:
                return
            first, second = buf[0], buf[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if available < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if available < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if second & 0x80:  # servers never mask; tolerate it anyway
                offset += 4
            if available < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            if second & 0x80:
                key = buf[offset - 4 : offset]
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            del buf[: offset + length]
            self._frame(first & 0x80, first & 0x0F, payload)

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (1, 2):
            if fin:
                self.on_message(payload)
            else:
                self._fragments = [payload]
        elif opcode == 0:
            self._fragments.append(payload)
            if fin:
                whole = b"".join(self._fragments)
                self._fragments = []
                self.on_message(whole)
        elif opcode == 9:
            self._write(encode_frame(10, payload))
        elif opcode == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._write(encode_frame(8, payload[:2]))
            if self.transport is not None:
                self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionResetError("closed during the handshake"))
        code = self.close_code if self.close_code is not None else 1006
        if not self.closed.done():
            self.closed.set_result(code)
        self.on_close(code)


class WireConnection:
    def __init__(self, protocol: WireProtocol) -> None:
        self._protocol = protocol

    @property
    def is_open(self) -> bool:
        transport = self._protocol.transport
        return transport is not None and not transport.is_closing()

    def send_text(self, text: str) -> None:
        self._protocol._write(encode_frame(1, text.encode()))

    def close(self, code: int = 1000) -> None:
        self._protocol._write(encode_frame(8, code.to_bytes(2, "big")))
        transport = self._protocol.transport
        if transport is not None:
            # The server's close frame is not awaited: the load tester is leaving anyway.
            asyncio.get_running_loop().call_later(1.0, transport.abort)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a lost network would."""
        if self._protocol.transport is not None:
            self._protocol.transport.abort()

    async def wait_closed(self) -> int | None:
        return await self._protocol.closed


async def connect(
    url: str, on_message: OnMessage, on_close: OnClose, *, timeout: float
) -> WireConnection:
    """Open ``url`` (ws:// or wss://) and complete the upgrade; raise OSError or TimeoutError."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16))
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if secure else None
    async with asyncio.timeout(timeout):
        transport, protocol = await loop.create_connection(
            lambda: WireProtocol(on_message, on_close), host, port, ssl=context
        )
        try:
            netloc = host if parts.port is None else f"{host}:{port}"
            transport.write(
                f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\nUser-Agent: boltorezka-loadtest\r\n\r\n".encode()
            )
            head = await protocol.handshake
        except BaseException:
            transport.abort()
            raise
    status_line, _, rest = head.decode("latin-1").partition("\r\n")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()  # noqa: S324
    accept = ""
    for line in rest.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-accept":
            accept = value.strip()
    if status != 101 or accept != expected:
        transport.abort()
        raise HandshakeFailed(status, fields[2] if len(fields) > 2 else "")
    return WireConnection(protocol)

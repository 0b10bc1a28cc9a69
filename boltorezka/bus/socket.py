"""A bus across processes of one node over a Unix socket, for setups without Redis.

The server process (``boltorezka serve``) hosts it: local subscribers are called directly,
as with :class:`~boltorezka.bus.memory.MemoryBus`, and helper processes on the same host
(the SFU) connect as clients to publish and subscribe. Frames are a 4-byte big-endian
length followed by a msgpack array: ``["sub", channel]``, ``["pub", channel, data]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections import defaultdict
from pathlib import Path

import msgspec
import structlog

from boltorezka.bus.base import FamilyHandler, Handler, RecoveryHook
from boltorezka.bus.memory import MemoryBus

_log = structlog.get_logger("boltorezka.bus.socket")
_HEADER = struct.Struct(">I")
_MAX_FRAME = 16 * 1024 * 1024
_MAX_CLIENT_BACKLOG = 32 * 1024 * 1024


async def _read_frame(reader: asyncio.StreamReader) -> list[object]:
    header = await reader.readexactly(_HEADER.size)
    (length,) = _HEADER.unpack(header)
    if length > _MAX_FRAME:
        raise ValueError(f"bus frame of {length} bytes exceeds the limit")
    frame: list[object] = msgspec.msgpack.decode(await reader.readexactly(length), type=list)
    return frame


def _encode_frame(*parts: object) -> bytes:
    body = msgspec.msgpack.encode(list(parts))
    return _HEADER.pack(len(body)) + body


class BusSocketInUse(RuntimeError):
    """Another live process already hosts the bus on this socket path."""


class SocketBus(MemoryBus):
    """The hosting side: an in-memory bus that also serves remote processes."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._remote: defaultdict[str, set[asyncio.StreamWriter]] = defaultdict(set)
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            # A socket someone still answers on belongs to a live server: never steal it.
            try:
                _, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError:
                self.path.unlink()  # left behind by a server that died
            else:
                writer.close()
                raise BusSocketInUse(
                    f"{self.path} is served by another running process; give this one its "
                    "own BOLTOREZKA_DATA_DIR or BOLTOREZKA_BUS_SOCKET"
                )
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)  # only this user's processes may join the bus

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        await super().close()

    async def publish(self, channel: str, data: bytes) -> None:
        self._forward(channel, data, exclude=None)
        await super().publish(channel, data)

    def _forward(self, channel: str, data: bytes, exclude: asyncio.StreamWriter | None) -> None:
        frame = _encode_frame("msg", channel, data)
        for writer in list(self._remote.get(channel, ())):
            if writer is exclude or writer.is_closing():
                continue
            if writer.transport.get_write_buffer_size() > _MAX_CLIENT_BACKLOG:
                # A helper process that stopped reading must not grow this server's memory;
                # it is cut off and, being supervised, comes back with a fresh connection.
                _log.warning("bus client is not reading; disconnecting it", channel=channel)
                writer.transport.abort()
                continue
            writer.write(frame)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                frame = await _read_frame(reader)
                op, channel = frame[0], str(frame[1])
                if op == "sub":
                    self._remote[channel].add(writer)
                elif op == "pub" and isinstance(frame[2], bytes):
                    self._forward(channel, frame[2], exclude=writer)
                    await super().publish(channel, frame[2])
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._clients.discard(task)
            for writers in self._remote.values():
                writers.discard(writer)
            writer.close()


class SocketBusClient:
    """The connecting side, used by helper processes such as the SFU."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def subscribe_family(self, family: str, handler: FamilyHandler) -> None:
        raise NotImplementedError("helper processes subscribe to named channels only")

    def listen(self, channel: str) -> None:
        raise NotImplementedError("helper processes subscribe to named channels only")

    def unlisten(self, channel: str) -> None:
        raise NotImplementedError("helper processes subscribe to named channels only")

    async def listening(self, channel: str) -> None:
        raise NotImplementedError("helper processes subscribe to named channels only")

    def on_recovered(self, hook: RecoveryHook) -> None:
        return None  # a helper whose host went away exits and is started afresh

    def routing_problem(self) -> str | None:
        return "the bus host closed the connection" if self.closed.is_set() else None

    async def start(self) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        self._writer = writer
        for channel in self._handlers:
            writer.write(_encode_frame("sub", channel))
        await writer.drain()
        self._reader_task = asyncio.create_task(self._read(reader), name="socket-bus-client")

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()

    async def publish(self, channel: str, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("the bus client is not started")
        self._writer.write(_encode_frame("pub", channel, data))
        await self._writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await _read_frame(reader)
                if frame[0] != "msg" or not isinstance(frame[2], bytes):
                    continue
                channel = str(frame[1])
                for handler in list(self._handlers.get(channel, ())):
                    try:
                        await handler(frame[2])
                    except Exception:
                        _log.exception("bus handler failed", channel=channel)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self.closed.set()

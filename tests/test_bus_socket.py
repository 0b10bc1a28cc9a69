"""The local bus over a Unix socket: a helper process publishes and subscribes like a node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from boltorezka.bus.socket import BusSocketInUse, SocketBus, SocketBusClient


async def test_remote_and_local_subscribers_see_each_others_messages(tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    host = SocketBus(path)
    at_host: asyncio.Queue[bytes] = asyncio.Queue()
    at_client: asyncio.Queue[bytes] = asyncio.Queue()

    async def host_handler(data: bytes) -> None:
        await at_host.put(data)

    async def client_handler(data: bytes) -> None:
        await at_client.put(data)

    host.subscribe("up", host_handler)
    await host.start()
    assert path.stat().st_mode & 0o777 == 0o600
    client = SocketBusClient(path)
    client.subscribe("down", client_handler)
    await client.start()
    try:
        await client.publish("up", b"from the helper")
        async with asyncio.timeout(5):
            assert await at_host.get() == b"from the helper"
        # Subscriptions are registered asynchronously: publish until the client has one.
        async with asyncio.timeout(5):
            while at_client.empty():
                await host.publish("down", b"from the server")
                await asyncio.sleep(0.02)
        assert await at_client.get() == b"from the server"
        # Channels nobody subscribed to are not forwarded.
        await host.publish("elsewhere", b"nobody listens")
        await host.publish("down", b"second")
        async with asyncio.timeout(5):
            while (item := await at_client.get()) == b"from the server":
                pass
        assert item == b"second"
    finally:
        await client.close()
        await host.close()
    assert not path.exists()


async def test_a_second_server_does_not_steal_a_live_socket(tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    first = SocketBus(path)
    await first.start()
    try:
        with pytest.raises(BusSocketInUse):
            await SocketBus(path).start()
    finally:
        await first.close()
    # A socket file left by a dead server is reclaimed.
    path.touch()
    second = SocketBus(path)
    await second.start()
    await second.close()


async def test_a_client_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    from boltorezka.bus import socket as socket_bus

    path = tmp_path / "bus.sock"
    host = SocketBus(path)
    await host.start()
    _reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(socket_bus._encode_frame("sub", "media"))
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            while not host._remote.get("media"):
                await asyncio.sleep(0.01)
        chunk = b"x" * (1024 * 1024)
        # The client never reads: once its backlog passes the bound, the server drops it.
        async with asyncio.timeout(20):
            while host._remote.get("media"):
                await host.publish("media", chunk)
                await asyncio.sleep(0)
        assert not host._remote.get("media")
    finally:
        writer.close()
        await host.close()

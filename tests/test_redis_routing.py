"""Routing scales with rooms: a node is subscribed in Redis to a room's channel only while it
holds a connection of one of the room's members, and to a user's channel only while it
holds one of that user's connections. Checked in Redis itself (PUBSUB NUMSUB)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient

from boltorezka.app import build_app
from boltorezka.bus.redis import RedisBus
from boltorezka.config import Settings
from boltorezka.runtime import Services
from tests.helpers import add_member, create_room, register

PATIENCE = 20.0


class Nodes:
    def __init__(self, one: TestClient[Any, Any], two: TestClient[Any, Any], prefix: str) -> None:
        self.one, self.two, self.prefix = one, two, prefix

    @staticmethod
    def ws(node: TestClient[Any, Any]) -> str:
        return f"ws://127.0.0.1:{node.server.port}/v1/ws"


@pytest.fixture
async def nodes(settings: Settings, pool: asyncpg.Pool, redis_url: str) -> AsyncIterator[Nodes]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    started = []
    for _ in range(2):
        app = build_app(Services.build(settings, pool, bus=RedisBus(redis_url, prefix=prefix)))
        node: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await node.start_server()
        started.append(node)
    yield Nodes(started[0], started[1], prefix)
    for node in started:
        await node.close()


async def _subscribers(redis_url: str, channel: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        counts = await client.pubsub_numsub(channel)
        return int(counts[0][1])
    finally:
        await client.aclose()


async def _wait_subscribers(redis_url: str, channel: str, expected: int) -> None:
    try:
        async with asyncio.timeout(PATIENCE):
            while await _subscribers(redis_url, channel) != expected:
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    assert await _subscribers(redis_url, channel) == expected, channel


async def test_nodes_subscribe_to_a_room_only_while_they_hold_its_members(
    nodes: Nodes,
    redis_url: str,
) -> None:
    alice, bob, carol = await asyncio.gather(*(register(nodes.one) for _ in range(3)))
    room = await create_room(nodes.one, alice)
    await add_member(nodes.one, room, alice, bob)
    lobby = await create_room(nodes.one, carol)  # carol's alone; bob is not a member
    room_channel = f"{nodes.prefix}room:{room}"

    async with BoltorezkaClient(nodes.ws(nodes.one), alice.access_token) as a:
        await a.join(room)
        await _wait_subscribers(redis_url, room_channel, 1)  # node one only

        # Carol on node two is in no room with alice: node two stays off the room's channel
        # while messages flow in it.
        async with BoltorezkaClient(nodes.ws(nodes.two), carol.access_token) as c:
            await c.join(lobby)
            await a.send_message(room, "node two must not see this")
            await _wait_subscribers(redis_url, room_channel, 1)
            await _wait_subscribers(redis_url, f"{nodes.prefix}room:{lobby}", 1)

        # Bob connects to node two without joining: he is a member, so node two listens
        # (for his unread notifications), and they reach him.
        async with BoltorezkaClient(nodes.ws(nodes.two), bob.access_token) as b:
            await _wait_subscribers(redis_url, room_channel, 2)
            await _wait_subscribers(redis_url, f"{nodes.prefix}user:{bob.id}", 1)
            sent = await a.send_message(room, "hello bob")
            note = await b.wait_type("notification", roomId=room, timeout=PATIENCE)
            assert note["payload"]["messageId"] == sent["messageId"]
            # Joining, he gets the messages themselves, live, across nodes.
            await b.join(room)
            await a.send_message(room, "live")
            message = await b.wait_for(
                lambda e: e["type"] == "chat.message" and e["payload"]["message"]["body"] == "live",
                timeout=PATIENCE,
            )
            assert message["payload"]["roomId"] == room
            # His read marker set on node two reaches his device on node one (user channel).
            async with BoltorezkaClient(nodes.ws(nodes.one), bob.access_token) as phone:
                await b.mark_read(room, int(message["payload"]["message"]["seq"]))
                read = await phone.wait_type("chat.read", roomId=room, timeout=PATIENCE)
                assert read["payload"]["userId"] == bob.id

        # Bob gone from node two: it leaves both channels.
        await _wait_subscribers(redis_url, room_channel, 1)
        await _wait_subscribers(redis_url, f"{nodes.prefix}user:{bob.id}", 0)

"""Two nodes on a real Redis Cluster (three masters, sharded pub/sub; tests/redis_cluster.py).

- A conversation crosses the nodes, room channel and user channel alike.
- A node is subscribed to a room's shard channel, on the master owning its slot, only while
  it holds a member of the room (PUBSUB SHARDNUMSUB on each master); the channels spread
  over the masters.
- The master holding a room's slot SIGKILLed mid-traffic and started again: sends are
  acknowledged throughout, /readyz reports the outage and then recovers, and every client
  ends with every acknowledged message exactly once, in order, resumed ones too.
- Login budgets hold across the two nodes with the buckets in the cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient

from boltorezka.api.keys import GATEWAY
from boltorezka.app import build_app
from boltorezka.bus.factory import redis_bus
from boltorezka.config import Settings
from boltorezka.runtime import Services
from tests.helpers import (
    PASSWORD,
    add_member,
    app_of,
    create_room,
    eventually,
    expect_problem,
    register,
)
from tests.redis_cluster import PrivateRedisCluster

PATIENCE = 40.0


@dataclass
class Nodes:
    one: TestClient[Any, Any]
    two: TestClient[Any, Any]
    prefix: str

    @staticmethod
    def ws(node: TestClient[Any, Any]) -> str:
        return f"ws://127.0.0.1:{node.server.port}/v1/ws"


async def _start_nodes(
    settings: Settings, pool: asyncpg.Pool, url: str, prefix: str, count: int = 2
) -> list[TestClient[Any, Any]]:
    on_cluster = replace(settings, redis_url=url)
    nodes = []
    for _ in range(count):
        # The bus and the shared rate limits both on the cluster, under the test's prefix.
        services = Services.build(
            on_cluster, pool, bus=redis_bus(url, prefix=prefix), redis_prefix=prefix
        )
        node: TestClient[Any, Any] = TestClient(TestServer(build_app(services), host="127.0.0.1"))
        await node.start_server()
        nodes.append(node)
    return nodes


@pytest.fixture
async def nodes(
    settings: Settings, pool: asyncpg.Pool, redis_cluster: PrivateRedisCluster
) -> AsyncIterator[Nodes]:
    redis_cluster.ensure_healthy()
    prefix = f"test-{uuid.uuid4().hex[:8]}:"  # keeps tests on the session's cluster apart
    one, two = await _start_nodes(settings, pool, redis_cluster.url, prefix)
    yield Nodes(one, two, prefix)
    for node in (one, two):
        # Shutting down must not hang or fail whatever state the cluster is in.
        async with asyncio.timeout(PATIENCE):
            await node.close()


def _seqs(client: BoltorezkaClient, room: str) -> list[int]:
    return [int(m["seq"]) for m in client.messages(room)]


async def _wait_seqs(client: BoltorezkaClient, room: str, expected: list[int]) -> None:
    try:
        await eventually(
            lambda: _seqs(client, room) == expected or len(_seqs(client, room)) > len(expected),
            f"seqs {expected[:1]}..{expected[-1:]}",
            timeout=PATIENCE,
        )
    except AssertionError:
        pass
    assert _seqs(client, room) == expected


async def _readiness(node: TestClient[Any, Any], status: int) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def answered() -> bool:
        response = await node.get("/readyz")
        found.update(await response.json())
        return response.status == status

    await eventually(answered, f"/readyz {status}", timeout=PATIENCE, interval=0.1)
    return found


async def test_a_conversation_crosses_nodes_on_the_cluster(nodes: Nodes) -> None:
    alice, bob = await asyncio.gather(register(nodes.one), register(nodes.one))
    room = await create_room(nodes.one, alice)
    await add_member(nodes.one, room, alice, bob)
    async with (
        BoltorezkaClient(nodes.ws(nodes.one), alice.access_token) as a,
        BoltorezkaClient(nodes.ws(nodes.two), bob.access_token) as b,
    ):
        await a.join(room)
        await b.join(room)
        for turn in range(3):
            sent = await a.send_message(room, f"alice {turn}")
            await _wait_seqs(b, room, list(range(1, int(sent["seq"]) + 1)))
            replied = await b.send_message(room, f"bob {turn}")
            await _wait_seqs(a, room, list(range(1, int(replied["seq"]) + 1)))
        bodies = [m["body"] for m in a.messages(room)]
        assert bodies == [f"{who} {turn}" for turn in range(3) for who in ("alice", "bob")]
        assert [m["body"] for m in b.messages(room)] == bodies
        # A user channel: bob's read marker set on node two reaches his phone on node one.
        async with BoltorezkaClient(nodes.ws(nodes.one), bob.access_token) as phone:
            await b.mark_read(room, 6)
            read = await phone.wait_type("chat.read", roomId=room, timeout=PATIENCE)
            assert read["payload"]["userId"] == bob.id


async def test_a_node_listens_on_a_shard_only_for_rooms_it_holds_members_of(
    nodes: Nodes, redis_cluster: PrivateRedisCluster
) -> None:
    alice, bob, carol = await asyncio.gather(*(register(nodes.one) for _ in range(3)))
    room = await create_room(nodes.one, alice)
    await add_member(nodes.one, room, alice, bob)
    lobby = await create_room(nodes.one, carol)
    room_channel = f"{nodes.prefix}room:{room}"
    bob_channel = f"{nodes.prefix}user:{bob.id}"

    async def expect(channel: str, count: int) -> None:
        """``count`` subscribers, every one on the master owning the channel's slot."""
        owner = redis_cluster.owner(channel)

        async def settled() -> bool:
            counts = await redis_cluster.shard_subscribers(channel)
            return counts[owner] == count and sum(counts.values()) == count

        await eventually(settled, f"{count} subscriber(s) of {channel}", timeout=PATIENCE)

    async with BoltorezkaClient(nodes.ws(nodes.one), alice.access_token) as a:
        await a.join(room)
        await expect(room_channel, 1)  # node one only
        async with BoltorezkaClient(nodes.ws(nodes.two), carol.access_token) as c:
            await c.join(lobby)
            await a.send_message(room, "node two must not see this")
            await expect(f"{nodes.prefix}room:{lobby}", 1)
            await expect(room_channel, 1)
            assert not any(
                e["type"] == "chat.message" and e["payload"]["roomId"] == room for e in c.events
            )
        # Bob, a member, on node two: node two subscribes on the room's master, and to his
        # user channel on its own master.
        async with BoltorezkaClient(nodes.ws(nodes.two), bob.access_token) as b:
            await expect(room_channel, 2)
            await expect(bob_channel, 1)
            await b.join(room)
            await a.send_message(room, "live")
            message = await b.wait_for(
                lambda e: e["type"] == "chat.message" and e["payload"]["message"]["body"] == "live",
                timeout=PATIENCE,
            )
            assert message["payload"]["roomId"] == room
        await expect(room_channel, 1)
        await expect(bob_channel, 0)
    # The two nodes' channels, node-wide and per room, are spread over the masters.
    channels = await redis_cluster.shard_channels(f"{nodes.prefix}*")
    assert sum(1 for names in channels.values() if names) >= 2, channels


async def _chatter(client: BoltorezkaClient, room: str, stop: asyncio.Event) -> list[int]:
    """Send until told to stop; each send is acknowledged (retried with its clientMsgId)."""
    seqs = []
    for i in range(10_000):
        if stop.is_set():
            break
        ack = await client.send_message(room, f"chatter {i}", client_msg_id=f"chatter-{i}")
        seqs.append(int(ack["seq"]))
        await asyncio.sleep(0.02)
    return seqs


async def test_a_master_restarted_mid_traffic_loses_nothing(
    nodes: Nodes, redis_cluster: PrivateRedisCluster
) -> None:
    one, two = nodes.one, nodes.two
    alice, carol, bob, dave = await asyncio.gather(*(register(one) for _ in range(4)))
    room = await create_room(one, alice)
    for member in (carol, bob, dave):
        await add_member(one, room, alice, member)
    master = redis_cluster.owner(f"{nodes.prefix}room:{room}")

    async with (
        BoltorezkaClient(Nodes.ws(one), alice.access_token) as a,
        BoltorezkaClient(Nodes.ws(one), carol.access_token) as c,
        BoltorezkaClient(Nodes.ws(two), bob.access_token) as b,
    ):
        for client in (a, c, b):
            await client.join(room)
        async with BoltorezkaClient(Nodes.ws(two), dave.access_token) as d:
            await d.join(room)
            first = await a.send_message(room, "before the restart")
            await _wait_seqs(d, room, [1])
        # Dave is gone at seq 1; he resumes from there after the restart.
        stop = asyncio.Event()
        chatter = asyncio.create_task(_chatter(a, room, stop))
        await eventually(lambda: len(_seqs(b, room)) >= 4, "traffic across the nodes")

        redis_cluster.kill_node(master)
        body = await _readiness(one, 503)
        assert f"redis cluster node 127.0.0.1:{master}" in body["checks"]["bus"], body
        await _readiness(two, 503)
        # Sends on node two are acknowledged meanwhile: committed, whatever Redis does.
        during = [int((await b.send_message(room, f"bob during {i}"))["seq"]) for i in range(3)]

        redis_cluster.start_node(master)
        await _readiness(one, 200)
        await _readiness(two, 200)
        after = int((await b.send_message(room, "bob after"))["seq"])
        stop.set()
        chatted = await chatter

        acked = sorted([int(first["seq"]), *chatted, *during, after])
        total = len(acked)
        assert acked == list(range(1, total + 1))
        # Live, or healed from PostgreSQL after the outage: all of it, once, in order.
        for client in (a, c, b):
            await _wait_seqs(client, room, acked)
        assert a.reconnects == b.reconnects == c.reconnects == 0
        async with BoltorezkaClient(Nodes.ws(two), dave.access_token) as resumed:
            await resumed.join(room, last_seq=1)
            await _wait_seqs(resumed, room, acked[1:])
        bodies = [m["body"] for m in b.messages(room)]
        assert len(set(bodies)) == total
    for node in (one, two):
        assert app_of(node)[GATEWAY].hub.routing_problem() is None
    await redis_cluster.wait_ok_async()


async def _login(node: TestClient[Any, Any], username: str, password: str) -> Any:
    return await node.post("/v1/auth/login", json={"username": username, "password": password})


async def test_one_login_budget_across_nodes_on_the_cluster(
    settings: Settings, pool: asyncpg.Pool, redis_cluster: PrivateRedisCluster
) -> None:
    redis_cluster.ensure_healthy()
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    limited = replace(settings, login_rate_per_minute=3)
    one, two = await _start_nodes(limited, pool, redis_cluster.url, prefix)
    try:
        account = await register(one)
        # Three tries in all, wherever they land; the fourth is refused by the other node.
        for node in (one, two, one):
            response = await _login(node, account.username, "wrong password")
            assert response.status == 401, await response.text()
        refused = await _login(two, account.username, PASSWORD)
        body = await expect_problem(refused, 429, "rate_limited")
        assert body["retryable"] is True
    finally:
        for node in (one, two):
            await node.close()

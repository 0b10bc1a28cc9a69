"""A call outlives the node that holds it: drained, silent or restarted, another node (or
its own next run) takes the call over from PostgreSQL, and participants keep their places.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient

from boltorezka.api.keys import GATEWAY
from boltorezka.app import build_app
from boltorezka.bus.redis import RedisBus
from boltorezka.config import Settings
from boltorezka.runtime import Services
from boltorezka.store import calls as call_store
from tests.conftest import make_client
from tests.helpers import add_member, app_of, create_room, quick_accounts, register


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def ws(node: TestClient[Any, Any]) -> str:
    return f"ws://127.0.0.1:{node.server.port}/v1/ws"


@pytest.fixture
async def two_nodes(
    settings: Settings, pool: asyncpg.Pool, redis_url: str
) -> AsyncIterator[list[TestClient[Any, Any]]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    nodes: list[TestClient[Any, Any]] = []
    for _ in range(2):
        app = build_app(Services.build(settings, pool, bus=RedisBus(redis_url, prefix=prefix)))
        hub = app[GATEWAY].hub
        hub.alive_interval = 0.25
        hub.directory.node_ttl = 2.0
        node: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await node.start_server()
        nodes.append(node)
    yield nodes
    for node in nodes:
        await node.close()


async def test_a_call_continues_when_its_host_drains(
    two_nodes: list[TestClient[Any, Any]],
) -> None:
    one, two = two_nodes
    alice, bob = await register(one), await register(one)
    room = await create_room(one, alice)
    await add_member(one, room, alice, bob)
    a = BoltorezkaClient(ws(one), alice.access_token, reconnect=False)
    await a.connect()
    async with BoltorezkaClient(ws(two), bob.access_token) as b:
        started = await a.request("call.start", {"roomId": room, "mode": "p2p"})
        call_id, alice_pid = started["call"]["callId"], started["participantId"]
        bob_pid = (await b.request("call.join", {"callId": call_id}))["participantId"]
        await a.wait_type("call.state", callId=call_id, state="active", timeout=10)

        # Node one drains as on SIGTERM (sockets close with 1012), then shuts down,
        # giving its calls up.
        await app_of(one)[GATEWAY].drain()
        await one.close()
        await a.close()
        moved = await b.wait_type("call.state", callId=call_id, reason="host_changed", timeout=10)
        assert moved["payload"]["state"] == "active"
        by_user = {p["userId"]: p for p in moved["payload"]["participants"]}
        assert by_user[bob.id]["connected"] is True, "a connection elsewhere keeps its place"
        assert by_user[alice.id]["connected"] is False, "the drained node's wait out grace"

        # Alice comes back through the other node and rejoins: same call, same place.
        async with BoltorezkaClient(ws(two), alice.access_token) as back:
            rejoined = await back.request("call.join", {"callId": call_id})
            assert rejoined["participantId"] == alice_pid
            assert rejoined["call"]["state"] == "active"
            # Renegotiation runs through the new host, both ways.
            offer = {"callId": call_id, "to": bob_pid, "sdp": "v=0 (ice restart)"}
            await back.request("rtc.offer", offer)
            got = await b.wait_type("rtc.offer", callId=call_id, timeout=10)
            assert got["payload"]["from"] == alice_pid
            await b.request("rtc.answer", {"callId": call_id, "to": alice_pid, "sdp": "v=0"})
            answer = await back.wait_type("rtc.answer", callId=call_id, timeout=10)
            assert answer["payload"]["from"] == bob_pid
        assert not [
            e
            for e in b.events
            if e.get("type") == "call.state" and e["payload"].get("state") == "ended"
        ], "the call never ended"
        stored = await app_of(two)[GATEWAY].services.pool.fetchrow(
            "SELECT state, host_node FROM call_sessions WHERE id = $1", uuid.UUID(call_id)
        )
        assert stored is not None
        assert stored["state"] == "active"
        assert stored["host_node"] == app_of(two)[GATEWAY].node_id


async def test_a_silent_host_loses_its_calls_to_a_live_node(
    two_nodes: list[TestClient[Any, Any]],
) -> None:
    """kill -9 looks like silence: the others take the call over without being asked,
    and the silent node, if it was only cut off, lets go of its copy."""
    one, two = two_nodes
    alice, bob = await register(one), await register(one)
    room = await create_room(one, alice)
    await add_member(one, room, alice, bob)
    async with (
        BoltorezkaClient(ws(one), alice.access_token) as a,
        BoltorezkaClient(ws(two), bob.access_token) as b,
    ):
        started = await a.request("call.start", {"roomId": room, "mode": "p2p"})
        call_id = started["call"]["callId"]
        await b.request("call.join", {"callId": call_id})
        holder = app_of(one)[GATEWAY]
        assert holder.hub._presence_task is not None
        holder.hub._presence_task.cancel()

        moved = await b.wait_type("call.state", callId=call_id, reason="host_changed", timeout=15)
        by_user = {p["userId"]: p for p in moved["payload"]["participants"]}
        assert by_user[bob.id]["connected"] is True
        assert by_user[alice.id]["connected"] is False

        async def let_go() -> bool:
            return uuid.UUID(call_id) not in holder.services.calls.calls

        await eventually(let_go)


async def test_a_restarted_node_carries_on_its_previous_runs_calls(
    services: Services, pool: asyncpg.Pool
) -> None:
    owner, guest = await quick_accounts(services, 2)
    room_id = await pool.fetchval(
        "INSERT INTO rooms (name, kind, created_by) VALUES ('r', 'private', $1) RETURNING id",
        uuid.UUID(owner.id),
    )
    for account, role in ((owner, "owner"), (guest, "member")):
        await pool.execute(
            "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, $3)",
            room_id,
            uuid.UUID(account.id),
            role,
        )
    call_id, owner_pid = uuid.uuid4(), uuid.uuid4()
    assert await call_store.create(pool, call_id, room_id, "p2p", uuid.UUID(owner.id), "node-a")
    await call_store.add_participant(
        pool, owner_pid, call_id, uuid.UUID(owner.id), None, "gone-connection", "node-a"
    )

    other_room = await pool.fetchval(
        "INSERT INTO rooms (name, kind, created_by) VALUES ('o', 'private', $1) RETURNING id",
        uuid.UUID(owner.id),
    )
    theirs = uuid.uuid4()
    assert await call_store.create(pool, theirs, other_room, "p2p", uuid.UUID(owner.id), "node-b")

    node = await make_client(services, node_id="node-a")
    try:
        calls = app_of(node)[GATEWAY].services.calls
        assert call_id in calls.calls, "taken over at start"
        # Just started, it cannot tell a silent node from one it has not heard yet.
        assert theirs not in calls.calls
        host = await pool.fetchval("SELECT host_node FROM call_sessions WHERE id = $1", theirs)
        assert host == "node-b"
        participant = calls.calls[call_id].participants[owner_pid]
        assert participant.connection_id is None, "its connection died with the previous run"
        async with BoltorezkaClient(ws(node), owner.access_token) as back:
            rejoined = await back.request("call.join", {"callId": str(call_id)})
            assert rejoined["participantId"] == str(owner_pid)
            assert rejoined["call"]["state"] == "ringing"
    finally:
        await node.close()
    # Shut down, the node gave the call up for whoever runs next.
    assert await pool.fetchval("SELECT host_node FROM call_sessions WHERE id = $1", call_id) is None


async def test_of_two_nodes_taking_one_call_over_one_wins(
    services: Services, pool: asyncpg.Pool
) -> None:
    (owner,) = await quick_accounts(services, 1)
    room_id = await pool.fetchval(
        "INSERT INTO rooms (name, kind, created_by) VALUES ('r', 'private', $1) RETURNING id",
        uuid.UUID(owner.id),
    )
    call_id = uuid.uuid4()
    assert await call_store.create(pool, call_id, room_id, "p2p", uuid.UUID(owner.id), "dead")

    async def take(node: str) -> call_store.AdoptedCall | None:
        async with pool.acquire() as conn, conn.transaction():
            return await call_store.adopt(conn, call_id, "dead", node)

    results = await asyncio.gather(take("n1"), take("n2"), take("n3"))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    host = await pool.fetchval("SELECT host_node FROM call_sessions WHERE id = $1", call_id)
    assert host in ("n1", "n2", "n3")
    assert await call_store.orphaned(pool, [host]) == []
    assert await call_store.orphaned(pool, []) == [(call_id, host)]
    assert await call_store.held_elsewhere(pool, [call_id], host) == []
    assert await call_store.held_elsewhere(pool, [call_id], "someone-else") == [call_id]
    assert await call_store.release_hosted(pool, host) == 1
    assert await call_store.orphaned(pool, [host]) == [(call_id, None)]

"""Two nodes on one Redis: a message sent through one reaches a client of the other."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient, NackError

from boltorezka.api.keys import GATEWAY
from boltorezka.app import build_app
from boltorezka.bus.redis import RedisBus
from boltorezka.config import Settings
from boltorezka.runtime import Services
from tests.helpers import add_member, app_of, create_room, register


@pytest.fixture
async def two_nodes(
    settings: Settings, pool: asyncpg.Pool, redis_url: str
) -> AsyncIterator[tuple[TestClient[Any, Any], TestClient[Any, Any]]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"  # keeps parallel runs on one Redis apart
    nodes = []
    for _ in range(2):
        app = build_app(Services.build(settings, pool, bus=RedisBus(redis_url, prefix=prefix)))
        # Quick node liveness, so a silent node is noticed within a test's patience; the
        # TTL stays eight intervals long so a busy machine never drops a live node.
        hub = app[GATEWAY].hub
        hub.alive_interval = 0.25
        hub.directory.node_ttl = 2.0
        node: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await node.start_server()
        nodes.append(node)
    yield nodes[0], nodes[1]
    for node in nodes:
        await node.close()


async def test_room_events_cross_nodes_through_redis(
    two_nodes: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> None:
    one, two = two_nodes
    alice = await register(one)
    bob = await register(one)
    room = await create_room(one, alice)
    await add_member(one, room, alice, bob)

    def ws(node: TestClient[Any, Any]) -> str:
        return f"ws://127.0.0.1:{node.server.port}/v1/ws"

    async with (
        BoltorezkaClient(ws(one), alice.access_token) as a,
        BoltorezkaClient(ws(two), bob.access_token) as b,
    ):
        await a.join(room)
        await b.join(room)
        ack = await a.send_message(room, "across nodes")
        received = await b.wait_type("chat.message", roomId=room, timeout=10)
        assert received["payload"]["message"]["body"] == "across nodes"
        assert received["payload"]["message"]["seq"] == ack["seq"]
        # And back: a REST post on node two reaches the socket on node one.
        response = await two.post(
            f"/v1/rooms/{room}/messages",
            json={"clientMsgId": "rest-1", "body": "via rest"},
            headers=bob.headers,
        )
        assert response.status == 201
        back = await a.wait_for(
            lambda e: e["type"] == "chat.message" and e["payload"]["message"]["body"] == "via rest",
            timeout=10,
        )
        assert back["payload"]["message"]["seq"] == ack["seq"] + 1


def _offline(user_id: str):  # type: ignore[no-untyped-def]
    return lambda e: (
        e["type"] == "presence.changed" and e["payload"] == {"userId": user_id, "status": "offline"}
    )


async def test_presence_is_cluster_wide(
    two_nodes: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> None:
    one, two = two_nodes
    alice, bob, carol = await register(one), await register(one), await register(one)
    room = await create_room(one, alice)
    await add_member(one, room, alice, bob)
    await add_member(one, room, alice, carol)

    def ws(node: TestClient[Any, Any]) -> str:
        return f"ws://127.0.0.1:{node.server.port}/v1/ws"

    async with BoltorezkaClient(ws(one), alice.access_token) as a:
        phone = BoltorezkaClient(ws(one), bob.access_token)
        laptop = BoltorezkaClient(ws(two), bob.access_token)
        await phone.connect()
        await laptop.connect()
        await a.wait_type("presence.changed", userId=bob.id, status="online", timeout=10)
        # dnd set on the other node wins over the online device here.
        await laptop.set_presence("dnd")
        await a.wait_type("presence.changed", userId=bob.id, status="dnd", timeout=10)
        # Bob's device on node one goes; his device on node two keeps him present.
        await phone.close()
        await laptop.set_presence("online")
        await a.wait_type("presence.changed", userId=bob.id, status="online", timeout=10)
        assert not [e for e in a.events if _offline(bob.id)(e)]
        await laptop.close()
        await a.wait_for(_offline(bob.id), timeout=10)

        # A node that dies without a word: its users go offline once it is missed.
        c = BoltorezkaClient(ws(two), carol.access_token, reconnect=False)
        await c.connect()
        await a.wait_type("presence.changed", userId=carol.id, status="online", timeout=10)
        dying = app_of(two)[GATEWAY].hub
        assert dying._presence_task is not None
        dying._presence_task.cancel()  # no more reports, no more "alive"
        await a.wait_for(_offline(carol.id), timeout=10)
        await c.close()


async def test_calls_span_nodes(
    two_nodes: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> None:
    """The call lives on the node that started it; participants elsewhere reach it."""
    one, two = two_nodes
    alice, bob, eve = await register(one), await register(one), await register(one)
    room = await create_room(one, alice)
    await add_member(one, room, alice, bob)

    def ws(node: TestClient[Any, Any]) -> str:
        return f"ws://127.0.0.1:{node.server.port}/v1/ws"

    async with (
        BoltorezkaClient(ws(one), alice.access_token) as a,
        BoltorezkaClient(ws(two), bob.access_token) as b,
        BoltorezkaClient(ws(two), eve.access_token) as e,
    ):
        started = await a.request("call.start", {"roomId": room, "mode": "p2p"})
        call_id, alice_pid = started["call"]["callId"], started["participantId"]
        await b.wait_type("call.state", callId=call_id, state="ringing", timeout=10)
        joined = await b.request("call.join", {"callId": call_id})
        bob_pid = joined["participantId"]
        assert joined["call"]["state"] == "active"
        await a.wait_type("call.state", callId=call_id, state="active", timeout=10)

        # Signaling crosses nodes both ways, with the sender named by the holding node.
        await b.request("rtc.offer", {"callId": call_id, "to": alice_pid, "sdp": "v=0"})
        offer = await a.wait_type("rtc.offer", callId=call_id, timeout=10)
        assert offer["payload"]["from"] == bob_pid
        await a.request("rtc.answer", {"callId": call_id, "to": bob_pid, "sdp": "v=0"})
        answer = await b.wait_type("rtc.answer", callId=call_id, timeout=10)
        assert answer["payload"]["from"] == alice_pid

        # Errors come back with their codes, as if the call were local.
        with pytest.raises(NackError) as refused:
            await e.request("call.join", {"callId": call_id})
        assert refused.value.code == "room_not_found"
        with pytest.raises(NackError) as refused:
            await b.request("rtc.offer", {"callId": call_id, "to": bob_pid, "sdp": "v=0"})
        assert refused.value.code == "invalid_call_transition"

        await b.request("call.leave", {"callId": call_id})
        await a.request("call.leave", {"callId": call_id})
        await b.wait_type("call.state", callId=call_id, state="ended", timeout=10)

        # The holding node goes silent: another node takes the call over rather than
        # ending it. Alice's connection was on the silent node, so she waits out her
        # grace period; Bob joins the same call.
        second = await a.request("call.start", {"roomId": room, "mode": "p2p"})
        lost_id = second["call"]["callId"]
        holder = app_of(one)[GATEWAY].hub
        assert holder._presence_task is not None
        holder._presence_task.cancel()
        async with asyncio.timeout(10):
            while app_of(two)[GATEWAY].hub.directory.is_alive(holder.node_id, time.monotonic()):
                await asyncio.sleep(0.05)
        joined = await b.request("call.join", {"callId": lost_id})
        assert joined["call"]["callId"] == lost_id
        assert joined["call"]["state"] == "active"
        by_user = {p["userId"]: p for p in joined["call"]["participants"]}
        assert by_user[alice.id]["connected"] is False
        moved = await b.wait_type("call.state", callId=lost_id, reason="host_changed", timeout=10)
        assert moved["payload"]["state"] in ("ringing", "active")
        # The room's live call is that one: a second start points at it.
        with pytest.raises(NackError) as taken:
            await b.request("call.start", {"roomId": room, "mode": "p2p"})
        assert taken.value.code == "call_already_live"

"""A Redis outage between two nodes: killed for real (SIGKILL), then started again.

What must hold meanwhile: sends are acknowledged (the commit is what counts), the node's
own sockets keep getting every event, a logout still closes the sockets on the node that
handled it, and /readyz says the node cannot route. Once Redis is back: routing resumes by
itself, subscribers on the other node get what they missed from PostgreSQL, in order and
exactly once, with nothing new sent to trigger it.

The test runs a Redis of its own on its own port; the machine's shared one is not touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient

from boltorezka.api.keys import GATEWAY
from boltorezka.app import build_app
from boltorezka.bus.redis import RedisBus
from boltorezka.config import Settings
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.runtime import Services
from tests.helpers import add_member, app_of, create_room, register
from tests.redis_server import PrivateRedis

PATIENCE = 30.0


@pytest.fixture
async def nodes(
    settings: Settings, pool: asyncpg.Pool, private_redis: PrivateRedis
) -> AsyncIterator[tuple[TestClient[Any, Any], TestClient[Any, Any]]]:
    await private_redis.wait_up()
    started = []
    for _ in range(2):
        app = build_app(Services.build(settings, pool, bus=RedisBus(private_redis.url)))
        node: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await node.start_server()
        started.append(node)
    yield started[0], started[1]
    for node in started:
        # Shutting down must not hang or fail whatever state Redis is in.
        async with asyncio.timeout(PATIENCE):
            await node.close()


async def _readiness(node: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    response = await node.get("/readyz")
    body: dict[str, Any] = await response.json()
    return response.status, body


async def _wait_readiness(node: TestClient[Any, Any], status: int) -> dict[str, Any]:
    async with asyncio.timeout(PATIENCE):
        while True:
            code, body = await _readiness(node)
            if code == status:
                return body
            await asyncio.sleep(0.1)


def _ws(node: TestClient[Any, Any]) -> str:
    return f"ws://127.0.0.1:{node.server.port}/v1/ws"


def _seqs(client: BoltorezkaClient, room: str) -> list[int]:
    return [int(m["seq"]) for m in client.messages(room)]


async def _wait_seqs(client: BoltorezkaClient, room: str, expected: list[int]) -> None:
    try:
        async with asyncio.timeout(PATIENCE):
            while _seqs(client, room) != expected:
                if len(_seqs(client, room)) > len(expected):
                    break
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    assert _seqs(client, room) == expected


async def test_a_redis_outage_loses_nothing_and_heals_by_itself(
    nodes: tuple[TestClient[Any, Any], TestClient[Any, Any]], private_redis: PrivateRedis
) -> None:
    one, two = nodes
    alice, carol, bob, dave = await asyncio.gather(*(register(one) for _ in range(4)))
    room = await create_room(one, alice)
    for member in (carol, bob, dave):
        await add_member(one, room, alice, member)

    async with (
        BoltorezkaClient(_ws(one), alice.access_token) as a,
        BoltorezkaClient(_ws(one), carol.access_token) as c,
        BoltorezkaClient(_ws(two), bob.access_token) as b,
        BoltorezkaClient(_ws(two), dave.access_token, reconnect=False) as d,
    ):
        for client in (a, c, b, d):
            await client.join(room)
        await a.send_message(room, "before the outage")
        await _wait_seqs(b, room, [1])

        private_redis.kill()
        body = await _wait_readiness(one, 503)
        assert "redis" in body["checks"]["bus"], body
        await _wait_readiness(two, 503)

        # Sends are acknowledged with their seq: they are committed, whatever Redis does.
        acks = [await a.send_message(room, f"during the outage {i}") for i in range(5)]
        assert [ack["seq"] for ack in acks] == [2, 3, 4, 5, 6]
        # The sender's own node delivers live without Redis.
        await _wait_seqs(c, room, [1, 2, 3, 4, 5, 6])
        # A logout on node two closes the socket node two holds.
        logout = await two.post("/v1/auth/logout", headers=dave.headers)
        assert logout.status == 204, await logout.text()
        async with asyncio.timeout(PATIENCE):
            while CloseCode.SESSION_REVOKED not in d.close_codes:
                await asyncio.sleep(0.05)

        private_redis.start()
        await private_redis.wait_up()
        await _wait_readiness(one, 200)
        await _wait_readiness(two, 200)
        # Bob's node catches him up from PostgreSQL: nothing new had to be sent for it.
        await _wait_seqs(b, room, [1, 2, 3, 4, 5, 6])

        # And live routing between the nodes works again, both ways.
        await a.send_message(room, "after the outage")
        await _wait_seqs(b, room, [1, 2, 3, 4, 5, 6, 7])
        await b.send_message(room, "reply from node two")
        await _wait_seqs(a, room, [1, 2, 3, 4, 5, 6, 7, 8])
        await _wait_seqs(c, room, [1, 2, 3, 4, 5, 6, 7, 8])
        assert b.reconnects == 0 and a.reconnects == 0
        bodies = [m["body"] for m in b.messages(room)]
        assert len(bodies) == len(set(bodies)) == 8
    assert app_of(one)[GATEWAY].hub.routing_problem() is None

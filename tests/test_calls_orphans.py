"""Calls a previous run left live are ended at start: all of them on a lone node, only its
own when nodes share Redis (each node's id survives its restarts)."""

from __future__ import annotations

import uuid

import asyncpg

from boltorezka.runtime import Services
from boltorezka.store import calls as call_store
from tests.helpers import quick_accounts


async def _live_call(pool: asyncpg.Pool, owner: uuid.UUID, host_node: str) -> uuid.UUID:
    room_id = await pool.fetchval(
        "INSERT INTO rooms (name, kind, created_by) VALUES ($1, 'private', $2) RETURNING id",
        f"room-{host_node}",
        owner,
    )
    call_id = uuid.uuid4()
    assert await call_store.create(pool, call_id, room_id, "p2p", owner, host_node)
    await call_store.add_participant(pool, uuid.uuid4(), call_id, owner, None)
    return call_id


async def _states(pool: asyncpg.Pool) -> dict[uuid.UUID, tuple[str, bool]]:
    rows = await pool.fetch(
        "SELECT s.id, s.state, bool_and(p.left_at IS NOT NULL) AS everyone_left "
        "FROM call_sessions s JOIN call_participants p ON p.call_id = s.id GROUP BY s.id"
    )
    return {row["id"]: (row["state"], row["everyone_left"]) for row in rows}


async def test_only_the_restarted_nodes_calls_end(pool: asyncpg.Pool, services: Services) -> None:
    (owner,) = await quick_accounts(services, 1)
    mine = await _live_call(pool, uuid.UUID(owner.id), "node-a")
    theirs = await _live_call(pool, uuid.UUID(owner.id), "node-b")

    assert await call_store.end_orphaned(pool, "node-a") == 1
    states = await _states(pool)
    assert states[mine] == ("ended", True)
    assert states[theirs] == ("ringing", False)

    assert await call_store.end_orphaned(pool) == 1  # a lone node: everything left is stale
    assert (await _states(pool))[theirs] == ("ended", True)

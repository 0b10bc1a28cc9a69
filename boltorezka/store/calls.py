"""SQL for call sessions and participants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from boltorezka.store import Conn, Executor


@dataclass(frozen=True, slots=True)
class StoredParticipant:
    id: uuid.UUID
    user_id: uuid.UUID
    connection_id: str | None
    connection_node: str | None
    age_seconds: float


@dataclass(frozen=True, slots=True)
class AdoptedCall:
    """A live call as the node that just took it over found it."""

    id: uuid.UUID
    room_id: uuid.UUID
    mode: str
    state: str
    started_by: uuid.UUID | None
    age_seconds: float
    auto_mode: bool
    participants: list[StoredParticipant]
    joined_users: set[uuid.UUID]


async def live_call_id(conn: Executor, room_id: uuid.UUID) -> uuid.UUID | None:
    value: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM call_sessions WHERE room_id = $1 AND state <> 'ended'", room_id
    )
    return value


async def create(
    conn: Executor,
    call_id: uuid.UUID,
    room_id: uuid.UUID,
    mode: str,
    started_by: uuid.UUID,
    host_node: str | None = None,
    *,
    auto_mode: bool = False,
) -> bool:
    """Insert a ringing call; False if the room already has a live one."""
    inserted = await conn.fetchval(
        "INSERT INTO call_sessions (id, room_id, mode, state, started_by, host_node, auto_mode) "
        "VALUES ($1, $2, $3, 'ringing', $4, $5, $6) "
        "ON CONFLICT (room_id) WHERE state <> 'ended' DO NOTHING RETURNING true",
        call_id,
        room_id,
        mode,
        started_by,
        host_node,
        auto_mode,
    )
    return bool(inserted)


async def live_call(conn: Executor, call_id: uuid.UUID) -> tuple[uuid.UUID, str | None] | None:
    """The room and host node of a live call, or None."""
    row = await conn.fetchrow(
        "SELECT room_id, host_node FROM call_sessions WHERE id = $1 AND state <> 'ended'",
        call_id,
    )
    return None if row is None else (row["room_id"], row["host_node"])


async def end(conn: Executor, call_id: uuid.UUID, reason: str) -> bool:
    """End a live call and everyone still in it; False if it had already ended."""
    status: str = await conn.execute(
        "UPDATE call_sessions SET state = 'ended', ended_at = now(), end_reason = $2 "
        "WHERE id = $1 AND state <> 'ended'",
        call_id,
        reason,
    )
    await conn.execute(
        "UPDATE call_participants SET left_at = now(), leave_reason = $2 "
        "WHERE call_id = $1 AND left_at IS NULL",
        call_id,
        reason,
    )
    return status.endswith(" 1")


async def set_state(
    conn: Executor, call_id: uuid.UUID, state: str, end_reason: str | None = None
) -> None:
    await conn.execute(
        "UPDATE call_sessions SET state = $2, "
        "active_at = CASE WHEN $2 = 'active' THEN coalesce(active_at, now()) ELSE active_at END, "
        "ended_at = CASE WHEN $2 = 'ended' THEN now() ELSE ended_at END, "
        "end_reason = coalesce($3, end_reason) WHERE id = $1",
        call_id,
        state,
        end_reason,
    )


async def set_mode(conn: Executor, call_id: uuid.UUID, mode: str) -> None:
    await conn.execute("UPDATE call_sessions SET mode = $2 WHERE id = $1", call_id, mode)


async def add_participant(
    conn: Executor,
    participant_id: uuid.UUID,
    call_id: uuid.UUID,
    user_id: uuid.UUID,
    device_session_id: uuid.UUID | None,
    connection_id: str | None = None,
    connection_node: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO call_participants "
        "(id, call_id, user_id, device_session_id, connection_id, connection_node) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        participant_id,
        call_id,
        user_id,
        device_session_id,
        connection_id,
        connection_node,
    )


async def set_connections(
    conn: Executor, changes: list[tuple[uuid.UUID, str | None, str | None]]
) -> None:
    """Record where participants' connections are now: (participant, connection, node),
    with None for a participant waiting out its grace period."""
    if not changes:
        return
    await conn.execute(
        "UPDATE call_participants AS p SET connection_id = c.connection_id, "
        "connection_node = c.connection_node "
        "FROM unnest($1::uuid[], $2::text[], $3::text[]) AS c(id, connection_id, connection_node) "
        "WHERE p.id = c.id",
        [change[0] for change in changes],
        [change[1] for change in changes],
        [change[2] for change in changes],
    )


async def release_hosted(conn: Executor, host_node: str) -> int:
    """Give up every live call ``host_node`` holds, for another node to take over."""
    status: str = await conn.execute(
        "UPDATE call_sessions SET host_node = NULL WHERE host_node = $1 AND state <> 'ended'",
        host_node,
    )
    return int(status.rsplit(" ", 1)[1])


async def orphaned(conn: Executor, alive_nodes: list[str]) -> list[tuple[uuid.UUID, str | None]]:
    """Live calls whose host gave them up or is not among ``alive_nodes``."""
    rows = await conn.fetch(
        "SELECT id, host_node FROM call_sessions WHERE state <> 'ended' "
        "AND (host_node IS NULL OR NOT host_node = ANY($1::text[]))",
        alive_nodes,
    )
    return [(row["id"], row["host_node"]) for row in rows]


async def held_elsewhere(
    conn: Executor, call_ids: list[uuid.UUID], host_node: str
) -> list[uuid.UUID]:
    """Of ``call_ids``, those stored as ended or with another host (a call whose row is
    not committed yet is still being started here, and is not among them)."""
    rows = await conn.fetch(
        "SELECT id FROM call_sessions WHERE id = ANY($1::uuid[]) "
        "AND (state = 'ended' OR host_node IS DISTINCT FROM $2)",
        call_ids,
        host_node,
    )
    return [row["id"] for row in rows]


async def adopt(
    conn: Conn, call_id: uuid.UUID, expected_host: str | None, host_node: str
) -> AdoptedCall | None:
    """Make ``host_node`` the holder of a live call if ``expected_host`` still holds it
    (compare and set: of several nodes trying at once, one wins); None otherwise."""
    row = await conn.fetchrow(
        "UPDATE call_sessions SET host_node = $3 "
        "WHERE id = $1 AND state <> 'ended' AND host_node IS NOT DISTINCT FROM $2 "
        "RETURNING room_id, mode, state, started_by, auto_mode, "
        "extract(epoch FROM now() - created_at)::float8 AS age",
        call_id,
        expected_host,
        host_node,
    )
    if row is None:
        return None
    people = await conn.fetch(
        "SELECT id, user_id, connection_id, connection_node, left_at IS NULL AS present, "
        "extract(epoch FROM now() - joined_at)::float8 AS age "
        "FROM call_participants WHERE call_id = $1",
        call_id,
    )
    return AdoptedCall(
        id=call_id,
        room_id=row["room_id"],
        mode=row["mode"],
        state=row["state"],
        started_by=row["started_by"],
        age_seconds=row["age"],
        auto_mode=row["auto_mode"],
        participants=[
            StoredParticipant(
                id=p["id"],
                user_id=p["user_id"],
                connection_id=p["connection_id"],
                connection_node=p["connection_node"],
                age_seconds=p["age"],
            )
            for p in people
            if p["present"]
        ],
        joined_users={p["user_id"] for p in people},
    )


async def remove_participant(conn: Executor, participant_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE call_participants SET left_at = now(), leave_reason = $2 "
        "WHERE id = $1 AND left_at IS NULL",
        participant_id,
        reason,
    )

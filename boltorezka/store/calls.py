"""SQL for call sessions and participants."""

from __future__ import annotations

import uuid

from boltorezka.store import Executor


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
) -> bool:
    """Insert a ringing call; False if the room already has a live one."""
    inserted = await conn.fetchval(
        "INSERT INTO call_sessions (id, room_id, mode, state, started_by, host_node) "
        "VALUES ($1, $2, $3, 'ringing', $4, $5) "
        "ON CONFLICT (room_id) WHERE state <> 'ended' DO NOTHING RETURNING true",
        call_id,
        room_id,
        mode,
        started_by,
        host_node,
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
) -> None:
    await conn.execute(
        "INSERT INTO call_participants (id, call_id, user_id, device_session_id) "
        "VALUES ($1, $2, $3, $4)",
        participant_id,
        call_id,
        user_id,
        device_session_id,
    )


async def remove_participant(conn: Executor, participant_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE call_participants SET left_at = now(), leave_reason = $2 "
        "WHERE id = $1 AND left_at IS NULL",
        participant_id,
        reason,
    )


async def end_orphaned(conn: Executor, host_node: str | None = None) -> int:
    """End calls left live by a node that stopped (``host_node``, else any); how many."""
    rows = await conn.fetch(
        "UPDATE call_sessions SET state = 'ended', ended_at = now(), "
        "end_reason = 'server_restart' "
        "WHERE state <> 'ended' AND ($1::text IS NULL OR host_node = $1) RETURNING id",
        host_node,
    )
    await conn.execute(
        "UPDATE call_participants SET left_at = now(), leave_reason = 'server_restart' "
        "WHERE left_at IS NULL AND call_id = ANY($1::uuid[])",
        [row["id"] for row in rows],
    )
    return len(rows)

"""SQL for creating load-test accounts in bulk: a few multi-row statements, not N round trips."""

from __future__ import annotations

import uuid
from datetime import datetime

from boltorezka.store import Conn


async def insert_users(
    conn: Conn, usernames: list[str], password_hash: str
) -> list[tuple[uuid.UUID, str]]:
    """Insert users sharing one password hash; return ``(id, username)`` for those created.

    A taken username is skipped (the caller compares counts), so one clash does not abort
    the statement halfway through with an unhelpful unique-violation.
    """
    rows = await conn.fetch(
        "INSERT INTO users (username, display_name, password_hash) "
        "SELECT name, name, $2 FROM unnest($1::text[]) AS t(name) "
        "ON CONFLICT (lower(username)) DO NOTHING RETURNING id, username",
        usernames,
        password_hash,
    )
    return [(row["id"], row["username"]) for row in rows]


async def insert_sessions(
    conn: Conn,
    user_ids: list[uuid.UUID],
    *,
    device_name: str,
    user_agent: str,
    ip: str,
    expires_at: datetime,
) -> dict[uuid.UUID, uuid.UUID]:
    """One device session per user; return user id -> session id."""
    rows = await conn.fetch(
        "INSERT INTO device_sessions (user_id, device_name, user_agent, ip, expires_at) "
        "SELECT uid, $2, $3, $4, $5 FROM unnest($1::uuid[]) AS t(uid) RETURNING id, user_id",
        user_ids,
        device_name,
        user_agent,
        ip,
        expires_at,
    )
    return {row["user_id"]: row["id"] for row in rows}


async def insert_refresh_tokens(
    conn: Conn, token_hashes: list[bytes], session_ids: list[uuid.UUID]
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id) "
        "SELECT * FROM unnest($1::bytea[], $2::uuid[])",
        token_hashes,
        session_ids,
    )


async def insert_rooms(
    conn: Conn, kind: str, names: list[str], owner_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Insert rooms in the order given; return their ids in that order."""
    rows = await conn.fetch(
        "INSERT INTO rooms (kind, name, created_by) "
        "SELECT $1, name, owner FROM unnest($2::text[], $3::uuid[]) WITH ORDINALITY "
        "AS t(name, owner, ord) ORDER BY ord RETURNING id, name",
        kind,
        names,
        owner_ids,
    )
    # RETURNING order is not guaranteed, so map back through the (unique per call) names.
    by_name = {row["name"]: row["id"] for row in rows}
    return [by_name[name] for name in names]


async def insert_members(
    conn: Conn, room_ids: list[uuid.UUID], user_ids: list[uuid.UUID], roles: list[str]
) -> None:
    await conn.execute(
        "INSERT INTO room_members (room_id, user_id, role) "
        "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])",
        room_ids,
        user_ids,
        roles,
    )

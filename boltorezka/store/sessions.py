"""SQL for device sessions and their refresh tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from boltorezka.store import Conn, Executor
from boltorezka.store.records import DeviceSession

_COLUMNS = (
    "id, user_id, device_name, user_agent, ip, created_at, last_used_at, expires_at, revoked_at"
)


async def create(
    conn: Conn,
    user_id: uuid.UUID,
    *,
    device_name: str,
    user_agent: str,
    ip: str,
    expires_at: datetime,
    token_hash: bytes,
) -> DeviceSession:
    row = await conn.fetchrow(
        f"INSERT INTO device_sessions (user_id, device_name, user_agent, ip, expires_at) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
        user_id,
        device_name,
        user_agent,
        ip,
        expires_at,
    )
    assert row is not None
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", token_hash, row["id"]
    )
    session: DeviceSession = DeviceSession.from_row(row)
    return session


async def is_active(conn: Executor, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    value = await conn.fetchval(
        "SELECT 1 FROM device_sessions WHERE id = $1 AND user_id = $2 "
        "AND revoked_at IS NULL AND expires_at > now()",
        session_id,
        user_id,
    )
    return value is not None


async def consume_refresh_token(conn: Conn, token_hash: bytes) -> tuple[str, uuid.UUID | None]:
    """Mark a refresh token used, exactly once.

    Returns ``("ok", session_id)`` for the first use, ``("reused", session_id)`` for a token
    that was already rotated (or lost a race with a concurrent use), ``("unknown", None)``.
    """
    session_id = await conn.fetchval(
        "UPDATE refresh_tokens SET rotated_at = now() "
        "WHERE token_hash = $1 AND rotated_at IS NULL RETURNING session_id",
        token_hash,
    )
    if session_id is not None:
        return "ok", session_id
    session_id = await conn.fetchval(
        "SELECT session_id FROM refresh_tokens WHERE token_hash = $1", token_hash
    )
    return ("reused", session_id) if session_id is not None else ("unknown", None)


async def lock_live(conn: Conn, session_id: uuid.UUID) -> DeviceSession | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_sessions WHERE id = $1 "
        "AND revoked_at IS NULL AND expires_at > now() FOR UPDATE",
        session_id,
    )
    return None if row is None else DeviceSession.from_row(row)


async def rotate(
    conn: Conn, session_id: uuid.UUID, new_hash: bytes, ip: str, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", new_hash, session_id
    )
    await conn.execute(
        "UPDATE device_sessions SET last_used_at = now(), ip = $2, expires_at = $3 WHERE id = $1",
        session_id,
        ip,
        expires_at,
    )


async def revoke(
    conn: Executor,
    session_id: uuid.UUID,
    reason: str,
    *,
    user_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Revoke a live session (optionally only if ``user_id`` owns it); return its owner."""
    owner: uuid.UUID | None = await conn.fetchval(
        "UPDATE device_sessions SET revoked_at = now(), revoked_reason = $2 "
        "WHERE id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR user_id = $3) "
        "RETURNING user_id",
        session_id,
        reason,
        user_id,
    )
    return owner


async def list_for_user(conn: Executor, user_id: uuid.UUID) -> list[DeviceSession]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM device_sessions WHERE user_id = $1 "
        "AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at DESC",
        user_id,
    )
    return [DeviceSession.from_row(r) for r in rows]


async def get_owned(
    conn: Executor, session_id: uuid.UUID, user_id: uuid.UUID
) -> DeviceSession | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_sessions WHERE id = $1 AND user_id = $2",
        session_id,
        user_id,
    )
    return None if row is None else DeviceSession.from_row(row)

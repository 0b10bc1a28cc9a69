"""SQL for device sessions and their refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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


# A device session is live while it is neither revoked nor expired and its user exists and
# is not disabled (deleting a user cascades to the sessions; disabling does not).
_LIVE = (
    "s.revoked_at IS NULL AND s.expires_at > now() AND EXISTS "
    "(SELECT 1 FROM users u WHERE u.id = s.user_id AND u.disabled_at IS NULL)"
)


async def is_active(conn: Executor, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    value = await conn.fetchval(
        f"SELECT 1 FROM device_sessions s WHERE s.id = $1 AND s.user_id = $2 AND {_LIVE}",
        session_id,
        user_id,
    )
    return value is not None


async def not_live(conn: Executor, session_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Those of ``session_ids`` that are no longer live (revoked, expired, gone, or their
    user deleted or disabled): one query however many there are."""
    rows = await conn.fetch(
        "SELECT x.id FROM unnest($1::uuid[]) AS x(id) WHERE NOT EXISTS "
        f"(SELECT 1 FROM device_sessions s WHERE s.id = x.id AND {_LIVE})",
        list(session_ids),
    )
    return [row["id"] for row in rows]


@dataclass(frozen=True, slots=True)
class RefreshUse:
    """What presenting a refresh token found.

    ``outcome`` is ``"ok"`` for its first use (now marked rotated, with ``successor_hash``),
    ``"rotated"`` for a token already rotated (or one that lost a race with a concurrent
    use, which has committed by the time this returns), ``"unknown"`` otherwise.
    """

    outcome: Literal["ok", "rotated", "unknown"]
    session_id: uuid.UUID | None = None
    rotated_at: datetime | None = None
    # For "rotated": what replaced it (None for rows rotated before migration 0004), and
    # whether that successor is still the session's current token, unrotated.
    successor_hash: bytes | None = None
    successor_current: bool = False


async def consume_refresh_token(
    conn: Conn, token_hash: bytes, successor_hash: bytes, rotated_at: datetime
) -> RefreshUse:
    """Mark a refresh token rotated into ``successor_hash``, exactly once."""
    session_id = await conn.fetchval(
        "UPDATE refresh_tokens SET rotated_at = $3, successor_hash = $2 "
        "WHERE token_hash = $1 AND rotated_at IS NULL RETURNING session_id",
        token_hash,
        successor_hash,
        rotated_at,
    )
    if session_id is not None:
        return RefreshUse("ok", session_id, rotated_at, successor_hash)
    # A concurrent use held the row lock until it committed; this later statement sees it.
    row = await conn.fetchrow(
        "SELECT t.session_id, t.rotated_at, t.successor_hash, "
        "(n.token_hash IS NOT NULL AND n.rotated_at IS NULL) AS successor_current "
        "FROM refresh_tokens t "
        "LEFT JOIN refresh_tokens n ON n.token_hash = t.successor_hash "
        "AND n.session_id = t.session_id "
        "WHERE t.token_hash = $1",
        token_hash,
    )
    if row is None:
        return RefreshUse("unknown")
    return RefreshUse(
        "rotated",
        row["session_id"],
        row["rotated_at"],
        row["successor_hash"],
        bool(row["successor_current"]),
    )


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


async def revoke_all_for_user(
    conn: Executor, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Revoke every live session of the user but ``keep``; return those it revoked."""
    rows = await conn.fetch(
        "UPDATE device_sessions SET revoked_at = now(), revoked_reason = $2 "
        "WHERE user_id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3) "
        "RETURNING id",
        user_id,
        reason,
        keep,
    )
    return [row["id"] for row in rows]

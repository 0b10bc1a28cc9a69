"""SQL for users."""

from __future__ import annotations

import uuid

from boltorezka.store import Conn, Executor
from boltorezka.store.records import User

_USER_COLUMNS = "id, username, display_name, bio, avatar_url, created_at"


async def create(conn: Conn, username: str, display_name: str, password_hash: str) -> User | None:
    """Insert a user; return None when the username (case-insensitively) is taken."""
    row = await conn.fetchrow(
        f"INSERT INTO users (username, display_name, password_hash) VALUES ($1, $2, $3) "
        f"ON CONFLICT (lower(username)) DO NOTHING RETURNING {_USER_COLUMNS}",
        username,
        display_name,
        password_hash,
    )
    return None if row is None else User.from_row(row)


async def get(conn: Executor, user_id: uuid.UUID) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1 AND disabled_at IS NULL", user_id
    )
    return None if row is None else User.from_row(row)


async def credentials(conn: Executor, username: str) -> tuple[uuid.UUID, str] | None:
    row = await conn.fetchrow(
        "SELECT id, password_hash FROM users WHERE lower(username) = lower($1) "
        "AND disabled_at IS NULL",
        username,
    )
    return None if row is None else (row["id"], row["password_hash"])


async def set_password_hash(conn: Executor, user_id: uuid.UUID, value: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, value)


async def update_profile(
    conn: Executor,
    user_id: uuid.UUID,
    *,
    display_name: str | None,
    bio: str | None,
    avatar_url: str | None,
    clear_avatar: bool,
) -> User | None:
    row = await conn.fetchrow(
        f"""
        UPDATE users SET
            display_name = coalesce($2, display_name),
            bio = coalesce($3, bio),
            avatar_url = CASE WHEN $5 THEN NULL ELSE coalesce($4, avatar_url) END,
            updated_at = now()
        WHERE id = $1 AND disabled_at IS NULL
        RETURNING {_USER_COLUMNS}
        """,
        user_id,
        display_name,
        bio,
        avatar_url,
        clear_avatar,
    )
    return None if row is None else User.from_row(row)

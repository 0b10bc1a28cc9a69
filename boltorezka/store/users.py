"""SQL for users."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from boltorezka.store import Conn, Executor
from boltorezka.store.records import Instant, Record, User

_USER_COLUMNS = "id, username, display_name, bio, avatar_url, created_at"
_ADMIN_COLUMNS = "id, username, display_name, created_at, server_role, disabled_at"

ServerRole = Literal["admin", "moderator"]


class AdminUser(Record):
    """A user as operators see them: with the server role and whether they are disabled."""

    id: uuid.UUID
    username: str
    display_name: str
    created_at: Instant
    server_role: ServerRole | None
    disabled_at: Instant | None


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


async def live_session_user(
    conn: Executor, session_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[User, set[uuid.UUID]] | None:
    """The user of a live device session, with the rooms they are a member of; None when
    the session is not live (revoked, expired, or its user disabled). One round trip for
    what a WebSocket ``auth`` needs."""
    row = await conn.fetchrow(
        f"SELECT {', '.join('u.' + c.strip() for c in _USER_COLUMNS.split(','))}, "
        "ARRAY(SELECT m.room_id FROM room_members m JOIN rooms r ON r.id = m.room_id "
        "      WHERE m.user_id = u.id AND r.deleted_at IS NULL) AS member_rooms "
        "FROM device_sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now() "
        "AND u.disabled_at IS NULL",
        session_id,
        user_id,
    )
    return None if row is None else (User.from_row(row), set(row["member_rooms"]))


async def credentials(conn: Executor, username: str) -> tuple[uuid.UUID, str, bool] | None:
    """The user's id, password hash and whether the account is disabled."""
    row = await conn.fetchrow(
        "SELECT id, password_hash, disabled_at IS NOT NULL AS disabled FROM users "
        "WHERE lower(username) = lower($1)",
        username,
    )
    return None if row is None else (row["id"], row["password_hash"], row["disabled"])


async def session_owner_disabled(conn: Executor, session_id: uuid.UUID) -> bool:
    """Whether the device session belongs to a disabled account."""
    disabled = await conn.fetchval(
        "SELECT u.disabled_at IS NOT NULL FROM device_sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.id = $1",
        session_id,
    )
    return bool(disabled)


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


# --- Operators: server roles, disabled accounts, the user list. ---


async def server_role(conn: Executor, user_id: uuid.UUID) -> ServerRole | None:
    """The server role of a live (not disabled) account."""
    role: ServerRole | None = await conn.fetchval(
        "SELECT server_role FROM users WHERE id = $1 AND disabled_at IS NULL", user_id
    )
    return role


async def admin_view(conn: Executor, user_id: uuid.UUID) -> AdminUser | None:
    row = await conn.fetchrow(f"SELECT {_ADMIN_COLUMNS} FROM users WHERE id = $1", user_id)
    return None if row is None else AdminUser.from_row(row)


async def admin_view_by_name(conn: Executor, username: str) -> AdminUser | None:
    row = await conn.fetchrow(
        f"SELECT {_ADMIN_COLUMNS} FROM users WHERE lower(username) = lower($1)", username
    )
    return None if row is None else AdminUser.from_row(row)


async def lock_admin_view(conn: Conn, user_id: uuid.UUID) -> AdminUser | None:
    """The user, locked until the transaction ends, so role and state changes serialise."""
    row = await conn.fetchrow(
        f"SELECT {_ADMIN_COLUMNS} FROM users WHERE id = $1 FOR UPDATE", user_id
    )
    return None if row is None else AdminUser.from_row(row)


async def set_server_role(
    conn: Executor, user_id: uuid.UUID, role: ServerRole | None
) -> AdminUser | None:
    row = await conn.fetchrow(
        f"UPDATE users SET server_role = $2, updated_at = now() WHERE id = $1 "
        f"RETURNING {_ADMIN_COLUMNS}",
        user_id,
        role,
    )
    return None if row is None else AdminUser.from_row(row)


async def set_disabled(conn: Executor, user_id: uuid.UUID, disabled: bool) -> AdminUser | None:
    """Disable (keeping the first time) or enable the account."""
    row = await conn.fetchrow(
        f"UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) "
        f"ELSE NULL END, updated_at = now() WHERE id = $1 RETURNING {_ADMIN_COLUMNS}",
        user_id,
        disabled,
    )
    return None if row is None else AdminUser.from_row(row)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching what starts with ``prefix`` literally (``_`` is a wildcard
    to LIKE, and usernames may contain it)."""
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def list_for_admin(
    conn: Executor,
    prefix: str | None,
    limit: int,
    cursor: tuple[datetime, uuid.UUID] | None,
) -> list[AdminUser]:
    """Users, newest first, optionally those whose username starts with ``prefix``."""
    conditions = ["TRUE"]
    args: list[object] = []
    if prefix:
        args.append(_like_prefix(prefix))
        conditions.append(f"lower(username) LIKE ${len(args)}")
    if cursor is not None:
        args.extend(cursor)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_ADMIN_COLUMNS} FROM users WHERE {' AND '.join(conditions)} "
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    return [AdminUser.from_row(r) for r in rows]


async def get_by_username(conn: Executor, username: str) -> User | None:
    """The user with this username, compared case-insensitively as registration does
    (``users_username_lower_key``); disabled accounts are not found."""
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE lower(username) = lower($1) "
        "AND disabled_at IS NULL",
        username,
    )
    return None if row is None else User.from_row(row)


# --- Account self-service: password changes, deleted accounts, password reset tokens. ---

ResetOutcome = Literal["ok", "used", "expired", "unknown"]


async def live_password_hash(conn: Executor, user_id: uuid.UUID) -> str | None:
    """The password hash of a live (not disabled, not deleted) account."""
    value: str | None = await conn.fetchval(
        "SELECT password_hash FROM users WHERE id = $1 AND disabled_at IS NULL", user_id
    )
    return value


async def is_deleted(conn: Executor, user_id: uuid.UUID) -> bool:
    value = await conn.fetchval("SELECT deleted_at IS NOT NULL FROM users WHERE id = $1", user_id)
    return bool(value)


async def owned_room_ids(conn: Executor, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Rooms (not deleted) the user owns, oldest first."""
    rows = await conn.fetch(
        "SELECT r.id FROM room_members m JOIN rooms r ON r.id = m.room_id "
        "WHERE m.user_id = $1 AND m.role = 'owner' AND r.deleted_at IS NULL "
        "ORDER BY r.created_at, r.id",
        user_id,
    )
    return [row["id"] for row in rows]


async def end_memberships(conn: Executor, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Remove the user from every room; the ids of the rooms (not deleted) they were in."""
    rows = await conn.fetch(
        "WITH gone AS (DELETE FROM room_members WHERE user_id = $1 RETURNING room_id) "
        "SELECT g.room_id FROM gone g JOIN rooms r ON r.id = g.room_id "
        "WHERE r.deleted_at IS NULL ORDER BY g.room_id",
        user_id,
    )
    return [row["room_id"] for row in rows]


async def erase(conn: Executor, user_id: uuid.UUID) -> bool:
    """Turn the account into a tombstone: profile and credentials gone, the username
    replaced by a random ``deleted-…`` one (not derived from the id, which is public, so
    nobody can register it first and block the deletion), disabled as well as deleted.
    False when the account was deleted already."""
    status: str = await conn.execute(
        "UPDATE users SET "
        "username = 'deleted-' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24), "
        "display_name = 'Deleted user', bio = '', avatar_url = NULL, password_hash = '!', "
        "server_role = NULL, disabled_at = coalesce(disabled_at, now()), deleted_at = now(), "
        "updated_at = now() "
        "WHERE id = $1 AND deleted_at IS NULL",
        user_id,
    )
    return status.endswith(" 1")


async def add_password_reset(
    conn: Executor,
    user_id: uuid.UUID,
    token_hash: bytes,
    expires_at: datetime,
    issued_by: uuid.UUID | None,
) -> None:
    await conn.execute(
        "INSERT INTO password_reset_tokens (token_hash, user_id, issued_by, expires_at) "
        "VALUES ($1, $2, $3, $4)",
        token_hash,
        user_id,
        issued_by,
        expires_at,
    )


async def drop_unused_password_resets(conn: Executor, user_id: uuid.UUID) -> int:
    """Delete the user's tokens not used yet, so none issued before keeps working."""
    status: str = await conn.execute(
        "DELETE FROM password_reset_tokens WHERE user_id = $1 AND used_at IS NULL", user_id
    )
    return int(status.rsplit(" ", 1)[-1])


async def consume_password_reset(
    conn: Executor, token_hash: bytes
) -> tuple[ResetOutcome, uuid.UUID | None]:
    """Mark a reset token used, exactly once (concurrent uses serialise on the row); else
    why not, with the user it was for when it is known."""
    user_id: uuid.UUID | None = await conn.fetchval(
        "UPDATE password_reset_tokens SET used_at = now() "
        "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id",
        token_hash,
    )
    if user_id is not None:
        return "ok", user_id
    row = await conn.fetchrow(
        "SELECT user_id, used_at IS NOT NULL AS used FROM password_reset_tokens "
        "WHERE token_hash = $1",
        token_hash,
    )
    if row is None:
        return "unknown", None
    return ("used" if row["used"] else "expired"), row["user_id"]

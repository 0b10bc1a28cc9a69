"""SQL for messages: history pages, edits, soft deletes, search (sends: store/writer.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from boltorezka.store import Executor
from boltorezka.store.records import Message

# Deleted messages keep their row and seq (so history stays gapless) but never their body.
_COLUMNS = (
    "m.id, m.room_id, m.seq, m.sender_id, m.client_msg_id, "
    "CASE WHEN m.deleted_at IS NULL THEN m.body ELSE '' END AS body, "
    "m.reply_to, m.created_at, m.edited_at, m.deleted_at"
)


async def get(conn: Executor, room_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM messages m WHERE m.room_id = $1 AND m.id = $2",
        room_id,
        message_id,
    )
    return None if row is None else Message.from_row(row)


async def page(
    conn: Executor,
    room_id: uuid.UUID,
    *,
    before: int | None,
    after: int | None,
    limit: int,
) -> list[Message]:
    """Messages in ascending seq: forward from ``after``, else the newest before ``before``."""
    if after is not None:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM messages m WHERE m.room_id = $1 AND m.seq > $2 "
            f"AND ($3::bigint IS NULL OR m.seq < $3) ORDER BY m.seq ASC LIMIT $4",
            room_id,
            after,
            before,
            limit,
        )
        return [Message.from_row(r) for r in rows]
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM messages m WHERE m.room_id = $1 "
        f"AND ($2::bigint IS NULL OR m.seq < $2) ORDER BY m.seq DESC LIMIT $3",
        room_id,
        before,
        limit,
    )
    return [Message.from_row(r) for r in reversed(rows)]


async def edit(conn: Executor, message_id: uuid.UUID, body: str) -> Message:
    row = await conn.fetchrow(
        f"UPDATE messages m SET body = $2, edited_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        message_id,
        body,
    )
    message: Message = Message.from_row(row)
    return message


async def soft_delete(conn: Executor, message_id: uuid.UUID) -> Message:
    row = await conn.fetchrow(
        f"UPDATE messages m SET body = '', deleted_at = coalesce(deleted_at, now()) "
        f"WHERE id = $1 RETURNING {_COLUMNS}",
        message_id,
    )
    message: Message = Message.from_row(row)
    return message


async def search(
    conn: Executor,
    user_id: uuid.UUID,
    query: str,
    *,
    room_id: uuid.UUID | None,
    limit: int,
    cursor: tuple[datetime, uuid.UUID] | None,
) -> list[Message]:
    """Full-text search over rooms the user is a member of, newest first."""
    args: list[object] = [user_id, query, room_id, limit]
    cursor_sql = ""
    if cursor is not None:
        args.extend(cursor)
        cursor_sql = "AND (m.created_at, m.id) < ($5, $6)"
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM messages m "
        f"JOIN room_members rm ON rm.room_id = m.room_id AND rm.user_id = $1 "
        f"JOIN rooms r ON r.id = m.room_id AND r.deleted_at IS NULL "
        f"WHERE m.deleted_at IS NULL AND m.search @@ websearch_to_tsquery('simple', $2) "
        f"AND ($3::uuid IS NULL OR m.room_id = $3) {cursor_sql} "
        f"ORDER BY m.created_at DESC, m.id DESC LIMIT $4",
        *args,
    )
    return [Message.from_row(r) for r in rows]

"""SQL for room moderation: bans, mutes and message reports (migration 0007).

A ban or mute whose ``expires_at`` has passed counts for nothing: every read here filters
on it, so nothing has to sweep expired rows for them to stop holding.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from boltorezka.store import Executor
from boltorezka.store.records import Instant, Record

Resolution = Literal["actioned", "dismissed"]
ReportStatus = Literal["open", "resolved", "all"]

_ACTIVE = "(expires_at IS NULL OR expires_at > now())"
_REPORT_COLUMNS = (
    "id, room_id, message_id, reporter_id, sender_id, message_seq, message_body, reason, "
    "created_at, resolved_by, resolved_at, resolution, resolution_note"
)


class Ban(Record):
    """A user kept out of a room; ``expiresAt`` null: until unbanned."""

    room_id: uuid.UUID
    user_id: uuid.UUID
    banned_by: uuid.UUID | None
    reason: str
    created_at: Instant
    expires_at: Instant | None


class Mute(Record):
    """A member who may read but not post or start calls; ``expiresAt`` null: until unmuted."""

    room_id: uuid.UUID
    user_id: uuid.UUID
    muted_by: uuid.UUID | None
    reason: str
    created_at: Instant
    expires_at: Instant | None


class Report(Record):
    """A member's report of a message, with the message as it was when reported;
    ``resolvedAt`` null: still open."""

    id: uuid.UUID
    room_id: uuid.UUID
    message_id: uuid.UUID
    reporter_id: uuid.UUID
    sender_id: uuid.UUID
    message_seq: int
    message_body: str
    reason: str
    created_at: Instant
    resolved_by: uuid.UUID | None
    resolved_at: Instant | None
    resolution: Resolution | None
    resolution_note: str | None


def _expiry(duration_seconds: int | None) -> timedelta | None:
    return None if duration_seconds is None else timedelta(seconds=duration_seconds)


# --- bans and mutes: one kind of row in two tables ----------------------------------------

# The sanction tables and the column that names who imposed the sanction.
_Table = Literal["room_bans", "room_mutes"]
_BY_COLUMN: dict[_Table, str] = {"room_bans": "banned_by", "room_mutes": "muted_by"}


async def _put(
    conn: Executor,
    table: _Table,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    by: uuid.UUID,
    reason: str,
    duration_seconds: int | None,
) -> Any:
    """Impose (or impose again, replacing reason and expiry) from now; the row."""
    by_column = _BY_COLUMN[table]
    return await conn.fetchrow(
        f"INSERT INTO {table} (room_id, user_id, {by_column}, reason, expires_at) "
        f"VALUES ($1, $2, $3, $4, now() + $5::interval) "
        f"ON CONFLICT (room_id, user_id) DO UPDATE SET {by_column} = EXCLUDED.{by_column}, "
        f"reason = EXCLUDED.reason, created_at = now(), expires_at = EXCLUDED.expires_at "
        f"RETURNING room_id, user_id, {by_column}, reason, created_at, expires_at",
        room_id,
        user_id,
        by,
        reason,
        _expiry(duration_seconds),
    )


async def _in_force(conn: Executor, table: _Table, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    found = await conn.fetchval(
        f"SELECT 1 FROM {table} WHERE room_id = $1 AND user_id = $2 AND {_ACTIVE}",
        room_id,
        user_id,
    )
    return found is not None


async def _all_in_force(conn: Executor, table: _Table, room_id: uuid.UUID) -> list[Any]:
    return await conn.fetch(
        f"SELECT room_id, user_id, {_BY_COLUMN[table]}, reason, created_at, expires_at "
        f"FROM {table} WHERE room_id = $1 AND {_ACTIVE} ORDER BY created_at DESC, user_id",
        room_id,
    )


async def put_ban(
    conn: Executor,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    by: uuid.UUID,
    reason: str,
    duration_seconds: int | None,
) -> Ban:
    """Ban (or ban again, replacing reason and expiry) from now."""
    ban: Ban = Ban.from_row(
        await _put(conn, "room_bans", room_id, user_id, by, reason, duration_seconds)
    )
    return ban


async def is_banned(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return await _in_force(conn, "room_bans", room_id, user_id)


async def lift_ban(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Remove the ban; whether one was in force."""
    return await _lift(conn, "room_bans", room_id, user_id)


async def bans(conn: Executor, room_id: uuid.UUID) -> list[Ban]:
    return [Ban.from_row(r) for r in await _all_in_force(conn, "room_bans", room_id)]


async def put_mute(
    conn: Executor,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    by: uuid.UUID,
    reason: str,
    duration_seconds: int | None,
) -> Mute:
    """Mute (or mute again, replacing reason and expiry) from now."""
    mute: Mute = Mute.from_row(
        await _put(conn, "room_mutes", room_id, user_id, by, reason, duration_seconds)
    )
    return mute


async def is_muted(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return await _in_force(conn, "room_mutes", room_id, user_id)


async def lift_mute(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Remove the mute; whether one was in force."""
    return await _lift(conn, "room_mutes", room_id, user_id)


async def mutes(conn: Executor, room_id: uuid.UUID) -> list[Mute]:
    return [Mute.from_row(r) for r in await _all_in_force(conn, "room_mutes", room_id)]


# --- reports --------------------------------------------------------------------------------


async def add_report(
    conn: Executor,
    room_id: uuid.UUID,
    message_id: uuid.UUID,
    reporter_id: uuid.UUID,
    reason: str,
) -> Report | None:
    """Report the message, copying it as it is now; None when the reporter's report of it
    is still open."""
    row = await conn.fetchrow(
        f"INSERT INTO message_reports (room_id, message_id, reporter_id, sender_id, "
        f"message_seq, message_body, reason) "
        f"SELECT m.room_id, m.id, $3, m.sender_id, m.seq, m.body, $4 FROM messages m "
        f"WHERE m.room_id = $1 AND m.id = $2 "
        f"ON CONFLICT (message_id, reporter_id) WHERE resolved_at IS NULL DO NOTHING "
        f"RETURNING {_REPORT_COLUMNS}",
        room_id,
        message_id,
        reporter_id,
        reason,
    )
    return None if row is None else Report.from_row(row)


async def reports(
    conn: Executor,
    room_id: uuid.UUID,
    status: ReportStatus,
    limit: int,
    cursor: tuple[datetime, uuid.UUID] | None,
) -> list[Report]:
    """The room's reports, newest first."""
    conditions = ["room_id = $1"]
    args: list[object] = [room_id]
    if status == "open":
        conditions.append("resolved_at IS NULL")
    elif status == "resolved":
        conditions.append("resolved_at IS NOT NULL")
    if cursor is not None:
        args.extend(cursor)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_REPORT_COLUMNS} FROM message_reports WHERE {' AND '.join(conditions)} "
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    return [Report.from_row(r) for r in rows]


async def get_report(conn: Executor, room_id: uuid.UUID, report_id: uuid.UUID) -> Report | None:
    row = await conn.fetchrow(
        f"SELECT {_REPORT_COLUMNS} FROM message_reports WHERE room_id = $1 AND id = $2",
        room_id,
        report_id,
    )
    return None if row is None else Report.from_row(row)


async def resolve_report(
    conn: Executor,
    room_id: uuid.UUID,
    report_id: uuid.UUID,
    by: uuid.UUID,
    resolution: Resolution,
    note: str | None,
) -> Report | None:
    """Resolve an open report; None when there is no open report with this id."""
    row = await conn.fetchrow(
        f"UPDATE message_reports SET resolved_by = $3, resolved_at = now(), resolution = $4, "
        f"resolution_note = $5 WHERE room_id = $1 AND id = $2 AND resolved_at IS NULL "
        f"RETURNING {_REPORT_COLUMNS}",
        room_id,
        report_id,
        by,
        resolution,
        note,
    )
    return None if row is None else Report.from_row(row)


async def _lift(
    conn: Executor,
    table: _Table,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
) -> bool:
    # An expired row goes too, but lifting it lifted nothing.
    in_force = await conn.fetchval(
        f"WITH gone AS (DELETE FROM {table} WHERE room_id = $1 AND user_id = $2 "
        f"RETURNING expires_at) SELECT bool_or({_ACTIVE}) FROM gone",
        room_id,
        user_id,
    )
    return bool(in_force)

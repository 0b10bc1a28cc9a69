"""SQL for rooms and their members."""

from __future__ import annotations

import uuid
from datetime import datetime

from boltorezka.store import Conn, Executor
from boltorezka.store.records import Member, Record, Room

_ROOM_COLUMNS = (
    "r.id, r.kind, r.name, r.topic, r.created_by, r.last_seq, r.created_at, r.updated_at, "
    "r.archived_at"
)
_MEMBER_COLUMNS = (
    "m.room_id, m.user_id, m.role, m.joined_at, m.last_read_seq, u.username, u.display_name"
)


async def create(conn: Conn, kind: str, name: str, topic: str, owner_id: uuid.UUID) -> Room:
    row = await conn.fetchrow(
        f"INSERT INTO rooms AS r (kind, name, topic, created_by) VALUES ($1, $2, $3, $4) "
        f"RETURNING {_ROOM_COLUMNS}",
        kind,
        name,
        topic,
        owner_id,
    )
    assert row is not None
    await conn.execute(
        "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, 'owner')",
        row["id"],
        owner_id,
    )
    room: Room = Room.from_row(row)
    return room


async def get_or_create_direct(
    conn: Conn, user_a: uuid.UUID, user_b: uuid.UUID, name: str
) -> tuple[Room, bool]:
    key = ":".join(sorted((str(user_a), str(user_b))))
    row = await conn.fetchrow(
        f"INSERT INTO rooms AS r (kind, name, created_by, direct_key) "
        f"VALUES ('direct', $1, $2, $3) ON CONFLICT (direct_key) DO NOTHING "
        f"RETURNING {_ROOM_COLUMNS}",
        name,
        user_a,
        key,
    )
    created = row is not None
    if row is None:
        row = await conn.fetchrow(f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE direct_key = $1", key)
    else:
        await conn.execute(
            "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, 'member'), "
            "($1, $3, 'member')",
            row["id"],
            user_a,
            user_b,
        )
    room: Room = Room.from_row(row)
    return room, created


async def get_with_role(
    conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID, *, for_update: bool = False
) -> tuple[Room, str | None] | None:
    """The live (not deleted) room and the user's role in it, or None."""
    if for_update:
        # Lock first, then read the role in a statement of its own: its snapshot is taken
        # once the lock is held, so a membership change that committed while this waited
        # (every one of them locks the room row too) is seen, not the role from before.
        locked = await conn.fetchrow(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r "
            "WHERE r.id = $1 AND r.deleted_at IS NULL FOR UPDATE",
            room_id,
        )
        if locked is None:
            return None
        role: str | None = await conn.fetchval(
            "SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        return Room.from_row(locked), role
    row = await conn.fetchrow(
        f"SELECT {_ROOM_COLUMNS}, m.role AS my_role FROM rooms r "
        f"LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $2 "
        f"WHERE r.id = $1 AND r.deleted_at IS NULL",
        room_id,
        user_id,
    )
    if row is None:
        return None
    return Room.from_row(row), row["my_role"]


async def member_count(conn: Executor, room_id: uuid.UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM room_members WHERE room_id = $1", room_id
    )
    return count


async def list_for_user(conn: Executor, user_id: uuid.UUID) -> list[tuple[Room, str, int]]:
    rows = await conn.fetch(
        f"SELECT {_ROOM_COLUMNS}, m.role, m.last_read_seq FROM room_members m "
        f"JOIN rooms r ON r.id = m.room_id WHERE m.user_id = $1 AND r.deleted_at IS NULL "
        f"ORDER BY r.updated_at DESC, r.id",
        user_id,
    )
    return [(Room.from_row(r), r["role"], r["last_read_seq"]) for r in rows]


async def list_public(
    conn: Executor, query: str | None, limit: int, cursor: tuple[datetime, uuid.UUID] | None
) -> list[Room]:
    conditions = ["r.kind = 'public'", "r.deleted_at IS NULL", "r.archived_at IS NULL"]
    args: list[object] = []
    if query:
        args.append(query)
        conditions.append(f"r.search @@ websearch_to_tsquery('simple', ${len(args)})")
    if cursor is not None:
        args.extend(cursor)
        conditions.append(f"(r.created_at, r.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE {' AND '.join(conditions)} "
        f"ORDER BY r.created_at DESC, r.id DESC LIMIT ${len(args)}",
        *args,
    )
    return [Room.from_row(r) for r in rows]


async def update(conn: Executor, room_id: uuid.UUID, name: str | None, topic: str | None) -> Room:
    row = await conn.fetchrow(
        f"UPDATE rooms r SET name = coalesce($2, name), topic = coalesce($3, topic), "
        f"updated_at = now() WHERE id = $1 RETURNING {_ROOM_COLUMNS}",
        room_id,
        name,
        topic,
    )
    room: Room = Room.from_row(row)
    return room


async def set_archived(conn: Executor, room_id: uuid.UUID, archived: bool) -> Room:
    row = await conn.fetchrow(
        f"UPDATE rooms r SET archived_at = CASE WHEN $2 THEN coalesce(archived_at, now()) "
        f"ELSE NULL END, updated_at = now() WHERE id = $1 RETURNING {_ROOM_COLUMNS}",
        room_id,
        archived,
    )
    room: Room = Room.from_row(row)
    return room


async def soft_delete(conn: Executor, room_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE rooms SET deleted_at = now(), updated_at = now() WHERE id = $1", room_id
    )


async def members(conn: Executor, room_id: uuid.UUID) -> list[Member]:
    rows = await conn.fetch(
        f"SELECT {_MEMBER_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id "
        f"WHERE m.room_id = $1 ORDER BY m.joined_at, m.user_id",
        room_id,
    )
    return [Member.from_row(r) for r in rows]


async def get_member(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> Member | None:
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id "
        f"WHERE m.room_id = $1 AND m.user_id = $2",
        room_id,
        user_id,
    )
    return None if row is None else Member.from_row(row)


async def add_member(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID, role: str) -> bool:
    """Insert a membership; False when the user is already a member."""
    status: str = await conn.execute(
        "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
        room_id,
        user_id,
        role,
    )
    return status.endswith(" 1")


async def remove_member(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    status: str = await conn.execute(
        "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", room_id, user_id
    )
    return status.endswith(" 1")


async def set_role(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID, role: str) -> None:
    await conn.execute(
        "UPDATE room_members SET role = $3 WHERE room_id = $1 AND user_id = $2",
        room_id,
        user_id,
        role,
    )


async def member_ids(conn: Executor, room_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT user_id FROM room_members WHERE room_id = $1", room_id)
    return [r["user_id"] for r in rows]


async def set_read_marker(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID, seq: int) -> int:
    """Advance the read marker (never backwards); return the marker now stored."""
    value: int = await conn.fetchval(
        "UPDATE room_members SET last_read_seq = GREATEST(last_read_seq, $3) "
        "WHERE room_id = $1 AND user_id = $2 RETURNING last_read_seq",
        room_id,
        user_id,
        seq,
    )
    return value


async def read_markers(conn: Executor, room_id: uuid.UUID) -> dict[uuid.UUID, int]:
    rows = await conn.fetch(
        "SELECT user_id, last_read_seq FROM room_members WHERE room_id = $1", room_id
    )
    return {r["user_id"]: r["last_read_seq"] for r in rows}


async def room_ids_for_user(conn: Executor, user_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT m.room_id FROM room_members m JOIN rooms r ON r.id = m.room_id "
        "WHERE m.user_id = $1 AND r.deleted_at IS NULL",
        user_id,
    )
    return {r["room_id"] for r in rows}


async def last_seq_and_members(
    conn: Executor, room_id: uuid.UUID
) -> tuple[int, list[uuid.UUID]] | None:
    """The room's newest seq and its members' ids, in one round trip (a join's snapshot);
    None if there is no such room."""
    row = await conn.fetchrow(
        "SELECT r.last_seq, ARRAY(SELECT m.user_id FROM room_members m WHERE m.room_id = r.id) "
        "AS members FROM rooms r WHERE r.id = $1",
        room_id,
    )
    return None if row is None else (int(row["last_seq"]), list(row["members"]))


async def room_last_seq(conn: Executor, room_id: uuid.UUID) -> int:
    value: int = await conn.fetchval("SELECT last_seq FROM rooms WHERE id = $1", room_id)
    return value


# --- Operators: every room, whatever its kind or the caller's membership. ---


class AdminRoom(Record):
    room: Room
    member_count: int


async def get_for_admin(
    conn: Executor, room_id: uuid.UUID, *, for_update: bool = False
) -> Room | None:
    """The live (not deleted) room, whoever is in it."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.id = $1 AND r.deleted_at IS NULL{lock}",
        room_id,
    )
    return None if row is None else Room.from_row(row)


async def list_for_admin(
    conn: Executor,
    prefix: str | None,
    limit: int,
    cursor: tuple[datetime, uuid.UUID] | None,
) -> list[AdminRoom]:
    """Live rooms of every kind, newest first, optionally those whose name starts with
    ``prefix`` (case-insensitively), with their member counts."""
    conditions = ["r.deleted_at IS NULL"]
    args: list[object] = []
    if prefix:
        args.append(prefix.lower())
        conditions.append(f"starts_with(lower(r.name), ${len(args)})")
    if cursor is not None:
        args.extend(cursor)
        conditions.append(f"(r.created_at, r.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_ROOM_COLUMNS}, (SELECT count(*) FROM room_members m WHERE m.room_id = r.id) "
        f"AS member_count FROM rooms r WHERE {' AND '.join(conditions)} "
        f"ORDER BY r.created_at DESC, r.id DESC LIMIT ${len(args)}",
        *args,
    )
    return [AdminRoom(room=Room.from_row(r), member_count=r["member_count"]) for r in rows]

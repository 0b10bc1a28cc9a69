"""SQL for the audit log of security-relevant actions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from boltorezka.context import RequestInfo
from boltorezka.store import Executor
from boltorezka.store.records import Instant, Record


async def record(
    conn: Executor,
    action: str,
    info: RequestInfo,
    *,
    actor_id: uuid.UUID | None,
    target_type: str | None = None,
    target_id: str | uuid.UUID | None = None,
    room_id: uuid.UUID | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor_id, action, target_type, target_id, room_id, request_id, "
        "ip, outcome, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        actor_id,
        action,
        target_type,
        None if target_id is None else str(target_id),
        room_id,
        info.request_id or None,
        info.ip or None,
        outcome,
        details or {},
    )


class AuditEntry(Record):
    id: int
    at: Instant
    actor_id: uuid.UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    room_id: uuid.UUID | None
    request_id: str | None
    ip: str | None
    outcome: str
    details: dict[str, Any]


_COLUMNS = (
    "id, at, actor_id, action, target_type, target_id, room_id, request_id, ip, outcome, details"
)


async def entries(
    conn: Executor,
    *,
    actor_id: uuid.UUID | None = None,
    action: str | None = None,
    room_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int,
) -> list[AuditEntry]:
    """Entries newest first (by id: the order they were written), each filter optional;
    ``since`` is inclusive, ``until`` exclusive; ``before_id`` continues a page."""
    conditions = ["TRUE"]
    args: list[object] = []
    for column, operator, value in (
        ("actor_id", "=", actor_id),
        ("action", "=", action),
        ("room_id", "=", room_id),
        ("at", ">=", since),
        ("at", "<", until),
        ("id", "<", before_id),
    ):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} {operator} ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(conditions)} "
        f"ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    return [AuditEntry.from_row(r) for r in rows]

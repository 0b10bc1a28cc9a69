"""SQL for the audit log of security-relevant actions."""

from __future__ import annotations

import uuid
from typing import Any

from boltorezka.context import RequestInfo
from boltorezka.store import Executor


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

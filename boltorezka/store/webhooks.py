"""SQL for webhook endpoints and their outbox (migration ``0008_webhooks.sql``).

The outbox is filled by triggers on the tables whose changes are events, in the change's
own transaction; :func:`enqueue` does the same for code that has no trigger. Dispatchers on
every node share the due rows through :func:`claim`: ``FOR UPDATE SKIP LOCKED`` keeps two
claims from taking one row, and the claim's lease keeps the row from coming due again
while it is being delivered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from boltorezka.store import Executor
from boltorezka.store.records import Instant, Record


class WebhookEndpoint(Record):
    """An endpoint as operators see it: never its secret, which is shown once."""

    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    created_by: uuid.UUID | None
    created_at: Instant
    # Deliveries not yet made, and those given up on (kept for the retention period).
    pending: int
    failed: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed outbox row, with what sending it needs."""

    id: int
    event_id: uuid.UUID
    event_type: str
    payload: str  # JSON text, as PostgreSQL stores it (stable across attempts)
    created_at: datetime
    attempts: int  # including this one
    url: str
    # Kept out of every log line and traceback that prints a delivery.
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    oldest_seconds: float


_ENDPOINT_COLUMNS = (
    "e.id, e.url, e.event_types, e.description, e.created_by, e.created_at, "
    "(SELECT count(*) FROM webhook_outbox o WHERE o.endpoint_id = e.id "
    " AND o.delivered_at IS NULL AND o.failed_at IS NULL) AS pending, "
    "(SELECT count(*) FROM webhook_outbox o WHERE o.endpoint_id = e.id "
    " AND o.failed_at IS NOT NULL) AS failed"
)


async def create_endpoint(
    conn: Executor,
    url: str,
    secret: str,
    event_types: list[str],
    description: str,
    created_by: uuid.UUID | None,
) -> WebhookEndpoint:
    new_id = await conn.fetchval(
        "INSERT INTO webhook_endpoints (url, secret, event_types, description, created_by) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id",
        url,
        secret,
        event_types,
        description,
        created_by,
    )
    found = await get_endpoint(conn, new_id)
    assert found is not None
    return found


async def get_endpoint(conn: Executor, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = $1", endpoint_id
    )
    return None if row is None else WebhookEndpoint.from_row(row)


async def list_endpoints(conn: Executor) -> list[WebhookEndpoint]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints e ORDER BY e.created_at, e.id"
    )
    return [WebhookEndpoint.from_row(r) for r in rows]


async def count_endpoints(conn: Executor) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM webhook_endpoints")
    return count


async def delete_endpoint(conn: Executor, endpoint_id: uuid.UUID) -> bool:
    """Delete the endpoint and its undelivered rows with it; whether it existed."""
    status: str = await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)
    return status.endswith(" 1")


async def enqueue(conn: Executor, event_type: str, payloads: list[dict[str, Any]]) -> int:
    """Events of ``event_type`` for every subscribed endpoint, in ``conn``'s transaction;
    how many outbox rows were written."""
    if not payloads:
        return 0
    written: int = await conn.fetchval(
        "SELECT webhook_enqueue($1, $2::jsonb[])",
        event_type,
        [msgspec.json.encode(p).decode() for p in payloads],
    )
    return written


async def claim(
    conn: Executor, limit: int, lease_seconds: float, token: uuid.UUID
) -> list[Delivery]:
    """Take up to ``limit`` due rows for ``lease_seconds``, oldest due first."""
    rows = await conn.fetch(
        "WITH due AS ("
        "  SELECT id FROM webhook_outbox"
        "  WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()"
        "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        ") "
        "UPDATE webhook_outbox o SET attempts = o.attempts + 1, claim_token = $3, "
        "next_attempt_at = now() + make_interval(secs => $2) "
        "FROM due, webhook_endpoints e WHERE o.id = due.id AND e.id = o.endpoint_id "
        "RETURNING o.id, o.event_id, o.event_type, o.payload::text AS payload, o.created_at, "
        "o.attempts, e.url, e.secret",
        limit,
        lease_seconds,
        token,
    )
    return [Delivery(**dict(r)) for r in rows]


async def mark_delivered(conn: Executor, delivery_id: int, status: int) -> None:
    # Whoever holds the claim now, the receiver has the event: it is never sent again.
    await conn.execute(
        "UPDATE webhook_outbox SET delivered_at = now(), last_status = $2, last_error = NULL, "
        "claim_token = NULL WHERE id = $1 AND delivered_at IS NULL",
        delivery_id,
        status,
    )


async def mark_failed(
    conn: Executor,
    delivery_id: int,
    token: uuid.UUID,
    *,
    status: int | None,
    error: str,
    retry_in_seconds: float,
    max_attempts: int,
    max_age_seconds: float,
) -> bool:
    """Schedule the next attempt, or give up past the attempts or the age allowed; True
    when given up. A row claimed again since (the lease ran out) is left to that claim."""
    gave_up: bool | None = await conn.fetchval(
        "UPDATE webhook_outbox SET last_status = $3, last_error = $4, claim_token = NULL, "
        "next_attempt_at = now() + make_interval(secs => $5), "
        "failed_at = CASE WHEN attempts >= $6 OR created_at + make_interval(secs => $7) "
        "  <= now() + make_interval(secs => $5) THEN now() END "
        "WHERE id = $1 AND claim_token = $2 AND delivered_at IS NULL "
        "RETURNING failed_at IS NOT NULL",
        delivery_id,
        token,
        status,
        error[:500],
        retry_in_seconds,
        max_attempts,
        max_age_seconds,
    )
    return bool(gave_up)


async def release(conn: Executor, delivery_ids: list[int], token: uuid.UUID) -> None:
    """Hand back claimed rows at once (a node stopping mid-delivery), without an attempt."""
    await conn.execute(
        "UPDATE webhook_outbox SET next_attempt_at = now(), claim_token = NULL, "
        "attempts = greatest(attempts - 1, 0) "
        "WHERE id = ANY ($1::bigint[]) AND claim_token = $2 AND delivered_at IS NULL",
        delivery_ids,
        token,
    )


async def queue_stats(conn: Executor) -> QueueStats:
    row = await conn.fetchrow(
        "SELECT count(*) AS pending, "
        "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest "
        "FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
    )
    assert row is not None
    return QueueStats(pending=row["pending"], oldest_seconds=row["oldest"])


async def purge(conn: Executor, older_than_seconds: float, limit: int = 1000) -> int:
    """Delete up to ``limit`` delivered or given-up rows older than the retention."""
    status: str = await conn.execute(
        "DELETE FROM webhook_outbox WHERE id IN ("
        "  SELECT id FROM webhook_outbox"
        "  WHERE (delivered_at IS NOT NULL OR failed_at IS NOT NULL)"
        "  AND created_at < now() - make_interval(secs => $1) LIMIT $2)",
        older_than_seconds,
        limit,
    )
    return int(status.split()[-1])

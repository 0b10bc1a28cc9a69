"""What a database outage looks like from asyncpg: the errors of a PostgreSQL that cannot be
reached, dropped the connection, or is shutting down, as opposed to a bug in a query.

Every transport answers them alike: retryable ``unavailable`` with a delay to wait, logged
once per request without a traceback (they all fail the same way while it lasts).
"""

from __future__ import annotations

import asyncpg

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)
# How long a client is asked to wait before retrying while the database is unreachable.
RETRY_AFTER_MS = 1000

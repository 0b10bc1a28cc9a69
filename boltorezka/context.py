"""Who is acting and from which request: passed from transports into domain services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated user acting through one device session."""

    user_id: uuid.UUID
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Where a request came from; recorded in the audit log."""

    request_id: str = ""
    ip: str = ""
    user_agent: str = ""

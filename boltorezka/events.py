"""Domain events that services publish after a change commits.

The realtime plane subscribes to these to push updates over WebSocket; with no subscriber
(for example in a REST-only test) publishing costs nothing.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import msgspec


class RoomEvent(msgspec.Struct, kw_only=True, frozen=True):
    """Something happened in a room; ``kind`` is the realtime envelope type it becomes."""

    room_id: uuid.UUID
    kind: str
    data: dict[str, Any]
    # When set, only these users hear about it (read markers go to the reader's devices).
    only_users: tuple[uuid.UUID, ...] | None = None


class EventPublisher(Protocol):
    async def publish(self, event: RoomEvent) -> None: ...


class NullPublisher:
    async def publish(self, event: RoomEvent) -> None:
        return None

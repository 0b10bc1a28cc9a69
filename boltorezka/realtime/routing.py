"""Events between nodes: which bus channel each goes on, and what a node listens to.

Room events go to ``room:<id>``, events for some users only to ``user:<id>``: a node hears
them from the others only while it has connections in their audience (the
:class:`~boltorezka.realtime.audience.Audience` says when). Session revocations and
connection-addressed events are rare and go on one node-wide channel each. Every node,
this one included, delivers what arrives to its own connections; a broadcast lost on the
way is healed by seq resume and gap fill, since PostgreSQL holds every message.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import msgspec

from boltorezka.bus.base import Bus, family_channel
from boltorezka.events import RoomEvent

ROOM_FAMILY = "room"
USER_FAMILY = "user"
SESSION_CHANNEL = "session-events"
CONNECTION_CHANNEL = "connection-events"


class BusEvent(msgspec.Struct, kw_only=True):
    room_id: uuid.UUID
    kind: str
    data: dict[str, Any]
    only_users: list[uuid.UUID] | None = None
    committed_at: float = 0.0


class SessionEvent(msgspec.Struct, kw_only=True):
    session_id: uuid.UUID
    kind: str = "revoked"


class ConnectionEvent(msgspec.Struct, kw_only=True):
    connection_id: str
    kind: str
    payload: dict[str, Any]


_encoder = msgspec.json.Encoder()
_connection_decoder = msgspec.json.Decoder(ConnectionEvent)
_room_decoder = msgspec.json.Decoder(BusEvent)
_session_decoder = msgspec.json.Decoder(SessionEvent)


class EventSink(Protocol):
    """What the node does with the events that reach it."""

    async def room_event(self, event: BusEvent) -> None: ...

    def session_revoked_here(self, session_id: uuid.UUID) -> None: ...

    def connection_event(self, connection_id: str, kind: str, payload: dict[str, Any]) -> None: ...


def room_channel(room_id: uuid.UUID) -> str:
    return family_channel(ROOM_FAMILY, str(room_id))


def user_channel(user_id: uuid.UUID) -> str:
    return family_channel(USER_FAMILY, str(user_id))


class EventRouter:
    def __init__(self, bus: Bus, sink: EventSink) -> None:
        self._bus = bus
        self._sink = sink
        bus.subscribe_family(ROOM_FAMILY, self._on_family_event)
        bus.subscribe_family(USER_FAMILY, self._on_family_event)
        bus.subscribe(SESSION_CHANNEL, self._on_session_event)
        bus.subscribe(CONNECTION_CHANNEL, self._on_connection_event)

    # --- out ------------------------------------------------------------------------------

    async def publish(self, event: RoomEvent) -> None:
        committed_at = time.time()
        if event.only_users is not None:
            # One copy per user, on that user's channel, addressed to that user alone.
            for user_id in event.only_users:
                wire = BusEvent(
                    room_id=event.room_id,
                    kind=event.kind,
                    data=event.data,
                    only_users=[user_id],
                    committed_at=committed_at,
                )
                await self._bus.publish(user_channel(user_id), _encoder.encode(wire))
            return
        wire = BusEvent(
            room_id=event.room_id, kind=event.kind, data=event.data, committed_at=committed_at
        )
        if event.kind == "member.added":
            # Only the new member's connections act on it, and they are not listening to
            # the room yet.
            channel = user_channel(uuid.UUID(str(event.data["userId"])))
        else:
            channel = room_channel(event.room_id)
        await self._bus.publish(channel, _encoder.encode(wire))

    async def session_revoked(self, session_id: uuid.UUID) -> None:
        await self._bus.publish(
            SESSION_CHANNEL, _encoder.encode(SessionEvent(session_id=session_id))
        )

    async def to_connection(self, connection_id: str, kind: str, payload: dict[str, Any]) -> None:
        event = ConnectionEvent(connection_id=connection_id, kind=kind, payload=payload)
        await self._bus.publish(CONNECTION_CHANNEL, _encoder.encode(event))

    # --- what this node listens to --------------------------------------------------------

    def room_needed(self, room_id: uuid.UUID, needed: bool) -> None:
        if needed:
            self._bus.listen(room_channel(room_id))
        else:
            self._bus.unlisten(room_channel(room_id))

    def user_needed(self, user_id: uuid.UUID, needed: bool) -> None:
        if needed:
            self._bus.listen(user_channel(user_id))
        else:
            self._bus.unlisten(user_channel(user_id))

    async def routed(self, room_id: uuid.UUID) -> None:
        """Return once other nodes' events for the room reach this node."""
        await self._bus.listening(room_channel(room_id))

    def routing_problem(self) -> str | None:
        return self._bus.routing_problem()

    # --- in -------------------------------------------------------------------------------

    async def _on_family_event(self, key: str, data: bytes) -> None:
        await self._sink.room_event(_room_decoder.decode(data))

    async def _on_session_event(self, data: bytes) -> None:
        self._sink.session_revoked_here(_session_decoder.decode(data).session_id)

    async def _on_connection_event(self, data: bytes) -> None:
        event = _connection_decoder.decode(data)
        self._sink.connection_event(event.connection_id, event.kind, event.payload)

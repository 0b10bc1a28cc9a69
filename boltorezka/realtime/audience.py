"""This node's live connections and the indexes that make an event cost its audience.

Who is subscribed to a room here, who here is a member of it (joined on that connection or
not), and each user's and each session's connections: every event of the node finds its
recipients through one of these, never by walking every connection. Sans-I/O: whoever
routes events from other nodes is told when a room or a user gains its first audience here
and loses its last.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from boltorezka.realtime.connection import Connection

AudienceChanged = Callable[[uuid.UUID, bool], None]


def _discard(index: defaultdict[Any, set[Connection]], key: Any, conn: Connection) -> None:
    """Remove ``conn`` from ``index[key]``, and the key once its set is empty."""
    found = index.get(key)
    if found is not None:
        found.discard(conn)
        if not found:
            del index[key]


class Audience:
    def __init__(self, *, room_needed: AudienceChanged, user_needed: AudienceChanged) -> None:
        # Told (room, needed) whenever a room may have gained or lost its audience here:
        # a subscriber or a connected member. Told (user, needed) on a user's first
        # connection here and after the last.
        self._room_needed = room_needed
        self._user_needed = user_needed
        self.connections: dict[str, Connection] = {}
        self.by_user: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self.room_subscribers: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self.members_here: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self.by_session: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def authenticated(self, conn: Connection, member_rooms: Iterable[uuid.UUID]) -> None:
        assert conn.user_id is not None and conn.session_id is not None
        conn.member_rooms = set()
        for room_id in member_rooms:
            self.add_membership(conn, room_id)
        if conn.user_id not in self.by_user:
            self._user_needed(conn.user_id, True)
        self.by_user[conn.user_id].add(conn)
        self.by_session[conn.session_id].add(conn)

    def remove(self, conn: Connection) -> None:
        """Forget a connection whose subscriptions have ended already."""
        self.connections.pop(conn.id, None)
        if conn.user_id is None:
            return
        for room_id in list(conn.member_rooms):
            self.drop_membership(conn, room_id)
        _discard(self.by_session, conn.session_id, conn)
        _discard(self.by_user, conn.user_id, conn)
        if conn.user_id not in self.by_user:
            self._user_needed(conn.user_id, False)

    def add_membership(self, conn: Connection, room_id: uuid.UUID) -> None:
        """``conn``'s user is a member of the room: its room-wide events reach ``conn``."""
        conn.member_rooms.add(room_id)
        self.members_here[room_id].add(conn)
        self._room_changed(room_id)

    def drop_membership(self, conn: Connection, room_id: uuid.UUID) -> None:
        conn.member_rooms.discard(room_id)
        _discard(self.members_here, room_id, conn)
        self._room_changed(room_id)

    def add_subscriber(self, conn: Connection, room_id: uuid.UUID) -> None:
        self.room_subscribers[room_id].add(conn)
        self._room_changed(room_id)

    def drop_subscriber(self, conn: Connection, room_id: uuid.UUID) -> None:
        _discard(self.room_subscribers, room_id, conn)
        self._room_changed(room_id)

    def _room_changed(self, room_id: uuid.UUID) -> None:
        self._room_needed(room_id, room_id in self.members_here or room_id in self.room_subscribers)

    # --- questions ------------------------------------------------------------------------

    def users_here(self) -> Iterable[uuid.UUID]:
        return self.by_user.keys()

    def user_is_member_here(self, user_id: uuid.UUID, room_id: uuid.UUID) -> bool:
        return any(room_id in device.member_rooms for device in self.by_user.get(user_id, ()))

    def user_subscribed_elsewhere(
        self, user_id: uuid.UUID, room_id: uuid.UUID, conn: Connection | None = None
    ) -> bool:
        """Whether another of the user's connections here (not ``conn``) has the room open."""
        return any(
            room_id in other.subscriptions
            for other in self.by_user.get(user_id, ())
            if other is not conn
        )

    def rooms_of_user_here(self, user_id: uuid.UUID) -> set[uuid.UUID]:
        rooms: set[uuid.UUID] = set()
        for device in self.by_user.get(user_id, ()):
            rooms |= device.member_rooms
        return rooms

    def presence_audience(self, user_id: uuid.UUID, rooms: Iterable[uuid.UUID]) -> set[Connection]:
        audience = set(self.by_user.get(user_id, ()))
        for room_id in rooms:
            audience.update(self.members_here.get(room_id, ()))
        return audience

    # --- sending --------------------------------------------------------------------------

    def send_room(
        self, room_id: uuid.UUID, frame: bytes, except_user: uuid.UUID | None = None
    ) -> None:
        """To every connection here with the room open, but the given user's."""
        for conn in list(self.room_subscribers.get(room_id, ())):
            if conn.user_id != except_user:
                conn.send_raw(frame)

    def send_members(self, room_id: uuid.UUID, frame: bytes) -> None:
        """To every connection here of a member of the room, open on it or not."""
        for conn in list(self.members_here.get(room_id, ())):
            conn.send_raw(frame)

    def send_user(self, user_id: uuid.UUID, frame: bytes) -> None:
        for conn in list(self.by_user.get(user_id, ())):
            conn.send_raw(frame)

"""The node's realtime plane, put together: connections in, room events out to them.

Domain services publish :class:`~boltorezka.events.RoomEvent` here after their change
commits; the hub sends it through the bus so every node (this one included) delivers it to
its own connections. Each job is its own module, which the hub composes and feeds:

- :mod:`~boltorezka.realtime.audience`: the connections and their indexes;
- :mod:`~boltorezka.realtime.routing`: bus channels, what this node listens to;
- :mod:`~boltorezka.realtime.cluster_presence`: presence across the nodes;
- :mod:`~boltorezka.realtime.subscriptions`: room subscriptions and gap fill;
- :mod:`~boltorezka.realtime.typing_relay`: typing indicators;
- :mod:`~boltorezka.realtime.notifications`: unread counts and mentions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import asyncpg

from boltorezka.bus.base import Bus
from boltorezka.events import RoomEvent
from boltorezka.observability.metrics import Metrics
from boltorezka.realtime.audience import Audience
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.cluster_presence import ClusterPresence
from boltorezka.realtime.connection import Connection, RoomSubscription
from boltorezka.realtime.notifications import Notifier
from boltorezka.realtime.presence import PresenceDirectory, PresenceTracker, TypingTracker
from boltorezka.realtime.protocol import event_frame
from boltorezka.realtime.routing import BusEvent, EventRouter
from boltorezka.realtime.subscriptions import Subscriptions
from boltorezka.realtime.typing_relay import TypingRelay


class Hub:
    def __init__(self, bus: Bus, pool: asyncpg.Pool, metrics: Metrics, *, node_id: str) -> None:
        self.node_id = node_id
        self._metrics = metrics
        self._router = EventRouter(bus, self)
        self.audience = Audience(
            room_needed=self._router.room_needed, user_needed=self._router.user_needed
        )
        self.cluster_presence = ClusterPresence(bus, node_id, self.audience)
        self._typing = TypingRelay(self.audience)
        self._subscriptions = Subscriptions(pool, self.audience, self._typing, metrics)
        self._notifier = Notifier(pool, self.audience)
        bus.on_recovered(self._after_bus_outage)

    # The indexes and the presence protocol's parts, as the gateway, tests and the call
    # cluster reach them.
    @property
    def connections(self) -> dict[str, Connection]:
        return self.audience.connections

    @property
    def by_user(self) -> defaultdict[uuid.UUID, set[Connection]]:
        return self.audience.by_user

    @property
    def by_session(self) -> defaultdict[uuid.UUID, set[Connection]]:
        return self.audience.by_session

    @property
    def typing(self) -> TypingTracker:
        return self._typing.tracker

    @property
    def presence(self) -> PresenceTracker:
        return self.cluster_presence.local

    @property
    def directory(self) -> PresenceDirectory:
        return self.cluster_presence.directory

    @property
    def alive_interval(self) -> float:
        return self.cluster_presence.alive_interval

    @alive_interval.setter
    def alive_interval(self, seconds: float) -> None:
        self.cluster_presence.alive_interval = seconds

    @property
    def _presence_task(self) -> asyncio.Task[None] | None:
        return self.cluster_presence.task

    def routing_problem(self) -> str | None:
        """Why events cannot reach the other nodes now (None: they can, or there are none)."""
        return self._router.routing_problem()

    def _after_bus_outage(self) -> None:
        """Routing works again: resync presence both ways, catch every subscriber up.

        While the bus was down, this node's events reached only its own connections and the
        other nodes' events reached none of them; the messages are all in PostgreSQL.
        """
        self.cluster_presence.resync()
        self._notifier.forget_all()  # chat.read events from other nodes were missed
        self._subscriptions.catch_up_all()

    async def start(self) -> None:
        self._typing.run()
        self.cluster_presence.start()

    async def close(self) -> None:
        await self._typing.close()
        await self.cluster_presence.close()

    # --- publishing (EventPublisher, CallSignals, the session listener) -------------------

    async def publish(self, event: RoomEvent) -> None:
        await self._router.publish(event)

    async def session_revoked(self, session_id: uuid.UUID) -> None:
        await self._router.session_revoked(session_id)

    async def room_broadcast(self, room_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> None:
        """Send to every connected member of the room, joined on the connection or not."""
        await self.publish(RoomEvent(room_id=room_id, kind=kind, data=payload))

    async def to_connection(self, connection_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Send to one connection, on whichever node holds it."""
        await self._router.to_connection(connection_id, kind, payload)

    # --- connection lifecycle -------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.audience.add(conn)
        self._metrics.ws_connections.set(len(self.audience.connections))

    def authenticated(self, conn: Connection, member_rooms: Iterable[uuid.UUID]) -> None:
        assert conn.user_id is not None
        self.audience.authenticated(conn, member_rooms)
        self.cluster_presence.update(conn.user_id, conn.id, conn.status)

    def remove(self, conn: Connection) -> None:
        if conn.user_id is not None:
            for room_id in list(conn.subscriptions):
                self.unsubscribe(conn, room_id)
        rooms = set(conn.member_rooms)  # the audience of the presence report below
        for room_id in rooms:
            self._drop_membership(conn, room_id)
        self.audience.remove(conn)
        self._metrics.ws_connections.set(len(self.audience.connections))
        if conn.user_id is not None:
            self.cluster_presence.remove(conn.user_id, conn.id, rooms)

    def add_membership(self, conn: Connection, room_id: uuid.UUID) -> None:
        """``conn``'s user is a member of the room: its room-wide events reach ``conn``."""
        self.audience.add_membership(conn, room_id)

    def _drop_membership(self, conn: Connection, room_id: uuid.UUID) -> None:
        self.audience.drop_membership(conn, room_id)
        assert conn.user_id is not None
        if not self.audience.user_is_member_here(conn.user_id, room_id):
            self._notifier.forget(room_id, conn.user_id)

    async def routed(self, room_id: uuid.UUID) -> None:
        """Return once other nodes' events for the room reach this node, so a join that
        reads PostgreSQL afterwards misses nothing they publish later."""
        await self._router.routed(room_id)

    def set_status(self, conn: Connection, status: str) -> None:
        assert conn.user_id is not None
        conn.status = status
        self.cluster_presence.update(conn.user_id, conn.id, status)

    def presence_of(self, user_id: uuid.UUID) -> str:
        """The user's presence across the cluster."""
        return self.cluster_presence.status_of(user_id)

    # --- room subscriptions ---------------------------------------------------------------

    def subscribe(self, conn: Connection, room_id: uuid.UUID) -> tuple[RoomSubscription, bool]:
        return self._subscriptions.subscribe(conn, room_id)

    def drop_subscription(self, conn: Connection, room_id: uuid.UUID) -> None:
        self._subscriptions.drop(conn, room_id)

    def unsubscribe(self, conn: Connection, room_id: uuid.UUID) -> bool:
        return self._subscriptions.unsubscribe(conn, room_id)

    def deliver_ready(
        self, conn: Connection, subscription: RoomSubscription, ready: list[bytes]
    ) -> None:
        self._subscriptions.deliver_ready(conn, subscription, ready)

    def room_joined(self, conn: Connection, room_id: uuid.UUID) -> None:
        assert conn.user_id is not None
        self._metrics.ws_joins.inc()
        frame = event_frame("member.joined", {"roomId": str(room_id), "userId": str(conn.user_id)})
        self.audience.send_room(room_id, frame, except_user=conn.user_id)

    # --- typing ---------------------------------------------------------------------------

    def typing_start(self, conn: Connection, room_id: uuid.UUID) -> None:
        assert conn.user_id is not None
        self._typing.start(room_id, conn.user_id)

    def typing_stop(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self._typing.stop(room_id, user_id)

    # --- what reaches this node (EventSink) -----------------------------------------------

    def session_revoked_here(self, session_id: uuid.UUID) -> None:
        for conn in list(self.audience.by_session.get(session_id, ())):
            conn.close_soon(CloseCode.SESSION_REVOKED)

    def connection_event(self, connection_id: str, kind: str, payload: dict[str, Any]) -> None:
        conn = self.audience.connections.get(connection_id)
        if conn is not None:
            conn.send_raw(event_frame(kind, payload))

    async def room_event(self, event: BusEvent) -> None:
        kind = event.kind
        room_id = event.room_id
        if kind == "chat.message":
            await self._deliver_message(event)
        elif kind == "room.deleted":
            frame = event_frame(kind, event.data)
            for conn in list(self.audience.members_here.get(room_id, ())):
                self._drop_membership(conn, room_id)
                # The room is gone: its live view ends without member.left noise.
                self.drop_subscription(conn, room_id)
                conn.send_raw(frame)
        elif kind in (
            "call.state",
            "room.updated",
            "member.banned",
            "member.muted",
            "member.unmuted",
        ):
            self.audience.send_members(room_id, event_frame(kind, event.data))
        elif kind in ("chat.edited", "chat.deleted"):
            self.audience.send_room(room_id, event_frame(kind, event.data))
        elif kind == "chat.read":
            frame = event_frame(kind, event.data)
            for user_id in event.only_users or ():
                self._notifier.advance_read(room_id, user_id, int(event.data["seq"]))
                self.audience.send_user(user_id, frame)
        elif kind == "member.added":
            user_id = uuid.UUID(event.data["userId"])
            for conn in list(self.audience.by_user.get(user_id, ())):
                self.add_membership(conn, room_id)
        elif kind == "member.removed":
            user_id = uuid.UUID(event.data["userId"])
            left = event_frame("member.left", {"roomId": str(room_id), "userId": str(user_id)})
            for conn in list(self.audience.by_user.get(user_id, ())):
                self._drop_membership(conn, room_id)
                # Membership is what authorised the subscription; it ends with it.
                if self.unsubscribe(conn, room_id):
                    conn.send_raw(left)

    async def _deliver_message(self, event: BusEvent) -> None:
        message = event.data["message"]
        seq = int(message["seq"])
        sender = message.get("senderId")
        frame = event_frame("chat.message", event.data)  # once, for every recipient
        if self._subscriptions.deliver_message(event.room_id, seq, frame) and event.committed_at:
            self._metrics.ws_delivery_latency.observe(max(0.0, time.time() - event.committed_at))
        if sender is not None:
            self.typing_stop(event.room_id, uuid.UUID(sender))
        await self._notifier.message_stored(event.room_id, message, seq)

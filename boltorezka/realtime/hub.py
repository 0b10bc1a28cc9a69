"""The node's registry of live connections and the router of room events to them.

Domain services publish :class:`~boltorezka.events.RoomEvent` here after their change
commits; the hub forwards it through the bus so every node (including this one) delivers
it to its own subscribers. Its indexes make an event cost in proportion to its audience.
The cluster presence protocol is :mod:`boltorezka.realtime.cluster_presence`, which the
hub feeds with this node's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, cast

import asyncpg
import msgspec
import structlog

from boltorezka.bus.base import Bus, family_channel
from boltorezka.events import RoomEvent
from boltorezka.observability.metrics import Metrics
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.cluster_presence import ClusterPresence
from boltorezka.realtime.connection import Connection, RoomSubscription
from boltorezka.realtime.presence import PresenceDirectory, PresenceTracker, TypingTracker
from boltorezka.realtime.protocol import event_frame
from boltorezka.store import messages as message_store
from boltorezka.store import rooms as room_store

_log = structlog.get_logger("boltorezka.hub")

# Room events go to "room:<id>", events for some users only to "user:<id>": a node
# receives them from other nodes only while it has connections in their audience.
ROOM_FAMILY = "room"
USER_FAMILY = "user"
SESSION_CHANNEL = "session-events"
CONNECTION_CHANNEL = "connection-events"
GAP_FILL_DELAY = 0.25
# Stored messages read per query when a subscriber catches up.
GAP_FILL_PAGE = 500
_MENTION = re.compile(r"@([A-Za-z0-9_.-]{3,32})")


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


def _discard(index: defaultdict[Any, set[Connection]], key: Any, conn: Connection) -> None:
    """Remove ``conn`` from ``index[key]``, and the key once its set is empty."""
    found = index.get(key)
    if found is not None:
        found.discard(conn)
        if not found:
            del index[key]


class Hub:
    def __init__(
        self, bus: Bus, pool: asyncpg.Pool, metrics: Metrics, *, node_id: str | None = None
    ) -> None:
        self.node_id = node_id or f"node-{uuid.uuid4().hex[:8]}"
        self._bus = bus
        self._pool = pool
        self._metrics = metrics
        self.connections: dict[str, Connection] = {}
        # Indexes, so an event costs in proportion to its audience, never to the node's
        # connection count: who is subscribed to a room here, who here is a member of it
        # (joined on that connection or not), each user's and each session's connections.
        self.by_user: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self.room_subscribers: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self.members_here: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self.by_session: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        # Read positions of the members connected here, per (room, user): read from
        # PostgreSQL once per room, then kept current by chat.read and the user's own sends,
        # so unread counts cost no query per message.
        self._read_seq: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
        self.cluster_presence = ClusterPresence(bus, self.node_id, self)
        self.typing = TypingTracker()
        self._sweeper: asyncio.Task[None] | None = None
        bus.subscribe_family(ROOM_FAMILY, self._on_family_event)
        bus.subscribe_family(USER_FAMILY, self._on_family_event)
        bus.subscribe(SESSION_CHANNEL, self._on_session_event)
        bus.subscribe(CONNECTION_CHANNEL, self._on_connection_event)
        bus.on_recovered(self._after_bus_outage)

    # The presence protocol's parts, as tests and the call cluster reach them.
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

    # --- what the presence protocol asks of this node's connections (LocalAudience) -------

    def users_here(self) -> Iterable[uuid.UUID]:
        return self.by_user.keys()

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

    def routing_problem(self) -> str | None:
        """Why events cannot reach the other nodes now (None: they can, or there are none)."""
        return self._bus.routing_problem()

    def _after_bus_outage(self) -> None:
        """Routing works again: resync presence both ways, catch every subscriber up.

        While the bus was down, this node's events reached only its own connections and the
        other nodes' events reached none of them; the messages are all in PostgreSQL.
        """
        self.cluster_presence.resync()
        self._read_seq.clear()  # chat.read events from other nodes were missed
        for conn in list(self.connections.values()):
            for subscription in list(conn.subscriptions.values()):
                if subscription.gate.last_seq is None:
                    continue  # still replaying its join, which reads PostgreSQL anyway
                self._cancel_gap(subscription)
                subscription.gap_task = asyncio.create_task(
                    self._fill_from_store(conn, subscription, subscription.gate.last_seq, None)
                )

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_typing(), name="typing-sweeper")
        self.cluster_presence.start()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.cluster_presence.close()

    # --- publishing (EventPublisher) ------------------------------------------------------

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
                channel = family_channel(USER_FAMILY, str(user_id))
                await self._bus.publish(channel, _encoder.encode(wire))
            return
        wire = BusEvent(
            room_id=event.room_id, kind=event.kind, data=event.data, committed_at=committed_at
        )
        if event.kind == "member.added":
            # Only the new member's connections act on it, and they are not listening to
            # the room yet.
            channel = family_channel(USER_FAMILY, str(event.data["userId"]))
        else:
            channel = family_channel(ROOM_FAMILY, str(event.room_id))
        await self._bus.publish(channel, _encoder.encode(wire))

    async def session_revoked(self, session_id: uuid.UUID) -> None:
        await self._bus.publish(
            SESSION_CHANNEL, _encoder.encode(SessionEvent(session_id=session_id))
        )

    async def room_broadcast(self, room_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> None:
        """Send to every connected member of the room, joined on the connection or not."""
        await self.publish(RoomEvent(room_id=room_id, kind=kind, data=payload))

    async def to_connection(self, connection_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Send to one connection, on whichever node holds it."""
        event = ConnectionEvent(connection_id=connection_id, kind=kind, payload=payload)
        await self._bus.publish(CONNECTION_CHANNEL, _encoder.encode(event))

    async def _on_connection_event(self, data: bytes) -> None:
        event = _connection_decoder.decode(data)
        conn = self.connections.get(event.connection_id)
        if conn is not None:
            conn.send_raw(event_frame(event.kind, event.payload))

    # --- connection lifecycle -------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self._metrics.ws_connections.set(len(self.connections))

    def authenticated(self, conn: Connection, member_rooms: set[uuid.UUID]) -> None:
        assert conn.user_id is not None and conn.session_id is not None
        conn.member_rooms = set()
        for room_id in member_rooms:
            self.add_membership(conn, room_id)
        if conn.user_id not in self.by_user:
            self._bus.listen(family_channel(USER_FAMILY, str(conn.user_id)))
        self.by_user[conn.user_id].add(conn)
        self.by_session[conn.session_id].add(conn)
        self.cluster_presence.update(conn.user_id, conn.id, conn.status)

    def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        self._metrics.ws_connections.set(len(self.connections))
        if conn.user_id is None:
            return
        for room_id in list(conn.subscriptions):
            self.unsubscribe(conn, room_id)
        rooms = set(conn.member_rooms)  # the audience of the presence report below
        for room_id in rooms:
            self._drop_membership(conn, room_id)
        _discard(self.by_session, conn.session_id, conn)
        _discard(self.by_user, conn.user_id, conn)
        if conn.user_id not in self.by_user:
            self._bus.unlisten(family_channel(USER_FAMILY, str(conn.user_id)))
        self.cluster_presence.remove(conn.user_id, conn.id, rooms)

    def add_membership(self, conn: Connection, room_id: uuid.UUID) -> None:
        """``conn``'s user is a member of the room: its room-wide events reach ``conn``."""
        conn.member_rooms.add(room_id)
        self.members_here[room_id].add(conn)
        self._room_audience_changed(room_id)

    def _drop_membership(self, conn: Connection, room_id: uuid.UUID) -> None:
        conn.member_rooms.discard(room_id)
        _discard(self.members_here, room_id, conn)
        self._room_audience_changed(room_id)
        assert conn.user_id is not None
        if not any(room_id in other.member_rooms for other in self.by_user.get(conn.user_id, ())):
            self._read_seq.pop((room_id, conn.user_id), None)

    def _room_audience_changed(self, room_id: uuid.UUID) -> None:
        """Receive the room's events from other nodes exactly while someone here needs
        them: a connected member (for notifications) or a subscriber."""
        channel = family_channel(ROOM_FAMILY, str(room_id))
        if room_id in self.members_here or room_id in self.room_subscribers:
            self._bus.listen(channel)
        else:
            self._bus.unlisten(channel)

    async def routed(self, room_id: uuid.UUID) -> None:
        """Return once other nodes' events for the room reach this node, so a join that
        reads PostgreSQL afterwards misses nothing they publish later."""
        await self._bus.listening(family_channel(ROOM_FAMILY, str(room_id)))

    def set_status(self, conn: Connection, status: str) -> None:
        assert conn.user_id is not None
        conn.status = status
        self.cluster_presence.update(conn.user_id, conn.id, status)

    def presence_of(self, user_id: uuid.UUID) -> str:
        """The user's presence across the cluster."""
        return self.cluster_presence.status_of(user_id)

    # --- room subscriptions ---------------------------------------------------------------

    def subscribe(self, conn: Connection, room_id: uuid.UUID) -> tuple[RoomSubscription, bool]:
        """Start buffering the room's live events for ``conn``.

        Returns the subscription and whether this is the user's first device in the room.
        """
        existing = conn.subscriptions.get(room_id)
        if existing is not None:
            self._cancel_gap(existing)
        subscription = RoomSubscription(room_id)
        conn.subscriptions[room_id] = subscription
        first = (
            not any(
                room_id in other.subscriptions
                for other in self.by_user.get(conn.user_id, ())  # type: ignore[arg-type]
                if other is not conn
            )
            and existing is None
        )
        self.room_subscribers[room_id].add(conn)
        self._room_audience_changed(room_id)
        return subscription, first

    def drop_subscription(self, conn: Connection, room_id: uuid.UUID) -> None:
        """Forget a subscription that never completed its join: no events, no counters."""
        subscription = conn.subscriptions.pop(room_id, None)
        if subscription is None:
            return
        self._cancel_gap(subscription)
        _discard(self.room_subscribers, room_id, conn)
        self._room_audience_changed(room_id)

    def unsubscribe(self, conn: Connection, room_id: uuid.UUID) -> bool:
        """Stop delivering the room; return True if it was subscribed."""
        subscription = conn.subscriptions.pop(room_id, None)
        if subscription is None:
            return False
        self._cancel_gap(subscription)
        _discard(self.room_subscribers, room_id, conn)
        self._room_audience_changed(room_id)
        assert conn.user_id is not None
        if self.typing.stop((room_id, conn.user_id)):
            self._send_typing(room_id, conn.user_id, active=False)
        still_here = any(
            room_id in other.subscriptions for other in self.by_user.get(conn.user_id, ())
        )
        if not still_here:
            self._send_room(
                room_id,
                event_frame("member.left", {"roomId": str(room_id), "userId": str(conn.user_id)}),
            )
        self._metrics.ws_leaves.inc()
        return True

    def deliver_ready(
        self, conn: Connection, subscription: RoomSubscription, ready: list[bytes]
    ) -> None:
        for frame in ready:
            conn.send_raw(frame)
        self._schedule_gap_fill(conn, subscription)

    def _schedule_gap_fill(self, conn: Connection, subscription: RoomSubscription) -> None:
        if subscription.gate.gap() is None or subscription.gap_task is not None:
            return
        subscription.gap_task = asyncio.create_task(self._fill_gap(conn, subscription))

    async def _fill_gap(self, conn: Connection, subscription: RoomSubscription) -> None:
        # Most gaps are two publishes racing; give the late one a moment to arrive.
        await asyncio.sleep(GAP_FILL_DELAY)
        # An empty range when the gap closed meanwhile: nothing is read, the task unhooks.
        after, before = subscription.gate.gap() or (0, 0)
        await self._fill_from_store(conn, subscription, after, before)

    async def _fill_from_store(
        self, conn: Connection, subscription: RoomSubscription, after: int, before: int | None
    ) -> None:
        """Deliver the room's stored messages after ``after`` (and before ``before``) through
        the subscription's gate, which drops whatever the connection already has."""
        try:
            while before is None or after + 1 < before:
                limit = GAP_FILL_PAGE if before is None else min(GAP_FILL_PAGE, before - after)
                missing = await message_store.page(
                    self._pool, subscription.room_id, before=before, after=after, limit=limit
                )
                for message in missing:
                    data = {"roomId": str(message.room_id), "message": msgspec.to_builtins(message)}
                    ready = subscription.gate.offer(message.seq, event_frame("chat.message", data))
                    for frame in ready:
                        conn.send_raw(frame)
                if len(missing) < limit:
                    break
                after = missing[-1].seq
        finally:
            # A task cancelled to make way for another must not unhook its successor.
            if subscription.gap_task is asyncio.current_task():
                subscription.gap_task = None
        if conn.subscriptions.get(subscription.room_id) is subscription:
            self._schedule_gap_fill(conn, subscription)

    @staticmethod
    def _cancel_gap(subscription: RoomSubscription) -> None:
        if subscription.gap_task is not None:
            subscription.gap_task.cancel()
            subscription.gap_task = None

    def _send_room(
        self, room_id: uuid.UUID, frame: bytes, except_user: uuid.UUID | None = None
    ) -> None:
        for conn in list(self.room_subscribers.get(room_id, ())):
            if conn.user_id != except_user:
                conn.send_raw(frame)

    def room_joined(self, conn: Connection, room_id: uuid.UUID) -> None:
        assert conn.user_id is not None
        self._metrics.ws_joins.inc()
        frame = event_frame("member.joined", {"roomId": str(room_id), "userId": str(conn.user_id)})
        self._send_room(room_id, frame, except_user=conn.user_id)

    # --- typing ---------------------------------------------------------------------------

    def typing_start(self, conn: Connection, room_id: uuid.UUID) -> None:
        assert conn.user_id is not None
        if self.typing.start((room_id, conn.user_id), time.monotonic()):
            self._send_typing(room_id, conn.user_id, active=True)

    def typing_stop(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        if self.typing.stop((room_id, user_id)):
            self._send_typing(room_id, user_id, active=False)

    def _send_typing(self, room_id: uuid.UUID, user_id: uuid.UUID, *, active: bool) -> None:
        """Tell the room's other members; the typist's own devices need no echo."""
        payload = {"roomId": str(room_id), "userId": str(user_id), "active": active}
        self._send_room(room_id, event_frame("typing", payload), except_user=user_id)

    async def _sweep_typing(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for key in self.typing.expired(time.monotonic()):
                room_id, user_id = cast(tuple[uuid.UUID, uuid.UUID], key)
                self._send_typing(room_id, user_id, active=False)

    # --- bus delivery ---------------------------------------------------------------------

    async def _on_family_event(self, key: str, data: bytes) -> None:
        await self._on_room_event(data)

    async def _on_room_event(self, data: bytes) -> None:
        event = _room_decoder.decode(data)
        kind = event.kind
        if kind == "chat.message":
            await self._deliver_message(event)
        elif kind == "room.deleted":
            frame = event_frame(kind, event.data)
            for conn in list(self.members_here.get(event.room_id, ())):
                self._drop_membership(conn, event.room_id)
                # The room is gone: its live view ends without member.left noise.
                self.drop_subscription(conn, event.room_id)
                conn.send_raw(frame)
        elif kind in ("call.state", "room.updated"):
            frame = event_frame(kind, event.data)
            for conn in list(self.members_here.get(event.room_id, ())):
                conn.send_raw(frame)
        elif kind in ("chat.edited", "chat.deleted"):
            self._send_room(event.room_id, event_frame(kind, event.data))
        elif kind == "chat.read":
            frame = event_frame(kind, event.data)
            for user_id in event.only_users or ():
                self._advance_read(event.room_id, user_id, int(event.data["seq"]))
                for conn in list(self.by_user.get(user_id, ())):
                    conn.send_raw(frame)
        elif kind == "member.added":
            user_id = uuid.UUID(event.data["userId"])
            for conn in list(self.by_user.get(user_id, ())):
                self.add_membership(conn, event.room_id)
        elif kind == "member.removed":
            user_id = uuid.UUID(event.data["userId"])
            for conn in list(self.by_user.get(user_id, ())):
                self._drop_membership(conn, event.room_id)
                # Membership is what authorised the subscription; it ends with it.
                if self.unsubscribe(conn, event.room_id):
                    conn.send_raw(
                        event_frame(
                            "member.left", {"roomId": str(event.room_id), "userId": str(user_id)}
                        )
                    )

    async def _deliver_message(self, event: BusEvent) -> None:
        message = event.data["message"]
        seq = int(message["seq"])
        sender = message.get("senderId")
        frame = event_frame("chat.message", event.data)  # once, for every recipient
        subscribers = self.room_subscribers.get(event.room_id, ())
        for conn in list(subscribers):
            subscription = conn.subscriptions.get(event.room_id)
            if subscription is None:
                continue
            self.deliver_ready(conn, subscription, subscription.gate.offer(seq, frame))
        if subscribers and event.committed_at:
            self._metrics.ws_delivery_latency.observe(max(0.0, time.time() - event.committed_at))
        if sender is not None:
            self.typing_stop(event.room_id, uuid.UUID(sender))
        await self._notify_members(event, seq)

    def _advance_read(self, room_id: uuid.UUID, user_id: uuid.UUID, seq: int) -> None:
        key = (room_id, user_id)
        if key in self._read_seq:
            self._read_seq[key] = max(self._read_seq[key], seq)

    async def _notify_members(self, event: BusEvent, seq: int) -> None:
        """Unread counts and mentions for members connected but not in the room here."""
        message = event.data["message"]
        sender = message.get("senderId")
        if sender is not None:
            # What you wrote yourself is read (the send stored that marker too).
            self._advance_read(event.room_id, uuid.UUID(sender), seq)
        targets = [
            conn
            for conn in self.members_here.get(event.room_id, ())
            if event.room_id not in conn.subscriptions and str(conn.user_id) != sender
        ]
        if not targets:
            return
        if any((event.room_id, conn.user_id) not in self._read_seq for conn in targets):
            markers = await room_store.read_markers(self._pool, event.room_id)
            for conn in targets:
                assert conn.user_id is not None
                stored = markers.get(conn.user_id)
                if stored is not None:
                    key = (event.room_id, conn.user_id)
                    self._read_seq[key] = max(self._read_seq.get(key, stored), stored)
        mentioned: set[str] = set()
        for name in _MENTION.findall(message.get("body", "")):
            # Names may contain dots, but "thanks @bob." ends a sentence: accept both readings.
            mentioned.update((name.lower(), name.rstrip(".").lower()))
        for conn in targets:
            assert conn.user_id is not None
            last_read = self._read_seq.get((event.room_id, conn.user_id))
            if last_read is None or conn.closed:
                continue
            kind = "mention" if conn.username.lower() in mentioned else "unread"
            conn.send_raw(
                event_frame(
                    "notification",
                    {
                        "roomId": str(event.room_id),
                        "kind": kind,
                        "unreadCount": max(0, seq - last_read),
                        "seq": seq,
                        "messageId": message["id"],
                    },
                )
            )

    async def _on_session_event(self, data: bytes) -> None:
        event = _session_decoder.decode(data)
        for conn in list(self.by_session.get(event.session_id, ())):
            conn.close_soon(CloseCode.SESSION_REVOKED)

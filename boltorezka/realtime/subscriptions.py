"""Room subscriptions of this node's connections, and filling their gaps from PostgreSQL.

A subscription holds the room's chat frames in a :class:`~boltorezka.realtime.sequencing.SeqGate`
so they go out in seq order; a gap that does not close by itself (a broadcast lost between
nodes, or missed while the bus was down) is read from the store, which holds every message.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec

from boltorezka.observability.metrics import Metrics
from boltorezka.realtime.audience import Audience
from boltorezka.realtime.connection import Connection, RoomSubscription
from boltorezka.realtime.protocol import event_frame
from boltorezka.realtime.typing_relay import TypingRelay
from boltorezka.store import messages as message_store

GAP_FILL_DELAY = 0.25
# Stored messages read per query when a subscriber catches up.
GAP_FILL_PAGE = 500


class Subscriptions:
    def __init__(
        self, pool: asyncpg.Pool, audience: Audience, typing: TypingRelay, metrics: Metrics
    ) -> None:
        self._pool = pool
        self._audience = audience
        self._typing = typing
        self._metrics = metrics

    def subscribe(self, conn: Connection, room_id: uuid.UUID) -> tuple[RoomSubscription, bool]:
        """Start buffering the room's live events for ``conn``.

        Returns the subscription and whether this is the user's first device in the room.
        """
        assert conn.user_id is not None
        existing = conn.subscriptions.get(room_id)
        if existing is not None:
            cancel_gap(existing)
        subscription = RoomSubscription(room_id)
        conn.subscriptions[room_id] = subscription
        first = existing is None and not self._audience.user_subscribed_elsewhere(
            conn.user_id, room_id, conn
        )
        self._audience.add_subscriber(conn, room_id)
        return subscription, first

    def drop(self, conn: Connection, room_id: uuid.UUID) -> None:
        """Forget a subscription that never completed its join: no events, no counters."""
        subscription = conn.subscriptions.pop(room_id, None)
        if subscription is None:
            return
        cancel_gap(subscription)
        self._audience.drop_subscriber(conn, room_id)

    def unsubscribe(self, conn: Connection, room_id: uuid.UUID) -> bool:
        """Stop delivering the room; return True if it was subscribed."""
        subscription = conn.subscriptions.pop(room_id, None)
        if subscription is None:
            return False
        cancel_gap(subscription)
        self._audience.drop_subscriber(conn, room_id)
        assert conn.user_id is not None
        self._typing.stop(room_id, conn.user_id)
        if not self._audience.user_subscribed_elsewhere(conn.user_id, room_id):
            self._audience.send_room(
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

    def deliver_message(self, room_id: uuid.UUID, seq: int, frame: bytes) -> bool:
        """Offer a chat frame to every subscriber of the room; whether there were any."""
        subscribers = self._audience.room_subscribers.get(room_id, ())
        for conn in list(subscribers):
            subscription = conn.subscriptions.get(room_id)
            if subscription is not None:
                self.deliver_ready(conn, subscription, subscription.gate.offer(seq, frame))
        return bool(subscribers)

    def catch_up_all(self) -> None:
        """Read what every subscriber may have missed (the bus was down)."""
        for conn in list(self._audience.connections.values()):
            for subscription in list(conn.subscriptions.values()):
                if subscription.gate.last_seq is None:
                    continue  # still replaying its join, which reads PostgreSQL anyway
                cancel_gap(subscription)
                subscription.gap_task = asyncio.create_task(
                    self._fill_from_store(conn, subscription, subscription.gate.last_seq, None)
                )

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


def cancel_gap(subscription: RoomSubscription) -> None:
    if subscription.gap_task is not None:
        subscription.gap_task.cancel()
        subscription.gap_task = None

"""Posting, history, edits, deletions, search and read markers for room messages.

An acknowledged message is durable: ``post`` returns only after the batch transaction
that assigned its seq has committed (store/writer.py), and only then is the event
published.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg
import msgspec

from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    AppError,
    Forbidden,
    IdempotencyConflict,
    InternalError,
    InvalidInput,
    MessageDeleted,
    MessageNotFound,
    NotAMember,
    RateLimited,
    RoomArchived,
    RoomNotFound,
    Unavailable,
)
from boltorezka.events import EventPublisher, NullPublisher, RoomEvent
from boltorezka.ratelimit import Limiter
from boltorezka.rooms.service import (
    ROLE_RANK,
    Muted,
    require_member,
    require_not_muted,
    require_writable,
    resolve_access,
)
from boltorezka.store import audit
from boltorezka.store import messages as store
from boltorezka.store import rooms as room_store
from boltorezka.store.records import Message
from boltorezka.store.writer import MessageWriter, WriteFailed

# How long a client is asked to wait before resending while the database is unreachable.
_OUTAGE_RETRY_MS = 1000


class PostResult(msgspec.Struct, frozen=True):
    message: Message
    created: bool


class ReadMarker(msgspec.Struct, rename="camel", kw_only=True):
    room_id: uuid.UUID
    seq: int
    unread_count: int


# The writer authorizes each send in SQL with the rules of resolve_access, require_member,
# require_not_muted and require_writable (rooms/service.py); each refusal answers with the
# same error.
_REFUSALS: dict[str, Callable[[], AppError]] = {
    "room_not_found": RoomNotFound,
    "not_a_member": NotAMember,
    "room_archived": RoomArchived,
    "invalid_reply": lambda: InvalidInput(
        "replyTo must be a message in this room", field="replyTo"
    ),
    "idempotency_conflict": IdempotencyConflict,
    "muted": Muted,
}


def message_event_data(message: Message) -> dict[str, object]:
    return {"roomId": str(message.room_id), "message": msgspec.to_builtins(message)}


class MessageService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        writer: MessageWriter,
        events: EventPublisher | None = None,
        *,
        send_limiter: Limiter | None = None,
    ) -> None:
        self._pool = pool
        # Every send goes through the node's one batching writer (store/writer.py).
        self._writer = writer
        self.events: EventPublisher = events or NullPublisher()
        # One budget per user for every way of sending (REST and WebSocket alike).
        self._send_limiter = send_limiter

    async def post(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        client_msg_id: str,
        body: str,
        reply_to: uuid.UUID | None,
    ) -> PostResult:
        if self._send_limiter is not None:
            wait_ms = await self._send_limiter.take(f"send:{actor.user_id}")
            if wait_ms:
                raise RateLimited(wait_ms, "too many messages; slow down")
        try:
            stored = await self._writer.submit(
                room_id, actor.user_id, client_msg_id, body, reply_to
            )
        except WriteFailed as exc:
            # Retryable either way: the batch rolled back, and a retry with the same
            # clientMsgId is answered with the original if it did commit. An outage says so,
            # so clients back off instead of reporting a bug.
            if exc.unavailable:
                raise Unavailable(str(exc), retryAfterMs=_OUTAGE_RETRY_MS) from exc
            raise InternalError(str(exc)) from exc
        if stored.outcome not in ("created", "duplicate"):
            raise _REFUSALS[stored.outcome]()
        message = stored.message
        assert message is not None
        if stored.outcome == "duplicate":
            return PostResult(message, False)
        await self.events.publish(
            RoomEvent(room_id=room_id, kind="chat.message", data=message_event_data(message))
        )
        return PostResult(message, True)

    async def history(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        *,
        before: int | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[Message], bool]:
        """A page of messages in ascending seq, and whether more lie beyond it."""
        access = await resolve_access(self._pool, actor, room_id)
        require_member(access)
        # One extra row tells whether the page is the last one, without a second query.
        found = await store.page(self._pool, room_id, before=before, after=after, limit=limit + 1)
        if len(found) <= limit:
            return found, False
        # Forward pages run past their end; backward pages past their start.
        return (found[:limit] if after is not None else found[1:]), True

    async def edit(
        self, actor: Actor, room_id: uuid.UUID, message_id: uuid.UUID, body: str
    ) -> Message:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id)
            require_member(access)
            require_writable(access)
            await require_not_muted(conn, room_id, actor.user_id)
            current = await store.get(conn, room_id, message_id)
            if current is None:
                raise MessageNotFound()
            if current.sender_id != actor.user_id:
                raise Forbidden("only the sender can edit a message")
            if current.deleted_at is not None:
                raise MessageDeleted()
            message = await store.edit(conn, message_id, body)
        await self.events.publish(
            RoomEvent(room_id=room_id, kind="chat.edited", data=message_event_data(message))
        )
        return message

    async def delete(
        self, actor: Actor, room_id: uuid.UUID, message_id: uuid.UUID, info: RequestInfo
    ) -> Message:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id)
            role = require_member(access)
            current = await store.get(conn, room_id, message_id)
            if current is None:
                raise MessageNotFound()
            moderating = current.sender_id != actor.user_id
            if moderating and ROLE_RANK[role] < ROLE_RANK["admin"]:
                raise Forbidden("only the sender or a room admin can delete a message")
            if current.deleted_at is not None:
                return current
            message = await store.soft_delete(conn, message_id)
            if moderating:
                await audit.record(
                    conn,
                    "message.delete",
                    info,
                    actor_id=actor.user_id,
                    target_type="message",
                    target_id=message_id,
                    room_id=room_id,
                    details={"senderId": str(current.sender_id), "seq": current.seq},
                )
        await self.events.publish(
            RoomEvent(
                room_id=room_id,
                kind="chat.deleted",
                data={"roomId": str(room_id), "messageId": str(message_id), "seq": message.seq},
            )
        )
        return message

    async def search(
        self,
        actor: Actor,
        query: str,
        *,
        room_id: uuid.UUID | None,
        limit: int,
        cursor: tuple[datetime, uuid.UUID] | None,
    ) -> list[Message]:
        if room_id is not None:
            require_member(await resolve_access(self._pool, actor, room_id))
        return await store.search(
            self._pool, actor.user_id, query, room_id=room_id, limit=limit, cursor=cursor
        )

    async def mark_read(self, actor: Actor, room_id: uuid.UUID, seq: int) -> ReadMarker:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id)
            require_member(access)
            if seq > access.room.last_seq:
                raise InvalidInput(
                    f"seq {seq} is past the newest message ({access.room.last_seq})", field="seq"
                )
            stored = await room_store.set_read_marker(conn, room_id, actor.user_id, seq)
        marker = ReadMarker(
            room_id=room_id, seq=stored, unread_count=max(0, access.room.last_seq - stored)
        )
        # Only the reader's own devices need this: it keeps their unread counts in step.
        await self.events.publish(
            RoomEvent(
                room_id=room_id,
                kind="chat.read",
                data={"roomId": str(room_id), "userId": str(actor.user_id), "seq": stored},
                only_users=(actor.user_id,),
            )
        )
        return marker

"""What each client request does. Every handler returns the ``ack`` result or raises.

Handlers run one at a time per connection, in arrival order, so a client that sends
``room.join`` then ``chat.send`` can rely on the join having happened. Authorization comes
from the stored membership on every request, never from what the client claims.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec

from boltorezka.context import Actor
from boltorezka.errors import AppError, InvalidInput, RateLimited, RoomNotFound, Unauthenticated
from boltorezka.ratelimit import TokenBucketLimiter
from boltorezka.realtime import protocol
from boltorezka.realtime.connection import Connection
from boltorezka.realtime.hub import Hub
from boltorezka.rooms.service import require_member, resolve_access
from boltorezka.runtime import Services
from boltorezka.store import messages as message_store
from boltorezka.store import rooms as room_store
from boltorezka.store.records import Message

# The presence directory keeps statuses as plain strings; these are the ones it holds.
Observed = protocol.ObservedPresence
HISTORY_BATCH = 200

Handler = Callable[[Connection, Any], Awaitable[Any]]


class TokenMismatch(AppError):
    status = 403
    code = "token_mismatch"
    title = "auth.refresh must carry a token for the same user and device session"


class TooManyConnections(AppError):
    """A per-node cap on open sockets was reached: per client address at the upgrade (HTTP
    429), per user at ``auth`` (nack, then close 4030). Retrying at once cannot help."""

    status = 429
    code = "too_many_connections"
    title = "Too many open WebSocket connections"


def _message_data(message: Message) -> protocol.MessageData:
    return msgspec.convert(message, protocol.MessageData, from_attributes=True)


class RequestHandlers:
    def __init__(self, services: Services, hub: Hub) -> None:
        self.services = services
        self.hub = hub
        settings = services.settings
        self._typing_limiter = TokenBucketLimiter(settings.typing_burst, settings.typing_per_second)
        self.table: dict[type[Any], Handler] = {
            protocol.Auth: self.auth,
            protocol.AuthRefresh: self.auth_refresh,
            protocol.Ping: self.ping,
            protocol.RoomJoin: self.room_join,
            protocol.RoomLeave: self.room_leave,
            protocol.PresenceSet: self.presence_set,
            protocol.TypingStart: self.typing_start,
            protocol.TypingStop: self.typing_stop,
            protocol.ChatSend: self.chat_send,
            protocol.ChatEdit: self.chat_edit,
            protocol.ChatDelete: self.chat_delete,
            protocol.ChatRead: self.chat_read,
            protocol.ChatHistory: self.chat_history,
            protocol.CallStart: self.call_start,
            protocol.CallJoin: self.call_join,
            protocol.CallLeave: self.call_leave,
            protocol.CallEnd: self.call_end,
            protocol.RtcOffer: self.rtc_sdp,
            protocol.RtcAnswer: self.rtc_sdp,
            protocol.RtcIce: self.rtc_ice,
            protocol.CallTelemetry: self.call_telemetry,
        }
        self._signal_limiter = TokenBucketLimiter(
            settings.signaling_burst, settings.signaling_per_second
        )

    @staticmethod
    def actor(conn: Connection) -> Actor:
        if conn.user_id is None or conn.session_id is None:
            raise Unauthenticated("send an auth message with your access token first")
        return Actor(user_id=conn.user_id, session_id=conn.session_id)

    # --- session --------------------------------------------------------------------------

    async def auth(self, conn: Connection, msg: protocol.Auth) -> protocol.AuthResult:
        if conn.authenticated:
            raise InvalidInput("this connection is already authenticated; use auth.refresh")
        actor, expires_at, user, rooms = await self.services.auth.authenticate_connection(
            msg.payload.token
        )
        # Checked after the last await and right before the hub counts this connection, so
        # concurrent auths of one user cannot all pass the check and overshoot the cap.
        cap = self.services.settings.ws_max_per_user
        if cap and len(self.hub.by_user.get(actor.user_id, ())) >= cap:
            raise TooManyConnections(
                f"this user already has {cap} open connections on this node; close one first"
            )
        conn.user_id, conn.session_id = actor.user_id, actor.session_id
        conn.username = user.username
        conn.token_expires_at = expires_at
        conn.session_changed()
        self.hub.authenticated(conn, rooms)
        return protocol.AuthResult(
            user_id=actor.user_id,
            session_id=actor.session_id,
            expires_at=expires_at,
            # TURN credentials are per user, so they come with auth, not with capabilities.
            ice_servers=self._ice_servers(actor.user_id),
        )

    def _ice_servers(self, user_id: uuid.UUID) -> list[protocol.IceServerInfo]:
        return msgspec.convert(
            self.services.calls.ice_servers_for(user_id), list[protocol.IceServerInfo]
        )

    async def auth_refresh(
        self, conn: Connection, msg: protocol.AuthRefresh
    ) -> protocol.AuthRefreshResult:
        current = self.actor(conn)
        actor, expires_at = await self.services.auth.authenticate_until(msg.payload.token)
        if actor != current:
            raise TokenMismatch()
        conn.token_expires_at = expires_at
        conn.session_changed()
        # Fresh TURN credentials with every refresh: a socket open for longer than their
        # lifetime keeps working ones without another request.
        return protocol.AuthRefreshResult(
            expires_at=expires_at, ice_servers=self._ice_servers(actor.user_id)
        )

    async def ping(self, conn: Connection, msg: protocol.Ping) -> protocol.PingResult:
        # The ack is the pong: every request gets exactly one answer.
        return protocol.PingResult(ts=msg.payload.ts, server_time=int(time.time() * 1000))

    # --- rooms ----------------------------------------------------------------------------

    async def room_join(self, conn: Connection, msg: protocol.RoomJoin) -> Any:
        actor = self.actor(conn)
        room_id = msg.payload.room_id
        pool = self.services.pool
        access = await resolve_access(pool, actor, room_id)
        require_member(access)
        last_seq = msg.payload.last_seq
        if last_seq is not None and last_seq > access.room.last_seq:
            raise InvalidInput(
                f"lastSeq {last_seq} is past the room's newest message ({access.room.last_seq})",
                field="lastSeq",
            )
        # Subscribe before reading: everything committed from now on is buffered, and
        # the gate drops whatever the replay below already covered.
        subscription, first_device = self.hub.subscribe(conn, room_id)
        self.hub.add_membership(conn, room_id)
        try:
            await self.hub.routed(room_id)
            cursor: int | None
            if last_seq is None:
                # A fresh join: the room's position and its members in one round trip.
                snapshot = await room_store.last_seq_and_members(pool, room_id)
                if snapshot is None:
                    raise RoomNotFound()
                (cursor, member_ids), replayed = snapshot, 0
            else:
                cursor, replayed = await self._replay(conn, room_id, last_seq)
                member_ids = await room_store.member_ids(pool, room_id)
        except BaseException:
            # A failed join must not leave a subscription buffering events forever.
            self.hub.drop_subscription(conn, room_id)
            raise
        if cursor is None:
            return _ALREADY_ACKED  # closed for resume during the replay; the client starts over
        # No await from here on: the ack, the snapshot and the buffered live events go out
        # in this order with nothing interleaved.
        presence = protocol.RoomPresence(
            payload=protocol.RoomPresencePayload(
                room_id=room_id,
                members=[
                    protocol.PresenceMember(
                        user_id=uid,
                        status=cast(protocol.ObservedPresence, self.hub.presence_of(uid)),
                    )
                    for uid in member_ids
                ],
            )
        )
        conn.send(
            protocol.ack(
                msg.request_id,
                protocol.RoomJoinResult(room_id=room_id, last_seq=cursor, replayed=replayed),
            )
        )
        conn.send(presence)
        self.hub.deliver_ready(conn, subscription, subscription.gate.start(cursor))
        if first_device:
            self.hub.room_joined(conn, room_id)
        return _ALREADY_ACKED

    async def _replay(
        self, conn: Connection, room_id: uuid.UUID, last_seq: int
    ) -> tuple[int | None, int]:
        """Send what came after ``last_seq``; return the seq reached (None if the connection
        closed meanwhile) and how many messages were sent."""
        pool = self.services.pool
        cursor, replayed = last_seq, 0
        while True:
            batch = await message_store.page(
                pool, room_id, before=None, after=cursor, limit=HISTORY_BATCH
            )
            for message in batch:
                frame = protocol.encode(
                    protocol.ChatMessage(
                        payload=protocol.ChatMessagePayload(
                            room_id=room_id, message=_message_data(message)
                        )
                    )
                )
                if not await conn.send_paced(frame):
                    return None, replayed
                cursor = message.seq
            replayed += len(batch)
            if len(batch) < HISTORY_BATCH:
                return cursor, replayed

    async def room_leave(
        self, conn: Connection, msg: protocol.RoomLeave
    ) -> protocol.RoomLeaveResult:
        self.actor(conn)
        left = self.hub.unsubscribe(conn, msg.payload.room_id)
        return protocol.RoomLeaveResult(room_id=msg.payload.room_id, left=left)

    async def presence_set(
        self, conn: Connection, msg: protocol.PresenceSet
    ) -> protocol.PresenceSetResult:
        self.actor(conn)
        self.hub.set_status(conn, msg.payload.status)
        return protocol.PresenceSetResult(status=msg.payload.status)

    async def typing_start(self, conn: Connection, msg: protocol.TypingStart) -> Any:
        actor = self.actor(conn)
        self._limit(self._typing_limiter, f"typing:{actor.user_id}")
        self._require_joined(conn, msg.payload.room_id)
        self.hub.typing_start(conn, msg.payload.room_id)
        return None

    async def typing_stop(self, conn: Connection, msg: protocol.TypingStop) -> Any:
        actor = self.actor(conn)
        self._require_joined(conn, msg.payload.room_id)
        self.hub.typing_stop(msg.payload.room_id, actor.user_id)
        return None

    # --- chat -----------------------------------------------------------------------------

    async def chat_send(self, conn: Connection, msg: protocol.ChatSend) -> protocol.ChatSendResult:
        actor = self.actor(conn)
        p = msg.payload
        result = await self.services.messages.post(
            actor, p.room_id, p.client_msg_id, p.body, p.reply_to
        )
        message = result.message
        return protocol.ChatSendResult(
            message_id=message.id,
            seq=message.seq,
            created_at=message.created_at,
            duplicate=not result.created,
        )

    async def chat_edit(self, conn: Connection, msg: protocol.ChatEdit) -> protocol.ChatEditResult:
        p = msg.payload
        message = await self.services.messages.edit(
            self.actor(conn), p.room_id, p.message_id, p.body
        )
        return protocol.ChatEditResult(message=_message_data(message))

    async def chat_delete(
        self, conn: Connection, msg: protocol.ChatDelete
    ) -> protocol.ChatDeleteResult:
        p = msg.payload
        message = await self.services.messages.delete(
            self.actor(conn), p.room_id, p.message_id, conn.envelope_info()
        )
        return protocol.ChatDeleteResult(message_id=message.id, seq=message.seq)

    async def chat_read(self, conn: Connection, msg: protocol.ChatRead) -> protocol.ChatReadResult:
        p = msg.payload
        marker = await self.services.messages.mark_read(self.actor(conn), p.room_id, p.seq)
        return protocol.ChatReadResult(
            room_id=marker.room_id, seq=marker.seq, unread_count=marker.unread_count
        )

    async def chat_history(
        self, conn: Connection, msg: protocol.ChatHistory
    ) -> protocol.ChatHistoryResult:
        p = msg.payload
        limit = p.limit or 50
        found, has_more = await self.services.messages.history(
            self.actor(conn), p.room_id, before=p.before, after=p.after, limit=limit
        )
        return protocol.ChatHistoryResult(
            room_id=p.room_id, messages=[_message_data(m) for m in found], has_more=has_more
        )

    # --- calls ----------------------------------------------------------------------------

    # The call service answers with plain data, since a request may have been answered by
    # the node holding the call (over the bus); the result struct is made here.
    async def call_start(
        self, conn: Connection, msg: protocol.CallStart
    ) -> protocol.CallJoinedResult:
        joined = await self.services.calls.start(
            self.actor(conn), conn.id, msg.payload.room_id, msg.payload.mode
        )
        return msgspec.convert(joined, protocol.CallJoinedResult)

    async def call_join(
        self, conn: Connection, msg: protocol.CallJoin
    ) -> protocol.CallJoinedResult:
        joined = await self.services.calls.join(self.actor(conn), conn.id, msg.payload.call_id)
        return msgspec.convert(joined, protocol.CallJoinedResult)

    async def call_leave(
        self, conn: Connection, msg: protocol.CallLeave
    ) -> protocol.CallLeftResult:
        left = await self.services.calls.leave(self.actor(conn), conn.id, msg.payload.call_id)
        return msgspec.convert(left, protocol.CallLeftResult)

    async def call_end(self, conn: Connection, msg: protocol.CallEnd) -> protocol.CallLeftResult:
        ended = await self.services.calls.end(self.actor(conn), conn.id, msg.payload.call_id)
        return msgspec.convert(ended, protocol.CallLeftResult)

    async def rtc_sdp(self, conn: Connection, msg: protocol.RtcOffer | protocol.RtcAnswer) -> Any:
        self._limit(self._signal_limiter, f"signal:{conn.id}")
        self.actor(conn)
        p = msg.payload
        await self.services.calls.relay(
            conn.id,
            p.call_id,
            protocol.message_type(msg),
            p.to,
            {"sdp": p.sdp, "iceRestart": p.ice_restart},
        )
        return None

    async def rtc_ice(self, conn: Connection, msg: protocol.RtcIce) -> Any:
        self._limit(self._signal_limiter, f"signal:{conn.id}")
        self.actor(conn)
        p = msg.payload
        candidate = msgspec.to_builtins(p.candidate) if p.candidate is not None else None
        await self.services.calls.relay(
            conn.id, p.call_id, "rtc.ice", p.to, {"candidate": candidate}
        )
        return None

    async def call_telemetry(self, conn: Connection, msg: protocol.CallTelemetry) -> Any:
        self.actor(conn)
        p = msg.payload
        await self.services.calls.telemetry(
            conn.id, p.call_id, p.outcome, p.setup_ms, p.ice_failed, p.candidate_type
        )
        return None

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _limit(limiter: TokenBucketLimiter, key: str) -> None:
        wait_ms = limiter.acquire(key)
        if wait_ms:
            raise RateLimited(wait_ms)

    @staticmethod
    def _require_joined(conn: Connection, room_id: uuid.UUID) -> None:
        if room_id not in conn.subscriptions:
            raise NotJoined()


class NotJoined(AppError):
    status = 409
    code = "room_not_joined"
    title = "Join the room on this connection first"


class _AlreadyAcked:
    """Marker: the handler sent its own ack to order it among other frames."""


_ALREADY_ACKED = _AlreadyAcked()
ALREADY_ACKED = _ALREADY_ACKED

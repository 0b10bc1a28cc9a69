"""Rooms and membership, with every authorization decision made here from stored roles.

Visibility rule: a private or direct room the caller is not in does not exist for them
(404). A public room is visible to every signed-in user, but reading or writing its
content needs membership (403 ``not_a_member``). A member lacking a role gets 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import msgspec
import structlog

from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    AlreadyMember,
    Conflict,
    DirectRoomImmutable,
    Forbidden,
    InvalidInput,
    NotAMember,
    OwnerMustTransfer,
    RoomArchived,
    RoomNotFound,
    UserNotFound,
)
from boltorezka.events import EventPublisher, NullPublisher, RoomEvent
from boltorezka.store import Executor, audit, users
from boltorezka.store import moderation as moderation_store
from boltorezka.store import rooms as store
from boltorezka.store.records import Member, Room

_log = structlog.get_logger("boltorezka.rooms")

ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}


class RoomView(msgspec.Struct, rename="camel", kw_only=True):
    room: Room
    my_role: str | None
    member_count: int


class RoomSummary(msgspec.Struct, rename="camel", kw_only=True):
    room: Room
    my_role: str
    last_read_seq: int
    unread_count: int


class Access(msgspec.Struct, frozen=True):
    room: Room
    role: str | None

    @property
    def is_member(self) -> bool:
        return self.role is not None


def room_info(room: Room) -> dict[str, object]:
    """What members' live connections are told about a room after it changes."""
    return {
        "roomId": str(room.id),
        "kind": room.kind,
        "name": room.name,
        "topic": room.topic,
        "archived": room.archived_at is not None,
    }


async def resolve_access(
    conn: Executor,
    actor: Actor,
    room_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Access:
    """Load the room as the caller may see it; private rooms they are not in are 404."""
    found = await store.get_with_role(conn, room_id, actor.user_id, for_update=for_update)
    if found is None:
        raise RoomNotFound()
    room, role = found
    if role is None and room.kind != "public":
        raise RoomNotFound()
    return Access(room, role)


def require_member(access: Access) -> str:
    if access.role is None:
        raise NotAMember()
    return access.role


def require_role(access: Access, minimum: str) -> str:
    role = require_member(access)
    if ROLE_RANK[role] < ROLE_RANK[minimum]:
        raise Forbidden(f"this needs the {minimum} role or higher; you are {role}")
    return role


def require_writable(access: Access) -> None:
    if access.room.archived_at is not None:
        raise RoomArchived()


class Banned(Forbidden):
    code = "banned"
    title = "You are banned from this room"


class UserBanned(Conflict):
    code = "user_banned"
    title = "The user is banned from this room; lift the ban first"


class Muted(Forbidden):
    code = "muted"
    title = "You are muted in this room: you may read, not post or start calls"


async def require_not_muted(conn: Executor, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Chat sends check this in SQL (post_messages_v2); edits and calls ask here."""
    if await moderation_store.is_muted(conn, room_id, user_id):
        raise Muted()


# Told after a commit that ``user`` (None: everyone, the room was deleted) is no longer a
# member of ``room``, so what membership allowed (a place in the room's call) ends too.
MembershipEnded = Callable[[uuid.UUID, uuid.UUID | None], Awaitable[None]]


class RoomService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        events: EventPublisher | None = None,
        *,
        membership_ended: MembershipEnded | None = None,
    ) -> None:
        self._pool = pool
        self.events: EventPublisher = events or NullPublisher()
        self._membership_ended = membership_ended

    async def _end_membership(self, room_id: uuid.UUID, user_id: uuid.UUID | None) -> None:
        if self._membership_ended is None:
            return
        try:
            await self._membership_ended(room_id, user_id)
        except Exception:
            # The removal is committed and announced; the call side heals on its own
            # (signals from a non-member are refused, and its socket's grace runs out).
            _log.exception("ending a removed member's call participation failed")

    async def create(
        self, actor: Actor, kind: str, name: str, topic: str, info: RequestInfo
    ) -> RoomView:
        async with self._pool.acquire() as conn, conn.transaction():
            room = await store.create(conn, kind, name, topic, actor.user_id)
            await audit.record(
                conn,
                "room.create",
                info,
                actor_id=actor.user_id,
                target_type="room",
                target_id=room.id,
                room_id=room.id,
                details={"kind": kind},
            )
        # The creator's open sockets learn the room is theirs (calls, notifications).
        await self._member_event(room.id, "member.added", actor.user_id)
        return RoomView(room=room, my_role="owner", member_count=1)

    async def open_direct(self, actor: Actor, other_id: uuid.UUID) -> tuple[RoomView, bool]:
        if other_id == actor.user_id:
            raise InvalidInput("a direct room needs another user", field="userId")
        async with self._pool.acquire() as conn, conn.transaction():
            other = await users.get(conn, other_id)
            me = await users.get(conn, actor.user_id)
            if other is None or me is None:
                raise UserNotFound()
            name = f"{me.username} & {other.username}"
            room, created = await store.get_or_create_direct(conn, actor.user_id, other_id, name)
        if created:
            # Both sides' open sockets learn of the room, so its first message notifies.
            for user_id in (actor.user_id, other_id):
                await self._member_event(room.id, "member.added", user_id)
        return RoomView(room=room, my_role="member", member_count=2), created

    async def list_mine(self, actor: Actor) -> list[RoomSummary]:
        rows = await store.list_for_user(self._pool, actor.user_id)
        return [
            RoomSummary(
                room=room,
                my_role=role,
                last_read_seq=read,
                unread_count=max(0, room.last_seq - read),
            )
            for room, role, read in rows
        ]

    async def list_public(
        self, query: str | None, limit: int, cursor: tuple[datetime, uuid.UUID] | None
    ) -> list[Room]:
        return await store.list_public(self._pool, query, limit, cursor)

    async def get(self, actor: Actor, room_id: uuid.UUID) -> RoomView:
        access = await resolve_access(self._pool, actor, room_id)
        count = await store.member_count(self._pool, room_id)
        return RoomView(room=access.room, my_role=access.role, member_count=count)

    async def update(
        self, actor: Actor, room_id: uuid.UUID, name: str | None, topic: str | None
    ) -> RoomView:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            role = require_role(access, "admin")
            require_writable(access)
            room = await store.update(conn, room_id, name, topic)
            count = await store.member_count(conn, room_id)
        await self.events.publish(
            RoomEvent(room_id=room_id, kind="room.updated", data=room_info(room))
        )
        return RoomView(room=room, my_role=role, member_count=count)

    async def set_archived(
        self, actor: Actor, room_id: uuid.UUID, archived: bool, info: RequestInfo
    ) -> RoomView:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            role = require_role(access, "admin")
            room = await store.set_archived(conn, room_id, archived)
            if (access.room.archived_at is not None) != archived:  # audit real changes only
                await audit.record(
                    conn,
                    "room.archive" if archived else "room.unarchive",
                    info,
                    actor_id=actor.user_id,
                    target_type="room",
                    target_id=room_id,
                    room_id=room_id,
                )
            count = await store.member_count(conn, room_id)
        if (access.room.archived_at is not None) != archived:
            await self.events.publish(
                RoomEvent(room_id=room_id, kind="room.updated", data=room_info(room))
            )
        return RoomView(room=room, my_role=role, member_count=count)

    async def delete(
        self, actor: Actor | None, room_id: uuid.UUID, info: RequestInfo, *, operator: bool = False
    ) -> None:
        """``operator``: a server operator's delete (``actor`` None: the command line), of
        any room but a direct one; the admin service has checked their server role."""
        async with self._pool.acquire() as conn, conn.transaction():
            if operator:
                found = await store.get_for_admin(conn, room_id, for_update=True)
                if found is None:
                    raise RoomNotFound()
                access = Access(found, None)
            else:
                assert actor is not None
                access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            if not operator:
                require_role(access, "owner")
            await store.soft_delete(conn, room_id)
            await audit.record(
                conn,
                "admin.room.delete" if operator else "room.delete",
                info,
                actor_id=None if actor is None else actor.user_id,
                target_type="room",
                target_id=room_id,
                room_id=room_id,
                details={"name": access.room.name},
            )
        await self.events.publish(
            RoomEvent(room_id=room_id, kind="room.deleted", data={"roomId": str(room_id)})
        )
        await self._end_membership(room_id, None)

    async def members(self, actor: Actor, room_id: uuid.UUID) -> list[Member]:
        access = await resolve_access(self._pool, actor, room_id)
        require_member(access)
        return await store.members(self._pool, room_id)

    async def join(self, actor: Actor, room_id: uuid.UUID) -> Member:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            if access.role is None:
                # resolve_access already hid non-public rooms; only public ones are joinable.
                if await moderation_store.is_banned(conn, room_id, actor.user_id):
                    raise Banned()
                require_writable(access)
                await store.add_member(conn, room_id, actor.user_id, "member")
            member = await store.get_member(conn, room_id, actor.user_id)
        assert member is not None
        if access.role is None:
            await self._member_event(room_id, "member.added", actor.user_id)
        return member

    async def add_member(
        self, actor: Actor, room_id: uuid.UUID, user_id: uuid.UUID, role: str, info: RequestInfo
    ) -> Member:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            my_role = require_role(access, "admin")
            require_writable(access)
            if role == "admin" and my_role != "owner":
                raise Forbidden("only the owner can make admins")
            if await users.get(conn, user_id) is None:
                raise UserNotFound()
            if await moderation_store.is_banned(conn, room_id, user_id):
                raise UserBanned()
            if not await store.add_member(conn, room_id, user_id, role):
                raise AlreadyMember()
            await audit.record(
                conn,
                "member.add",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
                details={"role": role},
            )
            member = await store.get_member(conn, room_id, user_id)
        assert member is not None
        await self._member_event(room_id, "member.added", user_id)
        return member

    async def remove_member(
        self, actor: Actor, room_id: uuid.UUID, user_id: uuid.UUID, info: RequestInfo
    ) -> None:
        if user_id == actor.user_id:
            await self.leave(actor, room_id, info)
            return
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            my_role = require_role(access, "admin")
            target = await store.get_member(conn, room_id, user_id)
            if target is None:
                raise UserNotFound("that user is not a member of this room")
            if ROLE_RANK[target.role] >= ROLE_RANK[my_role]:
                raise Forbidden(f"a {my_role} cannot remove a {target.role}")
            await store.remove_member(conn, room_id, user_id)
            await audit.record(
                conn,
                "member.remove",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
                details={"role": target.role},
            )
        await self._member_event(room_id, "member.removed", user_id, extra_user=user_id)
        await self._end_membership(room_id, user_id)

    async def change_role(
        self, actor: Actor, room_id: uuid.UUID, user_id: uuid.UUID, role: str, info: RequestInfo
    ) -> Member:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            require_role(access, "owner")
            target = await store.get_member(conn, room_id, user_id)
            if target is None:
                raise UserNotFound("that user is not a member of this room")
            if target.role == "owner":
                raise Forbidden("use ownership transfer to change the owner's role")
            if target.role != role:
                await store.set_role(conn, room_id, user_id, role)
                await audit.record(
                    conn,
                    "member.role_change",
                    info,
                    actor_id=actor.user_id,
                    target_type="user",
                    target_id=user_id,
                    room_id=room_id,
                    details={"from": target.role, "to": role},
                )
            member = await store.get_member(conn, room_id, user_id)
        assert member is not None
        return member

    async def leave(self, actor: Actor, room_id: uuid.UUID, info: RequestInfo) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            role = require_member(access)
            if role == "owner":
                raise OwnerMustTransfer()
            await store.remove_member(conn, room_id, actor.user_id)
            await audit.record(
                conn,
                "member.leave",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=actor.user_id,
                room_id=room_id,
            )
        await self._member_event(room_id, "member.removed", actor.user_id, extra_user=actor.user_id)
        await self._end_membership(room_id, actor.user_id)

    async def transfer_ownership(
        self, actor: Actor, room_id: uuid.UUID, user_id: uuid.UUID, info: RequestInfo
    ) -> list[Member]:
        async with self._pool.acquire() as conn, conn.transaction():
            access = await resolve_access(conn, actor, room_id, for_update=True)
            self._not_direct(access)
            require_role(access, "owner")
            if user_id == actor.user_id:
                raise InvalidInput("you already own this room", field="userId")
            target = await store.get_member(conn, room_id, user_id)
            if target is None:
                raise UserNotFound("that user is not a member of this room")
            # Demote first: the one-owner unique index forbids two owners even mid-transaction.
            await store.set_role(conn, room_id, actor.user_id, "admin")
            await store.set_role(conn, room_id, user_id, "owner")
            await audit.record(
                conn,
                "room.transfer_ownership",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
            )
            result = [
                await store.get_member(conn, room_id, uid) for uid in (actor.user_id, user_id)
            ]
        return [m for m in result if m is not None]

    async def membership_removed(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """After a commit that removed ``user_id`` from the room some other way (a ban):
        what a removal announces and ends, the same way."""
        await self._member_event(room_id, "member.removed", user_id, extra_user=user_id)
        await self._end_membership(room_id, user_id)

    @staticmethod
    def _not_direct(access: Access) -> None:
        if access.room.kind == "direct":
            raise DirectRoomImmutable()

    async def _member_event(
        self,
        room_id: uuid.UUID,
        kind: str,
        user_id: uuid.UUID,
        extra_user: uuid.UUID | None = None,
    ) -> None:
        # A removed user is no longer a member, so they are told directly as well.
        await self.events.publish(
            RoomEvent(
                room_id=room_id, kind=kind, data={"roomId": str(room_id), "userId": str(user_id)}
            )
        )
        if extra_user is not None:
            await self.events.publish(
                RoomEvent(
                    room_id=room_id,
                    kind=kind,
                    data={"roomId": str(room_id), "userId": str(user_id)},
                    only_users=(extra_user,),
                )
            )

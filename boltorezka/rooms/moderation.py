"""Room moderation: bans, mutes, message reports; who may moderate which room.

Who may moderate a room (ban, unban, mute, unmute, list bans and mutes, list and resolve
reports): its owner and admins, and server moderators and admins (``users.server_role``)
in any room, public or private, without being in it. A server role gives only this inside
rooms: reading history, posting or joining still need membership, as for everyone.

Whom: anyone but the room's owner and the moderator themselves; a room admin only plain
members and users who are not in the room, never another admin. Bans and mutes do not
apply to direct rooms (``direct_room_immutable``); reports do, and there only server
moderators and admins resolve them.

- A ban removes the membership (the live sockets lose the room at once, as on a removal)
  and keeps the user out: a public room refuses their join (``banned``), and an admin
  adding them is refused (``user_banned``) until the ban is lifted or expires.
- A mute keeps a member reading but refuses their sends (``muted``, checked per row by
  the batch writer's SQL), edits and call starts; joining a call someone else started is
  still allowed. It outlives leaving and joining again.
- Any member reports a message of someone else's; the report keeps a copy of it.

Every change is audited in its transaction and announced to the room's connected members
after the commit (``member.banned``, ``member.muted``, ``member.unmuted``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from boltorezka import cursor
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    Conflict,
    DirectRoomImmutable,
    Forbidden,
    InvalidInput,
    MessageDeleted,
    MessageNotFound,
    NotFound,
    RoomNotFound,
    UserNotFound,
)
from boltorezka.events import RoomEvent
from boltorezka.rooms.service import (
    ROLE_RANK,
    Access,
    RoomService,
    require_member,
    require_role,
    resolve_access,
)
from boltorezka.store import Executor, audit, users
from boltorezka.store import messages as message_store
from boltorezka.store import moderation as store
from boltorezka.store import rooms as room_store
from boltorezka.store.moderation import Ban, Mute, Report, ReportStatus, Resolution

# A server moderator or admin moderates as the owner would, but never the owner.
_SERVER_RANK = ROLE_RANK["owner"]
SERVER_MODERATORS = ("admin", "moderator")


class NotBanned(NotFound):
    code = "not_banned"
    title = "The user is not banned from this room"


class NotMuted(NotFound):
    code = "not_muted"
    title = "The user is not muted in this room"


class ReportNotFound(NotFound):
    code = "report_not_found"
    title = "Report not found"


class AlreadyReported(Conflict):
    code = "already_reported"
    title = "You have an open report of this message already"


class ReportResolved(Conflict):
    code = "report_resolved"
    title = "The report is resolved already"


class BanList(msgspec.Struct, rename="camel", kw_only=True):
    """The bans in force, newest first."""

    bans: list[Ban]


class MuteList(msgspec.Struct, rename="camel", kw_only=True):
    """The mutes in force, newest first."""

    mutes: list[Mute]


class ReportPage(msgspec.Struct, rename="camel", kw_only=True):
    """Reports, newest first; pass ``nextCursor`` back as ``cursor`` for the next page."""

    reports: list[Report]
    next_cursor: str | None


class ModerationService:
    def __init__(self, pool: asyncpg.Pool, rooms: RoomService) -> None:
        self._pool = pool
        # Its publisher, and the removal path a ban shares with a kick.
        self._rooms = rooms

    # --- bans ---------------------------------------------------------------------------

    async def ban(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        user_id: uuid.UUID,
        reason: str,
        duration_seconds: int | None,
        info: RequestInfo,
    ) -> Ban:
        async with self._pool.acquire() as conn, conn.transaction():
            access, rank = await self._moderate(conn, actor, room_id, lock=True)
            _not_direct(access)
            target = await self._target(conn, actor, room_id, user_id, rank, "ban")
            ban = await store.put_ban(
                conn, room_id, user_id, actor.user_id, reason, duration_seconds
            )
            removed = target is not None and await room_store.remove_member(conn, room_id, user_id)
            await audit.record(
                conn,
                "room.ban",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
                details={
                    "reason": reason,
                    "expiresAt": _instant(ban.expires_at),
                    "role": target,
                },
            )
        # Told while still a member, so the banned user's own sockets hear it too.
        await self._publish(room_id, "member.banned", user_id, expiresAt=_instant(ban.expires_at))
        if removed:
            await self._rooms.membership_removed(room_id, user_id)
        return ban

    async def unban(
        self, actor: Actor, room_id: uuid.UUID, user_id: uuid.UUID, info: RequestInfo
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            access, _ = await self._moderate(conn, actor, room_id, lock=True)
            _not_direct(access)
            if not await store.lift_ban(conn, room_id, user_id):
                raise NotBanned()
            await audit.record(
                conn,
                "room.unban",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
            )

    async def bans(self, actor: Actor, room_id: uuid.UUID) -> BanList:
        access, _ = await self._moderate(self._pool, actor, room_id)
        _not_direct(access)
        return BanList(bans=await store.bans(self._pool, room_id))

    # --- mutes --------------------------------------------------------------------------

    async def mute(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        user_id: uuid.UUID,
        reason: str,
        duration_seconds: int | None,
        info: RequestInfo,
    ) -> Mute:
        async with self._pool.acquire() as conn, conn.transaction():
            access, rank = await self._moderate(conn, actor, room_id, lock=True)
            _not_direct(access)
            target = await self._target(conn, actor, room_id, user_id, rank, "mute")
            if target is None:
                raise UserNotFound("that user is not a member of this room")
            mute = await store.put_mute(
                conn, room_id, user_id, actor.user_id, reason, duration_seconds
            )
            await audit.record(
                conn,
                "room.mute",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
                details={"reason": reason, "expiresAt": _instant(mute.expires_at)},
            )
        await self._publish(room_id, "member.muted", user_id, expiresAt=_instant(mute.expires_at))
        return mute

    async def unmute(
        self, actor: Actor, room_id: uuid.UUID, user_id: uuid.UUID, info: RequestInfo
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            access, _ = await self._moderate(conn, actor, room_id, lock=True)
            _not_direct(access)
            if not await store.lift_mute(conn, room_id, user_id):
                raise NotMuted()
            await audit.record(
                conn,
                "room.unmute",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=user_id,
                room_id=room_id,
            )
        await self._publish(room_id, "member.unmuted", user_id)

    async def mutes(self, actor: Actor, room_id: uuid.UUID) -> MuteList:
        access, _ = await self._moderate(self._pool, actor, room_id)
        _not_direct(access)
        return MuteList(mutes=await store.mutes(self._pool, room_id))

    # --- reports ------------------------------------------------------------------------

    async def report(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        message_id: uuid.UUID,
        reason: str,
        info: RequestInfo,
    ) -> Report:
        async with self._pool.acquire() as conn, conn.transaction():
            require_member(await resolve_access(conn, actor, room_id))
            message = await message_store.get(conn, room_id, message_id)
            if message is None:
                raise MessageNotFound()
            if message.deleted_at is not None:
                raise MessageDeleted()
            if message.sender_id == actor.user_id:
                raise InvalidInput("you cannot report your own message", field="messageId")
            report = await store.add_report(conn, room_id, message_id, actor.user_id, reason)
            if report is None:
                raise AlreadyReported()
            await audit.record(
                conn,
                "message.report",
                info,
                actor_id=actor.user_id,
                target_type="message",
                target_id=message_id,
                room_id=room_id,
                details={"reportId": str(report.id), "senderId": str(message.sender_id)},
            )
        return report

    async def reports(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        status: ReportStatus,
        limit: int,
        position: str | None,
    ) -> ReportPage:
        await self._moderate(self._pool, actor, room_id)
        found = await store.reports(self._pool, room_id, status, limit, cursor.decode(position))
        following = (
            cursor.encode(found[-1].created_at, found[-1].id) if len(found) == limit else None
        )
        return ReportPage(reports=found, next_cursor=following)

    async def resolve(
        self,
        actor: Actor,
        room_id: uuid.UUID,
        report_id: uuid.UUID,
        resolution: Resolution,
        note: str | None,
        info: RequestInfo,
    ) -> Report:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._moderate(conn, actor, room_id)
            report = await store.resolve_report(
                conn, room_id, report_id, actor.user_id, resolution, note
            )
            if report is None:
                if await store.get_report(conn, room_id, report_id) is None:
                    raise ReportNotFound()
                raise ReportResolved()
            await audit.record(
                conn,
                "report.resolve",
                info,
                actor_id=actor.user_id,
                target_type="report",
                target_id=report_id,
                room_id=room_id,
                details={"resolution": resolution, "messageId": str(report.message_id)},
            )
        return report

    # --- who may ------------------------------------------------------------------------

    async def _moderate(
        self, conn: Executor, actor: Actor, room_id: uuid.UUID, *, lock: bool = False
    ) -> tuple[Access, int]:
        """The room and the caller's moderating rank in it, or the refusal. ``lock``: the
        room row, which every membership change locks first (so does the batch writer)."""
        if await users.server_role(conn, actor.user_id) in SERVER_MODERATORS:
            room = await room_store.get_for_admin(conn, room_id, for_update=lock)
            if room is None:
                raise RoomNotFound()
            return Access(room, None), _SERVER_RANK
        access = await resolve_access(conn, actor, room_id, for_update=lock)
        return access, ROLE_RANK[require_role(access, "admin")]

    @staticmethod
    async def _target(
        conn: Executor,
        actor: Actor,
        room_id: uuid.UUID,
        user_id: uuid.UUID,
        rank: int,
        action: str,
    ) -> str | None:
        """Refuse a target the caller may not ``action``; their role in the room, if any."""
        if user_id == actor.user_id:
            raise InvalidInput(f"you cannot {action} yourself", field="userId")
        if await users.get(conn, user_id) is None:
            raise UserNotFound()
        member = await room_store.get_member(conn, room_id, user_id)
        if member is None:
            return None
        if member.role == "owner":
            raise Forbidden(f"nobody may {action} the room's owner")
        if ROLE_RANK[member.role] >= rank:
            raise Forbidden(f"a room admin cannot {action} another {member.role}")
        return member.role

    async def _publish(
        self, room_id: uuid.UUID, kind: str, user_id: uuid.UUID, **extra: Any
    ) -> None:
        await self._rooms.events.publish(
            RoomEvent(
                room_id=room_id,
                kind=kind,
                data={"roomId": str(room_id), "userId": str(user_id), **extra},
            )
        )


def _not_direct(access: Access) -> None:
    if access.room.kind == "direct":
        raise DirectRoomImmutable()


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()

"""What the server's operators do: accounts, server roles, rooms, the audit log, nodes.

Two server roles sit beside the per-room ones. ``moderator`` reads: the user list, the
room list and the audit log. ``admin`` does everything else as well: creates accounts,
grants and takes away server roles, disables and enables accounts, revokes their device
sessions, issues one-time password reset tokens, deletes rooms, lists and drains nodes.
A server role gives no power inside a room; room roles decide that, as for everyone.

Every change is written to the audit log in the transaction that makes it. The command
line (``boltorezka admin``) acts as :data:`COMMAND_LINE`: whoever can run it holds the
database's credentials already, which is how the first admin is made.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import msgspec

from boltorezka import cursor
from boltorezka.accounts.service import AccountDeleted, AccountService, PasswordResetIssued
from boltorezka.auth import passwords
from boltorezka.auth.service import AuthService
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    UsernameTaken,
    UserNotFound,
)
from boltorezka.rooms.service import RoomService
from boltorezka.store import Executor, audit, users
from boltorezka.store import rooms as room_store
from boltorezka.store.audit import AuditEntry
from boltorezka.store.rooms import AdminRoom
from boltorezka.store.users import AdminUser, ServerRole


class ServerRoleRequired(Forbidden):
    code = "server_role_required"
    title = "This needs a server role: admin, or moderator for reading"


class OwnAccount(Conflict):
    code = "own_account"
    title = "Operators cannot disable their own account or change their own server role"


class NodeNotFound(NotFound):
    code = "node_not_found"
    title = "No live node has this id"


@dataclass(frozen=True, slots=True)
class CommandLine:
    """The caller of ``boltorezka admin``: trusted, being able to reach the database."""


COMMAND_LINE = CommandLine()
Caller = Actor | CommandLine

USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
READERS: tuple[ServerRole, ...] = ("admin", "moderator")
ADMINS: tuple[ServerRole, ...] = ("admin",)


class UserPage(msgspec.Struct, rename="camel", kw_only=True):
    """Users, newest first; pass ``nextCursor`` back as ``cursor`` for the next page."""

    users: list[AdminUser]
    next_cursor: str | None


class RoomPage(msgspec.Struct, rename="camel", kw_only=True):
    """Rooms of every kind, newest first; pass ``nextCursor`` back as ``cursor``."""

    rooms: list[AdminRoom]
    next_cursor: str | None


class AuditPage(msgspec.Struct, rename="camel", kw_only=True):
    """Audit entries, newest first; pass ``nextCursor`` back as ``cursor``."""

    entries: list[AuditEntry]
    next_cursor: str | None


class SessionsRevoked(msgspec.Struct, rename="camel", kw_only=True):
    """How many live device sessions were revoked (their sockets are closed)."""

    revoked: int


class NodeInfo(msgspec.Struct, rename="camel", kw_only=True):
    """A node heard from lately; ``current``: the one that answered this request."""

    node_id: str
    current: bool


class NodeList(msgspec.Struct, rename="camel", kw_only=True):
    nodes: list[NodeInfo]


class DrainAccepted(msgspec.Struct, rename="camel", kw_only=True):
    """The drain was sent to the node; it stops as on SIGTERM and exits."""

    node_id: str
    status: str = "draining"


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor_id: uuid.UUID | None = None
    action: str | None = None
    room_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


class Nodes(Protocol):
    """The cluster as operators reach it (realtime/node_control.py implements it)."""

    @property
    def node_id(self) -> str: ...

    def alive_nodes(self) -> list[str]: ...

    async def request_drain(self, node_id: str) -> None: ...


def encode_audit_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"audit|{entry_id}".encode()).decode().rstrip("=")


def decode_audit_cursor(value: str | None) -> int | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        kind, _, number = raw.partition("|")
        if kind != "audit" or not number.isdigit():
            raise ValueError(raw)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this server issued", field="cursor") from None


class AdminService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        auth: AuthService,
        rooms: RoomService,
        nodes: Nodes | None = None,
        *,
        accounts: AccountService | None = None,
    ) -> None:
        self._pool = pool
        self._auth = auth
        self._rooms = rooms
        self._nodes = nodes
        self._accounts = accounts or AccountService(pool, auth)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def require(self, caller: Caller, allowed: tuple[ServerRole, ...]) -> None:
        """Refuse a caller without one of ``allowed``, read from the database each time,
        so a role taken away counts at once."""
        if isinstance(caller, CommandLine):
            return
        role = await users.server_role(self._pool, caller.user_id)
        if role not in allowed:
            needed = " or ".join(allowed)
            raise ServerRoleRequired(f"this needs the server role {needed}")

    # --- users ------------------------------------------------------------------------

    async def list_users(
        self, caller: Caller, prefix: str | None, limit: int, position: str | None
    ) -> UserPage:
        await self.require(caller, READERS)
        found = await users.list_for_admin(self._pool, prefix, limit, cursor.decode(position))
        following = (
            cursor.encode(found[-1].created_at, found[-1].id) if len(found) == limit else None
        )
        return UserPage(users=found, next_cursor=following)

    async def get_user(self, caller: Caller, user_id: uuid.UUID) -> AdminUser:
        await self.require(caller, READERS)
        found = await users.admin_view(self._pool, user_id)
        if found is None:
            raise UserNotFound()
        return found

    async def user_id_of(self, username: str) -> uuid.UUID:
        """The id of the account named ``username`` (any case); for the command line."""
        found = await users.admin_view_by_name(self._pool, username)
        if found is None:
            raise UserNotFound(f"no user is named {username!r}")
        return found.id

    async def create_user(
        self,
        caller: Caller,
        username: str,
        password: str,
        display_name: str | None,
        role: ServerRole | None,
        info: RequestInfo,
    ) -> AdminUser:
        await self.require(caller, ADMINS)
        # The REST body checks these already; the command line passes them as typed.
        if not USERNAME.fullmatch(username):
            raise InvalidInput("a username is 3 to 32 of A-Z a-z 0-9 _ . -", field="username")
        if display_name is not None and not 1 <= len(display_name) <= 64:
            raise InvalidInput("a display name is 1 to 64 characters", field="displayName")
        password_hash = await passwords.hash_password(password)
        async with self._pool.acquire() as conn, conn.transaction():
            created = await users.create(conn, username, display_name or username, password_hash)
            if created is None:
                raise UsernameTaken()
            view = await users.set_server_role(conn, created.id, role)
            assert view is not None
            await self._audit(
                conn, caller, "admin.user.create", info, ("user", view.id), {"serverRole": role}
            )
        return view

    async def set_role(
        self, caller: Caller, user_id: uuid.UUID, role: ServerRole | None, info: RequestInfo
    ) -> AdminUser:
        await self.require(caller, ADMINS)
        self._not_self(caller, user_id)
        async with self._pool.acquire() as conn, conn.transaction():
            before = await users.lock_admin_view(conn, user_id)
            if before is None:
                raise UserNotFound()
            view = await users.set_server_role(conn, user_id, role)
            assert view is not None
            await self._audit(
                conn,
                caller,
                "admin.user.role",
                info,
                ("user", user_id),
                {"from": before.server_role, "to": role},
            )
        return view

    async def set_disabled(
        self, caller: Caller, user_id: uuid.UUID, disabled: bool, info: RequestInfo
    ) -> AdminUser:
        """Disable an account, revoking every device session it has and closing their
        sockets at once; or enable it again (it signs in afresh: nothing is restored)."""
        await self.require(caller, ADMINS)
        self._not_self(caller, user_id)
        ended: list[uuid.UUID] = []
        async with self._pool.acquire() as conn, conn.transaction():
            if await users.lock_admin_view(conn, user_id) is None:
                raise UserNotFound()
            if not disabled and await users.is_deleted(conn, user_id):
                raise AccountDeleted()  # enabled, the tombstone would be an account again
            view = await users.set_disabled(conn, user_id, disabled)
            assert view is not None
            if disabled:
                ended = await self._auth.end_user_sessions(conn, user_id, "account_disabled")
            action = "admin.user.disable" if disabled else "admin.user.enable"
            details = {"sessionsRevoked": len(ended)} if disabled else None
            await self._audit(conn, caller, action, info, ("user", user_id), details)
        await self._auth.sessions_ended(ended)
        return view

    async def revoke_sessions(
        self, caller: Caller, user_id: uuid.UUID, info: RequestInfo
    ) -> SessionsRevoked:
        await self.require(caller, ADMINS)
        async with self._pool.acquire() as conn, conn.transaction():
            if await users.lock_admin_view(conn, user_id) is None:
                raise UserNotFound()
            ended = await self._auth.end_user_sessions(conn, user_id, "revoked_by_admin")
            await self._audit(
                conn,
                caller,
                "admin.user.sessions_revoke",
                info,
                ("user", user_id),
                {"sessionsRevoked": len(ended)},
            )
        await self._auth.sessions_ended(ended)
        return SessionsRevoked(revoked=len(ended))

    async def issue_password_reset(
        self, caller: Caller, user_id: uuid.UUID, info: RequestInfo
    ) -> PasswordResetIssued:
        """A one-time password reset token for the user (accounts/service.py), returned
        this once: the server keeps only its hash."""
        await self.require(caller, ADMINS)
        return await self._accounts.issue_reset(
            user_id,
            self._info(caller, info),
            issued_by=caller.user_id if isinstance(caller, Actor) else None,
            details={"via": "command line"} if isinstance(caller, CommandLine) else None,
        )

    # --- rooms ------------------------------------------------------------------------

    async def list_rooms(
        self, caller: Caller, prefix: str | None, limit: int, position: str | None
    ) -> RoomPage:
        await self.require(caller, READERS)
        found = await room_store.list_for_admin(self._pool, prefix, limit, cursor.decode(position))
        last = found[-1].room if found else None
        following = (
            cursor.encode(last.created_at, last.id)
            if last is not None and len(found) == limit
            else None
        )
        return RoomPage(rooms=found, next_cursor=following)

    async def delete_room(self, caller: Caller, room_id: uuid.UUID, info: RequestInfo) -> None:
        await self.require(caller, ADMINS)
        actor = caller if isinstance(caller, Actor) else None
        await self._rooms.delete(actor, room_id, self._info(caller, info), operator=True)

    # --- the audit log ----------------------------------------------------------------

    async def audit_log(
        self, caller: Caller, where: AuditFilter, limit: int, position: str | None
    ) -> AuditPage:
        await self.require(caller, READERS)
        if where.since is not None and where.until is not None and where.since >= where.until:
            raise InvalidInput("since must be before until", field="since")
        found = await audit.entries(
            self._pool,
            actor_id=where.actor_id,
            action=where.action,
            room_id=where.room_id,
            since=where.since,
            until=where.until,
            before_id=decode_audit_cursor(position),
            limit=limit,
        )
        following = encode_audit_cursor(found[-1].id) if len(found) == limit else None
        return AuditPage(entries=found, next_cursor=following)

    # --- nodes ------------------------------------------------------------------------

    async def list_nodes(self, caller: Caller) -> NodeList:
        await self.require(caller, ADMINS)
        nodes = self._cluster()
        here = nodes.node_id
        alive = set(nodes.alive_nodes()) | {here}
        return NodeList(nodes=[NodeInfo(node_id=n, current=n == here) for n in sorted(alive)])

    async def drain_node(self, caller: Caller, node_id: str, info: RequestInfo) -> DrainAccepted:
        """Ask ``node_id`` to drain as on SIGTERM; it may be this node or any other."""
        await self.require(caller, ADMINS)
        nodes = self._cluster()
        if node_id != nodes.node_id and node_id not in nodes.alive_nodes():
            raise NodeNotFound(f"no live node is called {node_id!r}")
        async with self._pool.acquire() as conn:
            await self._audit(conn, caller, "admin.node.drain", info, ("node", node_id), None)
        await nodes.request_drain(node_id)
        return DrainAccepted(node_id=node_id)

    # --- helpers ----------------------------------------------------------------------

    def _cluster(self) -> Nodes:
        if self._nodes is None:
            raise NodeNotFound("this process serves no nodes")
        return self._nodes

    @staticmethod
    def _not_self(caller: Caller, user_id: uuid.UUID) -> None:
        # The last admin locking themselves out would leave only the command line.
        if isinstance(caller, Actor) and caller.user_id == user_id:
            raise OwnAccount()

    @staticmethod
    def _info(caller: Caller, info: RequestInfo) -> RequestInfo:
        if isinstance(caller, CommandLine) and not info.user_agent:
            return RequestInfo(user_agent="boltorezka admin")
        return info

    async def _audit(
        self,
        conn: Executor,
        caller: Caller,
        action: str,
        info: RequestInfo,
        target: tuple[str, str | uuid.UUID],
        details: dict[str, Any] | None,
    ) -> None:
        await audit.record(
            conn,
            action,
            self._info(caller, info),
            actor_id=caller.user_id if isinstance(caller, Actor) else None,
            target_type=target[0],
            target_id=target[1],
            details={
                **(details or {}),
                **({"via": "command line"} if isinstance(caller, CommandLine) else {}),
            },
        )

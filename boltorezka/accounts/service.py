"""What users do to their own account, and the password resets operators hand out.

- Changing the password needs the current one; every other device session is revoked and
  its sockets closed, the one that asked stays signed in.
- Deleting the account needs the password too. The row stays as a tombstone (messages keep
  their ``senderId``, and ``GET /v1/users/{id}`` answers ``user_deleted``): profile and
  credentials are erased and the username is freed. Every session is revoked, every
  membership ends. An owner is refused until each room they own has another owner, rather
  than the server choosing one for them.
- There is no mail server, so a forgotten password is reset through an operator: they get a
  one-time token (only its SHA-256 is stored) and pass it on; using it sets a new password
  and revokes every session. A newer token, a changed password or a deleted account makes
  the tokens not used yet worthless.

Checks of a password take from a bucket of their own at the login rate, per address and
per account, so a stolen access token gives no more guesses than the login form does.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import structlog

from boltorezka.auth import passwords
from boltorezka.auth.service import AccountDisabled, AuthService
from boltorezka.auth.tokens import hash_refresh_token
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    Conflict,
    Forbidden,
    OwnerMustTransfer,
    RateLimited,
    Unauthenticated,
    UserNotFound,
)
from boltorezka.events import EventPublisher, NullPublisher, RoomEvent
from boltorezka.ratelimit import Limiter
from boltorezka.store import Conn, audit, sessions, users
from boltorezka.store.records import Instant

_log = structlog.get_logger("boltorezka.accounts")

RESET_TOKEN_PREFIX = "bpr_"
# Told after a commit that the user is no longer a member of the room (rooms/service.py).
MembershipEnded = Callable[[uuid.UUID, uuid.UUID | None], Awaitable[None]]


class WrongPassword(Forbidden):
    code = "wrong_password"
    title = "The current password is not correct"


class AccountDeleted(Conflict):
    code = "account_deleted"
    title = "This account has been deleted"


class UserDeleted(UserNotFound):
    code = "user_deleted"
    title = "This user deleted their account; their messages remain"


class InvalidResetToken(Unauthenticated):
    code = "invalid_reset_token"
    title = "The password reset token is not valid; ask an operator for a new one"


class ResetTokenExpired(InvalidResetToken):
    code = "reset_token_expired"
    title = "The password reset token has expired; ask an operator for a new one"


class ResetTokenUsed(InvalidResetToken):
    code = "reset_token_used"
    title = "The password reset token was used already; each token works once"


class PasswordChanged(msgspec.Struct, rename="camel", kw_only=True):
    """The password is changed; this many other device sessions were revoked."""

    sessions_revoked: int


class PasswordResetIssued(msgspec.Struct, rename="camel", kw_only=True):
    """A one-time token for ``POST /v1/auth/password-reset``, shown this once only."""

    user_id: uuid.UUID
    token: str
    expires_at: Instant


def hash_reset_token(token: str) -> bytes:
    return hash_refresh_token(token)


class AccountService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        auth: AuthService,
        events: EventPublisher | None = None,
        *,
        password_limiter: Limiter | None = None,
        membership_ended: MembershipEnded | None = None,
        reset_ttl_seconds: int = 3600,
    ) -> None:
        self._pool = pool
        self._auth = auth
        self._events: EventPublisher = events or NullPublisher()
        # None only where nobody presents a password (the command line).
        self._limiter = password_limiter
        self._membership_ended = membership_ended
        self._reset_ttl = timedelta(seconds=reset_ttl_seconds)

    # --- the caller's own account ---------------------------------------------------------

    async def change_password(
        self, actor: Actor, current: str, new: str, info: RequestInfo
    ) -> PasswordChanged:
        await self._check_password(actor, current, info, "account.password_change")
        new_hash = await passwords.hash_password(new)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_live(conn, actor.user_id)
            await users.set_password_hash(conn, actor.user_id, new_hash)
            ended = await sessions.revoke_all_for_user(
                conn, actor.user_id, "password_changed", keep=actor.session_id
            )
            await users.drop_unused_password_resets(conn, actor.user_id)
            await audit.record(
                conn,
                "account.password_change",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=actor.user_id,
                details={"sessionsRevoked": len(ended)},
            )
        await self._auth.sessions_ended(ended)
        return PasswordChanged(sessions_revoked=len(ended))

    async def delete_account(self, actor: Actor, password: str, info: RequestInfo) -> None:
        await self._check_password(actor, password, info, "account.delete")
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_live(conn, actor.user_id)
            owned = await users.owned_room_ids(conn, actor.user_id)
            if owned:
                raise OwnerMustTransfer(
                    f"you own {len(owned)} room(s); transfer ownership of each "
                    "(POST /v1/rooms/{roomId}/transfer) or delete it first"
                )
            rooms = await users.end_memberships(conn, actor.user_id)
            ended = await sessions.revoke_all_for_user(conn, actor.user_id, "account_deleted")
            await users.drop_unused_password_resets(conn, actor.user_id)
            await users.erase(conn, actor.user_id)
            await audit.record(
                conn,
                "account.delete",
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=actor.user_id,
                details={"roomsLeft": len(rooms), "sessionsRevoked": len(ended)},
            )
        await self._auth.sessions_ended(ended)
        for room_id in rooms:
            await self._events.publish(
                RoomEvent(
                    room_id=room_id,
                    kind="member.removed",
                    data={"roomId": str(room_id), "userId": str(actor.user_id)},
                )
            )
            await self._end_membership(room_id, actor.user_id)

    async def is_deleted(self, user_id: uuid.UUID) -> bool:
        return await users.is_deleted(self._pool, user_id)

    # --- password resets ------------------------------------------------------------------

    async def issue_reset(
        self,
        user_id: uuid.UUID,
        info: RequestInfo,
        *,
        issued_by: uuid.UUID | None,
        details: dict[str, str] | None = None,
    ) -> PasswordResetIssued:
        """A new one-time token for the user, replacing any not used yet. Whoever calls
        this has decided the caller may (admin/service.py)."""
        token = RESET_TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + self._reset_ttl
        async with self._pool.acquire() as conn, conn.transaction():
            if await users.lock_admin_view(conn, user_id) is None:
                raise UserNotFound()
            if await users.is_deleted(conn, user_id):
                raise AccountDeleted()
            replaced = await users.drop_unused_password_resets(conn, user_id)
            await users.add_password_reset(
                conn, user_id, hash_reset_token(token), expires_at, issued_by
            )
            await audit.record(
                conn,
                "admin.user.password_reset",
                info,
                actor_id=issued_by,
                target_type="user",
                target_id=user_id,
                details={
                    "expiresAt": expires_at.isoformat(),
                    "replacedTokens": replaced,
                    **(details or {}),
                },
            )
        return PasswordResetIssued(user_id=user_id, token=token, expires_at=expires_at)

    async def reset_password(self, token: str, new: str, info: RequestInfo) -> None:
        """Set a new password with a reset token; every device session is revoked."""
        await self._take(f"ip:{info.ip}")
        new_hash = await passwords.hash_password(new)
        ended: list[uuid.UUID] = []
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                outcome, user_id = await users.consume_password_reset(conn, hash_reset_token(token))
                if outcome == "ok" and user_id is not None:
                    if await users.live_password_hash(conn, user_id) is None:
                        # Rolls the use back: the token still works if the account is
                        # enabled again before it expires.
                        raise AccountDisabled()
                    await users.set_password_hash(conn, user_id, new_hash)
                    ended = await sessions.revoke_all_for_user(conn, user_id, "password_reset")
                    await audit.record(
                        conn,
                        "account.password_reset",
                        info,
                        actor_id=user_id,
                        target_type="user",
                        target_id=user_id,
                        details={"sessionsRevoked": len(ended)},
                    )
            if outcome == "ok":
                await self._auth.sessions_ended(ended)
                return
            if user_id is not None:
                await audit.record(
                    conn,
                    "account.password_reset",
                    info,
                    actor_id=user_id,
                    target_type="user",
                    target_id=user_id,
                    outcome=outcome,
                )
        if outcome == "used":
            raise ResetTokenUsed()
        if outcome == "expired":
            raise ResetTokenExpired()
        raise InvalidResetToken()

    # --- helpers --------------------------------------------------------------------------

    async def _check_password(
        self, actor: Actor, password: str, info: RequestInfo, action: str
    ) -> None:
        # Every attempt counts, as at login, not only the failed ones: a guesser cannot
        # tell them apart in advance.
        await self._take(f"ip:{info.ip}")
        await self._take(f"user:{actor.user_id}")
        stored = await users.live_password_hash(self._pool, actor.user_id)
        if stored is None:
            raise AccountDisabled()
        if not await passwords.verify_password(stored, password):
            await audit.record(
                self._pool,
                action,
                info,
                actor_id=actor.user_id,
                target_type="user",
                target_id=actor.user_id,
                outcome="wrong_password",
            )
            raise WrongPassword()

    @staticmethod
    async def _lock_live(conn: Conn, user_id: uuid.UUID) -> None:
        """Lock the account row, so a change serialises with a deletion or a disable."""
        found = await users.lock_admin_view(conn, user_id)
        if found is None:
            raise UserNotFound()
        if found.disabled_at is not None:
            raise AccountDisabled()

    async def _take(self, key: str) -> None:
        if self._limiter is None:
            return
        wait_ms = await self._limiter.take(key)
        if wait_ms:
            raise RateLimited(wait_ms)

    async def _end_membership(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        if self._membership_ended is None:
            return
        try:
            await self._membership_ended(room_id, user_id)
        except Exception:
            # Committed and announced already; the call side heals on its own (a non-member's
            # signals are refused, and its socket's grace runs out).
            _log.exception("ending a deleted account's call participation failed")

"""Registration, login, refresh-token rotation with reuse detection, device sessions.

Every refresh token is used once: presenting a rotated one again means a copy exists, and
the device session is revoked. The one exception is the token rotated last, presented again
within ``refresh_reuse_grace_seconds`` of its rotation: a retry after a lost response, or
several tabs refreshing at once. It gets the very pair its rotation issued (the successor
refresh token is an HMAC of the old one, the access token has the same claims), recomputed
on whichever node the retry reaches, so nothing but hashes is ever stored.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from boltorezka.auth import passwords
from boltorezka.auth.tokens import TokenCodec, hash_refresh_token, new_refresh_token
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    Forbidden,
    InvalidCredentials,
    InvalidRefreshToken,
    RateLimited,
    RefreshTokenReused,
    SessionNotFound,
    SessionRevoked,
    UsernameTaken,
)
from boltorezka.observability.metrics import Metrics
from boltorezka.ratelimit import Limiter
from boltorezka.store import Conn, audit, sessions, users
from boltorezka.store.records import DeviceSession, User

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _seconds(moment: datetime) -> int:
    """Whole Unix seconds, by integer arithmetic so a stored time floors the same anywhere."""
    return (moment - _EPOCH) // timedelta(seconds=1)


class AccountDisabled(Forbidden):
    code = "account_disabled"
    title = "This account is disabled; ask the server's operators"


class TokenPair(msgspec.Struct, rename="camel", kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    access_token_expires_at: int
    session_id: uuid.UUID
    user: User


class AuthService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        codec: TokenCodec,
        *,
        refresh_ttl_seconds: int,
        refresh_reuse_grace_seconds: int = 0,
        login_limiter: Limiter,
        register_limiter: Limiter,
        metrics: Metrics,
        session_listener: Callable[[uuid.UUID], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self.codec = codec
        self._refresh_ttl = timedelta(seconds=refresh_ttl_seconds)
        # A replay re-issues the access token of the rotation, as old as the retry is late;
        # capping the window at half its lifetime leaves the replayed one half of it at least.
        self._reuse_grace = min(refresh_reuse_grace_seconds, codec.ttl_seconds // 2)
        self._login_limiter = login_limiter
        self._register_limiter = register_limiter
        self._metrics = metrics
        # The realtime plane's, so that live sockets of a revoked session close at once.
        self._session_listener = session_listener

    async def register(
        self,
        username: str,
        password: str,
        display_name: str | None,
        device_name: str,
        info: RequestInfo,
    ) -> TokenPair:
        await self._limit(self._register_limiter, f"ip:{info.ip}")
        password_hash = await passwords.hash_password(password)
        async with self._pool.acquire() as conn, conn.transaction():
            user = await users.create(conn, username, display_name or username, password_hash)
            if user is None:
                self._metrics.auth_events.labels("register", "conflict").inc()
                raise UsernameTaken()
            pair = await self._open_session(conn, user, device_name, info)
            await audit.record(
                conn, "user.register", info, actor_id=user.id, target_type="user", target_id=user.id
            )
        self._metrics.auth_events.labels("register", "ok").inc()
        return pair

    async def login(
        self, username: str, password: str, device_name: str, info: RequestInfo
    ) -> TokenPair:
        # Two buckets: one per client address, one per account, so neither a single host
        # nor a botnet aimed at one account gets unlimited guesses.
        await self._limit(self._login_limiter, f"ip:{info.ip}")
        await self._limit(self._login_limiter, f"user:{username.lower()}")
        found = await users.credentials(self._pool, username)
        ok = await passwords.verify_password(found[1] if found else None, password)
        if found is None or not ok:
            await audit.record(
                self._pool,
                "auth.login",
                info,
                actor_id=found[0] if found else None,
                target_type="user",
                target_id=found[0] if found else None,
                outcome="failed",
                details={"username": username[:64]},
            )
            self._metrics.auth_events.labels("login", "failed").inc()
            raise InvalidCredentials()
        user_id, stored_hash, disabled = found
        if disabled:
            # Said only to whoever knows the password, so it reveals nothing to a guesser.
            await audit.record(
                self._pool,
                "auth.login",
                info,
                actor_id=user_id,
                target_type="user",
                target_id=user_id,
                outcome="disabled",
            )
            self._metrics.auth_events.labels("login", "disabled").inc()
            raise AccountDisabled()
        if passwords.needs_rehash(stored_hash):
            await users.set_password_hash(
                self._pool, user_id, await passwords.hash_password(password)
            )
        async with self._pool.acquire() as conn, conn.transaction():
            user = await users.get(conn, user_id)
            if user is None:
                raise InvalidCredentials()
            pair = await self._open_session(conn, user, device_name, info)
            await audit.record(
                conn,
                "auth.login",
                info,
                actor_id=user_id,
                target_type="session",
                target_id=pair.session_id,
            )
        self._metrics.auth_events.labels("login", "ok").inc()
        return pair

    async def refresh(self, refresh_token: str, info: RequestInfo) -> TokenPair:
        """Rotate ``refresh_token``; see the module docstring for retries and reuse."""
        token_hash = hash_refresh_token(refresh_token)
        successor = self.codec.successor(refresh_token)
        # One clock reading at the microsecond PostgreSQL keeps: the stored rotation time
        # then gives the access token's iat exactly, so a replay re-issues it byte for byte.
        rotated_at = _EPOCH + timedelta(microseconds=time.time_ns() // 1000)
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                use = await sessions.consume_refresh_token(
                    conn, token_hash, hash_refresh_token(successor.refresh_token), rotated_at
                )
                if use.session_id is not None and await users.session_owner_disabled(
                    conn, use.session_id
                ):
                    # Rolls the consumption back: the token is as it was if re-enabled.
                    self._metrics.auth_events.labels("refresh", "disabled").inc()
                    raise AccountDisabled()
                if use.outcome == "ok" and use.session_id is not None:
                    session = await sessions.lock_live(conn, use.session_id)
                    if session is not None:
                        await sessions.rotate(
                            conn,
                            session.id,
                            hash_refresh_token(successor.refresh_token),
                            info.ip,
                            self._refresh_expiry(),
                        )
                        user = await users.get(conn, session.user_id)
                        if user is not None:
                            self._metrics.auth_events.labels("refresh", "ok").inc()
                            return self._pair(
                                user,
                                session.id,
                                successor.refresh_token,
                                issued_at=_seconds(rotated_at),
                                jti=successor.jti,
                            )
                elif use.outcome == "rotated" and self._in_grace(use):
                    return await self._replay(conn, use, refresh_token)
            if use.outcome == "rotated" and use.session_id is not None:
                # Someone holds a copy of an old token: end the session for everyone.
                owner = await sessions.revoke(conn, use.session_id, "refresh_token_reused")
                if owner is not None:  # already revoked sessions have nothing to record
                    await audit.record(
                        conn,
                        "session.revoke",
                        info,
                        actor_id=owner,
                        target_type="session",
                        target_id=use.session_id,
                        details={"reason": "refresh_token_reused"},
                    )
                self._metrics.auth_events.labels("refresh", "reused").inc()
                await self._session_ended(use.session_id)
                raise RefreshTokenReused()
        self._metrics.auth_events.labels("refresh", "invalid").inc()
        raise InvalidRefreshToken()

    def _in_grace(self, use: sessions.RefreshUse) -> bool:
        """A token rotated moments ago into the session's current one is a client retrying
        (a lost response, two tabs racing), not a thief: only the newest rotation counts, so
        a copy two rotations old is still caught."""
        if self._reuse_grace <= 0 or use.rotated_at is None or use.successor_hash is None:
            return False
        age = datetime.now(UTC) - use.rotated_at
        return use.successor_current and age.total_seconds() <= self._reuse_grace

    async def _replay(self, conn: Conn, use: sessions.RefreshUse, refresh_token: str) -> TokenPair:
        """Answer a retry within the grace window with the pair its rotation issued."""
        assert use.session_id is not None and use.rotated_at is not None
        session = await sessions.lock_live(conn, use.session_id)
        user = None if session is None else await users.get(conn, session.user_id)
        if session is not None and user is not None:
            # Every configured key, in case the rotation ran before the key rotated.
            for candidate in self.codec.successors(refresh_token):
                candidate_hash = hash_refresh_token(candidate.refresh_token)
                if use.successor_hash is not None and hmac.compare_digest(
                    candidate_hash, use.successor_hash
                ):
                    self._metrics.auth_events.labels("refresh", "replayed").inc()
                    return self._pair(
                        user,
                        session.id,
                        candidate.refresh_token,
                        issued_at=_seconds(use.rotated_at),
                        jti=candidate.jti,
                    )
        # A session that ended, or a key that is no longer configured: nothing to give back,
        # and nothing suggests theft.
        self._metrics.auth_events.labels("refresh", "invalid").inc()
        raise InvalidRefreshToken()

    async def authenticate(self, access_token: str) -> Actor:
        """Verify an access token and that its device session is still live."""
        actor, _ = await self.authenticate_until(access_token)
        return actor

    async def authenticate_until(self, access_token: str) -> tuple[Actor, int]:
        """As :meth:`authenticate`, also returning when the token expires (Unix seconds)."""
        claims = self.codec.verify(access_token)
        if not await sessions.is_active(self._pool, claims.session_id, claims.user_id):
            raise SessionRevoked()
        return Actor(user_id=claims.user_id, session_id=claims.session_id), claims.expires_at

    async def authenticate_connection(
        self, access_token: str
    ) -> tuple[Actor, int, User, set[uuid.UUID]]:
        """As :meth:`authenticate_until`, also returning the user and the rooms they are a
        member of: everything a WebSocket ``auth`` needs, in one query."""
        claims = self.codec.verify(access_token)
        found = await users.live_session_user(self._pool, claims.session_id, claims.user_id)
        if found is None:
            raise SessionRevoked()
        user, rooms = found
        return (
            Actor(user_id=claims.user_id, session_id=claims.session_id),
            claims.expires_at,
            user,
            rooms,
        )

    async def logout(self, actor: Actor, info: RequestInfo) -> None:
        await self.revoke_session(actor, actor.session_id, info, reason="logout")

    async def list_sessions(self, actor: Actor) -> list[DeviceSession]:
        return await sessions.list_for_user(self._pool, actor.user_id)

    async def revoke_session(
        self, actor: Actor, session_id: uuid.UUID, info: RequestInfo, *, reason: str = "revoked"
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            owner = await sessions.revoke(conn, session_id, reason, user_id=actor.user_id)
            if owner is None:
                existing = await sessions.get_owned(conn, session_id, actor.user_id)
                if existing is None:
                    raise SessionNotFound()
                return  # already revoked: revoking is idempotent
            await audit.record(
                conn,
                "session.revoke",
                info,
                actor_id=actor.user_id,
                target_type="session",
                target_id=session_id,
                details={"reason": reason},
            )
        await self._session_ended(session_id)

    async def end_user_sessions(
        self, conn: Conn, user_id: uuid.UUID, reason: str
    ) -> list[uuid.UUID]:
        """Revoke every live device session of the user, inside the caller's transaction;
        pass what it returns to :meth:`sessions_ended` once that commits."""
        ended = []
        for session in await sessions.list_for_user(conn, user_id):
            if await sessions.revoke(conn, session.id, reason) is not None:
                ended.append(session.id)
        return ended

    async def sessions_ended(self, session_ids: list[uuid.UUID]) -> None:
        """Close the live sockets of sessions revoked by :meth:`end_user_sessions`."""
        for session_id in session_ids:
            await self._session_ended(session_id)

    async def _session_ended(self, session_id: uuid.UUID) -> None:
        if self._session_listener is not None:
            await self._session_listener(session_id)

    async def _open_session(
        self, conn: Conn, user: User, device_name: str, info: RequestInfo
    ) -> TokenPair:
        refresh_token = new_refresh_token()
        session = await sessions.create(
            conn,
            user.id,
            device_name=device_name,
            user_agent=info.user_agent,
            ip=info.ip,
            expires_at=self._refresh_expiry(),
            token_hash=hash_refresh_token(refresh_token),
        )
        return self._pair(user, session.id, refresh_token)

    def _pair(
        self,
        user: User,
        session_id: uuid.UUID,
        refresh_token: str,
        *,
        issued_at: int | None = None,
        jti: str | None = None,
    ) -> TokenPair:
        access, expires_at = self.codec.issue(user.id, session_id, now=issued_at, jti=jti)
        return TokenPair(
            access_token=access,
            refresh_token=refresh_token,
            expires_in=self.codec.ttl_seconds,
            access_token_expires_at=expires_at,
            session_id=session_id,
            user=user,
        )

    def _refresh_expiry(self) -> datetime:
        return datetime.now(UTC) + self._refresh_ttl

    @staticmethod
    async def _limit(limiter: Limiter, key: str) -> None:
        wait_ms = await limiter.take(key)
        if wait_ms:
            raise RateLimited(wait_ms)

"""Registration, login, refresh-token rotation with reuse detection, device sessions."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from boltorezka.auth import passwords
from boltorezka.auth.tokens import TokenCodec, hash_refresh_token, new_refresh_token
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
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
        login_limiter: Limiter,
        register_limiter: Limiter,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self.codec = codec
        self._refresh_ttl = timedelta(seconds=refresh_ttl_seconds)
        self._login_limiter = login_limiter
        self._register_limiter = register_limiter
        self._metrics = metrics
        # Set by the realtime plane so that live sockets of a revoked session close at once.
        self.session_listener: Callable[[uuid.UUID], Awaitable[None]] | None = None

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
        user_id, stored_hash = found
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
        token_hash = hash_refresh_token(refresh_token)
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                outcome, session_id = await sessions.consume_refresh_token(conn, token_hash)
                session = None
                if outcome == "ok" and session_id is not None:
                    session = await sessions.lock_live(conn, session_id)
                    if session is not None:
                        new_token = new_refresh_token()
                        await sessions.rotate(
                            conn,
                            session.id,
                            hash_refresh_token(new_token),
                            info.ip,
                            self._refresh_expiry(),
                        )
                        user = await users.get(conn, session.user_id)
                        if user is not None:
                            self._metrics.auth_events.labels("refresh", "ok").inc()
                            return self._pair(user, session.id, new_token)
            if outcome == "reused" and session_id is not None:
                # Someone holds a copy of an old token: end the session for everyone.
                owner = await sessions.revoke(conn, session_id, "refresh_token_reused")
                if owner is not None:  # already revoked sessions have nothing to record
                    await audit.record(
                        conn,
                        "session.revoke",
                        info,
                        actor_id=owner,
                        target_type="session",
                        target_id=session_id,
                        details={"reason": "refresh_token_reused"},
                    )
                self._metrics.auth_events.labels("refresh", "reused").inc()
                await self._session_ended(session_id)
                raise RefreshTokenReused()
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

    async def _session_ended(self, session_id: uuid.UUID) -> None:
        if self.session_listener is not None:
            await self.session_listener(session_id)

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

    def _pair(self, user: User, session_id: uuid.UUID, refresh_token: str) -> TokenPair:
        access, expires_at = self.codec.issue(user.id, session_id)
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

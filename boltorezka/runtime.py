"""The set of long-lived objects one server process runs with, built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from boltorezka.auth.service import AuthService
from boltorezka.auth.tokens import TokenCodec
from boltorezka.config import Settings
from boltorezka.messages.service import MessageService
from boltorezka.observability.metrics import Metrics
from boltorezka.ratelimit import TokenBucketLimiter
from boltorezka.rooms.service import RoomService


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    auth: AuthService
    rooms: RoomService
    messages: MessageService
    # Keeps an embedded PostgreSQL alive for as long as the services are.
    embedded_server: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, pool: asyncpg.Pool, embedded_server: Any = None) -> Services:
        metrics = Metrics()
        codec = TokenCodec(settings.signing_keys, settings.access_token_ttl)
        auth = AuthService(
            pool,
            codec,
            refresh_ttl_seconds=settings.refresh_token_ttl,
            login_limiter=TokenBucketLimiter.per_minute(settings.login_rate_per_minute),
            register_limiter=TokenBucketLimiter.per_minute(settings.register_rate_per_minute),
            metrics=metrics,
        )
        return cls(
            settings=settings,
            pool=pool,
            metrics=metrics,
            auth=auth,
            rooms=RoomService(pool),
            messages=MessageService(pool),
            embedded_server=embedded_server,
        )

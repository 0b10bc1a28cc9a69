"""The set of long-lived objects one server process runs with, built from settings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from boltorezka.accounts.service import AccountService
from boltorezka.admin.service import AdminService
from boltorezka.auth.service import AuthService
from boltorezka.auth.tokens import TokenCodec
from boltorezka.bus import Bus, MemoryBus
from boltorezka.calls.service import CallService
from boltorezka.config import Settings
from boltorezka.messages.service import MessageService
from boltorezka.observability.metrics import Metrics
from boltorezka.ratelimit import Limiter, TokenBucketLimiter
from boltorezka.ratelimit_shared import SharedRedis, connect, limiter
from boltorezka.realtime.call_cluster import BusCallCluster
from boltorezka.realtime.hub import Hub
from boltorezka.realtime.node_control import NodeControl
from boltorezka.rooms.moderation import ModerationService
from boltorezka.rooms.service import RoomService
from boltorezka.rtc import turn
from boltorezka.rtc.sfu_link import SfuBusLink
from boltorezka.store.writer import MessageWriter
from boltorezka.webhooks.dispatcher import Dispatcher, Policy
from boltorezka.webhooks.service import WebhookService


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    auth: AuthService
    rooms: RoomService
    messages: MessageService
    calls: CallService
    # WebSocket connects per client address (the gateway's), shared like the others.
    connect_limiter: Limiter
    # Stores every chat send in batches; the application starts it and drains it on close.
    writer: MessageWriter
    # How this node reaches the others (in process when it is alone), and its router of
    # events to live connections, which the domain services publish to.
    bus: Bus
    hub: Hub
    # Password changes, account deletion and password resets.
    accounts: AccountService
    # Operators' requests to this node (a drain), over the bus, and the admin service.
    node_control: NodeControl
    admin: AdminService
    # Room bans, mutes and reports, on top of the room service.
    moderation: ModerationService
    # Operators' webhook endpoints, and this node's dispatcher of their deliveries.
    webhooks: WebhookService
    webhook_dispatcher: Dispatcher
    # Keeps an embedded PostgreSQL alive for as long as the services are.
    embedded_server: Any = None
    # The Redis the shared rate limits live in (None: each process keeps its own).
    redis: SharedRedis | None = None
    # Set when the process starts draining: /readyz answers 503 from then on.
    draining: bool = False

    @classmethod
    def build(
        cls,
        settings: Settings,
        pool: asyncpg.Pool,
        embedded_server: Any = None,
        *,
        bus: Bus | None = None,
        redis_prefix: str = "boltorezka:",
    ) -> Services:
        """Everything one node runs with; ``bus`` is how it reaches the other nodes
        (none: an in-process bus, for a node that runs alone)."""
        metrics = Metrics()
        bus = bus or MemoryBus()
        node_id = settings.node_id or f"node-{uuid.uuid4().hex[:8]}"
        hub = Hub(bus, pool, metrics, node_id=node_id)
        # Login, sign-up, connect and send budgets hold across nodes when they share Redis.
        # (A redis+cluster:// URL gives a cluster client: ratelimit_shared.connect.)
        redis = connect(settings.redis_url) if settings.redis_url else None

        def shared(name: str, buckets: TokenBucketLimiter) -> Limiter:
            return limiter(buckets, name, redis, redis_prefix)

        codec = TokenCodec(settings.signing_keys, settings.access_token_ttl)
        auth = AuthService(
            pool,
            codec,
            refresh_ttl_seconds=settings.refresh_token_ttl,
            refresh_reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
            login_limiter=shared(
                "login", TokenBucketLimiter.per_minute(settings.login_rate_per_minute)
            ),
            register_limiter=shared(
                "register", TokenBucketLimiter.per_minute(settings.register_rate_per_minute)
            ),
            metrics=metrics,
            session_listener=hub.session_revoked,
        )

        def ice_servers(user_id: uuid.UUID) -> list[dict[str, Any]]:
            servers: list[dict[str, Any]] = []
            if settings.turn_secret is not None and settings.turn_uris:
                issued = turn.issue(
                    user_id,
                    secret=settings.turn_secret,
                    ttl=settings.turn_ttl,
                    turn_uris=settings.turn_uris,
                    stun_uris=settings.stun_uris,
                )
                servers = msgspec.to_builtins(issued.ice_servers)
            elif settings.stun_uris:
                servers = [{"urls": list(settings.stun_uris)}]
            return servers

        calls = CallService(
            pool,
            metrics,
            ring_timeout=settings.call_ring_timeout_seconds,
            grace=settings.call_grace_seconds,
            sfu_threshold=settings.sfu_threshold,
            ice_servers=ice_servers,
            node_id=node_id,
            signals=hub,
            cluster=lambda handler: BusCallCluster(bus, node_id, hub.directory, handler),
            sfu=lambda deliverer: SfuBusLink(bus, deliverer),
        )
        writer = MessageWriter(pool)
        accounts = AccountService(
            pool,
            auth,
            hub,
            # The login rate, in buckets of its own: guesses at a signed-in account's
            # password cost as much as at the login form, and do not eat its budget.
            password_limiter=shared(
                "password", TokenBucketLimiter.per_minute(settings.login_rate_per_minute)
            ),
            membership_ended=calls.membership_ended,
            reset_ttl_seconds=settings.password_reset_ttl_seconds,
        )
        rooms = RoomService(pool, hub, membership_ended=calls.membership_ended)
        node_control = NodeControl(bus, node_id, hub.directory)
        admin = AdminService(pool, auth, rooms, node_control, accounts=accounts)
        return cls(
            settings=settings,
            pool=pool,
            metrics=metrics,
            auth=auth,
            accounts=accounts,
            rooms=rooms,
            node_control=node_control,
            admin=admin,
            moderation=ModerationService(pool, rooms),
            webhooks=WebhookService(pool, admin),
            webhook_dispatcher=Dispatcher(pool, metrics, Policy.from_settings(settings)),
            messages=MessageService(
                pool,
                writer,
                hub,
                send_limiter=shared(
                    "send",
                    TokenBucketLimiter(settings.chat_send_burst, settings.chat_send_per_second),
                ),
            ),
            calls=calls,
            connect_limiter=shared(
                "connect", TokenBucketLimiter.per_minute(settings.ws_connect_rate_per_minute)
            ),
            writer=writer,
            bus=bus,
            hub=hub,
            redis=redis,
            embedded_server=embedded_server,
        )

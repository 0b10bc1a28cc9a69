"""The aiohttp application: routes, middleware and the lifecycle of its services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from boltorezka.api import (
    admin,
    auth,
    health,
    messages,
    moderation,
    rooms,
    turn,
    users,
    webapp,
    webhooks,
)
from boltorezka.api.cors import cors_middleware
from boltorezka.api.keys import GATEWAY, SERVICES
from boltorezka.api.middleware import request_middleware, tracing_middleware
from boltorezka.bus import Bus
from boltorezka.config import Settings
from boltorezka.observability import tracing
from boltorezka.observability.metrics import MetricsListener
from boltorezka.realtime.gateway import Gateway, attach
from boltorezka.realtime.session_audit import SessionAudit
from boltorezka.runtime import Services
from boltorezka.store import migrate
from boltorezka.store.database import create_pool, resolve_database_url

_log = structlog.get_logger("boltorezka.app")


def build_app(services: Services) -> web.Application:
    """An application around already-built services (tests build their own)."""
    app = web.Application(
        # CORS outermost, so its headers reach every answer, problem JSON included.
        # Tracing (when on) around the request middleware, so its span sees the final answer.
        middlewares=[
            cors_middleware,
            *([tracing_middleware] if tracing.enabled() else []),
            request_middleware,
        ],
        # One byte over the body limit so our own check answers with the precise message.
        client_max_size=services.settings.max_body_bytes + 1,
    )
    app[SERVICES] = services
    for module in (health, auth, users, rooms, moderation, messages, turn, admin, webhooks):
        # With BOLTOREZKA_METRICS_LISTEN, /metrics is served on that listener, not here.
        app.add_routes([r for r in module.routes if r not in _metrics_elsewhere(services)])
    webapp.attach(app)

    bus, hub = services.bus, services.hub
    gateway = Gateway(services, hub)
    session_audit = SessionAudit(
        hub, services.pool, interval_seconds=services.settings.ws_session_recheck_seconds
    )
    app[GATEWAY] = gateway
    attach(app, gateway)

    services.metrics.observe_node(
        pool=services.pool,
        routing_problem=hub.routing_problem,
        draining=lambda: services.draining,
        writer_queued=lambda: services.writer.queued,
    )
    if services.settings.metrics_listen is not None:
        host, port = services.settings.metrics_listen
        listener = MetricsListener(services.metrics, host, port)

        async def metrics_lifecycle(_: web.Application) -> AsyncIterator[None]:
            await listener.start()
            yield
            await listener.close()

        app.cleanup_ctx.append(metrics_lifecycle)

    async def realtime_lifecycle(_: web.Application) -> AsyncIterator[None]:
        await bus.start()
        await hub.start()
        session_audit.start()
        services.writer.start()
        # Calls a previous run of this node held (node ids survive restarts), or that a
        # draining node gave up, carry on here; participants rejoin within the grace.
        await services.calls.start_background()
        services.webhook_dispatcher.start()
        yield
        # Requests have finished by now; store what they queued before anything closes
        # (the pool closes after this), and publish it while the hub still runs.
        await services.writer.close()
        # Undelivered rows stay in the outbox for the next node to claim.
        await services.webhook_dispatcher.close()
        await services.calls.close()
        await session_audit.close()
        await hub.close()
        await bus.close()
        if services.redis is not None:
            await services.redis.aclose()

    app.cleanup_ctx.append(realtime_lifecycle)
    return app


def _metrics_elsewhere(services: Services) -> list[web.AbstractRouteDef]:
    if services.settings.metrics_listen is None:
        return []
    return [r for r in health.routes if getattr(r, "path", None) == "/metrics"]


async def start_services(settings: Settings, bus: Bus | None = None) -> Services:
    """Connect to the database (embedded if none is configured) and apply migrations."""
    url, embedded = await resolve_database_url(settings)
    if embedded is not None:
        _log.info("embedded postgresql started", data_dir=str(settings.data_dir))
    pool = await create_pool(url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    try:
        if settings.migrate_on_start:
            async with pool.acquire() as conn:
                applied = await migrate.apply(conn, settings.migrations_dir)
            if applied:
                _log.info("migrations applied", files=applied)
    except BaseException:
        await pool.close()
        raise
    return Services.build(settings, pool, embedded, bus=bus)

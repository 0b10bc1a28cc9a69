"""The aiohttp application: routes, middleware and the lifecycle of its services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from boltorezka.api import auth, health, messages, rooms, turn, users, webapp
from boltorezka.api.cors import cors_middleware
from boltorezka.api.keys import GATEWAY, SERVICES
from boltorezka.api.middleware import request_middleware
from boltorezka.bus import Bus
from boltorezka.config import Settings
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
        middlewares=[cors_middleware, request_middleware],
        # One byte over the body limit so our own check answers with the precise message.
        client_max_size=services.settings.max_body_bytes + 1,
    )
    app[SERVICES] = services
    for module in (health, auth, users, rooms, messages, turn):
        app.add_routes(module.routes)
    webapp.attach(app)

    bus, hub = services.bus, services.hub
    gateway = Gateway(services, hub)
    session_audit = SessionAudit(
        hub, services.pool, interval_seconds=services.settings.ws_session_recheck_seconds
    )
    app[GATEWAY] = gateway
    attach(app, gateway)

    async def realtime_lifecycle(_: web.Application) -> AsyncIterator[None]:
        await bus.start()
        await hub.start()
        session_audit.start()
        services.writer.start()
        # Calls a previous run of this node held (node ids survive restarts), or that a
        # draining node gave up, carry on here; participants rejoin within the grace.
        await services.calls.start_background()
        yield
        # Requests have finished by now; store what they queued before anything closes
        # (the pool closes after this), and publish it while the hub still runs.
        await services.writer.close()
        await services.calls.close()
        await session_audit.close()
        await hub.close()
        await bus.close()
        if services.redis is not None:
            await services.redis.aclose()

    app.cleanup_ctx.append(realtime_lifecycle)
    return app


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

"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web

from boltorezka.api.http import json_response
from boltorezka.api.keys import GATEWAY, SERVICES
from boltorezka.store import migrate

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    ready = True
    try:
        async with asyncio.timeout(2):
            async with services.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
                checks["database"] = "ok"
                missing = await migrate.pending(conn, services.settings.migrations_dir)
        checks["migrations"] = "ok" if not missing else f"pending: {', '.join(missing)}"
        ready = not missing
    except Exception as exc:  # readiness must answer, whatever broke
        checks.setdefault("database", f"unreachable: {type(exc).__name__}")
        ready = False
    routing = request.app[GATEWAY].hub.routing_problem()
    if routing is not None:
        # Its own sockets keep working, but a node that cannot reach the others would
        # strand new connections from the rest of their rooms: take no new ones.
        checks["bus"] = routing
        ready = False
    if services.draining:
        checks["draining"] = "yes"
        ready = False
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    document = resources.files("boltorezka.api").joinpath("openapi.json").read_bytes()
    return web.Response(body=document, content_type="application/json")

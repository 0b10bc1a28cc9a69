"""The one middleware every request passes: request id, identity, errors, logs, metrics."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from boltorezka.api.http import ACTOR_KEY, AUTH_ERROR_KEY, REQUEST_ID_KEY
from boltorezka.api.keys import SERVICES
from boltorezka.api.problems import problem_response
from boltorezka.errors import (
    AppError,
    InternalError,
    InvalidToken,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    Unauthenticated,
    Unavailable,
)
from boltorezka.observability import tracing
from boltorezka.store.outage import OUTAGE_ERRORS, RETRY_AFTER_MS

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_log = structlog.get_logger("boltorezka.http")
_UNMATCHED = "unmatched"
_WEBSOCKET_ROUTE = "/v1/ws"


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else _UNMATCHED


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    services = request.app[SERVICES]
    started = time.perf_counter()
    try:
        await _authenticate(request)
        response = await handler(request)
    except AppError as error:
        response = problem_response(error, request_id)
    except web.HTTPException as exc:
        response = problem_response(_from_http_exception(exc), request_id)
        if "Allow" in exc.headers:  # RFC 9110: a 405 lists the methods the route supports
            response.headers["Allow"] = exc.headers["Allow"]
    except OUTAGE_ERRORS as exc:
        # Every request fails alike while the database is away: a line each, no traceback,
        # and an answer that tells the client to come back rather than report a bug.
        _log.warning("database unreachable", path=request.path, error=repr(exc))
        unavailable = Unavailable(
            "the database is unreachable; try again", retryAfterMs=RETRY_AFTER_MS
        )
        response = problem_response(unavailable, request_id)
    except Exception:
        _log.exception("unhandled error", path=request.path, method=request.method)
        response = problem_response(InternalError(), request_id)
    elapsed = time.perf_counter() - started
    route = _route_label(request)
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
    services.metrics.http_requests.labels(route, request.method, str(response.status)).inc()
    services.metrics.http_latency.labels(route, request.method).observe(elapsed)
    if route not in ("/healthz", "/readyz", "/metrics"):
        _log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status,
            duration_ms=round(elapsed * 1000, 2),
        )
    return response


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A span per REST request, around :func:`request_middleware`; installed only while
    tracing is on (observability/tracing.py)."""
    route = _route_label(request)
    if route == _WEBSOCKET_ROUTE:
        # The upgrade lasts as long as the socket: each envelope has a span of its own.
        return await handler(request)
    with tracing.http_span(request.method, route, request.path) as span:
        response = await handler(request)
        actor = request.get(ACTOR_KEY)
        tracing.http_done(
            span,
            response.status,
            request.get(REQUEST_ID_KEY, ""),
            actor.user_id if actor is not None else None,
            actor.session_id if actor is not None else None,
        )
    return response


async def _authenticate(request: web.Request) -> None:
    header = request.headers.get("Authorization")
    if header is None:
        return
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
        actor = await request.app[SERVICES].auth.authenticate(token.strip())
    except Unauthenticated as error:
        # Enforced only where identity is needed (``actor()``): a stale token that a client
        # still sends must not block login, registration or refresh.
        request[AUTH_ERROR_KEY] = error
        return
    request[ACTOR_KEY] = actor
    structlog.contextvars.bind_contextvars(
        user_id=str(actor.user_id), session_id=str(actor.session_id)
    )


def _from_http_exception(exc: web.HTTPException) -> AppError:
    if exc.status == 404:
        return RouteNotFound()
    if exc.status == 405:
        return MethodNotAllowed()
    if exc.status == 413:
        return PayloadTooLarge()
    error = AppError(exc.reason)
    # Keep the status aiohttp chose while still answering in problem format.
    error.status = exc.status  # type: ignore[misc]
    return error

"""Cross-origin REST for pages served elsewhere (CORS), for the origins an operator lists.

Same-origin pages (the app at ``/``) need nothing from here. For a listed origin, every
answer carries ``Access-Control-Allow-Origin`` and the headers a client reads, and a
preflight is answered before routing with the methods the path really has. Credentials are
bearer tokens a page sends itself, never cookies, so no ``Allow-Credentials``: a page from
an origin not listed gets answers its browser will not show it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import MatchInfoError

from boltorezka.api.keys import SERVICES

# What a browser page may send beyond the CORS-safelisted headers.
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
# What it may read of an answer: the request id, the retry hint, the auth challenge.
_EXPOSED_HEADERS = "X-Request-ID, Retry-After, WWW-Authenticate, Location, ETag"
# Browsers cap this themselves (Chromium at 2 hours); 10 minutes keeps a change of the
# allowlist or of a route quick to reach pages.
_PREFLIGHT_MAX_AGE = "600"


def _origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin.rstrip("/") in allowed


def _methods_of(request: web.Request) -> set[str] | None:
    """The methods the request's path has, or None when no route has the path."""
    match = request.match_info
    if isinstance(match, MatchInfoError):
        exception = match.http_exception
        if isinstance(exception, web.HTTPMethodNotAllowed):
            return {m.upper() for m in exception.allowed_methods}
        return None
    resource = match.route.resource
    if resource is None:
        return None
    return {route.method.upper() for route in resource if route.method != "*"}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    allowed = request.app[SERVICES].settings.cors_allowed_origins
    if origin is None or not allowed or not _origin_allowed(origin, allowed):
        return await handler(request)
    requested = request.headers.get("Access-Control-Request-Method")
    if request.method == "OPTIONS" and requested is not None:
        methods = _methods_of(request)
        if methods is not None:
            methods.discard("HEAD")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
                    "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                    "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
                    "Vary": "Origin",
                },
            )
        # An unknown path: the problem JSON 404 below, readable by the page.
    response = await handler(request)
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")
    return response

"""The web app at ``/``: the browser client's files, served from inside the package.

The files are package data (``boltorezka/web/``; ``clients/web/src`` in the checkout links
to them, like ``protocol/openapi.json`` links to the packaged contract), so a wheel, the
container image and an editable install all serve the same app. They are read once, when
the application is built, into a table keyed by URL path. A request gets a file only if
its path is a key of that table: there is no directory listing, and nothing outside the
folder can be reached, whatever the path holds (``..``, encoded slashes, symlinks).

The app is served by a middleware behind the router rather than by routes of its own: it
answers only requests the router found no route for, so it can never shadow an API path,
and the router keeps exactly the operations ``protocol/openapi.json`` describes.

Caching: module files import each other by plain relative paths, so one stale file would
mix two versions of the app. Every file is therefore ``no-cache`` with a strong ETag, and
a browser revalidates (a 304, no body) instead of trusting its copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

# What the app may ship; anything else in the folder (notes, editor files) is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}

# The app loads only its own files and talks only to its own origin ('self' covers ws: and
# wss: to the same host in CSP Level 3); video elements play MediaStreams, not URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

_COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_DOCUMENT_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
}
_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str
    document: bool


def load(root: Traversable | None = None) -> dict[str, StaticFile]:
    """Every servable file under ``root`` (default: the packaged app), by URL path."""
    folder = root if root is not None else resources.files("boltorezka").joinpath("web")
    table: dict[str, StaticFile] = {}
    _collect(folder, "", table)
    if "/index.html" in table:
        table["/"] = table["/index.html"]
    return table


def _collect(folder: Traversable, prefix: str, table: dict[str, StaticFile]) -> None:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        path = f"{prefix}/{entry.name}"
        if entry.is_dir():
            _collect(entry, path, table)
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None:
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        table[path] = StaticFile(body, content_type, f'"{digest}"', suffix == ".html")


def _respond(request: web.Request, item: StaticFile) -> web.Response:
    headers = dict(_COMMON_HEADERS)
    headers["ETag"] = item.etag
    if item.document:
        headers.update(_DOCUMENT_HEADERS)
    tags = _etags(request.headers.get("If-None-Match", ""))
    if item.etag in tags or "*" in tags:
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = item.content_type
    return web.Response(body=item.body, headers=headers)


def _etags(header: str) -> set[str]:
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return tags - {""}


def middleware(table: dict[str, StaticFile]) -> Middleware:
    """A middleware that serves ``table`` where the router matched nothing."""

    @web.middleware
    async def serve_web_app(request: web.Request, handler: Handler) -> web.StreamResponse:
        unmatched = isinstance(request.match_info.http_exception, web.HTTPNotFound)
        item = table.get(request.path) if unmatched else None
        if item is None:
            return await handler(request)
        if request.method not in _METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _METHODS)
        return _respond(request, item)

    return serve_web_app


def attach(app: web.Application) -> None:
    """Serve the packaged app from ``app`` (call before the app starts)."""
    table = load()
    if table:
        app.middlewares.append(middleware(table))

"""Problem JSON (RFC 9457 style) responses with a stable machine ``code``."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from boltorezka.errors import AppError

PROBLEM_TYPE_PREFIX = "urn:boltorezka:problem:"
_encoder = msgspec.json.Encoder()


def problem_response(error: AppError, request_id: str) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "retryable": error.retryable,
        "requestId": request_id,
    }
    body.update(error.extra)
    headers = {"X-Request-ID": request_id}
    if error.status == 401:
        # RFC 6750: tell the client which scheme to use and, when a token was sent, why.
        generic = error.code == "unauthenticated"
        headers["WWW-Authenticate"] = (
            'Bearer realm="boltorezka"'
            if generic
            else f'Bearer realm="boltorezka", error="invalid_token", '
            f'error_description="{error.code}"'
        )
    if error.status == 426:
        # RFC 9110 (15.5.22): a 426 names the protocol to upgrade to; ours is only WebSocket.
        headers["Upgrade"] = "websocket"
    retry_after_ms = error.extra.get("retryAfterMs")
    if isinstance(retry_after_ms, int):
        headers["Retry-After"] = str(max(1, -(-retry_after_ms // 1000)))
    return web.Response(
        body=_encoder.encode(body),
        status=error.status,
        content_type="application/problem+json",
        headers=headers,
    )

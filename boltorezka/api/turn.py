"""/v1/turn/credentials: short-lived TURN credentials for the caller."""

from __future__ import annotations

from aiohttp import web

from boltorezka.api.http import actor, json_response
from boltorezka.api.keys import SERVICES
from boltorezka.errors import TurnNotConfigured
from boltorezka.rtc import turn

routes = web.RouteTableDef()


@routes.get("/v1/turn/credentials")
async def turn_credentials(request: web.Request) -> web.Response:
    me = actor(request)
    settings = request.app[SERVICES].settings
    if settings.turn_secret is None or not settings.turn_uris:
        raise TurnNotConfigured()
    credentials = turn.issue(
        me.user_id,
        secret=settings.turn_secret,
        ttl=settings.turn_ttl,
        turn_uris=settings.turn_uris,
        stun_uris=settings.stun_uris,
    )
    # Credentials are per user and short-lived: never let a shared cache keep them.
    return json_response(credentials, headers={"Cache-Control": "no-store"})

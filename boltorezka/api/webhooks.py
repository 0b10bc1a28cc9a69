"""/v1/admin/webhooks: operators' webhook endpoints (server admins only).

The service (webhooks/service.py) decides who may; each handler asks it before reading a
body, as the other operators' routes do.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from boltorezka.admin.service import ADMINS
from boltorezka.api.bodies import NO_NUL, Url, _Body
from boltorezka.api.http import (
    actor,
    decode_body,
    json_response,
    no_content,
    path_uuid,
    request_info,
)
from boltorezka.api.keys import SERVICES
from boltorezka.webhooks.service import DESCRIPTION_MAX, EVENT_TYPES, EventType

routes = web.RouteTableDef()


class CreateWebhookBody(_Body):
    url: Url
    event_types: Annotated[
        list[EventType],
        msgspec.Meta(
            min_length=1,
            max_length=len(EVENT_TYPES),
            description="The event types sent to this endpoint (repeats count once).",
        ),
    ]
    description: Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX, pattern=NO_NUL)] = ""


@routes.get("/v1/admin/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    me = actor(request)
    return json_response(await request.app[SERVICES].webhooks.list_endpoints(me))


@routes.post("/v1/admin/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    me = actor(request)
    services = request.app[SERVICES]
    await services.admin.require(me, ADMINS)
    body = await decode_body(request, CreateWebhookBody)
    created = await services.webhooks.create(
        me, body.url, list(body.event_types), body.description, request_info(request)
    )
    return json_response(created, status=201)


@routes.delete("/v1/admin/webhooks/{webhookId}")
async def delete_webhook(request: web.Request) -> web.Response:
    me = actor(request)
    services = request.app[SERVICES]
    await services.admin.require(me, ADMINS)
    await services.webhooks.delete(me, path_uuid(request, "webhookId"), request_info(request))
    return no_content()

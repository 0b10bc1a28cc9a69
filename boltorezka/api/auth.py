"""/v1/auth: register, login, refresh, logout, device sessions, password resets."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from boltorezka.api.bodies import (
    NO_NUL,
    LoginBody,
    Password,
    RefreshBody,
    RegisterBody,
    _Body,
)
from boltorezka.api.http import (
    actor,
    decode_body,
    json_response,
    no_content,
    path_uuid,
    request_info,
)
from boltorezka.api.keys import SERVICES

routes = web.RouteTableDef()


class PasswordResetBody(_Body):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=NO_NUL)]
    new_password: Password


@routes.post("/v1/auth/register")
async def register(request: web.Request) -> web.Response:
    body = await decode_body(request, RegisterBody)
    pair = await request.app[SERVICES].auth.register(
        body.username, body.password, body.display_name, body.device_name, request_info(request)
    )
    return json_response(pair, status=201)


@routes.post("/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await decode_body(request, LoginBody)
    pair = await request.app[SERVICES].auth.login(
        body.username, body.password, body.device_name, request_info(request)
    )
    return json_response(pair)


@routes.post("/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    body = await decode_body(request, RefreshBody)
    pair = await request.app[SERVICES].auth.refresh(body.refresh_token, request_info(request))
    return json_response(pair)


@routes.post("/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    await request.app[SERVICES].auth.logout(actor(request), request_info(request))
    return no_content()


@routes.get("/v1/auth/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    me = actor(request)
    found = await request.app[SERVICES].auth.list_sessions(me)
    return json_response(
        {"sessions": [{**msgspec.to_builtins(s), "current": s.id == me.session_id} for s in found]}
    )


@routes.delete("/v1/auth/sessions/{sessionId}")
async def revoke_session(request: web.Request) -> web.Response:
    await request.app[SERVICES].auth.revoke_session(
        actor(request), path_uuid(request, "sessionId"), request_info(request)
    )
    return no_content()


@routes.post("/v1/auth/password-reset")
async def reset_password(request: web.Request) -> web.Response:
    body = await decode_body(request, PasswordResetBody)
    await request.app[SERVICES].accounts.reset_password(
        body.token, body.new_password, request_info(request)
    )
    return no_content()

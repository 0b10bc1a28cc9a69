"""/v1/me and /v1/users: the caller's profile and other users' public profiles."""

from __future__ import annotations

import msgspec
from aiohttp import web

from boltorezka.api.bodies import ProfileBody
from boltorezka.api.http import actor, decode_body, json_response, path_uuid
from boltorezka.api.keys import SERVICES
from boltorezka.errors import UserNotFound
from boltorezka.store import users

routes = web.RouteTableDef()


@routes.get("/v1/me")
async def get_me(request: web.Request) -> web.Response:
    me = actor(request)
    user = await users.get(request.app[SERVICES].pool, me.user_id)
    if user is None:
        raise UserNotFound()
    return json_response(user)


@routes.patch("/v1/me")
async def update_me(request: web.Request) -> web.Response:
    me = actor(request)
    body = await decode_body(request, ProfileBody)
    avatar = None if body.avatar_url is msgspec.UNSET else body.avatar_url
    user = await users.update_profile(
        request.app[SERVICES].pool,
        me.user_id,
        display_name=body.display_name,
        bio=body.bio,
        avatar_url=avatar,
        clear_avatar=body.avatar_url is None,
    )
    if user is None:
        raise UserNotFound()
    return json_response(user)


@routes.get("/v1/users/{userId}")
async def get_user(request: web.Request) -> web.Response:
    actor(request)
    user = await users.get(request.app[SERVICES].pool, path_uuid(request, "userId"))
    if user is None:
        raise UserNotFound()
    return json_response(user)

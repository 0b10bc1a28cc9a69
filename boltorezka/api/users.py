"""/v1/me and /v1/users: the caller's profile, password and account, and other users'
public profiles."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from aiohttp import web

from boltorezka.accounts.service import UserDeleted
from boltorezka.api.bodies import (
    NO_NUL,
    USERNAME_MAX,
    USERNAME_MIN,
    USERNAME_PATTERN,
    Password,
    ProfileBody,
    _Body,
)
from boltorezka.api.http import (
    actor,
    decode_body,
    json_response,
    no_content,
    path_uuid,
    query_str,
    request_info,
)
from boltorezka.api.keys import SERVICES
from boltorezka.errors import InvalidInput, UserNotFound
from boltorezka.store import users

routes = web.RouteTableDef()
# The rule usernames are registered under, so a lookup that could never match is refused as
# the schema says rather than looked up.
_USERNAME = re.compile(USERNAME_PATTERN)
# A password being checked, not set: as login takes it, so one set under older rules works.
CurrentPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]


class ChangePasswordBody(_Body):
    current_password: CurrentPassword
    new_password: Password


class DeleteAccountBody(_Body):
    password: CurrentPassword


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


@routes.delete("/v1/me")
async def delete_me(request: web.Request) -> web.Response:
    me = actor(request)
    body = await decode_body(request, DeleteAccountBody)
    await request.app[SERVICES].accounts.delete_account(me, body.password, request_info(request))
    return no_content()


@routes.post("/v1/me/password")
async def change_password(request: web.Request) -> web.Response:
    me = actor(request)
    body = await decode_body(request, ChangePasswordBody)
    changed = await request.app[SERVICES].accounts.change_password(
        me, body.current_password, body.new_password, request_info(request)
    )
    return json_response(changed)


@routes.get("/v1/users/{userId}")
async def get_user(request: web.Request) -> web.Response:
    actor(request)
    user_id = path_uuid(request, "userId")
    services = request.app[SERVICES]
    user = await users.get(services.pool, user_id)
    if user is None:
        # Their messages still carry the id: say why there is no profile behind it.
        if await services.accounts.is_deleted(user_id):
            raise UserDeleted()
        raise UserNotFound()
    return json_response(user)


@routes.get("/v1/users")
async def find_user(request: web.Request) -> web.Response:
    actor(request)
    username = query_str(request, "username", max_length=USERNAME_MAX)
    if username is None:
        raise InvalidInput("query parameter 'username' is required", field="username")
    if len(username) < USERNAME_MIN or not _USERNAME.search(username):
        raise InvalidInput(
            f"query parameter 'username' must be {USERNAME_MIN} to {USERNAME_MAX} of "
            "A-Z, a-z, 0-9, '_', '.' and '-'",
            field="username",
        )
    user = await users.get_by_username(request.app[SERVICES].pool, username)
    if user is None:
        raise UserNotFound()
    return json_response(user)

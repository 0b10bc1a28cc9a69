"""/v1/admin: the operators' API (server roles, accounts, rooms, the audit log, nodes).

Who may call what is decided by admin/service.py from the caller's server role; each
handler asks it before reading a body, so a caller without the role learns nothing about
what the operation would accept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web

from boltorezka.admin.service import ADMINS, READERS, AuditFilter
from boltorezka.api.bodies import DisplayName, Password, Username, _Body
from boltorezka.api.http import (
    actor,
    decode_body,
    json_response,
    no_content,
    path_uuid,
    query_int,
    query_page,
    query_str,
    query_uuid,
    request_info,
)
from boltorezka.api.keys import SERVICES
from boltorezka.context import Actor
from boltorezka.errors import InvalidInput
from boltorezka.store.users import ServerRole

routes = web.RouteTableDef()

# Query limits, shared with the published document (tools/gen_openapi.py).
PREFIX_MAX = 100
ACTION_MAX = 64
NODE_ID_MAX = 200
PAGE_MAX = 200
PAGE_DEFAULT = 50
# Unix seconds up to the end of year 9999, what datetime can hold.
TIME_MAX = 253402300799


class CreateUserBody(_Body):
    username: Username
    password: Password
    display_name: DisplayName | None = None
    server_role: ServerRole | None = None


class SetRoleBody(_Body):
    """``role: null`` takes the server role away."""

    role: Annotated[ServerRole | None, msgspec.Meta(description="`admin`, `moderator` or null.")]


async def _operator(request: web.Request, allowed: tuple[ServerRole, ...]) -> Actor:
    me = actor(request)
    await request.app[SERVICES].admin.require(me, allowed)
    return me


def _page(request: web.Request) -> tuple[int, str | None]:
    return query_page(request, default=PAGE_DEFAULT, maximum=PAGE_MAX)


def _query_time(request: web.Request, name: str) -> datetime | None:
    seconds = query_int(request, name, None, low=0, high=TIME_MAX)
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@routes.get("/v1/admin/users")
async def list_users(request: web.Request) -> web.Response:
    me = await _operator(request, READERS)
    prefix = query_str(request, "prefix", max_length=PREFIX_MAX) or None
    limit, position = _page(request)
    page = await request.app[SERVICES].admin.list_users(me, prefix, limit, position)
    return json_response(page)


@routes.post("/v1/admin/users")
async def create_user(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    body = await decode_body(request, CreateUserBody)
    user = await request.app[SERVICES].admin.create_user(
        me, body.username, body.password, body.display_name, body.server_role, request_info(request)
    )
    return json_response(user, status=201)


@routes.get("/v1/admin/users/{userId}")
async def get_user(request: web.Request) -> web.Response:
    me = await _operator(request, READERS)
    user = await request.app[SERVICES].admin.get_user(me, path_uuid(request, "userId"))
    return json_response(user)


@routes.put("/v1/admin/users/{userId}/role")
async def set_role(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    user_id = path_uuid(request, "userId")
    body = await decode_body(request, SetRoleBody)
    user = await request.app[SERVICES].admin.set_role(me, user_id, body.role, request_info(request))
    return json_response(user)


@routes.post("/v1/admin/users/{userId}/disable")
async def disable_user(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    user = await request.app[SERVICES].admin.set_disabled(
        me, path_uuid(request, "userId"), True, request_info(request)
    )
    return json_response(user)


@routes.post("/v1/admin/users/{userId}/enable")
async def enable_user(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    user = await request.app[SERVICES].admin.set_disabled(
        me, path_uuid(request, "userId"), False, request_info(request)
    )
    return json_response(user)


@routes.delete("/v1/admin/users/{userId}/sessions")
async def revoke_sessions(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    result = await request.app[SERVICES].admin.revoke_sessions(
        me, path_uuid(request, "userId"), request_info(request)
    )
    return json_response(result)


@routes.post("/v1/admin/users/{userId}/password-reset")
async def issue_password_reset(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    issued = await request.app[SERVICES].admin.issue_password_reset(
        me, path_uuid(request, "userId"), request_info(request)
    )
    return json_response(issued, status=201)


@routes.get("/v1/admin/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    me = await _operator(request, READERS)
    prefix = query_str(request, "prefix", max_length=PREFIX_MAX) or None
    limit, position = _page(request)
    page = await request.app[SERVICES].admin.list_rooms(me, prefix, limit, position)
    return json_response(page)


@routes.delete("/v1/admin/rooms/{roomId}")
async def delete_room(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    await request.app[SERVICES].admin.delete_room(
        me, path_uuid(request, "roomId"), request_info(request)
    )
    return no_content()


@routes.get("/v1/admin/audit")
async def audit_log(request: web.Request) -> web.Response:
    me = await _operator(request, READERS)
    where = AuditFilter(
        actor_id=query_uuid(request, "actorId"),
        action=query_str(request, "action", max_length=ACTION_MAX) or None,
        room_id=query_uuid(request, "roomId"),
        since=_query_time(request, "since"),
        until=_query_time(request, "until"),
    )
    limit, position = _page(request)
    page = await request.app[SERVICES].admin.audit_log(me, where, limit, position)
    return json_response(page)


@routes.get("/v1/admin/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    return json_response(await request.app[SERVICES].admin.list_nodes(me))


@routes.post("/v1/admin/nodes/{nodeId}/drain")
async def drain_node(request: web.Request) -> web.Response:
    me = await _operator(request, ADMINS)
    node_id = request.match_info["nodeId"]
    if len(node_id) > NODE_ID_MAX or "\x00" in node_id:
        raise InvalidInput(
            f"path parameter 'nodeId' must be 1 to {NODE_ID_MAX} characters", field="nodeId"
        )
    accepted = await request.app[SERVICES].admin.drain_node(me, node_id, request_info(request))
    return json_response(accepted, status=202)

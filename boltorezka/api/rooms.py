"""/v1/rooms: rooms, membership and roles."""

from __future__ import annotations

from aiohttp import web

from boltorezka import cursor
from boltorezka.api.bodies import (
    AddMemberBody,
    ChangeRoleBody,
    CreateRoomBody,
    DirectRoomBody,
    TransferBody,
    UpdateRoomBody,
)
from boltorezka.api.http import (
    actor,
    decode_body,
    json_response,
    no_content,
    path_uuid,
    query_page,
    query_str,
    request_info,
)
from boltorezka.api.keys import SERVICES

routes = web.RouteTableDef()
# /v1/rooms/direct and /v1/rooms/public are resources of their own, and a room id is never
# one of those words. Without the exclusion this dynamic resource matched them too: PATCH
# /v1/rooms/direct reached update_room (422 for the "id") instead of answering 405, and the
# router's 405 (and so OPTIONS) advertised the methods of both resources in Allow. Anything
# else that is not a UUID still reaches the handler, which answers 422 naming the parameter.
ROOM = "/v1/rooms/{roomId:(?!(?:direct|public)$)[^/]+}"


@routes.post("/v1/rooms")
async def create_room(request: web.Request) -> web.Response:
    me = actor(request)
    body = await decode_body(request, CreateRoomBody)
    view = await request.app[SERVICES].rooms.create(
        me, body.kind, body.name, body.topic, request_info(request)
    )
    return json_response(view, status=201)


@routes.post("/v1/rooms/direct")
async def open_direct(request: web.Request) -> web.Response:
    me = actor(request)
    body = await decode_body(request, DirectRoomBody)
    view, created = await request.app[SERVICES].rooms.open_direct(me, body.user_id)
    return json_response(view, status=201 if created else 200)


@routes.get("/v1/rooms")
async def list_my_rooms(request: web.Request) -> web.Response:
    rooms = await request.app[SERVICES].rooms.list_mine(actor(request))
    return json_response({"rooms": rooms})


@routes.get("/v1/rooms/public")
async def list_public_rooms(request: web.Request) -> web.Response:
    actor(request)
    query = query_str(request, "q", max_length=200)
    limit, raw_position = query_page(request, default=50, maximum=100)
    position = cursor.decode(raw_position)
    rooms = await request.app[SERVICES].rooms.list_public(query, limit, position)
    next_cursor = cursor.encode(rooms[-1].created_at, rooms[-1].id) if len(rooms) == limit else None
    return json_response({"rooms": rooms, "nextCursor": next_cursor})


@routes.get(ROOM)
async def get_room(request: web.Request) -> web.Response:
    view = await request.app[SERVICES].rooms.get(actor(request), path_uuid(request, "roomId"))
    return json_response(view)


@routes.patch(ROOM)
async def update_room(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    body = await decode_body(request, UpdateRoomBody)
    view = await request.app[SERVICES].rooms.update(me, room_id, body.name, body.topic)
    return json_response(view)


@routes.delete(ROOM)
async def delete_room(request: web.Request) -> web.Response:
    await request.app[SERVICES].rooms.delete(
        actor(request), path_uuid(request, "roomId"), request_info(request)
    )
    return no_content()


@routes.post("/v1/rooms/{roomId}/archive")
async def archive_room(request: web.Request) -> web.Response:
    view = await request.app[SERVICES].rooms.set_archived(
        actor(request), path_uuid(request, "roomId"), True, request_info(request)
    )
    return json_response(view)


@routes.post("/v1/rooms/{roomId}/unarchive")
async def unarchive_room(request: web.Request) -> web.Response:
    view = await request.app[SERVICES].rooms.set_archived(
        actor(request), path_uuid(request, "roomId"), False, request_info(request)
    )
    return json_response(view)


@routes.post("/v1/rooms/{roomId}/join")
async def join_room(request: web.Request) -> web.Response:
    member = await request.app[SERVICES].rooms.join(actor(request), path_uuid(request, "roomId"))
    return json_response(member)


@routes.post("/v1/rooms/{roomId}/leave")
async def leave_room(request: web.Request) -> web.Response:
    await request.app[SERVICES].rooms.leave(
        actor(request), path_uuid(request, "roomId"), request_info(request)
    )
    return no_content()


@routes.post("/v1/rooms/{roomId}/transfer")
async def transfer_ownership(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    body = await decode_body(request, TransferBody)
    members = await request.app[SERVICES].rooms.transfer_ownership(
        me, room_id, body.user_id, request_info(request)
    )
    return json_response({"members": members})


@routes.get("/v1/rooms/{roomId}/members")
async def list_members(request: web.Request) -> web.Response:
    members = await request.app[SERVICES].rooms.members(
        actor(request), path_uuid(request, "roomId")
    )
    return json_response({"members": members})


@routes.post("/v1/rooms/{roomId}/members")
async def add_member(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    body = await decode_body(request, AddMemberBody)
    member = await request.app[SERVICES].rooms.add_member(
        me, room_id, body.user_id, body.role, request_info(request)
    )
    return json_response(member, status=201)


@routes.patch("/v1/rooms/{roomId}/members/{userId}")
async def change_role(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    user_id = path_uuid(request, "userId")
    body = await decode_body(request, ChangeRoleBody)
    member = await request.app[SERVICES].rooms.change_role(
        me, room_id, user_id, body.role, request_info(request)
    )
    return json_response(member)


@routes.delete("/v1/rooms/{roomId}/members/{userId}")
async def remove_member(request: web.Request) -> web.Response:
    await request.app[SERVICES].rooms.remove_member(
        actor(request),
        path_uuid(request, "roomId"),
        path_uuid(request, "userId"),
        request_info(request),
    )
    return no_content()

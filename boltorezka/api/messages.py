"""/v1/rooms/{roomId}/messages, read markers and /v1/messages/search."""

from __future__ import annotations

import re

from aiohttp import web

from boltorezka import cursor
from boltorezka.api.bodies import EditMessageBody, PostMessageBody, ReadMarkerBody
from boltorezka.api.http import (
    actor,
    decode_body,
    json_response,
    path_uuid,
    query_int,
    query_page,
    query_str,
    query_uuid,
    request_info,
)
from boltorezka.api.keys import SERVICES
from boltorezka.errors import InvalidInput

routes = web.RouteTableDef()
MAX_SEQ = 2**63 - 1
# Whitespace as str.strip() sees it (every character whose isspace() is true), spelled out
# because \s means other sets in Python and in ECMA-262, and this pattern is published.
_SPACE = (
    r"\t\n\u000b\f\r \u001c-\u001f\u0085\u00a0\u1680"
    r"\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A search needs some text that is not space (a blank q would search for nothing) and no NUL.
# tools/gen_openapi.py publishes this pattern; the handler checks the very same one.
SEARCH_QUERY_PATTERN = rf"^[^\u0000]*[^\u0000{_SPACE}][^\u0000]*$"
_SEARCH_QUERY = re.compile(SEARCH_QUERY_PATTERN)


@routes.post("/v1/rooms/{roomId}/messages")
async def post_message(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    body = await decode_body(request, PostMessageBody)
    result = await request.app[SERVICES].messages.post(
        me, room_id, body.client_msg_id, body.body, body.reply_to
    )
    # 200 on a replay tells the client its earlier attempt had already been stored.
    return json_response(result.message, status=201 if result.created else 200)


@routes.get("/v1/rooms/{roomId}/messages")
async def history(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    before = query_int(request, "before", None, low=1, high=MAX_SEQ)
    after = query_int(request, "after", None, low=0, high=MAX_SEQ)
    limit = query_int(request, "limit", 50, low=1, high=200)
    assert limit is not None
    messages, has_more = await request.app[SERVICES].messages.history(
        me, room_id, before=before, after=after, limit=limit
    )
    return json_response({"messages": messages, "hasMore": has_more})


@routes.patch("/v1/rooms/{roomId}/messages/{messageId}")
async def edit_message(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    message_id = path_uuid(request, "messageId")
    body = await decode_body(request, EditMessageBody)
    message = await request.app[SERVICES].messages.edit(me, room_id, message_id, body.body)
    return json_response(message)


@routes.delete("/v1/rooms/{roomId}/messages/{messageId}")
async def delete_message(request: web.Request) -> web.Response:
    message = await request.app[SERVICES].messages.delete(
        actor(request),
        path_uuid(request, "roomId"),
        path_uuid(request, "messageId"),
        request_info(request),
    )
    return json_response(message)


@routes.put("/v1/rooms/{roomId}/read")
async def mark_read(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    body = await decode_body(request, ReadMarkerBody)
    marker = await request.app[SERVICES].messages.mark_read(me, room_id, int(body.seq))
    return json_response(marker)


@routes.get("/v1/messages/search")
async def search(request: web.Request) -> web.Response:
    me = actor(request)
    raw = query_str(request, "q", max_length=200)
    if raw is None:
        raise InvalidInput("query parameter 'q' is required", field="q")
    if not _SEARCH_QUERY.search(raw):
        raise InvalidInput("query parameter 'q' must contain more than spaces", field="q")
    query = raw.strip()
    limit, raw_position = query_page(request, default=20, maximum=100)
    position = cursor.decode(raw_position)
    found = await request.app[SERVICES].messages.search(
        me, query, room_id=query_uuid(request, "roomId"), limit=limit, cursor=position
    )
    next_cursor = cursor.encode(found[-1].created_at, found[-1].id) if len(found) == limit else None
    return json_response({"messages": found, "nextCursor": next_cursor})

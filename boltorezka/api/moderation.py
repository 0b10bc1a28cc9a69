"""/v1/rooms/{roomId}/bans, /mutes and /reports: room moderation (rooms/moderation.py)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from aiohttp import web

from boltorezka.api.bodies import _Body, _text
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
from boltorezka.errors import InvalidInput
from boltorezka.store.moderation import ReportStatus, Resolution

routes = web.RouteTableDef()

# Limits, shared with the published document (tools/gen_openapi.py).
REASON_MAX = 500
NOTE_MAX = 500
# Ten years: longer is what omitting the duration (until lifted) is for.
DURATION_MAX = 10 * 365 * 24 * 3600
PAGE_MAX = 100
PAGE_DEFAULT = 50
REPORT_STATUSES: tuple[ReportStatus, ...] = ("open", "resolved", "all")

Reason = Annotated[str, _text(max_length=REASON_MAX)]
# A whole number written as 600.0 is the integer 600 to JSON Schema, so it is one here too.
Duration = (
    Annotated[
        int,
        msgspec.Meta(
            ge=1, le=DURATION_MAX, description="Seconds from now; omit or null: until lifted."
        ),
    ]
    | Annotated[float, msgspec.Meta(ge=1, le=DURATION_MAX, multiple_of=1)]
)


class BanBody(_Body):
    reason: Reason = ""
    duration_seconds: Duration | None = None


class MuteBody(_Body):
    reason: Reason = ""
    duration_seconds: Duration | None = None


class ReportBody(_Body):
    message_id: uuid.UUID
    reason: Annotated[str, _text(1, max_length=REASON_MAX)]


class ResolveBody(_Body):
    resolution: Annotated[
        Resolution,
        msgspec.Meta(description="`actioned`: acted on; `dismissed`: nothing to act on."),
    ]
    note: Annotated[str, _text(max_length=NOTE_MAX)] | None = None


def _seconds(duration: int | float | None) -> int | None:
    return None if duration is None else int(duration)


@routes.get("/v1/rooms/{roomId}/bans")
async def list_bans(request: web.Request) -> web.Response:
    found = await request.app[SERVICES].moderation.bans(
        actor(request), path_uuid(request, "roomId")
    )
    return json_response(found)


@routes.put("/v1/rooms/{roomId}/bans/{userId}")
async def ban(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    user_id = path_uuid(request, "userId")
    body = await decode_body(request, BanBody)
    result = await request.app[SERVICES].moderation.ban(
        me, room_id, user_id, body.reason, _seconds(body.duration_seconds), request_info(request)
    )
    return json_response(result)


@routes.delete("/v1/rooms/{roomId}/bans/{userId}")
async def unban(request: web.Request) -> web.Response:
    await request.app[SERVICES].moderation.unban(
        actor(request),
        path_uuid(request, "roomId"),
        path_uuid(request, "userId"),
        request_info(request),
    )
    return no_content()


@routes.get("/v1/rooms/{roomId}/mutes")
async def list_mutes(request: web.Request) -> web.Response:
    found = await request.app[SERVICES].moderation.mutes(
        actor(request), path_uuid(request, "roomId")
    )
    return json_response(found)


@routes.put("/v1/rooms/{roomId}/mutes/{userId}")
async def mute(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    user_id = path_uuid(request, "userId")
    body = await decode_body(request, MuteBody)
    result = await request.app[SERVICES].moderation.mute(
        me, room_id, user_id, body.reason, _seconds(body.duration_seconds), request_info(request)
    )
    return json_response(result)


@routes.delete("/v1/rooms/{roomId}/mutes/{userId}")
async def unmute(request: web.Request) -> web.Response:
    await request.app[SERVICES].moderation.unmute(
        actor(request),
        path_uuid(request, "roomId"),
        path_uuid(request, "userId"),
        request_info(request),
    )
    return no_content()


@routes.post("/v1/rooms/{roomId}/reports")
async def report(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    body = await decode_body(request, ReportBody)
    result = await request.app[SERVICES].moderation.report(
        me, room_id, body.message_id, body.reason, request_info(request)
    )
    return json_response(result, status=201)


@routes.get("/v1/rooms/{roomId}/reports")
async def list_reports(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    raw = query_str(request, "status", max_length=16) or "open"
    if raw not in REPORT_STATUSES:
        raise InvalidInput(
            f"query parameter 'status' must be one of {', '.join(REPORT_STATUSES)}",
            field="status",
        )
    limit, position = query_page(request, default=PAGE_DEFAULT, maximum=PAGE_MAX)
    page = await request.app[SERVICES].moderation.reports(me, room_id, raw, limit, position)
    return json_response(page)


@routes.post("/v1/rooms/{roomId}/reports/{reportId}/resolve")
async def resolve_report(request: web.Request) -> web.Response:
    me = actor(request)
    room_id = path_uuid(request, "roomId")
    report_id = path_uuid(request, "reportId")
    body = await decode_body(request, ResolveBody)
    result = await request.app[SERVICES].moderation.resolve(
        me, room_id, report_id, body.resolution, body.note, request_info(request)
    )
    return json_response(result)

"""Room moderation as its users meet it: bans that close the room on live sockets and keep
a user out, mutes that stop posting but not reading, and message reports worked through by
the room's moderators and the server's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient, NackError

from boltorezka.runtime import Services
from tests.helpers import (
    Account,
    add_member,
    api_call,
    audit_rows,
    create_room,
    post_message,
    quick_accounts,
)

Client = TestClient[Any, Any]


async def _expire(services: Services, table: str, room: str, user: Account) -> None:
    """Move a ban's or mute's expiry into the past, as time passing would."""
    assert table in ("room_bans", "room_mutes")
    await services.pool.execute(
        f"UPDATE {table} SET expires_at = now() - interval '1 second' "
        "WHERE room_id = $1 AND user_id = $2",
        uuid.UUID(room),
        uuid.UUID(user.id),
    )


async def _server_role(services: Services, user: Account, role: str) -> None:
    await services.pool.execute(
        "UPDATE users SET server_role = $2 WHERE id = $1", uuid.UUID(user.id), role
    )


# --- bans -------------------------------------------------------------------------------


async def test_a_ban_closes_the_room_on_the_banned_users_live_socket(
    client: Client, services: Services, ws_url: str
) -> None:
    owner, troll, bystander = await quick_accounts(services, 3)
    room = await create_room(client, owner, kind="public")
    for user in (troll, bystander):
        assert (await api_call(client, "POST", f"/v1/rooms/{room}/join", user))[0] == 200
    async with (
        BoltorezkaClient(ws_url, troll.access_token) as t,
        BoltorezkaClient(ws_url, bystander.access_token) as b,
    ):
        await t.join(room)
        await b.join(room)
        status, ban = await api_call(
            client,
            "PUT",
            f"/v1/rooms/{room}/bans/{troll.id}",
            owner,
            {"reason": "spam", "durationSeconds": 3600},
        )
        assert status == 200, ban
        assert ban["userId"] == troll.id and ban["reason"] == "spam" and ban["expiresAt"]

        banned = await t.wait_type("member.banned", roomId=room, userId=troll.id, timeout=10)
        assert banned["payload"]["expiresAt"] is not None
        await t.wait_type("member.left", roomId=room, userId=troll.id, timeout=10)
        await b.wait_type("member.banned", roomId=room, userId=troll.id, timeout=10)
        # The room is gone from the socket: nothing said there reaches it any more.
        await b.send_message(room, "after the ban")
        await b.wait_type("chat.message", roomId=room, timeout=10)
        with pytest.raises(NackError) as refused:
            await t.send_message(room, "still here?")
        assert refused.value.code == "not_a_member"
        assert all(m["body"] != "after the ban" for m in t.messages(room))

    rows = await audit_rows(services.pool, "room.ban")
    assert [(r["actor_id"], r["target_id"]) for r in rows] == [(uuid.UUID(owner.id), troll.id)]
    assert rows[0]["details"]["reason"] == "spam"


async def test_a_banned_user_cannot_rejoin_read_or_search_a_public_room(
    client: Client, services: Services, ws_url: str
) -> None:
    owner, troll = await quick_accounts(services, 2)
    room = await create_room(client, owner, kind="public")
    assert (await api_call(client, "POST", f"/v1/rooms/{room}/join", troll))[0] == 200
    await post_message(client, room, owner, "the needle is here")
    status, _ = await api_call(client, "PUT", f"/v1/rooms/{room}/bans/{troll.id}", owner, {})
    assert status == 200

    status, data = await api_call(client, "POST", f"/v1/rooms/{room}/join", troll)
    assert (status, data["code"]) == (403, "banned")
    status, data = await api_call(client, "GET", f"/v1/rooms/{room}/messages", troll)
    assert (status, data["code"]) == (403, "not_a_member")
    status, data = await api_call(client, "GET", "/v1/messages/search?q=needle", troll)
    assert status == 200 and data["messages"] == []
    status, data = await api_call(
        client, "POST", f"/v1/rooms/{room}/messages", troll, {"clientMsgId": "x1", "body": "hi"}
    )
    assert (status, data["code"]) == (403, "not_a_member")
    async with BoltorezkaClient(ws_url, troll.access_token) as t:
        with pytest.raises(NackError) as refused:
            await t.join(room)
        assert refused.value.code == "not_a_member"
    # Nor can an admin bring them back in while the ban holds.
    status, data = await api_call(
        client, "POST", f"/v1/rooms/{room}/members", owner, {"userId": troll.id}
    )
    assert (status, data["code"]) == (409, "user_banned")


async def test_an_expired_ban_no_longer_holds_and_an_unban_lifts_one(
    client: Client, services: Services
) -> None:
    owner, first, second = await quick_accounts(services, 3)
    room = await create_room(client, owner, kind="public")
    for user in (first, second):
        body = {"durationSeconds": 60}
        assert (await api_call(client, "PUT", f"/v1/rooms/{room}/bans/{user.id}", owner, body))[
            0
        ] == 200
    status, listed = await api_call(client, "GET", f"/v1/rooms/{room}/bans", owner)
    assert status == 200
    assert {b["userId"] for b in listed["bans"]} == {first.id, second.id}

    await _expire(services, "room_bans", room, first)
    status, listed = await api_call(client, "GET", f"/v1/rooms/{room}/bans", owner)
    assert [b["userId"] for b in listed["bans"]] == [second.id]
    assert (await api_call(client, "POST", f"/v1/rooms/{room}/join", first))[0] == 200
    # An expired ban is no ban to lift.
    status, data = await api_call(client, "DELETE", f"/v1/rooms/{room}/bans/{first.id}", owner)
    assert (status, data["code"]) == (404, "not_banned")

    status, _ = await api_call(client, "DELETE", f"/v1/rooms/{room}/bans/{second.id}", owner)
    assert status == 204
    assert (await api_call(client, "POST", f"/v1/rooms/{room}/join", second))[0] == 200
    assert len(await audit_rows(services.pool, "room.unban")) == 1


async def test_who_may_ban_whom(client: Client, services: Services) -> None:
    owner, admin, other_admin, member, moderator = await quick_accounts(services, 5)
    room = await create_room(client, owner)
    for user, role in ((admin, "admin"), (other_admin, "admin"), (member, "member")):
        await add_member(client, room, owner, user, role)
    await _server_role(services, moderator, "moderator")

    async def ban(by: Account, whom: Account) -> tuple[int, str | None]:
        status, data = await api_call(client, "PUT", f"/v1/rooms/{room}/bans/{whom.id}", by, {})
        return status, data.get("code") if status >= 400 else None

    assert await ban(member, admin) == (403, "forbidden")
    assert await ban(admin, other_admin) == (403, "forbidden")
    assert await ban(admin, owner) == (403, "forbidden")
    assert await ban(moderator, owner) == (403, "forbidden")
    assert await ban(admin, admin) == (422, "validation_failed")
    # A server moderator moderates a private room they are not in, room admins included.
    assert await ban(moderator, other_admin) == (200, None)
    assert await ban(owner, admin) == (200, None)
    roles = await services.pool.fetch(
        "SELECT user_id FROM room_members WHERE room_id = $1", uuid.UUID(room)
    )
    assert {str(r["user_id"]) for r in roles} == {owner.id, member.id}
    # The server role gives moderation, not the room: the moderator still cannot read it.
    status, data = await api_call(client, "GET", f"/v1/rooms/{room}/messages", moderator)
    assert (status, data["code"]) == (404, "room_not_found")


# --- mutes ------------------------------------------------------------------------------


async def test_a_muted_member_reads_but_cannot_post_or_start_calls(
    client: Client, services: Services, ws_url: str
) -> None:
    owner, muted = await quick_accounts(services, 2)
    room = await create_room(client, owner)
    await add_member(client, room, owner, muted)
    async with (
        BoltorezkaClient(ws_url, muted.access_token) as m,
        BoltorezkaClient(ws_url, owner.access_token) as o,
    ):
        await m.join(room)
        await o.join(room)
        status, mute = await api_call(
            client, "PUT", f"/v1/rooms/{room}/mutes/{muted.id}", owner, {"reason": "cool off"}
        )
        assert status == 200 and mute["expiresAt"] is None, mute
        told = await m.wait_type("member.muted", roomId=room, userId=muted.id, timeout=10)
        assert told["payload"]["expiresAt"] is None

        status, data = await api_call(
            client,
            "POST",
            f"/v1/rooms/{room}/messages",
            muted,
            {"clientMsgId": "m-rest", "body": "let me speak"},
        )
        assert (status, data["code"]) == (403, "muted")
        with pytest.raises(NackError) as refused:
            await m.send_message(room, "over the socket")
        assert refused.value.code == "muted"
        with pytest.raises(NackError) as refused:
            await m.request("call.start", {"roomId": room, "mode": "p2p"})
        assert refused.value.code == "muted"
        stored = await services.pool.fetchval(
            "SELECT count(*) FROM messages WHERE sender_id = $1", uuid.UUID(muted.id)
        )
        assert stored == 0

        # Reading goes on, live and from history.
        await o.send_message(room, "you can still hear me")
        await m.wait_type("chat.message", roomId=room, timeout=10)
        status, page = await api_call(client, "GET", f"/v1/rooms/{room}/messages", muted)
        assert status == 200 and [x["body"] for x in page["messages"]] == ["you can still hear me"]

        status, _ = await api_call(client, "DELETE", f"/v1/rooms/{room}/mutes/{muted.id}", owner)
        assert status == 204
        await m.wait_type("member.unmuted", roomId=room, userId=muted.id, timeout=10)
        await m.send_message(room, "thank you")
    assert len(await audit_rows(services.pool, "room.mute")) == 1
    assert len(await audit_rows(services.pool, "room.unmute")) == 1


async def test_a_mute_outlives_leaving_and_lapses_at_its_expiry(
    client: Client, services: Services
) -> None:
    owner, muted = await quick_accounts(services, 2)
    room = await create_room(client, owner, kind="public")
    assert (await api_call(client, "POST", f"/v1/rooms/{room}/join", muted))[0] == 200
    body = {"durationSeconds": 600}
    status, mute = await api_call(client, "PUT", f"/v1/rooms/{room}/mutes/{muted.id}", owner, body)
    assert status == 200 and mute["expiresAt"] is not None
    assert (await api_call(client, "POST", f"/v1/rooms/{room}/leave", muted))[0] == 204
    assert (await api_call(client, "POST", f"/v1/rooms/{room}/join", muted))[0] == 200

    async def post(client_msg_id: str) -> tuple[int, Any]:
        return await api_call(
            client,
            "POST",
            f"/v1/rooms/{room}/messages",
            muted,
            {"clientMsgId": client_msg_id, "body": "hello"},
        )

    status, data = await post("after-rejoin")
    assert (status, data["code"]) == (403, "muted")
    status, listed = await api_call(client, "GET", f"/v1/rooms/{room}/mutes", owner)
    assert [m["userId"] for m in listed["mutes"]] == [muted.id]

    await _expire(services, "room_mutes", room, muted)
    status, listed = await api_call(client, "GET", f"/v1/rooms/{room}/mutes", owner)
    assert listed["mutes"] == []
    assert (await post("after-expiry"))[0] == 201


async def test_only_members_are_muted_and_not_by_plain_members(
    client: Client, services: Services
) -> None:
    owner, member, stranger = await quick_accounts(services, 3)
    room = await create_room(client, owner)
    await add_member(client, room, owner, member)
    status, data = await api_call(client, "PUT", f"/v1/rooms/{room}/mutes/{stranger.id}", owner, {})
    assert (status, data["code"]) == (404, "user_not_found")
    status, data = await api_call(client, "PUT", f"/v1/rooms/{room}/mutes/{owner.id}", member, {})
    assert (status, data["code"]) == (403, "forbidden")
    status, data = await api_call(client, "DELETE", f"/v1/rooms/{room}/mutes/{member.id}", owner)
    assert (status, data["code"]) == (404, "not_muted")


# --- reports ----------------------------------------------------------------------------


async def test_a_report_is_listed_for_moderators_and_resolved_once(
    client: Client, services: Services
) -> None:
    owner, reporter, sender, moderator = await quick_accounts(services, 4)
    room = await create_room(client, owner)
    for user in (reporter, sender):
        await add_member(client, room, owner, user)
    await _server_role(services, moderator, "moderator")
    message = await post_message(client, room, sender, "something nasty")
    reports = f"/v1/rooms/{room}/reports"

    status, report = await api_call(
        client, "POST", reports, reporter, {"messageId": message["id"], "reason": "abuse"}
    )
    assert status == 201, report
    assert (report["messageBody"], report["senderId"], report["resolvedAt"]) == (
        "something nasty",
        sender.id,
        None,
    )
    status, data = await api_call(
        client, "POST", reports, reporter, {"messageId": message["id"], "reason": "again"}
    )
    assert (status, data["code"]) == (409, "already_reported")
    status, data = await api_call(
        client, "POST", reports, sender, {"messageId": message["id"], "reason": "mine"}
    )
    assert (status, data["code"]) == (422, "validation_failed")

    # The sender deleting it leaves the report's copy to judge by.
    status, _ = await api_call(
        client, "DELETE", f"/v1/rooms/{room}/messages/{message['id']}", sender
    )
    assert status == 200
    status, data = await api_call(client, "GET", reports, reporter)
    assert (status, data["code"]) == (403, "forbidden")
    for who in (owner, moderator):
        status, page = await api_call(client, "GET", reports, who)
        assert status == 200
        assert [(r["id"], r["messageBody"]) for r in page["reports"]] == [
            (report["id"], "something nasty")
        ]

    resolve = f"{reports}/{report['id']}/resolve"
    status, done = await api_call(
        client, "POST", resolve, moderator, {"resolution": "actioned", "note": "sender warned"}
    )
    assert status == 200, done
    assert done["resolvedBy"] == moderator.id and done["resolvedAt"]
    assert (done["resolution"], done["resolutionNote"]) == ("actioned", "sender warned")
    status, data = await api_call(client, "POST", resolve, owner, {"resolution": "dismissed"})
    assert (status, data["code"]) == (409, "report_resolved")
    status, data = await api_call(
        client, "POST", f"{reports}/{uuid.uuid4()}/resolve", owner, {"resolution": "dismissed"}
    )
    assert (status, data["code"]) == (404, "report_not_found")

    status, page = await api_call(client, "GET", reports, owner)
    assert page["reports"] == []
    status, page = await api_call(client, "GET", f"{reports}?status=resolved", owner)
    assert [r["id"] for r in page["reports"]] == [report["id"]]
    status, data = await api_call(client, "GET", f"{reports}?status=bogus", owner)
    assert (status, data["code"]) == (422, "validation_failed")
    assert len(await audit_rows(services.pool, "message.report")) == 1
    assert len(await audit_rows(services.pool, "report.resolve")) == 1


async def test_reports_page_newest_first(client: Client, services: Services) -> None:
    owner, sender, *reporters = await quick_accounts(services, 5)
    room = await create_room(client, owner)
    for user in (sender, *reporters):
        await add_member(client, room, owner, user)
    message = await post_message(client, room, sender, "reported thrice")
    made = []
    for reporter in reporters:
        status, report = await api_call(
            client,
            "POST",
            f"/v1/rooms/{room}/reports",
            reporter,
            {"messageId": message["id"], "reason": "spam"},
        )
        assert status == 201
        made.append(report["id"])
    seen: list[str] = []
    path = f"/v1/rooms/{room}/reports?limit=2"
    while True:
        status, page = await api_call(client, "GET", path, owner)
        assert status == 200
        seen += [r["id"] for r in page["reports"]]
        if page["nextCursor"] is None:
            break
        path = f"/v1/rooms/{room}/reports?limit=2&cursor={page['nextCursor']}"
    assert seen == made[::-1]

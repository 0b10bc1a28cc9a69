"""Who may do what to a room: the authorization matrix and the room lifecycle rules.

The matrix below is the contract: every room route, caller role and room kind, with the exact
status and problem ``code``. Non-destructive cases share one room per kind; a case that would
change the room (delete, leave, transfer, …) gets a room of its own, so one case never decides
the outcome of another.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from boltorezka.api import messages as messages_api
from boltorezka.api import rooms as rooms_api
from boltorezka.runtime import Services
from tests.helpers import (
    Account,
    add_member,
    create_room,
    post_message,
    quick_accounts,
    wait_until_blocked_by,
)
from tests.helpers import api_call as call
from tests.helpers import status_and_code as outcome

Client = TestClient[Any, Any]
Expect = tuple[int, str | None]

_ids = itertools.count(1)

OK: Expect = (200, None)
CREATED: Expect = (201, None)
NO_CONTENT: Expect = (204, None)
HIDDEN: Expect = (404, "room_not_found")
NOT_MEMBER: Expect = (403, "not_a_member")
FORBIDDEN: Expect = (403, "forbidden")
UNAUTHENTICATED: Expect = (401, "unauthenticated")
OWNER_MUST_TRANSFER: Expect = (409, "owner_must_transfer")

OWNER, ADMIN, MEMBER, OUTSIDER, ANONYMOUS = "owner", "admin", "member", "outsider", "anonymous"
CALLERS = (OWNER, ADMIN, MEMBER, OUTSIDER, ANONYMOUS)
KINDS = ("private", "public")


@dataclass
class World:
    """The people of the matrix: one account per caller role plus two bystanders."""

    owner: Account
    admin: Account
    member: Account
    target: Account  # a plain member that admin actions are aimed at
    outsider: Account  # signed in, not a member
    extra: Account  # not a member; gets added by the members.add case

    def caller(self, name: str) -> Account | None:
        return None if name == ANONYMOUS else getattr(self, name)


@dataclass
class Setup:
    room_id: str
    message_id: str  # a message posted by ``member``


async def make_world(services: Services) -> World:
    return World(*await quick_accounts(services, 6))


async def build_room(client: Client, world: World, kind: str, *, archived: bool = False) -> Setup:
    room_id = await create_room(client, world.owner, kind=kind, name=f"{kind} room")
    await add_member(client, room_id, world.owner, world.admin, role="admin")
    await add_member(client, room_id, world.owner, world.member)
    await add_member(client, room_id, world.owner, world.target)
    message = await post_message(client, room_id, world.member, "the shared message")
    if archived:
        status, data = await call(client, "POST", f"/v1/rooms/{room_id}/archive", world.owner)
        assert status == 200, data
    return Setup(room_id, message["id"])


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # formatted with room, target and message ids
    body: Callable[[World, str], Any] | None
    destructive: bool
    # owner, admin, member, outsider of a private room, outsider of a public room, anonymous
    expect: tuple[Expect, Expect, Expect, Expect, Expect, Expect]
    archived: bool = False  # build the room archived (for unarchive)

    def expected(self, caller: str, kind: str) -> Expect:
        column = {
            OWNER: 0,
            ADMIN: 1,
            MEMBER: 2,
            OUTSIDER: 3 if kind == "private" else 4,
            ANONYMOUS: 5,
        }[caller]
        return self.expect[column]


ROUTES: tuple[Route, ...] = (
    # name, method, path, body, destructive,
    #   (owner, admin, member, outsider@private, outsider@public, anonymous)
    Route(
        "create", "POST", "/v1/rooms",
        lambda w, kind: {"name": "fresh", "kind": kind}, False,
        (CREATED, CREATED, CREATED, CREATED, CREATED, UNAUTHENTICATED),
    ),
    Route(
        "get", "GET", "/v1/rooms/{room}", None, False,
        (OK, OK, OK, HIDDEN, OK, UNAUTHENTICATED),
    ),
    Route(
        "patch", "PATCH", "/v1/rooms/{room}",
        lambda w, kind: {"topic": "new topic"}, False,
        (OK, OK, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "delete", "DELETE", "/v1/rooms/{room}", None, True,
        (NO_CONTENT, FORBIDDEN, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "archive", "POST", "/v1/rooms/{room}/archive", None, True,
        (OK, OK, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "unarchive", "POST", "/v1/rooms/{room}/unarchive", None, True,
        (OK, OK, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
        archived=True,
    ),
    Route(
        "join", "POST", "/v1/rooms/{room}/join", None, True,
        (OK, OK, OK, HIDDEN, OK, UNAUTHENTICATED),
    ),
    Route(
        "leave", "POST", "/v1/rooms/{room}/leave", None, True,
        (OWNER_MUST_TRANSFER, NO_CONTENT, NO_CONTENT, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "transfer", "POST", "/v1/rooms/{room}/transfer",
        lambda w, kind: {"userId": w.target.id}, True,
        (OK, FORBIDDEN, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "members.list", "GET", "/v1/rooms/{room}/members", None, False,
        (OK, OK, OK, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "members.add", "POST", "/v1/rooms/{room}/members",
        lambda w, kind: {"userId": w.extra.id, "role": "member"}, True,
        (CREATED, CREATED, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "members.patch", "PATCH", "/v1/rooms/{room}/members/{target}",
        lambda w, kind: {"role": "admin"}, True,
        (OK, FORBIDDEN, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "members.delete", "DELETE", "/v1/rooms/{room}/members/{target}", None, True,
        (NO_CONTENT, NO_CONTENT, FORBIDDEN, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "messages.post", "POST", "/v1/rooms/{room}/messages",
        lambda w, kind: {"clientMsgId": f"m{next(_ids)}", "body": "hi"}, False,
        (CREATED, CREATED, CREATED, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "messages.history", "GET", "/v1/rooms/{room}/messages", None, False,
        (OK, OK, OK, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "messages.search", "GET", "/v1/messages/search?q=shared&roomId={room}", None, False,
        (OK, OK, OK, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "messages.edit", "PATCH", "/v1/rooms/{room}/messages/{message}",
        lambda w, kind: {"body": "edited"}, False,
        (FORBIDDEN, FORBIDDEN, OK, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "messages.delete", "DELETE", "/v1/rooms/{room}/messages/{message}", None, True,
        (OK, OK, OK, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
    Route(
        "read", "PUT", "/v1/rooms/{room}/read",
        lambda w, kind: {"seq": 1}, False,
        (OK, OK, OK, HIDDEN, NOT_MEMBER, UNAUTHENTICATED),
    ),
)  # fmt: skip


async def check_effect(
    client: Client, world: World, route: Route, caller: str, setup: Setup, data: Any
) -> str | None:
    """After a successful case, check that it did what it says; None when fine."""
    room = f"/v1/rooms/{setup.room_id}"
    me = world.caller(caller)
    if route.name == "get":
        role = data["myRole"]
        return None if role == (None if caller == OUTSIDER else caller) else f"myRole {role!r}"
    if route.name == "messages.search":
        found = [m["id"] for m in data["messages"]]
        return None if found == [setup.message_id] else f"search found {found}"
    if route.name == "delete":
        status, _ = await call(client, "GET", room, world.owner)
        return None if status == 404 else f"room still visible after delete ({status})"
    if route.name in ("archive", "unarchive"):
        archived = data["room"]["archivedAt"] is not None
        return None if archived == (route.name == "archive") else f"archivedAt is {archived}"
    if route.name == "join":
        status, view = await call(client, "GET", room, me)
        role = view.get("myRole") if status == 200 else None
        expected = caller if caller in (OWNER, ADMIN) else MEMBER
        return None if role == expected else f"myRole after join is {role!r}"
    if route.name == "leave":
        status, members = await call(client, "GET", f"{room}/members", world.owner)
        ids = {m["userId"] for m in members["members"]}
        return None if me is not None and me.id not in ids else "still a member after leave"
    if route.name == "transfer":
        roles = {m["userId"]: m["role"] for m in data["members"]}
        want = {world.owner.id: "admin", world.target.id: "owner"}
        return None if roles == want else f"roles after transfer: {roles}"
    if route.name == "members.add":
        return None if data["userId"] == world.extra.id and data["role"] == "member" else str(data)
    if route.name == "members.patch":
        return None if data["role"] == "admin" else str(data)
    if route.name == "members.delete":
        status, members = await call(client, "GET", f"{room}/members", world.owner)
        ids = {m["userId"] for m in members["members"]}
        return None if world.target.id not in ids else "target still a member"
    if route.name == "messages.delete":
        ok = data["body"] == "" and data["deletedAt"] is not None
        return None if ok else f"message not deleted: {data}"
    return None


@pytest.mark.parametrize("kind", KINDS)
async def test_authorization_matrix(client: Client, services: Services, kind: str) -> None:
    world = await make_world(services)
    shared = await build_room(client, world, kind)

    async def run(route: Route, caller: str) -> str | None:
        """One case; a description of what went wrong, or None."""
        setup = (
            await build_room(client, world, kind, archived=route.archived)
            if route.destructive
            else shared
        )
        path = route.path.format(
            room=setup.room_id, target=world.target.id, message=setup.message_id
        )
        body = route.body(world, kind) if route.body is not None else None
        status, data = await call(client, route.method, path, world.caller(caller), body)
        got = outcome(status, data)
        want = route.expected(caller, kind)
        case = f"{route.name:<16} {kind:<8} {caller:<9}"
        if got != want:
            return f"{case} expected {want}, got {got}: {data}"
        if status < 300:
            problem = await check_effect(client, world, route, caller, setup, data)
            if problem is not None:
                return f"{case} {problem}"
        return None

    mismatches: list[str] = []
    for route in ROUTES:
        # The callers of one route run side by side; routes run one after another, so the
        # shared room only ever sees one kind of (non-destructive) change at a time.
        found = await asyncio.gather(*(run(route, caller) for caller in CALLERS))
        mismatches.extend(problem for problem in found if problem is not None)
    assert not mismatches, "\n" + "\n".join(mismatches)


async def test_anonymous_is_rejected_on_every_room_and_message_route(client: Client) -> None:
    routes = [
        (route.method, route.path)
        for route in (*rooms_api.routes, *messages_api.routes)
        if isinstance(route, web.RouteDef)
    ]
    assert len(routes) >= 20
    for method, path in routes:
        # A parameter may carry a regex ({roomId:...}, see api/rooms.py): a fresh UUID each.
        concrete = re.sub(r"\{[^{}]+\}", lambda _: str(uuid.uuid4()), path)
        body: dict[str, Any] | None = None if method == "GET" else {}
        status, data = await call(client, method, concrete, None, body)
        assert outcome(status, data) == UNAUTHENTICATED, f"{method} {path}: {status} {data}"
    status, data = await call(
        client, "GET", "/v1/rooms", None, headers={"Authorization": "Bearer not-a-token"}
    )
    assert status == 401 and data["code"] == "invalid_token"


# --------------------------------------------------------------------------- visibility


async def test_public_room_seen_by_non_member_and_joined(
    client: Client, services: Services
) -> None:
    owner, stranger = await quick_accounts(services, 2)
    room_id = await create_room(client, owner, kind="public", name="lobby")
    await post_message(client, room_id, owner, "welcome")

    status, view = await call(client, "GET", f"/v1/rooms/{room_id}", stranger)
    assert status == 200
    assert view["myRole"] is None and view["memberCount"] == 1
    assert view["room"]["name"] == "lobby"

    for method, suffix, body in (
        ("GET", "/messages", None),
        ("GET", "/members", None),
        ("POST", "/messages", {"clientMsgId": "x", "body": "hi"}),
        ("PUT", "/read", {"seq": 1}),
    ):
        got = outcome(*await call(client, method, f"/v1/rooms/{room_id}{suffix}", stranger, body))
        assert got == NOT_MEMBER, (method, suffix)
    got = outcome(
        *await call(client, "GET", f"/v1/messages/search?q=welcome&roomId={room_id}", stranger)
    )
    assert got == NOT_MEMBER

    status, member = await call(client, "POST", f"/v1/rooms/{room_id}/join", stranger)
    assert status == 200 and member["role"] == "member" and member["userId"] == stranger.id
    # Joining twice is harmless and keeps the role.
    status, again = await call(client, "POST", f"/v1/rooms/{room_id}/join", stranger)
    assert status == 200 and again["role"] == "member"
    status, view = await call(client, "GET", f"/v1/rooms/{room_id}", stranger)
    assert view["myRole"] == "member" and view["memberCount"] == 2
    status, history = await call(client, "GET", f"/v1/rooms/{room_id}/messages", stranger)
    assert status == 200 and [m["body"] for m in history["messages"]] == ["welcome"]


async def test_deleted_room_is_gone_for_everyone(client: Client, services: Services) -> None:
    owner, member, stranger = await quick_accounts(services, 3)
    for kind in KINDS:
        room_id = await create_room(client, owner, kind=kind, name=f"doomed {kind}")
        await add_member(client, room_id, owner, member)
        await post_message(client, room_id, member, "doomed words")
        status, _ = await call(client, "DELETE", f"/v1/rooms/{room_id}", owner)
        assert status == 204
        for who in (owner, member, stranger):
            for method, suffix, body in (
                ("GET", "", None),
                ("GET", "/messages", None),
                ("GET", "/members", None),
                ("POST", "/join", None),
                ("POST", "/messages", {"clientMsgId": f"d{next(_ids)}", "body": "x"}),
                ("DELETE", "", None),
                ("POST", "/unarchive", None),
            ):
                got = outcome(
                    *await call(client, method, f"/v1/rooms/{room_id}{suffix}", who, body)
                )
                assert got == HIDDEN, (kind, who.username, method, suffix, got)
        for who in (owner, member):
            status, mine = await call(client, "GET", "/v1/rooms", who)
            assert room_id not in {r["room"]["id"] for r in mine["rooms"]}
        status, found = await call(client, "GET", "/v1/messages/search?q=doomed", member)
        assert status == 200 and found["messages"] == []
    status, public = await call(client, "GET", "/v1/rooms/public?q=doomed", stranger)
    assert public["rooms"] == []


# --------------------------------------------------------------------------- listing


async def test_public_listing_and_search(client: Client, services: Services) -> None:
    alice, bob = await quick_accounts(services, 2)

    async def room(name: str, kind: str = "public", topic: str = "") -> str:
        status, data = await call(
            client, "POST", "/v1/rooms", alice, {"name": name, "kind": kind, "topic": topic}
        )
        assert status == 201, data
        room_id: str = data["room"]["id"]
        return room_id

    rust = await room("rust lovers", topic="systems programming")
    python = await room("python fans", topic="snakes and programming")
    cooking = await room("cooking", topic="recipes for everyone")
    secret = await room("secret programming", kind="private", topic="python recipes")
    archived = await room("old programming")
    deleted = await room("gone programming")
    assert (await call(client, "POST", f"/v1/rooms/{archived}/archive", alice))[0] == 200
    assert (await call(client, "DELETE", f"/v1/rooms/{deleted}", alice))[0] == 204

    async def search(query: str) -> list[str]:
        status, data = await call(client, "GET", f"/v1/rooms/public?q={query}", bob)
        assert status == 200, data
        return [r["id"] for r in data["rooms"]]

    # Newest first; words from the name and the topic both count; private rooms never show.
    assert await search("programming") == [python, rust]
    assert await search("python") == [python]
    assert await search("recipes") == [cooking]
    assert await search("Lovers") == [rust]
    assert await search("secret") == []
    assert await search("nothing-like-this") == []

    # Renaming is searchable at once, by the new name only.
    status, _ = await call(client, "PATCH", f"/v1/rooms/{cooking}", alice, {"name": "baking"})
    assert status == 200
    assert await search("baking") == [cooking]
    assert await search("cooking") == []

    status, data = await call(client, "GET", "/v1/rooms/public", bob)
    listed = [r["id"] for r in data["rooms"]]
    assert listed == [cooking, python, rust]
    assert secret not in listed and data["nextCursor"] is None

    paged = [await room(f"pager {i}", topic="paged") for i in range(7)]
    for query in ("?q=paged&", "?"):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            url = f"/v1/rooms/public{query}limit=3" + (f"&cursor={cursor}" if cursor else "")
            status, data = await call(client, "GET", url, bob)
            assert status == 200, data
            assert len(data["rooms"]) <= 3
            assert all(r["kind"] == "public" for r in data["rooms"])
            seen.extend(r["id"] for r in data["rooms"])
            pages += 1
            cursor = data["nextCursor"]
            if cursor is None:
                break
            assert pages < 10, "pagination does not end"
        assert len(seen) == len(set(seen)), "a room was listed twice"
        expected = list(reversed(paged)) + ([] if "q=" in query else [cooking, python, rust])
        assert seen == expected

    bad = await call(client, "GET", "/v1/rooms/public?cursor=garbage!", bob)
    assert outcome(*bad) == (422, "validation_failed")
    assert outcome(*await call(client, "GET", "/v1/rooms/public", None)) == UNAUTHENTICATED


async def test_list_my_rooms_with_unread_count(client: Client, services: Services) -> None:
    alice, bob, carol = await quick_accounts(services, 3)
    room_id = await create_room(client, alice, kind="private", name="team")
    other_public = await create_room(client, carol, kind="public", name="not joined")
    await add_member(client, room_id, alice, bob)
    for text in ("one", "two", "three"):
        await post_message(client, room_id, alice, text)

    async def summary(who: Account) -> dict[str, Any]:
        status, data = await call(client, "GET", "/v1/rooms", who)
        assert status == 200
        rooms = {r["room"]["id"]: r for r in data["rooms"]}
        assert other_public not in rooms
        entry: dict[str, Any] = rooms[room_id]
        return entry

    entry = await summary(bob)
    assert entry["myRole"] == "member"
    assert (entry["lastReadSeq"], entry["unreadCount"]) == (0, 3)
    assert entry["room"]["lastSeq"] == 3
    assert (await summary(alice))["myRole"] == "owner"

    status, marker = await call(client, "PUT", f"/v1/rooms/{room_id}/read", bob, {"seq": 2})
    assert status == 200 and marker == {"roomId": room_id, "seq": 2, "unreadCount": 1}
    entry = await summary(bob)
    assert (entry["lastReadSeq"], entry["unreadCount"]) == (2, 1)

    await post_message(client, room_id, alice, "four")
    assert (await summary(bob))["unreadCount"] == 2
    await call(client, "PUT", f"/v1/rooms/{room_id}/read", bob, {"seq": 4})
    assert (await summary(bob))["unreadCount"] == 0

    status, data = await call(client, "GET", "/v1/rooms", carol)
    assert [r["room"]["id"] for r in data["rooms"]] == [other_public]


# --------------------------------------------------------------------------- direct rooms


async def test_direct_rooms(client: Client, services: Services) -> None:
    alice, bob, carol = await quick_accounts(services, 3)
    status, first = await call(client, "POST", "/v1/rooms/direct", alice, {"userId": bob.id})
    assert status == 201, first
    room_id = first["room"]["id"]
    assert first["room"]["kind"] == "direct"
    assert first["myRole"] == "member" and first["memberCount"] == 2

    status, again = await call(client, "POST", "/v1/rooms/direct", alice, {"userId": bob.id})
    assert status == 200 and again["room"]["id"] == room_id
    status, reverse = await call(client, "POST", "/v1/rooms/direct", bob, {"userId": alice.id})
    assert status == 200 and reverse["room"]["id"] == room_id

    status, members = await call(client, "GET", f"/v1/rooms/{room_id}/members", bob)
    assert status == 200
    assert {(m["userId"], m["role"]) for m in members["members"]} == {
        (alice.id, "member"),
        (bob.id, "member"),
    }
    for who in (alice, bob):
        status, mine = await call(client, "GET", "/v1/rooms", who)
        assert room_id in {r["room"]["id"] for r in mine["rooms"]}
    await post_message(client, room_id, alice, "psst")
    await post_message(client, room_id, bob, "hush")

    room = f"/v1/rooms/{room_id}"
    immutable = (409, "direct_room_immutable")
    for method, path, body in (
        ("POST", f"{room}/members", {"userId": carol.id}),
        ("DELETE", f"{room}/members/{bob.id}", None),
        ("DELETE", f"{room}/members/{alice.id}", None),
        ("PATCH", f"{room}/members/{bob.id}", {"role": "admin"}),
        ("PATCH", room, {"name": "renamed"}),
        ("POST", f"{room}/archive", None),
        ("POST", f"{room}/unarchive", None),
        ("DELETE", room, None),
        ("POST", f"{room}/leave", None),
        ("POST", f"{room}/transfer", {"userId": bob.id}),
    ):
        got = outcome(*await call(client, method, path, alice, body))
        assert got == immutable, (method, path, got)

    # A third user cannot see it at all.
    for method, path, body in (
        ("GET", room, None),
        ("GET", f"{room}/messages", None),
        ("POST", f"{room}/join", None),
        ("POST", f"{room}/messages", {"clientMsgId": "c", "body": "let me in"}),
        ("PATCH", room, {"name": "mine now"}),
        ("POST", f"{room}/leave", None),
    ):
        got = outcome(*await call(client, method, path, carol, body))
        assert got == HIDDEN, (method, path, got)
    status, found = await call(client, "GET", "/v1/messages/search?q=psst", carol)
    assert found["messages"] == []

    # Still two members after all of that.
    status, members = await call(client, "GET", f"{room}/members", alice)
    assert len(members["members"]) == 2

    self_dm = await call(client, "POST", "/v1/rooms/direct", alice, {"userId": alice.id})
    assert outcome(*self_dm) == (422, "validation_failed")
    ghost = await call(client, "POST", "/v1/rooms/direct", alice, {"userId": str(uuid.uuid4())})
    assert outcome(*ghost) == (404, "user_not_found")
    status, public = await call(client, "GET", "/v1/rooms/public", carol)
    assert room_id not in {r["id"] for r in public["rooms"]}


async def test_direct_room_opened_concurrently_from_both_sides(
    client: Client, services: Services
) -> None:
    alice, bob = await quick_accounts(services, 2)
    results = await asyncio.gather(
        call(client, "POST", "/v1/rooms/direct", alice, {"userId": bob.id}),
        call(client, "POST", "/v1/rooms/direct", bob, {"userId": alice.id}),
        call(client, "POST", "/v1/rooms/direct", alice, {"userId": bob.id}),
    )
    assert sorted(status for status, _ in results) == [200, 200, 201], results
    assert len({data["room"]["id"] for _, data in results}) == 1


# --------------------------------------------------------------------------- archive


async def test_archived_room_rules(client: Client, services: Services) -> None:
    owner, member, stranger, newcomer = await quick_accounts(services, 4)
    room_id = await create_room(client, owner, kind="public", name="museum")
    await add_member(client, room_id, owner, member)
    message = await post_message(client, room_id, member, "before the archive")
    room = f"/v1/rooms/{room_id}"

    status, view = await call(client, "POST", f"{room}/archive", owner)
    assert status == 200 and view["room"]["archivedAt"] is not None
    status, again = await call(client, "POST", f"{room}/archive", owner)
    assert status == 200 and again["room"]["archivedAt"] == view["room"]["archivedAt"]

    archived = (409, "room_archived")
    post = {"clientMsgId": "after", "body": "after the archive"}
    assert outcome(*await call(client, "POST", f"{room}/messages", member, post)) == archived
    edit = await call(client, "PATCH", f"{room}/messages/{message['id']}", member, {"body": "x"})
    assert outcome(*edit) == archived
    assert outcome(*await call(client, "PATCH", room, owner, {"name": "x"})) == archived
    assert outcome(*await call(client, "POST", f"{room}/join", stranger)) == archived
    add = await call(client, "POST", f"{room}/members", owner, {"userId": newcomer.id})
    assert outcome(*add) == archived

    # Reading still works.
    status, history = await call(client, "GET", f"{room}/messages", member)
    assert status == 200 and [m["body"] for m in history["messages"]] == ["before the archive"]
    status, _ = await call(client, "GET", room, member)
    assert status == 200
    assert (await call(client, "PUT", f"{room}/read", member, {"seq": 1}))[0] == 200
    status, found = await call(client, "GET", "/v1/messages/search?q=archive", member)
    assert status == 200 and [m["id"] for m in found["messages"]] == [message["id"]]
    # Archived rooms drop out of the public directory.
    status, public = await call(client, "GET", "/v1/rooms/public", stranger)
    assert room_id not in {r["id"] for r in public["rooms"]}

    status, view = await call(client, "POST", f"{room}/unarchive", owner)
    assert status == 200 and view["room"]["archivedAt"] is None
    status, posted = await call(client, "POST", f"{room}/messages", member, post)
    assert status == 201 and posted["seq"] == 2


# --------------------------------------------------------------------------- roles


async def test_ownership_transfer(client: Client, services: Services) -> None:
    owner, heir, member, stranger = await quick_accounts(services, 4)
    room_id = await create_room(client, owner, kind="private", name="kingdom")
    await add_member(client, room_id, owner, heir)
    await add_member(client, room_id, owner, member)
    room = f"/v1/rooms/{room_id}"

    not_member = await call(client, "POST", f"{room}/transfer", owner, {"userId": stranger.id})
    assert outcome(*not_member) == (404, "user_not_found")
    to_self = await call(client, "POST", f"{room}/transfer", owner, {"userId": owner.id})
    assert outcome(*to_self) == (422, "validation_failed")
    ghost = await call(client, "POST", f"{room}/transfer", owner, {"userId": str(uuid.uuid4())})
    assert outcome(*ghost) == (404, "user_not_found")

    status, data = await call(client, "POST", f"{room}/transfer", owner, {"userId": heir.id})
    assert status == 200, data
    assert {m["userId"]: m["role"] for m in data["members"]} == {
        owner.id: "admin",
        heir.id: "owner",
    }
    status, members = await call(client, "GET", f"{room}/members", member)
    roles = {m["userId"]: m["role"] for m in members["members"]}
    assert roles == {owner.id: "admin", heir.id: "owner", member.id: "member"}
    assert list(roles.values()).count("owner") == 1

    # The old owner is an admin now: owner-only actions are closed, leaving is open.
    assert outcome(*await call(client, "DELETE", room, owner)) == FORBIDDEN
    again = await call(client, "POST", f"{room}/transfer", owner, {"userId": member.id})
    assert outcome(*again) == FORBIDDEN
    role = await call(client, "PATCH", f"{room}/members/{member.id}", owner, {"role": "admin"})
    assert outcome(*role) == FORBIDDEN
    assert outcome(*await call(client, "POST", f"{room}/leave", heir)) == OWNER_MUST_TRANSFER
    assert (await call(client, "POST", f"{room}/leave", owner))[0] == 204
    assert outcome(*await call(client, "GET", room, owner)) == HIDDEN
    assert (await call(client, "DELETE", room, heir))[0] == 204


async def test_role_changes(client: Client, services: Services) -> None:
    owner, admin, member, other, newcomer, stranger = await quick_accounts(services, 6)
    room_id = await create_room(client, owner, kind="private", name="ranks")
    await add_member(client, room_id, owner, admin, role="admin")
    await add_member(client, room_id, owner, member)
    await add_member(client, room_id, owner, other)
    room = f"/v1/rooms/{room_id}"

    async def set_role(by: Account, user: Account | str, role: str) -> tuple[int, Any]:
        user_id = user if isinstance(user, str) else user.id
        return await call(client, "PATCH", f"{room}/members/{user_id}", by, {"role": role})

    status, data = await set_role(owner, member, "admin")
    assert status == 200 and data["role"] == "admin" and data["userId"] == member.id
    # The promoted admin can now manage members.
    status, _ = await call(client, "POST", f"{room}/members", member, {"userId": newcomer.id})
    assert status == 201
    status, data = await set_role(owner, member, "member")
    assert status == 200 and data["role"] == "member"
    status, data = await set_role(owner, member, "member")  # no-op is fine
    assert status == 200 and data["role"] == "member"
    assert outcome(*await call(client, "DELETE", f"{room}/members/{other.id}", member)) == FORBIDDEN

    assert outcome(*await set_role(admin, other, "admin")) == FORBIDDEN
    assert outcome(*await set_role(admin, admin, "member")) == FORBIDDEN
    assert outcome(*await set_role(member, member, "admin")) == FORBIDDEN
    assert outcome(*await set_role(owner, owner, "member")) == FORBIDDEN
    assert outcome(*await set_role(owner, other, "owner")) == (422, "validation_failed")
    assert outcome(*await set_role(owner, stranger, "admin")) == (404, "user_not_found")

    # Only the owner may add someone as an admin.
    as_admin = {"userId": stranger.id, "role": "admin"}
    assert outcome(*await call(client, "POST", f"{room}/members", admin, as_admin)) == FORBIDDEN
    status, data = await call(client, "POST", f"{room}/members", owner, as_admin)
    assert status == 201 and data["role"] == "admin"
    again = await call(client, "POST", f"{room}/members", owner, {"userId": stranger.id})
    assert outcome(*again) == (409, "already_member")
    ghost = await call(client, "POST", f"{room}/members", owner, {"userId": str(uuid.uuid4())})
    assert outcome(*ghost) == (404, "user_not_found")

    status, members = await call(client, "GET", f"{room}/members", owner)
    roles = {m["userId"]: m["role"] for m in members["members"]}
    assert roles == {
        owner.id: "owner",
        admin.id: "admin",
        member.id: "member",
        other.id: "member",
        newcomer.id: "member",
        stranger.id: "admin",
    }


async def test_member_removal_rules(client: Client, services: Services) -> None:
    owner, admin, admin2, member, member2, outsider = await quick_accounts(services, 6)
    room_id = await create_room(client, owner, kind="public", name="moderated")
    await add_member(client, room_id, owner, admin, role="admin")
    await add_member(client, room_id, owner, admin2, role="admin")
    await add_member(client, room_id, owner, member)
    await add_member(client, room_id, owner, member2)
    room = f"/v1/rooms/{room_id}"

    async def remove(by: Account, user: Account | str) -> Expect:
        user_id = user if isinstance(user, str) else user.id
        return outcome(*await call(client, "DELETE", f"{room}/members/{user_id}", by))

    assert await remove(admin, admin2) == FORBIDDEN  # equal rank
    assert await remove(admin, owner) == FORBIDDEN  # nobody removes the owner
    assert await remove(member, member2) == FORBIDDEN
    assert await remove(member, owner) == FORBIDDEN
    assert await remove(owner, owner) == OWNER_MUST_TRANSFER  # removing yourself is leaving
    assert await remove(outsider, member) == NOT_MEMBER
    assert await remove(admin, outsider) == (404, "user_not_found")
    assert await remove(admin, str(uuid.uuid4())) == (404, "user_not_found")

    assert await remove(admin, member) == NO_CONTENT
    assert await remove(owner, admin2) == NO_CONTENT
    assert await remove(member2, member2) == NO_CONTENT  # leaving through the members route
    status, members = await call(client, "GET", f"{room}/members", owner)
    assert {m["userId"] for m in members["members"]} == {owner.id, admin.id}
    # A removed member of a public room is an outsider again.
    status, view = await call(client, "GET", room, member)
    assert status == 200 and view["myRole"] is None
    assert outcome(*await call(client, "GET", f"{room}/messages", member)) == NOT_MEMBER


async def test_a_demotion_that_commits_first_is_respected(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    owner, admin, member = await quick_accounts(services, 3)
    room_id = await create_room(client, owner, kind="private", name="demotions")
    await add_member(client, room_id, owner, admin, role="admin")
    await add_member(client, room_id, owner, member)
    room = uuid.UUID(room_id)
    # The owner demotes the admin (room row locked, as every membership change does) while
    # the admin's removal of a member is already on its way; the removal has to wait and
    # must then see the demotion.
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", room)
            await holder.execute(
                "UPDATE room_members SET role = 'member' WHERE room_id = $1 AND user_id = $2",
                room,
                uuid.UUID(admin.id),
            )
            removal = asyncio.ensure_future(
                call(client, "DELETE", f"/v1/rooms/{room_id}/members/{member.id}", admin)
            )
            await wait_until_blocked_by(pool, holder.get_server_pid())
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
    assert outcome(*await removal) == FORBIDDEN
    _, members = await call(client, "GET", f"/v1/rooms/{room_id}/members", owner)
    assert member.id in {m["userId"] for m in members["members"]}


# --------------------------------------------------------------------------- audit


async def test_audit_log_rows(client: Client, services: Services, pool: asyncpg.Pool) -> None:
    owner, admin, member, heir = await quick_accounts(services, 4)
    room_id = await create_room(client, owner, kind="private", name="audited")
    await add_member(client, room_id, owner, admin, role="admin")
    await add_member(client, room_id, owner, member)
    await add_member(client, room_id, owner, heir)
    room = f"/v1/rooms/{room_id}"

    async def act(request_id: str, method: str, path: str, by: Account, body: Any = None) -> None:
        status, data = await call(client, method, path, by, body, {"X-Request-ID": request_id})
        assert status < 300, data

    await act("req-role", "PATCH", f"{room}/members/{member.id}", owner, {"role": "admin"})
    await act("req-role-back", "PATCH", f"{room}/members/{member.id}", owner, {"role": "member"})
    await act("req-remove", "DELETE", f"{room}/members/{member.id}", admin)
    await act("req-transfer", "POST", f"{room}/transfer", owner, {"userId": heir.id})
    await act("req-delete", "DELETE", room, heir)
    # A refused action writes nothing.
    status, _ = await call(
        client, "DELETE", f"{room}/members/{heir.id}", admin, headers={"X-Request-ID": "req-no"}
    )
    assert status in (403, 404)

    rows = await pool.fetch(
        "SELECT action, actor_id, target_type, target_id, request_id, outcome, details "
        "FROM audit_log WHERE room_id = $1 AND action NOT IN ('room.create', 'member.add') "
        "ORDER BY id",
        uuid.UUID(room_id),
    )
    got = [
        (r["action"], str(r["actor_id"]), r["target_type"], r["target_id"], r["request_id"])
        for r in rows
    ]
    assert got == [
        ("member.role_change", owner.id, "user", member.id, "req-role"),
        ("member.role_change", owner.id, "user", member.id, "req-role-back"),
        ("member.remove", admin.id, "user", member.id, "req-remove"),
        ("room.transfer_ownership", owner.id, "user", heir.id, "req-transfer"),
        ("room.delete", heir.id, "room", room_id, "req-delete"),
    ]
    assert {r["outcome"] for r in rows} == {"ok"}
    details = [
        json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows
    ]
    assert details[0] == {"from": "member", "to": "admin"}
    assert details[1] == {"from": "admin", "to": "member"}
    assert details[2] == {"role": "member"}
    assert details[4] == {"name": "audited"}
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE request_id = 'req-no'") == 0

"""Messages: gapless seqs, idempotent sends, history paging, edits, deletions, search, reads."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import (
    Account,
    add_member,
    create_room,
    post_message,
    quick_accounts,
    register,
    register_many,
    wait_until_blocked_by,
)
from tests.helpers import api_call as call
from tests.helpers import status_and_code as outcome

Client = TestClient[Any, Any]
_ids = itertools.count(1)


def new_id() -> str:
    return f"cm-{next(_ids)}"


async def send(
    client: Client,
    room_id: str,
    who: Account,
    body: str,
    client_msg_id: str | None = None,
    reply_to: str | None = None,
) -> tuple[int, Any]:
    payload: dict[str, Any] = {"clientMsgId": client_msg_id or new_id(), "body": body}
    if reply_to is not None:
        payload["replyTo"] = reply_to
    return await call(client, "POST", f"/v1/rooms/{room_id}/messages", who, payload)


async def history(client: Client, room_id: str, who: Account, query: str = "") -> Any:
    status, data = await call(client, "GET", f"/v1/rooms/{room_id}/messages{query}", who)
    assert status == 200, data
    return data


async def message_rows(pool: asyncpg.Pool, room_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, seq, client_msg_id, body FROM messages WHERE room_id = $1 ORDER BY seq",
        uuid.UUID(room_id),
    )


# --------------------------------------------------------------------------- posting


async def test_post_assigns_consecutive_seqs(client: Client) -> None:
    alice, bob = await register_many(client, 2)
    room_id = await create_room(client, alice)
    await add_member(client, room_id, alice, bob)
    seqs = []
    for i, who in enumerate((alice, bob, alice, bob, bob)):
        status, message = await send(client, room_id, who, f"message {i}")
        assert status == 201, message
        assert message["roomId"] == room_id and message["senderId"] == who.id
        assert message["body"] == f"message {i}"
        assert message["editedAt"] is None and message["deletedAt"] is None
        seqs.append(message["seq"])
    assert seqs == [1, 2, 3, 4, 5]
    status, view = await call(client, "GET", f"/v1/rooms/{room_id}", bob)
    assert view["room"]["lastSeq"] == 5
    # Each room counts on its own.
    other = await create_room(client, alice, name="other")
    assert (await send(client, other, alice, "first elsewhere"))[1]["seq"] == 1


async def test_idempotent_post(client: Client, services: Services, pool: asyncpg.Pool) -> None:
    alice, bob = await quick_accounts(services, 2)
    room_id = await create_room(client, alice)
    await add_member(client, room_id, alice, bob)

    status, first = await send(client, room_id, alice, "only once", "retry-me")
    assert status == 201
    status, second = await send(client, room_id, alice, "only once", "retry-me")
    assert status == 200
    assert (second["id"], second["seq"]) == (first["id"], first["seq"]) == (first["id"], 1)
    assert second == first

    rows = await message_rows(pool, room_id)
    assert [(r["client_msg_id"], r["seq"]) for r in rows] == [("retry-me", 1)]
    # The replay did not use up a seq.
    assert (await send(client, room_id, alice, "next"))[1]["seq"] == 2

    # clientMsgIds belong to their sender: bob may use the same one.
    status, bobs = await send(client, room_id, bob, "only once", "retry-me")
    assert status == 201 and bobs["id"] != first["id"] and bobs["seq"] == 3
    assert len(await message_rows(pool, room_id)) == 3


async def test_idempotency_conflict(client: Client, services: Services, pool: asyncpg.Pool) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    other_room = await create_room(client, alice, name="other")
    status, _ = await send(client, room_id, alice, "the original", "same-id")
    assert status == 201

    conflict = (409, "idempotency_conflict")
    assert outcome(*await send(client, room_id, alice, "a different body", "same-id")) == conflict
    assert outcome(*await send(client, other_room, alice, "the original", "same-id")) == conflict
    assert len(await message_rows(pool, room_id)) == 1
    assert await message_rows(pool, other_room) == []
    status, view = await call(client, "GET", f"/v1/rooms/{other_room}", alice)
    assert view["room"]["lastSeq"] == 0


async def test_concurrent_sends_of_one_client_msg_id_store_one_message(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    results = await asyncio.gather(
        *(send(client, room_id, alice, "raced", "racy-id") for _ in range(5))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 200, 200, 201], results
    assert len({(data["id"], data["seq"]) for _, data in results}) == 1
    rows = await message_rows(pool, room_id)
    assert [(r["client_msg_id"], r["seq"]) for r in rows] == [("racy-id", 1)]
    # The losers' rolled-back seq bumps left no gap.
    assert (await send(client, room_id, alice, "after the race"))[1]["seq"] == 2


async def test_reply_to_must_be_in_the_same_room(client: Client, services: Services) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    other_room = await create_room(client, alice, name="other")
    original = await post_message(client, room_id, alice, "question")
    elsewhere = await post_message(client, other_room, alice, "elsewhere")

    status, reply = await send(client, room_id, alice, "answer", reply_to=original["id"])
    assert status == 201 and reply["replyTo"] == original["id"]
    invalid = (422, "validation_failed")
    cross = await send(client, room_id, alice, "cross", reply_to=elsewhere["id"])
    assert outcome(*cross) == invalid
    ghost = await send(client, room_id, alice, "ghost", reply_to=str(uuid.uuid4()))
    assert outcome(*ghost) == invalid
    assert outcome(*await send(client, room_id, alice, "junk", reply_to="not-a-uuid")) == invalid
    # Nothing was stored by the refused posts.
    data = await history(client, room_id, alice)
    assert [m["seq"] for m in data["messages"]] == [1, 2]


# --------------------------------------------------------------------------- history


async def test_paging_forward_is_gapless_while_others_post(
    client: Client, services: Services
) -> None:
    owner, alice, bob, carol = await quick_accounts(services, 4)
    room_id = await create_room(client, owner, kind="private", name="busy")
    writers = (alice, bob, carol)
    for writer in writers:
        await add_member(client, room_id, owner, writer)

    posted: dict[int, tuple[str, str]] = {}  # seq -> (sender, body)
    sent_order: dict[str, list[int]] = {w.id: [] for w in writers}
    done = asyncio.Event()

    async def write(writer: Account) -> None:
        for i in range(30):
            status, message = await send(client, room_id, writer, f"{writer.username} says {i}")
            assert status == 201, message
            posted[message["seq"]] = (writer.id, message["body"])
            sent_order[writer.id].append(message["seq"])

    seen: list[dict[str, Any]] = []
    pages_during = 0

    async def read_page() -> list[dict[str, Any]]:
        after = seen[-1]["seq"] if seen else 0
        data = await history(client, room_id, owner, f"?after={after}&limit=7")
        page: list[dict[str, Any]] = data["messages"]
        assert data["hasMore"] == (len(page) == 7)
        # Each page continues exactly where the last one ended: no gap, no repeat.
        assert [m["seq"] for m in page] == list(range(after + 1, after + 1 + len(page)))
        seen.extend(page)
        return page

    async def read_while_posting() -> None:
        nonlocal pages_during
        while not done.is_set():
            page = await read_page()
            pages_during += 1
            if len(page) < 7:
                await asyncio.sleep(0.005)

    async def post_all() -> None:
        try:
            await asyncio.gather(*(write(w) for w in writers))
        finally:
            done.set()

    await asyncio.gather(post_all(), read_while_posting())
    while len(await read_page()) == 7:
        pass

    assert [m["seq"] for m in seen] == list(range(1, 91))
    assert {m["seq"]: (m["senderId"], m["body"]) for m in seen} == posted
    # One sender's messages keep the order they were sent in.
    for writer in writers:
        assert sent_order[writer.id] == sorted(sent_order[writer.id])
        assert len(sent_order[writer.id]) == 30
    assert pages_during >= 1

    # A second, quiet read from the start agrees exactly.
    again: list[int] = []
    while True:
        after = again[-1] if again else 0
        data = await history(client, room_id, alice, f"?after={after}&limit=7")
        again.extend(m["seq"] for m in data["messages"])
        if not data["hasMore"]:
            break
    assert again == list(range(1, 91))


async def test_paging_backwards_with_before(client: Client, services: Services) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    for i in range(1, 21):
        await post_message(client, room_id, alice, f"number {i}")

    newest = await history(client, room_id, alice, "?limit=7")
    assert [m["seq"] for m in newest["messages"]] == list(range(14, 21))
    assert newest["hasMore"] is True

    pages: list[list[int]] = []
    before: int | None = None
    while True:
        query = "?limit=7" + (f"&before={before}" if before is not None else "")
        data = await history(client, room_id, alice, query)
        seqs = [m["seq"] for m in data["messages"]]
        assert seqs == sorted(seqs)  # every page is in ascending seq
        assert [m["body"] for m in data["messages"]] == [f"number {s}" for s in seqs]
        pages.append(seqs)
        if not data["hasMore"]:
            break
        before = seqs[0]
        assert len(pages) < 10
    assert pages == [list(range(14, 21)), list(range(7, 14)), list(range(1, 7))]

    # hasMore is true exactly when older messages remain beyond the page.
    assert (await history(client, room_id, alice, "?before=8&limit=7"))["hasMore"] is False
    assert (await history(client, room_id, alice, "?before=9&limit=7"))["hasMore"] is True
    short = await history(client, room_id, alice, "?before=5&limit=7")
    assert [m["seq"] for m in short["messages"]] == [1, 2, 3, 4] and short["hasMore"] is False
    assert (await history(client, room_id, alice, "?before=1"))["messages"] == []
    forward = await history(client, room_id, alice, "?after=18&limit=7")
    assert [m["seq"] for m in forward["messages"]] == [19, 20] and forward["hasMore"] is False
    window = await history(client, room_id, alice, "?after=5&before=9")
    assert [m["seq"] for m in window["messages"]] == [6, 7, 8]
    everything = await history(client, room_id, alice)
    assert [m["seq"] for m in everything["messages"]] == list(range(1, 21))
    assert everything["hasMore"] is False

    for query in ("?limit=0", "?limit=201", "?before=0", "?after=-1", "?after=x"):
        status, data = await call(client, "GET", f"/v1/rooms/{room_id}/messages{query}", alice)
        assert outcome(status, data) == (422, "validation_failed"), query


# --------------------------------------------------------------------------- edit, delete


async def test_edit_message(client: Client, services: Services) -> None:
    owner, alice, bob = await quick_accounts(services, 3)
    room_id = await create_room(client, owner)
    await add_member(client, room_id, owner, alice)
    await add_member(client, room_id, owner, bob)
    original = await post_message(client, room_id, alice, "frist post")
    url = f"/v1/rooms/{room_id}/messages/{original['id']}"

    status, edited = await call(client, "PATCH", url, alice, {"body": "first post"})
    assert status == 200, edited
    assert edited["body"] == "first post" and edited["editedAt"] is not None
    assert (edited["id"], edited["seq"], edited["createdAt"]) == (
        original["id"],
        original["seq"],
        original["createdAt"],
    )
    data = await history(client, room_id, bob)
    assert [(m["body"], m["editedAt"]) for m in data["messages"]] == [
        ("first post", edited["editedAt"])
    ]

    forbidden = (403, "forbidden")
    assert outcome(*await call(client, "PATCH", url, bob, {"body": "hijacked"})) == forbidden
    assert outcome(*await call(client, "PATCH", url, owner, {"body": "moderated"})) == forbidden
    assert (await history(client, room_id, bob))["messages"][0]["body"] == "first post"

    missing = f"/v1/rooms/{room_id}/messages/{uuid.uuid4()}"
    assert outcome(*await call(client, "PATCH", missing, alice, {"body": "x"})) == (
        404,
        "message_not_found",
    )
    # A message is addressed through its own room only.
    other_room = await create_room(client, alice, name="alice's")
    wrong_room = f"/v1/rooms/{other_room}/messages/{original['id']}"
    assert outcome(*await call(client, "PATCH", wrong_room, alice, {"body": "x"})) == (
        404,
        "message_not_found",
    )
    assert outcome(*await call(client, "PATCH", url, alice, {"body": ""})) == (
        422,
        "validation_failed",
    )


async def test_delete_message(client: Client, services: Services, pool: asyncpg.Pool) -> None:
    owner, admin, alice, bob = await quick_accounts(services, 4)
    room_id = await create_room(client, owner)
    await add_member(client, room_id, owner, admin, role="admin")
    await add_member(client, room_id, owner, alice)
    await add_member(client, room_id, owner, bob)
    first = await post_message(client, room_id, alice, "one")
    second = await post_message(client, room_id, bob, "two")
    third = await post_message(client, room_id, bob, "three")
    fourth = await post_message(client, room_id, alice, "four", client_msg_id="alice-four")

    def url(message: dict[str, Any]) -> str:
        return f"/v1/rooms/{room_id}/messages/{message['id']}"

    # A plain member cannot delete someone else's message.
    assert outcome(*await call(client, "DELETE", url(second), alice)) == (403, "forbidden")

    status, deleted = await call(client, "DELETE", url(first), alice)
    assert status == 200, deleted
    assert deleted["body"] == "" and deleted["deletedAt"] is not None
    assert deleted["seq"] == first["seq"]

    status, moderated = await call(
        client, "DELETE", url(second), admin, headers={"X-Request-ID": "mod-1"}
    )
    assert status == 200 and moderated["body"] == "" and moderated["deletedAt"] is not None
    status, by_owner = await call(client, "DELETE", url(fourth), owner)
    assert status == 200 and by_owner["deletedAt"] is not None
    # Deleting again changes nothing.
    status, again = await call(client, "DELETE", url(first), alice)
    assert status == 200 and again["deletedAt"] == deleted["deletedAt"]

    # The seqs stay in history, so there is no gap; only the bodies are gone.
    data = await history(client, room_id, bob)
    assert [(m["seq"], m["body"], m["deletedAt"] is not None) for m in data["messages"]] == [
        (1, "", True),
        (2, "", True),
        (3, "three", False),
        (4, "", True),
    ]
    assert third["seq"] == 3
    # The stored row keeps no body either.
    rows = await message_rows(pool, room_id)
    assert [r["body"] for r in rows] == ["", "", "three", ""]

    # Deleted messages cannot be edited.
    edit = await call(client, "PATCH", url(first), alice, {"body": "resurrected"})
    assert outcome(*edit) == (409, "message_deleted")
    # Retrying the send of a deleted message does not post it again.
    status, replay = await send(client, room_id, alice, "four", "alice-four")
    assert status == 200 and replay["id"] == fourth["id"] and replay["deletedAt"] is not None
    assert len(await message_rows(pool, room_id)) == 4

    audit = await pool.fetch(
        "SELECT actor_id, target_type, target_id, room_id, request_id, details FROM audit_log "
        "WHERE action = 'message.delete' ORDER BY id"
    )
    assert [(str(r["actor_id"]), r["target_id"]) for r in audit] == [
        (admin.id, second["id"]),
        (owner.id, fourth["id"]),
    ]
    row = audit[0]
    assert row["target_type"] == "message" and str(row["room_id"]) == room_id
    assert row["request_id"] == "mod-1"
    details = json.loads(row["details"]) if isinstance(row["details"], str) else row["details"]
    assert details == {"senderId": bob.id, "seq": 2}

    missing = f"/v1/rooms/{room_id}/messages/{uuid.uuid4()}"
    assert outcome(*await call(client, "DELETE", missing, owner)) == (404, "message_not_found")


# --------------------------------------------------------------------------- search


async def test_search_messages(client: Client, services: Services) -> None:
    alice, bob, carol = await quick_accounts(services, 3)
    shared = await create_room(client, alice, name="shared")
    await add_member(client, shared, alice, bob)
    alice_only = await create_room(client, alice, name="alice only")
    carols_public = await create_room(client, carol, kind="public", name="carol's")

    quick = await post_message(client, shared, alice, "The quick brown fox")
    await post_message(client, shared, bob, "a lazy dog sleeps")
    hunts = await post_message(client, shared, bob, "fox hunts at night")
    doomed = await post_message(client, shared, alice, "doomed fox words")
    secret = await post_message(client, alice_only, alice, "secret fox plan")
    news = await post_message(client, carols_public, carol, "public fox news")
    status, _ = await call(client, "DELETE", f"/v1/rooms/{shared}/messages/{doomed['id']}", alice)
    assert status == 200

    async def search(who: Account, query: str) -> list[str]:
        status, data = await call(client, "GET", f"/v1/messages/search?{query}", who)
        assert status == 200, data
        assert data["nextCursor"] is None
        return [m["id"] for m in data["messages"]]

    # Newest first, only rooms bob is in, never deleted messages, case does not matter.
    assert await search(bob, "q=fox") == [hunts["id"], quick["id"]]
    assert await search(bob, "q=FOX") == [hunts["id"], quick["id"]]
    assert await search(bob, "q=lazy dog") == [
        (await history(client, shared, bob))["messages"][1]["id"]
    ]
    assert await search(bob, "q=secret") == []
    assert await search(bob, "q=news") == []
    assert await search(bob, "q=doomed") == []
    assert await search(alice, "q=fox") == [secret["id"], hunts["id"], quick["id"]]
    assert await search(alice, f"q=fox&roomId={shared}") == [hunts["id"], quick["id"]]
    assert await search(alice, f"q=fox&roomId={alice_only}") == [secret["id"]]
    assert await search(carol, "q=fox") == [news["id"]]

    # roomId of a room bob cannot see, or a public room he has not joined.
    hidden = await call(client, "GET", f"/v1/messages/search?q=fox&roomId={alice_only}", bob)
    assert outcome(*hidden) == (404, "room_not_found")
    unjoined = await call(client, "GET", f"/v1/messages/search?q=fox&roomId={carols_public}", bob)
    assert outcome(*unjoined) == (403, "not_a_member")
    status, _ = await call(client, "POST", f"/v1/rooms/{carols_public}/join", bob)
    assert status == 200
    assert await search(bob, "q=fox") == [news["id"], hunts["id"], quick["id"]]

    # Edits are searchable by their new words only.
    status, _ = await call(
        client, "PATCH", f"/v1/rooms/{shared}/messages/{hunts['id']}", bob, {"body": "owl hunts"}
    )
    assert status == 200
    assert await search(bob, "q=owl") == [hunts["id"]]
    assert await search(bob, "q=fox") == [news["id"], quick["id"]]

    # After leaving, a room's messages are no longer searchable.
    status, _ = await call(client, "POST", f"/v1/rooms/{shared}/leave", bob)
    assert status == 204
    assert await search(bob, "q=fox") == [news["id"]]

    for query in ("", "q=", "q=%20%20", "q=fox&roomId=nope", "q=fox&limit=0", "q=fox&cursor=@@"):
        status, data = await call(client, "GET", f"/v1/messages/search?{query}", alice)
        assert outcome(status, data) == (422, "validation_failed"), query
    assert outcome(*await call(client, "GET", "/v1/messages/search?q=fox", None)) == (
        401,
        "unauthenticated",
    )


async def test_search_paginates_with_next_cursor(client: Client, services: Services) -> None:
    alice, bob = await quick_accounts(services, 2)
    room_id = await create_room(client, alice, kind="public", name="pages")
    other = await create_room(client, bob, kind="public", name="not alice's")
    posted = [
        (await post_message(client, room_id, alice, f"needle number {i}"))["id"] for i in range(8)
    ]
    await post_message(client, other, bob, "needle that alice never sees")
    await post_message(client, room_id, alice, "hay only")

    for scope in ("", f"&roomId={room_id}"):
        found: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            url = f"/v1/messages/search?q=needle&limit=3{scope}"
            if cursor:
                url += f"&cursor={cursor}"
            status, data = await call(client, "GET", url, alice)
            assert status == 200, data
            assert len(data["messages"]) <= 3
            found.extend(m["id"] for m in data["messages"])
            cursor = data["nextCursor"]
            if cursor is None:
                break
        assert cursor is None, "pagination does not end"
        assert found == list(reversed(posted)), scope


# --------------------------------------------------------------------------- read markers


async def test_read_markers(client: Client, services: Services) -> None:
    alice, bob = await quick_accounts(services, 2)
    room_id = await create_room(client, alice)
    await add_member(client, room_id, alice, bob)
    for i in range(5):
        await post_message(client, room_id, alice, f"unread {i}")
    url = f"/v1/rooms/{room_id}/read"

    async def unread(who: Account) -> tuple[int, int]:
        status, data = await call(client, "GET", "/v1/rooms", who)
        assert status == 200
        entry = next(r for r in data["rooms"] if r["room"]["id"] == room_id)
        return entry["lastReadSeq"], entry["unreadCount"]

    assert await unread(bob) == (0, 5)
    status, marker = await call(client, "PUT", url, bob, {"seq": 3})
    assert status == 200 and marker == {"roomId": room_id, "seq": 3, "unreadCount": 2}
    assert await unread(bob) == (3, 2)

    # Never backwards: a lower seq keeps the higher marker.
    status, marker = await call(client, "PUT", url, bob, {"seq": 1})
    assert status == 200 and marker == {"roomId": room_id, "seq": 3, "unreadCount": 2}
    status, marker = await call(client, "PUT", url, bob, {"seq": 0})
    assert status == 200 and marker["seq"] == 3
    assert await unread(bob) == (3, 2)

    invalid = (422, "validation_failed")
    assert outcome(*await call(client, "PUT", url, bob, {"seq": 6})) == invalid
    assert outcome(*await call(client, "PUT", url, bob, {"seq": -1})) == invalid
    assert outcome(*await call(client, "PUT", url, bob, {"seq": "3"})) == invalid
    assert outcome(*await call(client, "PUT", url, bob, {})) == invalid
    assert await unread(bob) == (3, 2)

    status, marker = await call(client, "PUT", url, bob, {"seq": 5})
    assert status == 200 and marker == {"roomId": room_id, "seq": 5, "unreadCount": 0}
    assert await unread(bob) == (5, 0)
    # Markers are per member: bob's reads leave alice's alone, and alice's own messages
    # moved hers (what you wrote yourself is never unread for you).
    assert await unread(alice) == (5, 0)
    await post_message(client, room_id, alice, "one more")
    assert await unread(bob) == (5, 1)
    status, marker = await call(client, "PUT", url, bob, {"seq": 6})
    assert status == 200 and marker["unreadCount"] == 0


async def test_replay_does_not_bypass_room_access(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    owner, alice = await quick_accounts(services, 2)
    room_id = await create_room(client, owner, name="kick zone")
    await add_member(client, room_id, owner, alice)
    elsewhere = await create_room(client, owner, name="never joined")
    status, _ = await send(client, room_id, alice, "before the kick", "kept-id")
    assert status == 201

    # A clientMsgId already used does not let a post skip the room's rules.
    hidden = (404, "room_not_found")
    assert outcome(*await send(client, elsewhere, alice, "before the kick", "kept-id")) == hidden
    status, _ = await call(client, "DELETE", f"/v1/rooms/{room_id}/members/{alice.id}", owner)
    assert status == 204
    assert outcome(*await send(client, room_id, alice, "before the kick", "kept-id")) == hidden
    assert len(await message_rows(pool, room_id)) == 1


async def test_replay_after_archive_confirms_the_stored_message(
    client: Client, services: Services
) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    status, first = await send(client, room_id, alice, "stored in time", "late-retry")
    assert status == 201
    assert (await call(client, "POST", f"/v1/rooms/{room_id}/archive", alice))[0] == 200
    status, replay = await send(client, room_id, alice, "stored in time", "late-retry")
    assert status == 200 and replay["id"] == first["id"]
    fresh = await send(client, room_id, alice, "too late")
    assert outcome(*fresh) == (409, "room_archived")


# --------------------------------------------------------------------------- races


async def race_room_change(
    pool: asyncpg.Pool, room_id: str, change: str, request: Any
) -> tuple[int, Any]:
    """Run ``request`` while ``change`` to the room is in flight, then commit the change.

    The request starts before the change commits and has to wait for it; the answer must
    reflect the committed change, not the state the request first read.
    """
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute(f"UPDATE rooms SET {change} WHERE id = $1", uuid.UUID(room_id))
            task = asyncio.ensure_future(request)
            await wait_until_blocked_by(pool, holder.get_server_pid())
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
    result: tuple[int, Any] = await task
    return result


async def test_post_racing_an_archive_is_refused(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    request = send(client, room_id, alice, "sneaking in")
    got = await race_room_change(pool, room_id, "archived_at = now()", request)
    assert outcome(*got) == (409, "room_archived"), got
    assert await message_rows(pool, room_id) == []


async def test_post_racing_a_room_delete_is_refused(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    alice = (await quick_accounts(services, 1))[0]
    room_id = await create_room(client, alice)
    request = send(client, room_id, alice, "into the void")
    got = await race_room_change(pool, room_id, "deleted_at = now()", request)
    assert outcome(*got) == (404, "room_not_found"), got
    assert await message_rows(pool, room_id) == []


async def test_post_racing_a_kick_is_refused(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    owner, alice = await quick_accounts(services, 2)
    room_id = await create_room(client, owner)
    await add_member(client, room_id, owner, alice)
    room, user = uuid.UUID(room_id), uuid.UUID(alice.id)
    # What removing a member does: lock the room row, delete the membership, commit.
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", room)
            await holder.execute(
                "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", room, user
            )
            task = asyncio.ensure_future(send(client, room_id, alice, "kicked, still typing"))
            await wait_until_blocked_by(pool, holder.get_server_pid())
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
    got = await task
    assert outcome(*got) == (404, "room_not_found"), got
    assert await message_rows(pool, room_id) == []


async def test_rest_posts_share_the_per_user_send_limit(client: Client, services: Services) -> None:
    limited = await make_client(services, chat_send_burst=2, chat_send_per_second=0.5)
    try:
        alice = await register(limited)
        room_id = await create_room(limited, alice)
        url = f"/v1/rooms/{room_id}/messages"
        for i in range(2):
            status, _ = await call(
                limited, "POST", url, alice, {"clientMsgId": f"r{i}", "body": "x"}
            )
            assert status == 201
        status, problem = await call(
            limited, "POST", url, alice, {"clientMsgId": "r2", "body": "x"}
        )
        assert (status, problem["code"]) == (429, "rate_limited")
        assert problem["retryAfterMs"] > 0
    finally:
        await limited.close()

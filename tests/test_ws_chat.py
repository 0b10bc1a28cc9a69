"""Rooms, presence, typing, chat and notifications over the WebSocket, as users see them.

Every "does not arrive" check waits for a later *sentinel* frame that the server queues on
the same connection after the unwanted frame would have been queued (a later event published
through the same bus, or the answer to a later request), then inspects everything that
connection received before the sentinel. Nothing here sleeps to prove an absence.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient, NackError

from boltorezka.api.keys import GATEWAY
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import PASSWORD, Account, add_member, app_of, create_room, post_message, register

Event = dict[str, Any]
_ids = itertools.count(1)


# --- harness ---------------------------------------------------------------------------


class Device(BoltorezkaClient):
    """The scripted client, plus every frame it received in arrival order, untouched.

    The client drops `chat.message` frames whose seq it has already seen, and keeps
    acks out of `events`; `frames` keeps both, so a test can prove the server did not
    broadcast something twice and that an ack came before a snapshot.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[Event] = []

    async def _handle(self, frame: Event) -> None:
        self.frames.append(frame)
        await super()._handle(frame)

    async def frames_until(
        self, msg_type: str, timeout: float = 5.0, **payload: Any
    ) -> list[Event]:
        """Wait for a sentinel event; return every frame that arrived before it."""
        event = await self.wait_type(msg_type, timeout, **payload)
        index = next(i for i, frame in enumerate(self.frames) if frame is event)
        return self.frames[:index]

    async def frames_until_message(self, room_id: str, body: str) -> list[Event]:
        """Wait for the sentinel message ``body`` in ``room_id``; return the frames before it."""
        event = await self.wait_for(
            lambda e: (
                e.get("type") == "chat.message"
                and e["payload"]["roomId"] == room_id
                and e["payload"]["message"]["body"] == body
            )
        )
        index = next(i for i, frame in enumerate(self.frames) if frame is event)
        return self.frames[:index]


@contextlib.asynccontextmanager
async def devices(url: str, *tokens: str) -> AsyncIterator[list[Device]]:
    """Connected, authenticated clients, one per token, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for token in tokens:
            device = Device(url, token, reconnect=False, request_timeout=5.0)
            await stack.enter_async_context(device)
            opened.append(device)
        yield opened


def matching(frames: list[Event], msg_type: str, **payload: Any) -> list[Event]:
    return [
        f
        for f in frames
        if f.get("type") == msg_type
        and all(f.get("payload", {}).get(k) == v for k, v in payload.items())
    ]


def in_room(frames: list[Event], room_id: str) -> list[Event]:
    """Frames about ``room_id``, other than request answers."""
    return [
        f
        for f in frames
        if f.get("type") not in ("ack", "nack") and f.get("payload", {}).get("roomId") == room_id
    ]


async def accounts(client: TestClient[Any, Any], count: int) -> list[Account]:
    """``count`` new users, registered concurrently (password hashing dominates setup)."""
    return list(await asyncio.gather(*(register(client) for _ in range(count))))


async def second_device(client: TestClient[Any, Any], account: Account) -> str:
    """Sign the same user in again (a new device session); return its access token."""
    response = await client.post(
        "/v1/auth/login",
        json={"username": account.username, "password": PASSWORD, "deviceName": "phone"},
    )
    assert response.status == 200, await response.text()
    token: str = (await response.json())["accessToken"]
    return token


async def room_with(
    client: TestClient[Any, Any], owner: Account, *members: Account, kind: str = "private"
) -> str:
    room_id = await create_room(client, owner, kind=kind, name=f"room-{next(_ids)}")
    for member in members:
        await add_member(client, room_id, owner, member)
    return room_id


async def expect_nack(code: str, request: Any) -> NackError:
    with pytest.raises(NackError) as caught:
        await request
    assert caught.value.code == code, caught.value
    return caught.value


def cid() -> str:
    return f"cm-{uuid.uuid4().hex}"


def statuses(snapshot: Event) -> dict[str, str]:
    return {m["userId"]: m["status"] for m in snapshot["payload"]["members"]}


def position(frames: list[Event], event: Event) -> int:
    return next(i for i, frame in enumerate(frames) if frame is event)


# --- 1. one user, two devices ----------------------------------------------------------


async def test_two_devices_share_messages_and_presence(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)
    phone = await second_device(client, alice)

    async with devices(ws_url, bob.access_token) as (b,):
        await b.join(room)
        snapshot = await b.wait_type("room.presence", roomId=room)
        assert statuses(snapshot) == {alice.id: "offline", bob.id: "online"}

        async with devices(ws_url, alice.access_token) as (laptop,):
            await b.wait_type("presence.changed", userId=alice.id, status="online")
            async with devices(ws_url, phone) as (handset,):
                await laptop.join(room)
                await handset.join(room)

                # A message from one device reaches the other device, the sender and the peer.
                ack = await laptop.send_message(room, "from the laptop")
                for device in (laptop, handset, b):
                    got = (await device.wait_type("chat.message", roomId=room))["payload"]
                    assert got["message"]["seq"] == ack["seq"]
                    assert got["message"]["id"] == ack["messageId"]
                    assert got["message"]["senderId"] == alice.id
                    assert got["message"]["body"] == "from the laptop"

                # dnd on one device beats online on the other.
                assert await handset.set_presence("dnd") == {"status": "dnd"}
                await b.wait_type("presence.changed", userId=alice.id, status="dnd")
                await handset.set_presence("online")
                await b.wait_type("presence.changed", userId=alice.id, status="online")

                # away on one device while the other is online: alice stays online.
                await laptop.set_presence("away")
                await handset.send_message(room, "sentinel: after away")
                before = await b.frames_until_message(room, "sentinel: after away")
                assert matching(before, "presence.changed", userId=alice.id, status="away") == []
                await b.join(room)  # joining again answers with a fresh snapshot
                snapshot = await b.wait_type("room.presence", roomId=room)
                assert statuses(snapshot)[alice.id] == "online"
                # The peer heard exactly: online (laptop connected), dnd, online. Connecting
                # the phone and the laptop going away changed nothing it can see.
                seen = matching(b.frames, "presence.changed", userId=alice.id)
                assert [e["payload"]["status"] for e in seen] == ["online", "dnd", "online"]

            # The phone is gone. Alice is not offline: her presence is now what the laptop
            # reports (away), and she is still in the room.
            before = await b.frames_until("presence.changed", userId=alice.id)
            assert b.frames[len(before)]["payload"]["status"] == "away"
            assert matching(before, "member.left") == []

        # The last device closed: the peer sees alice go offline and leave the room.
        offline = await b.wait_type("presence.changed", userId=alice.id)
        assert offline["payload"]["status"] == "offline"
        await b.wait_type("member.left", roomId=room, userId=alice.id)


async def test_dnd_on_any_device_wins_over_online(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)
    phone = await second_device(client, alice)

    async with devices(ws_url, bob.access_token, alice.access_token, phone) as (b, laptop, handset):
        await laptop.set_presence("dnd")
        await b.wait_type("presence.changed", userId=alice.id, status="dnd")
        # The other device reporting away or online does not lift dnd.
        await handset.set_presence("away")
        await handset.set_presence("online")
        # Presence changes are queued before presence.set is acked, so the snapshot
        # answering this later join is the sentinel.
        await b.join(room)
        snapshot = await b.wait_type("room.presence", roomId=room)
        assert statuses(snapshot)[alice.id] == "dnd"
        seen = matching(b.frames, "presence.changed", userId=alice.id)
        assert [e["payload"]["status"] for e in seen] == ["online", "dnd"]


# --- 2. join and leave -----------------------------------------------------------------


async def test_join_acks_then_snapshots_and_members_hear_joins_and_leaves(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob, carol, dave = await accounts(client, 4)
    # carol never connects; dave is connected but does not join the room.
    room = await room_with(client, alice, bob, carol, dave)
    await post_message(client, room, alice, "written before anyone joined")

    async with devices(ws_url, alice.access_token, dave.access_token) as (a, d):
        result = await a.join(room)
        assert result == {"roomId": room, "lastSeq": 1, "replayed": 0}
        # The ack comes first, immediately followed by the presence snapshot.
        acked = position(
            a.frames,
            next(f for f in a.frames if f["type"] == "ack" and f["payload"]["result"] == result),
        )
        assert a.frames[acked + 1]["type"] == "room.presence"
        snapshot = await a.wait_type("room.presence", roomId=room)
        assert statuses(snapshot) == {
            alice.id: "online",
            bob.id: "offline",
            carol.id: "offline",
            dave.id: "online",
        }

        async with devices(ws_url, bob.access_token) as (b,):
            await a.wait_type("presence.changed", userId=bob.id, status="online")
            await b.join(room)
            joined = await a.wait_type("member.joined", roomId=room)
            assert joined["payload"]["userId"] == bob.id
            snapshot = await b.wait_type("room.presence", roomId=room)
            assert statuses(snapshot)[alice.id] == "online"
            assert statuses(snapshot)[bob.id] == "online"

            assert await b.leave(room) == {"roomId": room, "left": True}
            await a.wait_type("member.left", roomId=room, userId=bob.id)

            # After leaving, bob is still a member but this socket is not in the room: a new
            # message becomes a notification for him, never a chat.message.
            sent = await a.send_message(room, "after bob left")
            note = await b.wait_type("notification", roomId=room, messageId=sent["messageId"])
            before = b.frames[: position(b.frames, note)]
            assert matching(before, "chat.message") == []

            # dave is a member but never joined: none of the room's events reached him,
            # only the notification for the new message.
            note = await d.wait_type("notification", roomId=room, messageId=sent["messageId"])
            assert in_room(d.frames[: position(d.frames, note)], room) == []


async def test_non_members_cannot_join_send_or_read_and_hear_nothing(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, mallory = await accounts(client, 2)
    private = await room_with(client, alice)
    public = await room_with(client, alice, kind="public")
    lobby = await room_with(client, alice, mallory)  # carries the sentinel

    async with devices(ws_url, alice.access_token, mallory.access_token) as (a, m):
        await a.join(private)
        await a.join(public)
        await m.join(lobby)
        # A private room mallory is not in does not exist for her; a public one does, but
        # its content needs membership.
        for room, code in ((private, "room_not_found"), (public, "not_a_member")):
            await expect_nack(code, m.join(room))
            await expect_nack(
                code,
                m.request("chat.send", {"roomId": room, "clientMsgId": cid(), "body": "hi"}),
            )
            await expect_nack(code, m.history(room))
            await expect_nack("room_not_joined", m.typing(room))

        for room in (private, public):
            response = await client.get(f"/v1/rooms/{room}/messages", headers=alice.headers)
            assert (await response.json())["messages"] == [], "a refused send was stored"
            await a.typing(room)
            await a.send_message(room, "members only")
            await a.typing(room, active=False)

        await a.send_message(lobby, "sentinel")
        before = await m.frames_until_message(lobby, "sentinel")
        for room in (private, public):
            assert in_room(before, room) == []  # no message, typing, notification, member event
        assert matching(before, "notification") == []


# --- 3. typing -------------------------------------------------------------------------


async def test_typing_is_relayed_to_other_joined_members_and_throttled(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob, carol, mallory = await accounts(client, 4)
    room = await room_with(client, alice, bob, carol)  # carol is a member but never joins
    lobby = await room_with(client, alice, bob, carol, mallory)  # carries the sentinel

    tokens = (alice.access_token, bob.access_token, carol.access_token, mallory.access_token)
    async with devices(ws_url, *tokens) as (a, b, c, m):
        for device in (a, b, c, m):
            await device.join(lobby)
        await a.join(room)
        await b.join(room)
        await expect_nack("room_not_joined", c.typing(room))

        assert await a.typing(room) is None
        await b.wait_type("typing", roomId=room, userId=alice.id, active=True)
        await a.typing(room)  # a refresh inside the throttle window is absorbed
        await a.typing(room, active=False)
        before = await b.frames_until("typing", roomId=room, userId=alice.id, active=False)
        assert len(matching(before, "typing", roomId=room, active=True)) == 1

        # Sending a message ends the sender's typing indicator by itself.
        await a.typing(room)
        await b.wait_type("typing", roomId=room, userId=alice.id, active=True)
        sent = await a.send_message(room, "done typing")
        message = await b.wait_type("chat.message", roomId=room)
        stopped = await b.wait_type("typing", roomId=room, userId=alice.id, active=False)
        assert message["payload"]["message"]["id"] == sent["messageId"]
        assert position(b.frames, message) < position(b.frames, stopped)

        # The typist, a member who did not join, and a non-member heard no typing at all.
        await a.send_message(lobby, "sentinel")
        for device in (a, c, m):
            before = await device.frames_until_message(lobby, "sentinel")
            assert matching(before, "typing") == []


async def test_typing_indicator_expires_when_not_refreshed(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    app_of(client)[GATEWAY].hub.typing.ttl = 0.5
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)

    async with devices(ws_url, alice.access_token, bob.access_token) as (a, b):
        await a.join(room)
        await b.join(room)
        await a.typing(room)
        await b.wait_type("typing", roomId=room, userId=alice.id, active=True)
        # No typing.stop and no message: the indicator times out on the server.
        await b.wait_type("typing", timeout=3.0, roomId=room, userId=alice.id, active=False)


# --- 4. chat ---------------------------------------------------------------------------


async def test_chat_send_is_durable_broadcast_once_and_idempotent(
    client: TestClient[Any, Any], ws_url: str, services: Services
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)

    async with devices(ws_url, alice.access_token, bob.access_token) as (a, b):
        await a.join(room)
        await b.join(room)
        key = cid()
        send = {"roomId": room, "clientMsgId": key, "body": "hello"}
        ack = await a.request("chat.send", send)
        assert ack["seq"] == 1 and ack["duplicate"] is False

        # Acknowledged means stored: another user's REST read already sees it.
        response = await client.get(f"/v1/rooms/{room}/messages", headers=bob.headers)
        assert response.status == 200
        stored = (await response.json())["messages"]
        assert [(m["id"], m["seq"], m["body"]) for m in stored] == [(ack["messageId"], 1, "hello")]

        for device in (a, b):  # the sender is a subscriber too
            got = await device.wait_type("chat.message", roomId=room)
            assert got["payload"]["message"]["id"] == ack["messageId"]
            assert got["payload"]["message"]["seq"] == ack["seq"]
            assert got["payload"]["message"]["clientMsgId"] == key

        # A retry with the same clientMsgId answers with the original message...
        again = await a.request("chat.send", send)
        assert again == {**ack, "duplicate": True}
        count = await services.pool.fetchval(
            "SELECT count(*) FROM messages WHERE sender_id = $1 AND client_msg_id = $2",
            uuid.UUID(alice.id),
            key,
        )
        assert count == 1
        # ...and is not broadcast again (checked on the raw frames: the client would
        # silently drop a repeated seq).
        await a.send_message(room, "sentinel")
        for device in (a, b):
            before = await device.frames_until_message(room, "sentinel")
            assert len(matching(before, "chat.message", roomId=room)) == 1


async def test_edits_and_deletes_are_broadcast(client: TestClient[Any, Any], ws_url: str) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)

    async with devices(ws_url, alice.access_token, bob.access_token) as (a, b):
        await a.join(room)
        await b.join(room)
        sent = await a.send_message(room, "tpyo")
        await b.wait_type("chat.message", roomId=room)

        result = await a.request(
            "chat.edit", {"roomId": room, "messageId": sent["messageId"], "body": "typo"}
        )
        assert result["message"]["body"] == "typo"
        for device in (a, b):
            edited = (await device.wait_type("chat.edited", roomId=room))["payload"]["message"]
            assert edited["id"] == sent["messageId"]
            assert edited["seq"] == sent["seq"]
            assert edited["body"] == "typo"
            assert edited["editedAt"] is not None

        result = await a.request("chat.delete", {"roomId": room, "messageId": sent["messageId"]})
        assert result == {"messageId": sent["messageId"], "seq": sent["seq"]}
        for device in (a, b):
            deleted = await device.wait_type("chat.deleted", roomId=room)
            assert deleted["payload"] == {
                "roomId": room,
                "messageId": sent["messageId"],
                "seq": sent["seq"],
            }


async def test_read_marker_reaches_the_readers_other_devices_only(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)
    phone = await second_device(client, alice)

    async with devices(ws_url, alice.access_token, phone, bob.access_token) as (laptop, handset, b):
        await laptop.join(room)
        await b.join(room)  # the phone stays out of the room: it only keeps a badge
        for n in range(3):
            await b.send_message(room, f"news {n}")

        marker = await laptop.mark_read(room, 2)
        assert marker == {"roomId": room, "seq": 2, "unreadCount": 1}
        synced = await handset.wait_type("chat.read", roomId=room)
        assert synced["payload"] == {"roomId": room, "userId": alice.id, "seq": 2}

        # Bob shares the room, but alice's read position is hers alone.
        await laptop.send_message(room, "sentinel")
        before = await b.frames_until_message(room, "sentinel")
        assert matching(before, "chat.read") == []


# --- 5. notifications ------------------------------------------------------------------


async def test_members_outside_the_room_get_unread_and_mention_notifications(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob, mallory = await accounts(client, 3)
    room = await room_with(client, alice, bob)
    lobby = await room_with(client, alice, mallory)  # carries mallory's sentinel
    phone = await second_device(client, alice)

    tokens = (alice.access_token, phone, bob.access_token, mallory.access_token)
    async with devices(ws_url, *tokens) as (a, handset, b, m):
        await a.join(room)
        await m.join(lobby)

        first = await a.send_message(room, "hello")
        note = await b.wait_type("notification", roomId=room)
        assert note["payload"] == {
            "roomId": room,
            "kind": "unread",
            "unreadCount": 1,
            "seq": first["seq"],
            "messageId": first["messageId"],
        }

        second = await a.send_message(room, f"@{bob.username} can you look?")
        note = await b.wait_type("notification", roomId=room)
        assert note["payload"] == {
            "roomId": room,
            "kind": "mention",
            "unreadCount": 2,
            "seq": second["seq"],
            "messageId": second["messageId"],
        }

        # The count is measured from the member's read marker.
        await b.mark_read(room, second["seq"])
        third = await a.send_message(room, "one more")
        note = await b.wait_type("notification", roomId=room)
        assert note["payload"]["kind"] == "unread"
        assert note["payload"]["unreadCount"] == 1
        assert note["payload"]["seq"] == third["seq"]

        # The sender's own other device is never notified of the sender's messages; the
        # first notification it gets is for bob's reply. Bob gets none for his own reply.
        reply = await b.send_message(room, "on it")
        note = await handset.wait_type("notification", roomId=room)
        assert note["payload"]["messageId"] == reply["messageId"]
        assert note["payload"]["kind"] == "unread"
        later = await a.send_message(room, "thanks")
        note = await b.wait_type("notification", roomId=room, messageId=later["messageId"])
        before = b.frames[: position(b.frames, note)]
        assert matching(before, "notification", messageId=reply["messageId"]) == []

        # A connected non-member gets no notification for the room.
        await a.send_message(lobby, "sentinel")
        before = await m.frames_until_message(lobby, "sentinel")
        assert matching(before, "notification") == []


async def test_a_mention_at_the_end_of_a_sentence_is_a_mention(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)

    async with devices(ws_url, alice.access_token, bob.access_token) as (a, b):
        await a.join(room)
        sent = await a.send_message(room, f"Thanks @{bob.username}.")
        note = await b.wait_type("notification", roomId=room, messageId=sent["messageId"])
        assert note["payload"]["kind"] == "mention"


# --- 6. membership changes -------------------------------------------------------------


async def test_member_removed_over_rest_stops_receiving_the_room_at_once(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)
    lobby = await room_with(client, alice, bob)  # carries the sentinel

    async with devices(ws_url, alice.access_token, bob.access_token) as (a, b):
        for device in (a, b):
            await device.join(room)
            await device.join(lobby)
        await a.send_message(room, "still here?")
        await b.wait_type("chat.message", roomId=room)

        response = await client.delete(f"/v1/rooms/{room}/members/{bob.id}", headers=alice.headers)
        assert response.status == 204, await response.text()
        told = await b.wait_type("member.left", roomId=room, userId=bob.id)
        await a.wait_type("member.left", roomId=room, userId=bob.id)

        await a.typing(room)
        await a.send_message(room, "after removal")
        await a.send_message(lobby, "sentinel")
        before = await b.frames_until_message(lobby, "sentinel")
        assert in_room(before[position(before, told) + 1 :], room) == []

        await expect_nack("room_not_found", b.history(room))
        await expect_nack("room_not_joined", b.typing(room))


# --- 7. REST and WebSocket share one stream --------------------------------------------


async def test_messages_posted_over_rest_reach_websocket_subscribers(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await accounts(client, 2)
    room = await room_with(client, alice, bob)

    async with devices(ws_url, alice.access_token, bob.access_token) as (a, b):
        await a.join(room)
        await b.join(room)
        posted = await post_message(client, room, alice, "sent from the web form")
        for device in (a, b):
            got = (await device.wait_type("chat.message", roomId=room))["payload"]["message"]
            assert got["id"] == posted["id"]
            assert got["seq"] == posted["seq"]
            assert got["body"] == "sent from the web form"
            assert got["senderId"] == alice.id


# --- 8. rate limit ---------------------------------------------------------------------


async def test_chat_send_over_the_burst_is_rate_limited(services: Services) -> None:
    limited = await make_client(services, chat_send_burst=3, chat_send_per_second=0.5)
    try:
        url = f"ws://127.0.0.1:{limited.server.port}/v1/ws"
        alice = await register(limited)
        room = await room_with(limited, alice)
        async with devices(url, alice.access_token) as (a,):
            for n in range(1, 4):
                ack = await a.request(
                    "chat.send", {"roomId": room, "clientMsgId": cid(), "body": f"quick {n}"}
                )
                assert ack["seq"] == n
            refused = await expect_nack(
                "rate_limited",
                a.request("chat.send", {"roomId": room, "clientMsgId": cid(), "body": "too fast"}),
            )
            assert refused.retryable is True
            assert refused.retry_after_ms is not None and 0 < refused.retry_after_ms <= 2000
        response = await limited.get(f"/v1/rooms/{room}/messages", headers=alice.headers)
        assert [m["body"] for m in (await response.json())["messages"]] == [
            "quick 1",
            "quick 2",
            "quick 3",
        ]
    finally:
        await limited.close()


async def test_room_changes_reach_members_live(client: TestClient[Any, Any], ws_url: str) -> None:
    owner, member = await register(client), await register(client)
    room = await create_room(client, owner, name="before")
    await add_member(client, room, owner, member)
    async with BoltorezkaClient(ws_url, member.access_token) as m:
        await m.join(room)
        # Renamed over REST: the member's socket hears it without polling.
        response = await client.patch(
            f"/v1/rooms/{room}",
            json={"name": "after", "topic": "new topic"},
            headers=owner.headers,
        )
        assert response.status == 200
        updated = await m.wait_type("room.updated", roomId=room)
        assert updated["payload"] == {
            "roomId": room,
            "kind": "private",
            "name": "after",
            "topic": "new topic",
            "archived": False,
        }
        await client.post(f"/v1/rooms/{room}/archive", headers=owner.headers)
        archived = await m.wait_type("room.updated", roomId=room, archived=True)
        assert archived["payload"]["name"] == "after"

        # Deleted: the member is told, and the room's live view ends on the connection.
        await client.post(f"/v1/rooms/{room}/unarchive", headers=owner.headers)
        response = await client.delete(f"/v1/rooms/{room}", headers=owner.headers)
        assert response.status == 204
        await m.wait_type("room.deleted", roomId=room)
        with pytest.raises(NackError) as refused:
            await m.typing(room)
        assert refused.value.code == "room_not_joined"

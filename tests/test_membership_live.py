"""Rooms made while a user's sockets are open reach those sockets at once: the creator of a
room gets its calls, and both sides of a new direct room get its first message's
notification, with no reconnect and no room.join."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient

from tests.helpers import add_member, api_call, create_room, register


async def test_the_creator_of_a_new_room_sees_its_calls(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await register(client), await register(client)
    async with BoltorezkaClient(ws_url, alice.access_token) as a:
        room = await create_room(client, alice)  # after alice's socket authenticated
        await add_member(client, room, alice, bob)
        async with BoltorezkaClient(ws_url, bob.access_token) as b:
            started = await b.request("call.start", {"roomId": room, "mode": "p2p"})
            ringing = await a.wait_type(
                "call.state", callId=started["call"]["callId"], state="ringing", timeout=10
            )
            assert ringing["payload"]["roomId"] == room


async def test_both_sides_of_a_new_direct_room_are_notified(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice, bob = await register(client), await register(client)
    async with BoltorezkaClient(ws_url, alice.access_token) as a:
        status, data = await api_call(client, "POST", "/v1/rooms/direct", bob, {"userId": alice.id})
        assert status in (200, 201), data
        room = data["room"]["id"] if "room" in data else data["id"]
        async with BoltorezkaClient(ws_url, bob.access_token) as b:
            await b.send_message(room, "hi alice")
            note = await a.wait_type("notification", roomId=room, timeout=10)
            assert note["payload"]["unreadCount"] == 1

"""Two users talking through the realtime plane, driven by the scripted client."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient

from tests.helpers import create_room, register


async def test_two_clients_chat_through_a_room(client: TestClient[Any, Any], ws_url: str) -> None:
    alice = await register(client)
    bob = await register(client)
    room = await create_room(client, alice, kind="public")
    response = await client.post(f"/v1/rooms/{room}/join", headers=bob.headers)
    assert response.status == 200

    async with (
        BoltorezkaClient(ws_url, alice.access_token) as a,
        BoltorezkaClient(ws_url, bob.access_token) as b,
    ):
        assert a.capabilities["protocolVersions"] == [1]
        await a.join(room)
        await b.join(room)
        joined = await a.wait_type("member.joined", roomId=room, userId=bob.id)
        assert joined["payload"]["userId"] == bob.id

        ack = await a.send_message(room, "hello bob", client_msg_id="m-1")
        assert ack["seq"] == 1
        received = await b.wait_type("chat.message", roomId=room)
        assert received["payload"]["message"]["body"] == "hello bob"
        assert received["payload"]["message"]["seq"] == 1

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import create_room, post_message, register


async def test_register_create_room_post_and_read_history(client: TestClient[Any, Any]) -> None:
    alice = await register(client)
    room_id = await create_room(client, alice, kind="public", name="general")
    posted = await post_message(client, room_id, alice, "hello world")
    assert posted["seq"] == 1
    response = await client.get(f"/v1/rooms/{room_id}/messages", headers=alice.headers)
    assert response.status == 200
    data = await response.json()
    assert [m["body"] for m in data["messages"]] == ["hello world"]

"""Small helpers that make REST tests read like what a user does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

_counter = itertools.count(1)
PASSWORD = "correct horse battery"


@dataclass
class Account:
    id: str
    username: str
    access_token: str
    refresh_token: str
    session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register(client: TestClient[Any, Any], username: str | None = None) -> Account:
    name = username or f"user{next(_counter)}"
    response = await client.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
    assert response.status == 201, await response.text()
    data = await response.json()
    return Account(
        id=data["user"]["id"],
        username=name,
        access_token=data["accessToken"],
        refresh_token=data["refreshToken"],
        session_id=data["sessionId"],
    )


async def create_room(
    client: TestClient[Any, Any], owner: Account, kind: str = "private", name: str = "room"
) -> str:
    response = await client.post(
        "/v1/rooms", json={"name": name, "kind": kind}, headers=owner.headers
    )
    assert response.status == 201, await response.text()
    room_id: str = (await response.json())["room"]["id"]
    return room_id


async def add_member(
    client: TestClient[Any, Any], room_id: str, by: Account, user: Account, role: str = "member"
) -> None:
    response = await client.post(
        f"/v1/rooms/{room_id}/members", json={"userId": user.id, "role": role}, headers=by.headers
    )
    assert response.status == 201, await response.text()


async def post_message(
    client: TestClient[Any, Any],
    room_id: str,
    by: Account,
    body: str,
    client_msg_id: str | None = None,
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/rooms/{room_id}/messages",
        json={"clientMsgId": client_msg_id or f"c{next(_counter)}", "body": body},
        headers=by.headers,
    )
    assert response.status in (200, 201), await response.text()
    data: dict[str, Any] = await response.json()
    return data

"""``boltorezka admin bulk-users``: load-test accounts, their sessions, tokens and rooms.

Signing up through the API pays for one argon2 hash per account and is rate-limited per
address, so 1,000 accounts would take minutes. These accounts are made in a handful of
multi-row statements instead, all sharing ONE argon2 hash (of ``--password``, or of a
random password nobody keeps, so they cannot sign in with a password at all). They are
load-test accounts: never create them in a database real people use.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from boltorezka.auth import passwords
from boltorezka.auth.tokens import TokenCodec, hash_refresh_token, new_refresh_token
from boltorezka.context import RequestInfo
from boltorezka.store import Conn, audit, bulk

FORMAT = "boltorezka-load-accounts/1"
DEVICE_NAME = "loadtest"
_MAX_USERNAME = 32  # users_username_format in the schema


class BulkError(ValueError):
    """The request cannot be satisfied (bad sizes, taken names); nothing was written."""


@dataclass(frozen=True, slots=True)
class BulkRequest:
    count: int
    prefix: str = "load-"
    rooms: int = 0
    room_size: int = 0
    password: str | None = None


def plan_rooms(count: int, rooms: int, room_size: int) -> list[list[int]]:
    """Room ``i`` holds the ``room_size`` users after ``i * room_size``, wrapping around.

    With ``rooms * room_size == count`` every user is in exactly one room; with more seats
    than users, users belong to several rooms.
    """
    if rooms < 0 or room_size < 0:
        raise BulkError("--rooms and --room-size must not be negative")
    if rooms and not 1 <= room_size <= count:
        raise BulkError("--room-size must be between 1 and --count when --rooms is set")
    return [[(i * room_size + j) % count for j in range(room_size)] for i in range(rooms)]


async def create(
    conn: Conn, codec: TokenCodec, request: BulkRequest, *, refresh_ttl_seconds: int
) -> dict[str, Any]:
    """Create everything in one transaction and return the tokens document."""
    if request.count < 1:
        raise BulkError("--count must be at least 1")
    seats = plan_rooms(request.count, request.rooms, request.room_size)
    # A short random tag keeps reruns with the same prefix from colliding.
    tag = secrets.token_hex(3)
    names = [f"{request.prefix}{tag}-{i}" for i in range(request.count)]
    if len(names[-1]) > _MAX_USERNAME:
        raise BulkError(f"usernames would exceed {_MAX_USERNAME} characters: shorten --prefix")
    password_hash = await passwords.hash_password(request.password or secrets.token_urlsafe(24))
    refresh_expiry = datetime.now(UTC) + timedelta(seconds=refresh_ttl_seconds)
    async with conn.transaction():
        created = await bulk.insert_users(conn, names, password_hash)
        if len(created) != len(names):
            raise BulkError("some usernames are taken: choose another --prefix")
        order = {name: index for index, name in enumerate(names)}
        created.sort(key=lambda pair: order[pair[1]])
        user_ids = [user_id for user_id, _ in created]
        session_of = await bulk.insert_sessions(
            conn,
            user_ids,
            device_name=DEVICE_NAME,
            user_agent="boltorezka admin bulk-users",
            ip="",
            expires_at=refresh_expiry,
        )
        refresh_tokens = [new_refresh_token() for _ in user_ids]
        await bulk.insert_refresh_tokens(
            conn,
            [hash_refresh_token(token) for token in refresh_tokens],
            [session_of[user_id] for user_id in user_ids],
        )
        room_names = [f"{request.prefix}{tag}-room-{i}" for i in range(len(seats))]
        room_ids = await bulk.insert_rooms(
            conn, "private", room_names, [user_ids[members[0]] for members in seats]
        )
        member_rooms: list[uuid.UUID] = []
        member_users: list[uuid.UUID] = []
        roles: list[str] = []
        for room_id, members in zip(room_ids, seats, strict=True):
            for position, index in enumerate(dict.fromkeys(members)):
                member_rooms.append(room_id)
                member_users.append(user_ids[index])
                roles.append("owner" if position == 0 else "member")
        await bulk.insert_members(conn, member_rooms, member_users, roles)
        await audit.record(
            conn,
            "admin.bulk_users",
            RequestInfo(user_agent="boltorezka admin bulk-users"),
            actor_id=None,
            target_type="user",
            details={
                "count": request.count,
                "prefix": f"{request.prefix}{tag}-",
                "rooms": len(room_ids),
                "roomSize": request.room_size,
                "purpose": "load test",
            },
        )
    users = []
    for (user_id, username), refresh in zip(created, refresh_tokens, strict=True):
        access, expires_at = codec.issue(user_id, session_of[user_id])
        users.append(
            {
                "id": str(user_id),
                "username": username,
                "sessionId": str(session_of[user_id]),
                "accessToken": access,
                "accessTokenExpiresAt": expires_at,
                "refreshToken": refresh,
                "refreshTokenExpiresAt": int(refresh_expiry.timestamp()),
            }
        )
    return {
        "format": FORMAT,
        "note": "load-test accounts made by `boltorezka admin bulk-users`; they share one "
        "password hash. Keep this file private: it holds live tokens.",
        "createdAt": int(time.time()),
        "prefix": f"{request.prefix}{tag}-",
        "accessTokenTtl": codec.ttl_seconds,
        "users": users,
        "rooms": [
            {
                "id": str(room_id),
                "name": name,
                "members": [users[index]["id"] for index in dict.fromkeys(members)],
            }
            for room_id, name, members in zip(room_ids, room_names, seats, strict=True)
        ],
    }


def write_private(path: Path, document: dict[str, Any]) -> None:
    """Write atomically, readable by the owner only: the file holds live tokens."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
    os.replace(tmp, path)

"""Rows the store returns; msgspec structs that serialise straight to the API's camelCase."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# Every timestamp is timezone-aware (timestamptz) and goes out as RFC 3339.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
RoomKind = Literal["public", "private", "direct"]
Role = Literal["owner", "admin", "member"]


class Record(msgspec.Struct, rename="camel", kw_only=True):
    @classmethod
    def from_row(cls, row: Any) -> Any:
        return cls(**{name: row[name] for name in cls.__struct_fields__})


class User(Record):
    id: uuid.UUID
    username: str
    display_name: str
    bio: str
    avatar_url: str | None
    created_at: Instant


class DeviceSession(Record):
    id: uuid.UUID
    user_id: uuid.UUID
    device_name: str
    user_agent: str
    ip: str
    created_at: Instant
    last_used_at: Instant
    expires_at: Instant
    revoked_at: Instant | None


class Room(Record):
    id: uuid.UUID
    kind: RoomKind
    name: str
    topic: str
    created_by: uuid.UUID | None
    last_seq: int
    created_at: Instant
    updated_at: Instant
    archived_at: Instant | None


class Member(Record):
    room_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    joined_at: Instant
    last_read_seq: int
    username: str
    display_name: str


class Message(Record):
    id: uuid.UUID
    room_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    client_msg_id: str
    body: str
    reply_to: uuid.UUID | None
    created_at: Instant
    edited_at: Instant | None
    deleted_at: Instant | None

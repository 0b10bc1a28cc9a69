"""Rows the store returns; msgspec structs that serialise straight to the API's camelCase."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


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
    created_at: datetime


class DeviceSession(Record):
    id: uuid.UUID
    user_id: uuid.UUID
    device_name: str
    user_agent: str
    ip: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class Room(Record):
    id: uuid.UUID
    kind: str
    name: str
    topic: str
    created_by: uuid.UUID | None
    last_seq: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class Member(Record):
    room_id: uuid.UUID
    user_id: uuid.UUID
    role: str
    joined_at: datetime
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
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None

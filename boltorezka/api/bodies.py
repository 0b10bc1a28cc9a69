"""Request bodies for the REST API, validated by msgspec with explicit limits."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

Username = Annotated[str, msgspec.Meta(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
DeviceName = Annotated[str, msgspec.Meta(max_length=64)]
RoomName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Topic = Annotated[str, msgspec.Meta(max_length=500)]
Bio = Annotated[str, msgspec.Meta(max_length=500)]
Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://\S+$")]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Body = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
RefreshToken = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Seq = Annotated[int, msgspec.Meta(ge=0)]


class _Body(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class RegisterBody(_Body):
    username: Username
    password: Password
    display_name: DisplayName | None = None
    device_name: DeviceName = ""


class LoginBody(_Body):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    device_name: DeviceName = ""


class RefreshBody(_Body):
    refresh_token: RefreshToken


class ProfileBody(_Body):
    display_name: DisplayName | None = None
    bio: Bio | None = None
    # Explicit null clears the avatar; absence leaves it as it is.
    avatar_url: Url | msgspec.UnsetType | None = msgspec.UNSET


class CreateRoomBody(_Body):
    name: RoomName
    kind: Literal["public", "private"] = "private"
    topic: Topic = ""


class DirectRoomBody(_Body):
    user_id: uuid.UUID


class UpdateRoomBody(_Body):
    name: RoomName | None = None
    topic: Topic | None = None


class AddMemberBody(_Body):
    user_id: uuid.UUID
    role: Literal["admin", "member"] = "member"


class ChangeRoleBody(_Body):
    role: Literal["admin", "member"]


class TransferBody(_Body):
    user_id: uuid.UUID


class PostMessageBody(_Body):
    client_msg_id: ClientMsgId
    body: Body
    reply_to: uuid.UUID | None = None


class EditMessageBody(_Body):
    body: Body


class ReadMarkerBody(_Body):
    seq: Seq

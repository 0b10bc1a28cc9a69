"""Request bodies for the REST API, validated by msgspec with explicit limits.

Every limit here is also the published schema (tools/gen_openapi.py renders these structs),
so a rule the server enforces must be expressible as a JSON Schema keyword, and each pattern
must mean the same to Python's ``re`` (what msgspec runs) and to ECMA-262 (what JSON Schema
validators and clients run): explicit character classes, no ``\\s`` or ``\\w`` (their sets
differ), and ``(?!\\n)$`` at the end, because Python's ``$`` also matches before a final
newline.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from boltorezka.errors import InvalidInput

# Text columns cannot hold U+0000, so decode_body refuses it in every string of a body; the
# schema says so too, or a schema-valid body could still be answered 422.
NO_NUL = r"^[^\u0000]*$"
_END = r"(?!\n)$"


def _text(min_length: int = 0, *, max_length: int) -> msgspec.Meta:
    if min_length:
        return msgspec.Meta(min_length=min_length, max_length=max_length, pattern=NO_NUL)
    return msgspec.Meta(max_length=max_length, pattern=NO_NUL)


# An absolute http(s) URL in RFC 3986 form, ASCII only: a host name (no user info, no IP-literal
# brackets), an optional port in range, then path and query characters, and a fragment.
# Everything it matches is a valid `uri` and parses with urllib.parse.urlsplit, port included;
# the server checks that as well (ProfileBody), so the schema and the server accept the same
# values. It is flat on purpose: nested repetitions make schema-driven generators (the fuzz
# tests) many times slower.
_URL_CHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = (
    r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
    rf"(?::{_PORT})?(?:[/?]{_URL_CHAR}*)?(?:#{_URL_CHAR}*)?{_END}"
)
URL_MAX_LENGTH = 2048

USERNAME_PATTERN = rf"^[A-Za-z0-9_.-]+{_END}"
USERNAME_MIN, USERNAME_MAX = 3, 32
Username = Annotated[
    str, msgspec.Meta(min_length=USERNAME_MIN, max_length=USERNAME_MAX, pattern=USERNAME_PATTERN)
]
Password = Annotated[str, _text(8, max_length=256)]
DisplayName = Annotated[str, _text(1, max_length=64)]
DeviceName = Annotated[str, _text(max_length=64)]
RoomName = Annotated[str, _text(1, max_length=100)]
Topic = Annotated[str, _text(max_length=500)]
Bio = Annotated[str, _text(max_length=500)]
Url = Annotated[
    str,
    msgspec.Meta(
        max_length=URL_MAX_LENGTH,
        pattern=URL_PATTERN,
        description="An absolute `http` or `https` URL (RFC 3986, ASCII; no user info).",
        extra_json_schema={"format": "uri"},
    ),
]
ClientMsgId = Annotated[str, _text(1, max_length=64)]
Body = Annotated[str, _text(1, max_length=4000)]
RefreshToken = Annotated[str, _text(1, max_length=512)]
# JSON has one number type: 2.0 is the integer 2, and JSON Schema's "integer" says so, so a
# whole number written with a fraction or an exponent is a seq too (handlers take its int()).
Seq = Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0, multiple_of=1)]


class FieldInvalid(ValueError):
    """A ``__post_init__`` check that failed on one field, named as it is on the wire.

    msgspec turns any ValueError into a ValidationError whose path stops at the struct, so
    the field rides on the exception itself (msgspec keeps it as ``__cause__``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_url(value: str) -> None:
    """Refuse a URL that urllib cannot take apart (ValueError, which msgspec reports as 422).

    URL_PATTERN already excludes everything found to fail here (brackets, non-ASCII netlocs,
    ports out of range); this keeps a value clients would choke on from ever being stored,
    should the pattern and urllib disagree after all.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldInvalid("avatarUrl", "avatarUrl must be an absolute http or https URL")
    try:
        _ = parts.port
    except ValueError:
        raise FieldInvalid("avatarUrl", "avatarUrl has a port out of range") from None


# msgspec ends a message with the JSON path of the value at fault (absent at the top level);
# the missing or unknown key of an object is named in the message itself.
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_KEY_IN_MESSAGE = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<key>.*)`$")
# The field name can come from the client (an unknown key): keep the problem small.
_MAX_FIELD = 200


def body_field(error: msgspec.ValidationError) -> str | None:
    """The offending field of a body msgspec refused, as the WebSocket nacks name one:
    the wire (camelCase) name, ``outer.inner`` and ``list[0]`` below the top level; None
    when the body as a whole is wrong (not an object, say)."""
    message = str(error)
    found = _AT_PATH.search(message)
    path = found["path"] if found else ""
    head = message[: found.start()] if found else message
    cause = error.__cause__
    if isinstance(cause, FieldInvalid):
        key: str | None = cause.field
    else:
        named = _KEY_IN_MESSAGE.match(head)
        key = named["key"] if named else None
    if key is not None:
        path = f"{path}.{key}"
    field = path.removeprefix(".")
    return field[:_MAX_FIELD] or None


def invalid_body(error: msgspec.ValidationError) -> InvalidInput:
    """The 422 for a body msgspec refused, naming the field when there is one."""
    field = body_field(error)
    return InvalidInput(str(error)) if field is None else InvalidInput(str(error), field=field)


def nul_field(value: Any, path: str = "") -> str | None:
    """Where in a decoded body (``msgspec.to_builtins``, so wire names) a string holds
    U+0000, named as :func:`body_field` names fields; None when nowhere."""
    if isinstance(value, str):
        return (path.removeprefix(".") or None) if "\x00" in value else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"{path}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    for inner, item in items:
        found = nul_field(item, inner)
        if found is not None:
            return found
    return None


class _Body(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class RegisterBody(_Body):
    username: Username
    password: Password
    display_name: DisplayName | None = None
    device_name: DeviceName = ""


class LoginBody(_Body):
    username: Annotated[str, _text(1, max_length=64)]
    password: Annotated[str, _text(1, max_length=256)]
    device_name: DeviceName = ""


class RefreshBody(_Body):
    refresh_token: RefreshToken


class ProfileBody(_Body):
    display_name: DisplayName | None = None
    bio: Bio | None = None
    # Explicit null clears the avatar; absence leaves it as it is.
    avatar_url: Url | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        if isinstance(self.avatar_url, str):
            check_url(self.avatar_url)


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

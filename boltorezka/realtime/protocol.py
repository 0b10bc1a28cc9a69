"""Realtime envelope codec: message structs plus pure encode/decode functions.

Every WebSocket text frame carries one JSON envelope::

    {"v": 1, "type": "room.join", "requestId": "r-17", "payload": {...}}

Client→server messages form the tagged union :data:`ClientMessage`; every one of them
carries a `requestId` (1..64 code points) that the server echoes in the `ack` or
`nack` answering it. Server→client messages form :data:`ServerMessage`; only `ack` and
`nack` carry a `requestId`.

This module does no I/O and imports nothing from the transport, so the gateway, the Python
client and the language-neutral test vectors in `protocol/vectors` all share one
definition. The JSON Schemas in `protocol/schemas` are generated from these structs by
`tools/gen_protocol_schemas.py`; struct docstrings and `Meta` descriptions become schema
descriptions, so edit them with client developers in mind and regenerate.

Strictness differs on purpose: client payloads forbid unknown fields (a typo must fail
loudly, not be silently dropped), while server structs accept them so that older clients keep
working when the server adds fields. Unknown *envelope* fields are ignored in both
directions, which leaves room for transport-level additions such as tracing headers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeAlias, get_args, get_type_hints

import msgspec
import msgspec.inspect
from msgspec import Meta

from boltorezka.text import NUL_ESCAPE, has_nul

__all__ = [
    "CLIENT_TYPES",
    "ERROR_CODES",
    "FRAME_TOO_LARGE",
    "MALFORMED_JSON",
    "MAX_SAFE_INTEGER",
    "MISSING_REQUEST_ID",
    "PROTOCOL_VERSION",
    "SERVER_TYPES",
    "SUPPORTED_VERSIONS",
    "UNKNOWN_TYPE",
    "UNSUPPORTED_VERSION",
    "VALIDATION_FAILED",
    "Ack",
    "AckPayload",
    "Auth",
    "AuthExpiring",
    "AuthExpiringPayload",
    "AuthRefresh",
    "CallEnd",
    "CallJoin",
    "CallLeave",
    "CallParticipantInfo",
    "CallPayload",
    "CallStart",
    "CallStartPayload",
    "CallStateChanged",
    "CallStatePayload",
    "CallTelemetry",
    "CallTelemetryPayload",
    "CapabilitiesPayload",
    "ChatDelete",
    "ChatDeletePayload",
    "ChatDeleted",
    "ChatDeletedPayload",
    "ChatEdit",
    "ChatEditPayload",
    "ChatEdited",
    "ChatHistory",
    "ChatHistoryPayload",
    "ChatMessage",
    "ChatMessagePayload",
    "ChatRead",
    "ChatReadPayload",
    "ChatReadReceipt",
    "ChatReadReceiptPayload",
    "ChatSend",
    "ChatSendPayload",
    "ClientMessage",
    "DrainingPayload",
    "ErrorPayload",
    "IceCandidate",
    "Limits",
    "MemberJoined",
    "MemberLeft",
    "MemberPayload",
    "MessageData",
    "Nack",
    "NackPayload",
    "Notification",
    "NotificationPayload",
    "Ping",
    "PingPayload",
    "Pong",
    "PongPayload",
    "PresenceChanged",
    "PresenceChangedPayload",
    "PresenceMember",
    "PresenceSet",
    "PresenceSetPayload",
    "ProtocolError",
    "RelayedIcePayload",
    "RelayedSdpPayload",
    "RoomDeleted",
    "RoomDeletedPayload",
    "RoomInfo",
    "RoomJoin",
    "RoomJoinPayload",
    "RoomLeave",
    "RoomPayload",
    "RoomPresence",
    "RoomPresencePayload",
    "RoomUpdated",
    "RtcAnswer",
    "RtcAnswerRelayed",
    "RtcIce",
    "RtcIcePayload",
    "RtcIceRelayed",
    "RtcOffer",
    "RtcOfferRelayed",
    "RtcSdpPayload",
    "ServerCapabilities",
    "ServerDraining",
    "ServerError",
    "ServerMessage",
    "TokenPayload",
    "TypingIndicator",
    "TypingPayload",
    "TypingStart",
    "TypingStop",
    "ack",
    "decode_client",
    "decode_server",
    "encode",
    "message_type",
    "nack",
]

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final[tuple[int, ...]] = (1,)

# Integers above 2**53 - 1 lose precision in JavaScript clients, and the database stores
# sequence numbers as bigint; bounding them here keeps both failures out of the handlers.
MAX_SAFE_INTEGER: Final = 2**53 - 1

# --- error codes -----------------------------------------------------------------------
# Stable machine codes carried in `nack.payload.code`. Clients switch on them, so they are
# never renamed; `message` is for humans and may change at any time.
FRAME_TOO_LARGE: Final = "frame_too_large"
MALFORMED_JSON: Final = "malformed_json"
_TOO_DEEP = "frame nests too deeply"
UNSUPPORTED_VERSION: Final = "unsupported_version"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_REQUEST_ID: Final = "missing_request_id"
VALIDATION_FAILED: Final = "validation_failed"

ERROR_CODES: Final[Mapping[str, str]] = {
    FRAME_TOO_LARGE: "The frame is larger than maxFrameBytes (counted in UTF-8 bytes); "
    "it was not parsed, so the nack has no requestId.",
    MALFORMED_JSON: "The frame is not valid UTF-8 JSON, or its top level is not an object.",
    UNSUPPORTED_VERSION: "`v` is missing, not an integer, or not a supported protocol version.",
    UNKNOWN_TYPE: "`type` is missing, not a string, or not a client→server message type.",
    MISSING_REQUEST_ID: "`requestId` is absent or null on a client→server message.",
    VALIDATION_FAILED: "A field violates its type or constraints (including a `requestId` "
    "that is not a string of 1..64 characters); the message names the field.",
}

# Error messages quote msgspec's text, which can include client-chosen field names; the cap
# keeps a nack small no matter what the client sent.
_MAX_ERROR_MESSAGE = 200
_REQUEST_ID_MAX = 64
_NOT_UTF8 = "frame is not valid UTF-8"

# --- constrained field types -----------------------------------------------------------
# Lengths are counted in Unicode code points, not UTF-16 units or grapheme clusters.

Version = Annotated[
    int,
    Meta(
        ge=1,
        description="Envelope protocol version; the server lists those it accepts in "
        "server.capabilities.protocolVersions.",
    ),
]
RequestId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=_REQUEST_ID_MAX,
        description="Client-chosen id echoed in the ack/nack that answers this request.",
    ),
]
Token = Annotated[str, Meta(min_length=1, max_length=4096, description="Access token (JWT).")]
Seq = Annotated[
    int,
    Meta(ge=0, le=MAX_SAFE_INTEGER, description="Per-room message sequence number."),
]
Body = Annotated[
    str, Meta(min_length=1, max_length=4000, description="Message text, 1..4000 code points.")
]
ClientMsgId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        description="Client-generated idempotency key; resending the same one never "
        "creates a second message.",
    ),
]
HistoryLimit = Annotated[int, Meta(ge=1, le=200, description="Maximum messages to return.")]
Timestamp = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]
NonNegative = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]
# Timezone-aware so the wire form is always RFC 3339 with an offset, never a naive local time.
Instant = Annotated[datetime, Meta(tz=True, description="RFC 3339 timestamp.")]

PresenceStatus = Literal["online", "away", "dnd"]
ObservedPresence = Literal["online", "away", "dnd", "offline"]
NotificationKind = Literal["unread", "mention"]


# --- client→server ---------------------------------------------------------------------


class _ClientPayload(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True
):
    """Base of client payloads: unknown fields are rejected, absent optionals omitted."""


class _ClientEnvelope(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    """Base of client→server envelopes; `v` is required so a client states its version."""

    v: Version
    request_id: RequestId


class TokenPayload(_ClientPayload):
    """Credentials for `auth` and `auth.refresh`."""

    token: Token


class PingPayload(_ClientPayload):
    """Optional client timestamp, echoed verbatim in the ack for round-trip measurement."""

    ts: Timestamp | None = None


class RoomJoinPayload(_ClientPayload):
    """Room to subscribe to; `lastSeq` resumes delivery after that sequence number."""

    room_id: uuid.UUID
    last_seq: Seq | None = None


class RoomPayload(_ClientPayload):
    """A request that only names a room."""

    room_id: uuid.UUID


class PresenceSetPayload(_ClientPayload):
    """The presence the user chooses; `offline` is derived by the server, never set."""

    status: PresenceStatus


class ChatSendPayload(_ClientPayload):
    """A new message; `replyTo` is the id of the message being answered."""

    room_id: uuid.UUID
    client_msg_id: ClientMsgId
    body: Body
    reply_to: uuid.UUID | None = None


class ChatEditPayload(_ClientPayload):
    """Replacement body for one of the sender's own messages."""

    room_id: uuid.UUID
    message_id: uuid.UUID
    body: Body


class ChatDeletePayload(_ClientPayload):
    """The message to delete."""

    room_id: uuid.UUID
    message_id: uuid.UUID


class ChatReadPayload(_ClientPayload):
    """Read position: every message with `seq` at or below this one has been read."""

    room_id: uuid.UUID
    seq: Seq


class ChatHistoryPayload(_ClientPayload):
    """History page bounds (exclusive); without `limit` the server picks its default."""

    room_id: uuid.UUID
    before: Seq | None = None
    after: Seq | None = None
    limit: HistoryLimit | None = None


class Auth(_ClientEnvelope, tag="auth", kw_only=True):
    """Authenticate the connection with an access token.

    Must be the first request (only `ping` may come before it), within
    `BOLTOREZKA_WS_AUTH_TIMEOUT_SECONDS` of connecting or the server closes with 4002. A
    failed `auth` on a connection that is not yet authenticated is followed at once by a
    close: 4001 (token or account rejected), 1013 (retryable failure) or 4030
    (`too_many_connections`)."""

    payload: TokenPayload


class AuthRefresh(_ClientEnvelope, tag="auth.refresh", kw_only=True):
    """Swap in a fresh access token without reconnecting.

    The token must be for the same user and device session; send it after
    `auth.expiring`."""

    payload: TokenPayload


class Ping(_ClientEnvelope, tag="ping", kw_only=True):
    """Round-trip probe; answered by an ack carrying the server time.

    Application-level, and allowed before `auth`. The ack's result is
    `{"ts": <echoed ts or null>, "serverTime": <server clock, Unix ms>}`: the server
    never sends `pong`."""

    payload: PingPayload = msgspec.field(default_factory=PingPayload)


class RoomJoin(_ClientEnvelope, tag="room.join", kw_only=True):
    """Subscribe to a room's events, optionally resuming after `lastSeq`.

    With `lastSeq`, the server first replays every `chat.message` with a larger seq, then
    sends the ack, then `room.presence`, then live events."""

    payload: RoomJoinPayload


class RoomLeave(_ClientEnvelope, tag="room.leave", kw_only=True):
    """Unsubscribe from a room's events (membership is unchanged)."""

    payload: RoomPayload


class PresenceSet(_ClientEnvelope, tag="presence.set", kw_only=True):
    """Set the user's presence status.

    Sets this connection's status; the user's presence is the strongest status over their
    connections (dnd > online > away)."""

    payload: PresenceSetPayload


class TypingStart(_ClientEnvelope, tag="typing.start", kw_only=True):
    """The user started typing in a room.

    Tells the room's other subscribers; repeat every few seconds while typing, as the
    indicator expires after 6 s."""

    payload: RoomPayload


class TypingStop(_ClientEnvelope, tag="typing.stop", kw_only=True):
    """The user stopped typing in a room."""

    payload: RoomPayload


class ChatSend(_ClientEnvelope, tag="chat.send", kw_only=True):
    """Post a message to a room."""

    payload: ChatSendPayload


class ChatEdit(_ClientEnvelope, tag="chat.edit", kw_only=True):
    """Edit one of the sender's messages."""

    payload: ChatEditPayload


class ChatDelete(_ClientEnvelope, tag="chat.delete", kw_only=True):
    """Delete a message.

    The sender, or a room admin or owner, may delete; the message keeps its seq with an
    empty body."""

    payload: ChatDeletePayload


class ChatRead(_ClientEnvelope, tag="chat.read", kw_only=True):
    """Advance the user's read position in a room (it never moves backwards)."""

    payload: ChatReadPayload


class ChatHistory(_ClientEnvelope, tag="chat.history", kw_only=True):
    """Fetch a page of a room's history.

    A page of messages in ascending seq: with `after`, the oldest ones after it; otherwise
    the newest ones before `before` (or the newest overall). The default limit is 50."""

    payload: ChatHistoryPayload


# --- calls (client→server) ---------------------------------------------------------------
CallModeRequest = Literal["p2p", "sfu", "auto"]
Sdp = Annotated[str, Meta(min_length=1, max_length=60000, description="SDP text.")]
CandidateType = Literal["host", "srflx", "prflx", "relay"]


class CallStartPayload(_ClientPayload):
    """Start a call in a room. `auto` starts peer-to-peer and moves to the SFU when the
    call grows past the server's threshold."""

    room_id: uuid.UUID
    mode: CallModeRequest = "auto"


class CallPayload(_ClientPayload):
    """Names a call."""

    call_id: uuid.UUID


class IceCandidate(_ClientPayload):
    """An RTCIceCandidate as browsers serialise it."""

    candidate: Annotated[str, Meta(max_length=2048)]
    sdp_mid: Annotated[str, Meta(max_length=64)] | None = None
    sdp_m_line_index: Annotated[int, Meta(ge=0, le=1024)] | None = None
    username_fragment: Annotated[str, Meta(max_length=256)] | None = None


class RtcSdpPayload(_ClientPayload):
    """An offer or answer for one participant (`to`), or for the SFU when `to` is absent."""

    call_id: uuid.UUID
    sdp: Sdp
    to: uuid.UUID | None = None
    ice_restart: bool = False


class RtcIcePayload(_ClientPayload):
    """A trickled ICE candidate; `candidate` null signals end of candidates."""

    call_id: uuid.UUID
    candidate: IceCandidate | None
    to: uuid.UUID | None = None


class CallTelemetryPayload(_ClientPayload):
    """How establishing media went on this client: `connected` when ICE connected,
    `media` once the first remote frame was decoded (ICE alone is not media flowing;
    `setupMs` then counts to that frame), `failed` when it did not work."""

    call_id: uuid.UUID
    outcome: Literal["connected", "failed", "media"]
    setup_ms: Annotated[int, Meta(ge=0, le=600_000)] | None = None
    ice_failed: bool = False
    candidate_type: CandidateType | None = None


class CallStart(_ClientEnvelope, tag="call.start", kw_only=True):
    """Start a call; the ack carries the call, your participant id and ICE servers."""

    payload: CallStartPayload


class CallJoin(_ClientEnvelope, tag="call.join", kw_only=True):
    """Join a live call in a room you belong to.

    The ack carries the call, your participant id and ICE servers; rejoining within
    `BOLTOREZKA_CALL_GRACE_SECONDS` of a dropped connection keeps the participant id."""

    payload: CallPayload


class CallLeave(_ClientEnvelope, tag="call.leave", kw_only=True):
    """Leave a call; the call ends when its last participant leaves."""

    payload: CallPayload


class CallEnd(_ClientEnvelope, tag="call.end", kw_only=True):
    """End the call for everyone (participants and room admins)."""

    payload: CallPayload


class RtcOffer(_ClientEnvelope, tag="rtc.offer", kw_only=True):
    """Relay an SDP offer to another participant of the same call (or the SFU)."""

    payload: RtcSdpPayload


class RtcAnswer(_ClientEnvelope, tag="rtc.answer", kw_only=True):
    """Relay an SDP answer to another participant of the same call (or the SFU)."""

    payload: RtcSdpPayload


class RtcIce(_ClientEnvelope, tag="rtc.ice", kw_only=True):
    """Relay an ICE candidate to another participant of the same call (or the SFU)."""

    payload: RtcIcePayload


class CallTelemetry(_ClientEnvelope, tag="call.telemetry", kw_only=True):
    """Report call setup time, ICE failure and the selected candidate type."""

    payload: CallTelemetryPayload


ClientMessage: TypeAlias = (
    Auth
    | AuthRefresh
    | Ping
    | RoomJoin
    | RoomLeave
    | PresenceSet
    | TypingStart
    | TypingStop
    | ChatSend
    | ChatEdit
    | ChatDelete
    | ChatRead
    | ChatHistory
    | CallStart
    | CallJoin
    | CallLeave
    | CallEnd
    | RtcOffer
    | RtcAnswer
    | RtcIce
    | CallTelemetry
)


# --- server→client ---------------------------------------------------------------------


class _ServerPayload(msgspec.Struct, rename="camel", omit_defaults=True):
    """Base of server payloads: unknown fields tolerated so old clients survive additions."""


class _ServerEnvelope(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    """Base of server→client envelopes.

    Subclasses repeat `kw_only=True` so that `v` keeps its place as the first field
    after `type` in encoded frames despite having a default.
    """

    v: Version = PROTOCOL_VERSION


class Limits(_ServerPayload):
    """Limits the server enforces on this connection."""

    max_frame_bytes: int
    rates: dict[str, float]
    max_payload_bytes: int | None = None


class CapabilitiesPayload(_ServerPayload):
    """What this server node supports and how the client should pace itself."""

    protocol_versions: Annotated[list[int], Meta(max_length=16)]
    features: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)]
    limits: Limits
    heartbeat_interval_ms: int
    node_id: str
    session_id: str
    resume_window_seconds: int


class AckPayload(_ServerPayload):
    """Request-specific result; `null` when there is nothing to return."""

    result: Any


class NackPayload(_ServerPayload):
    """Why a request failed. `code`, `message`, `retryable` and `retryAfterMs` are always
    present (`retryAfterMs` may be null); `details` carries code-specific facts, such as
    the `callId` of the live call behind `call_already_live`."""

    code: str
    message: str
    retryable: bool
    retry_after_ms: int | None
    details: dict[str, Any] | None = None


class ErrorPayload(_ServerPayload):
    """A connection-level problem not tied to any request."""

    code: str
    message: str


class PongPayload(_ServerPayload):
    """Reserved (see `pong`)."""

    ts: int | None = None


class AuthExpiringPayload(_ServerPayload):
    """When the current access token expires (Unix seconds); send `auth.refresh` before."""

    expires_at: int


class DrainingPayload(_ServerPayload):
    """How long to wait before reconnecting to another node."""

    reconnect_after_ms: int


class PresenceMember(_ServerPayload):
    """One member's presence."""

    user_id: uuid.UUID
    status: ObservedPresence


class RoomPresencePayload(_ServerPayload):
    """Snapshot of a room's members and their presence."""

    room_id: uuid.UUID
    # Unbounded on purpose: room size is the rooms service's policy, and a bound here would
    # make schema-validating clients reject legitimately large rooms.
    members: list[PresenceMember]


class MemberPayload(_ServerPayload):
    """A user arriving in or leaving a room's live view."""

    room_id: uuid.UUID
    user_id: uuid.UUID


class PresenceChangedPayload(_ServerPayload):
    """A user's new presence."""

    user_id: uuid.UUID
    status: ObservedPresence


class TypingPayload(_ServerPayload):
    """Whether a user is typing in a room."""

    room_id: uuid.UUID
    user_id: uuid.UUID
    active: bool


class MessageData(_ServerPayload, omit_defaults=False):
    """A stored chat message; `deletedAt` is set once it has been deleted. Every field is
    always present (null when unset), as stored messages have always been sent."""

    id: uuid.UUID
    room_id: uuid.UUID
    seq: Seq
    sender_id: uuid.UUID
    client_msg_id: str
    body: Annotated[str, Meta(max_length=4000)]
    created_at: Instant
    reply_to: uuid.UUID | None = None
    edited_at: Instant | None = None
    deleted_at: Instant | None = None


class ChatMessagePayload(_ServerPayload):
    """A message in a room."""

    room_id: uuid.UUID
    message: MessageData


class ChatDeletedPayload(_ServerPayload):
    """A message was deleted; `seq` identifies it in the room's sequence."""

    room_id: uuid.UUID
    message_id: uuid.UUID
    seq: Seq


class ChatReadReceiptPayload(_ServerPayload):
    """A member's read position advanced to `seq`."""

    room_id: uuid.UUID
    user_id: uuid.UUID
    seq: Seq


class NotificationPayload(_ServerPayload):
    """Unread counter or mention for a room this connection has not joined."""

    room_id: uuid.UUID
    kind: NotificationKind
    unread_count: NonNegative
    seq: Seq
    message_id: uuid.UUID | None = None


class ServerCapabilities(_ServerEnvelope, tag="server.capabilities", kw_only=True):
    """Sent when the connection opens: supported versions, features and limits.

    Always the first frame on a new connection; it also carries the heartbeat interval and
    this connection's `sessionId`."""

    payload: CapabilitiesPayload


class Ack(_ServerEnvelope, tag="ack", kw_only=True):
    """The request with this `requestId` succeeded.

    Answers exactly one request; the shape of `result` depends on the request type."""

    request_id: RequestId
    payload: AckPayload


class Nack(_ServerEnvelope, tag="nack", kw_only=True):
    """The request failed; `requestId` is null when it could not be read from the frame.

    Answers exactly one request with a stable `code`; `retryAfterMs` is set for
    `rate_limited`."""

    request_id: RequestId | None
    payload: NackPayload


class ServerError(_ServerEnvelope, tag="error", kw_only=True):
    """Connection-level error, typically followed by a close.

    For example `session_expired` before close 4003."""

    payload: ErrorPayload


class Pong(_ServerEnvelope, tag="pong", kw_only=True):
    """Reserved: the server answers `ping` with an `ack` and does not send this.

    Clients should ignore it if it ever arrives."""

    payload: PongPayload = msgspec.field(default_factory=PongPayload)


class AuthExpiring(_ServerEnvelope, tag="auth.expiring", kw_only=True):
    """The access token is about to expire.

    Sent `BOLTOREZKA_AUTH_EXPIRY_WARNING_SECONDS` before the token expires; refresh it over
    REST and send `auth.refresh`, or the server closes with 4003 at `expiresAt`."""

    payload: AuthExpiringPayload


class ServerDraining(_ServerEnvelope, tag="server.draining", kw_only=True):
    """This node is shutting down; reconnect after the given delay and resume.

    The server then closes with 1012."""

    payload: DrainingPayload


class RoomPresence(_ServerEnvelope, tag="room.presence", kw_only=True):
    """Presence snapshot sent after `room.join`.

    Sent right after the `room.join` ack: every member and their presence."""

    payload: RoomPresencePayload


class MemberJoined(_ServerEnvelope, tag="member.joined", kw_only=True):
    """A user opened the room: their first connection joined it (`room.join`).

    Sent to the room's other subscribers."""

    payload: MemberPayload


class MemberLeft(_ServerEnvelope, tag="member.left", kw_only=True):
    """A user left the room's live view: their last connection left it, disconnected, or
    their membership ended (then they receive this about themselves as well)."""

    payload: MemberPayload


class MemberSanctionPayload(_ServerPayload):
    """Who was banned or muted in which room, and until when (null: until lifted)."""

    room_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: Instant | None


class MemberBanned(_ServerEnvelope, tag="member.banned", kw_only=True):
    """A user was banned from the room; sent to its connected members, the banned user
    included, before the ban's `member.left`."""

    payload: MemberSanctionPayload


class MemberMuted(_ServerEnvelope, tag="member.muted", kw_only=True):
    """A member was muted: they read the room but cannot post or start calls.

    Sent to the room's connected members."""

    payload: MemberSanctionPayload


class MemberUnmuted(_ServerEnvelope, tag="member.unmuted", kw_only=True):
    """A member's mute was lifted.

    Sent to the room's connected members."""

    payload: MemberPayload


class PresenceChanged(_ServerEnvelope, tag="presence.changed", kw_only=True):
    """A user's presence changed.

    Sent about every user who shares a room with this user, and about this user."""

    payload: PresenceChangedPayload


class TypingIndicator(_ServerEnvelope, tag="typing", kw_only=True):
    """A user started or stopped typing.

    In a joined room; `active: false` also arrives when an indicator expires."""

    payload: TypingPayload


class ChatMessage(_ServerEnvelope, tag="chat.message", kw_only=True):
    """A new message was posted.

    In a joined room. Per room, frames arrive in seq order, each once per subscription."""

    payload: ChatMessagePayload


class ChatEdited(_ServerEnvelope, tag="chat.edited", kw_only=True):
    """A message was edited; `message` is its new state."""

    payload: ChatMessagePayload


class ChatDeleted(_ServerEnvelope, tag="chat.deleted", kw_only=True):
    """A message was deleted; it keeps its seq."""

    payload: ChatDeletedPayload


class ChatReadReceipt(_ServerEnvelope, tag="chat.read", kw_only=True):
    """A member's read position changed.

    Sent to the reader's own connections when their read position in a room advances, so
    every device can update its unread count."""

    payload: ChatReadReceiptPayload


class RoomInfo(_ServerPayload):
    """A room's current name, topic and state."""

    room_id: uuid.UUID
    kind: Literal["public", "private", "direct"]
    name: str
    topic: str
    archived: bool


class RoomDeletedPayload(_ServerPayload):
    """The room that was deleted."""

    room_id: uuid.UUID


class RoomUpdated(_ServerEnvelope, tag="room.updated", kw_only=True):
    """A room you belong to was renamed, re-topiced, archived or unarchived.

    Sent to every connected member of the room, whether or not the room is joined on the
    connection."""

    payload: RoomInfo


class RoomDeleted(_ServerEnvelope, tag="room.deleted", kw_only=True):
    """A room you belonged to was deleted; it is gone from your list and its live view.

    Sent to every connected member; the room's live view ends on every connection."""

    payload: RoomDeletedPayload


class Notification(_ServerEnvelope, tag="notification", kw_only=True):
    """Unread or mention activity in a room this connection has not joined.

    A new message in a room the user is a member of but has not joined on this
    connection."""

    payload: NotificationPayload


# --- calls (server→client) ---------------------------------------------------------------


class CallParticipantInfo(_ServerPayload):
    """One participant of a call."""

    participant_id: uuid.UUID
    user_id: uuid.UUID
    connected: bool


class CallStatePayload(_ServerPayload):
    """A call's state after a change."""

    call_id: uuid.UUID
    room_id: uuid.UUID
    state: Literal["ringing", "active", "ended"]
    mode: Literal["p2p", "sfu"]
    participants: list[CallParticipantInfo]
    reason: str | None = None


class RelayedSdpPayload(_ServerPayload, omit_defaults=False):
    """An offer or answer from participant `from` (null when it comes from the SFU)."""

    call_id: uuid.UUID
    sdp: str
    from_: uuid.UUID | None = msgspec.field(default=None, name="from")
    ice_restart: bool = False


class RelayedIcePayload(_ServerPayload):
    """An ICE candidate from participant `from` (absent when it comes from the SFU)."""

    call_id: uuid.UUID
    candidate: dict[str, Any] | None
    from_: uuid.UUID | None = msgspec.field(default=None, name="from")


class CallStateChanged(_ServerEnvelope, tag="call.state", kw_only=True):
    """Sent to every connected member of the room when a call starts, changes or ends."""

    payload: CallStatePayload


class RtcOfferRelayed(_ServerEnvelope, tag="rtc.offer", kw_only=True):
    """An SDP offer for you."""

    payload: RelayedSdpPayload


class RtcAnswerRelayed(_ServerEnvelope, tag="rtc.answer", kw_only=True):
    """An SDP answer for you."""

    payload: RelayedSdpPayload


class RtcIceRelayed(_ServerEnvelope, tag="rtc.ice", kw_only=True):
    """An ICE candidate for you."""

    payload: RelayedIcePayload


# --- ack results: what each request's `ack` carries in `payload.result` -------------------


class IceServerInfo(_ServerPayload):
    """One entry of `RTCConfiguration.iceServers`; TURN entries carry time-limited
    credentials (see `GET /v1/turn/credentials` for their expiry).

    Each is issued when the answer is made: a TURN entry's `username` and `credential` are
    for this user in coturn's TURN REST scheme (`username` is
    `<expiry in Unix seconds>:<userId>`), valid for `BOLTOREZKA_TURN_TTL` seconds. Fresh
    ones come with every `call.start` and `call.join` ack and from
    `GET /v1/turn/credentials` (which also says `expiresAt`)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class AuthResult(_ServerPayload):
    """`auth` succeeded: who the connection is, until when, and the ICE servers to use.

    `sessionId` is the device session; `expiresAt` is when the access token expires, in
    Unix seconds (send `auth.refresh` before then); `iceServers` is `[]` when neither TURN
    nor STUN is configured."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: Timestamp
    ice_servers: list[IceServerInfo]


class AuthRefreshResult(_ServerPayload):
    """`auth.refresh` succeeded: the new expiry, and fresh ICE server credentials."""

    expires_at: Timestamp
    ice_servers: list[IceServerInfo]


class PingResult(_ServerPayload, kw_only=True):
    """The ack of `ping` is the pong: your `ts` back, and the server's clock (ms)."""

    ts: Timestamp | None = None
    server_time: Timestamp


class RoomJoinResult(_ServerPayload):
    """Joined: live events follow from `lastSeq`; `replayed` messages were sent first."""

    room_id: uuid.UUID
    last_seq: Seq
    replayed: NonNegative


class RoomLeaveResult(_ServerPayload):
    """`left` is false when the room was not joined on this connection."""

    room_id: uuid.UUID
    left: bool


class PresenceSetResult(_ServerPayload):
    status: PresenceStatus


class ChatSendResult(_ServerPayload):
    """Stored (or, with `duplicate`, stored before under the same `clientMsgId`)."""

    message_id: uuid.UUID
    seq: Seq
    created_at: Instant
    duplicate: bool


class ChatEditResult(_ServerPayload):
    message: MessageData


class ChatDeleteResult(_ServerPayload):
    message_id: uuid.UUID
    seq: Seq


class ChatReadResult(_ServerPayload):
    """Your read position in the room now, and what is left unread after it."""

    room_id: uuid.UUID
    seq: Seq
    unread_count: NonNegative


class ChatHistoryResult(_ServerPayload):
    room_id: uuid.UUID
    messages: list[MessageData]
    has_more: bool


class CallJoinedResult(_ServerPayload):
    """`call.start` or `call.join` succeeded: the call, your participant id in it, and the
    ICE servers to use for its media."""

    call: CallStatePayload
    participant_id: uuid.UUID
    ice_servers: list[IceServerInfo]


class CallLeftResult(_ServerPayload):
    """`call.leave` or `call.end` succeeded: the call's state after it."""

    call_id: uuid.UUID
    state: Literal["ringing", "active", "ended"]


# Request type -> the struct its ack result is (None: the result is `null`).
ACK_RESULTS: Final[dict[str, type[_ServerPayload] | None]] = {
    "auth": AuthResult,
    "auth.refresh": AuthRefreshResult,
    "ping": PingResult,
    "room.join": RoomJoinResult,
    "room.leave": RoomLeaveResult,
    "presence.set": PresenceSetResult,
    "typing.start": None,
    "typing.stop": None,
    "chat.send": ChatSendResult,
    "chat.edit": ChatEditResult,
    "chat.delete": ChatDeleteResult,
    "chat.read": ChatReadResult,
    "chat.history": ChatHistoryResult,
    "call.start": CallJoinedResult,
    "call.join": CallJoinedResult,
    "call.leave": CallLeftResult,
    "call.end": CallLeftResult,
    "rtc.offer": None,
    "rtc.answer": None,
    "rtc.ice": None,
    "call.telemetry": None,
}


ServerMessage: TypeAlias = (
    ServerCapabilities
    | Ack
    | Nack
    | ServerError
    | Pong
    | AuthExpiring
    | ServerDraining
    | RoomPresence
    | MemberJoined
    | MemberLeft
    | MemberBanned
    | MemberMuted
    | MemberUnmuted
    | PresenceChanged
    | TypingIndicator
    | ChatMessage
    | ChatEdited
    | ChatDeleted
    | ChatReadReceipt
    | Notification
    | RoomUpdated
    | RoomDeleted
    | CallStateChanged
    | RtcOfferRelayed
    | RtcAnswerRelayed
    | RtcIceRelayed
)


def message_type(msg: msgspec.Struct | type[msgspec.Struct]) -> str:
    """Return the wire `type` tag of a message instance or class."""
    tag = msg.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{msg!r} is not a tagged protocol message")
    return tag


CLIENT_TYPES: Final[frozenset[str]] = frozenset(message_type(c) for c in get_args(ClientMessage))
SERVER_TYPES: Final[frozenset[str]] = frozenset(message_type(c) for c in get_args(ServerMessage))


# --- codec -----------------------------------------------------------------------------


class ProtocolError(Exception):
    """A frame that cannot be turned into a message.

    `code` is one of the error code constants of this module and `message` a short human
    explanation. `request_id` is the frame's `requestId` whenever it could be read as a
    valid one, so the gateway can answer with a `nack` the client can correlate.
    `msg_type` is the frame's `type` only when it is a known type, so it is safe to use
    as a metric label.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        msg_type: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.msg_type = msg_type

    def to_nack(self) -> Nack:
        """The `nack` answering the frame that caused this error."""
        return nack(self.request_id, self.code, self.message)


class _Header(msgspec.Struct, rename="camel"):
    """Just enough of an envelope to classify a bad frame; types are checked by hand."""

    v: object = None
    type: object = None
    request_id: object = None


_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_server_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_header_decoder = msgspec.json.Decoder(_Header)
_encoder = msgspec.json.Encoder()


def _clip(text: str) -> str:
    if len(text) <= _MAX_ERROR_MESSAGE:
        return text
    return text[: _MAX_ERROR_MESSAGE - 1] + "…"


def _utf8(frame: str | bytes) -> bytes:
    if isinstance(frame, bytes):
        return frame
    try:
        return frame.encode()
    except UnicodeEncodeError:
        # Only lone surrogates get here; a text frame received off the wire cannot hold them.
        raise ProtocolError(MALFORMED_JSON, _NOT_UTF8) from None


def _is_utf8(data: bytes) -> bool:
    """Whether all of ``data`` is UTF-8 (RFC 6455 text frames must be, RFC 3629 strictly).

    msgspec checks UTF-8 only in the strings it materialises, so bytes in a skipped field
    (an unknown envelope key) would otherwise pass. ASCII, the common case, costs one scan.
    """
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _frame_bytes(frame: str | bytes, max_frame_bytes: int) -> bytes:
    # A code point is at least one UTF-8 byte, so a str longer than the limit is rejected
    # before paying for the encode.
    if len(frame) <= max_frame_bytes:
        data = _utf8(frame)
        if len(data) <= max_frame_bytes:
            return data
    raise ProtocolError(FRAME_TOO_LARGE, f"frame exceeds {max_frame_bytes} bytes")


def _diagnose(
    data: bytes,
    cause: Exception,
    known: frozenset[str],
    *,
    client: bool,
    utf8_checked: bool = True,
) -> ProtocolError:
    """Explain why `data` failed the strict decode, re-reading only its header."""
    try:
        header = _header_decoder.decode(data)
    except msgspec.ValidationError:
        return ProtocolError(MALFORMED_JSON, "frame must be a JSON object")
    except msgspec.DecodeError:
        return ProtocolError(MALFORMED_JSON, "frame is not valid JSON")
    except UnicodeDecodeError:
        return ProtocolError(MALFORMED_JSON, _NOT_UTF8)

    raw_id = header.request_id
    request_id = raw_id if isinstance(raw_id, str) and 1 <= len(raw_id) <= _REQUEST_ID_MAX else None
    if not utf8_checked and not _is_utf8(data):
        # A broken frame comes before any field check, but its readable requestId still
        # lets the client tell which of its requests it was.
        kind = header.type if isinstance(header.type, str) and header.type in known else None
        return ProtocolError(MALFORMED_JSON, _NOT_UTF8, request_id=request_id, msg_type=kind)
    # Server structs default `v`, so only a client frame must state it.
    version = PROTOCOL_VERSION if header.v is None and not client else header.v
    # bool is an int subclass and True == 1, so an exact type check is needed.
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        return ProtocolError(
            UNSUPPORTED_VERSION,
            f"`v` must be one of {list(SUPPORTED_VERSIONS)}",
            request_id=request_id,
        )
    if not isinstance(header.type, str) or header.type not in known:
        what = "missing" if header.type is None else _clip(repr(header.type))
        return ProtocolError(UNKNOWN_TYPE, f"unknown message type: {what}", request_id=request_id)
    msg_type = header.type
    if client and raw_id is None:
        return ProtocolError(MISSING_REQUEST_ID, "`requestId` is required", msg_type=msg_type)
    if client and request_id is None:
        return ProtocolError(
            VALIDATION_FAILED,
            f"`requestId` must be a string of 1..{_REQUEST_ID_MAX} characters",
            msg_type=msg_type,
        )
    if not isinstance(cause, msgspec.ValidationError):
        # msgspec checks UTF-8 only in strings it materialises, so bytes that the header
        # parser skipped can still fail here; that is a broken frame, not a bad field.
        reason = _NOT_UTF8 if isinstance(cause, UnicodeDecodeError) else _clip(str(cause))
        return ProtocolError(MALFORMED_JSON, reason, request_id=request_id, msg_type=msg_type)
    return ProtocolError(
        VALIDATION_FAILED, _clip(str(cause)), request_id=request_id, msg_type=msg_type
    )


def decode_client(frame: str | bytes, *, max_frame_bytes: int) -> ClientMessage:
    """Decode one client→server text frame or raise :class:`ProtocolError`.

    Checks, in order: size in UTF-8 bytes (`frame_too_large`), UTF-8 throughout and a JSON
    object (`malformed_json`), `v` (`unsupported_version`), `type` (`unknown_type`),
    `requestId` presence (`missing_request_id`), then every field constraint
    (`validation_failed`). The error carries the `requestId` whenever the frame has a
    valid one, even if the rest of the frame is invalid.

    Valid frames are the common case, so the strict decode runs first and the lenient
    header is parsed only to classify a failure; the result is the same as checking the
    header first, at the cost of one parse instead of two.
    """
    data = _frame_bytes(frame, max_frame_bytes)
    try:
        # A str was decoded already (and its encode refused lone surrogates); bytes, as the
        # gateway receives text frames, are checked here, once.
        return _decode_client(data, utf8_checked=isinstance(frame, str))
    except RecursionError:
        # Decoding recurses per nesting level of the JSON it materialises (the `Any`
        # fields): a frame of a few KB nested thousands deep is a typed refusal, not a crash.
        raise ProtocolError(MALFORMED_JSON, _TOO_DEEP) from None


def _decode_client(data: bytes, *, utf8_checked: bool) -> ClientMessage:
    try:
        msg = _client_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _diagnose(data, exc, CLIENT_TYPES, client=True, utf8_checked=utf8_checked) from exc
    if not utf8_checked and not _is_utf8(data):
        raise ProtocolError(
            MALFORMED_JSON, _NOT_UTF8, request_id=msg.request_id, msg_type=message_type(msg)
        )
    # Text reaches PostgreSQL, which stores no U+0000; JSON carries it only as an escape.
    if NUL_ESCAPE in data and has_nul(msgspec.to_builtins(msg)):
        raise ProtocolError(
            VALIDATION_FAILED,
            "strings must not contain the NUL character (U+0000)",
            request_id=msg.request_id,
            msg_type=message_type(msg),
        )
    # The strict struct types `v` as any int; only the header path checks the value.
    if msg.v not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            UNSUPPORTED_VERSION,
            f"`v` must be one of {list(SUPPORTED_VERSIONS)}",
            request_id=msg.request_id,
        )
    return msg


def decode_server(frame: str | bytes) -> ServerMessage:
    """Decode one server→client frame or raise :class:`ProtocolError`.

    Meant for clients and tests. A client should ignore `unknown_type` errors: they mean
    the server is newer than the client, not that the connection is broken.
    """
    data = _utf8(frame)
    try:
        msg = _server_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _diagnose(data, exc, SERVER_TYPES, client=False) from exc
    if msg.v not in SUPPORTED_VERSIONS:
        raise ProtocolError(UNSUPPORTED_VERSION, f"`v` must be one of {list(SUPPORTED_VERSIONS)}")
    return msg


def encode(msg: ServerMessage | ClientMessage) -> bytes:
    """Encode a message as UTF-8 JSON; send it as a *text* frame."""
    return _encoder.encode(msg)


def _event_envelopes() -> dict[str, tuple[type[Any], type[Any]]]:
    """Server message type -> (envelope struct, payload struct)."""
    return {
        message_type(envelope): (envelope, get_type_hints(envelope)["payload"])
        for envelope in get_args(ServerMessage)
    }


_EVENTS: Final = _event_envelopes()
# Set by the test suite: an event whose data has a key its struct does not declare is a
# bug (the key would be dropped on the way out), so there it raises instead.
strict_events = False


def _undeclared(data: Any, shape: msgspec.inspect.Type) -> list[str]:
    """Keys of ``data`` (plain data) that the struct type ``shape`` does not declare."""
    if isinstance(shape, msgspec.inspect.UnionType):
        wanted = msgspec.inspect.StructType if isinstance(data, dict) else msgspec.inspect.ListType
        shape = next((t for t in shape.types if isinstance(t, wanted)), shape)
    if isinstance(shape, msgspec.inspect.StructType) and isinstance(data, dict):
        fields = {field.encode_name: field.type for field in shape.fields}
        lost: list[str] = []
        for key, value in data.items():
            if key not in fields:
                lost.append(key)
            else:
                lost += [f"{key}.{inner}" for inner in _undeclared(value, fields[key])]
        return lost
    if isinstance(shape, msgspec.inspect.ListType) and isinstance(data, list):
        return sorted({inner for item in data for inner in _undeclared(item, shape.item_type)})
    return []


def event_frame(kind: str, payload: dict[str, Any] | msgspec.Struct) -> bytes:
    """A server event envelope built from its protocol struct, encoded once for every
    recipient of a fanned-out event. Plain data (from the bus or a domain service) is
    converted to the event's payload struct first, so every event fits the schema."""
    envelope, payload_type = _EVENTS[kind]
    typed = (
        payload if isinstance(payload, msgspec.Struct) else msgspec.convert(payload, payload_type)
    )
    if strict_events and not isinstance(payload, msgspec.Struct):
        lost = _undeclared(payload, msgspec.inspect.type_info(payload_type))
        if lost:
            raise ValueError(f"{kind} data has keys its struct does not declare: {lost}")
    return _encoder.encode(envelope(payload=typed))


def ack(request_id: str, result: object = None) -> Ack:
    """Build the `ack` for a successful request."""
    return Ack(request_id=request_id, payload=AckPayload(result=result))


def nack(
    request_id: str | None,
    code: str,
    message: str,
    *,
    retryable: bool = False,
    retry_after_ms: int | None = None,
    details: dict[str, Any] | None = None,
) -> Nack:
    """Build the `nack` for a failed request (`request_id` None if it was unreadable)."""
    return Nack(
        request_id=request_id,
        payload=NackPayload(
            code=code,
            message=message,
            retryable=retryable,
            retry_after_ms=retry_after_ms,
            details=details or None,
        ),
    )

"""Codec behaviour not expressible as language-neutral vectors: server messages, helpers,
error details, byte-level edge cases and the close-code table."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from boltorezka.realtime import protocol as p
from boltorezka.realtime.closecodes import CloseCode, describe

ROOM = uuid.UUID("0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71")
USER = uuid.UUID("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
MSG = uuid.UUID("5f0c2a9e-1b3d-4e7f-8a2c-6d9e0f1a2b3c")
CREATED = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
LIMIT = 65536

MESSAGE = p.MessageData(
    id=MSG,
    room_id=ROOM,
    seq=7,
    sender_id=USER,
    client_msg_id="c-1",
    body="hello",
    created_at=CREATED,
)

CHAT_MESSAGE = p.ChatMessage(payload=p.ChatMessagePayload(room_id=ROOM, message=MESSAGE))

# One instance per server type; the coverage test below fails when a type is added without
# an example here.
SERVER_EXAMPLES: list[p.ServerMessage] = [
    p.ServerCapabilities(
        payload=p.CapabilitiesPayload(
            protocol_versions=[1],
            features=["chat", "presence"],
            limits=p.Limits(max_frame_bytes=65536, rates={"chat.send": 5.0, "typing": 1.5}),
            heartbeat_interval_ms=25000,
            node_id="node-a",
            session_id="s-1",
            resume_window_seconds=120,
        )
    ),
    p.ack("r-1", {"messageId": str(MSG), "seq": 7}),
    p.nack("r-2", "rate_limited", "slow down", retryable=True, retry_after_ms=1500),
    p.nack(None, p.MALFORMED_JSON, "frame is not valid JSON"),
    p.ServerError(payload=p.ErrorPayload(code="internal_error", message="boom")),
    p.Pong(),
    p.Pong(payload=p.PongPayload(ts=1700000000123)),
    p.AuthExpiring(payload=p.AuthExpiringPayload(expires_at=1700000900)),
    p.ServerDraining(payload=p.DrainingPayload(reconnect_after_ms=3000)),
    p.RoomPresence(
        payload=p.RoomPresencePayload(
            room_id=ROOM,
            members=[
                p.PresenceMember(user_id=USER, status="online"),
                p.PresenceMember(user_id=MSG, status="offline"),
            ],
        )
    ),
    p.MemberJoined(payload=p.MemberPayload(room_id=ROOM, user_id=USER)),
    p.MemberLeft(payload=p.MemberPayload(room_id=ROOM, user_id=USER)),
    p.MemberBanned(payload=p.MemberSanctionPayload(room_id=ROOM, user_id=USER, expires_at=None)),
    p.MemberMuted(
        payload=p.MemberSanctionPayload(
            room_id=ROOM, user_id=USER, expires_at=datetime(2024, 5, 2, tzinfo=UTC)
        )
    ),
    p.MemberUnmuted(payload=p.MemberPayload(room_id=ROOM, user_id=USER)),
    p.PresenceChanged(payload=p.PresenceChangedPayload(user_id=USER, status="dnd")),
    p.TypingIndicator(payload=p.TypingPayload(room_id=ROOM, user_id=USER, active=True)),
    CHAT_MESSAGE,
    p.ChatEdited(
        payload=p.ChatMessagePayload(
            room_id=ROOM,
            message=msgspec.structs.replace(
                MESSAGE, body="edited", reply_to=USER, edited_at=CREATED
            ),
        )
    ),
    p.ChatDeleted(payload=p.ChatDeletedPayload(room_id=ROOM, message_id=MSG, seq=7)),
    p.ChatReadReceipt(payload=p.ChatReadReceiptPayload(room_id=ROOM, user_id=USER, seq=7)),
    p.Notification(
        payload=p.NotificationPayload(room_id=ROOM, kind="unread", unread_count=3, seq=9)
    ),
    p.Notification(
        payload=p.NotificationPayload(
            room_id=ROOM, kind="mention", unread_count=1, seq=10, message_id=MSG
        )
    ),
    p.RoomUpdated(
        payload=p.RoomInfo(room_id=ROOM, kind="public", name="general", topic="", archived=True)
    ),
    p.RoomDeleted(payload=p.RoomDeletedPayload(room_id=ROOM)),
    p.CallStateChanged(
        payload=p.CallStatePayload(
            call_id=MSG,
            room_id=ROOM,
            state="active",
            mode="p2p",
            participants=[p.CallParticipantInfo(participant_id=MSG, user_id=USER, connected=True)],
        )
    ),
    p.RtcOfferRelayed(payload=p.RelayedSdpPayload(call_id=MSG, sdp="v=0", from_=USER)),
    p.RtcAnswerRelayed(payload=p.RelayedSdpPayload(call_id=MSG, sdp="v=0")),
    p.RtcIceRelayed(
        payload=p.RelayedIcePayload(
            call_id=MSG, candidate={"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}
        )
    ),
]


def _error(frame: str | bytes, limit: int = LIMIT) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(frame, max_frame_bytes=limit)
    return info.value


# --- server messages -------------------------------------------------------------------


def test_server_examples_cover_every_server_type() -> None:
    assert {p.message_type(m) for m in SERVER_EXAMPLES} == p.SERVER_TYPES


@pytest.mark.parametrize("msg", SERVER_EXAMPLES, ids=lambda m: p.message_type(m))
def test_server_message_round_trip(msg: p.ServerMessage) -> None:
    frame = p.encode(msg)

    assert p.decode_server(frame) == msg
    assert p.decode_server(frame.decode()) == msg
    decoded = json.loads(frame)
    assert list(decoded)[:2] == ["type", "v"]
    assert decoded["type"] == p.message_type(msg)
    assert decoded["v"] == p.PROTOCOL_VERSION


def test_ack_wire_form() -> None:
    assert p.encode(p.ack("r-1", {"seq": 7})) == (
        b'{"type":"ack","v":1,"requestId":"r-1","payload":{"result":{"seq":7}}}'
    )


def test_ack_without_result_sends_null() -> None:
    assert json.loads(p.encode(p.ack("r-1")))["payload"] == {"result": None}


def test_nack_wire_form_keeps_every_field() -> None:
    frame = json.loads(p.encode(p.nack(None, "validation_failed", "bad")))
    assert frame == {
        "type": "nack",
        "v": 1,
        "requestId": None,
        "payload": {
            "code": "validation_failed",
            "message": "bad",
            "retryable": False,
            "retryAfterMs": None,
        },
    }


def test_nack_retry_fields() -> None:
    msg = p.nack("r-9", "rate_limited", "slow down", retryable=True, retry_after_ms=250)
    assert msg.request_id == "r-9"
    assert msg.payload == p.NackPayload(
        code="rate_limited", message="slow down", retryable=True, retry_after_ms=250
    )


def test_absent_optionals_are_omitted_on_the_wire() -> None:
    assert json.loads(p.encode(p.Pong()))["payload"] == {}
    call = next(m for m in SERVER_EXAMPLES if isinstance(m, p.CallStateChanged))
    assert "reason" not in json.loads(p.encode(call))["payload"]


def test_a_stored_message_carries_every_field() -> None:
    """Clients read a message's optional fields unconditionally: unset ones are null."""
    message = json.loads(p.encode(CHAT_MESSAGE))
    assert message["payload"]["message"] == {
        "id": str(MSG),
        "roomId": str(ROOM),
        "seq": 7,
        "senderId": str(USER),
        "clientMsgId": "c-1",
        "body": "hello",
        "createdAt": "2024-05-01T12:30:15.250000Z",
        "replyTo": None,
        "editedAt": None,
        "deletedAt": None,
    }


def test_server_structs_tolerate_unknown_fields() -> None:
    frame = {
        "type": "typing",
        "v": 1,
        "future": True,
        "payload": {"roomId": str(ROOM), "userId": str(USER), "active": False, "new": 1},
    }
    assert p.decode_server(json.dumps(frame)) == p.TypingIndicator(
        payload=p.TypingPayload(room_id=ROOM, user_id=USER, active=False)
    )


def test_decode_server_defaults_missing_version() -> None:
    # v has a default on server structs, so frames from a lenient producer still decode.
    assert p.decode_server('{"type":"pong","payload":{}}') == p.Pong()


def test_decode_server_reports_the_real_problem_when_v_is_absent() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_server('{"type":"typing","payload":{"roomId":"x"}}')
    assert info.value.code == p.VALIDATION_FAILED


def test_decode_server_unknown_type_is_distinguishable() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_server('{"type":"call.ringing","v":1,"payload":{}}')
    assert info.value.code == p.UNKNOWN_TYPE


def test_decode_server_rejects_other_versions() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_server('{"type":"pong","v":2,"payload":{}}')
    assert info.value.code == p.UNSUPPORTED_VERSION


def test_decode_server_requires_timezone_on_timestamps() -> None:
    frame = json.loads(p.encode(CHAT_MESSAGE))
    frame["payload"]["message"]["createdAt"] = "2024-05-01T12:30:15"
    with pytest.raises(p.ProtocolError) as info:
        p.decode_server(json.dumps(frame))
    assert info.value.code == p.VALIDATION_FAILED
    assert "$.payload.message.createdAt" in info.value.message


# --- client messages -------------------------------------------------------------------


def test_client_message_round_trip() -> None:
    msg = p.ChatSend(
        v=1,
        request_id="r-1",
        payload=p.ChatSendPayload(room_id=ROOM, client_msg_id="c", body="hi", reply_to=MSG),
    )
    frame = p.encode(msg)
    assert json.loads(frame) == {
        "type": "chat.send",
        "v": 1,
        "requestId": "r-1",
        "payload": {"roomId": str(ROOM), "clientMsgId": "c", "body": "hi", "replyTo": str(MSG)},
    }
    assert p.decode_client(frame, max_frame_bytes=LIMIT) == msg


def test_ping_payload_defaults_to_empty() -> None:
    msg = p.decode_client('{"v":1,"type":"ping","requestId":"r"}', max_frame_bytes=LIMIT)
    assert msg == p.Ping(v=1, request_id="r", payload=p.PingPayload())


def test_message_type_helper() -> None:
    assert p.message_type(p.RoomJoin) == "room.join"
    assert p.message_type(p.Pong()) == "pong"
    with pytest.raises(TypeError):
        p.message_type(p.PingPayload())


def test_client_and_server_type_sets() -> None:
    assert len(p.CLIENT_TYPES) == 21
    assert len(p.SERVER_TYPES) == 26
    # These tags are used in both directions, with different payloads.
    assert p.CLIENT_TYPES & p.SERVER_TYPES == {"chat.read", "rtc.offer", "rtc.answer", "rtc.ice"}


# --- ProtocolError ---------------------------------------------------------------------


def test_protocol_error_fields_for_validation_failure() -> None:
    err = _error(
        '{"v":1,"type":"chat.send","requestId":"r-7",'
        f'"payload":{{"roomId":"{ROOM}","clientMsgId":"c","body":""}}}}'
    )
    assert err.code == p.VALIDATION_FAILED == "validation_failed"
    assert err.request_id == "r-7"
    assert err.msg_type == "chat.send"
    assert "$.payload.body" in err.message
    assert str(err) == f"validation_failed: {err.message}"
    assert isinstance(err, Exception)


def test_protocol_error_to_nack() -> None:
    err = _error('{"v":1,"type":"room.join","requestId":"r-8","payload":{"roomId":"x"}}')
    assert err.to_nack() == p.nack("r-8", p.VALIDATION_FAILED, err.message)
    assert err.to_nack().payload.retryable is False


def test_unknown_type_is_not_exposed_as_msg_type() -> None:
    # msg_type feeds metric labels, so client-chosen strings must never reach it.
    err = _error('{"v":1,"type":"x-random-123","requestId":"r"}')
    assert (err.code, err.request_id, err.msg_type) == (p.UNKNOWN_TYPE, "r", None)


def test_error_message_is_clipped() -> None:
    field = "f" * 5000
    err = _error(f'{{"v":1,"type":"ping","requestId":"r","payload":{{"{field}":1}}}}')
    assert err.code == p.VALIDATION_FAILED
    assert len(err.message) <= 200


def test_valid_frame_with_unsupported_version_keeps_request_id() -> None:
    err = _error('{"v":3,"type":"ping","requestId":"r-3","payload":{}}')
    assert (err.code, err.request_id) == (p.UNSUPPORTED_VERSION, "r-3")


def test_error_constants_are_documented() -> None:
    constants = {
        p.FRAME_TOO_LARGE,
        p.MALFORMED_JSON,
        p.UNSUPPORTED_VERSION,
        p.UNKNOWN_TYPE,
        p.MISSING_REQUEST_ID,
        p.VALIDATION_FAILED,
    }
    assert constants == set(p.ERROR_CODES)
    assert p.PROTOCOL_VERSION in p.SUPPORTED_VERSIONS


# --- bytes and sizes -------------------------------------------------------------------

PING = '{"v":1,"type":"ping","requestId":"r"}'


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    assert p.decode_client(PING, max_frame_bytes=len(PING)).request_id == "r"
    assert p.decode_client(PING.encode(), max_frame_bytes=len(PING)).request_id == "r"


def test_frame_one_byte_over_the_limit_is_rejected() -> None:
    for frame in (PING, PING.encode()):
        err = _error(frame, limit=len(PING) - 1)
        assert (err.code, err.request_id) == (p.FRAME_TOO_LARGE, None)


def test_frame_size_counts_utf8_bytes_not_characters() -> None:
    frame = '{"v":1,"type":"ping","requestId":"\u20ac\u20ac"}'
    limit = len(frame)
    assert len(frame.encode()) == limit + 4
    assert _error(frame, limit=limit).code == p.FRAME_TOO_LARGE
    assert p.decode_client(frame, max_frame_bytes=limit + 4).request_id == "\u20ac\u20ac"


def test_lone_surrogate_is_malformed() -> None:
    err = _error('{"v":1,"type":"ping","requestId":"\ud800"}')
    assert (err.code, err.request_id) == (p.MALFORMED_JSON, None)


def test_invalid_utf8_inside_a_field_is_malformed_and_keeps_request_id() -> None:
    frame = (
        b'{"v":1,"type":"chat.send","requestId":"r-u",'
        b'"payload":{"roomId":"' + str(ROOM).encode() + b'","clientMsgId":"c","body":"\xff"}}'
    )
    err = _error(frame)
    assert (err.code, err.request_id, err.msg_type) == (p.MALFORMED_JSON, "r-u", "chat.send")


def test_invalid_utf8_in_request_id_is_malformed() -> None:
    err = _error(b'{"v":1,"type":"ping","requestId":"\xff"}')
    assert (err.code, err.request_id) == (p.MALFORMED_JSON, None)


# --- close codes -----------------------------------------------------------------------


def test_close_code_table() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "AUTH_FAILED": 4001,
        "AUTH_TIMEOUT": 4002,
        "SESSION_EXPIRED": 4003,
        "SESSION_REVOKED": 4004,
        "ORIGIN_REJECTED": 4005,
        "POLICY_VIOLATION_BUDGET": 4008,
        "SLOW_CONSUMER_RESUME": 4009,
        "HEARTBEAT_TIMEOUT": 4010,
        "RATE_LIMITED_CONNECT": 4029,
        "TOO_MANY_CONNECTIONS": 4030,
    }
    # An accidental duplicate value would silently become an alias, not a member.
    assert len(CloseCode.__members__) == len(CloseCode)


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_close_code_is_described(code: CloseCode) -> None:
    assert code in (1000, 1001, 1002, 1012, 1013) or 4000 <= code <= 4999
    assert describe(code) == describe(int(code)) == code.description
    assert code.description and "\n" not in code.description
    assert code.reason == code.name.lower()
    assert len(code.reason.encode()) <= 123


def test_describe_unknown_code() -> None:
    assert describe(4999) == "Unknown close code 4999."

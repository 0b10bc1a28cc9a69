"""Domain errors with stable machine codes.

Domain services raise these; the HTTP layer renders them as problem JSON (RFC 9457 style)
and the realtime layer as ``nack`` envelopes. Neither the code nor the status depends on
the transport, so a client sees the same ``code`` for the same failure everywhere.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Base of every error a client may see. ``code`` is stable and documented."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class InvalidInput(AppError):
    status = 422
    code = "validation_failed"
    title = "The request body or parameters are invalid"


class MalformedJson(AppError):
    status = 400
    code = "malformed_json"
    title = "The request body is not valid JSON"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    title = "The request body must be application/json"


class Unauthenticated(AppError):
    status = 401
    code = "unauthenticated"
    title = "Authentication is required"


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    title = "The access token is invalid"


class TokenExpired(Unauthenticated):
    code = "token_expired"
    title = "The access token has expired"


class SessionRevoked(Unauthenticated):
    code = "session_revoked"
    title = "The device session has been revoked"


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"
    title = "Username or password is incorrect"


class InvalidRefreshToken(Unauthenticated):
    code = "invalid_refresh_token"
    title = "The refresh token is invalid, expired or revoked"


class RefreshTokenReused(Unauthenticated):
    code = "refresh_token_reused"
    title = "The refresh token was already used; the device session has been revoked"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    title = "You are not allowed to do this"


class NotAMember(Forbidden):
    code = "not_a_member"
    title = "You are not a member of this room"


class NotFound(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class RoomNotFound(NotFound):
    code = "room_not_found"
    title = "Room not found"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "User not found"


class MessageNotFound(NotFound):
    code = "message_not_found"
    title = "Message not found"


class SessionNotFound(NotFound):
    code = "session_not_found"
    title = "Device session not found"


class RouteNotFound(NotFound):
    code = "route_not_found"
    title = "No such endpoint"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed on this endpoint"


class Conflict(AppError):
    status = 409
    code = "conflict"
    title = "The request conflicts with the current state"


class UsernameTaken(Conflict):
    code = "username_taken"
    title = "That username is already taken"


class AlreadyMember(Conflict):
    code = "already_member"
    title = "The user is already a member of this room"


class OwnerMustTransfer(Conflict):
    code = "owner_must_transfer"
    title = "The owner must transfer ownership before leaving"


class RoomArchived(Conflict):
    code = "room_archived"
    title = "The room is archived and read-only"


class DirectRoomImmutable(Conflict):
    code = "direct_room_immutable"
    title = "Direct rooms have exactly two members and no roles"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "This clientMsgId was already used for a different message"


class MessageDeleted(Conflict):
    code = "message_deleted"
    title = "The message has been deleted"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"
    retryable = True

    def __init__(self, retry_after_ms: int, detail: str | None = None) -> None:
        super().__init__(detail, retryAfterMs=retry_after_ms)
        self.retry_after_ms = retry_after_ms


class Unavailable(AppError):
    status = 503
    code = "unavailable"
    title = "The service is temporarily unavailable"
    retryable = True


class InternalError(AppError):
    status = 500
    code = "internal_error"
    title = "Internal server error"
    retryable = True


class TurnNotConfigured(Unavailable):
    code = "turn_not_configured"
    title = "This server has no TURN relay configured"
    retryable = False


class UpgradeRequired(AppError):
    status = 426
    code = "upgrade_required"
    title = "This endpoint only speaks WebSocket: send an Upgrade request"


# --- Requests that are not HTTP the server can read: the head (api/edge.py), the body's
# framing or encoding (api/http.py), or a head that never arrives in time. ---


class MalformedRequest(AppError):
    status = 400
    code = "malformed_request"
    title = "The request is not valid HTTP/1.1"


class RequestTimeout(AppError):
    status = 408
    code = "request_timeout"
    title = "The request head was not received in time"
    retryable = True


class UriTooLong(AppError):
    status = 414
    code = "uri_too_long"
    title = "The request target is too long"


class HeadersTooLarge(AppError):
    status = 431
    code = "headers_too_large"
    title = "The request headers are too large"

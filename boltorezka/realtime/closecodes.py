"""WebSocket close codes the realtime gateway uses, and what a client should do on each.

1000/1001/1002/1012/1013 are the standard RFC 6455 / IANA codes. Application codes live in
the 4000-4999 range that RFC 6455 reserves for private use. Codes are stable: clients branch on
them, so a code is never reused for a different meaning.

Each member carries a one-line description; `protocol/README.md` reuses these lines verbatim
(a test keeps them in sync), so write them for client developers.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes sent by the server, each with a one-line `description`.

    The close reason string is the lowercase name (for example `slow_consumer_resume`);
    closes for broken WebSocket framing (1002, 1007, 1009) carry an empty reason. Two closes
    come from the WebSocket layer rather than this table: 1009 when a frame exceeds four
    times `maxFrameBytes`, and an abrupt close (1006 on the client) when a protocol-level
    ping gets no pong in time; reconnect and resume after either. 1007 answers only a client
    close frame whose reason is not UTF-8: invalid UTF-8 in a text frame is a
    `malformed_json` nack.
    """

    description: str

    def __new__(cls, value: int, description: str) -> CloseCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    NORMAL = 1000, "Session ended on purpose (logout or client close); do not reconnect."
    GOING_AWAY = 1001, "The server is shutting down without draining; reconnect with backoff."
    # RFC 6455 §5.1 and §7.4.1: sent for an unmasked client frame (and by aiohttp's reader
    # for other framing errors, such as reserved bits or a fragmented control frame).
    PROTOCOL_ERROR = (
        1002,
        "A frame broke the WebSocket protocol (such as an unmasked client frame); fix the client.",
    )
    SERVICE_RESTART = (
        1012,
        "The node is draining for a restart; reconnect after a short delay and resume.",
    )
    # IANA "Try Again Later": the auth could not be checked (the database is unreachable, or
    # the server failed); nothing is wrong with the token, so clients keep it and come back.
    TRY_AGAIN_LATER = (
        1013,
        "The server could not serve this connection now (such as a database outage); "
        "reconnect with backoff.",
    )
    AUTH_FAILED = 4001, "The auth token was rejected; get a new token before reconnecting."
    AUTH_TIMEOUT = 4002, "No successful auth arrived in time after connecting; reconnect."
    SESSION_EXPIRED = (
        4003,
        "The access token expired without an auth.refresh; refresh it, then reconnect.",
    )
    SESSION_REVOKED = 4004, "The device session was revoked; sign in again, do not retry."
    ORIGIN_REJECTED = (
        4005,
        "The Origin is not allowed (normally refused before the upgrade); do not retry.",
    )
    POLICY_VIOLATION_BUDGET = (
        4008,
        "Too many invalid frames; fix the client, reconnect only with backoff.",
    )
    SLOW_CONSUMER_RESUME = (
        4009,
        "The outbound queue overflowed; reconnect at once and resume with lastSeq.",
    )
    HEARTBEAT_TIMEOUT = 4010, "No traffic within the heartbeat deadline; reconnect and resume."
    RATE_LIMITED_CONNECT = 4029, "Too many connection attempts; reconnect with backoff."
    # Counted per node (BOLTOREZKA_WS_MAX_PER_USER): the client's other sockets are fine.
    TOO_MANY_CONNECTIONS = (
        4030,
        "This user has too many open connections on this node; close one, reconnect with backoff.",
    )

    @property
    def reason(self) -> str:
        """Short machine-readable close reason (well under the 123-byte protocol limit)."""
        return self.name.lower()


# Looked up through a plain dict because `CloseCode(value)` confuses type checkers: they
# see the two-argument `__new__` rather than Enum's value lookup.
_BY_CODE: dict[int, CloseCode] = {member.value: member for member in CloseCode}


def describe(code: int) -> str:
    """The description of `code`, or a generic line for codes this server never sends."""
    member = _BY_CODE.get(code)
    return member.description if member is not None else f"Unknown close code {code}."

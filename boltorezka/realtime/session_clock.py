"""When a connection's session needs attention next, and what it needs: sans-I/O.

An unauthenticated socket has ``BOLTOREZKA_WS_AUTH_TIMEOUT_SECONDS`` to authenticate; an
authenticated one is warned (``auth.expiring``) before its access token expires, and closed
when it does, unless an ``auth.refresh`` moved the expiry. The gateway asks after every
change of the session and at each deadline, with one timer per connection and no task.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Due(enum.Enum):
    NOTHING = "nothing"
    AUTH_TIMEOUT = "auth_timeout"
    WARN = "warn"
    EXPIRED = "expired"


@dataclass(frozen=True)
class SessionState:
    opened_at: float  # wall-clock seconds, as token expiries are
    authenticated: bool
    expires_at: int  # the access token's expiry; 0 before auth
    warned_for: int  # the expiry an auth.expiring was last sent for


def next_deadline(
    state: SessionState, now: float, *, auth_timeout: float, warning: float
) -> tuple[Due, float]:
    """What is due at ``now`` and, when nothing ends the session, when to look again."""
    if not state.authenticated:
        deadline = state.opened_at + auth_timeout
        return (Due.AUTH_TIMEOUT if now >= deadline else Due.NOTHING), deadline
    expires_at = state.expires_at
    if now >= expires_at:
        return Due.EXPIRED, expires_at
    warn_at = expires_at - warning
    if now >= warn_at and state.warned_for != expires_at:
        return Due.WARN, expires_at
    return Due.NOTHING, expires_at if state.warned_for == expires_at else warn_at

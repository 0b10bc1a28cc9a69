"""Presence aggregation across a user's devices, and typing indicator state. Pure code."""

from __future__ import annotations

import uuid
from collections.abc import Hashable

# A user chooses dnd on purpose, so it wins over a device that merely is online; away is
# what an idle device reports, so any active device makes the user online.
_RANK = {"dnd": 3, "online": 2, "away": 1}
OFFLINE = "offline"


class PresenceTracker:
    """Each connection reports a status; a user's presence is the strongest of them."""

    def __init__(self) -> None:
        self._by_user: dict[uuid.UUID, dict[str, str]] = {}

    def status(self, user_id: uuid.UUID) -> str:
        devices = self._by_user.get(user_id)
        if not devices:
            return OFFLINE
        return max(devices.values(), key=_RANK.__getitem__)

    def set(self, user_id: uuid.UUID, connection_id: str, status: str) -> str | None:
        """Record a connection's status; return the user's new presence if it changed."""
        if status not in _RANK:
            raise ValueError(f"unknown presence status {status!r}")
        before = self.status(user_id)
        self._by_user.setdefault(user_id, {})[connection_id] = status
        after = self.status(user_id)
        return after if after != before else None

    def remove(self, user_id: uuid.UUID, connection_id: str) -> str | None:
        """Forget a connection; return the user's new presence if it changed."""
        devices = self._by_user.get(user_id)
        if devices is None or connection_id not in devices:
            return None
        before = self.status(user_id)
        del devices[connection_id]
        if not devices:
            del self._by_user[user_id]
        after = self.status(user_id)
        return after if after != before else None


class TypingTracker:
    """Who is typing where; relays are throttled and indicators expire unless refreshed.

    ``start`` answers whether to tell the room (a refresh inside the throttle window is
    absorbed); ``expired`` returns the indicators whose owner stopped refreshing.
    """

    def __init__(self, *, ttl: float = 6.0, throttle: float = 3.0) -> None:
        self.ttl = ttl
        self.throttle = throttle
        self._expires: dict[Hashable, float] = {}
        self._relayed: dict[Hashable, float] = {}

    def start(self, key: Hashable, now: float) -> bool:
        active = key in self._expires
        self._expires[key] = now + self.ttl
        last = self._relayed.get(key)
        if active and last is not None and now - last < self.throttle:
            return False
        self._relayed[key] = now
        return True

    def stop(self, key: Hashable) -> bool:
        self._relayed.pop(key, None)
        return self._expires.pop(key, None) is not None

    def expired(self, now: float) -> list[Hashable]:
        gone = [key for key, deadline in self._expires.items() if deadline <= now]
        for key in gone:
            self.stop(key)
        return gone

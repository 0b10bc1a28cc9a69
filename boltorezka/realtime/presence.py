"""Presence aggregation across a user's devices, and typing indicator state. Pure code."""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Iterable

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


def strongest(statuses: Iterable[str]) -> str:
    """The presence a set of device or node statuses adds up to."""
    best = OFFLINE
    for status in statuses:
        if best == OFFLINE or _RANK[status] > _RANK[best]:
            best = status
    return best


class PresenceDirectory:
    """Cluster-wide presence from what each node reports about its own devices. Pure code.

    Every node tells the others (over the bus) its own aggregate status for a user whenever
    it changes, with the rooms that user's devices there belong to; a user's presence is
    the strongest over all nodes. Nodes also say they are alive; the reports of a node not
    heard from within ``node_ttl`` seconds are dropped, so a crashed node's users go offline.
    """

    def __init__(self, *, node_ttl: float = 6.0) -> None:
        self.node_ttl = node_ttl
        self._status: dict[uuid.UUID, dict[str, str]] = {}
        self._rooms: dict[uuid.UUID, dict[str, frozenset[uuid.UUID]]] = {}
        self._seen: dict[str, float] = {}

    def status(self, user_id: uuid.UUID) -> str:
        return strongest(self._status.get(user_id, {}).values())

    def rooms(self, user_id: uuid.UUID) -> set[uuid.UUID]:
        """Every room the user's devices belong to, on any node (the audience for changes)."""
        found: set[uuid.UUID] = set()
        for rooms in self._rooms.get(user_id, {}).values():
            found |= rooms
        return found

    def heard(self, node: str, now: float) -> None:
        self._seen[node] = now

    def is_alive(self, node: str, now: float) -> bool:
        """Whether ``node`` was heard from within the TTL."""
        seen = self._seen.get(node)
        return seen is not None and now - seen <= self.node_ttl

    def alive_nodes(self, now: float) -> list[str]:
        """Every node heard from within the TTL."""
        return [node for node, seen in self._seen.items() if now - seen <= self.node_ttl]

    def report(
        self, node: str, user_id: uuid.UUID, status: str, rooms: Iterable[uuid.UUID], now: float
    ) -> str | None:
        """Apply one node's report; return the user's new presence if it changed."""
        if status != OFFLINE and status not in _RANK:
            raise ValueError(f"unknown presence status {status!r}")
        self.heard(node, now)
        before = self.status(user_id)
        if status == OFFLINE:
            self._status.get(user_id, {}).pop(node, None)
            if not self._status.get(user_id):
                self._status.pop(user_id, None)
        else:
            self._status.setdefault(user_id, {})[node] = status
        self._rooms.setdefault(user_id, {})[node] = frozenset(rooms)
        after = self.status(user_id)
        return after if after != before else None

    def forget_rooms(self, user_id: uuid.UUID) -> None:
        """Drop remembered rooms of a user who is offline everywhere (after announcing it)."""
        if user_id not in self._status:
            self._rooms.pop(user_id, None)

    def expire(self, now: float) -> list[tuple[uuid.UUID, str, set[uuid.UUID]]]:
        """Drop silent nodes; return (user, new presence, rooms) for every change."""
        return self._drop({node for node, seen in self._seen.items() if now - seen > self.node_ttl})

    def forget_node(self, node: str) -> list[tuple[uuid.UUID, str, set[uuid.UUID]]]:
        """Drop what ``node`` reported before it restarted (node ids survive restarts)."""
        return self._drop({node})

    def _drop(self, dead: set[str]) -> list[tuple[uuid.UUID, str, set[uuid.UUID]]]:
        if not dead:
            return []
        changes: list[tuple[uuid.UUID, str, set[uuid.UUID]]] = []
        for user_id in list(self._status):
            nodes = self._status[user_id]
            if not dead & nodes.keys():
                continue
            before = strongest(nodes.values())
            rooms = self.rooms(user_id)
            for node in dead:
                nodes.pop(node, None)
                self._rooms.get(user_id, {}).pop(node, None)
            if not nodes:
                del self._status[user_id]
            after = self.status(user_id)
            if after != before:
                changes.append((user_id, after, rooms))
        for node in dead:
            self._seen.pop(node, None)
        return changes

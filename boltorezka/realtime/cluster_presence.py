"""The cluster presence protocol: each node reports its own users' aggregate status over the
bus, says it is alive, and builds the cluster-wide view from every node's reports.

Reports go out in the order they were made, through one outbox and one task, so a user's
"online" never overtakes the "offline" before it. A node that starts (or whose bus was down)
asks the others to report everyone again; a node not heard from within the TTL is dropped,
and its users' presence changes are announced. The node's connections are reached through
the :class:`LocalAudience` it is given (the node's :class:`~boltorezka.realtime.audience.Audience`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from typing import Protocol

import msgspec
import structlog

from boltorezka.bus.base import Bus, raise_if_cancelling
from boltorezka.realtime.connection import Connection
from boltorezka.realtime.presence import PresenceDirectory, PresenceTracker
from boltorezka.realtime.protocol import event_frame

_log = structlog.get_logger("boltorezka.presence")

PRESENCE_CHANNEL = "presence"
# Nodes announce themselves this often; a node silent for NODE_TTL counts as gone.
NODE_ALIVE_INTERVAL = 2.0
NODE_TTL = 6.5


class PresenceReport(msgspec.Struct, tag="report", kw_only=True):
    """A node's own aggregate for a user (``offline``: no device of theirs here any more)."""

    node: str
    user_id: uuid.UUID
    status: str
    rooms: list[uuid.UUID]


class NodeAlive(msgspec.Struct, tag="alive", kw_only=True):
    node: str


class PresenceSync(msgspec.Struct, tag="sync", kw_only=True):
    """A node asks the others to report everyone they have: it just started (and whatever
    it reported before is void), or its bus was down for a while."""

    node: str
    restarted: bool = True


PresenceMessage = PresenceReport | NodeAlive | PresenceSync

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PresenceMessage)


class LocalAudience(Protocol):
    """What the protocol needs to know of this node's connections (the hub's indexes)."""

    def users_here(self) -> Iterable[uuid.UUID]:
        """Every user with a connection on this node."""
        ...

    def rooms_of_user_here(self, user_id: uuid.UUID) -> set[uuid.UUID]:
        """The rooms the user's connections here are members of."""
        ...

    def presence_audience(self, user_id: uuid.UUID, rooms: Iterable[uuid.UUID]) -> set[Connection]:
        """The user's own connections here and those of members of ``rooms``."""
        ...


class ClusterPresence:
    def __init__(self, bus: Bus, node_id: str, audience: LocalAudience) -> None:
        self.node_id = node_id
        self._bus = bus
        self._audience = audience
        # Statuses of this node's own connections, and the cluster-wide view built from
        # every node's reports (this one's included, through the bus).
        self.local = PresenceTracker()
        self.directory = PresenceDirectory(node_ttl=NODE_TTL)
        self.alive_interval = NODE_ALIVE_INTERVAL
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        bus.subscribe(PRESENCE_CHANNEL, self._on_message)

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="presence")
        self._outbox.put_nowait(_encoder.encode(PresenceSync(node=self.node_id)))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def status_of(self, user_id: uuid.UUID) -> str:
        """The user's presence across the cluster."""
        return self.directory.status(user_id)

    def update(self, user_id: uuid.UUID, connection_id: str, status: str) -> None:
        """A connection of the user's here has this status now (new, or changed)."""
        if self.local.set(user_id, connection_id, status) is not None:
            self.report(user_id)

    def remove(
        self, user_id: uuid.UUID, connection_id: str, rooms: Iterable[uuid.UUID] = ()
    ) -> None:
        """A connection of the user's here is gone; ``rooms``: the audience it had."""
        if self.local.remove(user_id, connection_id) is not None:
            self.report(user_id, rooms)

    def resync(self) -> None:
        """The bus works again after an outage: ask for everyone's reports, send ours."""
        self._outbox.put_nowait(_encoder.encode(PresenceSync(node=self.node_id, restarted=False)))
        for user_id in list(self._audience.users_here()):
            self.report(user_id)

    def report(self, user_id: uuid.UUID, extra_rooms: Iterable[uuid.UUID] = ()) -> None:
        """Tell every node (this one too) this node's aggregate for the user, in order."""
        rooms = set(extra_rooms) | self._audience.rooms_of_user_here(user_id)
        report = PresenceReport(
            node=self.node_id,
            user_id=user_id,
            status=self.local.status(user_id),
            rooms=sorted(rooms),
        )
        self._outbox.put_nowait(_encoder.encode(report))

    async def _loop(self) -> None:
        """Publish reports in the order they were made; say we are alive; drop dead nodes."""
        next_alive = 0.0
        while True:
            now = time.monotonic()
            if now >= next_alive:
                next_alive = now + self.alive_interval
                alive = _encoder.encode(NodeAlive(node=self.node_id))
                try:
                    await self._bus.publish(PRESENCE_CHANNEL, alive)
                except Exception:
                    raise_if_cancelling()
                    _log.exception("presence publish failed")
                for user_id, status, rooms in self.directory.expire(time.monotonic()):
                    self._announce(user_id, status, rooms)
            try:
                async with asyncio.timeout(max(0.0, next_alive - time.monotonic())):
                    data = await self._outbox.get()
            except TimeoutError:
                raise_if_cancelling()  # a cancel racing the timeout must still stop the loop
                continue
            try:
                await self._bus.publish(PRESENCE_CHANNEL, data)
            except Exception:
                raise_if_cancelling()
                _log.exception("presence publish failed")

    async def _on_message(self, data: bytes) -> None:
        message = _decoder.decode(data)
        now = time.monotonic()
        if isinstance(message, NodeAlive):
            self.directory.heard(message.node, now)
        elif isinstance(message, PresenceSync):
            if message.restarted and message.node != self.node_id:
                # A node starts afresh: whatever it reported in a previous life is void.
                for user_id, status, rooms in self.directory.forget_node(message.node):
                    self._announce(user_id, status, rooms)
            self.directory.heard(message.node, now)
            if message.node != self.node_id:
                for user_id in list(self._audience.users_here()):
                    self.report(user_id)
        else:
            audience = self.directory.rooms(message.user_id) | set(message.rooms)
            changed = self.directory.report(
                message.node, message.user_id, message.status, message.rooms, now
            )
            if changed is not None:
                self._announce(message.user_id, changed, audience)
            self.directory.forget_rooms(message.user_id)

    def _announce(self, user_id: uuid.UUID, status: str, rooms: set[uuid.UUID]) -> None:
        """Tell this node's connections that share one of ``rooms`` with the user, and the
        user's own devices."""
        frame = event_frame("presence.changed", {"userId": str(user_id), "status": status})
        for conn in self._audience.presence_audience(user_id, rooms):
            conn.send_raw(frame)

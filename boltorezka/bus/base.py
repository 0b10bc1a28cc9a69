"""The bus interface."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[bytes], Awaitable[None]]
# For a family of channels "<family>:<key>": called with the key and the payload.
FamilyHandler = Callable[[str, bytes], Awaitable[None]]
RecoveryHook = Callable[[], None]


def family_channel(family: str, key: str) -> str:
    return f"{family}:{key}"


def raise_if_cancelling() -> None:
    """Call where an error is caught and survived: a task being cancelled must stop, even
    when a client library turned the cancellation into an error (redis-py can, for a task
    cancelled inside a socket read), or a shutdown waits on it for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Bus(Protocol):
    """Publish bytes on a channel; every subscriber on every node receives them once.

    A node's bus delivers to the node's own subscribers in process, and its ``publish``
    does not raise when the broker between nodes is unreachable: what other nodes miss
    meanwhile is healed from PostgreSQL (seq resume and gap fill) once it is back.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, data: bytes) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Register ``handler`` for ``channel``; call before :meth:`start`."""
        ...

    def subscribe_family(self, family: str, handler: FamilyHandler) -> None:
        """Register ``handler`` for every channel ``<family>:<key>``; call before start.

        The node's own publishes on them always reach it; other nodes' reach it only for
        the keys it listens to (:meth:`listen`), so a node is sent only what it has an audience for.
        """
        ...

    def listen(self, channel: str) -> None:
        """Start receiving other nodes' publishes on a family channel (idempotent)."""
        ...

    def unlisten(self, channel: str) -> None:
        """Stop receiving other nodes' publishes on a family channel (idempotent)."""
        ...

    async def listening(self, channel: str) -> None:
        """Return once other nodes' publishes on ``channel`` reach this node (or routing
        is down, when recovery catches up instead), so a reader of PostgreSQL that starts
        after it misses nothing published later."""
        ...

    def on_recovered(self, hook: RecoveryHook) -> None:
        """Call ``hook`` each time routing to other nodes works again after an outage."""
        ...

    def routing_problem(self) -> str | None:
        """Why events cannot reach other nodes right now, or None when they can."""
        ...

"""The bus interface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[bytes], Awaitable[None]]
RecoveryHook = Callable[[], None]


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

    def on_recovered(self, hook: RecoveryHook) -> None:
        """Call ``hook`` each time routing to other nodes works again after an outage."""
        ...

    def routing_problem(self) -> str | None:
        """Why events cannot reach other nodes right now, or None when they can."""
        ...

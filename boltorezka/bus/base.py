"""The bus interface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[bytes], Awaitable[None]]


class Bus(Protocol):
    """Publish bytes on a channel; every subscriber on every node receives them once."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, data: bytes) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Register ``handler`` for ``channel``; call before :meth:`start`."""
        ...

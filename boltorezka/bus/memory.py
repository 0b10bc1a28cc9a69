"""In-process bus for a single node: publish calls the subscribers directly."""

from __future__ import annotations

from collections import defaultdict

import structlog

from boltorezka.bus.base import FamilyHandler, Handler, RecoveryHook, raise_if_cancelling
from boltorezka.observability import tracing

_log = structlog.get_logger("boltorezka.bus")


class MemoryBus:
    def __init__(self) -> None:
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._families: dict[str, FamilyHandler] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def subscribe_family(self, family: str, handler: FamilyHandler) -> None:
        self._families[family] = handler

    def listen(self, channel: str) -> None:
        return None  # every publish is this process's own

    def unlisten(self, channel: str) -> None:
        return None

    async def listening(self, channel: str) -> None:
        return None

    def on_recovered(self, hook: RecoveryHook) -> None:
        return None  # nothing outside this process to lose touch with

    def routing_problem(self) -> str | None:
        return None

    async def publish(self, channel: str, data: bytes) -> None:
        with tracing.publish_span(channel, len(data), "memory"):
            await deliver(self._handlers, self._families, channel, data)


async def deliver(
    handlers: dict[str, list[Handler]],
    families: dict[str, FamilyHandler],
    channel: str,
    data: bytes,
) -> None:
    """Call the in-process subscribers of ``channel``: its own, or its family's."""
    family, _, key = channel.partition(":")
    if key and family in families:
        try:
            await families[family](key, data)
        except Exception:
            raise_if_cancelling()
            _log.exception("bus handler failed", channel=channel)
        return
    for handler in list(handlers.get(channel, ())):
        try:
            await handler(data)
        except Exception:
            raise_if_cancelling()
            # One failing subscriber must not keep the event from the others.
            _log.exception("bus handler failed", channel=channel)

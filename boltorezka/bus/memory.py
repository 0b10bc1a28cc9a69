"""In-process bus for a single node: publish calls the subscribers directly."""

from __future__ import annotations

from collections import defaultdict

import structlog

from boltorezka.bus.base import Handler, RecoveryHook

_log = structlog.get_logger("boltorezka.bus")


class MemoryBus:
    def __init__(self) -> None:
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def on_recovered(self, hook: RecoveryHook) -> None:
        return None  # nothing outside this process to lose touch with

    def routing_problem(self) -> str | None:
        return None

    async def publish(self, channel: str, data: bytes) -> None:
        for handler in list(self._handlers.get(channel, ())):
            try:
                await handler(data)
            except Exception:
                # One failing subscriber must not keep the event from the others.
                _log.exception("bus handler failed", channel=channel)

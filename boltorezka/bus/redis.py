"""Redis pub/sub bus for several nodes sharing one Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import redis.asyncio as aioredis
import structlog

from boltorezka.bus.base import Handler

_log = structlog.get_logger("boltorezka.bus.redis")


class RedisBus:
    def __init__(self, url: str, *, prefix: str = "boltorezka:") -> None:
        self._redis = aioredis.Redis.from_url(url)
        self._prefix = prefix
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="redis-bus")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def publish(self, channel: str, data: bytes) -> None:
        await self._redis.publish(self._prefix + channel, data)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        channels = [self._prefix + name for name in self._handlers]
        if channels:
            await pubsub.subscribe(*channels)
        self._ready.set()
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                name = message["channel"].decode()[len(self._prefix) :]
                for handler in list(self._handlers.get(name, ())):
                    try:
                        await handler(message["data"])
                    except Exception:
                        _log.exception("bus handler failed", channel=name)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

"""Redis pub/sub bus for several nodes sharing one Redis.

The node's own subscribers are called in process, before anything goes to Redis, so
delivery on one node never depends on Redis being up. Every payload sent through Redis
starts with this bus's origin id, so the listener can skip the node's own echoes.

Redis going away is an outage to ride out, not an error to raise: ``publish`` logs and
drops what cannot reach the other nodes (PostgreSQL keeps what matters; subscribers heal
their gaps from it), the listener reconnects with backoff and resubscribes, and
:meth:`RedisBus.routing_problem` says what is wrong meanwhile, for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import defaultdict

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from boltorezka.bus.base import Handler, RecoveryHook

_log = structlog.get_logger("boltorezka.bus.redis")
_ORIGIN_BYTES = 16
# How long start() waits for the first subscription before the node serves degraded.
_START_TIMEOUT = 10.0
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
_CLOSE_TIMEOUT = 2.0
_OUTAGE_ERRORS = (RedisError, OSError)


class RedisBus:
    def __init__(self, url: str, *, prefix: str = "boltorezka:") -> None:
        # Idle pub/sub connections are pinged, so a Redis that vanished without closing
        # the socket (a partition, a frozen host) is noticed too.
        self._redis = aioredis.Redis.from_url(
            url, health_check_interval=5, socket_connect_timeout=2
        )
        self._prefix = prefix
        self._origin = uuid.uuid4().bytes
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._recovery_hooks: list[RecoveryHook] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._connected = False
        # Set while Redis cannot be used: (since when, what went wrong).
        self._outage: tuple[float, str] | None = None

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def on_recovered(self, hook: RecoveryHook) -> None:
        self._recovery_hooks.append(hook)

    def routing_problem(self) -> str | None:
        if self._outage is None:
            return None
        since, error = self._outage
        return f"redis unreachable for {time.time() - since:.0f}s: {error}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="redis-bus")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=_START_TIMEOUT)
        except TimeoutError:
            # Serve this node's own connections meanwhile; /readyz reports the problem.
            _log.error("redis is unreachable at start; routing to other nodes waits for it")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError, *_OUTAGE_ERRORS):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._redis.aclose()

    async def publish(self, channel: str, data: bytes) -> None:
        await self._deliver(channel, data)
        if self._outage is not None:
            # Not a connection attempt per event while Redis is away: the listener notices
            # when it is back, and the other nodes heal what they missed from PostgreSQL.
            return
        try:
            await self._redis.publish(self._prefix + channel, self._origin + data)
        except _OUTAGE_ERRORS as exc:
            self._lost(exc)

    async def _deliver(self, channel: str, data: bytes) -> None:
        for handler in list(self._handlers.get(channel, ())):
            try:
                await handler(data)
            except Exception:
                # One failing subscriber must not keep the event from the others.
                _log.exception("bus handler failed", channel=channel)

    def _lost(self, exc: BaseException) -> None:
        if self._outage is None:
            self._outage = (time.time(), f"{type(exc).__name__}: {exc}")
            _log.error(
                "redis connection lost; events stay on this node until it is back",
                error=self._outage[1],
            )

    def _recovered(self) -> None:
        assert self._outage is not None
        _log.info(
            "redis connection recovered", outage_seconds=round(time.time() - self._outage[0], 1)
        )
        self._outage = None
        for hook in self._recovery_hooks:
            try:
                hook()
            except Exception:
                _log.exception("bus recovery hook failed")

    async def _listen(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            self._connected = False
            try:
                await self._listen_once()
            except _OUTAGE_ERRORS as exc:
                self._lost(exc)
            except Exception as exc:
                # Whatever broke the listener, routing is down until it runs again.
                _log.exception("redis bus listener failed; restarting it")
                self._lost(exc)
            self._subscribed.clear()
            if self._connected:
                backoff = _BACKOFF_FIRST
            # Full jitter, so nodes that lost Redis together do not come back in lockstep.
            await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - not security
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _listen_once(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            channels = [self._prefix + name for name in self._handlers]
            if channels:
                await pubsub.subscribe(*channels)
            else:
                await self._redis.ping()
            self._connected = True
            self._subscribed.set()
            if self._outage is not None:
                self._recovered()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if self._outage is not None:
                    # A publish failed while this subscription held: probe, and either
                    # recover or reconnect through the exception.
                    await self._redis.ping()
                    self._recovered()
                if message is None:
                    continue
                data: bytes = message["data"]
                if data[:_ORIGIN_BYTES] == self._origin:
                    continue  # delivered in process when it was published
                name = message["channel"].decode()[len(self._prefix) :]
                await self._deliver(name, data[_ORIGIN_BYTES:])
        finally:
            with contextlib.suppress(TimeoutError, *_OUTAGE_ERRORS):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

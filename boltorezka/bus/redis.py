"""Redis pub/sub bus for several nodes sharing one Redis.

The node's own subscribers are called in process, before anything goes to Redis, so
delivery on one node never depends on Redis being up. Every payload sent through Redis
starts with this bus's origin id, so the listener can skip the node's own echoes.

Family channels (``room:<id>``, ``user:<id>``) are subscribed in Redis only while the node
:meth:`RedisBus.listen` asks for them, so a node is sent the events of the rooms and users it
has connections for, and no others.

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

from boltorezka.bus.base import FamilyHandler, Handler, RecoveryHook, raise_if_cancelling
from boltorezka.bus.memory import deliver

_log = structlog.get_logger("boltorezka.bus.redis")
_ORIGIN_BYTES = 16
# How long start() waits for the first subscription before the node serves degraded.
_START_TIMEOUT = 10.0
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
_CLOSE_TIMEOUT = 2.0
_OUTAGE_ERRORS = (RedisError, OSError)
# How long listening() waits for Redis to confirm a subscription before giving up on it
# (a gap it leaves is healed by gap fill, as after an outage).
_CONFIRM_TIMEOUT = 5.0


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
        self._families: dict[str, FamilyHandler] = {}
        # Family channels this node wants from Redis, and those Redis confirmed on the
        # current connection; changes go out in order through one queue.
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._changes: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        self._recovery_hooks: list[RecoveryHook] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._subscribed = asyncio.Event()
        self._connected = False
        # Set while Redis cannot be used: (since when, what went wrong).
        self._outage: tuple[float, str] | None = None

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def subscribe_family(self, family: str, handler: FamilyHandler) -> None:
        self._families[family] = handler

    def listen(self, channel: str) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._confirmed[channel] = asyncio.Event()
            self._changes.put_nowait((True, channel))

    def unlisten(self, channel: str) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._confirmed.pop(channel, None)
            self._changes.put_nowait((False, channel))

    async def listening(self, channel: str) -> None:
        confirmed = self._confirmed.get(channel)
        if confirmed is None or self._outage is not None:
            return
        try:
            await asyncio.wait_for(confirmed.wait(), timeout=_CONFIRM_TIMEOUT)
        except TimeoutError:
            _log.warning("redis did not confirm a subscription in time", channel=channel)

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
        # The flag as well as the cancel: a client library that turns a cancellation in a
        # socket read into a connection error would otherwise send the listener round its
        # reconnect loop for good.
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_TIMEOUT * 2)
            if not done:
                _log.warning("the redis bus listener did not stop in time")
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
            raise_if_cancelling()
            self._lost(exc)

    async def _deliver(self, channel: str, data: bytes) -> None:
        await deliver(self._handlers, self._families, channel, data)

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
        while not self._closed:
            self._connected = False
            try:
                await self._listen_once()
            except _OUTAGE_ERRORS as exc:
                raise_if_cancelling()
                self._lost(exc)
            except Exception as exc:
                raise_if_cancelling()
                # Whatever broke the listener, routing is down until it runs again.
                _log.exception("redis bus listener failed; restarting it")
                self._lost(exc)
            self._subscribed.clear()
            if self._closed:
                return
            if self._connected:
                backoff = _BACKOFF_FIRST
            # Full jitter, so nodes that lost Redis together do not come back in lockstep.
            await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - not security
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _listen_once(self) -> None:
        pubsub = self._redis.pubsub()
        changes: asyncio.Task[None] | None = None
        try:
            # A fresh connection subscribes to everything wanted now; the queue of earlier
            # changes is moot.
            while not self._changes.empty():
                self._changes.get_nowait()
            for confirmed in self._confirmed.values():
                confirmed.clear()
            channels = [self._prefix + name for name in (*self._handlers, *self._wanted)]
            if channels:
                await pubsub.subscribe(*channels)
            else:
                await self._redis.ping()
            changes = asyncio.create_task(self._apply_changes(pubsub), name="redis-bus-changes")
            self._connected = True
            self._subscribed.set()
            if self._outage is not None:
                self._recovered()
            while True:
                if changes.done():
                    changes.result()  # an outage while subscribing: raise it here
                message = await pubsub.get_message(timeout=1.0)
                if self._outage is not None:
                    # A publish failed while this subscription held: probe, and either
                    # recover or reconnect through the exception.
                    await self._redis.ping()
                    self._recovered()
                if message is None:
                    continue
                name = message["channel"].decode()[len(self._prefix) :]
                if message["type"] == "subscribe":
                    waiter = self._confirmed.get(name)
                    if waiter is not None:
                        waiter.set()
                    continue
                if message["type"] != "message":
                    continue
                data: bytes = message["data"]
                if data[:_ORIGIN_BYTES] == self._origin:
                    continue  # delivered in process when it was published
                await self._deliver(name, data[_ORIGIN_BYTES:])
        finally:
            if changes is not None:
                changes.cancel()
                with contextlib.suppress(asyncio.CancelledError, *_OUTAGE_ERRORS):
                    await changes
            with contextlib.suppress(TimeoutError, *_OUTAGE_ERRORS):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _apply_changes(self, pubsub: aioredis.client.PubSub) -> None:
        """Send listen/unlisten changes in the order they were made. Redis answers a
        SUBSCRIBE on the same connection the listener reads, which confirms it."""
        while True:
            subscribe, channel = await self._changes.get()
            if subscribe:
                await pubsub.subscribe(self._prefix + channel)
            else:
                await pubsub.unsubscribe(self._prefix + channel)

"""Redis pub/sub bus for several nodes sharing one Redis (``redis://``, ``rediss://``,
``unix://``).

Everything common to the Redis buses (local-first delivery, echo skip, family channels
subscribed while listened to, outage survival, recovery hooks) is in
:mod:`boltorezka.bus.broker`. Here: one subscribing connection holds every channel with
classic SUBSCRIBE, and PUBLISH goes to the one server.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from boltorezka.bus.base import raise_if_cancelling
from boltorezka.bus.broker import (
    CLOSE_TIMEOUT,
    DEFAULT_PREFIX,
    OUTAGE_ERRORS,
    BrokerBus,
    Link,
)

# The key of the one server's problem in the base's bookkeeping.
_REDIS = "redis"


class RedisBus(BrokerBus):
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(prefix=prefix)
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=2)
        # Idle pub/sub connections are pinged, so a Redis that vanished without closing
        # the socket (a partition, a frozen host) is noticed too. No retries: a
        # reconnect must go through the link, which heals what was missed (Link).
        subscriber = aioredis.Redis.from_url(
            url, health_check_interval=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self._link = Link(self, _REDIS, subscriber, sharded=False)

    async def _run(self) -> None:
        self._link.channels.update(self._channels())
        await self._link.run()

    def _wanted_changed(self, channel: str, wanted: bool) -> None:
        if wanted:
            self._link.add(channel)
        else:
            self._link.remove(channel)

    async def _send(self, name: str, payload: bytes) -> None:
        if self._problems:
            # Not a connection attempt per event while Redis is away: the link notices
            # when it is back, and the other nodes heal what they missed from PostgreSQL.
            return
        try:
            await self._redis.publish(name, payload)
        except OUTAGE_ERRORS as exc:
            raise_if_cancelling()
            self._lost(_REDIS, exc)

    async def _close_connections(self) -> None:
        await self._link.stop()
        with contextlib.suppress(TimeoutError, *OUTAGE_ERRORS):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._redis.aclose()

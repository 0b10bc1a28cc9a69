"""Rate limits shared by every node: token buckets kept in Redis.

With several nodes, a per-process bucket lets N nodes allow N times the configured
budget. :class:`SharedLimiter` keeps each bucket in Redis and updates it atomically with a
Lua script on Redis's own clock, so the budget holds across nodes. When Redis cannot be
reached, it falls back to its per-process bucket (what one node would allow on its own)
rather than refusing or failing requests, and logs that once per outage.

On a Redis Cluster (a ``redis+cluster://`` URL) the script still touches one key, the
bucket's, so EVALSHA goes to the master owning that key's slot and the buckets spread over
the masters; redis-py's ``RedisCluster`` does the routing and follows slot moves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from boltorezka.bus.base import raise_if_cancelling
from boltorezka.bus.redis_cluster import ClusterAddress, is_cluster_url
from boltorezka.ratelimit import Limiter, LocalLimiter, TokenBucketLimiter

_log = structlog.get_logger("boltorezka.ratelimit")

# The client the buckets live behind: one Redis, or a cluster.
SharedRedis = aioredis.Redis | RedisCluster
# RedisCluster raises RedisClusterException (not a RedisError) when it cannot find a node.
_UNREACHABLE = (RedisError, RedisClusterException, OSError)
# After a failure, how long the node keeps to its own buckets before trying Redis again:
# a cluster in trouble can take a quarter of a second to refuse (CLUSTERDOWN), which a
# login or a chat send should not pay each time.
RETRY_AFTER_SECONDS = 1.0


def connect(url: str) -> SharedRedis:
    """The client for the buckets at ``url`` (``redis+cluster://``: a cluster). Short
    timeouts and no retries: a Redis in trouble costs a request little before the node's
    own bucket answers."""
    if is_cluster_url(url):
        return ClusterAddress.parse(url).cluster_client(
            socket_connect_timeout=1,
            socket_timeout=1,
            # After a failure RedisCluster re-reads the slot map on its next command, so a
            # failover costs one fallback, not an error.
            retry=Retry(NoBackoff(), 0),
        )
    return aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


# KEYS[1] the bucket; ARGV: capacity, refill per second, cost. Returns the milliseconds to
# wait (0: allowed, the cost taken). The bucket expires once it would be full again.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now_ms
tokens = math.min(capacity, tokens + math.max(0, now_ms - at) * rate / 1000)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.max(1, math.ceil((cost - tokens) / rate * 1000))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return wait
"""


class SharedLimiter:
    def __init__(
        self,
        redis: SharedRedis,
        name: str,
        buckets: TokenBucketLimiter,
        *,
        prefix: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key_prefix = f"{prefix}rl:{name}:"
        self._fallback = buckets
        self._script = redis.register_script(_TAKE)
        self._clock = clock
        self._degraded = False
        self._retry_at = 0.0

    async def take(self, key: str, cost: float = 1.0) -> int:
        if self._degraded and self._clock() < self._retry_at:
            return self._fallback.acquire(key, cost)
        try:
            wait = await self._script(
                keys=[self._key_prefix + key],
                args=[self._fallback.capacity, self._fallback.rate, cost],
            )
        except _UNREACHABLE as exc:
            raise_if_cancelling()
            self._retry_at = self._clock() + RETRY_AFTER_SECONDS
            if not self._degraded:
                self._degraded = True
                _log.warning(
                    "redis unreachable; rate limits are per node until it is back",
                    limiter=self._key_prefix,
                    error=type(exc).__name__,
                )
            return self._fallback.acquire(key, cost)
        if self._degraded:
            self._degraded = False
            _log.info("rate limits are shared across nodes again", limiter=self._key_prefix)
        return int(wait) if math.isfinite(float(wait)) else 0


def limiter(
    buckets: TokenBucketLimiter, name: str, redis: SharedRedis | None, prefix: str
) -> Limiter:
    """Shared through Redis when there is one, else this process's own."""
    if redis is None:
        return LocalLimiter(buckets)
    return SharedLimiter(redis, name, buckets, prefix=prefix)

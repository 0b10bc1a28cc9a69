"""Rate limits shared by every node: token buckets kept in Redis.

With several nodes, a per-process bucket lets N nodes allow N times the configured
budget. :class:`SharedLimiter` keeps each bucket in Redis and updates it atomically with a
Lua script on Redis's own clock, so the budget holds across nodes. When Redis cannot be
reached, it falls back to its per-process bucket (what one node would allow on its own)
rather than refusing or failing requests, and logs that once per outage.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from boltorezka.bus.base import raise_if_cancelling
from boltorezka.ratelimit import Limiter, LocalLimiter, TokenBucketLimiter

_log = structlog.get_logger("boltorezka.ratelimit")

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
        self, redis: aioredis.Redis, name: str, buckets: TokenBucketLimiter, *, prefix: str
    ) -> None:
        self._redis = redis
        self._key_prefix = f"{prefix}rl:{name}:"
        self._fallback = buckets
        self._script = redis.register_script(_TAKE)
        self._degraded = False

    async def take(self, key: str, cost: float = 1.0) -> int:
        try:
            wait = await self._script(
                keys=[self._key_prefix + key],
                args=[self._fallback.capacity, self._fallback.rate, cost],
            )
        except (RedisError, OSError) as exc:
            raise_if_cancelling()
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
    buckets: TokenBucketLimiter, name: str, redis: aioredis.Redis | None, prefix: str
) -> Limiter:
    """Shared through Redis when there is one, else this process's own."""
    if redis is None:
        return LocalLimiter(buckets)
    return SharedLimiter(redis, name, buckets, prefix=prefix)

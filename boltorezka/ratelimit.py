"""Token-bucket rate limiting, pure and clock-injected so it is testable without sleeping."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Per-key token buckets: ``capacity`` tokens, refilled at ``rate`` tokens per second.

    Keys are kept in LRU order and the table is bounded, so hostile key churn cannot grow
    memory without limit; an evicted key simply starts again with a full bucket.
    """

    def __init__(
        self,
        capacity: float,
        rate: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError("capacity and rate must be positive")
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def per_minute(cls, count: int, **kwargs: object) -> TokenBucketLimiter:
        return cls(capacity=count, rate=count / 60.0, **kwargs)  # type: ignore[arg-type]

    def acquire(self, key: str, cost: float = 1.0) -> int:
        """Take ``cost`` tokens for ``key``. Return 0 if allowed, else milliseconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0
        return max(1, math.ceil((cost - bucket.tokens) / self.rate * 1000))


class Limiter(Protocol):
    """A rate limit as the services use it: per node, or shared by every node."""

    async def take(self, key: str, cost: float = 1.0) -> int:
        """Take ``cost`` tokens for ``key``: 0 if allowed, else milliseconds to wait."""
        ...


class LocalLimiter:
    """This process's buckets (one node, or no Redis)."""

    def __init__(self, buckets: TokenBucketLimiter) -> None:
        self.buckets = buckets

    async def take(self, key: str, cost: float = 1.0) -> int:
        return self.buckets.acquire(key, cost)

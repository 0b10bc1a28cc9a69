"""The one place that turns ``BOLTOREZKA_REDIS_URL`` into a bus.

``redis+cluster://`` and ``rediss+cluster://`` mean a Redis Cluster (sharded pub/sub,
:mod:`boltorezka.bus.redis_cluster`); anything else redis-py understands (``redis://``,
``rediss://``, ``unix://``) means one Redis (:mod:`boltorezka.bus.redis`).
"""

from __future__ import annotations

from boltorezka.bus.broker import DEFAULT_PREFIX, BrokerBus
from boltorezka.bus.redis import RedisBus
from boltorezka.bus.redis_cluster import ClusterAddress, RedisClusterBus, is_cluster_url


def redis_bus(url: str, *, prefix: str = DEFAULT_PREFIX) -> BrokerBus:
    """The bus for the Redis (or Redis Cluster) at ``url``; raises ConfigError if a
    cluster URL is malformed."""
    if is_cluster_url(url):
        return RedisClusterBus(ClusterAddress.parse(url), prefix=prefix)
    return RedisBus(url, prefix=prefix)

"""Rate limits hold across nodes that share Redis, and fall back to each node's own
budget, never to errors, when Redis cannot be reached."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from boltorezka.app import build_app
from boltorezka.config import Settings
from boltorezka.ratelimit import TokenBucketLimiter
from boltorezka.ratelimit_shared import RETRY_AFTER_SECONDS, SharedLimiter
from boltorezka.runtime import Services
from tests.helpers import PASSWORD, expect_problem, free_port, register


async def _nodes(settings: Settings, pool: asyncpg.Pool, count: int) -> list[TestClient[Any, Any]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"  # keeps runs on one Redis apart
    nodes = []
    for _ in range(count):
        services = Services.build(settings, pool, redis_prefix=prefix)
        node: TestClient[Any, Any] = TestClient(TestServer(build_app(services), host="127.0.0.1"))
        await node.start_server()
        nodes.append(node)
    return nodes


@pytest.fixture
async def shared_nodes(
    settings: Settings, pool: asyncpg.Pool, redis_url: str
) -> AsyncIterator[list[TestClient[Any, Any]]]:
    limited = replace(settings, redis_url=redis_url, login_rate_per_minute=3)
    nodes = await _nodes(limited, pool, 2)
    yield nodes
    for node in nodes:
        await node.close()


async def _login(node: TestClient[Any, Any], username: str, password: str) -> Any:
    return await node.post("/v1/auth/login", json={"username": username, "password": password})


async def test_one_login_budget_across_nodes(shared_nodes: list[TestClient[Any, Any]]) -> None:
    one, two = shared_nodes
    account = await register(one)
    # Three tries in all, wherever they land; the fourth is refused by the other node.
    for node in (one, two, one):
        response = await _login(node, account.username, "wrong password")
        assert response.status == 401, await response.text()
    body = await expect_problem(await _login(two, account.username, PASSWORD), 429, "rate_limited")
    assert body["retryable"] is True


async def test_without_redis_each_node_keeps_its_own_budget(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limited = replace(settings, redis_url=unreachable, login_rate_per_minute=2)
    one, two = await _nodes(limited, pool, 2)
    try:
        account = await register(one)
        for node in (one, one):
            assert (await _login(node, account.username, PASSWORD)).status == 200
        await expect_problem(await _login(one, account.username, PASSWORD), 429, "rate_limited")
        # The other node still has its own budget: degraded, not broken.
        assert (await _login(two, account.username, PASSWORD)).status == 200
    finally:
        for node in (one, two):
            await node.close()


class _Unreachable:
    """A Redis client whose every script call fails, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def register_script(self, script: str) -> Any:
        async def run(keys: list[str], args: list[float]) -> int:
            self.calls += 1
            raise RedisConnectionError("down")

        return run


async def test_after_a_failure_redis_is_left_alone_for_a_moment() -> None:
    """A Redis in trouble (a cluster answering CLUSTERDOWN takes a quarter of a second) is
    not asked on every request: the node's own bucket answers, then Redis is tried again."""
    now = [1000.0]
    redis = _Unreachable()
    own = TokenBucketLimiter(2, 1.0, clock=lambda: now[0])
    limiter = SharedLimiter(cast(Any, redis), "t", own, prefix="p:", clock=lambda: now[0])
    assert await limiter.take("k") == 0
    assert await limiter.take("k") == 0
    assert await limiter.take("k") > 0  # the node's own bucket of two is empty
    assert redis.calls == 1
    now[0] += RETRY_AFTER_SECONDS
    await limiter.take("k")
    assert redis.calls == 2

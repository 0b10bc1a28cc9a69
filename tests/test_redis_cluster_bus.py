"""The Redis Cluster bus on its own, against a real 3-master cluster (tests/redis_cluster.py):
a subscription follows its slot to a new master (resharding, and a failover to a replica);
a whole-cluster outage is ridden out. And the parts that need no cluster: the URL, the
slot map, choosing the bus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis.crc import key_slot

from boltorezka.bus.broker import BrokerBus
from boltorezka.bus.factory import redis_bus
from boltorezka.bus.redis import RedisBus
from boltorezka.bus.redis_cluster import ClusterAddress, RedisClusterBus, SlotMap
from boltorezka.config import ConfigError
from tests.helpers import cli_env, eventually, run_cli, url_with_search_path
from tests.redis_cluster import PrivateRedisCluster, find_program
from tests.redis_server import require_program

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

# --- no cluster needed ----------------------------------------------------------------


def test_a_cluster_url_lists_seeds_and_credentials() -> None:
    address = ClusterAddress.parse("redis+cluster://bz:s%40cret@10.0.0.1:7000,10.0.0.2:7001/0")
    assert address.seeds == ("10.0.0.1:7000", "10.0.0.2:7001")
    assert (address.username, address.password, address.ssl) == ("bz", "s@cret", False)
    assert "s@cret" not in repr(address)
    tls = ClusterAddress.parse("rediss+cluster://:secret@redis.internal")
    assert tls.seeds == ("redis.internal:6379",)
    assert (tls.username, tls.password, tls.ssl) == (None, "secret", True)
    ipv6 = ClusterAddress.parse("redis+cluster://bz@[::1]:7000")
    assert (ipv6.seeds, ipv6.username, ipv6.password) == (("::1:7000",), "bz", None)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",  # one Redis, not a cluster
        "redis+cluster://",  # no seed
        "redis+cluster://127.0.0.1:notaport",
        "redis+cluster://127.0.0.1:70000",
        "redis+cluster://127.0.0.1:7000/1",  # a cluster has database 0 only
        "redis+cluster://127.0.0.1:7000/?timeout=1",
    ],
)
def test_a_malformed_cluster_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError):
        ClusterAddress.parse(url)


async def test_serve_with_a_malformed_cluster_url_exits_2_without_echoing_it(
    test_db: TestDatabase,
) -> None:
    env = cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        REDIS_URL="redis+cluster://bz:hunter2-secret@127.0.0.1:7000/3",
        PORT="0",
    )
    code, out, err = await run_cli("serve", env=env)
    assert code == 2, err
    assert "configuration error" in err and "database 0" in err
    assert "hunter2-secret" not in err and "hunter2-secret" not in out
    assert "Traceback" not in err


def test_the_url_chooses_the_bus() -> None:
    assert type(redis_bus("redis://127.0.0.1:6379/0")) is RedisBus
    assert type(redis_bus("unix:///run/redis.sock")) is RedisBus
    assert type(redis_bus("redis+cluster://127.0.0.1:7000")) is RedisClusterBus
    assert type(redis_bus("REDISS+CLUSTER://127.0.0.1:7000")) is RedisClusterBus


def test_the_slot_map_finds_each_slots_master() -> None:
    reply = [
        [10923, 16383, [b"10.0.0.3", 7002, b"id3"]],
        [0, 5460, [b"", 7000, b"id1"], [b"10.0.0.9", 7100, b"replica"]],
        [5461, 10922, [b"10.0.0.2", 7001, b"id2"]],
    ]
    slots = SlotMap.from_reply(reply, asked="10.0.0.1:7000")
    # A master that does not know its own address is the one that answered.
    assert slots.owner(0) == slots.owner(5460) == "10.0.0.1:7000"
    assert slots.owner(5461) == "10.0.0.2:7001"
    assert slots.owner(16383) == "10.0.0.3:7002"
    assert slots.masters() == {"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"}
    partial = SlotMap.from_reply([[0, 99, [b"10.0.0.1", 7000, b"id1"]]], asked="10.0.0.1:7000")
    assert partial.owner(100) is None


# --- against the cluster ------------------------------------------------------------------


@dataclass
class Pair:
    listener: BrokerBus
    sender: BrokerBus
    prefix: str
    received: list[bytes] = field(default_factory=list)
    recoveries: list[int] = field(default_factory=list)


async def _pair(cluster: PrivateRedisCluster) -> AsyncIterator[Pair]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    found = Pair(
        redis_bus(cluster.url, prefix=prefix),
        redis_bus(cluster.url, prefix=prefix),
        prefix,
    )

    async def on_room(key: str, data: bytes) -> None:
        found.received.append(data)

    found.listener.subscribe_family("room", on_room)
    found.listener.on_recovered(lambda: found.recoveries.append(1))
    await found.listener.start()
    await found.sender.start()
    try:
        yield found
    finally:
        await found.listener.close()
        await found.sender.close()


@pytest.fixture
async def pair(redis_cluster: PrivateRedisCluster) -> AsyncIterator[Pair]:
    """Two buses on the session's cluster, as two nodes would have: one listens, one
    publishes."""
    redis_cluster.ensure_healthy()
    async for found in _pair(redis_cluster):
        yield found


@pytest.fixture
def failover_cluster(tmp_path: Path) -> Iterator[PrivateRedisCluster]:
    """A cluster of the test's own, to fail over without disturbing the session's."""
    server = require_program(find_program("redis-server"), "redis-server 7+")
    cli = require_program(find_program("redis-cli"), "redis-cli 7+")
    cluster = PrivateRedisCluster(tmp_path, server, cli)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def failover_pair(failover_cluster: PrivateRedisCluster) -> AsyncIterator[Pair]:
    async for found in _pair(failover_cluster):
        yield found


async def test_a_moved_slot_is_resubscribed_on_its_new_master(
    pair: Pair, redis_cluster: PrivateRedisCluster
) -> None:
    channel = "room:moving"
    name = pair.prefix + channel
    pair.listener.listen(channel)
    await pair.listener.listening(channel)
    await pair.sender.publish(channel, b"before")
    await eventually(lambda: pair.received == [b"before"], "the first message")

    slot = key_slot(name.encode())
    old = redis_cluster.owner(name)
    new = next(port for port in redis_cluster.ports if port != old)
    try:
        # As a resharding does: the old master drops the subscription (sunsubscribe).
        await redis_cluster.move_slot(slot, new)

        async def resubscribed() -> bool:
            counts = await redis_cluster.shard_subscribers(name)
            return counts[new] == 1 and counts[old] == 0

        await eventually(resubscribed, "the subscription on the slot's new master")
        await eventually(lambda: pair.recoveries, "the recovery hooks after the move")
        # The sender still has the old map: its SPUBLISH is answered MOVED, and followed.
        await pair.sender.publish(channel, b"after")
        await eventually(lambda: pair.received == [b"before", b"after"], "the second message")
        assert pair.listener.routing_problem() is None
        assert pair.sender.routing_problem() is None
    finally:
        await redis_cluster.move_slot(slot, old)


async def test_a_whole_cluster_outage_is_ridden_out(
    pair: Pair, redis_cluster: PrivateRedisCluster
) -> None:
    channel = "room:outage"
    pair.listener.listen(channel)
    await pair.listener.listening(channel)
    for port in redis_cluster.ports:
        redis_cluster.kill_node(port)

    def all_masters_reported() -> bool:
        problem = pair.listener.routing_problem() or ""
        return all(f"127.0.0.1:{port}" in problem for port in redis_cluster.ports)

    await eventually(all_masters_reported, "every master reported unreachable")
    await pair.sender.publish(channel, b"while down")  # never raises; dropped for the others

    for port in redis_cluster.ports:
        redis_cluster.start_node(port)
    await eventually(
        lambda: pair.listener.routing_problem() is None and pair.sender.routing_problem() is None,
        "routing back on both buses",
    )
    await eventually(lambda: pair.recoveries, "the recovery hooks")
    await pair.listener.listening(channel)
    await pair.sender.publish(channel, b"after")
    await eventually(lambda: pair.received == [b"after"], "a message after the outage")
    await redis_cluster.wait_ok_async()


async def test_a_failover_moves_subscriptions_to_the_promoted_replica(
    failover_pair: Pair, failover_cluster: PrivateRedisCluster
) -> None:
    pair, cluster = failover_pair, failover_cluster
    channel = "room:failover"
    name = pair.prefix + channel
    master = cluster.owner(name)
    replica = cluster.add_replica(master)
    pair.listener.listen(channel)
    await pair.listener.listening(channel)
    await pair.sender.publish(channel, b"before")
    await eventually(lambda: pair.received == [b"before"], "the first message")

    cluster.kill_node(master)
    await eventually(
        lambda: f"127.0.0.1:{master}" in (pair.listener.routing_problem() or ""),
        "the master reported unreachable",
    )
    await cluster.take_over(replica)

    async def on_the_replica() -> bool:
        return (await cluster.shard_subscribers(name)).get(replica) == 1

    await eventually(on_the_replica, "the subscription on the promoted replica")
    # The dead master holds no slot any more: its link is retired, and its outage with it.
    await eventually(
        lambda: pair.listener.routing_problem() is None and pair.sender.routing_problem() is None,
        "routing back on both buses",
    )
    await eventually(lambda: pair.recoveries, "the recovery hooks")
    await pair.sender.publish(channel, b"after")
    await eventually(lambda: pair.received == [b"before", b"after"], "a message after")

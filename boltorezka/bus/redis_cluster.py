"""Redis Cluster bus: sharded pub/sub, so fan-out spreads over the cluster's masters.

Chosen by a ``redis+cluster://`` (or ``rediss+cluster://``, TLS) ``BOLTOREZKA_REDIS_URL``
listing one or more seed nodes: ``redis+cluster://[user:password@]host:port[,host:port]``.
The rest of the cluster is discovered from them (CLUSTER SLOTS).

Every channel, node-wide (``presence``, ``session``, a node's call channel) or in a family
(``room:<id>``, ``user:<id>``), is a *shard channel*: SPUBLISH goes to the master owning the
channel's hash slot, which sends it only to the subscribers it has, and SSUBSCRIBE is made
on that master. Classic PUBLISH on a cluster is instead copied over Redis's node-to-node
links to every node, so each message costs every master, and that cost grows with the
cluster; with shard channels a message costs one master, and the channels spread over
all of them.
Node-wide channels are few and low-rate, so they gain little from sharding, but one
mechanism for every channel means one way to fail and recover.

This module keeps its own connections rather than redis-py's cluster pub/sub (async
``RedisCluster.pubsub()`` exists only from redis-py 8, and reads the shards in turn, one
timeout each): one subscribing :class:`~boltorezka.bus.broker.Link` per master, holding
the channels whose slots it owns, and one command client per master for SPUBLISH. Where
a slot lives comes from the slot map, refreshed when a link fails, when a publish is
answered MOVED, when Redis drops a subscription because its slot moved (a ``sunsubscribe``
nobody asked for), and every ten seconds in any case. A channel whose slot moved to
another master (resharding, a failover) is unsubscribed from the old link and subscribed
on the new one, and the recovery hooks run once it is confirmed there, so what the move
missed is healed from PostgreSQL. A master going away is an outage of the channels it
holds, reported by :meth:`routing_problem` until its link is back; the rest keep routing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError

from boltorezka.bus.base import raise_if_cancelling
from boltorezka.bus.broker import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    CLOSE_TIMEOUT,
    DEFAULT_PREFIX,
    OUTAGE_ERRORS,
    BrokerBus,
    Link,
)
from boltorezka.config import ConfigError

_log = structlog.get_logger("boltorezka.bus.redis")

# URL scheme → whether it is TLS.
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
DEFAULT_PORT = 6379
# The key of the problem "no slot map known yet" in the base's bookkeeping.
_TOPOLOGY = "cluster"
# How often the slot map is checked even when nothing failed (a failover whose old master
# stays reachable, a resharding Redis did not tell a subscriber about).
REFRESH_SECONDS = 10.0
_DISCOVER_TIMEOUT = 3.0


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def _host_port(item: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    if not colon:
        host, port = item, str(DEFAULT_PORT)
    host = host.strip("[]")  # an IPv6 address in brackets
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad Redis Cluster node {item!r}: expected host:port")
    return host, int(port)


@dataclass(frozen=True)
class ClusterAddress:
    """Where a cluster is and how to log in: its seed nodes (``host:port``) and credentials."""

    seeds: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> ClusterAddress:
        scheme, separator, rest = url.partition("://")
        if not separator or scheme.lower() not in CLUSTER_SCHEMES:
            raise ConfigError(f"not a Redis Cluster URL (redis+cluster://...): {scheme}://")
        rest, _, query = rest.partition("?")
        netloc, _, database = rest.partition("/")
        if query:
            raise ConfigError("a Redis Cluster URL takes no ?options")
        if database not in ("", "0"):
            raise ConfigError("a Redis Cluster has only database 0")
        credentials, _, hosts = netloc.rpartition("@")
        # As redis-py reads redis:// URLs: user:password@, :password@ or user@.
        username, _, password = credentials.partition(":")
        seeds = tuple(
            "{}:{}".format(*_host_port(item.strip())) for item in hosts.split(",") if item.strip()
        )
        if not seeds:
            raise ConfigError("a Redis Cluster URL needs at least one host:port")
        return cls(
            seeds=seeds,
            username=unquote(username) or None,
            password=unquote(password) or None,
            ssl=CLUSTER_SCHEMES[scheme.lower()],
        )

    def client(self, where: str, **options: Any) -> aioredis.Redis:
        """A client of one node (``host:port``)."""
        host, port = _host_port(where)
        return aioredis.Redis(
            host=host,
            port=port,
            username=self.username,
            password=self.password,
            ssl=self.ssl,
            **options,
        )

    def cluster_client(self, **options: Any) -> RedisCluster:
        """A client of the whole cluster, routing each keyed command to its slot's master."""
        return RedisCluster(
            startup_nodes=[ClusterNode(*_host_port(seed)) for seed in self.seeds],
            username=self.username,
            password=self.password,
            ssl=self.ssl,
            **options,
        )


class ClusterTopologyError(RuntimeError):
    """A node answered CLUSTER SLOTS with nothing usable."""


class SlotMap:
    """Which master owns each hash slot, from one CLUSTER SLOTS answer."""

    def __init__(self, ranges: Iterable[tuple[int, int, str]]) -> None:
        self.ranges = tuple(sorted(ranges))
        self._firsts = [first for first, _, _ in self.ranges]

    @classmethod
    def from_reply(cls, reply: Any, asked: str) -> SlotMap:
        """From CLUSTER SLOTS: ``[[first, last, [host, port, id, ...], replicas...], ...]``."""
        ranges = []
        for entry in reply or ():
            master = entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            if host in ("", "?"):
                # The node does not know its own address: it is the one that answered.
                host = _host_port(asked)[0]
            ranges.append((int(entry[0]), int(entry[1]), f"{host}:{int(master[1])}"))
        if not ranges:
            raise ClusterTopologyError(f"{asked} serves no slots (not in a cluster yet?)")
        return cls(ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def owner(self, slot: int) -> str | None:
        """The master owning ``slot``, or None if no master serves it."""
        index = bisect.bisect_right(self._firsts, slot) - 1
        if index >= 0:
            first, last, master = self.ranges[index]
            if first <= slot <= last:
                return master
        return None

    def masters(self) -> set[str]:
        return {master for _, _, master in self.ranges}


def slot_of(name: str) -> int:
    return key_slot(name.encode())


class RedisClusterBus(BrokerBus):
    def __init__(
        self,
        address: ClusterAddress,
        *,
        prefix: str = DEFAULT_PREFIX,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        super().__init__(prefix=prefix)
        self._address = address
        self._refresh_seconds = refresh_seconds
        self._slots: SlotMap | None = None
        # One link per master, and which master each channel is subscribed on.
        self._links: dict[str, Link] = {}
        self._assigned: dict[str, str] = {}
        # Channels no master serves right now (their slot uncovered, or just dropped and
        # waiting for a fresh slot map).
        self._unplaced: set[str] = set()
        # Channels whose subscription moved to another master: once all are confirmed
        # there, the recovery hooks heal what the move missed.
        self._healing: set[str] = set()
        # Command clients (SPUBLISH, CLUSTER SLOTS), one per node, made when first needed.
        self._clients: dict[str, aioredis.Redis] = {}
        self._refresh = asyncio.Event()
        self._hint: str | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._refresh_failing = False

    # --- topology -----------------------------------------------------------------------

    async def _run(self) -> None:
        self._unplaced.update(self._channels())
        backoff = BACKOFF_FIRST
        while not self.closed:
            self._refresh.clear()
            try:
                slots = await self._discover()
            except (*OUTAGE_ERRORS, TimeoutError, ClusterTopologyError) as exc:
                raise_if_cancelling()
                if self._slots is None:
                    self._lost(_TOPOLOGY, exc)
                elif not self._refresh_failing:
                    # The links report their own masters; this only delays a move.
                    _log.warning("cannot refresh the redis cluster slot map", error=str(exc))
                self._refresh_failing = True
                await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - not security
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self._refresh_failing = False
            self._apply(slots)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), timeout=self._refresh_seconds)

    def _request_refresh(self, hint: str | None = None) -> None:
        if hint is not None:
            self._hint = hint
        self._refresh.set()

    async def _discover(self) -> SlotMap:
        """The slot map, from the first node that answers: the one a redirect named, the
        masters known (those in trouble last), then the seeds."""
        known = sorted(self._links, key=lambda where: where in self._problems)
        hint = [self._hint] if self._hint is not None else []
        self._hint = None
        candidates = list(dict.fromkeys([*hint, *known, *self._address.seeds]))
        failure: BaseException = ClusterTopologyError("no Redis Cluster node to ask")
        for where in candidates:
            try:
                async with asyncio.timeout(_DISCOVER_TIMEOUT):
                    reply = await self._command(where).cluster("SLOTS")
                return SlotMap.from_reply(reply, asked=where)
            except (*OUTAGE_ERRORS, TimeoutError, ClusterTopologyError) as exc:
                raise_if_cancelling()
                failure = exc
        raise failure

    def _apply(self, slots: SlotMap) -> None:
        changed = slots != self._slots
        self._slots = slots
        masters = slots.masters()
        # Routing was down with no map at all: the first subscriptions heal what it missed.
        owes_recovery = self._problems.pop(_TOPOLOGY, None) is not None
        for where in sorted(masters - self._links.keys()):
            subscriber = self._address.client(
                where,
                health_check_interval=5,
                socket_connect_timeout=2,
                retry=Retry(NoBackoff(), 0),  # reconnects go through the link (Link)
            )
            link = Link(self, where, subscriber, sharded=True, owes_recovery=owes_recovery)
            self._links[where] = link
            link.start()
        for channel in self._channels() if changed else list(self._unplaced):
            self._place(channel)
        for where in self._links.keys() - masters:
            # No longer a master (failed over, removed): its channels moved above.
            link = self._links.pop(where)
            self._problems.pop(where, None)
            _log.info("redis cluster node no longer a master; its link is retired", where=where)
            task = asyncio.create_task(link.stop(), name=f"redis-bus-retire {where}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if changed:
            _log.info("redis cluster slot map", masters=sorted(masters), ranges=len(slots.ranges))

    def _place(self, channel: str) -> None:
        """Subscribe ``channel`` on the master owning its slot, moving it if need be."""
        assert self._slots is not None
        where = self._slots.owner(slot_of(self.prefix + channel))
        current = self._assigned.get(channel)
        if where is not None and where == current:
            self._unplaced.discard(channel)
            return
        if current is not None:
            old = self._links.get(current)
            if old is not None:
                old.remove(channel)
            self._healing.add(channel)
            del self._assigned[channel]
        if where is None:
            self._unplaced.add(channel)
            return
        self._unplaced.discard(channel)
        self._assigned[channel] = where
        self._links[where].add(channel)

    # --- BrokerBus ----------------------------------------------------------------------

    def _wanted_changed(self, channel: str, wanted: bool) -> None:
        if wanted:
            if self._slots is not None:
                self._place(channel)
            else:
                self._unplaced.add(channel)  # placed with the first slot map
            return
        self._unplaced.discard(channel)
        current = self._assigned.pop(channel, None)
        if current is not None and current in self._links:
            self._links[current].remove(channel)
        if channel in self._healing:
            self._healing.discard(channel)
            if not self._healing:
                self._healed(None)

    def _confirm(self, channel: str) -> None:
        super()._confirm(channel)
        if channel in self._healing:
            self._healing.discard(channel)
            if not self._healing:
                self._healed(None)

    def _current(self, link: Link) -> bool:
        """Whether ``link`` is still in use: a retired one may report until it stops."""
        return self._links.get(link.where) is link

    def _dropped(self, link: Link, channel: str) -> None:
        if not self._current(link):
            return
        super()._dropped(link, channel)
        if self._assigned.get(channel) == link.where:
            del self._assigned[channel]
        self._unplaced.add(channel)
        self._healing.add(channel)
        # The node that dropped it knows where its slot went.
        self._request_refresh(hint=link.where)

    def _link_failed(self, link: Link, exc: BaseException) -> None:
        if not self._current(link):
            return
        super()._link_failed(link, exc)
        # MOVED names the slot's new owner, which knows the new map first.
        self._request_refresh(hint=f"{exc.host}:{exc.port}" if isinstance(exc, AskError) else None)

    def _link_ready(self, link: Link) -> None:
        if all(each.sessions > 0 for each in self._links.values()):
            self._ready.set()

    def _route_down(self, channel: str) -> bool:
        where = self._assigned.get(channel)
        return where is None or where in self._problems

    def _describe(self, where: str, seconds: float, error: str) -> str:
        if where == _TOPOLOGY:
            return f"redis cluster unreachable for {seconds:.0f}s: {error}"
        return f"redis cluster node {where} unreachable for {seconds:.0f}s: {error}"

    def routing_problem(self) -> str | None:
        problem = super().routing_problem()
        if self._slots is not None and self._unplaced:
            unplaced = f"{len(self._unplaced)} channel(s) in slots no redis cluster master serves"
            return unplaced if problem is None else f"{problem}; {unplaced}"
        return problem

    async def _send(self, name: str, payload: bytes) -> None:
        if self._slots is None:
            return  # routing is down (reported); the other nodes heal from PostgreSQL
        where = self._slots.owner(slot_of(name))
        if where is None or where in self._problems:
            return  # not a connection attempt per event while that master is away
        try:
            await self._command(where).spublish(name, payload)
        except AskError as moved:
            # The slot moved since the map was read: follow the redirect once.
            target = f"{moved.host}:{moved.port}"
            self._request_refresh(hint=target)
            try:
                await self._command(target).spublish(name, payload)
            except OUTAGE_ERRORS as exc:
                raise_if_cancelling()
                self._publish_failed(target, exc)
        except OUTAGE_ERRORS as exc:
            raise_if_cancelling()
            self._publish_failed(where, exc)

    def _publish_failed(self, where: str, exc: BaseException) -> None:
        if where in self._links:
            self._lost(where, exc)  # its link probes it and clears this
        else:
            _log.warning("redis cluster publish failed", where=where, error=str(exc))
        self._request_refresh()

    def _command(self, where: str) -> aioredis.Redis:
        client = self._clients.get(where)
        if client is None:
            # One retry: a pooled connection a restarted server closed is replaced at once.
            client = self._address.client(
                where, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 1)
            )
            self._clients[where] = client
        return client

    async def _close_connections(self) -> None:
        links = list(self._links.values())
        self._links.clear()
        await asyncio.gather(*(link.stop() for link in links), *self._retiring)
        for client in self._clients.values():
            with contextlib.suppress(TimeoutError, *OUTAGE_ERRORS):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await client.aclose()
        self._clients.clear()

"""What every bus that routes between nodes through Redis shares, one Redis or a cluster.

:class:`BrokerBus` is the behaviour of the :class:`~boltorezka.bus.base.Bus` contract that
does not depend on where the channels live:

- the node's own subscribers are called in process, before anything goes to Redis, so
  delivery on one node never depends on Redis being up; every payload sent through Redis
  starts with this bus's origin id, so the node's own echoes are skipped;
- family channels (``room:<id>``, ``user:<id>``) are subscribed only while the node
  :meth:`~BrokerBus.listen`\\ s to them, so a node is sent only what it has an audience for;
- Redis going away is an outage to ride out, not an error to raise: ``publish`` drops what
  cannot reach the other nodes (PostgreSQL keeps what matters; subscribers heal their gaps
  from it), each subscribing connection reconnects with jittered backoff and resubscribes,
  :meth:`~BrokerBus.routing_problem` says what is wrong meanwhile (readiness), and the
  recovery hooks run each time a subscription was re-established, so the hub catches its
  subscribers up from PostgreSQL.

A :class:`Link` is one subscribing connection to one Redis server, holding a set of
channels across reconnects. :class:`~boltorezka.bus.redis.RedisBus` has one link, with
classic SUBSCRIBE; :class:`~boltorezka.bus.redis_cluster.RedisClusterBus` has one per
master, with sharded SSUBSCRIBE, and moves channels between them as slots move.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import AskError, RedisError

from boltorezka.bus.base import FamilyHandler, Handler, RecoveryHook, raise_if_cancelling
from boltorezka.bus.memory import deliver
from boltorezka.observability import tracing

_log = structlog.get_logger("boltorezka.bus.redis")

DEFAULT_PREFIX = "boltorezka:"
ORIGIN_BYTES = 16
# How long start() waits for routing to work before the node serves degraded.
START_TIMEOUT = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
CLOSE_TIMEOUT = 2.0
OUTAGE_ERRORS = (RedisError, OSError)
# How long listening() waits for Redis to confirm a subscription before giving up on it
# (a gap it leaves is healed by gap fill, as after an outage).
CONFIRM_TIMEOUT = 5.0
# How long a subscribing connection waits for a message before it checks on its state.
_POLL_SECONDS = 1.0
# When the recovery hooks run a second time after an outage. The other nodes drop their
# publishes until their own connection is back, up to one backoff later than this node's:
# the second pass catches up what they committed meanwhile, so the last messages before
# a room goes quiet are not left for the next message to reveal.
SECOND_RECOVERY_SECONDS = BACKOFF_MAX + 0.5


class BrokerBus(ABC):
    """The Redis-backed buses' common part; subclasses say where channels live."""

    def __init__(self, *, prefix: str) -> None:
        self.prefix = prefix
        self._origin = uuid.uuid4().bytes
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._families: dict[str, FamilyHandler] = {}
        # Family channels this node wants from Redis, and whether Redis confirmed each on
        # the connection holding it now.
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._recovery_hooks: list[RecoveryHook] = []
        # What cannot be reached now, by where (a server, or the cluster as a whole):
        # (since when, what went wrong). Empty: routing works.
        self._problems: dict[str, tuple[float, str]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._second_recovery: asyncio.TimerHandle | None = None
        self.closed = False

    # --- the Bus interface ------------------------------------------------------------

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def subscribe_family(self, family: str, handler: FamilyHandler) -> None:
        self._families[family] = handler

    def listen(self, channel: str) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._confirmed[channel] = asyncio.Event()
            self._wanted_changed(channel, True)

    def unlisten(self, channel: str) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._confirmed.pop(channel, None)
            self._wanted_changed(channel, False)

    async def listening(self, channel: str) -> None:
        confirmed = self._confirmed.get(channel)
        if confirmed is None or self._route_down(channel):
            return
        try:
            await asyncio.wait_for(confirmed.wait(), timeout=CONFIRM_TIMEOUT)
        except TimeoutError:
            _log.warning("redis did not confirm a subscription in time", channel=channel)

    def on_recovered(self, hook: RecoveryHook) -> None:
        self._recovery_hooks.append(hook)

    def routing_problem(self) -> str | None:
        if not self._problems:
            return None
        now = time.time()
        return "; ".join(
            self._describe(where, now - since, error)
            for where, (since, error) in sorted(self._problems.items())
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-bus")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=START_TIMEOUT)
        except TimeoutError:
            # Serve this node's own connections meanwhile; /readyz reports the problem.
            _log.error("redis is unreachable at start; routing to other nodes waits for it")

    async def close(self) -> None:
        # The flag as well as the cancel: a client library that turns a cancellation in a
        # socket read into a connection error would otherwise send a listener round its
        # reconnect loop for good.
        self.closed = True
        if self._second_recovery is not None:
            self._second_recovery.cancel()
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT * 2)
            if not done:
                _log.warning("the redis bus listener did not stop in time")
        await self._close_connections()

    async def publish(self, channel: str, data: bytes) -> None:
        with tracing.publish_span(channel, len(data), "redis"):
            await deliver(self._handlers, self._families, channel, data)
            await self._send(self.prefix + channel, self._origin + data)

    # --- what subclasses provide --------------------------------------------------------

    @abstractmethod
    async def _run(self) -> None:
        """The background work: keep the subscriptions up until closed."""

    @abstractmethod
    async def _send(self, name: str, payload: bytes) -> None:
        """Publish to the other nodes; never raise for an outage (record it instead)."""

    @abstractmethod
    def _wanted_changed(self, channel: str, wanted: bool) -> None:
        """A family channel was listened to (``wanted``) or unlistened."""

    @abstractmethod
    async def _close_connections(self) -> None: ...

    def _route_down(self, channel: str) -> bool:
        """Whether other nodes' publishes on ``channel`` cannot reach this node now."""
        return bool(self._problems)

    def _describe(self, where: str, seconds: float, error: str) -> str:
        return f"redis unreachable for {seconds:.0f}s: {error}"

    def _link_ready(self, link: Link) -> None:
        """``link`` has (re)subscribed; with its one link, the base is ready from then."""
        self._ready.set()

    def _link_failed(self, link: Link, exc: BaseException) -> None:
        if isinstance(exc, AskError):
            # MOVED or ASK (MovedError is an AskError): the server is there, the slot is
            # not; a resubscription follows, and with it the recovery hooks.
            _log.info("redis moved a subscription's slot", where=link.where, error=str(exc))
            return
        self._lost(link.where, exc)

    def _dropped(self, link: Link, channel: str) -> None:
        """Redis ended a subscription ``link`` still wants (a sharded channel's slot moved
        away from its server). Only a cluster has them."""
        _log.warning("redis dropped a subscription", where=link.where, channel=channel)

    # --- shared machinery ---------------------------------------------------------------

    def _channels(self) -> list[str]:
        """Every channel this node needs from Redis: node-wide ones and listened families."""
        return [*self._handlers, *self._wanted]

    def _confirm(self, channel: str) -> None:
        confirmed = self._confirmed.get(channel)
        if confirmed is not None:
            confirmed.set()

    def _unconfirm(self, channel: str) -> None:
        confirmed = self._confirmed.get(channel)
        if confirmed is not None:
            confirmed.clear()

    async def _receive(self, channel: str, data: bytes) -> None:
        if data[:ORIGIN_BYTES] == self._origin:
            return  # delivered in process when it was published
        await deliver(self._handlers, self._families, channel, data[ORIGIN_BYTES:])

    def _lost(self, where: str, exc: BaseException) -> None:
        if where not in self._problems:
            self._problems[where] = (time.time(), f"{type(exc).__name__}: {exc}")
            _log.error(
                "redis connection lost; events stay on this node until it is back",
                where=where,
                error=self._problems[where][1],
            )

    def _healed(self, where: str | None) -> None:
        """Subscriptions were re-established (through ``where``, if given): clear its
        problem and run the recovery hooks, which catch subscribers up from PostgreSQL."""
        problem = self._problems.pop(where, None) if where is not None else None
        if problem is not None:
            _log.info(
                "redis connection recovered",
                where=where,
                outage_seconds=round(time.time() - problem[0], 1),
            )
        self._run_recovery_hooks()
        if self._second_recovery is not None:
            self._second_recovery.cancel()
        self._second_recovery = asyncio.get_running_loop().call_later(
            SECOND_RECOVERY_SECONDS, self._run_recovery_hooks
        )

    def _run_recovery_hooks(self) -> None:
        if self.closed:
            return
        for hook in self._recovery_hooks:
            try:
                hook()
            except Exception:
                _log.exception("bus recovery hook failed")


class Link:
    """One subscribing connection to one Redis server, and the channels it should hold.

    The connection is made afresh after every failure, never silently by the client
    library: ``client`` must not retry (``Retry(NoBackoff(), 0)``), or redis-py would
    reconnect and resubscribe inside a read, and what was published meanwhile would be
    missed with no recovery hook to heal it.
    """

    def __init__(
        self,
        bus: BrokerBus,
        where: str,
        client: aioredis.Redis,
        *,
        sharded: bool,
        owes_recovery: bool = False,
    ) -> None:
        self.bus = bus
        self.where = where
        self.client = client
        self.channels: set[str] = set()
        self._sharded = sharded
        # Changes made while a session runs go out in order through one queue.
        self._changes: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        # Unsubscribes sent and not yet answered: their answers are expected; any other
        # sunsubscribe is Redis dropping a subscription.
        self._unsubscribing: Counter[str] = Counter()
        self.sessions = 0
        self._owes_recovery = owes_recovery
        self._connected = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def add(self, channel: str) -> None:
        if channel not in self.channels:
            self.channels.add(channel)
            self.bus._unconfirm(channel)
            self._changes.put_nowait((True, channel))

    def remove(self, channel: str) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            self._changes.put_nowait((False, channel))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"redis-bus-link {self.where}")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT * 2)
            if not done:
                _log.warning("a redis bus link did not stop in time", where=self.where)
        with contextlib.suppress(TimeoutError, *OUTAGE_ERRORS):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.client.aclose()

    async def run(self) -> None:
        backoff = BACKOFF_FIRST
        while not (self._stopped or self.bus.closed):
            self._connected = False
            try:
                await self._session()
            except OUTAGE_ERRORS as exc:
                raise_if_cancelling()
                self.bus._link_failed(self, exc)
            except Exception as exc:
                raise_if_cancelling()
                # Whatever broke the session, routing through here is down until it runs.
                _log.exception("redis bus link failed; restarting it", where=self.where)
                self.bus._link_failed(self, exc)
            if self._stopped or self.bus.closed:
                return
            if self._connected:
                backoff = BACKOFF_FIRST
            # Full jitter, so nodes that lost Redis together do not come back in lockstep.
            await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - not security
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        pubsub = self.client.pubsub()
        changes: asyncio.Task[None] | None = None
        try:
            # A fresh connection subscribes to everything wanted now; the queue of earlier
            # changes is moot.
            while not self._changes.empty():
                self._changes.get_nowait()
            self._unsubscribing.clear()
            for channel in self.channels:
                self.bus._unconfirm(channel)
            # Connected before subscribing: a link may hold no channel (yet), and still
            # has to prove its server is there and wait for work.
            await pubsub.connect()  # type: ignore[no-untyped-call]
            names = [self.bus.prefix + channel for channel in self.channels]
            if self._sharded:
                # One SSUBSCRIBE per channel: channels in different slots in one command
                # are refused (CROSSSLOT).
                for name in names:
                    await pubsub.ssubscribe(name)
            elif names:
                await pubsub.subscribe(*names)
            changes = asyncio.create_task(self._apply_changes(pubsub), name="redis-bus-changes")
            self._connected = True
            self.sessions += 1
            resubscribed = self.sessions > 1 and bool(self.channels)
            if resubscribed or self._owes_recovery or self.where in self.bus._problems:
                # Whatever was published while these channels were not subscribed is
                # healed from PostgreSQL.
                self._owes_recovery = False
                self.bus._healed(self.where)
            self.bus._link_ready(self)
            while True:
                if changes.done():
                    changes.result()  # an outage while subscribing: raise it here
                message = await pubsub.get_message(timeout=_POLL_SECONDS)
                if self.where in self.bus._problems:
                    # A publish failed while this subscription held: probe, and either
                    # recover or reconnect through the exception.
                    await self.client.ping()
                    self.bus._healed(self.where)
                if message is not None:
                    await self._handle(message)
        finally:
            if changes is not None:
                changes.cancel()
                with contextlib.suppress(asyncio.CancelledError, *OUTAGE_ERRORS):
                    await changes
            with contextlib.suppress(TimeoutError, *OUTAGE_ERRORS):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        raw = message["channel"]
        if not isinstance(raw, bytes):
            return  # a pong: no channel
        name = raw.decode()
        if not name.startswith(self.bus.prefix):
            return
        channel = name[len(self.bus.prefix) :]
        if kind in ("subscribe", "ssubscribe"):
            if channel in self.channels:
                self.bus._confirm(channel)
        elif kind in ("unsubscribe", "sunsubscribe"):
            if self._unsubscribing[channel] > 0:
                self._unsubscribing[channel] -= 1
            elif channel in self.channels:
                self.channels.discard(channel)
                self.bus._dropped(self, channel)
        elif kind in ("message", "smessage"):
            await self.bus._receive(channel, message["data"])

    async def _apply_changes(self, pubsub: aioredis.client.PubSub) -> None:
        """Send listen/unlisten changes in the order they were made. Redis answers a
        subscription on the connection the session reads, which confirms it."""
        while True:
            subscribe, channel = await self._changes.get()
            name = self.bus.prefix + channel
            if subscribe:
                await (pubsub.ssubscribe(name) if self._sharded else pubsub.subscribe(name))
            else:
                self._unsubscribing[channel] += 1
                await (pubsub.sunsubscribe(name) if self._sharded else pubsub.unsubscribe(name))

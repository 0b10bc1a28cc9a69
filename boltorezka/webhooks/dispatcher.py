"""The node's webhook dispatcher: claims due outbox rows, POSTs them signed, records how.

Every node runs one. Claims take rows with ``FOR UPDATE SKIP LOCKED`` and a lease (the
row's next attempt moves past the longest a delivery can take), so nodes share the work
and never send one row at the same time; a node that dies mid-delivery leaves its rows to
come due when the lease ends. A 2xx answer marks the row delivered: it is never sent
again. Anything else (a refused connection, a timeout, a redirect, another status) is
retried with exponential backoff and jitter until the attempts or the age allowed run out.
Delivery is at least once: a receiver deduplicates on the event id, which every attempt
and every endpoint of one event share.

This is the delivery transport, beside api/ and realtime/: it is what uses aiohttp's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import asyncpg
import msgspec
import structlog

from boltorezka import __version__
from boltorezka.config import Settings
from boltorezka.observability.metrics import Metrics
from boltorezka.store import webhooks as store
from boltorezka.store.outage import OUTAGE_ERRORS
from boltorezka.store.webhooks import Delivery
from boltorezka.webhooks import signing

_log = structlog.get_logger("boltorezka.webhooks")

STATS_SECONDS = 5.0
PURGE_SECONDS = 60.0
# After a failed claim (the database is away), wait this long at most before trying again.
MAX_PAUSE_SECONDS = 30.0
# A stopping node lets deliveries under way finish for this long, then hands them back.
CLOSE_GRACE_SECONDS = 5.0
_READ_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Policy:
    """The ``BOLTOREZKA_WEBHOOK_*`` settings the dispatcher runs by."""

    enabled: bool = True
    timeout_seconds: float = 10.0
    concurrency: int = 8
    poll_seconds: float = 1.0
    max_attempts: int = 20
    max_age_seconds: float = 3 * 86400
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 3600.0
    retention_seconds: float = 7 * 86400

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            enabled=settings.webhook_dispatch,
            timeout_seconds=settings.webhook_timeout_seconds,
            concurrency=settings.webhook_concurrency,
            poll_seconds=settings.webhook_poll_seconds,
            max_attempts=settings.webhook_max_attempts,
            max_age_seconds=settings.webhook_max_age_seconds,
            retry_base_seconds=settings.webhook_retry_base_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            retention_seconds=settings.webhook_retention_seconds,
        )

    @property
    def lease_seconds(self) -> float:
        # Longer than any one attempt, marking it included, so a live claim never expires.
        return 2 * self.timeout_seconds + 10.0

    def retry_delay(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Exponential in the attempts made, capped, with the upper half jittered so that
        deliveries failed together do not all come back together."""
        growth = float(2 ** max(0, min(attempts - 1, 40)))
        ceiling = min(self.retry_max_seconds, self.retry_base_seconds * growth)
        return ceiling / 2 + rng() * ceiling / 2


class _Event(msgspec.Struct, rename="camel"):
    id: uuid.UUID
    type: str
    created_at: datetime
    data: msgspec.Raw


_encoder = msgspec.json.Encoder()


def body_of(delivery: Delivery) -> bytes:
    """The request body: the same bytes on every attempt."""
    event = _Event(
        id=delivery.event_id,
        type=delivery.event_type,
        created_at=delivery.created_at,
        data=msgspec.Raw(delivery.payload.encode()),
    )
    return _encoder.encode(event)


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        policy: Policy,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self.policy = policy
        self._rng = rng
        # Marks this dispatcher's claims, so a row claimed again elsewhere is not touched.
        self._token = uuid.uuid4()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._next_stats = 0.0
        self._next_purge = 0.0

    def start(self) -> None:
        if not self.policy.enabled or self._task is not None:
            return
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout_seconds),
            connector=aiohttp.TCPConnector(limit=self.policy.concurrency),
            headers={"User-Agent": f"Boltorezka-Webhooks/{__version__}"},
            # Nothing of the node's own environment (proxies, netrc) reaches receivers.
            trust_env=False,
        )
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._in_flight:
            await asyncio.wait(
                set(self._in_flight), timeout=min(CLOSE_GRACE_SECONDS, self.policy.timeout_seconds)
            )
        unfinished = dict(self._in_flight)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)
            with contextlib.suppress(Exception):
                await store.release(self._pool, [d.id for d in unfinished.values()], self._token)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() >= self._next_stats:
                    await self._refresh_stats()
                    self._next_stats = loop.time() + STATS_SECONDS
                if loop.time() >= self._next_purge:
                    await store.purge(self._pool, self.policy.retention_seconds)
                    self._next_purge = loop.time() + PURGE_SECONDS
                free = self.policy.concurrency - len(self._in_flight)
                claimed = []
                if free > 0:
                    claimed = await store.claim(
                        self._pool, free, self.policy.lease_seconds, self._token
                    )
                    for delivery in claimed:
                        self._spawn(delivery)
                if failures:
                    _log.info("webhook dispatcher reaches the database again")
                failures = 0
                if self._in_flight and len(claimed) == free:
                    # More may be due: claim again as soon as a slot frees up.
                    await asyncio.wait(
                        set(self._in_flight),
                        timeout=self.policy.poll_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                else:
                    await asyncio.sleep(self.policy.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    _log.warning(
                        "webhook dispatcher cannot claim deliveries",
                        error=type(exc).__name__,
                        outage=isinstance(exc, OUTAGE_ERRORS),
                    )
                await asyncio.sleep(min(MAX_PAUSE_SECONDS, self.policy.poll_seconds * 2**failures))

    def _spawn(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._deliver(delivery), name="webhook-delivery")
        self._in_flight[task] = delivery
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            _log.error("webhook delivery failed unexpectedly", error=repr(task.exception()))

    async def _refresh_stats(self) -> None:
        stats = await store.queue_stats(self._pool)
        self._metrics.webhook_queue_depth.set(stats.pending)
        self._metrics.webhook_queue_oldest.set(stats.oldest_seconds)

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._http is not None
        body = body_of(delivery)
        headers = {
            "Content-Type": "application/json",
            signing.SIGNATURE_HEADER: signing.header(delivery.secret, body),
            signing.EVENT_ID_HEADER: str(delivery.event_id),
            signing.EVENT_TYPE_HEADER: delivery.event_type,
            signing.ATTEMPT_HEADER: str(delivery.attempts),
        }
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: int | None = None
        error = ""
        try:
            async with self._http.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                # Read a little, so a short answer leaves the connection reusable.
                await response.content.read(_READ_LIMIT)
        except TimeoutError:
            error = "timed out"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._metrics.webhook_attempt_seconds.observe(loop.time() - started)
        try:
            if status is not None and 200 <= status < 300:
                await store.mark_delivered(self._pool, delivery.id, status)
                self._metrics.webhook_deliveries.labels("delivered").inc()
                lag = (
                    datetime.now(delivery.created_at.tzinfo) - delivery.created_at
                ).total_seconds()
                self._metrics.webhook_delivery_lag.observe(max(lag, 0.0))
                return
            gave_up = await store.mark_failed(
                self._pool,
                delivery.id,
                self._token,
                status=status,
                error=error or f"HTTP {status}",
                retry_in_seconds=self.policy.retry_delay(delivery.attempts, self._rng),
                max_attempts=self.policy.max_attempts,
                max_age_seconds=self.policy.max_age_seconds,
            )
        except Exception as exc:
            # The lease runs out and the row comes due again: sent at least once.
            _log.warning(
                "webhook delivery outcome not recorded",
                event_id=str(delivery.event_id),
                error=type(exc).__name__,
            )
            return
        outcome = "gave_up" if gave_up else "retrying"
        self._metrics.webhook_deliveries.labels(outcome).inc()
        log = _log.warning if gave_up else _log.info
        log(
            "webhook delivery failed",
            event_id=str(delivery.event_id),
            event_type=delivery.event_type,
            attempt=delivery.attempts,
            status=status,
            error=error or None,
            gave_up=gave_up,
        )

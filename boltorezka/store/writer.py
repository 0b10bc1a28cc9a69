"""Group commit for chat sends: many callers' sends stored by one statement, one commit.

Callers ``await submit(...)``; one drain task takes what is queued (up to ``max_batch``)
and stores it with a single call of the ``post_messages_v2`` function (migrations 0003
and 0007), which authorizes every row (mutes included), assigns gapless seqs, inserts,
and advances the senders' read markers. The call runs outside an explicit transaction, so
its implicit transaction commits before PostgreSQL answers: no row lock outlives the
statement, and a caller's future resolves only once its message is durable.

No batching delay is added: a send into an idle writer goes out at once, and sends that
arrive while earlier batches are in flight queue up and go together in the next one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import asyncpg
import structlog

from boltorezka.store import Conn
from boltorezka.store.outage import OUTAGE_ERRORS
from boltorezka.store.records import Message

_log = structlog.get_logger("boltorezka.store.writer")

Outcome = Literal[
    "created",
    "duplicate",
    "room_not_found",
    "not_a_member",
    "room_archived",
    "invalid_reply",
    "idempotency_conflict",
    "muted",
]

# post_messages_v2 (migration 0007) is post_messages with the mute check.
_CALL = "SELECT * FROM post_messages_v2($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[])"
# Errors one row can cause (a constraint, bad data); the rest of its batch deserves a retry.
_ROW_ERRORS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)
# The whole transaction was undone and may simply be run again.
_RETRY_ERRORS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# The database cannot be reached, or is shutting down: an outage, not a bug in a batch.
_OUTAGE_ERRORS = OUTAGE_ERRORS


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of one send; ``message`` is set for ``created`` and ``duplicate``."""

    outcome: Outcome
    message: Message | None = None


class WriteFailed(Exception):
    """The send was not stored (its whole batch rolled back, or its row was refused);
    ``unavailable`` when the database could not be reached at all."""

    def __init__(self, detail: str, *, retryable: bool, unavailable: bool = False) -> None:
        super().__init__(detail)
        self.retryable = retryable
        self.unavailable = unavailable


class WriterClosed(WriteFailed):
    """The writer is shutting down and takes no more sends."""

    def __init__(self) -> None:
        super().__init__("the message writer is closed", retryable=True)


@dataclass(slots=True)
class _Pending:
    room_id: uuid.UUID
    sender_id: uuid.UUID
    client_msg_id: str
    body: str
    reply_to: uuid.UUID | None
    future: asyncio.Future[Stored] = field(repr=False)


class MessageWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        retries: int = 3,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        # More than one batch may be in flight so that a room row held locked by some other
        # transaction stalls only the batch that needs it, not every send on the node.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._retries = retries
        self._in_outage = False
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False
        #: Batch statements run so far (each its own transaction, retries included).
        self.batches_run = 0

    @property
    def queued(self) -> int:
        """Sends waiting for a batch (not those already in flight)."""
        return len(self._queue)

    def start(self) -> None:
        """Start the drain task; sends submitted before this wait for it."""
        if self._drainer is None or self._drainer.done():
            self._closing = False
            self._drainer = asyncio.create_task(self._drain(), name="message-writer")

    async def close(self) -> None:
        """Refuse new sends, store every queued one, and wait for the batches in flight."""
        self._closing = True
        self._wakeup.set()
        if self._drainer is not None:
            await self._drainer
            self._drainer = None
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        # Sends queued on a writer that never started have no one left to store them.
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(WriterClosed())

    async def submit(
        self,
        room_id: uuid.UUID,
        sender_id: uuid.UUID,
        client_msg_id: str,
        body: str,
        reply_to: uuid.UUID | None,
    ) -> Stored:
        """Store one send with the next batch; return once that batch has committed."""
        if self._closing:
            raise WriterClosed()
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(room_id, sender_id, client_msg_id, body, reply_to, future))
        self._wakeup.set()
        return await future

    # --- draining ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            # Let senders that became ready in this same loop iteration join the batch.
            await asyncio.sleep(0)
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._max_batch:
            pending = self._queue.popleft()
            # A caller that gave up before its batch formed was never acknowledged.
            if not pending.future.cancelled():
                batch.append(pending)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            await self._store(batch, fallback=True)
        finally:
            self._slots.release()

    async def _store(self, batch: list[_Pending], *, fallback: bool) -> None:
        try:
            async with self._pool.acquire() as conn:
                rows = await self._call(conn, batch)
                # Answer before the pool resets the connection: the commit already happened.
                by_index = {row["idx"]: _stored(row) for row in rows}
                if self._in_outage:
                    self._in_outage = False
                    _log.info("database reachable again; sends are stored")
                for i, pending in enumerate(batch, start=1):
                    if not pending.future.done():
                        pending.future.set_result(by_index[i])
        except _ROW_ERRORS as exc:
            if fallback and len(batch) > 1:
                # One bad row must not sink the others: each send gets a transaction of its own.
                _log.warning(
                    "batch refused by the database; storing its sends one by one",
                    size=len(batch),
                    error=type(exc).__name__,
                )
                for pending in batch:
                    await self._store([pending], fallback=False)
                return
            _log.exception("send refused by the database", error=type(exc).__name__)
            _fail(batch, "the database refused this message", retryable=False)
        except asyncio.CancelledError:
            _fail(batch, "the message was not stored", retryable=True)
            raise
        except _OUTAGE_ERRORS as exc:
            # Once per outage, not once per batch: while it lasts, every batch fails alike.
            if not self._in_outage:
                self._in_outage = True
                _log.error("database unreachable; sends are refused as retryable", error=repr(exc))
            _fail(
                batch,
                "the database is unreachable; send it again",
                retryable=True,
                unavailable=True,
            )
            return
        except Exception as exc:
            # The batch's one transaction rolled back (or its outcome is unknown): every
            # caller may retry, and a retry with the same clientMsgId cannot store it twice.
            _log.exception("batch failed", size=len(batch), error=type(exc).__name__)
            _fail(batch, "the message was not stored; send it again", retryable=True)

    async def _call(self, conn: Conn, batch: list[_Pending]) -> list[Any]:
        args = (
            [p.room_id for p in batch],
            [p.sender_id for p in batch],
            [p.client_msg_id for p in batch],
            [p.body for p in batch],
            [p.reply_to for p in batch],
        )
        attempt = 0
        while True:
            self.batches_run += 1
            try:
                rows: list[Any] = await conn.fetch(_CALL, *args)
                return rows
            except _RETRY_ERRORS:
                # Nothing of the batch was kept, so running it again is safe.
                attempt += 1
                if attempt > self._retries:
                    raise


def _stored(row: Any) -> Stored:
    outcome = cast(Outcome, row["outcome"])
    if outcome not in ("created", "duplicate"):
        return Stored(outcome)
    message: Message = Message.from_row(row)
    return Stored(outcome, message)


def _fail(
    batch: list[_Pending], detail: str, *, retryable: bool, unavailable: bool = False
) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(
                WriteFailed(detail, retryable=retryable, unavailable=unavailable)
            )

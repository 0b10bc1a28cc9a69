"""The batching message writer: one transaction per batch, per-row answers, gapless seqs.

Each test queues its sends on a writer that has not started yet and then starts it, so
the sends that belong together are known to share one batch (``batches_run`` says so).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import pytest

from boltorezka.context import Actor
from boltorezka.errors import (
    AppError,
    IdempotencyConflict,
    InternalError,
    InvalidInput,
    NotAMember,
    RoomArchived,
    RoomNotFound,
    Unavailable,
)
from boltorezka.events import RoomEvent
from boltorezka.messages.service import MessageService, PostResult
from boltorezka.store.writer import MessageWriter, Stored, WriteFailed, WriterClosed
from tests import conftest
from tests.helpers import wait_until_blocked_by

T = TypeVar("T")
_names = itertools.count(1)


class Recorder:
    def __init__(self) -> None:
        self.events: list[RoomEvent] = []

    async def publish(self, event: RoomEvent) -> None:
        self.events.append(event)


@dataclass
class World:
    pool: asyncpg.Pool
    writer: MessageWriter
    service: MessageService
    published: Recorder

    async def user(self) -> uuid.UUID:
        name = f"writer{next(_names)}"
        user_id: uuid.UUID = await self.pool.fetchval(
            "INSERT INTO users (username, display_name, password_hash) "
            "VALUES ($1, $1, '!unusable') RETURNING id",
            name,
        )
        return user_id

    async def room(self, kind: str = "private", *members: uuid.UUID) -> uuid.UUID:
        room_id: uuid.UUID = await self.pool.fetchval(
            "INSERT INTO rooms (kind, name) VALUES ($1, 'r') RETURNING id", kind
        )
        for i, member in enumerate(members):
            await self.pool.execute(
                "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, $3)",
                room_id,
                member,
                "owner" if i == 0 else "member",
            )
        return room_id

    async def seqs(self, room_id: uuid.UUID) -> list[tuple[int, str]]:
        rows = await self.pool.fetch(
            "SELECT seq, client_msg_id FROM messages WHERE room_id = $1 ORDER BY seq", room_id
        )
        return [(r["seq"], r["client_msg_id"]) for r in rows]

    async def last_seq(self, room_id: uuid.UUID) -> int:
        value: int = await self.pool.fetchval("SELECT last_seq FROM rooms WHERE id = $1", room_id)
        return value


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    writer = MessageWriter(pool)
    published = Recorder()
    yield World(pool, writer, MessageService(pool, writer, published), published)
    await writer.close()


def actor(user_id: uuid.UUID) -> Actor:
    return Actor(user_id=user_id, session_id=uuid.uuid4())


async def one_batch(
    writer: MessageWriter, calls: list[Awaitable[T]], *, statements: int = 1
) -> list[T | BaseException]:
    """Run ``calls`` (each ending in one submit) as one batch of a not yet started writer.

    ``statements``: how many batch statements that takes (more when it falls back to rows).
    """
    before = writer.batches_run
    tasks = [asyncio.ensure_future(call) for call in calls]
    while writer.queued < len(tasks):
        await asyncio.sleep(0)
    writer.start()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert writer.batches_run == before + statements, "the sends were meant to share one batch"
    return results


def sender_of(event: RoomEvent) -> object:
    message = event.data["message"]
    assert isinstance(message, dict)
    return message["senderId"]


def created(result: object) -> PostResult:
    assert isinstance(result, PostResult), result
    return result


# --------------------------------------------------------------------------- sequencing


async def test_many_users_in_many_rooms_get_gapless_seqs_from_one_batch(world: World) -> None:
    users = [await world.user() for _ in range(6)]
    rooms = [await world.room("private", *users) for _ in range(4)]
    sends = [(room, user, n) for room in rooms for user in users for n in range(3)]
    random.Random(7).shuffle(sends)
    results = await one_batch(
        world.writer,
        [
            world.writer.submit(room, user, f"{user}-{room}-{n}", f"body {n}", None)
            for room, user, n in sends
        ],
    )
    by_room: dict[uuid.UUID, list[int]] = {room: [] for room in rooms}
    for (room, user, _), result in zip(sends, results, strict=True):
        assert isinstance(result, Stored) and result.outcome == "created", result
        assert result.message is not None
        assert (result.message.room_id, result.message.sender_id) == (room, user)
        by_room[room].append(result.message.seq)
    for room, seqs in by_room.items():
        # Each seq once, with no gap, and in the order the sends were queued.
        assert seqs == list(range(1, 19))
        assert [s for s, _ in await world.seqs(room)] == list(range(1, 19))
        assert await world.last_seq(room) == 18
    # The senders' read markers moved to their own newest message, in the same commit.
    markers = await world.pool.fetch("SELECT room_id, user_id, last_read_seq FROM room_members")
    newest = {
        (r.message.room_id, r.message.sender_id): r.message.seq
        for r in results
        if isinstance(r, Stored) and r.message is not None
    }
    assert {(m["room_id"], m["user_id"]): m["last_read_seq"] for m in markers} == newest


async def test_batches_racing_each_other_keep_every_room_gapless(world: World) -> None:
    users = [await world.user() for _ in range(5)]
    rooms = [await world.room("private", *users) for _ in range(3)]
    world.writer.start()
    results = await asyncio.gather(
        *(
            world.writer.submit(rooms[(u + n) % 3], user, f"race-{u}-{n}", "hi", None)
            for n in range(40)
            for u, user in enumerate(users)
        )
    )
    assert all(r.outcome == "created" for r in results)
    total = 0
    for room in rooms:
        seqs = [s for s, _ in await world.seqs(room)]
        assert seqs == list(range(1, len(seqs) + 1))
        total += len(seqs)
    assert total == 200


async def test_an_acknowledged_message_is_committed(
    world: World, test_db: conftest.TestDatabase
) -> None:
    alice = await world.user()
    room = await world.room("private", alice)
    world.writer.start()
    result = created(await world.service.post(actor(alice), room, "durable", "kept", None))
    # A connection of its own sees it: the answer came after COMMIT, not before.
    other = await test_db.connect()
    try:
        row = await other.fetchrow(
            "SELECT seq, body FROM messages WHERE id = $1", result.message.id
        )
    finally:
        await other.close()
    assert row is not None and (row["seq"], row["body"]) == (1, "kept")


# --------------------------------------------------------------------------- idempotency


async def test_duplicates_within_and_across_batches_return_the_original(world: World) -> None:
    alice, bob = await world.user(), await world.user()
    room = await world.room("private", alice, bob)
    me = actor(alice)
    first, again, bobs = await one_batch(
        world.writer,
        [
            world.service.post(me, room, "same", "hello", None),
            world.service.post(me, room, "same", "hello", None),
            # clientMsgIds belong to their sender.
            world.service.post(actor(bob), room, "same", "hello", None),
        ],
    )
    original = created(first)
    assert original.created and created(bobs).created
    assert created(again) == PostResult(original.message, False)
    later = await one_batch(world.writer, [world.service.post(me, room, "same", "hello", None)])
    assert created(later[0]) == PostResult(original.message, False)
    assert await world.seqs(room) == [(1, "same"), (2, "same")]
    # One chat.message per stored message; none for the replays.
    assert [e.kind for e in world.published.events] == ["chat.message", "chat.message"]
    assert {sender_of(e) for e in world.published.events} == {str(alice), str(bob)}


async def test_conflicting_duplicates_are_refused(world: World) -> None:
    alice = await world.user()
    room, other = await world.room("private", alice), await world.room("private", alice)
    me = actor(alice)
    results = await one_batch(
        world.writer,
        [
            world.service.post(me, room, "k", "original", None),
            world.service.post(me, room, "k", "another body", None),
            world.service.post(me, other, "k", "original", None),
        ],
    )
    assert created(results[0]).created
    assert isinstance(results[1], IdempotencyConflict)
    assert isinstance(results[2], IdempotencyConflict)
    later = await one_batch(
        world.writer,
        [
            world.service.post(me, room, "k", "changed later", None),
            world.service.post(me, other, "k", "original", None),
        ],
    )
    assert all(isinstance(r, IdempotencyConflict) for r in later), later
    assert await world.seqs(room) == [(1, "k")]
    assert await world.seqs(other) == [] and await world.last_seq(other) == 0
    assert len(world.published.events) == 1


async def test_a_concurrent_send_of_the_same_id_elsewhere_undoes_and_retries_the_batch(
    world: World,
) -> None:
    alice = await world.user()
    room, elsewhere = await world.room("private", alice), await world.room("private", alice)
    # Another node stores alice's "k" in another room; it has not committed yet.
    async with world.pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute("UPDATE rooms SET last_seq = 1 WHERE id = $1", elsewhere)
            await holder.execute(
                "INSERT INTO messages (room_id, seq, sender_id, client_msg_id, body) "
                "VALUES ($1, 1, $2, 'k', 'there')",
                elsewhere,
                alice,
            )
            tasks = [
                asyncio.ensure_future(world.service.post(actor(alice), room, "k", "here", None)),
                asyncio.ensure_future(world.service.post(actor(alice), room, "j", "fine", None)),
            ]
            while world.writer.queued < 2:
                await asyncio.sleep(0)
            world.writer.start()
            # The batch's insert of "k" waits for the other node's transaction to finish.
            await wait_until_blocked_by(world.pool, holder.get_server_pid())
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
    conflict, fine = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(conflict, IdempotencyConflict), conflict
    assert created(fine).message.seq == 1
    # The first attempt took seqs 1 and 2; undoing it left no gap.
    assert await world.seqs(room) == [(1, "j")] and await world.last_seq(room) == 1


# --------------------------------------------------------------------------- authorization


async def test_refused_rows_get_their_own_errors_and_cost_no_seq(world: World) -> None:
    alice, bob, outsider = await world.user(), await world.user(), await world.user()
    room = await world.room("private", alice, bob)
    other = await world.room("private", alice)
    public = await world.room("public", alice)
    archived = await world.room("private", alice)
    deleted = await world.room("private", alice)
    me = actor(alice)
    setup = await one_batch(
        world.writer,
        [
            world.service.post(me, other, "elsewhere", "elsewhere", None),
            world.service.post(me, archived, "before", "before archiving", None),
        ],
    )
    elsewhere = created(setup[0]).message
    await world.pool.execute("UPDATE rooms SET archived_at = now() WHERE id = $1", archived)
    await world.pool.execute("UPDATE rooms SET deleted_at = now() WHERE id = $1", deleted)
    before = len(world.published.events)

    results = await one_batch(
        world.writer,
        [
            world.service.post(me, room, "g1", "good one", None),
            world.service.post(actor(outsider), room, "x1", "private, not in it", None),
            world.service.post(actor(outsider), public, "x2", "public, not in it", None),
            world.service.post(me, archived, "x3", "archived", None),
            world.service.post(me, uuid.uuid4(), "x4", "no such room", None),
            world.service.post(me, deleted, "x5", "deleted room", None),
            world.service.post(actor(bob), room, "x6", "reply elsewhere", elsewhere.id),
            world.service.post(actor(bob), room, "x7", "reply to nothing", uuid.uuid4()),
            world.service.post(actor(bob), room, "g2", "good two", None),
            # A retry of a message stored before the archive still gets its answer.
            world.service.post(me, archived, "before", "before archiving", None),
        ],
    )
    good_one, good_two = created(results[0]), created(results[8])
    assert isinstance(results[1], RoomNotFound)
    assert isinstance(results[2], NotAMember)
    assert isinstance(results[3], RoomArchived)
    assert isinstance(results[4], RoomNotFound)
    assert isinstance(results[5], RoomNotFound)
    for bad_reply in results[6:8]:
        assert isinstance(bad_reply, InvalidInput) and bad_reply.extra == {"field": "replyTo"}
    replay = created(results[9])
    assert not replay.created and replay.message.seq == 1
    assert (good_one.message.seq, good_two.message.seq) == (1, 2)
    assert await world.seqs(room) == [(1, "g1"), (2, "g2")] and await world.last_seq(room) == 2
    assert await world.seqs(public) == [] and await world.last_seq(public) == 0
    assert await world.last_seq(archived) == 1 and await world.last_seq(deleted) == 0
    assert len(world.published.events) == before + 2
    # A valid reply in the same room is kept.
    reply = await one_batch(
        world.writer,
        [world.service.post(actor(bob), room, "g3", "answer", good_one.message.id)],
    )
    assert created(reply[0]).message.reply_to == good_one.message.id


# --------------------------------------------------------------------------- failures


async def test_a_database_failure_fails_the_whole_batch_and_commits_none_of_it(
    world: World,
) -> None:
    alice = await world.user()
    locked, free = await world.room("private", alice), await world.room("private", alice)
    me = actor(alice)
    async with world.pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", locked)
            tasks = [
                asyncio.ensure_future(world.service.post(me, room, f"m{i}", "lost", None))
                for i, room in enumerate((free, locked, free))
            ]
            while world.writer.queued < len(tasks):
                await asyncio.sleep(0)
            world.writer.start()
            await wait_until_blocked_by(world.pool, holder.get_server_pid())
            # The batch's connection dies mid-transaction, as in a database outage.
            killed = await holder.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE $1 = ANY(pg_blocking_pids(pid))",
                holder.get_server_pid(),
            )
            assert killed == 1
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await transaction.rollback()
    for result in results:
        # A lost connection reads as an outage: retryable, with a delay to wait.
        assert isinstance(result, Unavailable) and result.retryable, result
        assert result.code == "unavailable"
        assert result.extra["retryAfterMs"] > 0
        assert result.detail == "the database is unreachable; send it again"
    assert world.writer.batches_run == 1
    for room in (locked, free):
        assert await world.seqs(room) == [] and await world.last_seq(room) == 0
    assert world.published.events == []
    # The retry the error invites goes through on a fresh connection.
    retried = await world.service.post(me, locked, "m1", "lost", None)
    assert retried.created and retried.message.seq == 1


async def test_a_row_the_database_refuses_does_not_sink_its_batch(world: World) -> None:
    alice = await world.user()
    room = await world.room("private", alice)
    # A constraint nothing in the writer checks for: the batch statement fails as a whole.
    await world.pool.execute(
        "ALTER TABLE messages ADD CONSTRAINT no_poison CHECK (body <> 'poison')"
    )
    me = actor(alice)
    results = await one_batch(
        world.writer,
        [
            world.service.post(me, room, "a", "fine", None),
            world.service.post(me, room, "b", "poison", None),
            world.service.post(me, room, "c", "also fine", None),
        ],
        statements=4,  # the batch, then each send on its own
    )
    assert created(results[0]).message.seq == 1
    assert isinstance(results[1], InternalError)
    assert created(results[2]).message.seq == 2
    assert await world.seqs(room) == [(1, "a"), (2, "c")]
    assert len(world.published.events) == 2


# --------------------------------------------------------------------------- lifecycle


async def test_closing_stores_everything_queued_then_refuses(world: World) -> None:
    alice = await world.user()
    room = await world.room("private", alice)
    tasks = [
        asyncio.ensure_future(world.writer.submit(room, alice, f"q{i}", "queued", None))
        for i in range(300)  # more than one batch holds
    ]
    while world.writer.queued < len(tasks):
        await asyncio.sleep(0)
    world.writer.start()
    await world.writer.close()
    assert all(t.done() for t in tasks)
    assert [t.result().outcome for t in tasks] == ["created"] * 300
    assert [s for s, _ in await world.seqs(room)] == list(range(1, 301))
    with pytest.raises(WriterClosed):
        await world.writer.submit(room, alice, "late", "too late", None)
    with pytest.raises(AppError) as refused:
        await world.service.post(actor(alice), room, "late", "too late", None)
    assert isinstance(refused.value, InternalError) and refused.value.retryable
    assert isinstance(refused.value.__cause__, WriteFailed)

"""Unit tests of the pure realtime building blocks: no sockets, no database, no sleeping.

``SeqGate`` (in-order, exactly-once delivery), ``PresenceTracker`` (strongest of a user's
devices), ``TypingTracker`` (throttle and expiry with an injected ``now``),
``TokenBucketLimiter`` (with an injected clock), ``Audience`` (which rooms and users a
node must listen to) and the session deadlines of a connection.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, cast

import pytest

from boltorezka.ratelimit import TokenBucketLimiter
from boltorezka.realtime.audience import Audience
from boltorezka.realtime.connection import Connection
from boltorezka.realtime.presence import OFFLINE, PresenceTracker, TypingTracker
from boltorezka.realtime.sequencing import SeqGate
from boltorezka.realtime.session_clock import SessionState, next_deadline

# --- SeqGate --------------------------------------------------------------------------------


def _item(seq: int) -> str:
    return f"m{seq}"


def test_gate_buffers_until_start() -> None:
    gate: SeqGate[str] = SeqGate()
    assert gate.buffering
    assert gate.last_seq is None
    for seq in (3, 1, 2, 5):
        assert gate.offer(seq, _item(seq)) == []
    assert gate.gap() is None  # no gap is reported while buffering
    assert gate.buffering


@pytest.mark.parametrize(
    ("buffered", "start_at", "released", "last_after", "gap_after"),
    [
        # Nothing buffered: start just sets the position.
        ([], 0, [], 0, None),
        ([], 7, [], 7, None),
        # Everything buffered was already replayed: all of it is dropped.
        ([1, 2, 3], 3, [], 3, None),
        ([1, 2, 3], 10, [], 10, None),
        # The replay covered a prefix: the rest comes out in order.
        ([3, 1, 2, 4, 5], 2, ["m3", "m4", "m5"], 5, None),
        ([5, 4, 6], 3, ["m4", "m5", "m6"], 6, None),
        # A hole right after the start: nothing is released, the gap is reported.
        ([6, 7], 4, [], 4, (4, 6)),
        # Released up to a hole, the rest is held behind it.
        ([4, 5, 8, 9], 3, ["m4", "m5"], 5, (5, 8)),
    ],
)
def test_gate_start_drops_delivered_and_releases_in_order(
    buffered: list[int],
    start_at: int,
    released: list[str],
    last_after: int,
    gap_after: tuple[int, int] | None,
) -> None:
    gate: SeqGate[str] = SeqGate()
    for seq in buffered:
        gate.offer(seq, _item(seq))
    assert gate.start(start_at) == released
    assert not gate.buffering
    assert gate.last_seq == last_after
    assert gate.gap() == gap_after


@pytest.mark.parametrize(
    ("offers", "expected"),
    [
        # In order: each offer releases itself.
        ([1, 2, 3], [["m1"], ["m2"], ["m3"]]),
        # 2 arrives before 1: held, then both released when 1 fills the gap.
        ([2, 1, 3], [[], ["m1", "m2"], ["m3"]]),
        ([3, 2, 1], [[], [], ["m1", "m2", "m3"]]),
        ([1, 4, 3, 2, 5], [["m1"], [], [], ["m2", "m3", "m4"], ["m5"]]),
        # Duplicates: of something delivered, and of something still held.
        ([1, 1, 2, 1], [["m1"], [], ["m2"], []]),
        ([3, 3, 2, 3, 1, 3], [[], [], [], [], ["m1", "m2", "m3"], []]),
        # Seq 0 and below are never delivered after start(0).
        ([0, 1], [[], ["m1"]]),
    ],
)
def test_gate_offers_after_start(offers: list[int], expected: list[list[str]]) -> None:
    gate: SeqGate[str] = SeqGate()
    assert gate.start(0) == []
    assert [gate.offer(seq, _item(seq)) for seq in offers] == expected
    assert gate.gap() is None
    assert gate.last_seq == max(offers)


def test_gate_keeps_the_first_copy_of_a_held_duplicate() -> None:
    gate: SeqGate[str] = SeqGate()
    gate.start(0)
    assert gate.offer(2, "first") == []
    assert gate.offer(2, "second") == []
    assert gate.offer(1, "one") == ["one", "first"]


def test_gate_reports_the_gap_between_last_and_lowest_held() -> None:
    gate: SeqGate[str] = SeqGate()
    gate.start(10)
    assert gate.gap() is None
    gate.offer(15, _item(15))
    assert gate.gap() == (10, 15)
    gate.offer(13, _item(13))
    assert gate.gap() == (10, 13)  # the lowest held seq bounds the gap
    assert gate.offer(11, _item(11)) == ["m11"]
    assert gate.gap() == (11, 13)
    assert gate.offer(12, _item(12)) == ["m12", "m13"]
    assert gate.gap() == (13, 15)
    assert gate.offer(14, _item(14)) == ["m14", "m15"]
    assert gate.gap() is None
    assert gate.last_seq == 15


def test_gate_offer_at_or_below_last_is_dropped_even_if_never_seen() -> None:
    gate: SeqGate[str] = SeqGate()
    gate.start(5)
    for seq in (1, 4, 5):
        assert gate.offer(seq, _item(seq)) == []
    assert gate.gap() is None
    assert gate.offer(6, _item(6)) == ["m6"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7, 42, 1234, 99991])
def test_gate_delivers_each_seq_once_in_order_for_shuffled_offers(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(50, 300)
    offers = list(range(1, n + 1))
    offers += [rng.randint(1, n) for _ in range(rng.randint(0, n))]  # duplicates
    rng.shuffle(offers)
    # Some of the offers arrive while the subscriber is still buffering (replaying).
    start_after = rng.randint(0, len(offers))
    # What the replay delivered "another way": a prefix of 0..n.
    replayed = rng.randint(0, n)

    gate: SeqGate[str] = SeqGate()
    delivered = [_item(seq) for seq in range(1, replayed + 1)]
    for index, seq in enumerate(offers):
        if index == start_after:
            delivered += gate.start(replayed)
        delivered += gate.offer(seq, _item(seq))
    if gate.buffering:
        delivered += gate.start(replayed)

    assert delivered == [_item(seq) for seq in range(1, n + 1)]
    assert gate.last_seq == n
    assert gate.gap() is None


def test_gate_gap_fill_from_the_database_releases_everything_held() -> None:
    """What the hub does: a gap is reported, then the missing range is offered."""
    rng = random.Random(2024)
    gate: SeqGate[str] = SeqGate()
    gate.start(0)
    lost = {3, 4, 9}  # never published to this node
    delivered: list[str] = []
    for seq in rng.sample(range(1, 13), 12):
        if seq not in lost:
            delivered += gate.offer(seq, _item(seq))
    while (gap := gate.gap()) is not None:
        after, before = gap
        for seq in range(after + 1, before):
            delivered += gate.offer(seq, _item(seq))
    assert delivered == [_item(seq) for seq in range(1, 13)]


# --- PresenceTracker ------------------------------------------------------------------------

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000000a")
BOB = uuid.UUID("00000000-0000-4000-8000-00000000000b")


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            [
                # (operation, connection, status, what the call returns, alice's presence)
                ("set", "phone", "online", "online", "online"),
                ("set", "laptop", "online", None, "online"),
                ("remove", "phone", None, None, "online"),
                ("remove", "laptop", None, OFFLINE, OFFLINE),
            ],
            id="two-online-devices",
        ),
        pytest.param(
            [
                ("set", "phone", "away", "away", "away"),
                ("set", "laptop", "online", "online", "online"),  # any active device wins
                ("set", "phone", "away", None, "online"),
                ("set", "laptop", "away", "away", "away"),
                ("remove", "laptop", None, None, "away"),
                ("remove", "phone", None, OFFLINE, OFFLINE),
            ],
            id="online-beats-away",
        ),
        pytest.param(
            [
                ("set", "phone", "online", "online", "online"),
                ("set", "laptop", "dnd", "dnd", "dnd"),  # chosen on purpose: wins
                ("set", "tablet", "away", None, "dnd"),
                ("set", "phone", "away", None, "dnd"),
                ("remove", "laptop", None, "away", "away"),
                ("set", "tablet", "online", "online", "online"),
                ("remove", "tablet", None, "away", "away"),
                ("remove", "phone", None, OFFLINE, OFFLINE),
            ],
            id="dnd-beats-online",
        ),
        pytest.param(
            [
                ("set", "phone", "online", "online", "online"),
                ("set", "phone", "online", None, "online"),  # same again: no change
                ("set", "phone", "dnd", "dnd", "dnd"),
                ("set", "phone", "online", "online", "online"),
                ("remove", "ghost", None, None, "online"),  # unknown device: nothing
                ("remove", "phone", None, OFFLINE, OFFLINE),
                ("remove", "phone", None, None, OFFLINE),  # removing twice: nothing
            ],
            id="one-device-changes",
        ),
    ],
)
def test_presence_is_the_strongest_of_the_devices(
    steps: list[tuple[str, str, str | None, str | None, str]],
) -> None:
    tracker = PresenceTracker()
    assert tracker.status(ALICE) == OFFLINE
    for operation, connection, status, returned, presence in steps:
        if operation == "set":
            assert status is not None
            result = tracker.set(ALICE, connection, status)
        else:
            result = tracker.remove(ALICE, connection)
        assert result == returned, (operation, connection, status)
        assert tracker.status(ALICE) == presence, (operation, connection, status)


def test_presence_users_are_independent() -> None:
    tracker = PresenceTracker()
    assert tracker.set(ALICE, "c1", "dnd") == "dnd"
    assert tracker.set(BOB, "c1", "away") == "away"  # same connection id, other user
    assert tracker.status(ALICE) == "dnd"
    assert tracker.remove(BOB, "c1") == OFFLINE
    assert tracker.status(ALICE) == "dnd"
    assert tracker.remove(ALICE, "c2") is None


@pytest.mark.parametrize("status", ["offline", "invisible", "", "ONLINE"])
def test_presence_rejects_statuses_that_cannot_be_set(status: str) -> None:
    tracker = PresenceTracker()
    with pytest.raises(ValueError):
        tracker.set(ALICE, "c1", status)
    assert tracker.status(ALICE) == OFFLINE


# --- TypingTracker --------------------------------------------------------------------------

KEY = ("room-1", "alice")


@pytest.mark.parametrize(
    ("starts", "relayed"),
    [
        # The first start is relayed; refreshes inside the throttle window are absorbed.
        ([0.0, 1.0, 2.9], [True, False, False]),
        # At exactly `throttle` seconds after the last relay, relay again.
        ([0.0, 3.0, 4.0, 6.0], [True, True, False, True]),
        # Absorbed refreshes do not move the throttle window.
        ([0.0, 2.0, 2.5, 3.1], [True, False, False, True]),
    ],
)
def test_typing_start_is_throttled(starts: list[float], relayed: list[bool]) -> None:
    tracker = TypingTracker(ttl=6.0, throttle=3.0)
    assert [tracker.start(KEY, now) for now in starts] == relayed


def test_typing_keys_are_throttled_independently() -> None:
    tracker = TypingTracker(ttl=6.0, throttle=3.0)
    other = ("room-1", "bob")
    assert tracker.start(KEY, 0.0) is True
    assert tracker.start(other, 0.5) is True
    assert tracker.start(KEY, 1.0) is False
    assert tracker.start(("room-2", "alice"), 1.0) is True


def test_typing_stop_ends_the_indicator_and_resets_the_throttle() -> None:
    tracker = TypingTracker(ttl=6.0, throttle=3.0)
    assert tracker.stop(KEY) is False  # nothing to stop
    assert tracker.start(KEY, 0.0) is True
    assert tracker.stop(KEY) is True
    assert tracker.stop(KEY) is False
    assert tracker.start(KEY, 0.5) is True  # a new burst of typing is relayed at once
    assert tracker.expired(100.0) == [KEY]


@pytest.mark.parametrize(
    ("starts", "checks"),
    [
        # Expires at start + ttl, inclusive.
        ([0.0], [(5.9, []), (6.0, [KEY]), (7.0, [])]),
        # A refresh (even one that is not relayed) pushes the deadline out.
        ([0.0, 2.0], [(6.0, []), (7.99, []), (8.0, [KEY])]),
        ([0.0, 4.0, 9.0], [(12.0, []), (15.0, [KEY])]),
    ],
)
def test_typing_indicators_expire_unless_refreshed(
    starts: list[float], checks: list[tuple[float, list[Any]]]
) -> None:
    tracker = TypingTracker(ttl=6.0, throttle=3.0)
    for now in starts:
        tracker.start(KEY, now)
    for now, expected in checks:
        assert tracker.expired(now) == expected, now


def test_typing_expiry_forgets_the_key_so_the_next_start_is_relayed() -> None:
    tracker = TypingTracker(ttl=2.0, throttle=10.0)
    other = ("room-2", "bob")
    assert tracker.start(KEY, 0.0) is True
    assert tracker.start(other, 1.5) is True
    assert tracker.expired(2.0) == [KEY]
    assert tracker.stop(KEY) is False  # already gone
    # Inside the old throttle window, but the indicator had ended: relayed again.
    assert tracker.start(KEY, 2.5) is True
    assert tracker.expired(3.5) == [other]
    assert sorted(cast("list[tuple[str, str]]", tracker.expired(100.0))) == [KEY]


# --- TokenBucketLimiter ---------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("capacity", "rate", "script"),
    [
        # (seconds to advance before the call, expected result: 0 or retry-after ms)
        pytest.param(3, 1.0, [(0, 0), (0, 0), (0, 0), (0, 1000), (0, 1000)], id="burst"),
        pytest.param(
            3,
            1.0,
            [(0, 0), (0, 0), (0, 0), (0.25, 750), (0.5, 250), (0.25, 0), (0, 1000)],
            id="refill",
        ),
        # 1/3 s per token: 333.33… ms rounds up, never down.
        pytest.param(1, 3.0, [(0, 0), (0, 334), (0.1, 234), (0.25, 0)], id="retry-after-ceil"),
        # Refill is capped at capacity however long the key was idle.
        pytest.param(
            2, 1.0, [(0, 0), (0, 0), (3600, 0), (0, 0), (0, 1000)], id="capped-at-capacity"
        ),
        # A sub-millisecond wait is reported as 1 ms, never 0 (0 means allowed).
        pytest.param(1, 1.0, [(0, 0), (0.9999, 1), (0.001, 0)], id="sub-millisecond-wait"),
        # A fast bucket: 100 tokens/s refills a token every 10 ms.
        pytest.param(
            5,
            100.0,
            [(0, 0)] * 5 + [(0, 10), (0.0078125, 3), (0.0078125, 0), (0, 5)],
            id="fast-rate",
        ),
    ],
)
def test_token_bucket(capacity: int, rate: float, script: list[tuple[float, int]]) -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(capacity, rate, clock=clock)
    results = []
    for advance, _ in script:
        clock.advance(advance)
        results.append(limiter.acquire("k"))
    assert results == [expected for _, expected in script]


def test_token_bucket_a_refused_request_takes_no_tokens() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(2, 1.0, clock=clock)
    assert limiter.acquire("k") == 0
    assert limiter.acquire("k") == 0
    for _ in range(10):
        assert limiter.acquire("k") == 1000
    clock.advance(1.0)
    assert limiter.acquire("k") == 0


def test_token_bucket_cost() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(10, 2.0, clock=clock)
    assert limiter.acquire("k", cost=8) == 0
    assert limiter.acquire("k", cost=3) == 500  # 2 left, 1 missing at 2/s
    clock.advance(0.5)
    assert limiter.acquire("k", cost=3) == 0
    assert limiter.acquire("k", cost=11) == 5500  # more than capacity: the maths still holds


def test_token_bucket_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(1, 1.0, clock=clock)
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") == 1000
    assert limiter.acquire("b") == 0
    assert limiter.acquire("b") == 1000


def test_token_bucket_key_table_is_bounded_and_evicts_least_recently_used() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(1, 0.001, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        assert limiter.acquire(key) == 0
    assert limiter.acquire("a") > 0  # touches "a": now "b" is the least recently used
    assert limiter.acquire("d") == 0  # a fourth key evicts "b"
    assert len(limiter._buckets) == 3
    assert set(limiter._buckets) == {"a", "c", "d"}
    assert limiter.acquire("b") == 0  # evicted: starts again with a full bucket, evicts "c"
    assert limiter.acquire("a") > 0  # still remembered, still empty
    assert limiter.acquire("c") == 0
    for index in range(1000):  # hostile key churn
        limiter.acquire(f"churn-{index}")
    assert len(limiter._buckets) == 3


def test_token_bucket_per_minute() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter.per_minute(60, clock=clock)
    assert limiter.capacity == 60
    assert limiter.rate == pytest.approx(1.0)
    for _ in range(60):
        assert limiter.acquire("ip") == 0
    assert limiter.acquire("ip") == 1000


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (1, 0.0), (-1, 1.0), (1, -0.5)])
def test_token_bucket_rejects_non_positive_settings(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(capacity, rate)


# --- PresenceDirectory: presence across nodes ------------------------------------------------


def test_directory_takes_the_strongest_status_over_nodes() -> None:
    from boltorezka.realtime.presence import PresenceDirectory

    user, room = uuid.uuid4(), uuid.uuid4()
    directory = PresenceDirectory(node_ttl=5)
    assert directory.report("a", user, "away", [room], now=0) == "away"
    assert directory.report("b", user, "online", [room], now=0) == "online"
    # The away device's node going quiet about it changes nothing while b is online.
    assert directory.report("a", user, "offline", [room], now=1) is None
    assert directory.status(user) == "online"
    assert directory.report("b", user, "dnd", [room], now=1) == "dnd"
    assert directory.report("b", user, "offline", [room], now=2) == "offline"
    assert directory.rooms(user) == {room}  # still known, so the change can be announced
    directory.forget_rooms(user)
    assert directory.rooms(user) == set()


def test_directory_drops_nodes_that_stop_saying_they_are_alive() -> None:
    from boltorezka.realtime.presence import PresenceDirectory

    alice, bob, room = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    directory = PresenceDirectory(node_ttl=5)
    directory.report("a", alice, "online", [room], now=0)
    directory.report("b", bob, "online", [room], now=0)
    directory.report("b", alice, "away", [room], now=0)
    directory.heard("a", now=4)
    assert directory.expire(now=5) == []  # nobody silent for longer than the TTL yet
    directory.heard("a", now=9)
    changes = directory.expire(now=9.5)
    # b is gone: bob goes offline, alice (online on a) does not change.
    assert changes == [(bob, "offline", {room})]
    assert directory.status(alice) == "online"
    assert directory.status(bob) == "offline"


def test_directory_forgets_what_a_restarted_node_reported() -> None:
    from boltorezka.realtime.presence import PresenceDirectory

    alice, bob, room = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    directory = PresenceDirectory(node_ttl=5)
    directory.report("a", alice, "online", [room], now=0)
    directory.report("b", bob, "online", [room], now=0)
    directory.report("b", alice, "dnd", [room], now=0)
    # b comes back under the same id: its old devices are gone, a's are not.
    changes = directory.forget_node("b")
    assert sorted(changes) == sorted([(bob, "offline", {room}), (alice, "online", {room})])
    assert directory.status(bob) == "offline" and directory.status(alice) == "online"
    assert directory.forget_node("never-seen") == []


# --- Audience -------------------------------------------------------------------------------


class _Device:
    """What the audience reads of a connection: identity, memberships, open rooms."""

    def __init__(self, user_id: uuid.UUID) -> None:
        self.id = uuid.uuid4().hex
        self.user_id = user_id
        self.session_id = uuid.uuid4()
        self.member_rooms: set[uuid.UUID] = set()
        self.subscriptions: dict[uuid.UUID, object] = {}


def test_audience_asks_for_a_room_exactly_while_someone_here_needs_it() -> None:
    rooms: list[tuple[uuid.UUID, bool]] = []
    users: list[tuple[uuid.UUID, bool]] = []
    audience = Audience(
        room_needed=lambda r, n: rooms.append((r, n)), user_needed=lambda u, n: users.append((u, n))
    )
    room, alice = uuid.uuid4(), uuid.uuid4()
    phone, laptop = (cast(Connection, _Device(alice)) for _ in range(2))
    for device in (phone, laptop):
        audience.add(device)
    audience.authenticated(phone, [room])
    audience.authenticated(laptop, [])
    assert users == [(alice, True)]  # once, for the user's first connection
    assert rooms[-1] == (room, True)
    audience.add_subscriber(laptop, room)
    audience.drop_membership(phone, room)
    assert rooms[-1] == (room, True)  # the laptop still has it open
    audience.drop_subscriber(laptop, room)
    assert rooms[-1] == (room, False)
    audience.remove(phone)
    assert users == [(alice, True)]  # the laptop is still here
    audience.remove(laptop)
    assert users == [(alice, True), (alice, False)]
    assert not audience.connections and not audience.by_user and not audience.by_session


# --- session deadlines ----------------------------------------------------------------------


def _state(
    *, authenticated: bool = True, expires_at: int = 1000, warned_for: int = 0
) -> SessionState:
    return SessionState(
        opened_at=0.0, authenticated=authenticated, expires_at=expires_at, warned_for=warned_for
    )


@pytest.mark.parametrize(
    ("state", "now", "due", "at"),
    [
        # Not authenticated: the auth timeout (10 s here) is the only deadline.
        (_state(authenticated=False, expires_at=0), 3.0, "nothing", 10.0),
        (_state(authenticated=False, expires_at=0), 10.0, "auth_timeout", 10.0),
        # Authenticated: look again at the warning time (60 s before expiry), warn there once.
        (_state(), 100.0, "nothing", 940.0),
        (_state(), 940.0, "warn", 1000.0),
        (_state(warned_for=1000), 950.0, "nothing", 1000.0),
        (_state(warned_for=1000), 1000.0, "expired", 1000.0),
        # A refresh moved the expiry: the warning sent for the old one does not count.
        (_state(expires_at=2000, warned_for=1000), 1950.0, "warn", 2000.0),
    ],
)
def test_session_deadlines(state: SessionState, now: float, due: str, at: float) -> None:
    found, when = next_deadline(state, now, auth_timeout=10.0, warning=60.0)
    assert (found.value, when) == (due, at)

"""The call state machine on its own: no I/O, time passed in explicitly.

These are the rules every call follows on the server: who is in a call, when it rings,
becomes active and ends, and how a dropped connection keeps its place for a while.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

import pytest

from boltorezka.calls.state import (
    TRANSITIONS,
    Action,
    Call,
    CallMode,
    CallState,
    InvalidTransition,
    NotInCall,
    ParticipantNotFound,
)

RING = 45.0
GRACE = 20.0
T0 = 1000.0

ALICE = uuid.uuid4()
BOB = uuid.uuid4()
CAROL = uuid.uuid4()
ROOM = uuid.uuid4()


def started(mode: CallMode = CallMode.P2P) -> Call:
    call, _ = Call.start(ROOM, mode, ALICE, "conn-a", T0)
    return call


def active() -> Call:
    call = started()
    call.join(BOB, "conn-b", T0 + 1)
    return call


def state_of(call: Call) -> CallState:
    """The call's state, read afresh (mypy would keep ``call.state`` narrowed by an assert)."""
    return call.state


def by_user(call: Call, user_id: uuid.UUID) -> uuid.UUID:
    return next(p.id for p in call.participants.values() if p.user_id == user_id)


# --- start, join, leave, end ----------------------------------------------------------------


def test_start_rings_with_the_initiator_as_the_only_participant() -> None:
    call_id = uuid.uuid4()
    call, initiator = Call.start(ROOM, CallMode.SFU, ALICE, "conn-a", T0, call_id=call_id)

    assert call.id == call_id and call.room_id == ROOM and call.mode is CallMode.SFU
    assert call.state is CallState.RINGING and call.live and call.end_reason is None
    assert call.started_by == ALICE and call.created_at == T0
    assert list(call.participants) == [initiator.id]
    assert initiator.user_id == ALICE and initiator.connection_id == "conn-a"
    assert initiator.connected and initiator.joined_at == T0
    assert call.participant_of("conn-a") is initiator


def test_second_user_joining_makes_the_call_active_and_a_third_keeps_it_active() -> None:
    call = started()

    bob, bob_new = call.join(BOB, "conn-b", T0 + 1)
    assert bob_new and bob.user_id == BOB and bob.connected
    assert call.state is CallState.ACTIVE

    carol, carol_new = call.join(CAROL, "conn-c", T0 + 2)
    assert carol_new and call.state is CallState.ACTIVE
    assert len({p.id for p in call.participants.values()}) == 3
    assert {p.user_id for p in call.participants.values()} == {ALICE, BOB, CAROL}
    assert call.participant_of("conn-c") is carol


def test_a_second_device_of_the_same_user_does_not_answer_the_call() -> None:
    call = started()

    call.join(ALICE, "conn-a2", T0 + 1)
    assert call.state is CallState.RINGING  # nobody else has picked up yet
    assert len(call.participants) == 2

    call.join(BOB, "conn-b", T0 + 2)
    assert state_of(call) is CallState.ACTIVE


def test_leaving_keeps_the_call_until_the_last_participant_leaves() -> None:
    call = active()
    alice, bob = by_user(call, ALICE), by_user(call, BOB)

    assert call.leave(bob) is False
    assert call.state is CallState.ACTIVE and list(call.participants) == [alice]

    assert call.leave(alice) is True
    assert state_of(call) is CallState.ENDED and not call.live
    assert call.end_reason == "last_participant_left"
    assert call.participants == {}


def test_the_last_leave_keeps_a_specific_reason() -> None:
    call = started()
    assert call.leave(by_user(call, ALICE), reason="kicked") is True
    assert call.state is CallState.ENDED and call.end_reason == "kicked"


def test_the_initiator_hanging_up_while_ringing_ends_the_call() -> None:
    call = started()
    assert call.leave(by_user(call, ALICE)) is True
    assert call.state is CallState.ENDED and call.end_reason == "last_participant_left"


def test_leaving_with_an_unknown_participant_id_is_participant_not_found() -> None:
    call = active()
    with pytest.raises(ParticipantNotFound) as caught:
        call.leave(uuid.uuid4())
    assert caught.value.code == "participant_not_found"
    assert call.state is CallState.ACTIVE and len(call.participants) == 2


@pytest.mark.parametrize("make", [started, active], ids=["ringing", "active"])
def test_end_ends_the_call_for_everyone(make: Callable[[], Call]) -> None:
    call = make()
    call.end("ended_by_user")
    assert call.state is CallState.ENDED and call.end_reason == "ended_by_user"
    assert call.participants == {}
    assert call.participant_of("conn-a") is None


def test_end_without_a_reason_records_one() -> None:
    call = active()
    call.end()
    assert call.state is CallState.ENDED and call.end_reason == "ended"


def test_every_action_on_an_ended_call_is_an_invalid_transition() -> None:
    call = active()
    bob = by_user(call, BOB)
    call.end()

    with pytest.raises(InvalidTransition) as caught:
        call.join(CAROL, "conn-c", T0 + 5)
    assert caught.value.code == "invalid_call_transition"
    with pytest.raises(InvalidTransition):
        call.join(ALICE, "conn-a", T0 + 5)
    with pytest.raises(InvalidTransition):
        call.leave(bob)
    with pytest.raises(InvalidTransition):
        call.end()

    # Nothing came back to life, and timeouts and dead sockets change nothing either.
    assert call.expire(T0 + 10_000, ring_timeout=RING, grace=GRACE) == []
    assert call.disconnected("conn-a", T0 + 6) is None
    assert call.state is CallState.ENDED and call.end_reason == "ended"
    assert call.participants == {}


def test_the_same_connection_joining_twice_is_an_invalid_transition() -> None:
    call = active()
    with pytest.raises(InvalidTransition):
        call.join(BOB, "conn-b", T0 + 2)
    with pytest.raises(InvalidTransition):
        call.join(ALICE, "conn-a", T0 + 2)  # the initiator's own connection, too
    assert len(call.participants) == 2


# --- the transition table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "action"),
    [(state, action) for state in CallState for action in Action],
    ids=lambda v: v.value,
)
def test_a_state_changes_only_along_the_transition_table(state: CallState, action: Action) -> None:
    call = started()
    call.state = state
    target = TRANSITIONS.get((state, action))
    if target is None:
        with pytest.raises(InvalidTransition):
            call._transition(action, "why")
        assert call.state is state and call.end_reason is None
    else:
        call._transition(action, "why")
        assert call.state is target
        assert call.end_reason == ("why" if target is CallState.ENDED else None)


def test_the_table_allows_exactly_the_documented_lifecycle() -> None:
    assert TRANSITIONS == {
        (CallState.RINGING, Action.ANSWER): CallState.ACTIVE,
        (CallState.RINGING, Action.HANG_UP): CallState.ENDED,
        (CallState.RINGING, Action.NO_ANSWER): CallState.ENDED,
        (CallState.ACTIVE, Action.HANG_UP): CallState.ENDED,
    }


def test_an_edge_missing_from_the_table_cannot_be_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is consulted for every change: no method moves the state on its own."""
    call = active()
    monkeypatch.delitem(TRANSITIONS, (CallState.ACTIVE, Action.HANG_UP))
    with pytest.raises(InvalidTransition):
        call.end()
    assert call.state is CallState.ACTIVE and len(call.participants) == 2

    ringing = started()
    monkeypatch.delitem(TRANSITIONS, (CallState.RINGING, Action.NO_ANSWER))
    with pytest.raises(InvalidTransition):
        ringing.expire(T0 + RING, ring_timeout=RING, grace=GRACE)
    assert ringing.state is CallState.RINGING


def test_ringing_ends_with_no_answer_only_once_the_ring_timeout_has_passed() -> None:
    call = started()

    assert call.expire(T0 + RING - 0.001, ring_timeout=RING, grace=GRACE) == []
    assert call.state is CallState.RINGING and len(call.participants) == 1

    assert call.expire(T0 + RING, ring_timeout=RING, grace=GRACE) == []
    assert state_of(call) is CallState.ENDED and call.end_reason == "no_answer"
    assert call.participants == {}


def test_an_answered_call_never_times_out_for_lack_of_an_answer() -> None:
    call = active()
    assert call.expire(T0 + 100 * RING, ring_timeout=RING, grace=GRACE) == []
    assert call.state is CallState.ACTIVE and len(call.participants) == 2


# --- dropped connections and the grace period -----------------------------------------------


def test_a_dropped_participant_waits_disconnected_for_the_grace_period() -> None:
    call = active()
    bob_id = by_user(call, BOB)

    dropped = call.disconnected("conn-b", T0 + 10)
    assert dropped is not None and dropped.id == bob_id
    assert not dropped.connected and dropped.disconnected_at == T0 + 10
    assert call.participants[bob_id] is dropped  # still in the call
    assert call.participant_of("conn-b") is None
    assert call.disconnected("conn-unknown", T0 + 10) is None

    assert call.expire(T0 + 10 + GRACE - 0.001, ring_timeout=RING, grace=GRACE) == []
    assert bob_id in call.participants and call.state is CallState.ACTIVE


def test_rejoining_within_the_grace_keeps_the_participant_id() -> None:
    call = active()
    bob_id = by_user(call, BOB)
    call.disconnected("conn-b", T0 + 10)

    rejoined, is_new = call.join(BOB, "conn-b2", T0 + 15)
    assert not is_new
    assert rejoined.id == bob_id and rejoined is call.participants[bob_id]
    assert rejoined.connected and rejoined.connection_id == "conn-b2"
    assert rejoined.disconnected_at is None
    assert call.participant_of("conn-b2") is rejoined
    assert len(call.participants) == 2 and call.state is CallState.ACTIVE

    # Reconnected, the grace clock is off: much later, nothing is removed.
    assert call.expire(T0 + 10 + 10 * GRACE, ring_timeout=RING, grace=GRACE) == []
    assert bob_id in call.participants


def test_the_grace_running_out_removes_the_participant_but_others_keep_the_call() -> None:
    call = active()
    bob_id = by_user(call, BOB)
    call.disconnected("conn-b", T0 + 10)

    assert call.expire(T0 + 10 + GRACE, ring_timeout=RING, grace=GRACE) == [bob_id]
    assert bob_id not in call.participants
    assert call.state is CallState.ACTIVE and call.end_reason is None

    # Coming back after that is a fresh participant.
    again, is_new = call.join(BOB, "conn-b3", T0 + 40)
    assert is_new and again.id != bob_id


def test_everybody_dropping_past_the_grace_ends_the_call_as_connection_lost() -> None:
    call = active()
    alice, bob = by_user(call, ALICE), by_user(call, BOB)
    call.disconnected("conn-a", T0 + 10)
    call.disconnected("conn-b", T0 + 12)

    # Alice's grace is up, Bob's is not yet.
    assert call.expire(T0 + 10 + GRACE, ring_timeout=RING, grace=GRACE) == [alice]
    assert call.state is CallState.ACTIVE and list(call.participants) == [bob]

    assert call.expire(T0 + 12 + GRACE, ring_timeout=RING, grace=GRACE) == [bob]
    assert state_of(call) is CallState.ENDED and call.end_reason == "connection_lost"
    assert call.participants == {}


def test_a_lone_ringing_initiator_dropping_past_the_grace_ends_as_connection_lost() -> None:
    call = started()
    alice = by_user(call, ALICE)
    call.disconnected("conn-a", T0 + 1)
    assert call.expire(T0 + 1 + GRACE, ring_timeout=RING, grace=GRACE) == [alice]
    assert call.state is CallState.ENDED and call.end_reason == "connection_lost"


# --- who may signal whom --------------------------------------------------------------------


def test_require_participant_knows_only_live_connections_of_the_call() -> None:
    call = active()
    assert call.require_participant("conn-b").user_id == BOB
    with pytest.raises(NotInCall) as caught:
        call.require_participant("conn-stranger")
    assert caught.value.code == "not_in_call"

    call.disconnected("conn-b", T0 + 5)
    with pytest.raises(NotInCall):
        call.require_participant("conn-b")  # a dead socket speaks for nobody


def test_target_is_a_connected_participant_of_this_call() -> None:
    call = active()
    bob_id = by_user(call, BOB)
    assert call.target(bob_id).user_id == BOB

    with pytest.raises(ParticipantNotFound) as caught:
        call.target(uuid.uuid4())
    assert caught.value.code == "participant_not_found"

    other = started()
    with pytest.raises(ParticipantNotFound):
        call.target(next(iter(other.participants)))  # someone in another call

    call.disconnected("conn-b", T0 + 5)
    with pytest.raises(ParticipantNotFound):
        call.target(bob_id)  # nobody to deliver to while disconnected
    call.join(BOB, "conn-b2", T0 + 6)
    assert call.target(bob_id).connection_id == "conn-b2"


def test_participant_ids_are_unique_across_calls() -> None:
    calls = [started() for _ in range(20)]
    ids = list(itertools.chain.from_iterable(c.participants for c in calls))
    assert len(set(ids)) == len(ids)
    assert len({c.id for c in calls}) == len(calls)

"""The call lifecycle as an explicit state machine. Pure code: no I/O, time is passed in.

States: ``ringing`` (started, waiting for a second participant) → ``active`` (two or more
have joined) → ``ended``. Every change goes through :meth:`Call._transition`, which checks
it against :data:`TRANSITIONS`; anything else raises :class:`InvalidTransition`.

Participants whose connection dies are not removed at once: they become ``disconnected``
for a grace period, and rejoining from a new connection within it keeps their place.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from boltorezka.errors import AppError


class CallState(StrEnum):
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class CallMode(StrEnum):
    P2P = "p2p"
    SFU = "sfu"


class Action(StrEnum):
    ANSWER = "answer"  # a second participant joined
    HANG_UP = "hang_up"  # last participant left, or somebody ended the call
    NO_ANSWER = "no_answer"  # nobody joined within the ring timeout


TRANSITIONS: dict[tuple[CallState, Action], CallState] = {
    (CallState.RINGING, Action.ANSWER): CallState.ACTIVE,
    (CallState.RINGING, Action.HANG_UP): CallState.ENDED,
    (CallState.RINGING, Action.NO_ANSWER): CallState.ENDED,
    (CallState.ACTIVE, Action.HANG_UP): CallState.ENDED,
}


class InvalidTransition(AppError):
    status = 409
    code = "invalid_call_transition"
    title = "The call cannot do that in its current state"


class NotInCall(AppError):
    status = 403
    code = "not_in_call"
    title = "You are not a participant of this call"


class ParticipantNotFound(AppError):
    status = 404
    code = "participant_not_found"
    title = "No such participant in this call"


@dataclass
class Participant:
    id: uuid.UUID
    user_id: uuid.UUID
    connection_id: str | None
    joined_at: float
    disconnected_at: float | None = None

    @property
    def connected(self) -> bool:
        return self.connection_id is not None


@dataclass
class Call:
    id: uuid.UUID
    room_id: uuid.UUID
    mode: CallMode
    started_by: uuid.UUID
    created_at: float
    state: CallState = CallState.RINGING
    end_reason: str | None = None
    participants: dict[uuid.UUID, Participant] = field(default_factory=dict)
    # Everyone who ever joined: ringing ends in "answered" only once a second person came.
    joined_users: set[uuid.UUID] = field(default_factory=set)

    @classmethod
    def start(
        cls,
        room_id: uuid.UUID,
        mode: CallMode,
        user_id: uuid.UUID,
        connection_id: str,
        now: float,
        call_id: uuid.UUID | None = None,
    ) -> tuple[Call, Participant]:
        call = cls(
            id=call_id or uuid.uuid4(),
            room_id=room_id,
            mode=mode,
            started_by=user_id,
            created_at=now,
        )
        participant = call._add(user_id, connection_id, now)
        return call, participant

    # --- queries --------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state is not CallState.ENDED

    def participant_of(self, connection_id: str) -> Participant | None:
        for participant in self.participants.values():
            if participant.connection_id == connection_id:
                return participant
        return None

    def require_participant(self, connection_id: str) -> Participant:
        participant = self.participant_of(connection_id)
        if participant is None:
            raise NotInCall()
        return participant

    def target(self, participant_id: uuid.UUID) -> Participant:
        participant = self.participants.get(participant_id)
        if participant is None or not participant.connected:
            raise ParticipantNotFound()
        return participant

    # --- transitions ----------------------------------------------------------------------

    def join(self, user_id: uuid.UUID, connection_id: str, now: float) -> tuple[Participant, bool]:
        """Add (or restore, within grace) a participant; return it and whether it is new."""
        self._require_live("join")
        for participant in self.participants.values():
            if participant.user_id == user_id and not participant.connected:
                # A reconnect inside the grace period keeps the participant's place and id.
                participant.connection_id = connection_id
                participant.disconnected_at = None
                return participant, False
            if participant.connection_id == connection_id:
                raise InvalidTransition("this connection is already in the call")
        participant = self._add(user_id, connection_id, now)
        if self.state is CallState.RINGING and len(self.joined_users) >= 2:
            self._transition(Action.ANSWER)
        return participant, True

    def leave(self, participant_id: uuid.UUID, reason: str = "left") -> bool:
        """Remove a participant; return True if that ended the call."""
        self._require_live("leave")
        if self.participants.pop(participant_id, None) is None:
            raise ParticipantNotFound()
        if not self.participants:
            self._transition(
                Action.HANG_UP, "last_participant_left" if reason == "left" else reason
            )
            return True
        return False

    def end(self, reason: str = "ended") -> None:
        self._require_live("end")
        self._transition(Action.HANG_UP, reason)
        self.participants.clear()

    def disconnected(self, connection_id: str, now: float) -> Participant | None:
        """The connection died: keep the participant for the grace period."""
        participant = self.participant_of(connection_id)
        if participant is not None and self.live:
            participant.connection_id = None
            participant.disconnected_at = now
        return participant

    def expire(self, now: float, *, ring_timeout: float, grace: float) -> list[uuid.UUID]:
        """Apply timeouts; return ids of participants removed after their grace ran out."""
        if not self.live:
            return []
        removed = [
            p.id
            for p in self.participants.values()
            if p.disconnected_at is not None and now - p.disconnected_at >= grace
        ]
        for participant_id in removed:
            self.participants.pop(participant_id)
        if not self.participants:
            self._transition(Action.HANG_UP, "connection_lost")
        elif self.state is CallState.RINGING and now - self.created_at >= ring_timeout:
            self._transition(Action.NO_ANSWER, "no_answer")
            self.participants.clear()
        return removed

    def _add(self, user_id: uuid.UUID, connection_id: str, now: float) -> Participant:
        participant = Participant(
            id=uuid.uuid4(), user_id=user_id, connection_id=connection_id, joined_at=now
        )
        self.participants[participant.id] = participant
        self.joined_users.add(user_id)
        return participant

    def _require_live(self, what: str) -> None:
        if not self.live:
            raise InvalidTransition(f"cannot {what}: the call has ended")

    def _transition(self, action: Action, reason: str | None = None) -> None:
        target = TRANSITIONS.get((self.state, action))
        if target is None:
            raise InvalidTransition(f"cannot {action.value} a call that is {self.state.value}")
        self.state = target
        if target is CallState.ENDED:
            self.end_reason = reason or action.value

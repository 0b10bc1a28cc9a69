"""In-order, exactly-once delivery of a room's messages to one subscriber. Pure code.

Messages carry the room's gapless ``seq``. Events can reach a node out of order (two
senders commit 5 then 6, but 6 is published first), and while a subscriber is replaying
history, live events must wait. The gate releases items strictly in seq order, drops
anything at or below what was already delivered, and reports a gap so the caller can fill
it from the database.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class SeqGate(Generic[T]):
    __slots__ = ("_pending", "last_seq")  # one per subscription: many per node

    def __init__(self) -> None:
        self.last_seq: int | None = None  # None while buffering (before start)
        self._pending: dict[int, T] = {}

    @property
    def buffering(self) -> bool:
        return self.last_seq is None

    def start(self, last_seq: int) -> list[T]:
        """End buffering: everything up to ``last_seq`` was delivered another way."""
        self.last_seq = last_seq
        for seq in [s for s in self._pending if s <= last_seq]:
            del self._pending[seq]
        return self._release()

    def offer(self, seq: int, item: T) -> list[T]:
        """Accept one item; return the items now deliverable, in order."""
        if self.last_seq is not None and seq <= self.last_seq:
            return []
        self._pending.setdefault(seq, item)
        return [] if self.last_seq is None else self._release()

    def gap(self) -> tuple[int, int] | None:
        """``(after, before)``: seqs strictly between are missing, or None if no gap."""
        if self.last_seq is None or not self._pending:
            return None
        return self.last_seq, min(self._pending)

    def _release(self) -> list[T]:
        assert self.last_seq is not None
        ready: list[T] = []
        while (self.last_seq + 1) in self._pending:
            self.last_seq += 1
            ready.append(self._pending.pop(self.last_seq))
        return ready

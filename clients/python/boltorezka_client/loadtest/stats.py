"""Counters, latency histograms and received-seq sets that worker processes merge cheaply."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

_BASE_MS = 0.01
_GROWTH = math.log(1.01)  # 1 % wide buckets: percentiles within 1 %, a few KB per histogram


class Histogram:
    """Latencies in milliseconds in logarithmic buckets; exact count, sum and max."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        index = int(math.log(ms / _BASE_MS) / _GROWTH) if ms > _BASE_MS else 0
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += ms
        if ms > self.max:
            self.max = ms

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                # The bucket's geometric middle, never above the exact maximum.
                return min(self.max, _BASE_MS * math.exp((index + 0.5) * _GROWTH))
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "count": self.count,
            "p50": rounded(self.percentile(50)),
            "p95": rounded(self.percentile(95)),
            "p99": rounded(self.percentile(99)),
            "max": rounded(self.max) if self.count else None,
            "mean": rounded(self.total / self.count) if self.count else None,
        }


class SeqSet:
    """The seqs one subscriber received in one room, after ``base``.

    Delivery is in order almost always, so a high-water mark plus a small set of seqs that
    arrived early stays tiny even for hundreds of thousands of messages.
    """

    __slots__ = ("base", "contiguous", "extra")

    def __init__(self, base: int) -> None:
        self.base = base
        self.contiguous = base
        self.extra: set[int] = set()

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already there (a duplicate)."""
        if seq <= self.contiguous or seq in self.extra:
            return False
        if seq == self.contiguous + 1:
            self.contiguous = seq
            extra = self.extra
            while self.contiguous + 1 in extra:
                self.contiguous += 1
                extra.discard(self.contiguous)
        else:
            self.extra.add(seq)
        return True

    def __contains__(self, seq: int) -> bool:
        return self.base < seq <= self.contiguous or seq in self.extra

    def highest(self) -> int:
        return max(self.extra, default=self.contiguous)


@dataclass(slots=True)
class Counters:
    clients: int = 0
    connected: int = 0  # clients whose first connection and joins succeeded
    connect_failed: int = 0  # clients that never got connected
    online: int = 0  # sockets open right now
    reconnects: int = 0
    reconnect_failed: int = 0
    disconnects: int = 0  # closes the load tester did not ask for
    churned: int = 0  # closes it did ask for (reconnect churn)
    sent: int = 0
    acked: int = 0
    nacked: int = 0
    ack_timeouts: int = 0
    resent: int = 0
    delivered: int = 0
    duplicated: int = 0
    signal_sent: int = 0
    signal_acked: int = 0
    signal_nacked: int = 0
    signal_received: int = 0
    calls_joined: int = 0
    token_refreshes: int = 0

    def merge(self, other: Counters) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Subscription:
    """What one client saw of one room, for the loss count."""

    room: str
    user: int  # account index
    base: int
    contiguous: int
    extra: list[int]
    alive: bool  # still connected at the end; a client that gave up is judged until then

    @classmethod
    def of(cls, room: str, user: int, seen: SeqSet, alive: bool) -> Subscription:
        return cls(room, user, seen.base, seen.contiguous, sorted(seen.extra), alive)


@dataclass(slots=True)
class WorkerResult:
    index: int
    counters: Counters = field(default_factory=Counters)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    # room -> [(seq, sender account index)] of every acked chat.send
    acked: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)
    nack_codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    refreshed: dict[str, dict[str, Any]] = field(default_factory=dict)  # user id -> tokens
    phases: dict[str, float] = field(default_factory=dict)


def count_losses(results: list[WorkerResult]) -> tuple[int, int]:
    """``(expected, lost)`` copies over every subscription of every worker.

    A copy is expected for every acked message of the room with a seq above the
    subscription's base (the room's newest seq when it first joined) from another sender;
    for a client that gave up, only up to the highest seq it had received.
    """
    acked: dict[str, list[tuple[int, int]]] = {}
    for result in results:
        for room, entries in result.acked.items():
            acked.setdefault(room, []).extend(entries)
    expected = lost = 0
    for result in results:
        for sub in result.subscriptions:
            extra = set(sub.extra)
            limit = None if sub.alive else max(extra, default=sub.contiguous)
            for seq, sender in acked.get(sub.room, ()):
                if seq <= sub.base or sender == sub.user or (limit is not None and seq > limit):
                    continue
                expected += 1
                if not (seq <= sub.contiguous or seq in extra):
                    lost += 1
    return expected, lost

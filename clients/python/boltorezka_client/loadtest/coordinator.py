"""Spreads the clients over worker processes, shows progress, merges what they report."""

from __future__ import annotations

import multiprocessing
import queue as queues
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from boltorezka_client.loadtest import worker
from boltorezka_client.loadtest.accounts import Accounts
from boltorezka_client.loadtest.scenario import Scenario
from boltorezka_client.loadtest.stats import WorkerResult

_START_DELAY = 0.5  # after every worker is ready, so all share one timeline
_READY_TIMEOUT = 60.0
_RESULT_GRACE = 15.0  # after the hard limit, before workers are killed


@dataclass(slots=True)
class Outcome:
    results: list[WorkerResult]
    room_sizes: list[int]
    interrupted: bool
    timed_out: bool


def plan(scenario: Scenario, accounts: Accounts) -> tuple[list[worker.WorkerPlan], list[int]]:
    """Assign accounts to workers round-robin (so every worker ramps up evenly) and to URLs."""
    if scenario.clients > len(accounts.accounts):
        raise ValueError(
            f"--clients {scenario.clients} but the tokens file has only "
            f"{len(accounts.accounts)} accounts"
        )
    active = set(range(scenario.clients))
    rooms_of: dict[int, list[str]] = {i: [] for i in active}
    call_rooms: dict[int, list[str]] = {i: [] for i in active}
    host_rooms: dict[int, list[str]] = {i: [] for i in active}
    room_sizes = []
    for room in accounts.rooms:
        members = [m for m in dict.fromkeys(room.members) if m in active]
        if not members:
            continue
        room_sizes.append(len(members))
        for m in members:
            rooms_of[m].append(room.id)
        in_call = round(scenario.call_share * len(members))
        if scenario.call_share > 0 and len(members) >= 2:
            in_call = max(2, in_call)
            for position, m in enumerate(members[:in_call]):
                call_rooms[m].append(room.id)
                if position == 0:
                    host_rooms[m].append(room.id)
    shares: list[list[worker.ClientPlan]] = [[] for _ in range(scenario.processes)]
    for i in range(scenario.clients):
        shares[i % scenario.processes].append(
            worker.ClientPlan(
                account=accounts.accounts[i],
                url=scenario.urls[i % len(scenario.urls)],
                rooms=tuple(rooms_of[i]),
                call_rooms=tuple(call_rooms[i]),
                host_rooms=tuple(host_rooms[i]),
                start_offset=scenario.ramp_up * i / scenario.clients,
            )
        )
    churn_each = scenario.churn / scenario.processes
    plans = [
        worker.WorkerPlan(index, scenario, tuple(share), churn_each)
        for index, share in enumerate(shares)
        if share
    ]
    return plans, room_sizes


class Progress:
    """One line a second: rewritten in place on a terminal, appended otherwise."""

    def __init__(self, scenario: Scenario, out: TextIO) -> None:
        self.scenario = scenario
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.last_delivered = 0

    def show(self, start: float, latest: dict[int, dict[str, int]], force: bool = False) -> None:
        now = time.time()
        if not self.scenario.progress or now < start or (now - self.last < 1.0 and not force):
            return
        totals: dict[str, int] = {}
        for counters in latest.values():
            for key, value in counters.items():
                totals[key] = totals.get(key, 0) + value
        elapsed = now - start if start else 0.0
        if elapsed < self.scenario.ramp_up:
            phase = "ramp-up"
        elif elapsed < self.scenario.ramp_up + self.scenario.duration:
            phase = "sending"
        else:
            phase = "drain"
        delivered = totals.get("delivered", 0)
        rate = (delivered - self.last_delivered) / max(1e-9, now - self.last) if self.last else 0
        self.last, self.last_delivered = now, delivered
        line = (
            f"{elapsed:6.1f}s {phase:<7} online {totals.get('online', 0)}/{self.scenario.clients}"
            f" failed {totals.get('connect_failed', 0)} sent {totals.get('sent', 0)}"
            f" acked {totals.get('acked', 0)} delivered {delivered} ({rate:.0f}/s)"
            f" dup {totals.get('duplicated', 0)} drops {totals.get('disconnects', 0)}"
        )
        if self.tty:
            self.out.write("\r" + line.ljust(110))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.scenario.progress:
            self.out.write("\n")
            self.out.flush()


def run(scenario: Scenario, accounts: Accounts, out: TextIO = sys.stderr) -> Outcome:
    plans, room_sizes = plan(scenario, accounts)
    context = multiprocessing.get_context("spawn")
    inbox: Any = context.Queue()
    go = context.Event()
    stop = context.Event()
    start_at: Any = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=worker.main, args=(p, inbox, go, stop, start_at), name=f"loadtest-{p.index}"
        )
        for p in plans
    ]
    interrupted = False

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    began = time.time()
    hard_deadline = began + _READY_TIMEOUT + scenario.hard_limit
    results: dict[int, WorkerResult] = {}
    latest: dict[int, dict[str, int]] = {}
    progress = Progress(scenario, out)
    timed_out = False
    try:
        for process in processes:
            process.daemon = True
            process.start()
        ready = 0
        ready_by = time.time() + _READY_TIMEOUT
        while ready < len(processes) and time.time() < ready_by and not stop.is_set():
            try:
                message = inbox.get(timeout=0.25)
            except queues.Empty:
                continue
            if message[0] == "ready":
                ready += 1
        start = time.time() + _START_DELAY
        start_at.value = 0.0 if stop.is_set() else start
        hard_deadline = start + scenario.hard_limit
        go.set()
        while len(results) < len(processes):
            now = time.time()
            if now > hard_deadline and not stop.is_set():
                timed_out = True
                stop.set()
            if now > hard_deadline + _RESULT_GRACE:
                break
            try:
                message = inbox.get(timeout=0.25)
            except queues.Empty:
                message = None
            if message is not None:
                kind, index, body = message
                if kind == "progress":
                    latest[index] = body
                elif kind == "result":
                    results[index] = body
                    latest[index] = body.counters.as_dict()
            progress.show(start, latest)
        progress.show(start, latest, force=True)
        progress.done()
    finally:
        signal.signal(signal.SIGINT, previous)
        stop.set()
        go.set()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    missing = [p.index for p in plans if p.index not in results]
    collected = [results[i] for i in sorted(results)]
    for index in missing:
        collected.append(WorkerResult(index, errors=[f"worker {index} sent no result"]))
    return Outcome(collected, room_sizes, interrupted, timed_out)

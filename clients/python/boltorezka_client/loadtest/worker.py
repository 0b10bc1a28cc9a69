"""One worker process: runs its share of the clients on one event loop and reports stats.

Timeline (wall clock, shared by every worker): clients connect spread over the ramp-up,
then every client sends ``rate`` messages a second until the send phase ends, then the
drain grace lets the last copies arrive. Each message's ``clientMsgId`` is
``lt.<account index>.<n>.<send time in ns>``: receivers in any process tell their own
echo from others' messages and compute delivery latency from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import resource
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from boltorezka_client.loadtest import accounts, wire
from boltorezka_client.loadtest.accounts import Account
from boltorezka_client.loadtest.scenario import Scenario
from boltorezka_client.loadtest.stats import Counters, Histogram, SeqSet, Subscription, WorkerResult

_MAX_ERRORS = 20
_REFRESH_MARGIN = 10.0  # seconds before expiry
_ICE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host", "sdpMid": "0"}


class Queue(Protocol):
    def put(self, obj: Any) -> None: ...


class Flag(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Nack(Exception):
    def __init__(self, code: str, retry_after_ms: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True, slots=True)
class ClientPlan:
    account: Account
    url: str
    rooms: tuple[str, ...]
    call_rooms: tuple[str, ...] = ()  # rooms whose call it takes part in
    host_rooms: tuple[str, ...] = ()  # rooms whose call it starts
    start_offset: float = 0.0  # seconds after the start to connect


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    index: int
    scenario: Scenario
    clients: tuple[ClientPlan, ...]
    churn_rate: float = 0.0


@dataclass(slots=True)
class Send:
    room: str
    client_msg_id: str
    sent_ns: int
    body: str


@dataclass(slots=True)
class Call:
    call_id: str
    participants: dict[str, str] = field(default_factory=dict)  # participantId -> userId
    mine: str | None = None


def sleep_until(at: float) -> Any:
    return asyncio.sleep(max(0.0, at - time.time()))


class LoadClient:
    def __init__(self, worker: Worker, plan: ClientPlan) -> None:
        self.w = worker
        self.plan = plan
        self.account = plan.account
        self.tag = f"lt.{plan.account.index}."
        self.conn: wire.WireConnection | None = None
        self.subs: dict[str, SeqSet] = {}
        self.early: dict[str, list[tuple[int, str]]] = {}
        self.waiters: dict[str, asyncio.Future[Any]] = {}
        self.sends: dict[str, Send] = {}
        self.resend: list[Send] = []
        self.signals: dict[str, int] = {}
        self.calls: dict[str, Call] = {}
        self.call_seen = asyncio.Event()
        self.ids = itertools.count(1)
        self.hello: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()
        self.ready = False  # authenticated and joined on the current socket
        self.gave_up = False
        self.started = False
        self.connected_once = False
        self.leaving = False
        self.bounced = False
        self.refreshing = False
        self.quiet_close = False  # the next close is one we caused while setting up

    # --- frames in (the hot path: no awaits, no tasks) -------------------------------------

    def on_message(self, data: bytes) -> None:
        frame = json.loads(data)
        kind = frame.get("type")
        if kind == "chat.message":
            self.on_chat(frame["payload"])
        elif kind == "ack" or kind == "nack":
            self.on_answer(kind == "ack", frame)
        elif kind == "rtc.ice":
            self.w.counters.signal_received += 1
        elif kind == "call.state":
            self.on_call_state(frame["payload"])
        elif kind == "auth.expiring" and not self.refreshing:
            self.refreshing = True
            self.w.spawn(self.refresh_live(int(frame["payload"]["expiresAt"])))
        elif kind == "server.capabilities" and self.hello is not None and not self.hello.done():
            self.hello.set_result(None)

    def on_chat(self, payload: dict[str, Any]) -> None:
        message = payload["message"]
        client_msg_id: str = message["clientMsgId"]
        room = payload["roomId"]
        seq: int = message["seq"]
        seen = self.subs.get(room)
        if client_msg_id.startswith(self.tag):
            # Our own echo is not a delivery, but its seq counts as held: resuming from
            # below it would replay every later message a second time.
            if seen is not None:
                seen.add(seq)
            return
        if seen is None:
            if room in self.plan.rooms:
                self.early.setdefault(room, []).append((seq, client_msg_id))
            return
        self.record(seen, seq, client_msg_id)

    def record(self, seen: SeqSet, seq: int, client_msg_id: str) -> None:
        if seq <= seen.base:
            return  # sent before this client first joined: not expected, not counted
        counters = self.w.counters
        if not seen.add(seq):
            counters.duplicated += 1
            return
        counters.delivered += 1
        if client_msg_id.startswith("lt."):
            with contextlib.suppress(ValueError):
                sent_ns = int(client_msg_id.rsplit(".", 1)[1])
                self.w.delivery.add((time.time_ns() - sent_ns) / 1e6)

    def on_answer(self, ok: bool, frame: dict[str, Any]) -> None:
        request_id = frame.get("requestId") or ""
        payload = frame.get("payload") or {}
        counters = self.w.counters
        send = self.sends.pop(request_id, None)
        if send is not None:
            if ok:
                counters.acked += 1
                self.w.acked.setdefault(send.room, []).append(
                    (payload["result"]["seq"], self.account.index)
                )
                self.w.ack.add((time.time_ns() - send.sent_ns) / 1e6)
            else:
                counters.nacked += 1
                self.w.nack(payload.get("code", "?"))
            return
        signal_sent = self.signals.pop(request_id, None)
        if signal_sent is not None:
            if ok:
                counters.signal_acked += 1
                self.w.signal_ack.add((time.time_ns() - signal_sent) / 1e6)
            else:
                counters.signal_nacked += 1
                self.w.nack(payload.get("code", "?"))
            return
        waiter = self.waiters.pop(request_id, None)
        if waiter is not None and not waiter.done():
            if ok:
                waiter.set_result(payload.get("result"))
            else:
                waiter.set_exception(Nack(payload.get("code", "?"), payload.get("retryAfterMs")))

    def on_call_state(self, payload: dict[str, Any]) -> None:
        room = payload["roomId"]
        if room not in self.plan.call_rooms:
            return
        if payload.get("state") == "ended":
            self.calls.pop(room, None)
            return
        call = self.calls.get(room)
        if call is None or call.call_id != payload["callId"]:
            call = self.calls[room] = Call(payload["callId"])
        self.call_seen.set()
        call.participants = {
            p["participantId"]: p["userId"]
            for p in payload.get("participants", ())
            if p.get("connected", True)
        }

    def on_close(self, code: int | None) -> None:
        if self.conn is not None:
            self.w.counters.online -= 1
        self.conn = None
        self.ready = False
        if self.quiet_close:
            self.quiet_close = False
        elif not self.leaving:
            if self.bounced:
                self.w.counters.churned += 1
            else:
                self.w.counters.disconnects += 1
        self.bounced = False
        # Unanswered sends go again after the reconnect with the same clientMsgId, which
        # the server deduplicates; unanswered rtc.ice are simply dropped.
        self.resend.extend(self.sends.values())
        self.sends.clear()
        self.signals.clear()
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError(f"closed ({code})"))
        self.waiters.clear()
        self.closed.set()

    # --- requests out ----------------------------------------------------------------------

    def frame(self, kind: str, request_id: str, payload: dict[str, Any]) -> None:
        if self.conn is None:
            raise ConnectionResetError("not connected")
        self.conn.send_text(
            json.dumps({"v": 1, "type": kind, "requestId": request_id, "payload": payload})
        )

    async def request(self, kind: str, payload: dict[str, Any]) -> Any:
        request_id = f"q{next(self.ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters[request_id] = future
        try:
            self.frame(kind, request_id, payload)
            return await asyncio.wait_for(future, self.w.scenario.request_timeout)
        finally:
            self.waiters.pop(request_id, None)

    def send_chat(self, send: Send) -> None:
        request_id = f"s{next(self.ids)}"
        self.sends[request_id] = send
        self.frame(
            "chat.send",
            request_id,
            {"roomId": send.room, "clientMsgId": send.client_msg_id, "body": send.body},
        )

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        w = self.w
        await sleep_until(w.start + self.plan.start_offset)
        if w.finished:
            return
        self.started = True
        w.counters.clients += 1
        if not await self.session(deadline=w.send_end):
            self.gave_up = True
            return
        self.connected_once = True
        w.counters.connected += 1
        tasks = [asyncio.create_task(self.send_loop())]
        if self.plan.call_rooms:
            tasks.append(asyncio.create_task(self.call_loop()))
        try:
            while not w.finished:
                await self.closed.wait()
                if w.finished or self.leaving:
                    break
                if await self.session(deadline=w.end):
                    w.counters.reconnects += 1
                else:
                    w.counters.reconnect_failed += 1
                    self.gave_up = True
                    break
        finally:
            for task in tasks:
                task.cancel()

    async def session(self, *, deadline: float) -> bool:
        """Connect, authenticate and join every room, retrying with backoff until deadline."""
        for attempt in itertools.count():
            if self.w.finished or time.time() >= deadline:
                return False
            try:
                await self.open()
                return True
            except wire.HandshakeFailed as exc:
                self.w.error(str(exc))
                pause = 5.0 if exc.status == 429 else 1.0
            except Nack as exc:
                self.w.error(f"nack {exc.code}")
                pause = (exc.retry_after_ms or 1000) / 1000
            except (OSError, TimeoutError) as exc:
                self.w.error(f"{type(exc).__name__}: {exc}")
                pause = 0.5
            if self.conn is not None:
                self.quiet_close = True
                self.conn.abort()
            ceiling = min(10.0, pause * 2 ** min(attempt, 4))
            await asyncio.sleep(random.uniform(0.1, ceiling))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    async def open(self) -> None:
        w = self.w
        if accounts.expires_soon(self.account):
            await self.refresh_tokens()
        self.closed.clear()
        self.hello = asyncio.get_running_loop().create_future()
        started = time.time_ns()
        conn = await wire.connect(
            self.plan.url, self.on_message, self.on_close, timeout=w.scenario.request_timeout
        )
        self.conn = conn
        w.counters.online += 1
        async with asyncio.timeout(w.scenario.request_timeout):
            await self.hello
        try:
            await self.request("auth", {"token": self.account.access_token})
        except Nack as exc:
            if exc.code != "token_expired":
                raise
            await self.refresh_tokens()
            raise
        for room in self.plan.rooms:
            seen = self.subs.get(room)
            payload: dict[str, Any] = {"roomId": room}
            if seen is not None:
                payload["lastSeq"] = seen.contiguous  # resume: replay what we missed
            result = await self.request("room.join", payload)
            if seen is None:
                seen = self.subs[room] = SeqSet(int(result["lastSeq"]))
                for seq, client_msg_id in self.early.pop(room, ()):
                    self.record(seen, seq, client_msg_id)
        for room, call in self.calls.items():
            if call.mine is not None:
                with contextlib.suppress(Nack, TimeoutError, ConnectionResetError):
                    await self.join_call(room, call.call_id)
        w.connect_ms.add((time.time_ns() - started) / 1e6)
        self.ready = True
        pending, self.resend = self.resend, []
        for send in pending:
            w.counters.resent += 1
            self.send_chat(send)

    async def refresh_tokens(self) -> None:
        try:
            self.w.refreshed[self.account.id] = await accounts.refresh(
                self.account, self.plan.url, self.w.scenario.request_timeout
            )
        except (OSError, ValueError, KeyError) as exc:
            self.w.error(f"token refresh failed: {exc}")
            return
        self.w.counters.token_refreshes += 1

    async def refresh_live(self, expires_at: int) -> None:
        """Refresh shortly before expiry, not at the warning: a server that warns earlier
        than the token lifetime would otherwise be answered with a refresh loop."""
        try:
            await sleep_until(expires_at - _REFRESH_MARGIN)
            await self.refresh_tokens()
            with contextlib.suppress(Nack, TimeoutError, ConnectionResetError):
                await self.request("auth.refresh", {"token": self.account.access_token})
        finally:
            self.refreshing = False

    async def send_loop(self) -> None:
        w = self.w
        rate = w.scenario.rate
        if rate <= 0 or not self.plan.rooms:
            return
        interval = 1.0 / rate
        next_at = w.send_start + random.uniform(0, interval)  # noqa: S311 - spread the phases
        body = "x" * w.scenario.body_bytes
        rooms = self.plan.rooms
        for n in itertools.count():
            await sleep_until(next_at)
            now = time.time()
            if now >= w.send_end:
                return
            # Behind schedule (an overloaded machine): skip rather than burst to catch up.
            next_at = max(next_at + interval, now - 1.0)
            if not self.ready:
                continue
            sent_ns = time.time_ns()
            room = rooms[n % len(rooms)]
            self.send_chat(Send(room, f"{self.tag}{n}.{sent_ns}", sent_ns, body))
            w.counters.sent += 1

    async def call_loop(self) -> None:
        w = self.w
        await sleep_until(w.send_start)
        for room in self.plan.call_rooms:
            try:
                if room in self.plan.host_rooms:
                    result = await self.request("call.start", {"roomId": room, "mode": "p2p"})
                    call = self.calls.setdefault(room, Call(result["call"]["callId"]))
                    call.mine = result["participantId"]
                    w.counters.calls_joined += 1
                else:
                    async with asyncio.timeout(w.scenario.request_timeout):
                        while room not in self.calls:
                            self.call_seen.clear()
                            await self.call_seen.wait()
                    await self.join_call(room, self.calls[room].call_id)
                    w.counters.calls_joined += 1
            except (Nack, TimeoutError, ConnectionResetError, KeyError) as exc:
                self.w.error(f"call setup in a room failed: {exc!r}")
        interval = 1.0 / w.scenario.signal_rate if w.scenario.signal_rate > 0 else None
        while interval is not None and time.time() < w.send_end:
            await asyncio.sleep(random.uniform(0.5, 1.5) * interval)  # noqa: S311
            for call in self.calls.values():
                others = [p for p in call.participants if p != call.mine]
                if call.mine is None or not others or not self.ready:
                    continue
                request_id = f"c{next(self.ids)}"
                self.signals[request_id] = time.time_ns()
                to = random.choice(others)  # noqa: S311
                payload = {"callId": call.call_id, "candidate": _ICE, "to": to}
                self.frame("rtc.ice", request_id, payload)
                w.counters.signal_sent += 1

    async def join_call(self, room: str, call_id: str) -> None:
        result = await self.request("call.join", {"callId": call_id})
        call = self.calls.setdefault(room, Call(call_id))
        call.mine = result["participantId"]

    def bounce(self) -> None:
        if self.conn is not None and self.ready:
            self.bounced = True
            self.conn.abort()

    def leave(self) -> None:
        self.leaving = True
        if self.conn is not None:
            self.conn.close(1000)


class Worker:
    def __init__(self, plan: WorkerPlan, queue: Queue, stop: Flag, start: float) -> None:
        self.plan = plan
        self.scenario = plan.scenario
        self.queue = queue
        self.stop = stop
        self.start = start
        self.send_start = start + self.scenario.ramp_up
        self.send_end = self.send_start + self.scenario.duration
        self.end = self.send_end + self.scenario.drain
        self.finished = False
        self.counters = Counters()
        self.ack = Histogram()
        self.delivery = Histogram()
        self.connect_ms = Histogram()
        self.signal_ack = Histogram()
        self.acked: dict[str, list[tuple[int, int]]] = {}
        self.nack_codes: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.refreshed: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def error(self, text: str) -> None:
        if text in self.errors or len(self.errors) < _MAX_ERRORS:
            self.errors[text] = self.errors.get(text, 0) + 1

    def nack(self, code: str) -> None:
        self.nack_codes[code] = self.nack_codes.get(code, 0) + 1

    async def run(self) -> WorkerResult:
        clients = [LoadClient(self, plan) for plan in self.plan.clients]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        helpers = [
            asyncio.create_task(self.report_progress()),
            asyncio.create_task(self.expire_sends(clients)),
            asyncio.create_task(self.churn(clients)),
        ]
        while time.time() < self.end:
            if self.stop.is_set():
                # Interrupted: stop sending now, give copies in flight a short grace.
                now = time.time()
                self.send_end = min(self.send_end, now)
                self.end = min(self.end, now + min(self.scenario.drain, 2.0))
            await asyncio.sleep(0.1)
        self.finished = True
        for client in clients:
            client.leave()
        await asyncio.sleep(0.2)  # let the close frames go out
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            client.closed.set()
            self.counters.ack_timeouts += len(client.sends) + len(client.resend)
            if client.started and not client.connected_once:
                self.counters.connect_failed += 1
                client.gave_up = True
        for helper in [*helpers, *self._tasks]:
            helper.cancel()
        await asyncio.gather(*helpers, *self._tasks, return_exceptions=True)
        self.counters.online = 0
        return self.result(clients)

    def result(self, clients: list[LoadClient]) -> WorkerResult:
        subscriptions = [
            Subscription.of(room, c.account.index, seen, alive=not c.gave_up)
            for c in clients
            for room, seen in c.subs.items()
        ]
        return WorkerResult(
            index=self.plan.index,
            counters=self.counters,
            histograms={
                "ack": self.ack,
                "delivery": self.delivery,
                "connect": self.connect_ms,
                "signal_ack": self.signal_ack,
            },
            acked=self.acked,
            subscriptions=subscriptions,
            nack_codes=self.nack_codes,
            errors=[f"{text} (x{n})" for text, n in self.errors.items()],
            refreshed=self.refreshed,
            phases={"start": self.start, "sendStart": self.send_start, "sendEnd": self.send_end},
        )

    async def report_progress(self) -> None:
        while True:
            self.queue.put(("progress", self.plan.index, self.counters.as_dict()))
            await asyncio.sleep(1.0)

    async def expire_sends(self, clients: list[LoadClient]) -> None:
        limit_ns = int(self.scenario.request_timeout * 1e9)
        while True:
            await asyncio.sleep(1.0)
            cutoff = time.time_ns() - limit_ns
            for client in clients:
                stale = [rid for rid, send in client.sends.items() if send.sent_ns < cutoff]
                for request_id in stale:
                    del client.sends[request_id]
                    self.counters.ack_timeouts += 1

    async def churn(self, clients: list[LoadClient]) -> None:
        rate = self.plan.churn_rate
        if rate <= 0 or not clients:
            return
        await sleep_until(self.send_start)
        while time.time() < self.send_end:
            await asyncio.sleep(random.expovariate(rate))
            random.choice(clients).bounce()  # noqa: S311


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(plan: WorkerPlan, queue: Queue, go: Flag, stop: Flag, start_at: Any) -> None:
    """Process entry point: wait for the common start, run, send the result back."""
    # Ctrl-C reaches the whole process group; the coordinator decides and tells us via stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_open_files_limit()
    queue.put(("ready", plan.index, None))
    if not go.wait(timeout=120) or (stop.is_set() and start_at.value == 0):
        queue.put(("result", plan.index, WorkerResult(plan.index)))
        return
    try:
        result = asyncio.run(Worker(plan, queue, stop, float(start_at.value)).run())
    except Exception as exc:  # the coordinator must get an answer from every worker
        result = WorkerResult(plan.index, errors=[f"worker crashed: {exc!r}"])
    queue.put(("result", plan.index, result))

"""Call sessions: lifecycle, persistence, signaling relay and setup telemetry.

Live calls are held by the node that hosts them (one node needs no Redis); every state
change is written to PostgreSQL and announced to the room as ``call.state``. Offers,
answers and ICE candidates are relayed only between participants of the same call, by
participant id; the sender is identified by its connection, never by what it claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg
import structlog

from boltorezka.calls.state import (
    Call,
    CallMode,
    InvalidTransition,
    NotInCall,
    Participant,
)
from boltorezka.context import Actor
from boltorezka.errors import AppError, Conflict, NotFound
from boltorezka.observability.metrics import Metrics
from boltorezka.rooms.service import ROLE_RANK, require_member, resolve_access
from boltorezka.store import calls as store

_log = structlog.get_logger("boltorezka.calls")


class CallNotFound(NotFound):
    code = "call_not_found"
    title = "Call not found"


class CallAlreadyLive(Conflict):
    code = "call_already_live"
    title = "This room already has a live call; join it instead"


class SfuUnavailable(AppError):
    status = 503
    code = "sfu_unavailable"
    title = "The SFU is not reachable"
    retryable = True


class CallHostUnavailable(AppError):
    status = 503
    code = "call_host_unavailable"
    title = "The node holding this call did not answer; try again"
    retryable = True


class CallCluster(Protocol):
    """How a node reaches the node that holds a call (the realtime plane implements it)."""

    def is_alive(self, node: str) -> bool: ...

    async def forward(self, node: str, op: str, args: dict[str, Any]) -> Any:
        """Run ``op`` on ``node``; return its result or raise the AppError it raised."""
        ...

    async def connection_closed(self, connection_id: str) -> None:
        """Tell every node that a connection is gone."""
        ...


class CallSignals(Protocol):
    """How the service reaches clients: the realtime hub implements it."""

    async def room_broadcast(
        self, room_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None: ...

    async def to_connection(
        self, connection_id: str, kind: str, payload: dict[str, Any]
    ) -> None: ...


class SfuLink(Protocol):
    """The route to the SFU process for calls in ``sfu`` mode."""

    async def signal(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None: ...

    async def participant_left(self, call_id: uuid.UUID, participant_id: uuid.UUID) -> None: ...


class CallService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        *,
        ring_timeout: float = 45.0,
        grace: float = 20.0,
        sfu_threshold: int = 4,
        ice_servers: Callable[[uuid.UUID], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self.ring_timeout = ring_timeout
        self.grace = grace
        self.sfu_threshold = sfu_threshold
        self._ice_servers = ice_servers or (lambda _user: [])
        self.signals: CallSignals | None = None
        self.sfu: SfuLink | None = None
        self.calls: dict[uuid.UUID, Call] = {}
        self._auto: set[uuid.UUID] = set()
        # One lock per call: a call's memory and database change together, while calls
        # in different rooms never wait for each other.
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.node_id: str | None = None
        self.cluster: CallCluster | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start_background(self, *, only_node: bool) -> None:
        """Start the sweeper, after ending the calls a previous run of this node left live:
        with ``only_node``, those it hosted (other nodes hold theirs), else all of them."""
        ended = await store.end_orphaned(self._pool, self.node_id if only_node else None)
        if ended:
            _log.info("ended calls left live by a previous run", count=ended)
        self._sweeper = asyncio.create_task(self._sweep(), name="call-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # --- lifecycle requests ---------------------------------------------------------------

    async def start(
        self, actor: Actor, connection_id: str, room_id: uuid.UUID, mode: str
    ) -> dict[str, Any]:
        access = await resolve_access(self._pool, actor, room_id)
        require_member(access)
        chosen = CallMode.SFU if mode == "sfu" else CallMode.P2P
        # The call is invisible to others until it is stored and registered, so no lock.
        call, participant = Call.start(
            room_id, chosen, actor.user_id, connection_id, time.monotonic()
        )
        for attempt in range(2):
            async with self._pool.acquire() as conn, conn.transaction():
                created = await store.create(
                    conn, call.id, room_id, chosen.value, actor.user_id, self.node_id
                )
                if created:
                    await store.add_participant(
                        conn, participant.id, call.id, actor.user_id, actor.session_id
                    )
            if created:
                break
            live_id = await store.live_call_id(self._pool, room_id)
            # A live call whose node is gone can never end by itself: end it, then retry.
            if attempt == 0 and live_id is not None and await self._end_if_host_lost(live_id):
                continue
            raise CallAlreadyLive(call_id=str(live_id))
        self.calls[call.id] = call
        if mode == "auto":
            self._auto.add(call.id)
        self._metrics.call_events.labels("start").inc()
        await self._announce(call)
        return self._joined_result(call, participant)

    async def join(
        self, actor: Actor, connection_id: str, call_id: uuid.UUID, *, forwarded: bool = False
    ) -> dict[str, Any]:
        if (host := await self._remote_host(call_id, forwarded)) is not None:
            return await self._forward(host, "join", actor, connection_id, call_id)  # type: ignore[no-any-return]
        call = await self._call_for_member(actor, call_id)
        async with self._lock_of(call.id):
            before = call.state
            participant, is_new = call.join(actor.user_id, connection_id, time.monotonic())
            upgraded = self._maybe_upgrade(call)
            async with self._pool.acquire() as conn, conn.transaction():
                if is_new:
                    await store.add_participant(
                        conn, participant.id, call.id, actor.user_id, actor.session_id
                    )
                if call.state is not before:
                    await store.set_state(conn, call.id, call.state.value)
                if upgraded:
                    await store.set_mode(conn, call.id, call.mode.value)
        self._metrics.call_events.labels("join").inc()
        await self._announce(call, "upgraded_to_sfu" if upgraded else None)
        return self._joined_result(call, participant)

    async def leave(
        self, actor: Actor, connection_id: str, call_id: uuid.UUID, *, forwarded: bool = False
    ) -> dict[str, Any]:
        if (host := await self._remote_host(call_id, forwarded)) is not None:
            return await self._forward(host, "leave", actor, connection_id, call_id)  # type: ignore[no-any-return]
        call = await self._call_for_member(actor, call_id)
        participant = call.require_participant(connection_id)
        await self._remove(call, participant, "left")
        return {"callId": str(call.id), "state": call.state.value}

    async def end(
        self, actor: Actor, connection_id: str, call_id: uuid.UUID, *, forwarded: bool = False
    ) -> dict[str, Any]:
        if (host := await self._remote_host(call_id, forwarded)) is not None:
            return await self._forward(host, "end", actor, connection_id, call_id)  # type: ignore[no-any-return]
        call = self._live_call(call_id)
        role = require_member(await resolve_access(self._pool, actor, call.room_id))
        if call.participant_of(connection_id) is None and ROLE_RANK[role] < ROLE_RANK["admin"]:
            raise NotInCall("only participants or room admins can end a call")
        async with self._lock_of(call.id):
            leaving = list(call.participants.values())
            call.end("ended_by_user")
            await self._persist_end(call)
        for participant in leaving:
            await self._sfu_left(call, participant)
        self._metrics.call_events.labels("end").inc()
        await self._announce(call)
        return {"callId": str(call.id), "state": call.state.value}

    async def connection_closed(self, connection_id: str) -> None:
        """A socket died: every node holding one of its calls starts the grace period."""
        if self.cluster is not None:
            await self.cluster.connection_closed(connection_id)
        else:
            await self.local_connection_closed(connection_id)

    async def local_connection_closed(self, connection_id: str) -> None:
        """Start the grace period for this connection's participants in calls held here."""
        # Only memory changes here, with no await in between: nothing can interleave.
        changed = [
            call
            for call in list(self.calls.values())
            if call.disconnected(connection_id, time.monotonic()) is not None
        ]
        for call in changed:
            await self._announce(call, "participant_disconnected")

    # --- signaling relay ------------------------------------------------------------------

    async def relay(
        self,
        connection_id: str,
        call_id: uuid.UUID,
        kind: str,
        to: uuid.UUID | None,
        payload: dict[str, Any],
        *,
        forwarded: bool = False,
    ) -> None:
        """Forward ``rtc.*`` from one participant to another (or to the SFU)."""
        if (host := await self._remote_host(call_id, forwarded)) is not None:
            await self._forward(
                host,
                "relay",
                None,
                connection_id,
                call_id,
                kind=kind,
                to=str(to) if to is not None else None,
                payload=payload,
            )
            return
        call = self._live_call(call_id)
        sender = call.require_participant(connection_id)
        outgoing = {**payload, "callId": str(call.id), "from": str(sender.id)}
        if to is None:
            if call.mode is not CallMode.SFU:
                raise InvalidTransition("this call is peer-to-peer: address a participant")
            if self.sfu is None:
                raise SfuUnavailable()
            try:
                await self.sfu.signal(call.id, sender.id, kind, outgoing)
            except Exception as exc:  # the link says why; the client only needs to retry
                raise SfuUnavailable() from exc
            return
        if to == sender.id:
            raise InvalidTransition("cannot signal yourself")
        target = call.target(to)
        assert target.connection_id is not None and self.signals is not None
        await self.signals.to_connection(target.connection_id, kind, outgoing)

    async def from_sfu(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        """Deliver a message the SFU addressed to one participant."""
        call = self.calls.get(call_id)
        participant = call.participants.get(participant_id) if call else None
        if participant is None or participant.connection_id is None or self.signals is None:
            return
        await self.signals.to_connection(
            participant.connection_id, kind, {**payload, "callId": str(call_id)}
        )

    async def telemetry(
        self,
        connection_id: str,
        call_id: uuid.UUID,
        outcome: str,
        setup_ms: int | None,
        ice_failed: bool,
        candidate_type: str | None,
        *,
        forwarded: bool = False,
    ) -> None:
        if (host := await self._remote_host(call_id, forwarded)) is not None:
            await self._forward(
                host,
                "telemetry",
                None,
                connection_id,
                call_id,
                outcome=outcome,
                setup_ms=setup_ms,
                ice_failed=ice_failed,
                candidate_type=candidate_type,
            )
            return
        call = self.calls.get(call_id)
        if call is None or call.participant_of(connection_id) is None:
            raise NotInCall()
        self._metrics.record_call_setup(outcome, ice_failed)
        if setup_ms is not None and outcome == "connected":
            self._metrics.call_setup_seconds.observe(setup_ms / 1000)
        if candidate_type is not None:
            self._metrics.ice_candidate_types.labels(candidate_type).inc()

    # --- routing between nodes ------------------------------------------------------------

    async def _remote_host(self, call_id: uuid.UUID, forwarded: bool) -> str | None:
        """The node to forward a request to, or None to handle it here."""
        if forwarded or call_id in self.calls or self.cluster is None:
            return None
        found = await store.live_call(self._pool, call_id)
        if found is None or found[1] is None or found[1] == self.node_id:
            return None  # handled here: the request ends in call_not_found
        if await self._end_if_host_lost(call_id, found):
            raise CallNotFound("the node holding this call is gone; the call has ended")
        return found[1]

    async def _end_if_host_lost(
        self, call_id: uuid.UUID, found: tuple[uuid.UUID, str | None] | None = None
    ) -> bool:
        """End a live call held by a node that stopped answering; True if it did."""
        if found is None:
            found = await store.live_call(self._pool, call_id)
        if found is None:
            return False
        room_id, host = found
        if host is None or call_id in self.calls:
            return False
        if host != self.node_id and (self.cluster is None or self.cluster.is_alive(host)):
            return False
        async with self._pool.acquire() as conn, conn.transaction():
            ended = await store.end(conn, call_id, "host_lost")
        if ended and self.signals is not None:
            await self.signals.room_broadcast(
                room_id,
                "call.state",
                {
                    "callId": str(call_id),
                    "roomId": str(room_id),
                    "state": "ended",
                    "mode": "p2p",
                    "participants": [],
                    "reason": "host_lost",
                },
            )
        return ended

    async def _forward(
        self,
        host: str,
        op: str,
        actor: Actor | None,
        connection_id: str,
        call_id: uuid.UUID,
        **extra: Any,
    ) -> Any:
        assert self.cluster is not None
        args: dict[str, Any] = {"connectionId": connection_id, "callId": str(call_id), **extra}
        if actor is not None:
            args["userId"], args["sessionId"] = str(actor.user_id), str(actor.session_id)
        return await self.cluster.forward(host, op, args)

    async def handle_forwarded(self, op: str, args: dict[str, Any]) -> Any:
        """Run a request another node forwarded here because this node holds the call."""
        connection_id = str(args["connectionId"])
        call_id = uuid.UUID(str(args["callId"]))
        actor = (
            Actor(user_id=uuid.UUID(args["userId"]), session_id=uuid.UUID(args["sessionId"]))
            if "userId" in args
            else None
        )
        if op in ("join", "leave", "end") and actor is not None:
            method = {"join": self.join, "leave": self.leave, "end": self.end}[op]
            return await method(actor, connection_id, call_id, forwarded=True)
        if op == "relay":
            to = uuid.UUID(args["to"]) if args.get("to") else None
            await self.relay(
                connection_id, call_id, str(args["kind"]), to, dict(args["payload"]), forwarded=True
            )
            return None
        if op == "telemetry":
            await self.telemetry(
                connection_id,
                call_id,
                str(args["outcome"]),
                args.get("setup_ms"),
                bool(args.get("ice_failed")),
                args.get("candidate_type"),
                forwarded=True,
            )
            return None
        raise CallNotFound(f"unknown forwarded operation {op!r}")

    # --- internals ------------------------------------------------------------------------

    def ice_servers_for(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """STUN/TURN servers with fresh TURN credentials for this user."""
        return self._ice_servers(user_id)

    def _lock_of(self, call_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(call_id, asyncio.Lock())

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self._auto.discard(call.id)
        self._locks.pop(call.id, None)

    def _maybe_upgrade(self, call: Call) -> bool:
        if (
            call.id in self._auto
            and call.mode is CallMode.P2P
            and len(call.participants) > self.sfu_threshold
        ):
            call.mode = CallMode.SFU
            return True
        return False

    async def _call_for_member(self, actor: Actor, call_id: uuid.UUID) -> Call:
        call = self._live_call(call_id)
        require_member(await resolve_access(self._pool, actor, call.room_id))
        return call

    def _live_call(self, call_id: uuid.UUID) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise CallNotFound()
        if not call.live:
            raise InvalidTransition("the call has ended")
        return call

    async def _remove(self, call: Call, participant: Participant, reason: str) -> None:
        async with self._lock_of(call.id):
            ended = call.leave(participant.id, reason)
            async with self._pool.acquire() as conn, conn.transaction():
                await store.remove_participant(conn, participant.id, reason)
                if ended:
                    await store.end(conn, call.id, call.end_reason or "ended")
            if ended:
                self._forget(call)
        await self._sfu_left(call, participant)
        await self._announce(call)

    async def _persist_end(self, call: Call) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await store.end(conn, call.id, call.end_reason or "ended")
        self._forget(call)

    async def _sfu_left(self, call: Call, participant: Participant) -> None:
        if call.mode is CallMode.SFU and self.sfu is not None:
            with contextlib.suppress(Exception):
                await self.sfu.participant_left(call.id, participant.id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                await self._expire_once()
            except Exception:
                _log.exception("call sweep failed")

    async def _expire_once(self) -> None:
        now = time.monotonic()
        for call in list(self.calls.values()):
            async with self._lock_of(call.id):
                if not call.live:
                    continue  # ended (persisted and announced) while this sweep waited
                before = dict(call.participants)
                removed = call.expire(now, ring_timeout=self.ring_timeout, grace=self.grace)
                if not removed and call.live:
                    continue
                async with self._pool.acquire() as conn, conn.transaction():
                    for participant_id in removed:
                        await store.remove_participant(conn, participant_id, "connection_lost")
                    if not call.live:
                        await store.end(conn, call.id, call.end_reason or "ended")
                if not call.live:
                    self._forget(call)
            for participant_id in removed:
                await self._sfu_left(call, before[participant_id])
            await self._announce(call)

    def _joined_result(self, call: Call, participant: Participant) -> dict[str, Any]:
        return {
            "call": self.describe(call),
            "participantId": str(participant.id),
            "iceServers": self.ice_servers_for(participant.user_id),
        }

    @staticmethod
    def describe(call: Call, reason: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "callId": str(call.id),
            "roomId": str(call.room_id),
            "state": call.state.value,
            "mode": call.mode.value,
            "participants": [
                {"participantId": str(p.id), "userId": str(p.user_id), "connected": p.connected}
                for p in call.participants.values()
            ],
        }
        if reason or call.end_reason:
            data["reason"] = reason or call.end_reason
        return data

    async def _announce(self, call: Call, reason: str | None = None) -> None:
        if self.signals is not None:
            await self.signals.room_broadcast(
                call.room_id, "call.state", self.describe(call, reason)
            )

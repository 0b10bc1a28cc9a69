"""Call sessions: lifecycle, persistence, signaling relay and setup telemetry.

Live calls are held by the node that hosts them (one node needs no Redis); every state
change is written to PostgreSQL and announced to the room as ``call.state``. Offers,
answers and ICE candidates are relayed only between participants of the same call, by
participant id; the sender is identified by its connection, never by what it claims.

A call outlives its host. PostgreSQL keeps what another node needs to carry it on (state,
mode, participants and where their connections are); a host that drains gives its calls
up, and any node takes over a call whose host gave it up or stopped answering. The
participants whose connections were on the old host get the grace period to rejoin from a
new connection, keep their participant ids, and renegotiate (ICE restart); everyone else
notices nothing but a ``call.state`` with reason ``host_changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import structlog

from boltorezka.calls.state import (
    Call,
    CallMode,
    CallState,
    InvalidTransition,
    NotInCall,
    Participant,
)
from boltorezka.context import Actor
from boltorezka.errors import AppError, Conflict, NotFound
from boltorezka.observability.metrics import Metrics
from boltorezka.rooms.service import ROLE_RANK, require_member, require_not_muted, resolve_access
from boltorezka.store import calls as store
from boltorezka.store import rooms as room_store

_log = structlog.get_logger("boltorezka.calls")
# Orphaned calls are looked for every this many sweeps (a quarter second each): one
# indexed query per node per second, and a takeover well within the grace period.
_TAKEOVER_EVERY_TICKS = 4


@dataclass
class _SetupReports:
    """What the participants of one call reported about setting up media.

    Counted per call: ICE connecting is not media flowing, so a call is a media success
    once any participant decoded a frame from another (outcome ``media``), and one that
    ends without that is ``no_media`` (ICE connected somewhere) or ``failed``."""

    seen: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    ice_connected: bool = False
    media: bool = False


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

    def alive_nodes(self) -> list[str]:
        """Every node heard from lately, this one included."""
        ...

    def knows_liveness(self) -> bool:
        """Whether this node has listened long enough to tell a silent node from one it
        has not heard from yet (until then, no call is taken from another node)."""
        ...

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
        node_id: str,
        signals: CallSignals,
        cluster: Callable[[CallService], CallCluster],
        sfu: Callable[[CallService], SfuLink],
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self.ring_timeout = ring_timeout
        self.grace = grace
        self.sfu_threshold = sfu_threshold
        self._ice_servers = ice_servers or (lambda _user: [])
        self.node_id = node_id
        self.signals = signals
        # Both answer back into this service (forwarded requests, SFU events), hence the
        # factories: the service hands itself to them once it exists.
        self.cluster = cluster(self)
        self.sfu = sfu(self)
        self.calls: dict[uuid.UUID, Call] = {}
        self._auto: set[uuid.UUID] = set()
        # One lock per call: a call's memory and database change together, while calls
        # in different rooms never wait for each other.
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # Participants of sfu calls whose media connection the SFU dropped; they show as
        # not connected until the SFU connects them again.
        self._media_lost: dict[uuid.UUID, set[uuid.UUID]] = {}
        self._setup_reports: dict[uuid.UUID, _SetupReports] = {}

    async def start_background(self) -> None:
        """Take over the calls that need a host (those a previous run of this node held
        among them: node ids survive restarts), then keep sweeping timeouts and orphans."""
        await self._take_over_orphans()
        self._sweeper = asyncio.create_task(self._sweep(), name="call-sweeper")

    async def close(self) -> None:
        """Stop sweeping and give up the calls held here, for another node to carry on.

        Runs after the node's sockets closed, so every participant connected here is
        already waiting out its grace period."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if not self.calls:
            return
        try:
            async with contextlib.AsyncExitStack() as held:
                # A change in progress (a forwarded join, say) stores its update before the
                # call is given up, or the node taking over would read the call without it.
                for call_id in list(self.calls):
                    await held.enter_async_context(self._lock_of(call_id))
                async with self._pool.acquire() as conn, conn.transaction():
                    released = await store.release_hosted(conn, self.node_id)
        except Exception:
            # Another node takes the calls over anyway once this one stops answering.
            _log.exception("could not hand calls over on close")
            return
        self.calls.clear()
        self._auto.clear()
        self._locks.clear()
        _log.info("calls handed over for another node to take", count=released)

    # --- lifecycle requests ---------------------------------------------------------------

    async def start(
        self, actor: Actor, connection_id: str, room_id: uuid.UUID, mode: str
    ) -> dict[str, Any]:
        access = await resolve_access(self._pool, actor, room_id)
        require_member(access)
        await require_not_muted(self._pool, room_id, actor.user_id)
        chosen = CallMode.SFU if mode == "sfu" else CallMode.P2P
        # The call is invisible to others until it is stored and registered, so no lock.
        call, participant = Call.start(
            room_id, chosen, actor.user_id, connection_id, time.monotonic()
        )
        # Held in memory before the row exists, so a request that finds the row with this
        # node as host never mistakes the call for one a previous run left behind.
        self.calls[call.id] = call
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                created = await store.create(
                    conn,
                    call.id,
                    room_id,
                    chosen.value,
                    actor.user_id,
                    self.node_id,
                    auto_mode=mode == "auto",
                )
                if created:
                    await store.add_participant(
                        conn,
                        participant.id,
                        call.id,
                        actor.user_id,
                        actor.session_id,
                        connection_id,
                        self.node_id,
                    )
        except BaseException:
            self.calls.pop(call.id, None)
            raise
        if not created:
            self.calls.pop(call.id, None)
            live_id = await store.live_call_id(self._pool, room_id)
            if live_id is not None:
                # A live call whose host is gone gets a new one, so joining it works.
                await self._remote_host(live_id, forwarded=False)
            raise CallAlreadyLive(call_id=str(live_id))
        if mode == "auto":
            self._auto.add(call.id)
        self._metrics.call_events.labels("start").inc()
        await self._announce(call)
        return self._joined_result(call, participant)

    async def join(
        self,
        actor: Actor,
        connection_id: str,
        call_id: uuid.UUID,
        *,
        forwarded: bool = False,
        connection_node: str | None = None,
    ) -> dict[str, Any]:
        if (host := await self._remote_host(call_id, forwarded)) is not None:
            return await self._forward(host, "join", actor, connection_id, call_id)  # type: ignore[no-any-return]
        call = await self._call_for_member(actor, call_id)
        node = connection_node or self.node_id
        async with self._lock_of(call.id):
            before = call.state
            participant, is_new = call.join(actor.user_id, connection_id, time.monotonic())
            upgraded = self._maybe_upgrade(call)
            async with self._pool.acquire() as conn, conn.transaction():
                if is_new:
                    await store.add_participant(
                        conn,
                        participant.id,
                        call.id,
                        actor.user_id,
                        actor.session_id,
                        connection_id,
                        node,
                    )
                else:
                    await store.set_connections(conn, [(participant.id, connection_id, node)])
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
        await self._end_for_everyone(call, "ended_by_user")
        return {"callId": str(call.id), "state": call.state.value}

    async def _end_for_everyone(self, call: Call, reason: str) -> None:
        """End a live call held here, stored and announced; InvalidTransition if it ended."""
        async with self._lock_of(call.id):
            leaving = list(call.participants.values())
            call.end(reason)
            await self._persist_end(call)
        for participant in leaving:
            await self._sfu_left(call, participant)
        self._metrics.call_events.labels("end").inc()
        await self._announce(call)

    async def membership_ended(self, room_id: uuid.UUID, user_id: uuid.UUID | None) -> None:
        """``user_id`` is no longer a member of the room (None: the room was deleted), so
        their place in the room's live call ends, wherever the call is held."""
        call_id = await store.live_call_id(self._pool, room_id)
        if call_id is None:
            return
        if (host := await self._remote_host(call_id, forwarded=False)) is not None:
            args = {"callId": str(call_id), "userId": str(user_id) if user_id else None}
            await self.cluster.forward(host, "membership_ended", args)
            return
        await self._end_membership_here(call_id, user_id)

    async def _end_membership_here(self, call_id: uuid.UUID, user_id: uuid.UUID | None) -> None:
        call = self.calls.get(call_id)
        if call is None or not call.live:
            return
        if user_id is None:
            # Ended meanwhile by someone else: nothing is left to end.
            with contextlib.suppress(InvalidTransition):
                await self._end_for_everyone(call, "room_deleted")
            return
        for participant in [p for p in call.participants.values() if p.user_id == user_id]:
            if not call.live:
                break
            await self._remove(call, participant, "removed_from_room")

    async def connection_closed(self, connection_id: str) -> None:
        """A socket died: every node holding one of its calls starts the grace period."""
        await self.cluster.connection_closed(connection_id)

    async def local_connection_closed(self, connection_id: str) -> None:
        """Start the grace period for this connection's participants in calls held here."""
        # Only memory changes here, with no await in between: nothing can interleave.
        now = time.monotonic()
        changed: list[tuple[Call, Participant]] = []
        for call in list(self.calls.values()):
            participant = call.disconnected(connection_id, now)
            if participant is not None:
                changed.append((call, participant))
        if not changed:
            return
        try:
            await store.set_connections(self._pool, [(p.id, None, None) for _, p in changed])
        except Exception:
            # Memory is what the host acts on; a node taking the call over later judges a
            # stale connection by its node's liveness instead.
            _log.exception("could not record a participant's lost connection")
        for call, _ in changed:
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
        # Membership is checked on every request, signaling included: whoever was removed
        # from the room, left it or saw it deleted stays a participant until its connection
        # goes, but may not reach the others (or the SFU) any more.
        found = await room_store.get_with_role(self._pool, call.room_id, sender.user_id)
        if found is None or found[1] is None:
            raise NotInCall("you are no longer a member of this call's room")
        outgoing = {**payload, "callId": str(call.id), "from": str(sender.id)}
        if to is None:
            if call.mode is not CallMode.SFU:
                raise InvalidTransition("this call is peer-to-peer: address a participant")
            try:
                await self.sfu.signal(call.id, sender.id, kind, outgoing)
            except Exception as exc:  # the link says why; the client only needs to retry
                raise SfuUnavailable() from exc
            return
        if to == sender.id:
            raise InvalidTransition("cannot signal yourself")
        target = call.target(to)
        assert target.connection_id is not None
        await self.signals.to_connection(target.connection_id, kind, outgoing)

    async def from_sfu(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        """Deliver a message the SFU addressed to one participant."""
        call = self.calls.get(call_id)
        participant = call.participants.get(participant_id) if call else None
        if participant is None or participant.connection_id is None:
            return
        await self.signals.to_connection(
            participant.connection_id, kind, {**payload, "callId": str(call_id)}
        )

    async def sfu_media(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, connected: bool, reason: str | None
    ) -> None:
        """The SFU dropped a participant's media connection, or connected one of it.

        A drop is announced as ``call.state`` reason ``media_lost`` with the participant
        ``connected: false``: its socket is fine, but nobody receives it and it receives
        nobody until it offers again from a new RTCPeerConnection. It stays a participant
        (no grace period runs) and shows as connected again (``media_restored``) once the
        SFU connects its new connection."""
        call = self.calls.get(call_id)
        if call is None or not call.live or participant_id not in call.participants:
            return  # another node holds the call, or the participant already left
        lost = self._media_lost.setdefault(call.id, set())
        if connected == (participant_id not in lost):
            return  # nothing changed (every connection's first "connected" comes here)
        if connected:
            lost.discard(participant_id)
        else:
            lost.add(participant_id)
            _log.info(
                "the sfu dropped a participant's media",
                call_id=str(call.id),
                participant_id=str(participant_id),
                reason=reason,
            )
        await self._announce(call, "media_restored" if connected else "media_lost")

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
        participant = call.participant_of(connection_id) if call is not None else None
        if call is None or participant is None:
            raise NotInCall()
        reports = self._setup_reports.setdefault(call.id, _SetupReports())
        if (participant.id, outcome) in reports.seen:
            return  # a client that reports again (after an ICE restart, say) counts once
        reports.seen.add((participant.id, outcome))
        if outcome == "media":
            if setup_ms is not None:
                self._metrics.call_first_frame_seconds.observe(setup_ms / 1000)
            if not reports.media:
                reports.media = True
                self._metrics.record_call_media("media")
            return
        reports.ice_connected = reports.ice_connected or outcome == "connected"
        self._metrics.record_call_setup(outcome, ice_failed)
        if setup_ms is not None and outcome == "connected":
            self._metrics.call_setup_seconds.observe(setup_ms / 1000)
        if candidate_type is not None:
            self._metrics.ice_candidate_types.labels(candidate_type).inc()

    # --- routing between nodes ------------------------------------------------------------

    async def _remote_host(self, call_id: uuid.UUID, forwarded: bool) -> str | None:
        """The node to forward a request to, or None to handle it here (taking the call
        over first if its host gave it up or is gone)."""
        if forwarded or call_id in self.calls:
            return None
        for _ in range(2):
            found = await store.live_call(self._pool, call_id)
            if found is None:
                return None  # handled here: the request ends in call_not_found
            host = found[1]
            if host is not None and host != self.node_id and self.cluster.is_alive(host):
                return host
            if host is not None and host != self.node_id and not self.cluster.knows_liveness():
                return host  # maybe alive, not heard yet: the forward times out if not
            if await self._adopt(call_id, host) is not None:
                return None
            # Another node took it over first: look again, and forward to that node.
        return None

    async def _take_over_orphans(self) -> None:
        """Take over every live call whose host gave it up or stopped answering, and drop
        those another node took from this one (it judged this node gone: a partition)."""
        if self.calls:
            for call_id in await store.held_elsewhere(self._pool, list(self.calls), self.node_id):
                call = self.calls.get(call_id)
                if call is not None and call.live:
                    _log.warning("another node holds this call now", call_id=str(call_id))
                    self._forget(call)
        alive = self.cluster.alive_nodes() if self.cluster.knows_liveness() else None
        if alive is None:
            # Too early to call another node dead: only the calls given up, or held by
            # this node's previous run.
            candidates = await store.orphaned(self._pool, [])
            candidates = [(c, h) for c, h in candidates if h is None or h == self.node_id]
        else:
            candidates = await store.orphaned(self._pool, [n for n in alive if n != self.node_id])
        for call_id, host in candidates:
            if call_id not in self.calls:
                await self._adopt(call_id, host)

    async def _adopt(self, call_id: uuid.UUID, expected_host: str | None) -> Call | None:
        """Become the host of a call ``expected_host`` held; None if another node won."""
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await store.adopt(conn, call_id, expected_host, self.node_id)
            if stored is None:
                return None
            now = time.monotonic()
            call = Call(
                id=call_id,
                room_id=stored.room_id,
                mode=CallMode(stored.mode),
                started_by=stored.started_by or uuid.UUID(int=0),
                created_at=now - stored.age_seconds,
                state=CallState(stored.state),
                joined_users=set(stored.joined_users),
            )
            lost: list[tuple[uuid.UUID, str | None, str | None]] = []
            for row in stored.participants:
                # A connection survives the change of host if its node is alive and is
                # not the old host (whose connections closed or died with it).
                keep = (
                    row.connection_id is not None
                    and row.connection_node is not None
                    and row.connection_node != expected_host
                    and self.cluster.is_alive(row.connection_node)
                )
                call.participants[row.id] = Participant(
                    id=row.id,
                    user_id=row.user_id,
                    connection_id=row.connection_id if keep else None,
                    joined_at=now - row.age_seconds,
                    disconnected_at=None if keep else now,
                )
                if not keep and row.connection_id is not None:
                    lost.append((row.id, None, None))
            await store.set_connections(conn, lost)
            self.calls[call_id] = call
            if stored.auto_mode:
                self._auto.add(call_id)
        self._metrics.call_events.labels("takeover").inc()
        _log.info("took a call over", call_id=str(call_id), previous_host=expected_host)
        await self._announce(call, "host_changed")
        return call

    async def _forward(
        self,
        host: str,
        op: str,
        actor: Actor | None,
        connection_id: str,
        call_id: uuid.UUID,
        **extra: Any,
    ) -> Any:
        args: dict[str, Any] = {
            "connectionId": connection_id,
            "callId": str(call_id),
            "node": self.node_id,
            **extra,
        }
        if actor is not None:
            args["userId"], args["sessionId"] = str(actor.user_id), str(actor.session_id)
        return await self.cluster.forward(host, op, args)

    async def handle_forwarded(self, op: str, args: dict[str, Any]) -> Any:
        """Run a request another node forwarded here because this node holds the call."""
        if op == "membership_ended":
            user = args.get("userId")
            await self._end_membership_here(
                uuid.UUID(str(args["callId"])), uuid.UUID(str(user)) if user else None
            )
            return None
        connection_id = str(args["connectionId"])
        call_id = uuid.UUID(str(args["callId"]))
        if call_id not in self.calls:
            # Given up (this node is stopping) after the sender read this node as the host:
            # a retry reads the host again and reaches the node that took the call over.
            raise CallHostUnavailable("this node no longer holds the call; retry")
        actor = (
            Actor(user_id=uuid.UUID(args["userId"]), session_id=uuid.UUID(args["sessionId"]))
            if "userId" in args
            else None
        )
        if op == "join" and actor is not None:
            node = args.get("node")
            return await self.join(
                actor,
                connection_id,
                call_id,
                forwarded=True,
                connection_node=str(node) if node else None,
            )
        if op in ("leave", "end") and actor is not None:
            method = {"leave": self.leave, "end": self.end}[op]
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
        self._media_lost.pop(call.id, None)
        reports = self._setup_reports.pop(call.id, None)
        # Only a call that ended here is judged; one another node holds now goes on there.
        if reports is not None and not reports.media and not call.live:
            self._metrics.record_call_media("no_media" if reports.ice_connected else "failed")

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
        if call.mode is CallMode.SFU:
            with contextlib.suppress(Exception):
                await self.sfu.participant_left(call.id, participant.id)

    async def _sweep(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.25)
            ticks += 1
            try:
                await self._expire_once()
                if ticks % _TAKEOVER_EVERY_TICKS == 0:
                    await self._take_over_orphans()
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
            "call": self.describe(call, media_lost=self._media_lost.get(call.id, ())),
            "participantId": str(participant.id),
            "iceServers": self.ice_servers_for(participant.user_id),
        }

    @staticmethod
    def describe(
        call: Call, reason: str | None = None, *, media_lost: Collection[uuid.UUID] = ()
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "callId": str(call.id),
            "roomId": str(call.room_id),
            "state": call.state.value,
            "mode": call.mode.value,
            "participants": [
                {
                    "participantId": str(p.id),
                    "userId": str(p.user_id),
                    "connected": p.connected and p.id not in media_lost,
                }
                for p in call.participants.values()
            ],
        }
        if reason or call.end_reason:
            data["reason"] = reason or call.end_reason
        return data

    async def _announce(self, call: Call, reason: str | None = None) -> None:
        await self.signals.room_broadcast(
            call.room_id,
            "call.state",
            self.describe(call, reason, media_lost=self._media_lost.get(call.id, ())),
        )

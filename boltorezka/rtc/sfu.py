"""The SFU engine: one aiortc peer connection per participant, media fanned out per call.

Each participant of a call in ``sfu`` mode negotiates a single ``RTCPeerConnection`` with
the SFU (max-bundle: one ICE/DTLS transport). What it sends is *published*: every track
that arrives gets a forwarder of its own, and every other participant of the call
*subscribes* to it with a forwarded track on a send-only transceiver of their own
connection.

**What "forwarding" means here.** Media is forwarded without transcoding
(:mod:`boltorezka.rtc.forwarding`): aiortc's receiver reassembles each encoded frame of a
published track (jitter buffer, NACKs), and every subscriber's sender packetizes that same
frame again with its own SSRC and sequence numbers. The SFU decodes and encodes nothing,
whatever the number of subscribers; the one encoder of a source is its publisher's, and a
subscriber's keyframe request (PLI, FIR) goes to it as a PLI. A subscription negotiates
its source's codec only, so what arrives can be sent on as it is. A new video subscriber
starts at a keyframe, which it asks for as its sender starts. There is no simulcast: every
subscriber of a source gets the bitrate its publisher sends.

Signaling, per participant and always through :class:`SfuEngine`:

* A client's ``rtc.offer`` is applied, answered with ``rtc.answer``, and the tracks of
  every other participant are attached to its connection. An answer cannot add m-lines,
  so those tracks reach the client in an SFU offer that follows right after the answer.
* When a client's track arrives it is attached to every other participant's connection,
  and each of them gets an SFU-initiated ``rtc.offer``, which the client answers with
  ``rtc.answer`` (``to`` absent).
* The SFU offers only from the ``stable`` signaling state; a change that comes while an
  SFU offer is outstanding waits for the client's answer and goes out in the next offer.
  An offer from a client that collides with an outstanding SFU offer is ignored: the SFU
  is the *impolite* peer of WebRTC "perfect negotiation", so the client must roll back
  and answer first (browsers do so when their side is the polite one).
* An SFU offer left unanswered for ``ANSWER_TIMEOUT`` seconds (the client rejected it, or
  stopped answering) costs that participant its connection, reported as lost (below):
  aiortc cannot roll an offer back, and every later change would wait behind it.
* Re-offers keep the session's RTP identifiers: each negotiated m-line keeps its codecs,
  payload types and header-extension ids, and new m-lines reuse the session's numbers
  (:class:`boltorezka.rtc.peer.SfuPeerConnection`; browsers reject anything else).
* aiortc does not trickle ICE: its candidates are in its SDP. Candidates a client
  trickles (``rtc.ice``) are added to its connection; a null candidate ends them.
* An offer with new ICE credentials (an ICE restart, or a new ``RTCPeerConnection`` after
  a reconnect) rebuilds that participant's connection from scratch: aiortc cannot restart
  ICE on an existing one. The rebuilt connection has a new DTLS certificate too, so a
  client recovers best with a new ``RTCPeerConnection`` rather than ``restartIce()``.
* When a participant leaves (or its connection fails) its connection is closed, its
  tracks stop being forwarded (the others' transceivers for them go ``inactive``) and the
  others are renegotiated.
* The SFU tells the API about media it lost and regained (``sfu.media``, never sent to a
  client): ``connected: false`` when it dropped a participant's connection on its own
  (ICE or DTLS failed or closed, or no answer came), ``connected: true`` whenever a
  connection of a participant reaches ``connected``. The call service turns those into
  ``call.state`` (reasons ``media_lost``, ``media_restored``); the participant recovers by
  offering again from a new ``RTCPeerConnection``.
* A packet aiortc cannot handle is dropped and counted
  (:func:`boltorezka.rtc.peer.harden_packet_handling`), not allowed to end the connection.

Forwarded tracks carry the source participant's id as their SDP stream id
(``a=msid:<participant id> <track id>``), so a client can tell whose media a track is
(in browsers: ``RTCTrackEvent.streams[0].id``).

Signaling for each call is handled in order by a worker task of its own; an error while
handling one message is logged and does not affect other messages or other calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import structlog
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from boltorezka.rtc.forwarding import ForwardedTrack, ForwardingCounts, SourceForwarder
from boltorezka.rtc.peer import SfuPeerConnection, harden_packet_handling
from boltorezka.rtc.sfu_link import MEDIA_EVENT

_log = structlog.get_logger("boltorezka.sfu")

Send = Callable[[uuid.UUID, uuid.UUID, str, dict[str, Any]], Awaitable[None]]
"""How the engine reaches a participant: ``(call_id, participant_id, kind, payload)``."""

CLOSE_TIMEOUT = 5.0
# Browsers answer in well under a second; this leaves room for a client on a busy machine.
ANSWER_TIMEOUT = 20.0
# Reasons for which the SFU dropped a participant on its own, and says so.
_LOST_REASONS = ("lost", "no_answer")


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer ICE host candidates on these local addresses only (for the whole process).

    aioice, aiortc's ICE agent, offers every non-loopback interface address and has no
    setting to choose: this is that setting. A multi-homed SFU host offers just the
    address clients can reach; a loopback-only setup (tests, benches) gives
    ``["127.0.0.1"]``, which aioice would otherwise never offer.
    """
    chosen = [address.strip() for address in addresses if address.strip()]

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def peer_configuration() -> RTCConfiguration:
    # An empty list, not None: for None aiortc falls back to a public STUN server.
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


@dataclass(eq=False)
class _Source:
    """A track one participant publishes, its encoded frames fanned out by its forwarder."""

    owner: uuid.UUID
    track: MediaStreamTrack
    forwarder: SourceForwarder


@dataclass(eq=False)
class _Subscription:
    source: _Source
    transceiver: RTCRtpTransceiver
    track: ForwardedTrack


@dataclass(frozen=True)
class ForwardingStats:
    """What the engine forwards now, summed over its live sources."""

    sources: int
    subscriptions: int
    frames_in: int
    frames_out: int
    keyframe_requests: int
    dropped: int


@dataclass(eq=False)
class _Peer:
    id: uuid.UUID
    pc: RTCPeerConnection
    ice_ufrag: str | None = None
    sources: list[_Source] = field(default_factory=list)
    subscriptions: dict[_Source, _Subscription] = field(default_factory=dict)
    arrived: list[_Source] = field(default_factory=list)
    # Local changes (subscriptions added or made inactive) wait for the next SFU offer.
    dirty: bool = False
    offers_sent: int = 0
    answer_timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Op:
    kind: str  # rtc.offer, rtc.answer, rtc.ice, left, lost, connected, answer_timeout
    participant_id: uuid.UUID
    payload: dict[str, Any] = field(default_factory=dict)
    pc: RTCPeerConnection | None = None


@dataclass(eq=False)
class _Call:
    id: uuid.UUID
    peers: dict[uuid.UUID, _Peer] = field(default_factory=dict)
    ops: asyncio.Queue[_Op] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None


class SfuEngine:
    def __init__(self, send: Send) -> None:
        harden_packet_handling()
        self._send = send
        self._calls: dict[uuid.UUID, _Call] = {}
        self._closed = False

    # --- the interface the SFU process drives ---------------------------------------------

    async def handle(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        """Queue a client's ``rtc.offer``/``rtc.answer``/``rtc.ice`` for its call's worker."""
        if kind not in ("rtc.offer", "rtc.answer", "rtc.ice"):
            _log.warning("sfu ignored an unknown signal", kind=kind, call_id=str(call_id))
            return
        self._enqueue(call_id, _Op(kind, participant_id, payload))

    async def participant_left(self, call_id: uuid.UUID, participant_id: uuid.UUID) -> None:
        if call_id in self._calls:
            self._enqueue(call_id, _Op("left", participant_id))

    def stats(self) -> tuple[int, int]:
        """(calls with at least one connection, peer connections)."""
        live = [call for call in self._calls.values() if call.peers]
        return len(live), sum(len(call.peers) for call in live)

    def forwarding_stats(self) -> ForwardingStats:
        peers = [peer for call in self._calls.values() for peer in call.peers.values()]
        counts = ForwardingCounts()
        sources = [source for peer in peers for source in peer.sources]
        for source in sources:
            for name, value in vars(source.forwarder.counts).items():
                setattr(counts, name, getattr(counts, name) + value)
        return ForwardingStats(
            sources=len(sources),
            subscriptions=sum(len(peer.subscriptions) for peer in peers),
            frames_in=counts.frames_in,
            frames_out=counts.frames_out,
            keyframe_requests=counts.keyframe_requests,
            dropped=counts.dropped,
        )

    async def close(self) -> None:
        self._closed = True
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            if call.worker is not None:
                call.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call.worker
        for call in calls:
            for peer in list(call.peers.values()):
                await self._close_peer(peer)
            call.peers.clear()

    # --- per-call worker ------------------------------------------------------------------

    def _enqueue(self, call_id: uuid.UUID, op: _Op) -> None:
        if self._closed:
            return
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(call_id)
            call.worker = asyncio.create_task(self._work(call), name=f"sfu-call-{call_id}")
        call.ops.put_nowait(op)

    async def _work(self, call: _Call) -> None:
        while True:
            op = await call.ops.get()
            try:
                await self._apply(call, op)
            except Exception:
                _log.exception(
                    "sfu failed to handle a signal",
                    call_id=str(call.id),
                    participant_id=str(op.participant_id),
                    kind=op.kind,
                )
            # No await between this check and the removal: a new op either found this
            # call in the table (and is queued) or will create a fresh one.
            if not call.peers and call.ops.empty():
                if self._calls.get(call.id) is call:
                    del self._calls[call.id]
                return

    async def _apply(self, call: _Call, op: _Op) -> None:
        if op.kind == "rtc.offer":
            await self._on_offer(call, op.participant_id, op.payload)
        elif op.kind == "rtc.answer":
            await self._on_answer(call, op.participant_id, op.payload)
        elif op.kind == "rtc.ice":
            await self._on_ice(call, op.participant_id, op.payload)
        else:
            peer = call.peers.get(op.participant_id)
            if peer is None or (op.pc is not None and op.pc is not peer.pc):
                return  # about a connection the SFU already let go
            if op.kind == "connected":
                await self._send(call.id, peer.id, MEDIA_EVENT, {"connected": True})
                return
            if op.kind == "answer_timeout":
                if (
                    peer.pc.signalingState != "have-local-offer"
                    or op.payload.get("offer") != peer.offers_sent
                ):
                    return  # answered meanwhile
                op.kind = "no_answer"
            # "left", "no_answer", or "lost" when the connection named by op.pc failed
            await self._remove_peer(call, peer, op.kind)
            await self._renegotiate(call)

    # --- signaling ------------------------------------------------------------------------

    async def _on_offer(
        self, call: _Call, participant_id: uuid.UUID, payload: dict[str, Any]
    ) -> None:
        sdp = payload.get("sdp")
        if not isinstance(sdp, str):
            _log.warning("sfu got an offer without sdp", call_id=str(call.id))
            return
        ufrag = _ice_ufrag(sdp)
        peer = call.peers.get(participant_id)
        if peer is not None and peer.ice_ufrag is not None and ufrag != peer.ice_ufrag:
            _log.info(
                "new ICE credentials: rebuilding the participant's connection",
                call_id=str(call.id),
                participant_id=str(participant_id),
            )
            await self._remove_peer(call, peer, "rebuilt")
            peer = None
        fresh = peer is None
        if peer is None:
            peer = self._new_peer(call, participant_id)
        pc = peer.pc
        if pc.signalingState == "have-local-offer":
            _log.info(
                "offer collision: ignored the client's offer (the SFU is the impolite peer)",
                call_id=str(call.id),
                participant_id=str(participant_id),
            )
            return
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            if fresh:  # a connection that never got going is not worth keeping
                await self._remove_peer(call, peer, "bad offer")
            raise
        peer.ice_ufrag = ufrag
        await self._send(call.id, participant_id, "rtc.answer", {"sdp": pc.localDescription.sdp})
        self._publish_arrived(call, peer)
        for other in call.peers.values():
            if other is not peer:
                for source in other.sources:
                    if source not in peer.subscriptions:
                        self._subscribe(peer, source)
        await self._renegotiate(call)

    async def _on_answer(
        self, call: _Call, participant_id: uuid.UUID, payload: dict[str, Any]
    ) -> None:
        peer = call.peers.get(participant_id)
        sdp = payload.get("sdp")
        if peer is None or not isinstance(sdp, str):
            _log.info("sfu dropped an answer", call_id=str(call.id), known=peer is not None)
            return
        if peer.pc.signalingState != "have-local-offer":
            _log.info(
                "sfu dropped an answer it did not ask for",
                call_id=str(call.id),
                participant_id=str(participant_id),
                state=peer.pc.signalingState,
            )
            return
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        _cancel(peer.answer_timer)
        self._publish_arrived(call, peer)
        await self._renegotiate(call)

    async def _on_ice(
        self, call: _Call, participant_id: uuid.UUID, payload: dict[str, Any]
    ) -> None:
        peer = call.peers.get(participant_id)
        if peer is None:
            return  # no offer yet (or already gone): nothing to add the candidate to
        data = payload.get("candidate")
        if not isinstance(data, dict) or not str(data.get("candidate") or "").strip():
            await peer.pc.addIceCandidate(None)  # end of candidates
            return
        ufrag = data.get("usernameFragment")
        if ufrag and peer.ice_ufrag and ufrag != peer.ice_ufrag:
            return  # belongs to an earlier ICE session
        line = str(data["candidate"]).strip()
        line = line.removeprefix("a=").removeprefix("candidate:")
        candidate = candidate_from_sdp(line)
        candidate.sdpMid = data.get("sdpMid")
        candidate.sdpMLineIndex = data.get("sdpMLineIndex")
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            candidate.sdpMLineIndex = 0  # bundled: everything rides on the first transport
        await peer.pc.addIceCandidate(candidate)

    async def _renegotiate(self, call: _Call) -> None:
        """Send an SFU offer to every participant with pending changes that can take one."""
        for peer in list(call.peers.values()):
            if not peer.dirty or peer.pc.signalingState != "stable":
                continue
            peer.dirty = False
            try:
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
                peer.offers_sent += 1
                peer.answer_timer = asyncio.get_running_loop().call_later(
                    ANSWER_TIMEOUT,
                    self._enqueue,
                    call.id,
                    _Op("answer_timeout", peer.id, {"offer": peer.offers_sent}, pc=peer.pc),
                )
                await self._send(
                    call.id, peer.id, "rtc.offer", {"sdp": peer.pc.localDescription.sdp}
                )
            except Exception:
                _log.exception(
                    "sfu failed to renegotiate", call_id=str(call.id), participant_id=str(peer.id)
                )

    # --- media plumbing -------------------------------------------------------------------

    def _new_peer(self, call: _Call, participant_id: uuid.UUID) -> _Peer:
        pc = SfuPeerConnection(peer_configuration())
        peer = _Peer(participant_id, pc)

        def on_track(track: MediaStreamTrack) -> None:
            # Fired inside setRemoteDescription, before the receiver starts (which the tap
            # must precede); published once the description is applied.
            transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            peer.arrived.append(_Source(participant_id, track, SourceForwarder(transceiver)))

        def on_state() -> None:
            # "closed" also follows the client closing its side (DTLS close_notify): aiortc
            # closes a connection whose transports all closed. The worker ignores both for
            # connections the SFU already let go.
            if pc.connectionState in ("failed", "closed"):
                self._enqueue(call.id, _Op("lost", participant_id, pc=pc))
            elif pc.connectionState == "connected":
                self._enqueue(call.id, _Op("connected", participant_id, pc=pc))

        pc.on("track", on_track)
        pc.on("connectionstatechange", on_state)
        call.peers[participant_id] = peer
        return peer

    def _publish_arrived(self, call: _Call, peer: _Peer) -> None:
        arrived, peer.arrived = peer.arrived, []
        for source in arrived:
            peer.sources.append(source)
            for other in call.peers.values():
                if other is not peer:
                    self._subscribe(other, source)

    def _subscribe(self, peer: _Peer, source: _Source) -> None:
        track = source.forwarder.subscribe()
        transceiver = peer.pc.addTransceiver(track, direction="sendonly")
        # Only the source's codec: its frames are sent on as they arrive.
        transceiver.setCodecPreferences(source.forwarder.codec_preferences())
        track.bind(transceiver)
        # aiortc gives every sender the connection's one stream id; name the source instead.
        transceiver.sender._stream_id = str(source.owner)
        peer.subscriptions[source] = _Subscription(source, transceiver, track)
        peer.dirty = True

    async def _unsubscribe(self, peer: _Peer, subscription: _Subscription) -> None:
        transceiver = subscription.transceiver
        # Even one never offered yet goes out as an inactive m-line rather than being
        # stopped: aiortc binds an incoming m-line to the first transceiver of its kind
        # whose mid is unset, so one left without a mid could capture a later m-line.
        transceiver.direction = "inactive"
        await transceiver.sender.stop()  # a no-op for a sender that never started
        subscription.track.stop()
        peer.dirty = True

    async def _remove_peer(self, call: _Call, peer: _Peer, reason: str) -> None:
        if call.peers.get(peer.id) is peer:
            del call.peers[peer.id]
        for other in call.peers.values():
            for source in peer.sources:
                subscription = other.subscriptions.pop(source, None)
                if subscription is not None:
                    await self._unsubscribe(other, subscription)
        await self._close_peer(peer)
        _log.info(
            "participant removed from the sfu",
            call_id=str(call.id),
            participant_id=str(peer.id),
            reason=reason,
        )
        if reason in _LOST_REASONS:
            try:
                await self._send(
                    call.id, peer.id, MEDIA_EVENT, {"connected": False, "reason": reason}
                )
            except Exception:  # the others' renegotiation must go on regardless
                _log.exception("sfu could not report a lost participant", call_id=str(call.id))

    async def _close_peer(self, peer: _Peer) -> None:
        _cancel(peer.answer_timer)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await peer.pc.close()
        except Exception:
            _log.exception("closing a peer connection failed", participant_id=str(peer.id))
        for subscription in peer.subscriptions.values():
            subscription.track.stop()  # a stopped track no longer queues frames
        for source in [*peer.sources, *peer.arrived]:
            source.forwarder.close()  # ends every subscriber's track, and its sender
        peer.sources.clear()
        peer.arrived.clear()
        peer.subscriptions.clear()


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


def _ice_ufrag(sdp: str) -> str | None:
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.removeprefix("a=ice-ufrag:").strip()
    return None

"""The SFU engine in-process: aiortc participants, one SfuEngine, media on loopback.

Every participant publishes a small solid-colour video and a tone (tests/sfu_media.py).
One of them can number its RTP identifiers as Chrome does (the SFU's re-offers must keep
them), and one can leave the SFU's offers unanswered.
"""

import asyncio
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCRtpSender
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import is_rtx
from aiortc.codecs.base import Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from av.frame import Frame

from boltorezka.rtc import sfu as sfu_module
from boltorezka.rtc.peer import dropped_packets, harden_packet_handling
from boltorezka.rtc.sfu import SfuEngine
from boltorezka.rtc.sfu_link import MEDIA_EVENT
from tests.sfu_media import (
    MediaPeer,
    SignalOut,
    browser_numbering,
    loopback_only,
)


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Media between these peers stays on 127.0.0.1 (aioice would offer other interfaces)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)


@dataclass
class Rig:
    engine: SfuEngine
    call_id: uuid.UUID
    peers: dict[uuid.UUID, MediaPeer]
    # Everything the engine addressed to a participant: (participant, kind, payload).
    sent: list[tuple[uuid.UUID, str, dict[str, Any]]] = field(default_factory=list)

    def client_for(self, participant: uuid.UUID) -> SignalOut:
        async def send(kind: str, payload: dict[str, Any]) -> None:
            await self.engine.handle(self.call_id, participant, kind, payload)

        return send

    def media_events(self, participant: uuid.UUID) -> list[dict[str, Any]]:
        return [p for who, kind, p in self.sent if who == participant and kind == MEDIA_EVENT]


@pytest.fixture
async def rig(loopback_ice: None) -> AsyncIterator[Rig]:
    peers: dict[uuid.UUID, MediaPeer] = {}
    sent: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
    call_id = uuid.uuid4()

    async def to_client(
        call: uuid.UUID, participant: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        if call == call_id:
            sent.append((participant, kind, payload))
            if participant in peers:
                peers[participant].deliver(kind, payload)

    engine = SfuEngine(to_client)
    try:
        yield Rig(engine, call_id, peers, sent)
    finally:
        for peer in peers.values():
            await peer.close()
        await engine.close()


@pytest.fixture
async def engine_and_peers(
    rig: Rig,
) -> AsyncIterator[tuple[SfuEngine, uuid.UUID, dict[uuid.UUID, MediaPeer]]]:
    yield rig.engine, rig.call_id, rig.peers


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_three_participants_receive_each_other_and_survive_a_leave(
    engine_and_peers: tuple[SfuEngine, uuid.UUID, dict[uuid.UUID, MediaPeer]],
) -> None:
    engine, call_id, peers = engine_and_peers

    def client_for(participant: uuid.UUID) -> SignalOut:
        async def send(kind: str, payload: dict[str, Any]) -> None:
            await engine.handle(call_id, participant, kind, payload)

        return send

    ids = {name: uuid.uuid4() for name in ("a", "b", "c")}
    colours = {"a": "red", "b": "green", "c": "blue"}
    for name, participant in ids.items():
        # "b" trickles its candidates the way browsers do: offer first, then rtc.ice.
        peers[participant] = MediaPeer(
            name, colours[name], client_for(participant), trickle=name == "b"
        )
    for participant in ids.values():
        await peers[participant].offer()

    for name, participant in ids.items():
        others = [str(ids[o]) for o in ids if o != name]
        await peers[participant].wait_frames(others, video=5, audio=10, timeout=40)
    assert engine.stats() == (1, 3)
    for name, participant in ids.items():
        peer = peers[participant]
        assert not peer.errors, peer.errors
        assert peer.offers_answered >= 1  # the other tracks came in SFU-initiated offers
        for other in ids:
            if other == name:
                continue
            seen = peer.colours[str(ids[other])]
            assert {c for c in seen if c is not None} == {colours[other]}, (name, other, seen)

    # c leaves: its connection closes and the two others keep receiving each other.
    leaver = peers.pop(ids["c"])
    await engine.participant_left(call_id, ids["c"])
    await leaver.close()
    a, b = peers[ids["a"]], peers[ids["b"]]
    await a.wait_frames([str(ids["b"])], video=5, audio=10, timeout=30)
    await b.wait_frames([str(ids["a"])], video=5, audio=10, timeout=30)
    async with asyncio.timeout(15):  # the SFU renegotiated c's tracks away
        while a.direction_for(str(ids["c"])) != {"inactive"} or b.direction_for(str(ids["c"])) != {
            "inactive"
        }:
            await asyncio.sleep(0.05)
    assert engine.stats() == (1, 2)
    assert not a.errors and not b.errors


async def test_engine_ignores_garbage_and_keeps_serving(
    engine_and_peers: tuple[SfuEngine, uuid.UUID, dict[uuid.UUID, MediaPeer]],
) -> None:
    engine, call_id, peers = engine_and_peers
    broken_call = uuid.uuid4()
    # Errors in one call (bad SDP, answers nobody asked for, unknown kinds) are logged only.
    no_ice = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
    await engine.handle(broken_call, uuid.uuid4(), "rtc.offer", {"sdp": no_ice})
    await engine.handle(broken_call, uuid.uuid4(), "rtc.offer", {"sdp": 42})
    await engine.handle(broken_call, uuid.uuid4(), "rtc.answer", {"sdp": "v=0"})
    await engine.handle(broken_call, uuid.uuid4(), "rtc.ice", {"candidate": None})
    await engine.handle(broken_call, uuid.uuid4(), "rtc.bogus", {})
    await engine.participant_left(uuid.uuid4(), uuid.uuid4())

    ids = [uuid.uuid4(), uuid.uuid4()]
    for index, participant in enumerate(ids):

        async def send(kind: str, payload: dict[str, Any], who: uuid.UUID = participant) -> None:
            await engine.handle(call_id, who, kind, payload)

        peers[participant] = MediaPeer(f"p{index}", ["red", "white"][index], send)
        await peers[participant].offer()
    await peers[ids[0]].wait_frames([str(ids[1])], video=3, audio=5, timeout=40)
    await peers[ids[1]].wait_frames([str(ids[0])], video=3, audio=5, timeout=40)
    assert engine.stats() == (1, 2)  # the broken call left nothing behind


async def test_a_new_connection_from_the_same_participant_replaces_the_old_one(
    engine_and_peers: tuple[SfuEngine, uuid.UUID, dict[uuid.UUID, MediaPeer]],
) -> None:
    """A client that comes back with a fresh RTCPeerConnection (after a reconnect, or to
    restart ICE) offers new ICE credentials; the SFU rebuilds that participant."""
    engine, call_id, peers = engine_and_peers
    first, second = uuid.uuid4(), uuid.uuid4()

    def client_for(participant: uuid.UUID) -> SignalOut:
        async def send(kind: str, payload: dict[str, Any]) -> None:
            await engine.handle(call_id, participant, kind, payload)

        return send

    peers[first] = MediaPeer("first", "red", client_for(first))
    peers[second] = MediaPeer("second", "green", client_for(second))
    for peer in peers.values():
        await peer.offer()
    await peers[first].wait_frames([str(second)], video=3, audio=5, timeout=40)

    # The second participant starts over with a new connection (and a new colour).
    old = peers[second]
    peers[second] = MediaPeer("second-again", "white", client_for(second))
    await peers[second].offer()
    await old.close()
    await peers[second].wait_frames([str(first)], video=3, audio=5, timeout=40)
    seen = peers[first].colours[str(second)]
    async with asyncio.timeout(30):
        while seen["white"] < 3:
            await peers[first].wait_frames([str(second)], video=1, audio=0, timeout=30)
    assert engine.stats() == (1, 2)
    assert not peers[first].errors and not peers[second].errors


@dataclass
class EncodeCounter:
    """Encode calls per encoder object, in every peer connection of this process."""

    calls: Counter[int] = field(default_factory=Counter)
    forced_keyframes: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)  # encoders run in threads

    def install(self, monkeypatch: pytest.MonkeyPatch, *classes: type[Encoder]) -> None:
        for cls in classes:
            original = cls.encode

            def encode(
                encoder: Encoder,
                frame: Frame,
                force_keyframe: bool = False,
                original: Callable[[Encoder, Frame, bool], tuple[list[bytes], int]] = original,
            ) -> tuple[list[bytes], int]:
                with self.lock:
                    self.calls[id(encoder)] += 1
                    self.forced_keyframes[id(encoder)] += force_keyframe
                return original(encoder, frame, force_keyframe)

            monkeypatch.setattr(cls, "encode", encode)


def sender_encoder(sender: RTCRtpSender) -> int:
    encoder = getattr(sender, "_RTCRtpSender__encoder")  # noqa: B009 (name-mangled)
    assert encoder is not None, "the sender has not started"
    return id(encoder)


async def test_each_source_is_encoded_once_and_a_late_subscriber_gets_a_keyframe(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SFU forwards what publishers encoded: however many subscribe, the only encoders
    are the publishers' own, and a subscriber joining late asks the publisher for the
    keyframe it needs to decode (a per-subscriber encoder would start with one itself)."""
    counter = EncodeCounter()
    counter.install(monkeypatch, Vp8Encoder, OpusEncoder)
    colours = {"pub": "red", "s1": "green", "s2": "blue", "late": "white"}
    ids = {name: uuid.uuid4() for name in colours}
    for name, participant in ids.items():
        rig.peers[participant] = MediaPeer(name, colours[name], rig.client_for(participant))
    early = [name for name in ids if name != "late"]
    for name in early:
        await rig.peers[ids[name]].offer()
    for name in early:
        others = [str(ids[o]) for o in early if o != name]
        await rig.peers[ids[name]].wait_frames(others, video=10, audio=10, timeout=40)

    publisher = rig.peers[ids["pub"]]
    video_encoder = next(
        sender_encoder(s) for s in publisher.pc.getSenders() if s.track.kind == "video"
    )
    forced_before = counter.forced_keyframes[video_encoder]
    requests_before = rig.engine.forwarding_stats().keyframe_requests
    late = rig.peers[ids["late"]]
    await late.offer()
    await late.wait_frames([str(ids[o]) for o in early], video=5, audio=10, timeout=40)
    for name in early:
        await rig.peers[ids[name]].wait_frames([str(ids["late"])], video=5, audio=5, timeout=40)

    for name, participant in ids.items():
        peer = rig.peers[participant]
        assert not peer.errors, (name, peer.errors)
        for other in ids:
            if other != name:
                seen = peer.colours[str(ids[other])]
                assert {c for c in seen if c is not None} == {colours[other]}, (name, other)
    publishers = {
        sender_encoder(s) for p in rig.peers.values() for s in p.pc.getSenders() if s.track
    }
    with counter.lock:
        encoding = {encoder for encoder, calls in counter.calls.items() if calls}
        forced_after = counter.forced_keyframes[video_encoder]
    # One encoder per published track (4 participants, audio and video), none in the SFU.
    assert encoding == publishers and len(publishers) == 8
    assert forced_after > forced_before  # the late subscriber's keyframe came from "pub"
    stats = rig.engine.forwarding_stats()
    assert stats.keyframe_requests > requests_before
    assert (stats.sources, stats.subscriptions) == (8, 4 * 3 * 2)
    assert stats.frames_out > stats.frames_in  # each frame went out to several subscribers


def _same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    if is_rtx(a) or is_rtx(b):
        return is_rtx(a) and is_rtx(b) and a.parameters.get("apt") == b.parameters.get("apt")
    return is_codec_compatible(a, b)


def assert_one_rtp_session(descriptions: list[str]) -> None:
    """Every extension id and payload type means one thing across every m-line of every
    description, in order: the first binding (the browser's offer) is the one that holds.
    This is what Chrome enforces across a BUNDLE group, for the connection's lifetime."""
    extensions: dict[int, str] = {}
    codecs: dict[int, RTCRtpCodecParameters] = {}
    for number, text in enumerate(descriptions):
        for media in aiortc_sdp.SessionDescription.parse(text).media:
            where = f"description {number}, mid {media.rtp.muxId}"
            for extension in media.rtp.headerExtensions:
                bound = extensions.setdefault(extension.id, extension.uri)
                assert bound == extension.uri, (
                    f"{where}: id {extension.id} {bound} -> {extension.uri}"
                )
            for codec in media.rtp.codecs:
                assert codec.payloadType is not None
                known = codecs.setdefault(codec.payloadType, codec)
                assert _same_codec(known, codec), f"{where}: {codec.payloadType} {known} -> {codec}"


async def test_reoffers_keep_the_rtp_identifiers_a_browser_chose(rig: Rig) -> None:
    """A participant numbering its ids and payload types as Chrome does (aiortc's defaults
    differ in every one) joins first, so the SFU re-offers to it as the others arrive."""
    ids = {name: uuid.uuid4() for name in ("browser", "a", "c")}
    colours = {"browser": "white", "a": "red", "c": "blue"}
    for name, participant in ids.items():
        rig.peers[participant] = MediaPeer(
            name,
            colours[name],
            rig.client_for(participant),
            rewrite_offer=browser_numbering if name == "browser" else None,
        )
    browser = rig.peers[ids["browser"]]
    await browser.offer()
    for name in ("a", "c"):
        await rig.peers[ids[name]].offer()

    for name, participant in ids.items():
        others = [str(ids[o]) for o in ids if o != name]
        await rig.peers[participant].wait_frames(others, video=5, audio=10, timeout=40)
    for name, participant in ids.items():
        peer = rig.peers[participant]
        assert not peer.errors, (name, peer.errors)
        for other in ids:
            if other != name:
                seen = peer.colours[str(ids[other])]
                assert {c for c in seen if c is not None} == {colours[other]}, (name, other)

    assert len(browser.offers_received) >= 2  # one for a's tracks, one (or more) for c's
    sent_offer = browser_numbering(browser.pc.localDescription.sdp)
    assert_one_rtp_session([sent_offer, *browser.offers_received])
    # The m-lines the browser offered keep exactly what the SFU answered for them.
    answer = next(
        p["sdp"] for who, kind, p in rig.sent if who == ids["browser"] and kind == "rtc.answer"
    )

    def sections(text: str) -> dict[str, tuple[list[int], list[tuple[int, str]]]]:
        return {
            media.rtp.muxId: (
                list(media.fmt),
                [(e.id, e.uri) for e in media.rtp.headerExtensions],
            )
            for media in aiortc_sdp.SessionDescription.parse(text).media
        }

    negotiated = sections(answer)
    for offer in browser.offers_received:
        for mid, numbering in negotiated.items():
            assert sections(offer)[mid] == numbering, mid


async def test_the_sfu_reports_the_media_it_drops(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A participant that never answers the SFU's offer, and one whose connection closes,
    are dropped and reported as lost; every connection that connects is reported too."""
    monkeypatch.setattr(sfu_module, "ANSWER_TIMEOUT", 3.0)
    a, silent, c = (uuid.uuid4() for _ in range(3))
    rig.peers[a] = MediaPeer("a", "red", rig.client_for(a))
    rig.peers[silent] = MediaPeer("silent", "green", rig.client_for(silent), answer_offers=False)
    rig.peers[c] = MediaPeer("c", "blue", rig.client_for(c))
    for participant in (a, silent, c):
        await rig.peers[participant].offer()

    await until(
        lambda: {"connected": False, "reason": "no_answer"} in rig.media_events(silent),
        30,
        "the SFU to drop the participant that never answered",
    )
    await rig.peers[a].wait_frames([str(c)], video=5, audio=10, timeout=40)
    await rig.peers[c].wait_frames([str(a)], video=5, audio=10, timeout=40)
    for participant in (a, c):
        assert {"connected": True} in rig.media_events(participant)

    # c's connection closes (no "left" from the call service): the SFU notices by itself.
    await rig.peers.pop(c).close()
    await until(
        lambda: {"connected": False, "reason": "lost"} in rig.media_events(c),
        30,
        "the SFU to report c's closed connection",
    )
    await until(lambda: rig.engine.stats() == (1, 1), 10, "only a to be left")
    assert rig.media_events(a) == [{"connected": True}]


async def test_a_packet_aiortc_cannot_parse_is_dropped_not_fatal() -> None:
    """A header extension of the wrong size for its id raised struct.error in aiortc's RTP
    parser, which ended the DTLS transport and with it the participant's connection."""
    abs_send_time = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    audio_level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

    def extension_map(uri: str) -> HeaderExtensionsMap:
        mapping = HeaderExtensionsMap()
        mapping.configure(
            RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=2, uri=uri)])
        )
        return mapping

    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=1, ssrc=1234, payload=b"x")
    packet.extensions.abs_send_time = 0x123456  # 3 bytes under id 2...
    data = packet.serialize(extension_map(abs_send_time))
    receiving = extension_map(audio_level)  # ...which the receiver reads as a 1-byte level
    with pytest.raises(struct.error):
        RtpPacket.parse(data, receiving)

    harden_packet_handling()
    transport = SimpleNamespace(_rtp_header_extensions_map=receiving)
    before = dropped_packets()
    await RTCDtlsTransport._handle_rtp_data(transport, data, arrival_time_ms=0)  # type: ignore[arg-type]
    assert dropped_packets() == before + 1

    def closed(_: RtpPacket) -> None:
        raise ConnectionError("sending failed")

    # A closed transport still ends the read loop, as aiortc means it to.
    healthy = SimpleNamespace(
        _rtp_header_extensions_map=HeaderExtensionsMap(),
        _rtp_router=SimpleNamespace(route_rtp=closed),
    )
    with pytest.raises(ConnectionError):
        await RTCDtlsTransport._handle_rtp_data(healthy, data, arrival_time_ms=0)  # type: ignore[arg-type]

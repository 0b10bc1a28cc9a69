"""The SFU engine in-process: three aiortc participants, one SfuEngine, media on loopback.

Every participant publishes a small solid-colour video and a tone (tests/sfu_media.py).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aioice.ice
import pytest

from boltorezka.rtc.sfu import SfuEngine
from tests.sfu_media import (
    MediaPeer,
    SignalOut,
    loopback_only,
)


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Media between these peers stays on 127.0.0.1 (aioice would offer other interfaces)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)


@pytest.fixture
async def engine_and_peers(
    loopback_ice: None,
) -> AsyncIterator[tuple[SfuEngine, uuid.UUID, dict[uuid.UUID, MediaPeer]]]:
    call_id = uuid.uuid4()
    peers: dict[uuid.UUID, MediaPeer] = {}

    async def to_client(
        call: uuid.UUID, participant: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        if call == call_id:
            peers[participant].deliver(kind, payload)

    engine = SfuEngine(to_client)
    try:
        yield engine, call_id, peers
    finally:
        for peer in peers.values():
            await peer.close()
        await engine.close()


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

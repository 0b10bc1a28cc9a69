"""A peer-to-peer call between two real WebRTC stacks, signaled through the server and
forced through the TURN relay with the credentials the server hands out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from boltorezka_client import BoltorezkaClient

from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import add_member, create_room, register
from tests.turn import TurnServer, run_coturn

SECRET = "p2p-turn-secret-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def coturn() -> Iterator[TurnServer]:
    with run_coturn(SECRET) as server:
        yield server


def _relay_only(ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def _candidate_types(sdp: str) -> set[str]:
    return {
        line.split(" typ ")[1].split()[0]
        for line in sdp.splitlines()
        if line.startswith("a=candidate:")
    }


async def test_two_webrtc_peers_connect_through_turn_via_our_signaling(
    client: TestClient[Any, Any], services: Services, coturn: TurnServer
) -> None:
    app = await make_client(services, turn_secret=SECRET, turn_uris=(coturn.uri,))
    ws_url = f"ws://127.0.0.1:{app.server.port}/v1/ws"
    alice = await register(app)
    bob = await register(app)
    room = await create_room(app, alice)
    await add_member(app, room, alice, bob)
    pcs: list[RTCPeerConnection] = []
    try:
        async with (
            BoltorezkaClient(ws_url, alice.access_token) as a,
            BoltorezkaClient(ws_url, bob.access_token) as b,
        ):
            # TURN credentials arrive with auth already, ready before any call.
            assert a.auth_result["iceServers"][0]["username"].endswith(alice.id)
            started = await a.request("call.start", {"roomId": room, "mode": "p2p"})
            call_id = started["call"]["callId"]
            joined = await b.request("call.join", {"callId": call_id})
            # Each side gets TURN credentials of its own with the call.
            assert started["iceServers"] and joined["iceServers"]
            assert started["iceServers"][0]["username"].endswith(alice.id)
            assert joined["iceServers"][0]["username"].endswith(bob.id)

            pc_a = RTCPeerConnection(_relay_only(started["iceServers"]))
            pc_b = RTCPeerConnection(_relay_only(joined["iceServers"]))
            pcs += [pc_a, pc_b]
            channel = pc_a.createDataChannel("chat")
            opened = asyncio.Event()
            replies: asyncio.Queue[str] = asyncio.Queue()
            channel.on("open", opened.set)
            channel.on("message", replies.put_nowait)

            @pc_b.on("datachannel")
            def on_datachannel(remote: RTCDataChannel) -> None:
                remote.on("message", lambda text: remote.send(f"echo:{text}"))

            await pc_a.setLocalDescription(await pc_a.createOffer())
            await a.request(
                "rtc.offer",
                {
                    "callId": call_id,
                    "to": joined["participantId"],
                    "sdp": pc_a.localDescription.sdp,
                },
            )
            offer = await b.wait_type("rtc.offer", callId=call_id)
            assert offer["payload"]["from"] == started["participantId"]
            await pc_b.setRemoteDescription(
                RTCSessionDescription(sdp=offer["payload"]["sdp"], type="offer")
            )
            await pc_b.setLocalDescription(await pc_b.createAnswer())
            await b.request(
                "rtc.answer",
                {
                    "callId": call_id,
                    "to": started["participantId"],
                    "sdp": pc_b.localDescription.sdp,
                },
            )
            answer = await a.wait_type("rtc.answer", callId=call_id)
            assert answer["payload"]["from"] == joined["participantId"]
            await pc_a.setRemoteDescription(
                RTCSessionDescription(sdp=answer["payload"]["sdp"], type="answer")
            )

            # Only relayed candidates were offered, so any path found runs through coturn.
            assert _candidate_types(pc_a.localDescription.sdp) == {"relay"}
            assert _candidate_types(pc_b.localDescription.sdp) == {"relay"}

            async with asyncio.timeout(20):
                await opened.wait()
            channel.send("hello over turn")
            async with asyncio.timeout(10):
                assert await replies.get() == "echo:hello over turn"

            await a.request(
                "call.telemetry",
                {
                    "callId": call_id,
                    "outcome": "connected",
                    "setupMs": 400,
                    "candidateType": "relay",
                },
            )
            metrics = await (await app.get("/metrics")).text()
            assert 'boltorezka_call_setups_total{outcome="connected"} 1.0' in metrics
            assert 'boltorezka_ice_selected_candidates_total{type="relay"} 1.0' in metrics
            assert "boltorezka_call_setup_success_ratio 1.0" in metrics
    finally:
        for pc in pcs:
            await pc.close()
        await app.close()

"""Calls in ``sfu`` mode, end to end: the real server, a real ``boltorezka sfu`` process on
the server's socket bus, and aiortc clients signaling only through ``rtc.offer``/
``rtc.answer`` without ``to``. Media stays on 127.0.0.1. Also: media the SFU drops shows
in ``call.state``, and set-up telemetry counts calls by media, not ICE reports."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aioice.ice
import pytest
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient, NackError

from boltorezka.app import build_app
from boltorezka.bus.socket import SocketBus
from boltorezka.rtc.sfu_link import SfuBusLink
from boltorezka.runtime import Services
from tests.helpers import add_member, cli_env, create_room, quick_accounts
from tests.sfu_media import MediaPeer, loopback_only

SFU_START_TIMEOUT = 30.0


@dataclass
class Stack:
    http: TestClient[Any, Any]
    ws_url: str
    link: SfuBusLink
    sfu_log: Path
    services: Services


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def sfu_stack(services: Services, *, with_sfu: bool) -> AsyncIterator[Stack]:
    """The app on a SocketBus (as `boltorezka serve` runs it), plus the SFU as a process.

    The app's services are built afresh on that bus, from the settings and pool of
    ``services``; ``Stack.services`` are they."""
    workdir = Path(tempfile.mkdtemp(prefix="bz-sfu-"))  # short: Unix socket paths are limited
    socket_path = workdir / "bus.sock"
    services = Services.build(services.settings, services.pool, bus=SocketBus(socket_path))
    http: TestClient[Any, Any] = TestClient(TestServer(build_app(services), host="127.0.0.1"))
    await http.start_server()
    link = cast(SfuBusLink, services.calls.sfu)
    sfu_log = workdir / "sfu.log"
    process: asyncio.subprocess.Process | None = None
    try:
        if with_sfu:
            with sfu_log.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "boltorezka",
                    "sfu",
                    "--bus-socket",
                    str(socket_path),
                    env=cli_env(SFU_ICE_ADDRESSES="127.0.0.1", LOG_FORMAT="console"),
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
            try:
                await _until(lambda: link.available, SFU_START_TIMEOUT, "the SFU heartbeat")
            except AssertionError:
                raise AssertionError(f"no SFU heartbeat; its log:\n{sfu_log.read_text()}") from None
        yield Stack(http, f"ws://127.0.0.1:{http.server.port}/v1/ws", link, sfu_log, services)
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await http.close()
        shutil.rmtree(workdir, ignore_errors=True)


class SfuClient:
    """A participant: the scripted WebSocket client plus its media peer."""

    def __init__(self, ws: BoltorezkaClient, call_id: str, participant_id: str, colour: str):
        self.ws = ws
        self.call_id = call_id
        self.participant_id = participant_id
        self.media = MediaPeer(participant_id[:8], colour, self._signal)
        self.retired: list[MediaPeer] = []
        self.from_sfu: list[dict[str, Any]] = []
        self._pump = asyncio.create_task(self._pump_signals())

    async def _signal(self, kind: str, payload: dict[str, Any]) -> None:
        # No `to`: addressed to the SFU.
        await self.ws.request(kind, {"callId": self.call_id, **payload})

    async def _pump_signals(self) -> None:
        kinds = ("rtc.offer", "rtc.answer", "rtc.ice")
        while True:
            with contextlib.suppress(TimeoutError):
                event = await self.ws.wait_for(lambda e: e.get("type") in kinds, timeout=60)
                self.from_sfu.append(event)
                self.media.deliver(event["type"], event["payload"])

    async def restart(self, colour: str) -> None:
        """Start over with a new RTCPeerConnection (the old one is closed already)."""
        self.retired.append(self.media)
        self.media = MediaPeer(self.participant_id[:8], colour, self._signal)
        await self.media.offer()

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        for media in [*self.retired, self.media]:
            await media.close()


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)


async def test_three_party_sfu_call_through_the_server_and_the_sfu_process(
    services: Services, loopback_ice: None
) -> None:
    alice, bob, carol = await quick_accounts(services, 3)
    async with sfu_stack(services, with_sfu=True) as stack:
        room = await create_room(stack.http, alice)
        for member in (bob, carol):
            await add_member(stack.http, room, alice, member)
        clients: list[SfuClient] = []
        async with (
            BoltorezkaClient(stack.ws_url, alice.access_token) as a,
            BoltorezkaClient(stack.ws_url, bob.access_token) as b,
            BoltorezkaClient(stack.ws_url, carol.access_token) as c,
        ):
            try:
                for ws in (a, b, c):
                    await ws.join(room)
                started = await a.request("call.start", {"roomId": room, "mode": "sfu"})
                call_id = started["call"]["callId"]
                assert started["call"]["mode"] == "sfu"
                joined_b = await b.request("call.join", {"callId": call_id})
                joined_c = await c.request("call.join", {"callId": call_id})
                for ws in (a, b, c):
                    state = await ws.wait_type("call.state", 10, callId=call_id, mode="sfu")
                    assert state["payload"]["mode"] == "sfu"

                ids = [r["participantId"] for r in (started, joined_b, joined_c)]
                colours = ["red", "green", "blue"]
                clients = [
                    SfuClient(ws, call_id, pid, colour)
                    for ws, pid, colour in zip((a, b, c), ids, colours, strict=True)
                ]
                for client in clients:
                    await client.media.offer()

                for client in clients:
                    others = [pid for pid in ids if pid != client.participant_id]
                    await client.media.wait_frames(others, video=5, audio=10, timeout=60)
                    for other, colour in zip(ids, colours, strict=True):
                        if other != client.participant_id:
                            seen = client.media.colours[other]
                            assert {k for k in seen if k is not None} == {colour}, seen
                    assert not client.media.errors, client.media.errors
                    kinds = {e["type"] for e in client.from_sfu}
                    assert {"rtc.answer", "rtc.offer"} <= kinds  # SFU answered, then offered
                    for event in client.from_sfu:  # SFU messages name the call, not a sender
                        assert event["payload"]["callId"] == call_id
                        assert event["payload"].get("from") is None
                await _until(
                    lambda: (
                        stack.link.last_status is not None
                        and (stack.link.last_status.calls, stack.link.last_status.peers) == (1, 3)
                    ),
                    10,
                    "the SFU heartbeat to count 3 peers",
                )

                # Carol leaves: Alice and Bob keep receiving each other.
                leaver = clients.pop()
                await c.request("call.leave", {"callId": call_id})
                await leaver.close()
                first, second = clients
                await first.media.wait_frames([ids[1]], video=5, audio=10, timeout=30)
                await second.media.wait_frames([ids[0]], video=5, audio=10, timeout=30)
                await _until(
                    lambda: all(k.media.direction_for(ids[2]) == {"inactive"} for k in clients),
                    15,
                    "the SFU to renegotiate Carol's tracks away",
                )
                await _until(
                    lambda: (
                        stack.link.last_status is not None and stack.link.last_status.peers == 2
                    ),
                    10,
                    "the SFU heartbeat to count 2 peers",
                )
            except BaseException:
                print(stack.sfu_log.read_text())  # shown by pytest for a failing test
                raise
            finally:
                for client in clients:
                    await client.close()


async def test_signaling_the_sfu_without_an_sfu_process_is_nacked(services: Services) -> None:
    alice, bob = await quick_accounts(services, 2)
    async with sfu_stack(services, with_sfu=False) as stack:
        room = await create_room(stack.http, alice)
        await add_member(stack.http, room, alice, bob)
        async with BoltorezkaClient(stack.ws_url, alice.access_token) as a:
            started = await a.request("call.start", {"roomId": room, "mode": "sfu"})
            call_id = started["call"]["callId"]
            assert not stack.link.available
            for kind, payload in (
                ("rtc.offer", {"sdp": "v=0\r\n"}),
                ("rtc.ice", {"candidate": None}),
            ):
                with pytest.raises(NackError) as refused:
                    await a.request(kind, {"callId": call_id, **payload})
                assert refused.value.code == "sfu_unavailable"
                assert refused.value.retryable


def connected_of(state: dict[str, Any]) -> dict[str, bool]:
    return {p["participantId"]: p["connected"] for p in state["payload"]["participants"]}


async def test_media_the_sfu_drops_is_reported_and_recovered_from(
    services: Services, loopback_ice: None
) -> None:
    """Bob's RTCPeerConnection goes away while his socket stays: the SFU drops his media,
    and call.state says so (``media_lost``, connected false) until he offers again from a
    new connection (``media_restored``), without call.join."""
    alice, bob = await quick_accounts(services, 2)
    async with sfu_stack(services, with_sfu=True) as stack:
        room = await create_room(stack.http, alice)
        await add_member(stack.http, room, alice, bob)
        clients: list[SfuClient] = []
        async with (
            BoltorezkaClient(stack.ws_url, alice.access_token) as a,
            BoltorezkaClient(stack.ws_url, bob.access_token) as b,
        ):
            try:
                for ws in (a, b):
                    await ws.join(room)
                started = await a.request("call.start", {"roomId": room, "mode": "sfu"})
                call_id = started["call"]["callId"]
                joined = await b.request("call.join", {"callId": call_id})
                ids = [started["participantId"], joined["participantId"]]
                clients = [
                    SfuClient(ws, call_id, pid, colour)
                    for ws, pid, colour in zip((a, b), ids, ("red", "green"), strict=True)
                ]
                for client in clients:
                    await client.media.offer()
                await clients[0].media.wait_frames([ids[1]], video=3, audio=5, timeout=60)
                await clients[1].media.wait_frames([ids[0]], video=3, audio=5, timeout=60)

                await clients[1].media.pc.close()
                for ws in (a, b):
                    lost = await ws.wait_type("call.state", 30, callId=call_id, reason="media_lost")
                    assert connected_of(lost) == {ids[0]: True, ids[1]: False}

                await clients[1].restart("white")
                for ws in (a, b):
                    back = await ws.wait_type(
                        "call.state", 30, callId=call_id, reason="media_restored"
                    )
                    assert connected_of(back) == {ids[0]: True, ids[1]: True}
                seen = clients[0].media.colours
                await _until(
                    lambda: seen.get(ids[1], Counter())["white"] >= 3, 40, "Bob's new video"
                )
                assert not clients[0].media.errors and not clients[1].media.errors
            except BaseException:
                print(stack.sfu_log.read_text())
                raise
            finally:
                for client in clients:
                    await client.close()


async def test_set_up_telemetry_counts_calls_by_media_not_ice_reports(services: Services) -> None:
    """ICE connecting is not media flowing: a call in which every participant reported ICE
    connected but nobody decoded a frame is no success, and each call counts once."""
    alice, bob = await quick_accounts(services, 2)
    async with sfu_stack(services, with_sfu=False) as stack:
        room = await create_room(stack.http, alice)
        await add_member(stack.http, room, alice, bob)
        async with (
            BoltorezkaClient(stack.ws_url, alice.access_token) as a,
            BoltorezkaClient(stack.ws_url, bob.access_token) as b,
        ):

            async def call_with(reports: list[tuple[BoltorezkaClient, dict[str, Any]]]) -> None:
                started = await a.request("call.start", {"roomId": room, "mode": "sfu"})
                call_id = started["call"]["callId"]
                await b.request("call.join", {"callId": call_id})
                for ws, report in reports:
                    await ws.request("call.telemetry", {"callId": call_id, **report})
                await a.request("call.end", {"callId": call_id})

            connected = {"outcome": "connected", "setupMs": 400}
            # Nobody saw anybody; Alice's repeated report counts once.
            await call_with([(a, connected), (a, connected), (b, connected)])
            await call_with(
                [
                    (a, connected),
                    (a, {"outcome": "media", "setupMs": 900}),
                    (b, {"outcome": "media", "setupMs": 1200}),
                ]
            )

    text = stack.services.metrics.render().decode()

    def value(name: str) -> float:
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        return float(line.split()[1])

    assert value('boltorezka_call_media_total{outcome="no_media"}') == 1
    assert value('boltorezka_call_media_total{outcome="media"}') == 1
    assert value("boltorezka_call_media_success_ratio") == 0.5
    assert value("boltorezka_call_first_frame_seconds_count") == 2
    # ICE outcomes stay per participant, once each: Alice and Bob, then Alice.
    assert value('boltorezka_call_setups_total{outcome="connected"}') == 3

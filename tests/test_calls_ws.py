"""Calls over the WebSocket, as users see them: ringing, joining, leaving and ending a call,
who is told, who may signal whom, timeouts, dropped connections, limits and telemetry.

Every "does not arrive" check uses a sentinel: the answer to a ``ping`` the silent client
sends after the unwanted frame would already have been queued to it (the server queues
``call.state`` and relayed signals before it answers the request that caused them, and
a connection's frames leave in order). Nothing here sleeps to prove an absence.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient, NackError

from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import Account, add_member, create_room, quick_accounts

Event = dict[str, Any]
_ts = itertools.count(1_700_000_000_000)

CALL_ERRORS_AFTER_END = {"call_not_found", "invalid_call_transition"}


# --- harness ---------------------------------------------------------------------------------


class Peer(BoltorezkaClient):
    """The scripted client, plus every frame it received (acks included) in arrival order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[Event] = []
        self._synced = 0  # frames before this index were returned by an earlier sync()

    async def _handle(self, frame: Event) -> None:
        self.frames.append(frame)
        await super()._handle(frame)

    async def sync(self) -> list[Event]:
        """Ping (the sentinel); return the events that arrived before its answer and after
        the previous sync's (from the start, the first time)."""
        ts = next(_ts)
        await self.request("ping", {"ts": ts})
        index = next(
            i
            for i, frame in enumerate(self.frames)
            if frame.get("type") == "ack" and (frame["payload"].get("result") or {}).get("ts") == ts
        )
        since, self._synced = self._synced, index + 1
        return [f for f in self.frames[since:index] if f.get("type") not in ("ack", "nack")]

    async def nack(self, msg_type: str, payload: dict[str, Any]) -> NackError:
        with pytest.raises(NackError) as caught:
            await self.request(msg_type, payload)
        return caught.value


@contextlib.asynccontextmanager
async def peers(url: str, *accounts: Account) -> AsyncIterator[list[Peer]]:
    """Connected, authenticated clients, one per account, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for account in accounts:
            peer = Peer(url, account.access_token, reconnect=False, request_timeout=5.0)
            await stack.enter_async_context(peer)
            opened.append(peer)
        yield opened


@dataclass
class Cast:
    """A private room owned by ``owner`` with an admin and three plain members, and a
    ``stranger`` who belongs to none of it."""

    http: TestClient[Any, Any]
    url: str
    room: str
    owner: Account
    admin: Account
    alice: Account
    bob: Account
    carol: Account
    stranger: Account


async def make_cast(http: TestClient[Any, Any], services: Services) -> Cast:
    owner, admin, alice, bob, carol, stranger = await quick_accounts(services, 6)
    room = await create_room(http, owner, "private", "calls")
    await add_member(http, room, owner, admin, role="admin")
    for member in (alice, bob, carol):
        await add_member(http, room, owner, member)
    url = f"ws://127.0.0.1:{http.server.port}/v1/ws"
    return Cast(http, url, room, owner, admin, alice, bob, carol, stranger)


@pytest.fixture
async def cast(client: TestClient[Any, Any], services: Services) -> Cast:
    return await make_cast(client, services)


@contextlib.asynccontextmanager
async def custom_cast(services: Services, **overrides: Any) -> AsyncIterator[Cast]:
    """The same cast on an app whose settings differ from the defaults."""
    http = await make_client(services, **overrides)
    try:
        yield await make_cast(http, services)
    finally:
        await http.close()


def people(call: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """participantId → (userId, connected) of a call description."""
    return {p["participantId"]: (p["userId"], p["connected"]) for p in call["participants"]}


async def call_state(
    peer: Peer,
    call_id: str,
    state: str | None = None,
    where: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """The next ``call.state`` payload for ``call_id`` (in ``state``, matching ``where``)."""

    def match(event: Event) -> bool:
        body = event.get("payload", {})
        return (
            event.get("type") == "call.state"
            and body.get("callId") == call_id
            and (state is None or body.get("state") == state)
            and where(body)
        )

    event = await peer.wait_for(match, timeout)
    payload: dict[str, Any] = event["payload"]
    return payload


def of_type(frames: list[Event], *types: str) -> list[Event]:
    return [f for f in frames if f.get("type") in types]


async def start(peer: Peer, room: str, mode: str = "p2p") -> tuple[str, str]:
    """Start a call; (callId, the starter's participantId)."""
    result = await peer.request("call.start", {"roomId": room, "mode": mode})
    return result["call"]["callId"], result["participantId"]


async def join(peer: Peer, call_id: str) -> str:
    result = await peer.request("call.join", {"callId": call_id})
    participant_id: str = result["participantId"]
    return participant_id


async def session_row(pool: asyncpg.Pool, call_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT room_id::text, mode, state, started_by::text, active_at, ended_at, end_reason "
        "FROM call_sessions WHERE id = $1::uuid",
        call_id,
    )
    assert row is not None
    return row


async def participant_rows(pool: asyncpg.Pool, call_id: str) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT id::text, user_id::text, left_at, leave_reason FROM call_participants "
        "WHERE call_id = $1::uuid",
        call_id,
    )
    return {row["id"]: row for row in rows}


SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
}


# --- starting a call -------------------------------------------------------------------------


async def test_start_rings_every_connected_member_and_nobody_else(
    cast: Cast, pool: asyncpg.Pool
) -> None:
    async with peers(cast.url, cast.alice, cast.bob, cast.carol, cast.stranger) as (
        alice,
        bob,
        carol,
        stranger,
    ):
        await bob.join(cast.room)  # bob has the room open; carol is merely connected

        started = await alice.request("call.start", {"roomId": cast.room, "mode": "p2p"})
        call = started["call"]
        call_id = call["callId"]
        assert call["roomId"] == cast.room
        assert call["state"] == "ringing" and call["mode"] == "p2p"
        assert people(call) == {started["participantId"]: (cast.alice.id, True)}
        assert started["iceServers"] == []  # no TURN or STUN configured

        for member in (alice, bob, carol):
            assert await call_state(member, call_id, "ringing") == call  # no "reason"

        assert of_type(await stranger.sync(), "call.state") == []

    row = await session_row(pool, call_id)
    assert (row["room_id"], row["mode"], row["state"]) == (cast.room, "p2p", "ringing")
    assert row["started_by"] == cast.alice.id
    assert row["active_at"] is None and row["ended_at"] is None


async def test_calls_in_a_public_room_ring_members_only(
    client: TestClient[Any, Any], services: Services
) -> None:
    owner, member, outsider = await quick_accounts(services, 3)
    room = await create_room(client, owner, "public", "lobby")
    response = await client.post(f"/v1/rooms/{room}/join", headers=member.headers)
    assert response.status in (200, 201), await response.text()
    url = f"ws://127.0.0.1:{client.server.port}/v1/ws"

    async with peers(url, owner, member, outsider) as (o, m, x):
        # Anyone may see a public room, but only its members may call in it.
        assert (await x.nack("call.start", {"roomId": room})).code == "not_a_member"

        call_id, _ = await start(m, room, mode="auto")
        await call_state(o, call_id, "ringing")
        assert (await x.nack("call.join", {"callId": call_id})).code == "not_a_member"
        assert of_type(await x.sync(), "call.state") == []

        joined = await o.request("call.join", {"callId": call_id})
        assert joined["call"]["state"] == "active"


async def test_join_leave_and_the_last_leave_end_the_call_and_are_recorded(
    cast: Cast, pool: asyncpg.Pool
) -> None:
    async with peers(cast.url, cast.alice, cast.bob, cast.carol) as (alice, bob, carol):
        call_id, alice_pid = await start(alice, cast.room)
        joined = await bob.request("call.join", {"callId": call_id})
        bob_pid = joined["participantId"]
        assert bob_pid != alice_pid
        assert joined["call"]["state"] == "active"
        assert people(joined["call"]) == {
            alice_pid: (cast.alice.id, True),
            bob_pid: (cast.bob.id, True),
        }
        assert joined["iceServers"] == []

        for member in (alice, bob, carol):
            answered = await call_state(member, call_id, "active")
            assert people(answered) == people(joined["call"])

        # Joining again on a connection that is already in the call changes nothing.
        again = await bob.nack("call.join", {"callId": call_id})
        assert again.code == "invalid_call_transition"
        seen = of_type(await carol.sync(), "call.state")
        assert [f["payload"]["state"] for f in seen] == ["ringing", "active"]
        assert len(await participant_rows(pool, call_id)) == 2

        row = await session_row(pool, call_id)
        assert row["state"] == "active" and row["active_at"] is not None
        assert row["ended_at"] is None

        left = await bob.request("call.leave", {"callId": call_id})
        assert left == {"callId": call_id, "state": "active"}
        for member in (alice, carol):
            after = await call_state(
                member, call_id, "active", where=lambda c: len(c["participants"]) == 1
            )
            assert people(after) == {alice_pid: (cast.alice.id, True)}

        last = await alice.request("call.leave", {"callId": call_id})
        assert last == {"callId": call_id, "state": "ended"}
        for member in (alice, bob, carol):
            ended = await call_state(member, call_id, "ended")
            assert ended["reason"] == "last_participant_left"
            assert ended["participants"] == []

    row = await session_row(pool, call_id)
    assert row["state"] == "ended" and row["end_reason"] == "last_participant_left"
    assert row["active_at"] is not None and row["ended_at"] is not None
    assert row["active_at"] <= row["ended_at"]
    rows = await participant_rows(pool, call_id)
    assert set(rows) == {alice_pid, bob_pid}
    assert rows[alice_pid]["user_id"] == cast.alice.id
    assert rows[bob_pid]["user_id"] == cast.bob.id
    for participant in rows.values():
        assert participant["left_at"] is not None and participant["leave_reason"] == "left"
    assert rows[bob_pid]["left_at"] <= rows[alice_pid]["left_at"]


async def test_a_second_call_in_a_room_with_a_live_one_is_call_already_live(cast: Cast) -> None:
    async with peers(cast.url, cast.alice, cast.bob) as (alice, bob):
        first, _ = await start(alice, cast.room)
        for mode in ("p2p", "sfu", "auto"):
            refused = await bob.nack("call.start", {"roomId": cast.room, "mode": mode})
            assert refused.code == "call_already_live"
        # The live call is untouched: bob can still join it.
        joined = await bob.request("call.join", {"callId": first})
        assert joined["call"]["state"] == "active"


async def test_a_new_call_can_start_once_the_last_one_ended(cast: Cast, pool: asyncpg.Pool) -> None:
    other_room = await create_room(cast.http, cast.owner, "private", "elsewhere")
    await add_member(cast.http, other_room, cast.owner, cast.bob)
    async with peers(cast.url, cast.alice, cast.bob) as (alice, bob):
        first, _ = await start(alice, cast.room)
        # A live call in one room does not keep another room from calling.
        elsewhere, _ = await start(bob, other_room)

        await alice.request("call.leave", {"callId": first})
        await call_state(bob, first, "ended")
        second, _ = await start(bob, cast.room)
        assert second not in (first, elsewhere)

    states = await pool.fetch(
        "SELECT id::text, state FROM call_sessions WHERE room_id = $1::uuid", cast.room
    )
    assert {r["id"]: r["state"] for r in states} == {first: "ended", second: "ringing"}


# --- who may take part -----------------------------------------------------------------------


async def test_outsiders_cannot_start_join_or_touch_a_call(cast: Cast, pool: asyncpg.Pool) -> None:
    async with peers(cast.url, cast.alice, cast.stranger) as (alice, stranger):
        # A private room the stranger is not in does not exist, as far as they can tell.
        refused = await stranger.nack("call.start", {"roomId": cast.room})
        assert refused.code == "room_not_found"

        call_id, alice_pid = await start(alice, cast.room)
        assert (await stranger.nack("call.join", {"callId": call_id})).code == "room_not_found"
        end = await stranger.nack("call.end", {"callId": call_id})
        assert end.code == "room_not_found"
        # Leaving does not reveal the call either.
        leave = await stranger.nack("call.leave", {"callId": call_id})
        assert leave.code == "room_not_found"
        offer = {"callId": call_id, "to": alice_pid, "sdp": SDP}
        assert (await stranger.nack("rtc.offer", offer)).code == "not_in_call"

        # Nothing reached alice and the call did not change: only its ringing was announced.
        seen = of_type(await alice.sync(), "call.state", "rtc.offer")
        assert [(f["type"], f["payload"]["state"]) for f in seen] == [("call.state", "ringing")]
        assert of_type(await stranger.sync(), "call.state") == []

    assert await pool.fetchval("SELECT count(*) FROM call_sessions") == 1
    assert await pool.fetchval("SELECT count(*) FROM call_participants") == 1


async def test_an_unknown_call_id_is_call_not_found(cast: Cast) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    async with peers(cast.url, cast.alice) as (alice,):
        for msg_type in ("call.join", "call.leave", "call.end"):
            assert (await alice.nack(msg_type, {"callId": unknown})).code == "call_not_found"
        for msg_type in ("rtc.offer", "rtc.answer"):
            refused = await alice.nack(msg_type, {"callId": unknown, "to": unknown, "sdp": SDP})
            assert refused.code == "call_not_found"
        refused = await alice.nack("rtc.ice", {"callId": unknown, "to": unknown, "candidate": None})
        assert refused.code == "call_not_found"


@pytest.mark.parametrize("how", ["end", "last_leave"])
async def test_an_ended_call_refuses_every_request(cast: Cast, how: str) -> None:
    async with peers(cast.url, cast.alice, cast.bob, cast.carol) as (alice, bob, carol):
        call_id, alice_pid = await start(alice, cast.room)
        bob_pid = await join(bob, call_id)
        if how == "end":
            await alice.request("call.end", {"callId": call_id})
        else:
            await bob.request("call.leave", {"callId": call_id})
            await alice.request("call.leave", {"callId": call_id})
        for peer in (alice, bob, carol):
            await call_state(peer, call_id, "ended")
            await peer.sync()  # everything up to the end has arrived

        attempts: list[tuple[Peer, str, dict[str, Any]]] = [
            (carol, "call.join", {"callId": call_id}),
            (alice, "call.join", {"callId": call_id}),
            (bob, "call.leave", {"callId": call_id}),
            (alice, "call.end", {"callId": call_id}),
            (alice, "rtc.offer", {"callId": call_id, "to": bob_pid, "sdp": SDP}),
            (bob, "rtc.answer", {"callId": call_id, "to": alice_pid, "sdp": SDP}),
            (alice, "rtc.ice", {"callId": call_id, "to": bob_pid, "candidate": CANDIDATE}),
        ]
        for peer, msg_type, payload in attempts:
            refused = await peer.nack(msg_type, payload)
            assert refused.code in CALL_ERRORS_AFTER_END, (msg_type, refused.code)
            # What the server says today: an ended call is forgotten.
            assert refused.code == "call_not_found", (msg_type, refused.code)

        # Nobody was told anything after the end: the call did not come back.
        for peer in (alice, bob, carol):
            late = of_type(await peer.sync(), "call.state", "rtc.offer", "rtc.answer", "rtc.ice")
            assert late == [], late


# --- signaling relay -------------------------------------------------------------------------


@dataclass
class ThreeWay:
    call_id: str
    alice: Peer
    bob: Peer
    carol: Peer
    pid: dict[str, str]  # "alice" → participant id


@contextlib.asynccontextmanager
async def three_way(cast: Cast, *extra: Account) -> AsyncIterator[tuple[ThreeWay, list[Peer]]]:
    """Alice, bob and carol in one peer-to-peer call; ``extra`` connected but not in it."""
    async with peers(cast.url, cast.alice, cast.bob, cast.carol, *extra) as opened:
        alice, bob, carol, *others = opened
        call_id, alice_pid = await start(alice, cast.room)
        pid = {"alice": alice_pid, "bob": await join(bob, call_id)}
        pid["carol"] = await join(carol, call_id)
        yield ThreeWay(call_id, alice, bob, carol, pid), others


def signals(frames: list[Event]) -> list[Event]:
    return of_type(frames, "rtc.offer", "rtc.answer", "rtc.ice")


async def test_signals_reach_only_the_addressed_participant_from_the_real_sender(
    cast: Cast,
) -> None:
    async with three_way(cast) as (call, _):
        await call.alice.request(
            "rtc.offer", {"callId": call.call_id, "to": call.pid["bob"], "sdp": SDP}
        )
        offer = await call.bob.wait_type("rtc.offer", callId=call.call_id)
        assert offer["payload"] == {
            "callId": call.call_id,
            "from": call.pid["alice"],
            "sdp": SDP,
            "iceRestart": False,
        }

        answer_sdp = SDP + "a=answer\r\n"
        await call.bob.request(
            "rtc.answer", {"callId": call.call_id, "to": call.pid["alice"], "sdp": answer_sdp}
        )
        answer = await call.alice.wait_type("rtc.answer", callId=call.call_id)
        assert answer["payload"]["from"] == call.pid["bob"]
        assert answer["payload"]["sdp"] == answer_sdp

        await call.alice.request(
            "rtc.ice", {"callId": call.call_id, "to": call.pid["bob"], "candidate": CANDIDATE}
        )
        ice = await call.bob.wait_type("rtc.ice", callId=call.call_id)
        assert ice["payload"] == {
            "callId": call.call_id,
            "from": call.pid["alice"],
            "candidate": CANDIDATE,
        }

        # A client cannot say who it is: "from" in a request is refused outright.
        spoof = {
            "callId": call.call_id,
            "to": call.pid["bob"],
            "sdp": SDP,
            "from": call.pid["carol"],
        }
        assert (await call.alice.nack("rtc.offer", spoof)).code == "validation_failed"

        # Each got exactly what was addressed to them: carol, in the call, got nothing,
        # nobody got their own signals back, and the spoofed offer went nowhere.
        received = {
            name: [f["type"] for f in signals(await peer.sync())]
            for name, peer in (("alice", call.alice), ("bob", call.bob), ("carol", call.carol))
        }
        assert received == {"alice": ["rtc.answer"], "bob": ["rtc.offer", "rtc.ice"], "carol": []}


async def test_relay_refuses_what_cannot_be_delivered(cast: Cast) -> None:
    async with three_way(cast, cast.owner) as (call, [owner]):
        to_bob = {"callId": call.call_id, "to": call.pid["bob"], "sdp": SDP}

        # A room member who is not in the call cannot signal into it.
        assert (await owner.nack("rtc.offer", to_bob)).code == "not_in_call"
        ice = {"callId": call.call_id, "to": call.pid["bob"], "candidate": CANDIDATE}
        assert (await owner.nack("rtc.ice", ice)).code == "not_in_call"

        unknown = {"callId": call.call_id, "to": "00000000-0000-4000-8000-000000000001"}
        refused = await call.alice.nack("rtc.offer", {**unknown, "sdp": SDP})
        assert refused.code == "participant_not_found"
        refused = await call.alice.nack("rtc.ice", {**unknown, "candidate": None})
        assert refused.code == "participant_not_found"

        to_self = {"callId": call.call_id, "to": call.pid["alice"], "sdp": SDP}
        assert (await call.alice.nack("rtc.offer", to_self)).code == "invalid_call_transition"

        # Peer-to-peer calls have no SFU to send an unaddressed offer to.
        nobody = {"callId": call.call_id, "sdp": SDP}
        assert (await call.alice.nack("rtc.offer", nobody)).code == "invalid_call_transition"
        assert (await call.alice.nack("rtc.answer", nobody)).code == "invalid_call_transition"
        no_to = {"callId": call.call_id, "candidate": CANDIDATE}
        assert (await call.alice.nack("rtc.ice", no_to)).code == "invalid_call_transition"

        for peer in (call.alice, call.bob, call.carol):
            assert signals(await peer.sync()) == []


async def test_a_participant_of_another_call_cannot_be_addressed(cast: Cast) -> None:
    other_room = await create_room(cast.http, cast.owner, "private", "other")
    async with three_way(cast, cast.owner) as (call, [owner]):
        other_call, owner_pid = await start(owner, other_room)
        # Neither direction crosses calls: ids only mean something within their call.
        across = {"callId": call.call_id, "to": owner_pid, "sdp": SDP}
        assert (await call.alice.nack("rtc.offer", across)).code == "participant_not_found"
        back = {"callId": other_call, "to": call.pid["alice"], "sdp": SDP}
        assert (await owner.nack("rtc.offer", back)).code == "participant_not_found"
        assert signals(await owner.sync()) == []
        assert signals(await call.alice.sync()) == []


async def test_ice_restart_and_end_of_candidates_are_relayed(cast: Cast) -> None:
    async with three_way(cast) as (call, _):
        restart = {"callId": call.call_id, "to": call.pid["bob"], "sdp": SDP, "iceRestart": True}
        await call.alice.request("rtc.offer", restart)
        offer = await call.bob.wait_type("rtc.offer", callId=call.call_id)
        assert offer["payload"]["iceRestart"] is True
        assert offer["payload"]["from"] == call.pid["alice"]

        await call.bob.request(
            "rtc.ice", {"callId": call.call_id, "to": call.pid["alice"], "candidate": None}
        )
        done = await call.alice.wait_type("rtc.ice", callId=call.call_id)
        assert "candidate" in done["payload"] and done["payload"]["candidate"] is None
        assert done["payload"]["from"] == call.pid["bob"]
        assert signals(await call.carol.sync()) == []


# --- ending a call for everyone --------------------------------------------------------------


async def test_a_participant_ends_the_call_for_everyone(cast: Cast, pool: asyncpg.Pool) -> None:
    async with peers(cast.url, cast.owner) as (owner,):
        async with three_way(cast) as (call, _):
            ended = await call.bob.request("call.end", {"callId": call.call_id})
            assert ended == {"callId": call.call_id, "state": "ended"}
            for peer in (call.alice, call.bob, call.carol, owner):
                state = await call_state(peer, call.call_id, "ended")
                assert state["reason"] == "ended_by_user" and state["participants"] == []

    row = await session_row(pool, call.call_id)
    assert row["state"] == "ended" and row["end_reason"] == "ended_by_user"
    assert row["ended_at"] is not None
    rows = await participant_rows(pool, call.call_id)
    assert set(rows) == set(call.pid.values())
    for participant in rows.values():
        assert participant["left_at"] is not None
        assert participant["leave_reason"] == "ended_by_user"


async def test_only_participants_and_room_admins_can_end_a_call(cast: Cast) -> None:
    async with peers(cast.url, cast.alice, cast.bob, cast.carol, cast.owner, cast.admin) as (
        alice,
        bob,
        carol,
        owner,
        admin,
    ):
        call_id, _ = await start(alice, cast.room)
        await join(bob, call_id)

        # Carol is a plain member watching from outside the call.
        assert (await carol.nack("call.end", {"callId": call_id})).code == "not_in_call"
        seen = of_type(await alice.sync(), "call.state")
        assert [f["payload"]["state"] for f in seen] == ["ringing", "active"]

        # The owner and an admin may end a call they are not in.
        for moderator in (owner, admin):
            ended = await moderator.request("call.end", {"callId": call_id})
            assert ended == {"callId": call_id, "state": "ended"}
            for peer in (alice, bob, carol):
                state = await call_state(peer, call_id, "ended")
                assert state["reason"] == "ended_by_user"
            call_id, _ = await start(alice, cast.room)


# --- timeouts --------------------------------------------------------------------------------


async def test_a_call_nobody_answers_ends_with_no_answer(
    services: Services, pool: asyncpg.Pool
) -> None:
    async with custom_cast(services, call_ring_timeout_seconds=0.5) as cast:
        async with peers(cast.url, cast.alice, cast.bob) as (alice, bob):
            call_id, alice_pid = await start(alice, cast.room)
            await call_state(bob, call_id, "ringing")
            for peer in (alice, bob):
                ended = await call_state(peer, call_id, "ended", timeout=10.0)
                assert ended["reason"] == "no_answer" and ended["participants"] == []
            # Too late to pick up; the room is free for a new call.
            assert (await bob.nack("call.join", {"callId": call_id})).code == "call_not_found"
            again, _ = await start(bob, cast.room)
            assert again != call_id

    row = await session_row(pool, call_id)
    assert row["state"] == "ended" and row["end_reason"] == "no_answer"
    assert row["active_at"] is None and row["ended_at"] is not None
    rows = await participant_rows(pool, call_id)
    assert rows[alice_pid]["left_at"] is not None
    assert rows[alice_pid]["leave_reason"] == "no_answer"


def disconnected(user_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda call: any(
        p["userId"] == user_id and not p["connected"] for p in call["participants"]
    )


async def test_a_dropped_participant_rejoins_within_the_grace_in_the_same_place(
    services: Services, pool: asyncpg.Pool
) -> None:
    # The grace is generous so a slow machine cannot turn "within" into "after"; nothing
    # here waits for it.
    async with custom_cast(services, call_grace_seconds=10.0) as cast:
        async with peers(cast.url, cast.alice, cast.bob, cast.carol) as (alice, bob, carol):
            call_id, alice_pid = await start(alice, cast.room)
            bob_pid = await join(bob, call_id)

            await bob.close()  # the socket drops; bob never said call.leave
            for peer in (alice, carol):
                state = await call_state(peer, call_id, "active", where=disconnected(cast.bob.id))
                assert state["reason"] == "participant_disconnected"
                assert people(state) == {
                    alice_pid: (cast.alice.id, True),
                    bob_pid: (cast.bob.id, False),
                }
            # Nobody can signal a participant who is not there.
            to_bob = {"callId": call_id, "to": bob_pid, "sdp": SDP}
            assert (await alice.nack("rtc.offer", to_bob)).code == "participant_not_found"

            async with peers(cast.url, cast.bob) as (bob_again,):
                rejoined = await bob_again.request("call.join", {"callId": call_id})
                assert rejoined["participantId"] == bob_pid
                assert people(rejoined["call"]) == {
                    alice_pid: (cast.alice.id, True),
                    bob_pid: (cast.bob.id, True),
                }
                back = await call_state(
                    carol, call_id, "active", where=lambda c: people(c) == people(rejoined["call"])
                )
                assert "reason" not in back

                # Signals reach bob's new connection under his old id.
                await alice.request("rtc.offer", to_bob)
                offer = await bob_again.wait_type("rtc.offer", callId=call_id)
                assert offer["payload"]["from"] == alice_pid
                await bob_again.request(
                    "rtc.answer", {"callId": call_id, "to": alice_pid, "sdp": SDP}
                )
                answer = await alice.wait_type("rtc.answer", callId=call_id)
                assert answer["payload"]["from"] == bob_pid

    rows = await participant_rows(pool, call_id)
    assert set(rows) == {alice_pid, bob_pid}  # no second row for bob


async def test_a_participant_who_does_not_come_back_is_removed_after_the_grace(
    services: Services, pool: asyncpg.Pool
) -> None:
    async with custom_cast(services, call_grace_seconds=1.0) as cast:
        async with peers(cast.url, cast.alice, cast.bob, cast.carol) as (alice, bob, carol):
            call_id, alice_pid = await start(alice, cast.room)
            bob_pid = await join(bob, call_id)
            await bob.close()
            await call_state(alice, call_id, "active", where=disconnected(cast.bob.id))

            gone = await call_state(
                carol, call_id, "active", where=lambda c: len(c["participants"]) == 1, timeout=10
            )
            assert people(gone) == {alice_pid: (cast.alice.id, True)}
            await call_state(alice, call_id, "active", where=lambda c: len(c["participants"]) == 1)
            rows = await participant_rows(pool, call_id)
            assert rows[bob_pid]["left_at"] is not None
            assert rows[bob_pid]["leave_reason"] == "connection_lost"
            assert rows[alice_pid]["left_at"] is None

            await alice.request("call.leave", {"callId": call_id})
            ended = await call_state(carol, call_id, "ended")
            assert ended["reason"] == "last_participant_left"

    row = await session_row(pool, call_id)
    assert row["state"] == "ended" and row["end_reason"] == "last_participant_left"


async def test_a_participant_back_after_the_grace_joins_as_someone_new(
    services: Services,
) -> None:
    async with custom_cast(services, call_grace_seconds=1.0) as cast:
        async with peers(cast.url, cast.alice, cast.bob) as (alice, bob):
            call_id, _ = await start(alice, cast.room)
            bob_pid = await join(bob, call_id)
            await bob.close()
            await call_state(
                alice, call_id, "active", where=lambda c: len(c["participants"]) == 1, timeout=10
            )
            async with peers(cast.url, cast.bob) as (bob_again,):
                assert await join(bob_again, call_id) != bob_pid


async def test_when_everybody_drops_the_call_ends_as_connection_lost(
    services: Services, pool: asyncpg.Pool
) -> None:
    async with custom_cast(services, call_grace_seconds=1.0) as cast:
        async with peers(cast.url, cast.alice, cast.bob, cast.carol) as (alice, bob, carol):
            call_id, _ = await start(alice, cast.room)
            await join(bob, call_id)
            await alice.close()
            await bob.close()
            ended = await call_state(carol, call_id, "ended", timeout=10)
            assert ended["reason"] == "connection_lost" and ended["participants"] == []

    row = await session_row(pool, call_id)
    assert row["state"] == "ended" and row["end_reason"] == "connection_lost"
    for participant in (await participant_rows(pool, call_id)).values():
        assert participant["leave_reason"] == "connection_lost"


# --- limits, modes and telemetry -------------------------------------------------------------


async def test_rapid_signaling_is_rate_limited_per_connection(services: Services) -> None:
    async with custom_cast(services, signaling_burst=3, signaling_per_second=0.5) as cast:
        async with peers(cast.url, cast.alice, cast.bob) as (alice, bob):
            call_id, alice_pid = await start(alice, cast.room)
            bob_pid = await join(bob, call_id)
            ice = {"callId": call_id, "to": bob_pid, "candidate": CANDIDATE}
            for _ in range(3):
                assert await alice.request("rtc.ice", ice) is None
            limited = await alice.nack("rtc.ice", ice)
            assert limited.code == "rate_limited" and limited.retryable
            # One token comes back every two seconds.
            assert limited.retry_after_ms is not None and 0 < limited.retry_after_ms <= 2000

            # Exactly the allowed three got through; bob's own budget is untouched.
            assert len(of_type(await bob.sync(), "rtc.ice")) == 3
            await bob.request("rtc.ice", {"callId": call_id, "to": alice_pid, "candidate": None})
            await alice.wait_type("rtc.ice", callId=call_id)


async def test_auto_mode_moves_to_the_sfu_past_the_threshold(services: Services) -> None:
    async with custom_cast(services, sfu_threshold=2) as cast:
        async with peers(cast.url, cast.alice, cast.bob, cast.carol) as (alice, bob, carol):
            started = await alice.request("call.start", {"roomId": cast.room, "mode": "auto"})
            call_id = started["call"]["callId"]
            assert started["call"]["mode"] == "p2p"
            second = await bob.request("call.join", {"callId": call_id})
            assert second["call"]["mode"] == "p2p"

            third = await carol.request("call.join", {"callId": call_id})
            assert third["call"]["mode"] == "sfu"
            for peer in (alice, bob, carol):
                upgraded = await call_state(
                    peer, call_id, "active", where=lambda c: len(c["participants"]) == 3
                )
                assert upgraded["mode"] == "sfu" and upgraded["reason"] == "upgraded_to_sfu"
            # Unaddressed media now goes to the SFU, which is not running here.
            refused = await alice.nack("rtc.offer", {"callId": call_id, "sdp": SDP})
            assert refused.code == "sfu_unavailable" and refused.retryable


async def test_an_explicit_p2p_call_never_moves_to_the_sfu(services: Services) -> None:
    async with custom_cast(services, sfu_threshold=2) as cast:
        async with peers(cast.url, cast.alice, cast.bob, cast.carol, cast.admin) as (
            alice,
            bob,
            carol,
            admin,
        ):
            call_id, _ = await start(alice, cast.room, mode="p2p")
            for peer in (bob, carol, admin):
                joined = await peer.request("call.join", {"callId": call_id})
                assert joined["call"]["mode"] == "p2p"
            await call_state(alice, call_id, "active", where=lambda c: len(c["participants"]) == 4)
            states = of_type(await alice.sync(), "call.state")
            assert all(f["payload"]["mode"] == "p2p" for f in states)
            assert all("reason" not in f["payload"] for f in states)
            refused = await alice.nack("rtc.offer", {"callId": call_id, "sdp": SDP})
            assert refused.code == "invalid_call_transition"


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} missing from /metrics"
    return float(found.group(1))


async def test_setup_telemetry_feeds_the_success_and_ice_failure_ratios(cast: Cast) -> None:
    async with three_way(cast, cast.owner) as (call, [owner]):
        reports = [
            (call.alice, {"outcome": "connected", "setupMs": 350, "candidateType": "host"}),
            (call.bob, {"outcome": "connected", "setupMs": 900, "candidateType": "relay"}),
            (call.carol, {"outcome": "failed", "iceFailed": True}),
        ]
        for peer, report in reports:
            assert await peer.request("call.telemetry", {"callId": call.call_id, **report}) is None

        # Someone outside the call cannot skew the numbers.
        outsider = {"callId": call.call_id, "outcome": "failed", "iceFailed": True}
        assert (await owner.nack("call.telemetry", outsider)).code == "not_in_call"

    text = await (await cast.http.get("/metrics")).text()
    assert metric(text, "boltorezka_call_setup_success_ratio") == pytest.approx(2 / 3, abs=1e-3)
    assert metric(text, "boltorezka_ice_failure_rate") == pytest.approx(1 / 3, abs=1e-3)
    assert metric(text, 'boltorezka_call_setups_total{outcome="connected"}') == 2
    assert metric(text, 'boltorezka_call_setups_total{outcome="failed"}') == 1

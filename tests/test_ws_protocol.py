"""The realtime endpoint at the protocol, session and connection level.

Most tests drive the server through the scripted ``BoltorezkaClient``. A bare ``websockets``
connection (:class:`RawSocket`) is used only for what that client deliberately cannot do:
stay unauthenticated, send malformed or binary frames, or stop reading. It is also needed to
*observe* nacks for raw frames: the scripted client drops every answer whose ``requestId`` is
not one of its own requests in flight, and a nack with a null ``requestId`` always is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient
from boltorezka_client.client import NackError
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from boltorezka.realtime import protocol
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import (
    PASSWORD,
    Account,
    add_member,
    connected,
    create_room,
    register,
    wait_closed,
)

VECTORS = Path(__file__).resolve().parent.parent / "protocol" / "vectors"
NACK_FIELDS = {"code", "message", "retryable", "retryAfterMs"}
ROOM = "0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71"
# Prometheus samples keyed by (sample name, labels).
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers -----------------------------------------------------------------------------


def ws_url_of(c: TestClient[Any, Any]) -> str:
    return f"ws://127.0.0.1:{c.server.port}/v1/ws"


@asynccontextmanager
async def custom_app(services: Services, **overrides: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """An app with changed settings sharing the test's pool, closed on exit."""
    c = await make_client(services, **overrides)
    try:
        yield c
    finally:
        await c.close()


async def login(client: TestClient[Any, Any], account: Account) -> Account:
    """A second device session for ``account``."""
    response = await client.post(
        "/v1/auth/login", json={"username": account.username, "password": PASSWORD}
    )
    assert response.status == 200, await response.text()
    data = await response.json()
    return Account(
        id=data["user"]["id"],
        username=account.username,
        access_token=data["accessToken"],
        refresh_token=data["refreshToken"],
        session_id=data["sessionId"],
    )


async def refresh(client: TestClient[Any, Any], account: Account) -> dict[str, Any]:
    response = await client.post("/v1/auth/refresh", json={"refreshToken": account.refresh_token})
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def scrape(client: TestClient[Any, Any]) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def wait_metric(
    client: TestClient[Any, Any],
    name: str,
    predicate: Callable[[float], bool],
    timeout: float = 3.0,
    **labels: str,
) -> float:
    """Poll /metrics (bounded) until sample ``name{labels}`` satisfies ``predicate``."""
    last: float | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = sample(await scrape(client), name, **labels)
                if last is not None and predicate(last):
                    return last
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{name}{labels} stayed at {last}") from None


class RawSocket:
    """A bare WebSocket speaking the envelope by hand (see the module docstring)."""

    def __init__(self, ws: ClientConnection, greeting: str) -> None:
        self.ws = ws
        self.greeting = greeting  # the first frame, exactly as received
        first = json.loads(greeting)
        assert first["type"] == "server.capabilities", first
        self.capabilities: dict[str, Any] = first["payload"]
        self._ids = 0

    @classmethod
    async def open(cls, url: str, token: str | None = None) -> RawSocket:
        ws = await websockets.connect(url, ping_interval=None, max_size=None, close_timeout=1)
        greeting = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(greeting, str), "the first frame must be a text frame"
        raw = cls(ws, greeting)
        if token is not None:
            answer = await raw.request("auth", {"token": token})
            assert answer["type"] == "ack", answer
        return raw

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return frame

    async def answer(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next ack or nack, skipping unsolicited events (presence and the like)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] in ("ack", "nack"):
                    return frame

    async def request(self, msg_type: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a well-formed request and return its answer frame, checking the requestId."""
        self._ids += 1
        request_id = f"raw-{self._ids}"
        frame: dict[str, Any] = {"v": 1, "type": msg_type, "requestId": request_id}
        if payload is not None:
            frame["payload"] = payload
        await self.ws.send(json.dumps(frame))
        answer = await self.answer()
        assert answer["requestId"] == request_id, answer
        return answer

    async def ping_ok(self) -> None:
        answer = await self.request("ping", {"ts": 1})
        assert answer["type"] == "ack", answer

    async def close(self) -> None:
        await self.ws.close()


@asynccontextmanager
async def raw_socket(url: str, token: str | None = None) -> AsyncIterator[RawSocket]:
    raw = await RawSocket.open(url, token)
    try:
        yield raw
    finally:
        await raw.close()


def problem_of(exc: InvalidStatus) -> dict[str, Any]:
    body = exc.response.body
    assert body, exc.response
    assert exc.response.headers["Content-Type"].startswith("application/problem+json")
    data: dict[str, Any] = json.loads(body)
    return data


# --- 1. capabilities ---------------------------------------------------------------------


async def test_capabilities_is_the_first_frame_before_auth(services: Services) -> None:
    async with custom_app(
        services, ws_max_frame_bytes=4096, ws_heartbeat_seconds=7.5, node_id="node-cap"
    ) as app:
        url = ws_url_of(app)
        # Nothing is sent: the capabilities arrive on their own, before any auth.
        async with raw_socket(url) as first, raw_socket(url) as second:
            caps = first.capabilities
            assert caps["protocolVersions"] == [1]
            assert caps["limits"]["maxFrameBytes"] == 4096
            assert caps["heartbeatIntervalMs"] == 7500
            assert caps["nodeId"] == "node-cap"
            assert isinstance(caps["sessionId"], str) and caps["sessionId"]
            assert caps["resumeWindowSeconds"] == services.settings.refresh_token_ttl
            assert caps["resumeWindowSeconds"] > 0
            assert second.capabilities["sessionId"] != caps["sessionId"]
            # The frame as sent decodes as a valid server message.
            assert isinstance(protocol.decode_server(first.greeting), protocol.ServerCapabilities)
            # The unauthenticated socket is alive: ping works before auth.
            await first.ping_ok()


# --- 2. invalid vectors ------------------------------------------------------------------


async def test_every_invalid_vector_is_nacked_and_the_connection_survives(
    client: TestClient[Any, Any], services: Services
) -> None:
    vectors = json.loads((VECTORS / "invalid.json").read_text(encoding="utf-8"))
    cases = vectors["cases"]
    assert cases
    user = await register(client)
    async with (
        custom_app(
            services, ws_max_frame_bytes=vectors["maxFrameBytes"], ws_violation_budget=10_000
        ) as app,
        raw_socket(ws_url_of(app), user.access_token) as raw,
    ):
        assert raw.capabilities["limits"]["maxFrameBytes"] == vectors["maxFrameBytes"]
        failures: list[str] = []
        for case in cases:
            await raw.ws.send(case["frame"])
            answer = await raw.answer()
            got = (answer["type"], answer.get("requestId"), answer["payload"].get("code"))
            want = ("nack", case["requestId"], case["code"])
            if got != want:
                failures.append(f"{case['name']}: got {got}, want {want}")
            elif set(answer["payload"]) != NACK_FIELDS:
                failures.append(f"{case['name']}: nack fields {sorted(answer['payload'])}")
            # The connection stays open and usable after every bad frame.
            await raw.ping_ok()
        assert failures == []


# --- 3. violation budget -----------------------------------------------------------------


async def test_fourth_bad_frame_over_a_budget_of_three_closes_with_4008(
    client: TestClient[Any, Any], services: Services
) -> None:
    user = await register(client)
    async with (
        custom_app(services, ws_violation_budget=3) as app,
        raw_socket(ws_url_of(app), user.access_token) as raw,
    ):
        for _ in range(3):
            await raw.ws.send("{not json")
            answer = await raw.answer()
            assert answer["type"] == "nack"
            assert answer["payload"]["code"] == "malformed_json"
            await raw.ping_ok()  # valid frames do not count
        await raw.ws.send("{not json")
        assert await wait_closed(raw.ws) == 4008
        assert raw.ws.close_reason == "policy_violation_budget"


async def test_binary_frames_are_nacked_and_count_as_violations(
    client: TestClient[Any, Any], services: Services
) -> None:
    user = await register(client)
    async with (
        custom_app(services, ws_violation_budget=3) as app,
        raw_socket(ws_url_of(app), user.access_token) as raw,
    ):
        for frame in (b"\x00\x01", b'{"v":1,"type":"ping","requestId":"b"}'):
            await raw.ws.send(frame)
            answer = await raw.answer()
            assert answer["type"] == "nack"
            assert answer["requestId"] is None
            assert answer["payload"]["code"] == "binary_not_supported"
            assert set(answer["payload"]) == NACK_FIELDS
            await raw.ping_ok()
        await raw.ws.send("[]")  # third violation: still within the budget
        assert (await raw.answer())["payload"]["code"] == "malformed_json"
        await raw.ping_ok()
        await raw.ws.send(b"\xff")  # a binary frame is the fourth violation
        assert await wait_closed(raw.ws) == 4008


# --- 4. authentication -------------------------------------------------------------------


async def test_requests_before_auth_are_nacked_unauthenticated(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    async with raw_socket(ws_url) as raw:
        for msg_type, payload in [
            ("room.join", {"roomId": ROOM}),
            ("chat.send", {"roomId": ROOM, "clientMsgId": "c1", "body": "hi"}),
            ("presence.set", {"status": "away"}),
            ("auth.refresh", {"token": "x"}),
        ]:
            answer = await raw.request(msg_type, payload)
            assert answer["type"] == "nack", answer
            assert answer["payload"]["code"] == "unauthenticated", answer
        await raw.ping_ok()  # still open; ping is allowed before auth
        user = await register(client)
        assert (await raw.request("auth", {"token": user.access_token}))["type"] == "ack"
        # Now the same request reaches the room service, which knows no such room.
        joined = await raw.request("room.join", {"roomId": ROOM})
        assert joined["type"] == "nack"
        assert joined["payload"]["code"] == "room_not_found"


async def test_bad_token_is_nacked_then_closed_with_4001(ws_url: str) -> None:
    c = BoltorezkaClient(ws_url, "not-a-jwt", reconnect=False)
    try:
        with pytest.raises(NackError) as caught:
            await c.connect()
        assert caught.value.code == "invalid_token"
        assert await wait_closed(c.websocket) == 4001
    finally:
        await c.close()
    assert c.close_codes == [4001]


async def test_no_auth_in_time_closes_with_4002(services: Services) -> None:
    async with (
        custom_app(services, ws_auth_timeout_seconds=0.5) as app,
        raw_socket(ws_url_of(app)) as raw,
    ):
        assert await wait_closed(raw.ws, timeout=5) == 4002
        assert raw.ws.close_reason == "auth_timeout"


async def test_second_auth_is_nacked_and_the_session_survives(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    user = await register(client)
    async with connected(ws_url, user.access_token) as c:
        with pytest.raises(NackError) as caught:
            await c.request("auth", {"token": user.access_token})
        assert caught.value.code == "validation_failed"
        ack = await c.request("ping", {"ts": 5})
        assert ack["ts"] == 5
        assert c.close_codes == []


# --- 5. origin ---------------------------------------------------------------------------


async def test_origin_without_allowed_list_admits_same_origin_only(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    user = await register(client)
    with pytest.raises(InvalidStatus) as caught:
        await BoltorezkaClient(
            ws_url, user.access_token, reconnect=False, origin="https://evil.example"
        ).connect()
    assert caught.value.response.status_code == 403
    problem = problem_of(caught.value)
    assert problem["code"] == "origin_rejected"
    assert problem["status"] == 403

    same = f"http://127.0.0.1:{client.server.port}"
    async with connected(ws_url, user.access_token, origin=same) as c:
        assert (await c.request("ping"))["serverTime"] > 0
    async with connected(ws_url, user.access_token) as c:  # no Origin header: not a browser
        assert (await c.request("ping"))["serverTime"] > 0


async def test_configured_allowed_origins(client: TestClient[Any, Any], services: Services) -> None:
    user = await register(client)
    async with custom_app(services, ws_allowed_origins=("https://app.example",)) as app:
        url = ws_url_of(app)
        async with connected(url, user.access_token, origin="https://app.example") as c:
            assert c.auth_result["userId"] == user.id
        for foreign in ("https://evil.example", "http://app.example", "https://app.example.evil"):
            with pytest.raises(InvalidStatus) as caught:
                await BoltorezkaClient(
                    url, user.access_token, reconnect=False, origin=foreign
                ).connect()
            assert caught.value.response.status_code == 403, foreign
            assert problem_of(caught.value)["code"] == "origin_rejected"

    async with custom_app(services, ws_allowed_origins=("*",)) as app:
        async with connected(ws_url_of(app), user.access_token, origin="https://evil.example") as c:
            assert c.auth_result["userId"] == user.id


# --- 6. connect rate limit ---------------------------------------------------------------


async def test_connect_rate_limit_answers_429_with_retry_after(
    client: TestClient[Any, Any], services: Services
) -> None:
    user = await register(client)
    async with custom_app(services, ws_connect_rate_per_minute=2) as app:
        url = ws_url_of(app)
        async with connected(url, user.access_token), connected(url, user.access_token):
            with pytest.raises(InvalidStatus) as caught:
                await BoltorezkaClient(url, user.access_token, reconnect=False).connect()
        response = caught.value.response
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        problem = problem_of(caught.value)
        assert problem["code"] == "rate_limited"
        assert problem["retryAfterMs"] > 0


# --- 7. token expiry and refresh ---------------------------------------------------------


async def test_auth_refresh_keeps_the_socket_open_past_the_old_expiry(
    services: Services,
) -> None:
    async with custom_app(services, access_token_ttl=3, auth_expiry_warning_seconds=2) as app:
        user = await register(app)
        async with connected(ws_url_of(app), user.access_token) as c:
            old_expiry = c.auth_result["expiresAt"]
            warning = await c.wait_type("auth.expiring", timeout=5)
            assert warning["payload"]["expiresAt"] == old_expiry

            # The warning comes at most 2 s before expiry, so a token issued now lives longer.
            pair = await refresh(app, user)
            assert pair["sessionId"] == user.session_id
            result = await c.refresh_token(pair["accessToken"])
            assert result["expiresAt"] == pair["accessTokenExpiresAt"]
            assert result["expiresAt"] > old_expiry

            await asyncio.sleep(max(0.0, old_expiry + 0.3 - time.time()))
            assert time.time() > old_expiry
            ack = await c.request("ping", {"ts": 7})
            assert ack["ts"] == 7
            assert c.close_codes == []
            assert not [e for e in c.events if e["type"] == "error"]


async def test_auth_refresh_with_another_sessions_token_is_token_mismatch(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    alice = await register(client)
    alice_phone = await login(client, alice)
    bob = await register(client)
    async with connected(ws_url, alice.access_token) as c:
        for other in (alice_phone, bob):
            with pytest.raises(NackError) as caught:
                await c.refresh_token(other.access_token)
            assert caught.value.code == "token_mismatch"
        # Nothing changed: the socket still belongs to alice's first session and works.
        assert c.auth_result["sessionId"] == alice.session_id
        await c.request("ping")
        assert c.close_codes == []


async def test_without_refresh_the_socket_closes_with_4003(services: Services) -> None:
    async with custom_app(services, access_token_ttl=3, auth_expiry_warning_seconds=2) as app:
        user = await register(app)
        c = BoltorezkaClient(ws_url_of(app), user.access_token, reconnect=False)
        try:
            await c.connect()
            await c.wait_type("auth.expiring", timeout=5)
            assert await wait_closed(c.websocket, timeout=6) == 4003
            assert c.websocket.close_reason == "session_expired"
        finally:
            await c.close()
        assert c.close_codes == [4003]
        # Every event was received before the close, so the error frame preceded it.
        errors = [e["payload"]["code"] for e in c.events if e["type"] == "error"]
        assert errors == ["session_expired"]


# --- 8. revocation -----------------------------------------------------------------------


async def test_logout_closes_only_that_sessions_sockets(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    laptop = await register(client)
    phone = await login(client, laptop)
    async with (
        connected(ws_url, laptop.access_token) as tab1,
        connected(ws_url, laptop.access_token) as tab2,
        connected(ws_url, phone.access_token) as other,
    ):
        response = await client.post("/v1/auth/logout", headers=laptop.headers)
        assert response.status == 204
        assert await wait_closed(tab1.websocket) == 4004
        assert await wait_closed(tab2.websocket) == 4004
        assert tab1.websocket.close_reason == "session_revoked"
        await other.request("ping")
        assert other.close_codes == []


async def test_revoking_a_session_closes_its_sockets(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    laptop = await register(client)
    phone = await login(client, laptop)
    async with (
        connected(ws_url, laptop.access_token) as mine,
        connected(ws_url, phone.access_token) as revoked,
    ):
        response = await client.delete(
            f"/v1/auth/sessions/{phone.session_id}", headers=laptop.headers
        )
        assert response.status == 204
        assert await wait_closed(revoked.websocket) == 4004
        await mine.request("ping")
        assert mine.close_codes == []


# --- 9. heartbeat ------------------------------------------------------------------------


async def test_peer_that_stops_reading_is_detected_and_cleaned_up(
    client: TestClient[Any, Any], services: Services
) -> None:
    alice = await register(client)
    bob = await register(client)
    room = await create_room(client, alice)
    await add_member(client, room, alice, bob)
    async with custom_app(services, ws_heartbeat_seconds=0.5) as app:
        url = ws_url_of(app)
        async with connected(url, bob.access_token) as watcher:
            raw = await RawSocket.open(url, alice.access_token)
            try:
                await watcher.wait_type("presence.changed", userId=alice.id, status="online")
                await wait_metric(app, "boltorezka_ws_connections", lambda v: v == 2)
                # Alice's transport stops reading: the server's pings are never answered.
                raw.ws.transport.pause_reading()
                offline = await watcher.wait_type(
                    "presence.changed", timeout=3, userId=alice.id, status="offline"
                )
                assert offline["payload"]["status"] == "offline"
                await wait_metric(app, "boltorezka_ws_connections", lambda v: v == 1)
                await watcher.request("ping")  # the healthy peer is unaffected
            finally:
                raw.ws.transport.abort()
                async with asyncio.timeout(5):
                    await raw.ws.wait_closed()


# --- 10. metrics -------------------------------------------------------------------------


async def test_metrics_reflect_realtime_traffic(client: TestClient[Any, Any], ws_url: str) -> None:
    alice = await register(client)
    bob = await register(client)
    room = await create_room(client, alice, kind="public")
    response = await client.post(f"/v1/rooms/{room}/join", headers=bob.headers)
    assert response.status == 200
    async with connected(ws_url, alice.access_token) as a, connected(ws_url, bob.access_token) as b:
        await a.join(room)
        await b.join(room)
        await a.send_message(room, "metrics please")
        await b.wait_type("chat.message", roomId=room)
        await a.send_raw("{oops")
        await a.request("ping")  # answered after the nack: the nack was counted

        samples = await scrape(client)
        assert sample(samples, "boltorezka_ws_connections") == 2
        assert (sample(samples, "boltorezka_ws_messages_in_total", type="chat.send") or 0) >= 1
        assert (sample(samples, "boltorezka_ws_nacks_total", code="malformed_json") or 0) >= 1
        assert (sample(samples, "boltorezka_ws_room_joins_total") or 0) >= 2
        await wait_metric(client, "boltorezka_ws_delivery_latency_seconds_count", lambda v: v > 0)


# --- 11. ping ----------------------------------------------------------------------------


async def test_ping_is_acked_with_echoed_ts_and_server_time(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    user = await register(client)
    async with connected(ws_url, user.access_token) as c:
        result = await c.request("ping", {"ts": 1234567890123})
        assert result["ts"] == 1234567890123
        assert isinstance(result["serverTime"], int)
        assert result["serverTime"] > 10**12  # Unix milliseconds, not seconds
        bare = await c.request("ping")
        assert bare.get("ts") is None
        assert isinstance(bare["serverTime"], int)


async def test_json_nested_thousands_deep_is_nacked_and_the_socket_stays_usable(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    user = await register(client)
    async with raw_socket(ws_url, user.access_token) as raw:
        nested = "[" * 5000 + "]" * 5000
        for kind in ("chat.send", "ping"):
            await raw.ws.send(f'{{"v":1,"type":"{kind}","requestId":"deep","payload":{nested}}}')
            answer = await raw.answer()
            assert answer["type"] == "nack", answer
            assert answer["payload"]["code"] == "malformed_json"
            await raw.ping_ok()

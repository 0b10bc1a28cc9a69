"""Auth hardening: refresh retries within a grace window, capped access-token lifetimes, and
the periodic re-check that closes sockets whose session ended behind the service's back."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestClient
from asyncpg.connection import LoggedQuery
from boltorezka_client import BoltorezkaClient
from boltorezka_client.client import NackError

from boltorezka.api.keys import GATEWAY
from boltorezka.auth.tokens import ALGORITHM, AUDIENCE, ISSUER
from boltorezka.config import ConfigError, Settings, SigningKey
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.session_audit import SessionAudit
from boltorezka.runtime import Services
from tests.conftest import TEST_SECRET, make_client
from tests.helpers import (
    PASSWORD,
    Account,
    app_of,
    connected,
    expect_problem,
    register,
    wait_closed,
)

Client = TestClient[Any, Any]
# The audit interval of the apps in the socket tests: short, so a close comes quickly.
RECHECK = 0.1


def ws_url_of(c: Client) -> str:
    return f"ws://127.0.0.1:{c.server.port}/v1/ws"


@asynccontextmanager
async def node(services: Services, **overrides: Any) -> AsyncIterator[Client]:
    """Another node on the same database (and, unless overridden, the same key)."""
    c = await make_client(services, **overrides)
    try:
        yield c
    finally:
        await c.close()


async def refresh(client: Client, refresh_token: str) -> Any:
    return await client.post("/v1/auth/refresh", json={"refreshToken": refresh_token})


async def refreshed(client: Client, refresh_token: str) -> dict[str, Any]:
    response = await refresh(client, refresh_token)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def me_status(client: Client, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    data: dict[str, Any] = await response.json(content_type=None)
    return response.status, data


async def login(client: Client, account: Account) -> Account:
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


def pair_of(data: dict[str, Any]) -> tuple[str, str, int]:
    return data["accessToken"], data["refreshToken"], data["accessTokenExpiresAt"]


async def age_rotations(pool: asyncpg.Pool, session_id: str, seconds: int) -> None:
    """Move the session's rotations into the past, as if the client came back that late."""
    await pool.execute(
        "UPDATE refresh_tokens SET rotated_at = rotated_at - make_interval(secs => $2) "
        "WHERE session_id = $1 AND rotated_at IS NOT NULL",
        uuid.UUID(session_id),
        float(seconds),
    )


async def assert_revoked(client: Client, *pairs: dict[str, Any]) -> None:
    for data in pairs:
        status, body = await me_status(client, data["accessToken"])
        assert (status, body["code"]) == (401, "session_revoked")
        assert (await refresh(client, data["refreshToken"])).status == 401


# --- 1. refresh retries within the grace window ------------------------------------------


async def test_parallel_refreshes_with_one_token_all_get_the_same_working_pair(
    client: Client, pool: asyncpg.Pool
) -> None:
    alice = await register(client)
    responses = await asyncio.gather(*(refresh(client, alice.refresh_token) for _ in range(3)))
    assert [r.status for r in responses] == [200, 200, 200]
    bodies = [await r.json() for r in responses]
    assert len({pair_of(b) for b in bodies}) == 1, "every racer gets the one new pair"
    fresh = bodies[0]
    assert fresh["refreshToken"] != alice.refresh_token
    assert fresh["sessionId"] == alice.session_id

    assert (await me_status(client, fresh["accessToken"]))[0] == 200
    # The new refresh token is the session's current one: it rotates normally.
    after = await refreshed(client, fresh["refreshToken"])
    assert (await me_status(client, after["accessToken"]))[0] == 200
    # Only hashes are stored, the successor's included.
    rows = await pool.fetch(
        "SELECT token_hash, successor_hash FROM refresh_tokens WHERE session_id = $1",
        uuid.UUID(alice.session_id),
    )
    stored = {bytes(v) for row in rows for v in row.values() if v is not None}
    issued = (alice.refresh_token, fresh["refreshToken"], after["refreshToken"])
    assert stored == {hashlib.sha256(t.encode()).digest() for t in issued}
    for token in issued:
        assert not any(token.encode() in value for value in stored)


async def test_a_sequential_retry_within_the_window_gets_the_same_pair(client: Client) -> None:
    alice = await register(client)
    first = await refreshed(client, alice.refresh_token)
    retry = await refreshed(client, alice.refresh_token)
    assert pair_of(retry) == pair_of(first)
    assert retry["expiresIn"] == first["expiresIn"]
    assert (await me_status(client, retry["accessToken"]))[0] == 200


async def test_a_retry_on_another_node_gets_the_same_pair(
    client: Client, services: Services
) -> None:
    """Nothing is cached in process: the other node recomputes the pair from the token."""
    alice = await register(client)
    first = await refreshed(client, alice.refresh_token)
    async with node(services) as other:
        retry = await refreshed(other, alice.refresh_token)
        assert pair_of(retry) == pair_of(first)
        assert (await me_status(other, retry["accessToken"]))[0] == 200


async def test_a_retry_after_a_key_rotation_gets_the_same_refresh_token(
    client: Client, services: Services
) -> None:
    alice = await register(client)
    first = await refreshed(client, alice.refresh_token)
    new_key = SigningKey.from_secret("the-new-signing-secret-after-rotation-0123456789")
    async with node(services, signing_keys=(new_key, services.settings.active_key)) as rotated:
        retry = await refreshed(rotated, alice.refresh_token)
        assert retry["refreshToken"] == first["refreshToken"]
        assert retry["accessTokenExpiresAt"] == first["accessTokenExpiresAt"]
        assert (await me_status(rotated, retry["accessToken"]))[0] == 200
        assert (await refreshed(rotated, retry["refreshToken"]))["sessionId"] == alice.session_id


async def test_a_replay_after_the_window_revokes_the_session_and_closes_its_sockets(
    client: Client, pool: asyncpg.Pool, services: Services
) -> None:
    alice = await register(client)
    first = await refreshed(client, alice.refresh_token)
    async with connected(ws_url_of(client), first["accessToken"]) as socket:
        grace = services.settings.refresh_reuse_grace_seconds
        await age_rotations(pool, alice.session_id, grace + 1)
        await expect_problem(
            await refresh(client, alice.refresh_token), 401, "refresh_token_reused"
        )
        assert await wait_closed(socket.websocket) == CloseCode.SESSION_REVOKED
    await assert_revoked(client, first)


async def test_a_token_two_rotations_back_revokes_even_within_the_window(client: Client) -> None:
    alice = await register(client)
    first = await refreshed(client, alice.refresh_token)
    second = await refreshed(client, first["refreshToken"])
    await expect_problem(await refresh(client, alice.refresh_token), 401, "refresh_token_reused")
    await assert_revoked(client, first, second)


async def test_a_retry_does_not_bring_back_a_session_that_ended(client: Client) -> None:
    alice = await register(client)
    first = await refreshed(client, alice.refresh_token)
    logout = await client.post(
        "/v1/auth/logout", headers={"Authorization": f"Bearer {first['accessToken']}"}
    )
    assert logout.status == 204
    await expect_problem(await refresh(client, alice.refresh_token), 401, "invalid_refresh_token")


async def test_the_window_is_capped_at_half_the_access_token_lifetime(
    client: Client, pool: asyncpg.Pool, services: Services
) -> None:
    """A replayed access token is as old as the retry is late; it must not be near expiry."""
    async with node(services, access_token_ttl=30, refresh_reuse_grace_seconds=300) as short:
        alice = await register(short)
        await refreshed(short, alice.refresh_token)
        await age_rotations(pool, alice.session_id, 16)
        await expect_problem(await refresh(short, alice.refresh_token), 401, "refresh_token_reused")


# --- 2. access-token lifetime --------------------------------------------------------------


def forged(account: Account, *, iat: int, exp: int, nbf: int | None = None) -> str:
    """An access token signed with the server's real key, with the lifetime given."""
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": account.id,
        "sid": account.session_id,
        "iat": iat,
        "nbf": iat if nbf is None else nbf,
        "exp": exp,
        "jti": uuid.uuid4().hex[:16],
        "typ": "access",
    }
    key = SigningKey.from_secret(TEST_SECRET)
    return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


TEN_YEARS = 10 * 365 * 86400


def bad_lifetimes(now: int, ttl: int) -> dict[str, dict[str, int]]:
    return {
        "exp ten years out": {"iat": now, "exp": now + TEN_YEARS},
        "exp just past the ttl and leeway": {"iat": now, "exp": now + ttl + 6},
        "iat long ago, exp still ahead": {"iat": now - TEN_YEARS, "exp": now + 60, "nbf": now},
        "iat in the future": {"iat": now + 3600, "exp": now + 3600 + ttl, "nbf": now},
    }


async def test_rest_rejects_access_tokens_living_longer_than_the_ttl(
    client: Client, services: Services
) -> None:
    alice = await register(client)
    now, ttl = int(time.time()), services.settings.access_token_ttl
    # The control: the longest lifetime this server issues is accepted.
    assert (await me_status(client, forged(alice, iat=now, exp=now + ttl)))[0] == 200
    for case, claims in bad_lifetimes(now, ttl).items():
        status, body = await me_status(client, forged(alice, **claims))
        assert (status, body["code"]) == (401, "invalid_token"), case


async def test_websocket_auth_rejects_access_tokens_living_longer_than_the_ttl(
    client: Client, services: Services
) -> None:
    alice = await register(client)
    now, ttl = int(time.time()), services.settings.access_token_ttl
    url = ws_url_of(client)
    for case, claims in bad_lifetimes(now, ttl).items():
        c = BoltorezkaClient(url, forged(alice, **claims), reconnect=False)
        try:
            with pytest.raises(NackError) as caught:
                await c.connect()
            assert caught.value.code == "invalid_token", case
            assert await wait_closed(c.websocket) == CloseCode.AUTH_FAILED, case
        finally:
            await c.close()
    # auth.refresh on an open socket is held to the same rule.
    async with connected(url, alice.access_token) as c:
        with pytest.raises(NackError) as caught:
            await c.refresh_token(forged(alice, iat=now, exp=now + TEN_YEARS))
        assert caught.value.code == "invalid_token"
        assert (await c.refresh_token(forged(alice, iat=now, exp=now + ttl)))["expiresAt"] == (
            now + ttl
        )


# --- 3. periodic re-check of open sockets ------------------------------------------------


async def test_sockets_of_a_deleted_user_close_and_others_stay_open(
    services: Services, pool: asyncpg.Pool
) -> None:
    async with node(services, ws_session_recheck_seconds=RECHECK) as app:
        alice, bob = await register(app), await register(app)
        url = ws_url_of(app)
        async with connected(url, alice.access_token) as a, connected(url, bob.access_token) as b:
            await pool.execute("DELETE FROM users WHERE id = $1", uuid.UUID(alice.id))
            assert await wait_closed(a.websocket) == CloseCode.SESSION_REVOKED
            assert a.websocket.close_reason == "session_revoked"
            # The pass that closed alice's socket also checked bob's.
            assert (await b.request("ping", {"ts": 1}))["ts"] == 1
            assert b.close_codes == []


async def test_a_session_revoked_in_sql_closes_only_its_sockets(
    services: Services, pool: asyncpg.Pool
) -> None:
    async with node(services, ws_session_recheck_seconds=RECHECK) as app:
        laptop = await register(app)
        phone = await login(app, laptop)
        url = ws_url_of(app)
        async with (
            connected(url, phone.access_token) as p1,
            connected(url, phone.access_token) as p2,
            connected(url, laptop.access_token) as mine,
        ):
            await pool.execute(
                "UPDATE device_sessions SET revoked_at = now(), revoked_reason = 'admin' "
                "WHERE id = $1",
                uuid.UUID(phone.session_id),
            )
            assert await wait_closed(p1.websocket) == CloseCode.SESSION_REVOKED
            assert await wait_closed(p2.websocket) == CloseCode.SESSION_REVOKED
            await mine.request("ping")
            assert mine.close_codes == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE users SET disabled_at = now() WHERE id = $1",
        "UPDATE device_sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1",
    ],
    ids=["user disabled", "session expired"],
)
async def test_sockets_close_when_the_user_is_disabled_or_the_session_expired(
    services: Services, pool: asyncpg.Pool, statement: str
) -> None:
    async with node(services, ws_session_recheck_seconds=RECHECK) as app:
        alice = await register(app)
        async with connected(ws_url_of(app), alice.access_token) as a:
            await pool.execute(statement, uuid.UUID(alice.id))
            assert await wait_closed(a.websocket) == CloseCode.SESSION_REVOKED
        # The token is refused too, so the client cannot simply reconnect.
        status, body = await me_status(app, alice.access_token)
        assert (status, body["code"]) == (401, "session_revoked")


async def test_one_pass_costs_one_query_however_many_sockets(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    accounts = [await register(client) for _ in range(3)]
    hub = app_of(client)[GATEWAY].hub
    url = ws_url_of(client)
    async with (
        connected(url, accounts[0].access_token) as c0,
        connected(url, accounts[0].access_token),
        connected(url, accounts[1].access_token),
        connected(url, accounts[2].access_token) as c2,
    ):
        assert len(hub.by_session) == 3
        queries: list[str] = []
        async with pool.acquire() as conn:
            audit = SessionAudit(hub, conn, interval_seconds=0)
            # The first pass on a connection also lets asyncpg introspect the uuid[] type,
            # once for the connection's life; count from the steady state.
            assert await audit.check() == 0

            def log(record: LoggedQuery) -> None:
                queries.append(record.query)

            conn.add_query_logger(log)
            try:
                assert await audit.check() == 0
                await asyncio.sleep(0)  # asyncpg hands records to loggers with call_soon
                assert len(queries) == 1, queries

                await pool.execute(
                    "DELETE FROM device_sessions WHERE id = ANY($1::uuid[])",
                    [uuid.UUID(accounts[0].session_id), uuid.UUID(accounts[2].session_id)],
                )
                queries.clear()
                assert await audit.check() == 3
                await asyncio.sleep(0)
                assert len(queries) == 1, queries
            finally:
                conn.remove_query_logger(log)
        assert await wait_closed(c0.websocket) == CloseCode.SESSION_REVOKED
        assert await wait_closed(c2.websocket) == CloseCode.SESSION_REVOKED


# --- settings ------------------------------------------------------------------------------


def test_the_grace_and_recheck_settings_parse_with_bounds() -> None:
    defaults = Settings.from_env({})
    assert defaults.refresh_reuse_grace_seconds == 20
    assert defaults.ws_session_recheck_seconds == 30.0
    parsed = Settings.from_env(
        {
            "BOLTOREZKA_REFRESH_REUSE_GRACE_SECONDS": "0",
            "BOLTOREZKA_WS_SESSION_RECHECK_SECONDS": "2.5",
        }
    )
    assert (parsed.refresh_reuse_grace_seconds, parsed.ws_session_recheck_seconds) == (0, 2.5)
    for name, value in [
        ("REFRESH_REUSE_GRACE_SECONDS", "301"),
        ("REFRESH_REUSE_GRACE_SECONDS", "1.5"),
        ("WS_SESSION_RECHECK_SECONDS", "-1"),
    ]:
        with pytest.raises(ConfigError, match=f"BOLTOREZKA_{name}"):
            Settings.from_env({f"BOLTOREZKA_{name}": value})

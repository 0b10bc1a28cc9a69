"""Accounts, tokens and device sessions as a client sees them through /v1/auth and /v1/me."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
from aiohttp.test_utils import TestClient

from boltorezka.auth.tokens import ALGORITHM, AUDIENCE, ISSUER
from boltorezka.config import SigningKey
from boltorezka.runtime import Services
from tests.conftest import TEST_SECRET, make_client
from tests.helpers import PASSWORD, Account, audit_rows, expect_problem, register

Client = TestClient[Any, Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(
    client: Client, username: str, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/auth/login", json={"username": username, "password": password, **extra}
    )
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def refresh(client: Client, refresh_token: str) -> Any:
    return await client.post("/v1/auth/refresh", json={"refreshToken": refresh_token})


async def me_status(client: Client, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.get("/v1/me", headers=bearer(token))
    data: dict[str, Any] = await response.json(content_type=None)
    return response.status, data


def claims_for(account: Account, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": account.id,
        "sid": account.session_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    claims.update(overrides)
    return claims


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def b64url_decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- Registration and login ---------------------------------------------------------------


async def test_register_returns_a_token_pair_and_the_user(client: Client) -> None:
    response = await client.post(
        "/v1/auth/register",
        json={"username": "alice", "password": PASSWORD, "displayName": "Alice A."},
    )
    assert response.status == 201, await response.text()
    data = await response.json()
    assert data["tokenType"] == "Bearer"
    assert data["accessToken"] and data["refreshToken"]
    assert data["accessToken"] != data["refreshToken"]
    assert data["expiresIn"] > 0
    uuid.UUID(data["sessionId"])
    assert data["user"]["username"] == "alice"
    assert data["user"]["displayName"] == "Alice A."
    assert "password" not in json.dumps(data).lower()

    status, me = await me_status(client, data["accessToken"])
    assert status == 200
    assert me["id"] == data["user"]["id"]
    assert me["username"] == "alice"


async def test_duplicate_username_is_refused_regardless_of_case(client: Client) -> None:
    await register(client, "Alice")
    for name in ("Alice", "alice", "ALICE"):
        response = await client.post(
            "/v1/auth/register", json={"username": name, "password": PASSWORD}
        )
        await expect_problem(response, 409, "username_taken")


async def test_login_succeeds_and_its_access_token_works(client: Client) -> None:
    alice = await register(client, "alice")
    data = await login(client, "ALICE", deviceName="laptop")
    assert data["user"]["id"] == alice.id
    assert data["sessionId"] != alice.session_id, "each login is a new device session"
    status, me = await me_status(client, data["accessToken"])
    assert status == 200
    assert me["username"] == "alice"


async def test_wrong_password_and_unknown_user_get_the_same_answer(client: Client) -> None:
    await register(client, "alice")
    wrong = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": "not the password"}
    )
    wrong_body = await expect_problem(wrong, 401, "invalid_credentials")
    unknown = await client.post("/v1/auth/login", json={"username": "nobody", "password": PASSWORD})
    unknown_body = await expect_problem(unknown, 401, "invalid_credentials")
    # Nothing in the answer tells an attacker whether the account exists.
    assert wrong_body["detail"] == unknown_body["detail"]
    assert wrong_body["title"] == unknown_body["title"]


async def test_password_is_stored_only_as_an_argon2id_hash(
    client: Client, pool: asyncpg.Pool
) -> None:
    alice = await register(client, "alice")
    stored = await pool.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(alice.id)
    )
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


# --- Refresh-token rotation and reuse detection -------------------------------------------


@asynccontextmanager
async def without_reuse_grace(services: Services) -> AsyncIterator[Client]:
    """A node on which a rotated refresh token is spent at once (no retry grace window;
    the window itself is tested in tests/test_auth_hardening.py)."""
    strict = await make_client(services, refresh_reuse_grace_seconds=0)
    try:
        yield strict
    finally:
        await strict.close()


async def test_refresh_rotates_the_refresh_token(client: Client, services: Services) -> None:
    alice = await register(client)
    response = await refresh(client, alice.refresh_token)
    assert response.status == 200, await response.text()
    rotated = await response.json()
    assert rotated["refreshToken"] != alice.refresh_token
    assert rotated["sessionId"] == alice.session_id, "refresh stays on the same device session"
    assert (await me_status(client, rotated["accessToken"]))[0] == 200
    # The old refresh token is spent.
    async with without_reuse_grace(services) as strict:
        again = await refresh(strict, alice.refresh_token)
        assert again.status == 401


async def test_reused_refresh_token_revokes_the_device_session(client: Client) -> None:
    alice = await register(client)
    first = await (await refresh(client, alice.refresh_token)).json()
    second = await (await refresh(client, first["refreshToken"])).json()
    assert (await me_status(client, second["accessToken"]))[0] == 200

    # Someone presents a token that was already rotated: it was stolen or copied.
    reused = await refresh(client, alice.refresh_token)
    await expect_problem(reused, 401, "refresh_token_reused")

    status, body = await me_status(client, second["accessToken"])
    assert status == 401
    assert body["code"] == "session_revoked"
    newest = await refresh(client, second["refreshToken"])
    assert newest.status == 401
    assert (await newest.json(content_type=None))["code"] in {
        "invalid_refresh_token",
        "refresh_token_reused",
    }


async def test_reuse_revokes_only_that_device_session(client: Client, services: Services) -> None:
    alice = await register(client, "alice")
    other_device = await login(client, "alice")
    await refresh(client, alice.refresh_token)
    async with without_reuse_grace(services) as strict:
        reused = await refresh(strict, alice.refresh_token)
        await expect_problem(reused, 401, "refresh_token_reused")
    assert (await me_status(client, other_device["accessToken"]))[0] == 200


async def test_concurrent_refresh_with_one_token_succeeds_once_without_grace(
    services: Services,
) -> None:
    async with without_reuse_grace(services) as strict:
        alice = await register(strict)
        responses = await asyncio.gather(*(refresh(strict, alice.refresh_token) for _ in range(2)))
        statuses = sorted(r.status for r in responses)
        assert statuses == [200, 401], statuses
        loser = next(r for r in responses if r.status == 401)
        assert (await loser.json(content_type=None))["code"] in {
            "refresh_token_reused",
            "invalid_refresh_token",
        }


async def test_unknown_refresh_token_is_rejected(client: Client) -> None:
    response = await refresh(client, "brt_" + "A" * 43)
    await expect_problem(response, 401, "invalid_refresh_token")


async def test_refresh_works_while_the_client_still_sends_its_expired_token(
    client: Client, services: Services
) -> None:
    """Clients often attach the Authorization header to every call, refresh included."""
    alice = await register(client)
    expired, _ = services.auth.codec.issue(
        uuid.UUID(alice.id), uuid.UUID(alice.session_id), now=int(time.time()) - 3600
    )
    response = await client.post(
        "/v1/auth/refresh", json={"refreshToken": alice.refresh_token}, headers=bearer(expired)
    )
    assert response.status == 200, await response.text()
    fresh = await response.json()
    assert (await me_status(client, fresh["accessToken"]))[0] == 200
    # Where identity is needed, the expired token is still refused for what it is.
    status, body = await me_status(client, expired)
    assert (status, body["code"]) == (401, "token_expired")


async def test_login_after_logout_works_with_the_revoked_token_still_attached(
    client: Client,
) -> None:
    alice = await register(client, "alice")
    assert (await client.post("/v1/auth/logout", headers=alice.headers)).status == 204
    response = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers=alice.headers,
    )
    assert response.status == 200, await response.text()


# --- Access-token verification ------------------------------------------------------------


async def test_expired_access_token_is_rejected_as_expired(
    client: Client, services: Services
) -> None:
    alice = await register(client)
    long_ago = int(time.time()) - 10 * services.settings.access_token_ttl
    token, expires_at = services.auth.codec.issue(
        uuid.UUID(alice.id), uuid.UUID(alice.session_id), now=long_ago
    )
    assert expires_at < int(time.time())
    status, body = await me_status(client, token)
    assert status == 401
    assert body["code"] == "token_expired"


async def test_token_signed_with_another_secret_is_rejected(client: Client) -> None:
    alice = await register(client)
    real_kid = SigningKey.from_secret(TEST_SECRET).kid
    forged = jwt.encode(
        claims_for(alice),
        "an-attacker-secret-that-is-long-enough-012345",
        algorithm=ALGORITHM,
        headers={"kid": real_kid},
    )
    status, body = await me_status(client, forged)
    assert (status, body["code"]) == (401, "invalid_token")


async def test_tampered_payload_is_rejected(client: Client) -> None:
    alice = await register(client)
    mallory = await register(client)
    header, payload, signature = mallory.access_token.split(".")
    claims = b64url_decode(payload)
    claims["sub"], claims["sid"] = alice.id, alice.session_id
    tampered = ".".join([header, b64url_json(claims), signature])
    status, body = await me_status(client, tampered)
    assert (status, body["code"]) == (401, "invalid_token")
    # The untouched token still works, so the rejection is about the tampering.
    assert (await me_status(client, mallory.access_token))[0] == 200


async def test_alg_none_token_is_rejected(client: Client) -> None:
    alice = await register(client)
    kid = b64url_decode(alice.access_token.split(".")[0])["kid"]
    for alg in ("none", "None", "NONE"):
        unsigned = ".".join(
            [
                b64url_json({"alg": alg, "typ": "JWT", "kid": kid}),
                b64url_json(claims_for(alice)),
                "",
            ]
        )
        status, body = await me_status(client, unsigned)
        assert (status, body["code"]) == (401, "invalid_token"), alg


async def test_token_with_an_unknown_kid_is_rejected(client: Client) -> None:
    alice = await register(client)
    token = jwt.encode(
        claims_for(alice), TEST_SECRET, algorithm=ALGORITHM, headers={"kid": "not-a-key-id"}
    )
    status, body = await me_status(client, token)
    assert (status, body["code"]) == (401, "invalid_token")


async def test_garbage_and_refresh_tokens_are_not_access_tokens(client: Client) -> None:
    alice = await register(client)
    for token in ("garbage", "a.b.c", alice.refresh_token):
        status, body = await me_status(client, token)
        assert (status, body["code"]) == (401, "invalid_token"), token
    # A correctly signed token of another type is not an access token either.
    typed = jwt.encode(
        claims_for(alice, typ="refresh"),
        TEST_SECRET,
        algorithm=ALGORITHM,
        headers={"kid": SigningKey.from_secret(TEST_SECRET).kid},
    )
    status, body = await me_status(client, typed)
    assert (status, body["code"]) == (401, "invalid_token")


async def test_key_rotation_accepts_previous_key_and_old_nodes_reject_new_key(
    client: Client, services: Services
) -> None:
    old_key = services.settings.active_key
    new_key = SigningKey.from_secret("the-new-signing-secret-after-rotation-0123456789")
    rotated = await make_client(services, signing_keys=(new_key, old_key))
    try:
        alice = await register(client, "alice")  # token signed with the old key
        assert (await me_status(rotated, alice.access_token))[0] == 200

        fresh = await login(rotated, "alice")
        assert b64url_decode(fresh["accessToken"].split(".")[0])["kid"] == new_key.kid
        assert (await me_status(rotated, fresh["accessToken"]))[0] == 200
        # A node that only knows the old key cannot verify the new one.
        status, body = await me_status(client, fresh["accessToken"])
        assert (status, body["code"]) == (401, "invalid_token")
    finally:
        await rotated.close()


# --- Logout and device sessions -----------------------------------------------------------


async def test_logout_ends_the_access_and_refresh_tokens(client: Client) -> None:
    alice = await register(client, "alice")
    other_device = await login(client, "alice")
    response = await client.post("/v1/auth/logout", headers=alice.headers)
    assert response.status == 204
    status, body = await me_status(client, alice.access_token)
    assert (status, body["code"]) == (401, "session_revoked")
    assert (await refresh(client, alice.refresh_token)).status == 401
    # Logging out one device leaves the others signed in.
    assert (await me_status(client, other_device["accessToken"]))[0] == 200


async def test_list_sessions_marks_the_callers_own(client: Client) -> None:
    alice = await register(client, "alice")
    phone = await login(client, "alice", deviceName="phone")
    response = await client.get("/v1/auth/sessions", headers=alice.headers)
    assert response.status == 200
    sessions = {s["id"]: s for s in (await response.json())["sessions"]}
    assert set(sessions) == {alice.session_id, phone["sessionId"]}
    assert sessions[alice.session_id]["current"] is True
    assert sessions[phone["sessionId"]]["current"] is False
    assert sessions[phone["sessionId"]]["deviceName"] == "phone"

    from_phone = await client.get("/v1/auth/sessions", headers=bearer(phone["accessToken"]))
    current = [s["id"] for s in (await from_phone.json())["sessions"] if s["current"]]
    assert current == [phone["sessionId"]]


async def test_revoking_another_of_my_sessions_signs_that_device_out(client: Client) -> None:
    alice = await register(client, "alice")
    phone = await login(client, "alice", deviceName="phone")
    response = await client.delete(f"/v1/auth/sessions/{phone['sessionId']}", headers=alice.headers)
    assert response.status == 204
    status, body = await me_status(client, phone["accessToken"])
    assert (status, body["code"]) == (401, "session_revoked")
    assert (await refresh(client, phone["refreshToken"])).status == 401
    # The caller's own session is untouched and the revoked one is gone from the list.
    assert (await me_status(client, alice.access_token))[0] == 200
    listed = await (await client.get("/v1/auth/sessions", headers=alice.headers)).json()
    assert [s["id"] for s in listed["sessions"]] == [alice.session_id]
    # Revoking again is harmless.
    again = await client.delete(f"/v1/auth/sessions/{phone['sessionId']}", headers=alice.headers)
    assert again.status == 204


async def test_revoking_someone_elses_session_is_not_found(client: Client) -> None:
    alice = await register(client)
    bob = await register(client)
    response = await client.delete(f"/v1/auth/sessions/{bob.session_id}", headers=alice.headers)
    await expect_problem(response, 404, "session_not_found")
    assert (await me_status(client, bob.access_token))[0] == 200
    missing = await client.delete(f"/v1/auth/sessions/{uuid.uuid4()}", headers=alice.headers)
    await expect_problem(missing, 404, "session_not_found")


# --- Abuse protection and audit -----------------------------------------------------------


async def test_login_is_rate_limited(client: Client, services: Services) -> None:
    await register(client, "alice")
    limited = await make_client(services, login_rate_per_minute=3)
    try:
        for _ in range(3):
            response = await limited.post(
                "/v1/auth/login", json={"username": "alice", "password": "wrong password"}
            )
            await expect_problem(response, 401, "invalid_credentials")
        # Even the right password is not checked once the budget is spent.
        response = await limited.post(
            "/v1/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        body = await expect_problem(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
        assert isinstance(body["retryAfterMs"], int) and body["retryAfterMs"] > 0
        assert body["retryable"] is True
    finally:
        await limited.close()


async def test_logins_are_audited_with_the_request_id(client: Client, pool: asyncpg.Pool) -> None:
    alice = await register(client, "alice")
    ok = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Request-ID": "req-login-ok"},
    )
    assert ok.status == 200
    session_id = (await ok.json())["sessionId"]
    bad = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": "wrong password"},
        headers={"X-Request-ID": "req-login-bad"},
    )
    assert bad.status == 401
    unknown = await client.post(
        "/v1/auth/login",
        json={"username": "ghost", "password": "wrong password"},
        headers={"X-Request-ID": "req-login-ghost"},
    )
    assert unknown.status == 401

    rows = {row["request_id"]: row for row in await audit_rows(pool, "auth.login")}
    assert set(rows) == {"req-login-ok", "req-login-bad", "req-login-ghost"}
    assert rows["req-login-ok"]["outcome"] == "ok"
    assert str(rows["req-login-ok"]["actor_id"]) == alice.id
    assert rows["req-login-ok"]["target_id"] == session_id
    assert rows["req-login-bad"]["outcome"] == "failed"
    assert str(rows["req-login-bad"]["actor_id"]) == alice.id
    assert rows["req-login-ghost"]["outcome"] == "failed"
    assert rows["req-login-ghost"]["actor_id"] is None
    for row in rows.values():
        assert PASSWORD not in json.dumps(row["details"])
        assert "wrong password" not in json.dumps(row["details"])


async def test_session_revocations_are_audited_with_the_request_id(
    client: Client, pool: asyncpg.Pool
) -> None:
    alice = await register(client, "alice")
    phone = await login(client, "alice")
    tablet = await login(client, "alice")

    revoked = await client.delete(
        f"/v1/auth/sessions/{phone['sessionId']}",
        headers={**alice.headers, "X-Request-ID": "req-revoke"},
    )
    assert revoked.status == 204
    out = await client.post(
        "/v1/auth/logout", headers={**alice.headers, "X-Request-ID": "req-logout"}
    )
    assert out.status == 204
    # Two rotations old: past the retry grace window's reach.
    first = await (await refresh(client, tablet["refreshToken"])).json()
    assert (await refresh(client, first["refreshToken"])).status == 200
    reused = await client.post(
        "/v1/auth/refresh",
        json={"refreshToken": tablet["refreshToken"]},
        headers={"X-Request-ID": "req-reuse"},
    )
    assert reused.status == 401

    rows = {row["request_id"]: row for row in await audit_rows(pool, "session.revoke")}
    assert set(rows) == {"req-revoke", "req-logout", "req-reuse"}
    assert rows["req-revoke"]["target_id"] == phone["sessionId"]
    assert rows["req-revoke"]["details"]["reason"] == "revoked"
    assert rows["req-logout"]["target_id"] == alice.session_id
    assert rows["req-logout"]["details"]["reason"] == "logout"
    assert rows["req-reuse"]["target_id"] == tablet["sessionId"]
    assert rows["req-reuse"]["details"]["reason"] == "refresh_token_reused"
    for row in rows.values():
        assert str(row["actor_id"]) == alice.id
        assert row["target_type"] == "session"

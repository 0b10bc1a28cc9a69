"""GET /v1/users?username=: finding someone by the name they signed up with."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from boltorezka.runtime import Services
from tests.helpers import expect_problem, register

Client = TestClient[Any, Any]


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def test_lookup_answers_the_public_profile_in_any_case(client: Client) -> None:
    alice = await register(client, _name("Alice."))
    bob = await register(client)
    for asked in (alice.username, alice.username.upper(), alice.username.lower()):
        found = await client.get("/v1/users", params={"username": asked}, headers=bob.headers)
        assert found.status == 200, await found.text()
        by_id = await client.get(f"/v1/users/{alice.id}", headers=bob.headers)
        # The same struct the id route answers: nothing more (no password hash), nothing less.
        assert await found.json() == await by_id.json()
    profile = await found.json()
    assert profile["id"] == alice.id and profile["username"] == alice.username


async def test_only_the_exact_name_matches(client: Client) -> None:
    alice = await register(client, _name("alice_"))
    bob = await register(client)
    # Neither a prefix nor a LIKE wildcard finds anyone: the name is compared, not matched.
    for asked in (alice.username[:-1], alice.username.replace("_", "."), f"{alice.username}_"):
        missing = await client.get("/v1/users", params={"username": asked}, headers=bob.headers)
        await expect_problem(missing, 404, "user_not_found")
    nobody = await client.get(
        "/v1/users", params={"username": "nobody-by-this"}, headers=bob.headers
    )
    await expect_problem(nobody, 404, "user_not_found")


async def test_a_disabled_account_is_not_found(client: Client, services: Services) -> None:
    carol = await register(client)
    bob = await register(client)
    await services.pool.execute(
        "UPDATE users SET disabled_at = now() WHERE id = $1", uuid.UUID(carol.id)
    )
    gone = await client.get("/v1/users", params={"username": carol.username}, headers=bob.headers)
    await expect_problem(gone, 404, "user_not_found")


async def test_lookup_needs_a_signed_in_caller(client: Client) -> None:
    alice = await register(client)
    anonymous = await client.get("/v1/users", params={"username": alice.username})
    await expect_problem(anonymous, 401, "unauthenticated")
    forged = await client.get(
        "/v1/users",
        params={"username": alice.username},
        headers={"Authorization": "Bearer not-a-jwt"},
    )
    await expect_problem(forged, 401, "invalid_token")


async def test_a_name_no_account_could_have_is_a_422_naming_the_parameter(
    client: Client,
) -> None:
    bob = await register(client)
    missing = await client.get("/v1/users", headers=bob.headers)
    body = await expect_problem(missing, 422, "validation_failed")
    assert body["field"] == "username"
    for asked in ("", "ab", "has space", "x" * 33, "al\x00ce", "ALICE\n", "émile"):
        response = await client.get("/v1/users", params={"username": asked}, headers=bob.headers)
        body = await expect_problem(response, 422, "validation_failed")
        assert body["field"] == "username", (asked, body)

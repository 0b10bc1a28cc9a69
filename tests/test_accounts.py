"""Account self-service: changing the password, deleting the account, password resets.

What a user relies on: a changed password signs every other device out at once (their
sockets too) and the old one stops working; a deleted account cannot sign in, its messages
stay and read as a deleted user's, and a room owner is told to hand their rooms over first;
an operator's reset token works once, for a limited time, and signs every device out.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from boltorezka.config import ConfigError, Settings
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import (
    PASSWORD,
    Account,
    add_member,
    api_call,
    audit_rows,
    cli_env,
    connected,
    create_room,
    post_message,
    register,
    run_cli,
    url_with_search_path,
    wait_closed,
)

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

Client = TestClient[Any, Any]
NEW_PASSWORD = "a much better passphrase"


async def login(client: Client, account: Account, password: str = PASSWORD) -> tuple[int, Any]:
    return await api_call(
        client,
        "POST",
        "/v1/auth/login",
        None,
        {"username": account.username, "password": password},
    )


async def another_device(client: Client, account: Account) -> Account:
    status, data = await login(client, account)
    assert status == 200, data
    return Account(
        data["user"]["id"],
        account.username,
        data["accessToken"],
        data["refreshToken"],
        data["sessionId"],
    )


async def make_admin(client: Client, pool: asyncpg.Pool) -> Account:
    admin = await register(client)
    await pool.execute("UPDATE users SET server_role = 'admin' WHERE id = $1", uuid.UUID(admin.id))
    return admin


async def issue_reset(client: Client, admin: Account, user: Account) -> str:
    status, data = await api_call(
        client, "POST", f"/v1/admin/users/{user.id}/password-reset", admin
    )
    assert status == 201, data
    assert data["userId"] == user.id
    token: str = data["token"]
    return token


async def reset(client: Client, token: str, password: str = NEW_PASSWORD) -> tuple[int, Any]:
    return await api_call(
        client,
        "POST",
        "/v1/auth/password-reset",
        None,
        {"token": token, "newPassword": password},
    )


# --- changing the password --------------------------------------------------------------


async def test_changing_the_password_signs_out_every_other_device(
    client: Client, ws_url: str, pool: asyncpg.Pool
) -> None:
    laptop = await register(client)
    phone = await another_device(client, laptop)
    tablet = await another_device(client, laptop)
    async with (
        connected(ws_url, laptop.access_token) as here,
        connected(ws_url, phone.access_token) as there,
    ):
        status, data = await api_call(
            client,
            "POST",
            "/v1/me/password",
            laptop,
            {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        )
        assert (status, data) == (200, {"sessionsRevoked": 2})
        assert await wait_closed(there.websocket) == 4004
        # The device that changed it stays signed in, socket and all.
        await here.request("ping")
        assert here.close_codes == []
    status, _ = await api_call(client, "GET", "/v1/me", laptop)
    assert status == 200
    for gone in (phone, tablet):
        status, data = await api_call(client, "GET", "/v1/me", gone)
        assert (status, data["code"]) == (401, "session_revoked")
        status, data = await api_call(
            client, "POST", "/v1/auth/refresh", None, {"refreshToken": gone.refresh_token}
        )
        assert status == 401, data
    status, data = await login(client, laptop)
    assert (status, data["code"]) == (401, "invalid_credentials")
    status, _ = await login(client, laptop, NEW_PASSWORD)
    assert status == 200
    [row] = await audit_rows(pool, "account.password_change")
    assert row["outcome"] == "ok" and row["target_id"] == laptop.id
    assert row["details"] == {"sessionsRevoked": 2}


async def test_a_wrong_current_password_changes_nothing_and_is_rate_limited(
    services: Services,
) -> None:
    client = await make_client(services, login_rate_per_minute=3)
    try:
        alice = await register(client)
        phone = await another_device(client, alice)
        body = {"currentPassword": "not the password", "newPassword": NEW_PASSWORD}
        for _ in range(3):
            status, data = await api_call(client, "POST", "/v1/me/password", alice, body)
            assert (status, data["code"]) == (403, "wrong_password")
        status, data = await api_call(client, "POST", "/v1/me/password", alice, body)
        assert (status, data["code"]) == (429, "rate_limited")
        assert data["retryAfterMs"] > 0
        status, _ = await api_call(client, "GET", "/v1/me", phone)
        assert status == 200
        status, _ = await login(client, alice)
        assert status == 200
        rows = await audit_rows(services.pool, "account.password_change")
        assert [r["outcome"] for r in rows] == ["wrong_password"] * 3
    finally:
        await client.close()


async def test_the_new_password_follows_the_registration_rules(client: Client) -> None:
    alice = await register(client)
    status, data = await api_call(
        client,
        "POST",
        "/v1/me/password",
        alice,
        {"currentPassword": PASSWORD, "newPassword": "short"},
    )
    assert (status, data["code"], data["field"]) == (422, "validation_failed", "newPassword")
    status, data = await api_call(client, "POST", "/v1/me/password", None, {})
    assert (status, data["code"]) == (401, "unauthenticated")


# --- deleting the account ---------------------------------------------------------------


async def test_deleting_the_account_keeps_its_messages_as_a_deleted_users(
    client: Client, ws_url: str, pool: asyncpg.Pool
) -> None:
    bob = await register(client)
    alice = await register(client)
    room = await create_room(client, bob)
    await add_member(client, room, bob, alice, role="admin")
    said = await post_message(client, room, alice, "remember me")
    async with (
        connected(ws_url, alice.access_token) as hers,
        connected(ws_url, bob.access_token) as his,
    ):
        await his.join(room)
        await hers.join(room)
        status, data = await api_call(client, "DELETE", "/v1/me", alice, {"password": "nope"})
        assert (status, data["code"]) == (403, "wrong_password")
        status, _ = await api_call(client, "DELETE", "/v1/me", alice, {"password": PASSWORD})
        assert status == 204
        assert await wait_closed(hers.websocket) == 4004
        # The room hears that the member is gone.
        await his.wait_type("member.left", roomId=room, userId=alice.id, timeout=10)

    status, data = await login(client, alice)
    assert (status, data["code"]) == (401, "invalid_credentials")
    status, data = await api_call(client, "GET", "/v1/me", alice)
    assert (status, data["code"]) == (401, "session_revoked")
    # The message stays, still from the same sender id, and that id reads as deleted.
    status, page = await api_call(client, "GET", f"/v1/rooms/{room}/messages", bob)
    assert status == 200, page
    [kept] = [m for m in page["messages"] if m["id"] == said["id"]]
    assert (kept["senderId"], kept["body"]) == (alice.id, "remember me")
    status, data = await api_call(client, "GET", f"/v1/users/{alice.id}", bob)
    assert (status, data["code"]) == (404, "user_deleted")
    status, data = await api_call(client, "GET", f"/v1/rooms/{room}/members", bob)
    assert alice.id not in {m["userId"] for m in data["members"]}
    # Nothing of the profile is left, and the username is free again.
    row = await pool.fetchrow(
        "SELECT username, display_name, bio, password_hash, deleted_at FROM users WHERE id = $1",
        uuid.UUID(alice.id),
    )
    assert row is not None and row["deleted_at"] is not None
    assert row["username"].startswith("deleted-") and row["display_name"] == "Deleted user"
    assert alice.username not in row["password_hash"] and row["password_hash"] == "!"
    again = await register(client, alice.username)
    assert again.id != alice.id
    refused, audited = await audit_rows(pool, "account.delete")
    assert refused["outcome"] == "wrong_password" and audited["outcome"] == "ok"
    assert audited["details"] == {"roomsLeft": 1, "sessionsRevoked": 1}


async def test_an_owner_hands_their_rooms_over_before_deleting(client: Client) -> None:
    alice = await register(client)
    bob = await register(client)
    room = await create_room(client, alice)
    await add_member(client, room, alice, bob)
    status, data = await api_call(client, "DELETE", "/v1/me", alice, {"password": PASSWORD})
    assert (status, data["code"]) == (409, "owner_must_transfer")
    status, _ = await api_call(client, "GET", "/v1/me", alice)
    assert status == 200  # refused means untouched
    status, _ = await api_call(
        client, "POST", f"/v1/rooms/{room}/transfer", alice, {"userId": bob.id}
    )
    assert status == 200
    status, _ = await api_call(client, "DELETE", "/v1/me", alice, {"password": PASSWORD})
    assert status == 204
    status, data = await api_call(client, "GET", f"/v1/rooms/{room}/members", bob)
    assert [(m["userId"], m["role"]) for m in data["members"]] == [(bob.id, "owner")]


# --- password resets by an operator -----------------------------------------------------


async def test_a_reset_token_works_once_and_signs_every_device_out(
    client: Client, ws_url: str, pool: asyncpg.Pool
) -> None:
    admin = await make_admin(client, pool)
    alice = await register(client)
    status, data = await api_call(
        client, "POST", f"/v1/admin/users/{admin.id}/password-reset", alice
    )
    assert (status, data["code"]) == (403, "server_role_required")
    token = await issue_reset(client, admin, alice)
    # Only a hash is kept, and the audit log does not hold it either.
    stored = await pool.fetch("SELECT token_hash FROM password_reset_tokens")
    assert len(stored) == 1 and token.encode() not in stored[0]["token_hash"]
    [issued] = await audit_rows(pool, "admin.user.password_reset")
    assert issued["target_id"] == alice.id and token not in str(issued["details"])

    async with connected(ws_url, alice.access_token) as hers:
        status, _ = await reset(client, token)
        assert status == 204
        assert await wait_closed(hers.websocket) == 4004
    status, data = await api_call(client, "GET", "/v1/me", alice)
    assert (status, data["code"]) == (401, "session_revoked")
    status, _ = await login(client, alice, NEW_PASSWORD)
    assert status == 200
    status, data = await reset(client, token, "yet another passphrase")
    assert (status, data["code"]) == (401, "reset_token_used")
    status, _ = await login(client, alice, NEW_PASSWORD)
    assert status == 200
    status, data = await reset(client, "bpr_never-issued", "yet another passphrase")
    assert (status, data["code"]) == (401, "invalid_reset_token")
    outcomes = [r["outcome"] for r in await audit_rows(pool, "account.password_reset")]
    assert outcomes == ["ok", "used"]


async def test_a_reset_token_expires_and_a_newer_one_replaces_it(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_admin(client, pool)
    alice = await register(client)
    first = await issue_reset(client, admin, alice)
    second = await issue_reset(client, admin, alice)
    status, data = await reset(client, first)
    assert (status, data["code"]) == (401, "invalid_reset_token")
    await pool.execute("UPDATE password_reset_tokens SET expires_at = now() - interval '1 second'")
    status, data = await reset(client, second)
    assert (status, data["code"]) == (401, "reset_token_expired")
    status, _ = await login(client, alice)
    assert status == 200  # the password is as it was
    # A password changed by its owner leaves no pending token behind.
    third = await issue_reset(client, admin, alice)
    status, _ = await api_call(
        client,
        "POST",
        "/v1/me/password",
        alice,
        {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
    )
    assert status == 200
    status, data = await reset(client, third, "the thief's passphrase")
    assert (status, data["code"]) == (401, "invalid_reset_token")


async def test_a_deleted_account_cannot_be_reset_or_enabled(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_admin(client, pool)
    alice = await register(client)
    pending = await issue_reset(client, admin, alice)
    status, _ = await api_call(client, "DELETE", "/v1/me", alice, {"password": PASSWORD})
    assert status == 204
    status, data = await reset(client, pending)
    assert (status, data["code"]) == (401, "invalid_reset_token")
    status, data = await api_call(
        client, "POST", f"/v1/admin/users/{alice.id}/password-reset", admin
    )
    assert (status, data["code"]) == (409, "account_deleted")
    status, data = await api_call(client, "POST", f"/v1/admin/users/{alice.id}/enable", admin)
    assert (status, data["code"]) == (409, "account_deleted")


async def test_the_command_line_prints_a_reset_token(
    client: Client, pool: asyncpg.Pool, test_db: TestDatabase
) -> None:
    alice = await register(client)
    env = cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema), LOG_LEVEL="warning"
    )
    code, out, err = await run_cli("admin", "reset-password", alice.username.upper(), env=env)
    assert code == 0, err
    assert out.startswith(f"{alice.username.upper()}: password reset token, valid until ")
    token = out.split()[-1]
    status, _ = await reset(client, token)
    assert status == 204
    status, _ = await login(client, alice, NEW_PASSWORD)
    assert status == 200
    [issued] = await audit_rows(pool, "admin.user.password_reset")
    assert issued["actor_id"] is None and issued["details"]["via"] == "command line"
    code, out, err = await run_cli("admin", "reset-password", "nobody", env=env)
    assert (code, out) == (2, "")
    assert err.strip() == "boltorezka: user_not_found: no user is named 'nobody'"


@pytest.mark.parametrize(("value", "expected"), [(None, 3600), ("120", 120)])
def test_the_reset_lifetime_is_a_setting(value: str | None, expected: int) -> None:
    environ = {} if value is None else {"BOLTOREZKA_PASSWORD_RESET_TTL_SECONDS": value}
    assert Settings.from_env(environ).password_reset_ttl_seconds == expected


def test_a_reset_lifetime_out_of_range_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="PASSWORD_RESET_TTL_SECONDS"):
        Settings.from_env({"BOLTOREZKA_PASSWORD_RESET_TTL_SECONDS": "5"})

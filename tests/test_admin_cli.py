"""``boltorezka admin …`` against the database: the first admin, accounts, the audit log."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.helpers import PASSWORD, api_call, cli_env, register, run_cli, url_with_search_path

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

Client = TestClient[Any, Any]


def env_for(test_db: TestDatabase) -> dict[str, str]:
    return cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema), LOG_LEVEL="warning"
    )


async def test_set_role_makes_the_first_admin(
    client: Client, pool: asyncpg.Pool, test_db: TestDatabase
) -> None:
    first = await register(client, "Founder")
    status, data = await api_call(client, "GET", "/v1/admin/users", first)
    assert (status, data["code"]) == (403, "server_role_required")

    code, out, err = await run_cli("admin", "set-role", "founder", "admin", env=env_for(test_db))
    assert code == 0, err
    assert out.strip() == "Founder: server role admin"
    status, data = await api_call(client, "GET", "/v1/admin/users", first)
    assert status == 200, data
    assert [u["serverRole"] for u in data["users"]] == ["admin"]
    row = await pool.fetchrow(
        "SELECT actor_id, target_id, details FROM audit_log WHERE action = 'admin.user.role'"
    )
    assert row is not None
    assert row["actor_id"] is None and row["target_id"] == first.id
    assert row["details"] == {"from": None, "to": "admin", "via": "command line"}

    # And takes it away again.
    code, out, err = await run_cli("admin", "set-role", "Founder", "none", env=env_for(test_db))
    assert code == 0 and out.strip() == "Founder: server role none", err
    status, _ = await api_call(client, "GET", "/v1/admin/users", first)
    assert status == 403


async def test_refusals_are_one_line_and_exit_2(client: Client, test_db: TestDatabase) -> None:
    code, out, err = await run_cli("admin", "set-role", "nobody", "admin", env=env_for(test_db))
    assert (code, out) == (2, "")
    assert err.strip() == "boltorezka: user_not_found: no user is named 'nobody'"
    code, _, err = await run_cli("admin", "set-role", "nobody", "root", env=env_for(test_db))
    assert code == 2 and "invalid choice" in err
    code, _, err = await run_cli("admin", "users", "--limit", "0", env=env_for(test_db))
    assert code == 2 and "--limit" in err
    assert "Traceback" not in err


async def test_create_disable_enable_and_read_the_audit_log(
    client: Client, test_db: TestDatabase, tmp_path: Path
) -> None:
    env = env_for(test_db)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    code, out, err = await run_cli(
        "admin", "create-user", "ops.one", "--password-file", str(secret), "--role", "moderator",
        env=env,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("created ops.one (") and out.strip().endswith("server role moderator")
    login = {"username": "ops.one", "password": PASSWORD}
    assert (await client.post("/v1/auth/login", json=login)).status == 200

    code, out, err = await run_cli("admin", "disable", "ops.one", env=env)
    assert (code, out.strip()) == (0, "ops.one: disabled"), err
    refused = await client.post("/v1/auth/login", json=login)
    assert refused.status == 403 and (await refused.json())["code"] == "account_disabled"
    code, out, err = await run_cli("admin", "enable", "ops.one", env=env)
    assert (code, out.strip()) == (0, "ops.one: enabled"), err
    assert (await client.post("/v1/auth/login", json=login)).status == 200

    code, out, err = await run_cli("admin", "users", "--prefix", "OPS.", env=env)
    assert code == 0, err
    users = json.loads(out)["users"]
    assert [(u["username"], u["serverRole"], u["disabledAt"]) for u in users] == [
        ("ops.one", "moderator", None)
    ]
    code, out, err = await run_cli("admin", "audit", "--action", "admin.user.disable", env=env)
    assert code == 0, err
    page = json.loads(out)
    assert [e["targetId"] for e in page["entries"]] == [users[0]["id"]]
    assert page["entries"][0]["details"] == {"sessionsRevoked": 1, "via": "command line"}
    code, out, err = await run_cli("admin", "audit", "--since", "2999-01-01T00:00:00", env=env)
    assert (code, json.loads(out)["entries"]) == (0, []), err


async def test_delete_room_and_list_rooms(client: Client, test_db: TestDatabase) -> None:
    env = env_for(test_db)
    owner = await register(client)
    status, data = await api_call(
        client, "POST", "/v1/rooms", owner, {"name": "Doomed", "kind": "private"}
    )
    assert status == 201
    room = data["room"]["id"]
    code, out, err = await run_cli("admin", "rooms", "--prefix", "doom", env=env)
    assert code == 0 and [r["room"]["id"] for r in json.loads(out)["rooms"]] == [room], err
    code, out, err = await run_cli("admin", "delete-room", room, env=env)
    assert (code, out.strip()) == (0, f"deleted room {room}"), err
    status, _ = await api_call(client, "GET", f"/v1/rooms/{room}", owner)
    assert status == 404
    code, _, err = await run_cli("admin", "delete-room", str(uuid.uuid4()), env=env)
    assert code == 2 and "room_not_found" in err

"""The operators' REST API: disabling accounts, server roles, listings, the audit log.

Who may call which route is in tests/test_authz_matrix.py; these tests hold what each
operation does: a disabled account loses its live sockets at once and cannot sign in or
refresh, every change leaves an audit row, filters and pages return what they should.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient

from boltorezka.admin.service import COMMAND_LINE
from boltorezka.context import RequestInfo
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.runtime import Services
from boltorezka.store.users import ServerRole
from tests.helpers import (
    PASSWORD,
    Account,
    api_call,
    connected,
    create_room,
    eventually,
    expect_problem,
    register,
    wait_closed,
)
from tests.test_drain import _register
from tests.test_drain import _start as start_node

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

Client = TestClient[Any, Any]
PATIENCE = 10.0


async def make_operator(client: Client, services: Services, role: ServerRole = "admin") -> Account:
    """An account with a server role, given the way the first admin gets it (the CLI's)."""
    account = await register(client)
    await services.admin.set_role(COMMAND_LINE, uuid.UUID(account.id), role, RequestInfo())
    return account


def ws_url_of(client: Client) -> str:
    return f"ws://127.0.0.1:{client.server.port}/v1/ws"


async def login(client: Client, username: str, password: str = PASSWORD) -> Any:
    return await client.post("/v1/auth/login", json={"username": username, "password": password})


async def refresh(client: Client, token: str) -> Any:
    return await client.post("/v1/auth/refresh", json={"refreshToken": token})


async def audit_of(pool: asyncpg.Pool, action: str, actor: Account) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT actor_id, target_type, target_id, request_id, details FROM audit_log "
        "WHERE action = $1 AND actor_id = $2 ORDER BY id",
        action,
        uuid.UUID(actor.id),
    )
    return rows


async def test_disabling_closes_live_sockets_and_stops_sign_in_and_refresh(
    client: Client, services: Services
) -> None:
    admin = await make_operator(client, services)
    alice = await register(client)
    second = await (await login(client, alice.username)).json()
    # Session checks run far apart here: only the disable itself can close these in time.
    assert services.settings.ws_session_recheck_seconds >= 30
    async with (
        connected(ws_url_of(client), alice.access_token) as one,
        connected(ws_url_of(client), second["accessToken"]) as two,
    ):
        status, data = await api_call(client, "POST", f"/v1/admin/users/{alice.id}/disable", admin)
        assert status == 200, data
        assert data["disabledAt"] is not None
        assert await wait_closed(one.websocket) == CloseCode.SESSION_REVOKED
        assert await wait_closed(two.websocket) == CloseCode.SESSION_REVOKED

    await expect_problem(await login(client, alice.username), 403, "account_disabled")
    # Without the password nothing tells a guesser that the account exists but is disabled.
    await expect_problem(
        await login(client, alice.username, "wrong password!"), 401, "invalid_credentials"
    )
    await expect_problem(await refresh(client, alice.refresh_token), 403, "account_disabled")
    status, _ = await api_call(client, "GET", "/v1/me", alice)
    assert status == 401

    status, data = await api_call(client, "POST", f"/v1/admin/users/{alice.id}/enable", admin)
    assert status == 200 and data["disabledAt"] is None, data
    assert (await login(client, alice.username)).status == 200
    # Enabling restores no session: the old refresh token stays spent.
    await expect_problem(await refresh(client, alice.refresh_token), 401, "invalid_refresh_token")


async def test_revoking_a_users_sessions_closes_their_sockets(
    client: Client, services: Services
) -> None:
    admin = await make_operator(client, services)
    bob = await register(client)
    async with connected(ws_url_of(client), bob.access_token) as live:
        status, data = await api_call(client, "DELETE", f"/v1/admin/users/{bob.id}/sessions", admin)
        assert (status, data) == (200, {"revoked": 1})
        assert await wait_closed(live.websocket) == CloseCode.SESSION_REVOKED
    # The account itself still works.
    assert (await login(client, bob.username)).status == 200


async def test_operators_cannot_lock_themselves_out(client: Client, services: Services) -> None:
    admin = await make_operator(client, services)
    for method, path, body in (
        ("POST", f"/v1/admin/users/{admin.id}/disable", None),
        ("PUT", f"/v1/admin/users/{admin.id}/role", {"role": None}),
    ):
        status, data = await api_call(client, method, path, admin, body)
        assert (status, data["code"]) == (409, "own_account"), data
    status, _ = await api_call(client, "GET", "/v1/admin/users", admin)
    assert status == 200


async def test_a_role_taken_away_counts_at_once(client: Client, services: Services) -> None:
    admin = await make_operator(client, services)
    moderator = await make_operator(client, services, "moderator")
    assert (await api_call(client, "GET", "/v1/admin/audit", moderator))[0] == 200
    status, data = await api_call(
        client, "PUT", f"/v1/admin/users/{moderator.id}/role", admin, {"role": None}
    )
    assert (status, data["serverRole"]) == (200, None)
    status, data = await api_call(client, "GET", "/v1/admin/audit", moderator)
    assert (status, data["code"]) == (403, "server_role_required")


async def test_every_admin_action_leaves_an_audit_row(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    admin = await make_operator(client, services)
    owner = await register(client)
    room = await create_room(client, owner)
    created = await api_call(
        client,
        "POST",
        "/v1/admin/users",
        admin,
        {"username": "made-by-admin", "password": PASSWORD, "serverRole": "moderator"},
    )
    assert created[0] == 201 and created[1]["serverRole"] == "moderator", created
    target = created[1]["id"]
    node = services.node_control.node_id
    steps: list[tuple[str, str, Any, str, str]] = [
        ("PUT", f"/v1/admin/users/{target}/role", {"role": "admin"}, "admin.user.role", target),
        (
            "DELETE",
            f"/v1/admin/users/{target}/sessions",
            None,
            "admin.user.sessions_revoke",
            target,
        ),
        ("POST", f"/v1/admin/users/{target}/disable", None, "admin.user.disable", target),
        ("POST", f"/v1/admin/users/{target}/enable", None, "admin.user.enable", target),
        ("DELETE", f"/v1/admin/rooms/{room}", None, "admin.room.delete", room),
        ("POST", f"/v1/admin/nodes/{node}/drain", None, "admin.node.drain", node),
    ]
    for method, path, body, _, _ in steps:
        status, data = await api_call(client, method, path, admin, body)
        assert status in (200, 202, 204), (path, data)
    expected = [("admin.user.create", target), *((a, t) for *_, a, t in steps)]
    for action, target_id in expected:
        rows = await audit_of(pool, action, admin)
        assert len(rows) == 1, (action, rows)
        assert rows[0]["target_id"] == target_id, action
        assert rows[0]["request_id"], action  # traceable to the request's log lines
    role = (await audit_of(pool, "admin.user.role", admin))[0]["details"]
    assert role == {"from": "moderator", "to": "admin"}
    # The room is gone for its owner too.
    status, _ = await api_call(client, "GET", f"/v1/rooms/{room}", owner)
    assert status == 404
    # The drain reached this node (one process, the in-process bus).
    await eventually(services.node_control.stop.is_set, "the drain request arrived")


async def test_audit_filters_and_pages(
    client: Client, services: Services, pool: asyncpg.Pool
) -> None:
    moderator = await make_operator(client, services, "moderator")
    someone, other = uuid.uuid4(), uuid.uuid4()
    room = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM audit_log")
        for i in range(7):
            await conn.execute(
                "INSERT INTO audit_log (at, actor_id, action, room_id) VALUES "
                "(timestamptz '2030-01-01 00:00:00+00' + $1 * interval '1 hour', $2, $3, $4)",
                i,
                someone if i % 2 == 0 else other,
                "test.even" if i % 2 == 0 else "test.odd",
                room if i < 3 else None,
            )

    async def read(query: str) -> list[dict[str, Any]]:
        """Every page of the query, two entries at a time."""
        entries: list[dict[str, Any]] = []
        cursor = ""
        while True:
            path = f"/v1/admin/audit?limit=2&{query}" + (f"&cursor={cursor}" if cursor else "")
            status, data = await api_call(client, "GET", path, moderator)
            assert status == 200, data
            assert len(data["entries"]) <= 2
            entries.extend(data["entries"])
            if data["nextCursor"] is None:
                return entries
            cursor = data["nextCursor"]

    everything = await read("")
    hours = [int(e["at"][11:13]) for e in everything]
    assert hours == [6, 5, 4, 3, 2, 1, 0], everything  # newest first, none twice
    assert [e["action"] for e in await read(f"actorId={someone}")] == ["test.even"] * 4
    assert len(await read("action=test.odd")) == 3
    assert {e["roomId"] for e in await read(f"roomId={room}")} == {str(room)}
    assert len(await read(f"roomId={room}")) == 3
    start = 1893456000  # 2030-01-01T00:00:00Z
    window = await read(f"since={start + 2 * 3600}&until={start + 5 * 3600}")
    assert [int(e["at"][11:13]) for e in window] == [4, 3, 2]
    combined = await read(f"since={start + 2 * 3600}&actorId={someone}&action=test.even")
    assert [int(e["at"][11:13]) for e in combined] == [6, 4, 2]
    status, data = await api_call(
        client, "GET", f"/v1/admin/audit?since={start}&until={start}", moderator
    )
    assert (status, data["code"], data["field"]) == (422, "validation_failed", "since")
    status, data = await api_call(client, "GET", "/v1/admin/audit?cursor=bm9wZQ", moderator)
    assert (status, data["code"], data["field"]) == (422, "validation_failed", "cursor")


async def test_users_by_prefix_in_pages(client: Client, services: Services) -> None:
    moderator = await make_operator(client, services, "moderator")
    names = [f"Pre_fix{i}" for i in range(5)]
    for name in names:
        await register(client, name)
    await register(client, "PreXfix")  # "_" is no wildcard
    seen: list[str] = []
    cursor = ""
    while True:
        query = "prefix=pre_f&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, data = await api_call(client, "GET", f"/v1/admin/users?{query}", moderator)
        assert status == 200, data
        seen.extend(u["username"] for u in data["users"])
        if data["nextCursor"] is None:
            break
        cursor = data["nextCursor"]
    assert seen == list(reversed(names))  # newest first, each once
    status, data = await api_call(client, "GET", f"/v1/admin/users/{moderator.id}", moderator)
    assert (status, data["serverRole"], data["disabledAt"]) == (200, "moderator", None)
    assert "passwordHash" not in data


async def test_rooms_of_every_kind_are_listed(client: Client, services: Services) -> None:
    moderator = await make_operator(client, services, "moderator")
    owner = await register(client)
    private = await create_room(client, owner, "private", "Ops private")
    public = await create_room(client, owner, "public", "ops public")
    await create_room(client, owner, "public", "unrelated")
    status, data = await api_call(client, "GET", "/v1/admin/rooms?prefix=OPS", moderator)
    assert status == 200, data
    listed = [(r["room"]["id"], r["memberCount"]) for r in data["rooms"]]
    assert listed == [(public, 1), (private, 1)]


async def test_an_admin_drains_a_node_as_sigterm_would(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    """The node runs as `boltorezka serve` does in production; the drain comes over HTTP."""
    server = await start_node(test_db, tmp_path, DRAIN_PRESTOP_SECONDS="2", WS_DRAIN_SECONDS="3")
    try:
        async with aiohttp.ClientSession(server.base) as http:
            await server.wait_status(http, 200)
            operator = await _register(http, server, "operator")
            listener = await _register(http, server, "listener")
            conn = await test_db.connect()
            try:
                await conn.execute(
                    "UPDATE users SET server_role = 'admin' WHERE username = 'operator'"
                )
            finally:
                await conn.close()
            headers = {"Authorization": f"Bearer {operator}"}
            async with http.get("/v1/admin/nodes", headers=headers) as response:
                assert response.status == 200, await response.text()
                (node,) = (await response.json())["nodes"]
            assert node["current"] is True
            async with http.post("/v1/admin/nodes/elsewhere:1/drain", headers=headers) as response:
                assert response.status == 404
                assert (await response.json())["code"] == "node_not_found"
            async with BoltorezkaClient(server.ws_url, listener, reconnect=False) as connected:
                path = f"/v1/admin/nodes/{node['nodeId']}/drain"
                async with http.post(path, headers=headers) as response:
                    assert response.status == 202, await response.text()
                    assert (await response.json())["nodeId"] == node["nodeId"]
                # Not ready at once, still serving during the pre-stop delay...
                await server.wait_status(http, 503)
                assert "server.draining" not in [e["type"] for e in connected.events]
                # ...then the drain proper, as after SIGTERM.
                await connected.wait_type("server.draining", timeout=PATIENCE * 3)
                async with asyncio.timeout(PATIENCE * 3):
                    while 1012 not in connected.close_codes:
                        await asyncio.sleep(0.05)
        assert await server.exit_code() == 0
    except BaseException:
        print(server.log.read_text(errors="replace")[-5000:])
        raise
    finally:
        await server.kill()

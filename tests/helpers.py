"""Small helpers that make REST tests read like what a user does."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient
from websockets.asyncio.client import ClientConnection

_counter = itertools.count(1)
PASSWORD = "correct horse battery"


@dataclass
class Account:
    id: str
    username: str
    access_token: str
    refresh_token: str
    session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def app_of(client: TestClient[Any, Any]) -> web.Application:
    """The app a test client serves, typed (``client.app`` is Any on ``TestClient[Any, Any]``)."""
    server = client.server
    assert isinstance(server, TestServer)
    return server.app


async def register(client: TestClient[Any, Any], username: str | None = None) -> Account:
    name = username or f"user{next(_counter)}"
    response = await client.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
    assert response.status == 201, await response.text()
    data = await response.json()
    return Account(
        id=data["user"]["id"],
        username=name,
        access_token=data["accessToken"],
        refresh_token=data["refreshToken"],
        session_id=data["sessionId"],
    )


async def create_room(
    client: TestClient[Any, Any], owner: Account, kind: str = "private", name: str = "room"
) -> str:
    response = await client.post(
        "/v1/rooms", json={"name": name, "kind": kind}, headers=owner.headers
    )
    assert response.status == 201, await response.text()
    room_id: str = (await response.json())["room"]["id"]
    return room_id


async def add_member(
    client: TestClient[Any, Any], room_id: str, by: Account, user: Account, role: str = "member"
) -> None:
    response = await client.post(
        f"/v1/rooms/{room_id}/members", json={"userId": user.id, "role": role}, headers=by.headers
    )
    assert response.status == 201, await response.text()


async def post_message(
    client: TestClient[Any, Any],
    room_id: str,
    by: Account,
    body: str,
    client_msg_id: str | None = None,
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/rooms/{room_id}/messages",
        json={"clientMsgId": client_msg_id or f"c{next(_counter)}", "body": body},
        headers=by.headers,
    )
    assert response.status in (200, 201), await response.text()
    data: dict[str, Any] = await response.json()
    return data


# --- Control-plane helpers: problem JSON, subprocesses of the CLI, audit rows. ---

PROBLEM_JSON = "application/problem+json"


async def expect_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is a problem JSON with ``status`` and ``code``; return its body."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM_JSON, response.content_type
    data: dict[str, Any] = await response.json(content_type=None)
    assert data["code"] == code, data
    assert data["status"] == status, data
    assert data["type"] == f"urn:boltorezka:problem:{code}", data
    return data


def url_with_search_path(url: str, schema: str) -> str:
    """A database URL whose connections use ``schema`` (for the CLI, which takes only a URL)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def cli_env(**settings: str) -> dict[str, str]:
    """The current environment without any ``BOLTOREZKA_*`` variable, plus ``settings``.

    Keys are given without the prefix: ``cli_env(DATABASE_URL=...)``.
    """
    import os
    import uuid

    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
    # A server started by a test keeps off the user's data dir and needs no media process,
    # unless the test says otherwise.
    env["BOLTOREZKA_SFU"] = "off"
    env["BOLTOREZKA_BUS_SOCKET"] = f"/tmp/boltorezka-test-{uuid.uuid4().hex[:12]}.sock"
    env.update({f"BOLTOREZKA_{key}": value for key, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def audit_rows(pool: Any, action: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT actor_id, action, target_type, target_id, request_id, outcome, details "
        "FROM audit_log WHERE action = $1 ORDER BY id",
        action,
    )
    return [dict(row) for row in rows]


# --- Room and message tests: one call returning (status, JSON), accounts in bulk. ---


async def api_call(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    who: Account | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request as ``who`` (None: anonymous); the status and the decoded JSON (or None).

    Every error answer is checked to be problem JSON whose ``status`` matches the response.
    """
    import json

    sent = dict(who.headers) if who is not None else {}
    sent.update(headers or {})
    response = await client.request(method, path, json=body, headers=sent)
    text = await response.text()
    data: Any = json.loads(text) if text else None
    if response.status >= 400:
        assert response.content_type == "application/problem+json", (response.status, text)
        assert data["status"] == response.status and data["code"], data
    return response.status, data


def status_and_code(status: int, data: Any) -> tuple[int, str | None]:
    """(status, problem code), the code None for a success: what authorization tables compare."""
    code = data.get("code") if status >= 400 and isinstance(data, dict) else None
    return status, code


async def register_many(client: TestClient[Any, Any], count: int) -> list[Account]:
    import asyncio

    return list(await asyncio.gather(*(register(client) for _ in range(count))))


async def quick_accounts(services: Any, count: int) -> list[Account]:
    """``count`` signed-in accounts made straight in the database, with real access tokens.

    For tests about rooms and messages, not sign-up: registering pays for an argon2 hash
    (about 0.1 s of CPU each). These accounts have an unusable password and no refresh token.
    """
    accounts = []
    async with services.pool.acquire() as conn, conn.transaction():
        for _ in range(count):
            name = f"quick{next(_counter)}"
            user_id = await conn.fetchval(
                "INSERT INTO users (username, display_name, password_hash) "
                "VALUES ($1, $1, '!unusable') RETURNING id",
                name,
            )
            session_id = await conn.fetchval(
                "INSERT INTO device_sessions (user_id, device_name, expires_at) "
                "VALUES ($1, 'test', now() + interval '1 day') RETURNING id",
                user_id,
            )
            token, _ = services.auth.codec.issue(user_id, session_id)
            accounts.append(Account(str(user_id), name, token, "", str(session_id)))
    return accounts


async def wait_until_blocked_by(pool: Any, holder_pid: int, timeout: float = 10.0) -> None:
    """Return once some backend waits on a lock held by the backend ``holder_pid``."""
    import asyncio

    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            blocked = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                holder_pid,
            )
            if blocked:
                return
            await asyncio.sleep(0.01)


CLI_TIMEOUT = 60


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``python -m boltorezka ARGS`` to completion; return (exit code, stdout, stderr)."""
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "boltorezka",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def eventually(
    check: Any, what: str, *, timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Poll ``check()`` (a function, sync or async, returning a truth value) until it is
    true; fail saying ``what`` was awaited once ``timeout`` seconds have passed."""
    import asyncio
    import inspect

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def connected(url: str, token: str, **options: Any) -> AsyncIterator[BoltorezkaClient]:
    """A scripted client without auto-reconnect, so close codes stay observable."""
    client = BoltorezkaClient(url, token, reconnect=False, **options)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def wait_closed(ws: ClientConnection, timeout: float = 10.0) -> int | None:
    """Wait (bounded) until the server closes ``ws``; return the close code it sent."""
    async with asyncio.timeout(timeout):
        await ws.wait_closed()
    return ws.close_code

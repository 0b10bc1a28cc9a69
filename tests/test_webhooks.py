"""Webhooks: what a receiver gets, and that it gets each event once it answers 2xx.

A real aiohttp receiver on 127.0.0.1 stands in for the operator's service. Deliveries are
signed (the tests check the HMAC themselves), survive a receiver that refuses or fails for
a while and a server killed with rows still undelivered, are shared by two dispatchers on
one database without being sent twice, and go only to endpoints subscribed to their type.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from boltorezka.admin.service import COMMAND_LINE
from boltorezka.config import Settings
from boltorezka.context import RequestInfo
from boltorezka.runtime import Services
from boltorezka.store import calls as call_store
from boltorezka.webhooks import signing
from boltorezka.webhooks.dispatcher import Policy
from tests.conftest import make_client
from tests.helpers import (
    PASSWORD,
    add_member,
    api_call,
    cli_env,
    create_room,
    eventually,
    expect_problem,
    free_port,
    post_message,
    register,
    run_cli,
    url_with_search_path,
)
from tests.test_admin_api import make_operator
from tests.test_drain import ServerProcess
from tests.test_drain import _start as start_server

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

Client = TestClient[Any, Any]
PATIENCE = 30.0


# Short enough that a test sees several attempts; the receiver answers long before timeout.
@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(
        settings,
        webhook_poll_seconds=0.05,
        webhook_retry_base_seconds=0.05,
        webhook_retry_max_seconds=0.2,
        webhook_timeout_seconds=2.0,
    )


async def start_fast(test_db: TestDatabase, tmp_path: Path) -> ServerProcess:
    return await start_server(
        test_db,
        tmp_path,
        WEBHOOK_POLL_SECONDS="0.05",
        WEBHOOK_RETRY_BASE_SECONDS="0.05",
        WEBHOOK_RETRY_MAX_SECONDS="0.2",
        WEBHOOK_TIMEOUT_SECONDS="1",
    )


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclass
class Receiver:
    """An operator's service: records every request and answers what ``answer`` says."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    answer: Callable[[Received], int] = lambda _: 204
    # How long each answer takes: long enough that concurrent claims overlap.
    delay: float = 0.0
    runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            got = Received(request.path, dict(request.headers), await request.read(), 0)
            if self.delay:
                await asyncio.sleep(self.delay)
            got.status = self.answer(got)
            self.requests.append(got)
            return web.Response(status=got.status)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def accepted(self, path: str | None = None) -> list[dict[str, Any]]:
        """Events answered 2xx, in arrival order."""
        return [
            r.event
            for r in self.requests
            if 200 <= r.status < 300 and (path is None or r.path == path)
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


async def add_endpoint(services: Services, url: str, types: list[str]) -> str:
    created = await services.webhooks.create(COMMAND_LINE, url, types, "", RequestInfo())
    return created.secret


async def outbox(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT event_id, event_type, attempts, delivered_at, failed_at FROM webhook_outbox "
        "ORDER BY id"
    )
    return rows


async def all_delivered(pool: asyncpg.Pool, count: int) -> bool:
    rows = await outbox(pool)
    return len(rows) == count and all(r["delivered_at"] is not None for r in rows)


def parse_signature(value: str) -> tuple[int, str]:
    parts = dict(part.split("=", 1) for part in value.split(","))
    return int(parts["t"]), parts["v1"]


async def test_a_posted_message_is_delivered_signed_with_its_mentions(
    client: Client, services: Services, receiver: Receiver
) -> None:
    admin = await make_operator(client, services)
    status, created = await api_call(
        client,
        "POST",
        "/v1/admin/webhooks",
        admin,
        {"url": receiver.url(), "eventTypes": ["message.posted"], "description": "push"},
    )
    assert status == 201, created
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    alice, bob = await register(client), await register(client)
    room = await create_room(client, alice, name="ops")
    await add_member(client, room, alice, bob)
    message = await post_message(client, room, alice, f"ping @{bob.username}.")

    await eventually(lambda: receiver.accepted(), "the delivery", timeout=PATIENCE)
    got = receiver.requests[0]
    stamp, mac = parse_signature(got.headers[signing.SIGNATURE_HEADER])
    # What a receiver computes itself, with nothing of ours.
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + got.body, hashlib.sha256)
    assert hmac.compare_digest(mac, expected.hexdigest())
    assert signing.verify(secret, got.body, got.headers[signing.SIGNATURE_HEADER])
    assert not signing.verify(secret, got.body + b" ", got.headers[signing.SIGNATURE_HEADER])
    assert not signing.verify(signing.new_secret(), got.body, got.headers[signing.SIGNATURE_HEADER])
    # Outside the replay window the same signature is refused.
    late = stamp + signing.DEFAULT_TOLERANCE_SECONDS + 1
    assert not signing.verify(secret, got.body, got.headers[signing.SIGNATURE_HEADER], now=late)

    event = got.event
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers[signing.EVENT_ID_HEADER] == event["id"]
    assert got.headers[signing.EVENT_TYPE_HEADER] == event["type"] == "message.posted"
    assert got.headers[signing.ATTEMPT_HEADER] == "1"
    data = event["data"]
    assert data["message"]["id"] == message["id"]
    assert data["message"]["body"] == f"ping @{bob.username}."
    assert data["message"]["seq"] == message["seq"]
    assert data["message"]["senderId"] == alice.id
    assert data["room"] == {"id": room, "kind": "private", "name": "ops"}
    assert data["sender"]["username"] == alice.username
    assert data["mentions"] == [{"userId": bob.id, "username": bob.username}]

    # The secret is shown once: the list has the endpoint, never its secret.
    status, listed = await api_call(client, "GET", "/v1/admin/webhooks", admin)
    assert status == 200
    assert [e["id"] for e in listed["endpoints"]] == [created["endpoint"]["id"]]
    assert listed["endpoints"][0]["eventTypes"] == ["message.posted"]
    assert secret not in json.dumps(listed)


async def test_a_receiver_down_for_a_while_gets_everything_once_it_is_back(
    client: Client, services: Services
) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    await add_endpoint(services, receiver.url(), ["message.posted"])
    alice = await register(client)
    room = await create_room(client, alice)
    for i in range(5):
        await post_message(client, room, alice, f"while down {i}")

    async def retried() -> bool:
        rows = await outbox(services.pool)
        return len(rows) == 5 and all(r["attempts"] >= 2 for r in rows)

    await eventually(retried, "every delivery refused more than once", timeout=PATIENCE)
    # Back, but failing: the first six requests get 500.
    failures = iter(range(6))
    receiver.answer = lambda _: 500 if next(failures, None) is not None else 200
    await receiver.start()
    try:
        await eventually(
            lambda: all_delivered(services.pool, 5), "everything delivered", timeout=PATIENCE
        )
        assert sum(r.status == 500 for r in receiver.requests) == 6
        ids = [e["id"] for e in receiver.accepted()]
        assert sorted(ids) == sorted(str(r["event_id"]) for r in await outbox(services.pool))
        bodies = sorted(e["data"]["message"]["body"] for e in receiver.accepted())
        assert bodies == [f"while down {i}" for i in range(5)]

        # An event answered 2xx is never sent again: one more event goes through after them
        # all, and still each was accepted once.
        await post_message(client, room, alice, "after")
        await eventually(lambda: len(receiver.accepted()) == 6, "the last one", timeout=PATIENCE)
        counts = collections.Counter(r.event["id"] for r in receiver.requests if r.status == 200)
        assert set(counts.values()) == {1}, counts
    finally:
        await receiver.stop()


async def test_undelivered_rows_are_delivered_after_the_server_is_killed_and_restarted(
    test_db: TestDatabase, tmp_path: Path, services: Services
) -> None:
    receiver = Receiver()
    await add_endpoint(services, receiver.url(), ["user.registered", "message.posted"])
    first = await start_fast(test_db, tmp_path)
    second: ServerProcess | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await first.wait_status(http, 200)
            names = [f"restart{i}" for i in range(3)]
            for name in names:
                async with http.post(
                    f"{first.base}/v1/auth/register",
                    json={"username": name, "password": PASSWORD},
                ) as response:
                    assert response.status == 201, await response.text()

            async def attempted() -> bool:
                rows = await outbox(services.pool)
                return len(rows) == 3 and all(r["attempts"] >= 1 for r in rows)

            await eventually(attempted, "deliveries tried and refused", timeout=PATIENCE)
            # No drain, nothing handed back: whatever was claimed comes due by its lease.
            first.proc.send_signal(signal.SIGKILL)
            await first.exit_code()
            assert not any(r["delivered_at"] for r in await outbox(services.pool))

            await receiver.start()
            second = await start_fast(test_db, tmp_path)
            await eventually(
                lambda: all_delivered(services.pool, 3), "delivered after restart", timeout=60
            )
        got = sorted(e["data"]["user"]["username"] for e in receiver.accepted())
        assert got == names
        assert len({e["id"] for e in receiver.accepted()}) == 3
    finally:
        await first.kill()
        if second is not None:
            await second.kill()
        await receiver.stop()


async def test_two_dispatchers_on_one_database_never_send_an_event_twice(
    client: Client, services: Services
) -> None:
    receiver = Receiver(delay=0.02)
    await receiver.start()
    other = await make_client(services, webhook_concurrency=3)
    try:
        await add_endpoint(services, receiver.url(), ["user.registered"])
        # One statement, many events: both dispatchers find a full queue at once.
        await services.pool.execute(
            "INSERT INTO users (username, display_name, password_hash) "
            "SELECT 'bulk' || i, 'Bulk ' || i, '!' FROM generate_series(1, 80) AS i"
        )
        await eventually(
            lambda: all_delivered(services.pool, 80), "all 80 delivered", timeout=PATIENCE
        )
        counts = collections.Counter(r.event["id"] for r in receiver.requests)
        assert len(counts) == 80 and set(counts.values()) == {1}, counts.most_common(3)
        assert all(r["attempts"] == 1 for r in await outbox(services.pool))
    finally:
        await other.close()
        await receiver.stop()


async def test_an_endpoint_gets_only_the_types_it_subscribed_to(
    client: Client, services: Services, receiver: Receiver
) -> None:
    await add_endpoint(services, receiver.url("/chat"), ["message.posted"])
    await add_endpoint(
        services, receiver.url("/people"), ["user.registered", "member.joined", "member.left"]
    )
    await add_endpoint(
        services,
        receiver.url("/rest"),
        ["message.edited", "message.deleted", "member.banned", "call.started", "call.ended"],
    )
    alice, bob = await register(client), await register(client)
    room = await create_room(client, alice)
    await add_member(client, room, alice, bob)
    message = await post_message(client, room, alice, "hello")
    path = f"/v1/rooms/{room}/messages/{message['id']}"
    status, _ = await api_call(client, "PATCH", path, alice, {"body": "hello, edited"})
    assert status == 200
    status, _ = await api_call(client, "DELETE", path, alice)
    assert status == 200
    status, _ = await api_call(client, "DELETE", f"/v1/rooms/{room}/members/{bob.id}", alice)
    assert status in (200, 204)
    call_id = uuid.uuid4()
    async with services.pool.acquire() as conn, conn.transaction():
        assert await call_store.create(conn, call_id, uuid.UUID(room), "p2p", uuid.UUID(alice.id))
    async with services.pool.acquire() as conn, conn.transaction():
        assert await call_store.end(conn, call_id, "ended_by_host")
    await services.pool.execute(
        "INSERT INTO room_bans (room_id, user_id, banned_by, reason) VALUES ($1, $2, $3, 'spam')",
        uuid.UUID(room),
        uuid.UUID(bob.id),
        uuid.UUID(alice.id),
    )
    rows = await outbox(services.pool)
    await eventually(lambda: all_delivered(services.pool, len(rows)), "all", timeout=PATIENCE)

    def types(path: str) -> list[str]:
        return sorted(e["type"] for e in receiver.accepted(path))

    assert types("/chat") == ["message.posted"]
    assert types("/people") == sorted(
        ["user.registered"] * 2 + ["member.joined"] * 2 + ["member.left"]
    )
    assert types("/rest") == sorted(
        ["message.edited", "message.deleted", "member.banned", "call.started", "call.ended"]
    )
    by_type = {e["type"]: e["data"] for e in receiver.accepted()}
    assert by_type["message.edited"]["message"]["body"] == "hello, edited"
    assert by_type["message.deleted"]["message"]["body"] == ""
    assert by_type["member.left"]["member"]["userId"] == bob.id
    assert by_type["member.banned"]["ban"]["reason"] == "spam"
    assert by_type["call.ended"]["call"]["endReason"] == "ended_by_host"
    assert by_type["call.started"]["call"]["id"] == str(call_id)


async def test_no_endpoint_means_no_outbox_rows(client: Client, services: Services) -> None:
    alice = await register(client)
    room = await create_room(client, alice)
    await post_message(client, room, alice, "nobody listens")
    assert await outbox(services.pool) == []


async def test_bad_endpoints_are_refused_with_a_problem(client: Client, services: Services) -> None:
    admin = await make_operator(client, services)

    async def create(body: dict[str, Any]) -> Any:
        return await client.post("/v1/admin/webhooks", json=body, headers=admin.headers)

    for bad in (
        {"url": "ftp://example.org/hook", "eventTypes": ["message.posted"]},
        {"url": "http://user:pw@example.org/hook", "eventTypes": ["message.posted"]},
        {"url": "http://example.org/hook", "eventTypes": []},
        {"url": "http://example.org/hook", "eventTypes": ["message.read"]},
        {"url": "http://example.org/hook"},
    ):
        await expect_problem(await create(bad), 422, "validation_failed")
    status, data = await api_call(client, "DELETE", f"/v1/admin/webhooks/{uuid.uuid4()}", admin)
    assert (status, data["code"]) == (404, "webhook_not_found")

    status, created = await api_call(
        client,
        "POST",
        "/v1/admin/webhooks",
        admin,
        {"url": "https://example.org/h", "eventTypes": ["call.ended", "call.ended"]},
    )
    assert status == 201 and created["endpoint"]["eventTypes"] == ["call.ended"]
    hook = created["endpoint"]["id"]
    status, _ = await api_call(client, "DELETE", f"/v1/admin/webhooks/{hook}", admin)
    assert status == 204
    status, listed = await api_call(client, "GET", "/v1/admin/webhooks", admin)
    assert listed == {"endpoints": []}
    actions = await services.pool.fetch(
        "SELECT action, details FROM audit_log WHERE target_type = 'webhook' ORDER BY id"
    )
    assert [a["action"] for a in actions] == ["admin.webhook.create", "admin.webhook.delete"]
    assert created["secret"] not in json.dumps([dict(a) for a in actions], default=str)


async def test_the_command_line_adds_lists_and_removes_endpoints(
    client: Client, test_db: TestDatabase
) -> None:
    env = cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema), LOG_LEVEL="warning"
    )
    code, out, err = await run_cli(
        "admin", "webhook-add", "https://push.example.org/in",
        "--events", "message.posted,member.joined", env=env,
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert created["secret"].startswith("whsec_")
    assert created["endpoint"]["eventTypes"] == ["message.posted", "member.joined"]

    code, out, err = await run_cli("admin", "webhook-list", env=env)
    assert code == 0, err
    assert [e["url"] for e in json.loads(out)["endpoints"]] == ["https://push.example.org/in"]
    assert created["secret"] not in out

    code, _, err = await run_cli(
        "admin", "webhook-add", "https://x.example.org", "--events", "nope", env=env
    )
    assert code == 2 and "validation_failed" in err and "Traceback" not in err

    code, out, err = await run_cli("admin", "webhook-remove", created["endpoint"]["id"], env=env)
    assert code == 0, err
    code, out, _ = await run_cli("admin", "webhook-list", env=env)
    assert json.loads(out) == {"endpoints": []}


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = Policy(retry_base_seconds=10, retry_max_seconds=3600)
    assert [policy.retry_delay(n, lambda: 1.0) for n in (1, 2, 3)] == [10, 20, 40]
    assert policy.retry_delay(3, lambda: 0.0) == 20
    assert policy.retry_delay(30, lambda: 1.0) == 3600
    assert policy.lease_seconds > policy.timeout_seconds

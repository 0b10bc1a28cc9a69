"""Schemathesis fuzzes the running server from its OpenAPI document, anonymous and signed in.

Every operation of ``protocol/openapi.json`` gets schema-valid and schema-invalid requests
(schemathesis' coverage phase: boundary values, missing headers, unexpected methods; then its
fuzzing phase), and every answer is checked against the document: no 5xx, a documented status,
content type, body schema and headers, valid data accepted, invalid data refused, ``Allow``
listing the resource's methods. A failure prints the request as a curl command.

The server is the real application on 127.0.0.1 with the real PostgreSQL (``pg_url``): one
per caller, each in a database schema of its own, made and dropped as ``test_db`` does. It
runs its own event loop on a thread, because schemathesis' tests are synchronous and send
their requests while the test thread waits for the answer.

Bounded and deterministic: ``BOLTOREZKA_FUZZ_EXAMPLES`` examples per operation in the fuzzing
phase (default 10), a fixed seed (``BOLTOREZKA_FUZZ_SEED``) and derandomized generation, so
a run repeats the same requests. For a longer hunt:

    BOLTOREZKA_FUZZ_EXAMPLES=500 pytest tests/test_fuzz_openapi.py
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import threading
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncpg
import pytest
import schemathesis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from schemathesis import Case, CheckContext, Response
from schemathesis.config import SchemathesisConfig
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from boltorezka.app import build_app
from boltorezka.auth import passwords
from boltorezka.config import Settings, SigningKey
from boltorezka.runtime import Services
from boltorezka.store import migrate
from boltorezka.store.database import create_pool
from tests.conftest import MIGRATIONS, ROOT, TEST_SECRET
from tests.conftest import TestDatabase as Database
from tests.helpers import quick_accounts

T = TypeVar("T")
# Case is generic in its operation type, whose own four parameters say nothing useful here.
FuzzCase = Case[Any]

OPENAPI = ROOT / "protocol" / "openapi.json"
EXAMPLES = int(os.environ.get("BOLTOREZKA_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("BOLTOREZKA_FUZZ_SEED", "20261201"))
# A server-side wait longer than this is a hang, not a slow answer.
CALL_TIMEOUT = 30.0

# Statuses added to schemathesis' defaults, each a documented answer of /v1/ws: 101 is the
# upgrade itself (not a server error, and what a valid handshake gets); 426 refuses a request
# without the handshake headers, which are required parameters there.
NOT_A_SERVER_ERROR = ["101", "2xx", "3xx", "4xx"]
POSITIVE_ACCEPTED = ["101", "2xx", "3xx", "401", "403", "404", "409", "429"]
NEGATIVE_REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "426"]
MISSING_HEADER_REFUSED = ["400", "401", "403", "406", "415", "422", "426"]

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ids = itertools.count(1)


# --- The server, on a thread of its own -----------------------------------------------------


class LiveServer:
    """The application on 127.0.0.1, in a fresh database schema, on a thread of its own."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = replace(settings, database_url=db.url)
        self._db = db
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._services: Services | None = None
        self._thread = threading.Thread(target=self._main, name="fuzz-server", daemon=True)
        self.base_url = ""

    @property
    def services(self) -> Services:
        assert self._services is not None, "the server is not running"
        return self._services

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(CALL_TIMEOUT):
            raise TimeoutError("the fuzz server did not start")
        if self._failure is not None:
            raise RuntimeError("the fuzz server did not start") from self._failure

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        assert self._loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(CALL_TIMEOUT)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(CALL_TIMEOUT)
        assert not self._thread.is_alive(), "the fuzz server did not stop"

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or by the failing request
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # What conftest's test_db does, on this loop: the schema lives as long as the server.
        admin = await asyncpg.connect(self._db.url)
        await admin.execute(f"CREATE SCHEMA {self._db.schema}")
        try:
            await self._serve_in_schema()
        finally:
            await admin.execute(f"DROP SCHEMA {self._db.schema} CASCADE")
            await admin.close()

    async def _serve_in_schema(self) -> None:
        assert self._stop is not None
        pool = await create_pool(
            self._db.url, min_size=1, max_size=10, server_settings=self._db.server_settings
        )
        try:
            async with pool.acquire() as conn:
                await migrate.apply(conn, MIGRATIONS)
            self._services = Services.build(self._settings, pool)
            server = TestServer(build_app(self._services), host="127.0.0.1")
            await server.start_server()
            try:
                self.base_url = str(server.make_url("")).rstrip("/")
                self._ready.set()
                await self._stop.wait()
            finally:
                await server.close()
        finally:
            await pool.close()


def _fuzz_settings(url: str) -> Settings:
    return Settings(
        # conftest's settings fixture, for a server that outlives one test...
        env="dev",
        database_url=url,
        migrations_dir=MIGRATIONS,
        signing_keys=(SigningKey.from_secret(TEST_SECRET),),
        login_rate_per_minute=10_000,
        register_rate_per_minute=10_000,
        chat_send_burst=100_000,
        chat_send_per_second=100_000.0,
        # ...with TURN configured, so /v1/turn/credentials answers 200, not its documented 503,
        turn_secret="turn-secret-that-is-long-enough-0123456789",
        turn_uris=("turn:turn.example:3478?transport=udp",),
        stun_uris=("stun:turn.example:3478",),
        # and no connect limit: valid handshakes really open sockets (the limit has its tests).
        ws_connect_rate_per_minute=1_000_000,
    )


@contextmanager
def live_server(pg_url: str) -> Iterator[LiveServer]:
    db = Database(pg_url, f"t_{uuid.uuid4().hex[:16]}")
    server = LiveServer(_fuzz_settings(pg_url), db)
    with pytest.MonkeyPatch.context() as patch:
        # argon2 at full cost is ~0.1 s of CPU per sign-up or login, and the fuzzer sends
        # hundreds: the same code, with the cheapest parameters.
        cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        patch.setattr(passwords, "_hasher", cheap)
        patch.setattr(passwords, "_DUMMY_HASH", cheap.hash("boltorezka-timing-equaliser"))
        server.start()
        try:
            yield server
        finally:
            server.stop()


# One server, in a database schema of its own, for each caller's tests (one per operation):
# a schema per operation would cost its migrations 74 times over.
@pytest.fixture(scope="module")
def anonymous_server(pg_url: str) -> Iterator[LiveServer]:
    with live_server(pg_url) as server:
        yield server


@pytest.fixture(scope="module")
def member_server(pg_url: str) -> Iterator[LiveServer]:
    with live_server(pg_url) as server:
        yield server


# --- The rows a signed-in fuzzer works on ----------------------------------------------------


@dataclass
class Room:
    id: str
    message_id: str


class Member:
    """A signed-in caller with a room (public, with a second member and a message).

    A path or body id that is a valid UUID is swapped for a real one when its number is even,
    so half the requests reach stored rows and the rest exercise the not-found answers. The
    choice depends on the generated value only, so Hypothesis replays a case the same way.
    Operations that would spoil the shared rows for the ones after them (deleting, archiving
    or handing over the room, signing out) get rows of their own for each request.
    """

    FRESH_ROOM = frozenset(
        {
            ("DELETE", "/v1/rooms/{roomId}"),
            ("POST", "/v1/rooms/{roomId}/archive"),
            ("POST", "/v1/rooms/{roomId}/transfer"),
            ("DELETE", "/v1/rooms/{roomId}/members/{userId}"),
            ("DELETE", "/v1/rooms/{roomId}/messages/{messageId}"),
        }
    )
    FRESH_SESSION = frozenset(
        {("POST", "/v1/auth/logout"), ("DELETE", "/v1/auth/sessions/{sessionId}")}
    )

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.owner, self.peer = server.run(quick_accounts(server.services, 2))
        self.room = server.run(self._new_room())

    async def _new_room(self) -> Room:
        async with ClientSession(self.server.base_url, headers=self.owner.headers) as http:
            async with http.post("/v1/rooms", json={"name": "fuzz", "kind": "public"}) as r:
                assert r.status == 201, await r.text()
                room_id: str = (await r.json())["room"]["id"]
            member = {"userId": self.peer.id}
            async with http.post(f"/v1/rooms/{room_id}/members", json=member) as r:
                assert r.status == 201, await r.text()
            message = {"clientMsgId": f"seed-{next(_ids)}", "body": "seeded"}
            async with http.post(f"/v1/rooms/{room_id}/messages", json=message) as r:
                assert r.status == 201, await r.text()
                message_id: str = (await r.json())["id"]
        return Room(room_id, message_id)

    def prepare(self, case: FuzzCase) -> None:
        """Sign ``case`` in and point it at real rows (see the class)."""
        key = (case.method.upper(), case.path)
        caller = self.owner
        if key in self.FRESH_SESSION:
            (caller,) = self.server.run(quick_accounts(self.server.services, 1))
        room = self.room
        if key in self.FRESH_ROOM and _chosen(case.path_parameters.get("roomId")):
            room = self.server.run(self._new_room())
        real = {
            "roomId": room.id,
            "messageId": room.message_id,
            "userId": self.peer.id,
            "sessionId": caller.session_id,
        }
        for name, value in list(case.path_parameters.items()):
            if name in real and _chosen(value):
                case.path_parameters[name] = real[name]
        if isinstance(case.body, dict):
            for name, value in {"userId": self.peer.id, "replyTo": room.message_id}.items():
                if _chosen(case.body.get(name)):
                    case.body[name] = value
        # Positive cases carry a made-up `Bearer ...`: it becomes a real token. A negative
        # case whose mutation is the credential (none at all, another scheme) keeps it, so
        # the server still has to refuse it.
        if case.headers is not None and str(case.headers.get("Authorization", "")).startswith(
            "Bearer "
        ):
            case.headers["Authorization"] = caller.headers["Authorization"]


def _chosen(value: Any) -> bool:
    # Only canonical UUIDs, which the schema accepts: a negative case stays negative.
    return isinstance(value, str) and bool(_UUID.fullmatch(value)) and int(value[-1], 16) % 2 == 0


# --- Checks ----------------------------------------------------------------------------------


def _state_checked_fields(case: FuzzCase) -> list[str]:
    reply = case.operation.definition.raw.get("responses", {}).get("422", {})
    fields = reply.get("x-state-checked-fields", [])
    return [str(name) for name in fields]


def accepts_positive_data(ctx: CheckContext, response: Response, case: FuzzCase) -> bool | None:
    """schemathesis' positive_data_acceptance, except for the document's state checks.

    Some 422s no schema can rule out (a cursor this server never issued, a read marker past
    the newest message, a direct room with yourself): the document lists those fields on the
    operation's 422 answer as ``x-state-checked-fields``. A 422 for any other reason, to a
    request the schema accepts, is a mismatch between the document and the server.
    """
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 422:
            problem = response.json()
            if isinstance(problem, dict) and problem.get("field") in _state_checked_fields(case):
                return None
        raise


def call_and_validate(case: FuzzCase, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[accepts_positive_data],
    )


def _config(*, coverage: bool) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # Time-based, so it would make a run's outcome depend on the machine's load.
            "suppress-health-check": ["too_slow"],
            "request-timeout": CALL_TIMEOUT,
            "auth": {"auto-signup": False},
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": coverage},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "operations": [
                {
                    # Coverage cases for avatarUrl (a long pattern with a length limit and a
                    # format) take schemathesis ~15 s of CPU to build, as much as all other
                    # operations together; the fuzzing phase still covers the operation, and
                    # test_openapi_contract.py pins the URL rule itself.
                    "include-operation-id": "updateMe",
                    "phases": {"coverage": {"enabled": False}},
                }
            ],
            "checks": {
                "not_a_server_error": {"expected-statuses": NOT_A_SERVER_ERROR},
                "positive_data_acceptance": {"expected-statuses": POSITIVE_ACCEPTED},
                "negative_data_rejection": {"expected-statuses": NEGATIVE_REFUSED},
                "missing_required_header": {"expected-statuses": MISSING_HEADER_REFUSED},
            },
        }
    )


# --- The tests -------------------------------------------------------------------------------

# The coverage phase (boundary values, missing headers, unexpected methods) runs signed in
# only: for most operations an anonymous caller gets 401 whatever the input, and building its
# cases is most of this file's CPU time.
ANONYMOUS = schemathesis.openapi.from_path(OPENAPI, config=_config(coverage=False))
SIGNED_IN = schemathesis.openapi.from_path(OPENAPI, config=_config(coverage=True))


@pytest.fixture(scope="module")
def member(member_server: LiveServer) -> Member:
    return Member(member_server)


@ANONYMOUS.parametrize()
def test_fuzz_anonymous(case: FuzzCase, anonymous_server: LiveServer) -> None:
    call_and_validate(case, anonymous_server.base_url)


@SIGNED_IN.parametrize()
def test_fuzz_signed_in(case: FuzzCase, member: Member) -> None:
    member.prepare(case)
    call_and_validate(case, member.server.base_url)

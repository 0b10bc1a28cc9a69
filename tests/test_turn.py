"""TURN: the credentials we issue work with a real coturn, and only those do."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from boltorezka.config import Settings
from boltorezka.rtc import turn
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import register
from tests.turn import TurnServer, allocate, rotate, run_coturn

SECRET = "turn-secret-for-tests-0123456789abcdef"
PREVIOUS_SECRET = "previous-turn-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def coturn() -> Iterator[TurnServer]:
    # Two secrets at once: the state of a coturn in the middle of a rotation.
    with run_coturn(SECRET, PREVIOUS_SECRET) as server:
        yield server


def test_credentials_follow_the_turn_rest_scheme() -> None:
    user = uuid.uuid4()
    issued = turn.issue(user, secret=SECRET, ttl=600, turn_uris=("turn:a",), now=1_000)
    assert issued.username == f"1600:{user}"
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), issued.username.encode(), hashlib.sha1).digest()
    ).decode()
    assert issued.password == expected
    assert issued.expires_at == 1600
    assert issued.ice_servers[0].urls == ["turn:a"]
    assert issued.ice_servers[0].credential == expected


async def test_endpoint_requires_auth_and_configuration(
    client: TestClient[Any, Any], services: Services
) -> None:
    anonymous = await client.get("/v1/turn/credentials")
    assert anonymous.status == 401
    alice = await register(client)
    unconfigured = await client.get("/v1/turn/credentials", headers=alice.headers)
    assert unconfigured.status == 503
    assert (await unconfigured.json())["code"] == "turn_not_configured"


async def test_endpoint_issues_short_lived_credentials(
    client: TestClient[Any, Any], services: Services, coturn: TurnServer
) -> None:
    configured = await make_client(
        services,
        turn_secret=SECRET,
        turn_uris=(coturn.uri,),
        turn_ttl=120,
        stun_uris=("stun:127.0.0.1:3478",),
    )
    try:
        alice = await register(configured)
        response = await configured.get("/v1/turn/credentials", headers=alice.headers)
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        expiry, user_id = body["username"].split(":")
        assert user_id == alice.id
        assert 0 < int(expiry) - time.time() <= 120
        assert body["ttl"] == 120
        relay = [s for s in body["iceServers"] if s.get("credential")]
        assert relay == [
            {"urls": [coturn.uri], "username": body["username"], "credential": body["password"]}
        ]
        # The credentials a client gets are ones coturn accepts.
        assert await allocate(coturn, body["username"], body["password"])
    finally:
        await configured.close()


async def test_coturn_rejects_forged_and_expired_credentials(coturn: TurnServer) -> None:
    user = uuid.uuid4()
    good = turn.issue(user, secret=SECRET, ttl=300, turn_uris=(coturn.uri,))
    assert await allocate(coturn, good.username, good.password)

    forged = turn.issue(
        user, secret="an-attacker-guess-0123456789abcdef", ttl=300, turn_uris=(coturn.uri,)
    )
    assert not await allocate(coturn, forged.username, forged.password)

    # The right secret, but the expiry inside the username has passed.
    expired = turn.issue(
        user, secret=SECRET, ttl=60, turn_uris=(coturn.uri,), now=int(time.time()) - 3600
    )
    assert not await allocate(coturn, expired.username, expired.password)

    # Editing the expiry to extend a credential breaks its HMAC.
    tampered_username = f"{int(time.time()) + 86400}:{user}"
    assert not await allocate(coturn, tampered_username, good.password)


async def test_rotation_keeps_credentials_from_both_secrets_valid(coturn: TurnServer) -> None:
    user = uuid.uuid4()
    for secret in (SECRET, PREVIOUS_SECRET):
        issued = turn.issue(user, secret=secret, ttl=300, turn_uris=(coturn.uri,))
        assert await allocate(coturn, issued.username, issued.password), secret


async def test_secret_rotation_in_the_database_needs_no_restart(tmp_path: Path) -> None:
    old, new = "old-rotating-secret-0123456789abcdef", "new-rotating-secret-0123456789abcdef"
    userdb = tmp_path / "turndb"
    user = uuid.uuid4()

    def creds(secret: str) -> tuple[str, str]:
        issued = turn.issue(user, secret=secret, ttl=300, turn_uris=("turn:x",))
        return issued.username, issued.password

    with run_coturn(old, userdb=userdb) as server:
        pid = server.process.pid
        assert await allocate(server, *creds(old))
        assert not await allocate(server, *creds(new))
        # Step 1 of a rotation: both secrets valid, while nodes switch to the new one.
        await asyncio.to_thread(rotate, userdb, "add", new)
        assert await allocate(server, *creds(new))
        assert await allocate(server, *creds(old))
        # Step 2, after the credential TTL: the old secret stops working.
        await asyncio.to_thread(rotate, userdb, "remove", old)
        assert not await allocate(server, *creds(old))
        assert await allocate(server, *creds(new))
        # The same coturn process served all of it: no restart, no dropped allocations.
        assert server.process.pid == pid and server.process.poll() is None


def test_turn_secret_comes_from_environment_or_file(tmp_path: Any) -> None:
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET + "\n")
    settings = Settings.from_env(
        {
            "BOLTOREZKA_TURN_SECRET_FILE": str(secret_file),
            "BOLTOREZKA_TURN_URIS": "turn:a:3478, turns:b:5349",
        }
    )
    assert settings.turn_secret == SECRET
    assert settings.turn_uris == ("turn:a:3478", "turns:b:5349")
    assert SECRET not in repr(settings)

"""The load tester and its account provisioning, against a real server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient
from boltorezka_client.loadtest import main as loadtest_main
from boltorezka_client.loadtest.stats import (
    Histogram,
    SeqSet,
    Subscription,
    WorkerResult,
    count_losses,
)

from boltorezka import cli
from tests.conftest import TEST_SECRET
from tests.helpers import audit_rows, cli_env, url_with_search_path

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

# Generous: the suite runs on small shared machines; nothing here asserts how long it took.
SUBPROCESS_TIMEOUT = 240


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(SUBPROCESS_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def server_env(test_db: TestDatabase) -> dict[str, str]:
    """What the test server runs with: the same database schema and signing secret."""
    return cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema), JWT_SECRET=TEST_SECRET
    )


async def bulk_users(
    test_db: TestDatabase, out: Path, count: int, rooms: int, room_size: int
) -> dict[str, Any]:
    code, stdout, stderr = await run(
        "-m",
        "boltorezka",
        "admin",
        "bulk-users",
        "--count",
        str(count),
        "--rooms",
        str(rooms),
        "--room-size",
        str(room_size),
        "--out",
        str(out),
        env=server_env(test_db),
    )
    assert code == 0, stderr
    assert f"created {count} load-test users" in stdout
    document: dict[str, Any] = json.loads(out.read_text())
    return document


async def test_bulk_users_makes_working_accounts(
    client: TestClient[Any, Any],
    ws_url: str,
    pool: asyncpg.Pool,
    test_db: TestDatabase,
    tmp_path: Path,
) -> None:
    out = tmp_path / "tokens.json"
    document = await bulk_users(test_db, out, count=12, rooms=3, room_size=4)

    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # it holds live tokens
    assert len(document["users"]) == 12
    assert [len(room["members"]) for room in document["rooms"]] == [4, 4, 4]
    user = document["users"][0]
    assert user["accessTokenExpiresAt"] > document["createdAt"]
    assert user["refreshTokenExpiresAt"] > user["accessTokenExpiresAt"]
    # One argon2 hash shared by every account: that is what makes this fast.
    assert await pool.fetchval("SELECT count(DISTINCT password_hash) FROM users") == 1

    room = document["rooms"][0]
    member = next(u for u in document["users"] if u["id"] == room["members"][1])
    async with BoltorezkaClient(ws_url, member["accessToken"], reconnect=False) as ws:
        assert ws.auth_result["userId"] == member["id"]
        assert ws.auth_result["sessionId"] == member["sessionId"]
        joined = await ws.join(room["id"])
        assert joined["lastSeq"] == 0
        ack = await ws.send_message(room["id"], "hello from a load account")
        assert ack["seq"] == 1

    response = await client.post("/v1/auth/refresh", json={"refreshToken": member["refreshToken"]})
    assert response.status == 200, await response.text()

    rows = await audit_rows(pool, "admin.bulk_users")
    assert len(rows) == 1
    assert rows[0]["details"]["count"] == 12
    assert rows[0]["details"]["rooms"] == 3
    assert rows[0]["details"]["purpose"] == "load test"


async def test_bulk_users_needs_the_servers_secret(test_db: TestDatabase, tmp_path: Path) -> None:
    env = cli_env(DATABASE_URL=url_with_search_path(test_db.url, test_db.schema))
    code, _, stderr = await run(
        "-m", "boltorezka", "admin", "bulk-users", "--count", "2", "--out",
        str(tmp_path / "t.json"), env=env,
    )  # fmt: skip
    assert code == 2
    assert "BOLTOREZKA_JWT_SECRET" in stderr
    assert not (tmp_path / "t.json").exists()


async def test_small_loadtest_run_delivers_everything_once(
    client: TestClient[Any, Any],
    ws_url: str,
    pool: asyncpg.Pool,
    test_db: TestDatabase,
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.json"
    await bulk_users(test_db, tokens, count=20, rooms=4, room_size=5)
    summary_path = tmp_path / "summary.json"
    code, stdout, stderr = await run(
        "-m", "boltorezka_client.loadtest",
        "--url", ws_url, "--tokens", str(tokens),
        "--clients", "20", "--rate", "2", "--duration", "5", "--ramp-up", "4",
        "--processes", "2", "--drain", "5", "--request-timeout", "60",
        "--json", str(summary_path), "--no-progress",
        env=cli_env(),
    )  # fmt: skip
    assert code == 0, stderr
    assert "delivered" in stdout and "lost 0" in stdout

    summary = json.loads(summary_path.read_text())
    connections, messages = summary["connections"], summary["messages"]
    assert connections["ok"] == 20 and connections["failed"] == 0
    assert summary["scenario"]["rooms"] == 4
    assert summary["scenario"]["roomSizeMin"] == summary["scenario"]["roomSizeMax"] == 5
    assert messages["sent"] > 0
    assert messages["sent"] == messages["acked"]
    assert messages["nacked"] == 0 and messages["ackTimeouts"] == 0
    assert messages["lost"] == 0
    assert messages["duplicated"] == 0
    # Delivered counts copies to the room's other members: the sender's echo is not one.
    assert messages["delivered"] == messages["expected"] == messages["acked"] * (5 - 1)
    assert summary["latencyMs"]["delivery"]["count"] == messages["delivered"]
    assert summary["latencyMs"]["ack"]["count"] == messages["acked"]
    assert summary["latencyMs"]["delivery"]["p99"] is not None
    assert await pool.fetchval("SELECT count(*) FROM messages") == messages["acked"]


def test_non_loopback_targets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = "ws://192.0.2.10:8080/v1/ws"  # TEST-NET-1: never routed, no DNS involved
    tokens = str(tmp_path / "missing.json")
    assert loadtest_main(["--url", remote, "--tokens", tokens]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    # The server CLI forwards to the same entry point.
    assert cli.main(["loadtest", "--url", remote, "--tokens", tokens]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    # Told explicitly, it gets past the check (and stops at the missing tokens file).
    assert loadtest_main(["--url", remote, "--tokens", tokens, "--allow-remote"]) == 2
    err = capsys.readouterr().err
    assert "--allow-remote" not in err and "cannot read the tokens file" in err


def test_seq_set_tracks_holes_and_duplicates() -> None:
    seen = SeqSet(base=10)
    assert [seen.add(s) for s in (11, 13, 12, 12, 10, 14)] == [True, True, True, False, False, True]
    assert seen.contiguous == 14 and not seen.extra
    assert seen.add(20) and 20 in seen and 19 not in seen and 10 not in seen


def test_histogram_percentiles_stay_within_one_percent() -> None:
    histogram = Histogram()
    for ms in range(1, 1001):
        histogram.add(float(ms))
    for q, exact in ((50, 500), (99, 990)):
        value = histogram.percentile(q)
        assert value is not None and abs(value - exact) / exact < 0.011
    assert histogram.max == 1000.0 and histogram.count == 1000


def test_losses_count_only_what_a_member_joined_for() -> None:
    result = WorkerResult(0)
    result.acked = {"r": [(1, 0), (2, 0), (3, 1), (4, 0)]}
    result.subscriptions = [
        Subscription("r", 1, base=0, contiguous=2, extra=[4], alive=True),  # misses nothing
        Subscription("r", 2, base=1, contiguous=2, extra=[], alive=True),  # misses 3 and 4
        Subscription("r", 3, base=0, contiguous=1, extra=[], alive=False),  # gave up after 1
    ]
    # Member 1 sent seq 3 itself; member 2 joined after seq 1; member 3 is judged up to 1.
    assert count_losses([result]) == (3 + 3 + 1, 2)

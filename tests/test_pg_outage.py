"""PostgreSQL stopped under traffic, then started again, while ``boltorezka serve`` runs on.

Clients keep sending chat messages the whole time. While the database is down every send
is answered in time with a retryable nack (nothing hangs, no socket drops, the server does
not exit), ``/readyz`` says 503 with a failing ``database`` check while ``/healthz`` stays
200, and a client that retries with the same ``clientMsgId`` is answered once the database
is back. After the restart ``/readyz`` turns 200 by itself, sends succeed again, and every
acknowledged message (before, during and after) is in the history exactly once, in a
gapless seq order, and was delivered exactly once to a subscriber that stayed connected.

The stop is ``pg_ctl stop -m immediate``, a crash: batches in flight die with it, some may
have committed without their answer getting back, and the next start recovers from the
WAL. The database is a cluster of the test's own (tests/pg_server.py), on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from boltorezka_client import BoltorezkaClient, ConnectionLost, NackError, RequestTimeout

from tests.conftest import ROOT
from tests.helpers import PASSWORD, cli_env, free_port
from tests.pg_server import PrivatePostgres
from tests.test_drain import ServerProcess

PATIENCE = 60.0
# What a client waits for an answer; no send may take longer, outage or not.
ACK_TIMEOUT = 5.0
SENDERS = 3
OUTAGE_SECONDS = 3.0  # how long the database stays down (at least)
NACKS_PER_SENDER = 3  # and until each sender has been refused this many times
JWT_SECRET = "pg-outage-test-secret-0123456789-abcdefghijklmnop"


@dataclass
class Sender:
    """One client sending one message after another, retrying refused ones as they were."""

    name: str
    client: BoltorezkaClient
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # clientMsgId -> ack
    nacks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what must never happen
    slowest: float = 0.0

    async def run(self, room: str, stop: asyncio.Event) -> None:
        for i in range(1_000_000):
            client_msg_id = f"{self.name}-{i}"
            # Retried with the same clientMsgId until acknowledged, even after ``stop``:
            # a send once attempted is one the user expects to see.
            while client_msg_id not in self.acks:
                started = time.monotonic()
                try:
                    ack = await self.client.request(
                        "chat.send",
                        {"roomId": room, "clientMsgId": client_msg_id, "body": client_msg_id},
                        timeout=ACK_TIMEOUT,
                    )
                except NackError as nack:
                    self.nacks.append({"code": nack.code, "retryable": nack.retryable})
                    if not nack.retryable:
                        self.failures.append(f"{client_msg_id}: non-retryable nack {nack}")
                        return
                    await asyncio.sleep((nack.retry_after_ms or 100) / 1000)
                    continue
                except (RequestTimeout, ConnectionLost) as exc:
                    self.failures.append(f"{client_msg_id}: {type(exc).__name__} {exc}")
                    return
                finally:
                    self.slowest = max(self.slowest, time.monotonic() - started)
                self.acks[client_msg_id] = ack
            if stop.is_set():
                return
            await asyncio.sleep(0.02)  # a chatty user, not a flood: the cores are shared


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _serve(database_url: str, tmp_path: Path) -> ServerProcess:
    port = free_port()
    env = cli_env(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        JWT_SECRET=JWT_SECRET,
        LOG_LEVEL="warning",
        REGISTER_RATE_PER_MINUTE="1000",
        CHAT_SEND_BURST="100000",
        CHAT_SEND_PER_SECOND="100000",
        # Re-check the sockets' sessions often, so that a check runs during the outage:
        # a database it cannot ask must not look like a revoked session.
        WS_SESSION_RECHECK_SECONDS="1",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "boltorezka",
            "serve",
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    return ServerProcess(proc, port, log)


async def _readiness(
    http: aiohttp.ClientSession, server: ServerProcess
) -> tuple[int | None, dict[str, Any]]:
    try:
        async with http.get(f"{server.base}/readyz") as response:
            return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return None, {}


async def _wait_readiness(
    http: aiohttp.ClientSession, server: ServerProcess, status: int
) -> dict[str, Any]:
    async with asyncio.timeout(PATIENCE):
        while True:
            assert server.proc.returncode is None, "the server exited"
            got, body = await _readiness(http, server)
            if got == status:
                return body
            await asyncio.sleep(0.1)


async def _wait_until(condition: Any, what: str, senders: list[Sender]) -> None:
    try:
        async with asyncio.timeout(PATIENCE):
            while not condition():
                failures = [f for s in senders for f in s.failures]
                assert not failures, failures
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def _api(
    http: aiohttp.ClientSession, server: ServerProcess, method: str, path: str, **kw: Any
) -> Any:
    async with http.request(method, f"{server.base}{path}", **kw) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


async def _history(
    http: aiohttp.ClientSession, server: ServerProcess, room: str, token: str
) -> list[dict[str, Any]]:
    """Every message of the room, oldest first, through the REST API's pages."""
    headers = {"Authorization": f"Bearer {token}"}
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await _api(
            http,
            server,
            "GET",
            f"/v1/rooms/{room}/messages?after={after}&limit=100",
            headers=headers,
        )
        found.extend(page["messages"])
        if not page["hasMore"]:
            return found
        after = found[-1]["seq"]


async def test_postgres_stopped_mid_traffic_then_started_again(
    private_postgres: PrivatePostgres, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    pg = private_postgres
    await asyncio.to_thread(pg.start)
    await pg.wait_up()
    server = await _serve(pg.url, tmp_path)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await _wait_readiness(http, server, 200)
        tokens = []
        for i in range(SENDERS + 1):
            pair = await _api(
                http,
                server,
                "POST",
                "/v1/auth/register",
                json={"username": f"pgout{i}", "password": PASSWORD},
            )
            tokens.append(pair["accessToken"])
        owner = {"Authorization": f"Bearer {tokens[0]}"}
        room = (
            await _api(http, server, "POST", "/v1/rooms", json={"name": "outage"}, headers=owner)
        )["room"]["id"]
        for token in tokens[1:]:
            user_id = (
                await _api(
                    http, server, "GET", "/v1/me", headers={"Authorization": f"Bearer {token}"}
                )
            )["id"]
            await _api(
                http,
                server,
                "POST",
                f"/v1/rooms/{room}/members",
                json={"userId": user_id},
                headers=owner,
            )

        async with contextlib.AsyncExitStack() as stack:
            watcher = await stack.enter_async_context(
                BoltorezkaClient(server.ws_url, tokens[0], reconnect=False)
            )
            await watcher.join(room)
            senders = [
                Sender(
                    f"s{i}",
                    await stack.enter_async_context(
                        BoltorezkaClient(
                            server.ws_url,
                            token,
                            reconnect=False,
                            request_timeout=ACK_TIMEOUT,
                        )
                    ),
                )
                for i, token in enumerate(tokens[1:])
            ]
            tasks = [asyncio.create_task(s.run(room, stop)) for s in senders]

            def acked() -> int:
                return sum(len(s.acks) for s in senders)

            # Before: traffic flows.
            await _wait_until(lambda: all(len(s.acks) >= 5 for s in senders), "sends ack", senders)
            before = acked()

            # The outage: a crash, while the senders keep sending.
            await asyncio.to_thread(pg.stop, "immediate")
            stopped = time.monotonic()
            nacks_before = [len(s.nacks) for s in senders]
            body = await _wait_readiness(http, server, 503)
            assert body["checks"]["database"].startswith("unreachable"), body
            async with http.get(f"{server.base}/healthz") as live:
                assert live.status == 200, "a database outage is no reason to restart the node"
            await _wait_until(
                lambda: (
                    time.monotonic() - stopped >= OUTAGE_SECONDS
                    and all(
                        len(s.nacks) - n >= NACKS_PER_SENDER
                        for s, n in zip(senders, nacks_before, strict=True)
                    )
                ),
                "every sender has been refused while the database is down",
                senders,
            )
            during = acked()
            body = await _wait_readiness(http, server, 503)
            assert body["checks"]["database"].startswith("unreachable"), body

            # Back: readiness recovers by itself, and so do the sends.
            await asyncio.to_thread(pg.start)
            await _wait_readiness(http, server, 200)
            await _wait_until(lambda: acked() >= during + 10 * SENDERS, "sends ack again", senders)
            stop.set()
            async with asyncio.timeout(PATIENCE):
                await asyncio.gather(*tasks)

            for sender in senders:
                assert not sender.failures, sender.failures
                assert sender.slowest < ACK_TIMEOUT, sender.slowest
                assert sender.client.reconnects == 0 and not sender.client.close_codes
            assert server.proc.returncode is None
            codes = {n["code"] for s in senders for n in s.nacks}
            assert codes, "no send was refused while the database was down"
            # An outage says so, with a delay to wait, rather than passing for a server bug.
            assert codes == {"unavailable"}, codes
            print(
                f"acked before the outage {before}, when it began {during}, in all {acked()}; "
                f"nack codes {sorted(codes)}; slowest answer "
                f"{max(s.slowest for s in senders):.3f} s"
            )

            # Every acknowledged message is stored once, with the id and seq its ack gave.
            acks = {cid: ack for s in senders for cid, ack in s.acks.items()}
            history = await _history(http, server, room, tokens[0])
            by_client_id: dict[str, list[dict[str, Any]]] = {}
            for message in history:
                by_client_id.setdefault(message["clientMsgId"], []).append(message)
            assert sorted(by_client_id) == sorted(acks), "history and acks differ"
            for client_msg_id, ack in acks.items():
                (stored,) = by_client_id[client_msg_id]
                assert (stored["id"], stored["seq"]) == (ack["messageId"], ack["seq"]), stored
            assert [m["seq"] for m in history] == list(range(1, len(history) + 1))

            # The subscriber that stayed connected got each of them once, in order.
            async with asyncio.timeout(PATIENCE):
                while len(watcher.messages(room)) < len(history):
                    await asyncio.sleep(0.05)
            assert [m["seq"] for m in watcher.messages(room)] == [m["seq"] for m in history]
    except BaseException:
        print(server.log.read_text(errors="replace")[-5000:])
        print(pg.log_tail())
        raise
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.kill()

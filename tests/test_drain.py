"""SIGTERM drains the way a load balancer needs it, and a node keeps its id across restarts.

With ``BOLTOREZKA_DRAIN_PRESTOP_SECONDS`` set, ``/readyz`` answers 503 at once while new
connections are still accepted, so a balancer polling readiness takes the node out before
anything is refused; only then do clients get ``server.draining`` and a 1012 close.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import websockets
from boltorezka_client import BoltorezkaClient

from tests.conftest import ROOT
from tests.helpers import cli_env, free_port, url_with_search_path

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

JWT_SECRET = "drain-prestop-secret-0123456789-abcdefghijklmnop"
PATIENCE = 30.0


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/ws"

    async def readiness(self, http: aiohttp.ClientSession) -> int | None:
        try:
            async with http.get(f"{self.base}/readyz") as response:
                return response.status
        except aiohttp.ClientConnectionError:
            return None

    async def exit_code(self) -> int:
        """The code the server exits with, waiting for it (within the test's patience)."""
        async with asyncio.timeout(PATIENCE):
            return await self.proc.wait()

    async def kill(self) -> None:
        """Whatever the test did, leave no server behind."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def wait_status(self, http: aiohttp.ClientSession, status: int) -> None:
        async with asyncio.timeout(PATIENCE):
            while await self.readiness(http) != status:
                assert self.proc.returncode is None, "the server exited early"
                await asyncio.sleep(0.05)


async def _start(
    test_db: TestDatabase, tmp_path: Path, port: int | None = None, **settings: str
) -> ServerProcess:
    port = port or free_port()
    env = cli_env(
        **{
            "DATABASE_URL": url_with_search_path(test_db.url, test_db.schema),
            "DATA_DIR": tempfile.mkdtemp(prefix="bz-drain-"),
            "PORT": str(port),
            "JWT_SECRET": JWT_SECRET,
            "LOG_LEVEL": "warning",
            **settings,
        }
    )
    log = tmp_path / f"server-{port}.log"
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


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _register(http: aiohttp.ClientSession, server: ServerProcess, name: str) -> str:
    async with http.post(
        f"{server.base}/v1/auth/register",
        json={"username": name, "password": "correct horse battery"},
    ) as response:
        assert response.status == 201, await response.text()
        token: str = (await response.json())["accessToken"]
        return token


async def _node_id(server: ServerProcess) -> str:
    async with websockets.connect(server.ws_url) as ws:
        capabilities = json.loads(await ws.recv())
    assert capabilities["type"] == "server.capabilities", capabilities
    node_id: str = capabilities["payload"]["nodeId"]
    return node_id


async def test_sigterm_turns_not_ready_before_it_stops_accepting(
    test_db: TestDatabase, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await _start(test_db, tmp_path, DRAIN_PRESTOP_SECONDS="3", WS_DRAIN_SECONDS="5")
    try:
        await server.wait_status(http, 200)
        early = await _register(http, server, "early")
        late = await _register(http, server, "late")
        async with BoltorezkaClient(server.ws_url, early, reconnect=False) as connected:
            server.proc.send_signal(signal.SIGTERM)
            await server.wait_status(http, 503)
            # Not ready, yet still serving: a new connection authenticates and works.
            async with BoltorezkaClient(server.ws_url, late, reconnect=False) as newcomer:
                assert (await newcomer.request("ping", {"ts": 7}))["ts"] == 7
            assert "server.draining" not in [e["type"] for e in connected.events]
            # Then the drain proper: draining notice, 1012, a clean exit.
            await connected.wait_type("server.draining", timeout=PATIENCE)
            async with asyncio.timeout(PATIENCE):
                while 1012 not in connected.close_codes:
                    await asyncio.sleep(0.05)
        assert await server.exit_code() == 0
    except BaseException:
        print(server.log.read_text(errors="replace")[-5000:])
        raise
    finally:
        await server.kill()


async def test_a_node_keeps_its_id_across_restarts(
    test_db: TestDatabase, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    ids = []
    port: int | None = None
    for _ in range(2):
        server = await _start(test_db, tmp_path, port)
        port = server.port
        try:
            await server.wait_status(http, 200)
            ids.append(await _node_id(server))
            server.proc.send_signal(signal.SIGTERM)
            assert await server.exit_code() == 0
        finally:
            await server.kill()
    assert ids[0] == ids[1] == f"{socket.gethostname()}:{port}"

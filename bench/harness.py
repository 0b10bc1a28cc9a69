"""What every bench needs: a real server in a throwaway schema, and a few measurements."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def wait_healthy(base: str, server: asyncio.subprocess.Process, timeout: float) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            if server.returncode is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


async def stop_process(process: asyncio.subprocess.Process | None, grace: float) -> None:
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@dataclass
class Server:
    base: str
    ws_url: str
    process: asyncio.subprocess.Process
    workdir: Path
    # The throwaway schema the server works in, for benches that seed or count rows.
    schema: str = ""
    # The server's environment: what `boltorezka admin bulk-users` needs to make its accounts.
    env: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def running_server(database_url: str = DEFAULT_DB, **settings: str) -> AsyncIterator[Server]:
    """``boltorezka serve`` on a free port, in a fresh schema dropped afterwards.

    ``settings`` are ``BOLTOREZKA_*`` variables without the prefix.
    """
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    workdir = Path(tempfile.mkdtemp(prefix="bz-bench-"))
    admin = await asyncpg.connect(database_url)
    server: asyncio.subprocess.Process | None = None
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        port = free_port()
        sep = "&" if "?" in database_url else "?"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
        env.update(
            {
                "BOLTOREZKA_DATABASE_URL": f"{database_url}{sep}options=-csearch_path%3D{schema}",
                "BOLTOREZKA_HOST": "127.0.0.1",
                "BOLTOREZKA_PORT": str(port),
                "BOLTOREZKA_DATA_DIR": str(workdir),
                "BOLTOREZKA_JWT_SECRET": secrets.token_urlsafe(48),
                "BOLTOREZKA_LOG_LEVEL": "warning",
                "BOLTOREZKA_REGISTER_RATE_PER_MINUTE": "100000",
                "BOLTOREZKA_WS_CONNECT_RATE_PER_MINUTE": "100000",
                # Every bench client connects from 127.0.0.1.
                "BOLTOREZKA_WS_MAX_PER_ADDRESS": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({f"BOLTOREZKA_{key}": value for key, value in settings.items()})
        base = f"http://127.0.0.1:{port}"
        with (workdir / "server.log").open("wb") as log:
            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "boltorezka", "serve", env=env, stdout=log, stderr=log
            )
        await wait_healthy(base, server, 60)
        yield Server(base, f"ws://127.0.0.1:{port}/v1/ws", server, workdir, schema, env)
    finally:
        await stop_process(server, 15)
        with contextlib.suppress(Exception):
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)

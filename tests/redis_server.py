"""A redis-server of a test's own, on its own loopback port, to kill and restart at will.

Tests that break Redis never touch the machine's shared one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.helpers import free_port

REDIS_SERVER = shutil.which("redis-server")
PATIENCE = 30.0


def require_program(path: str | None, name: str) -> str:
    """The program's path; without it the test is skipped, or fails on CI, where .ci/run
    installs it."""
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


class PrivateRedis:
    """A redis-server on its own loopback port, to kill and start again at will."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL: Redis gets no chance to close its clients' connections."""
        assert self._process is not None
        self._process.kill()
        self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.kill()

    async def wait_up(self) -> None:
        async with asyncio.timeout(PATIENCE):
            while True:
                client = aioredis.Redis.from_url(self.url)
                try:
                    if await client.ping():
                        return
                except (OSError, RedisError):
                    await asyncio.sleep(0.05)
                finally:
                    await client.aclose()

"""Running Debian's coturn for tests, with the project's own test configuration."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = ROOT / "coturn" / "start-test.sh"


@dataclass
class TurnServer:
    port: int
    secrets: tuple[str, ...]
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        port: int = tcp.getsockname()[1]
    return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"coturn exited early with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("coturn did not start listening in time")


@contextlib.contextmanager
def run_coturn(*secrets: str, userdb: Path | None = None) -> Iterator[TurnServer]:
    """coturn on a free port; with ``userdb`` the secrets live in its SQLite database."""
    if shutil.which("turnserver") is None:
        message = "coturn is not installed (apt-get install coturn); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the TURN tests for real
        pytest.skip(message)
    port = _free_port()
    low = random.randrange(40000, 59000, 200)
    env = {**os.environ, "TURN_USERDB": str(userdb)} if userdb is not None else None
    process = subprocess.Popen(
        ["bash", str(START_SCRIPT), str(port), str(low), str(low + 199), *secrets],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_listening(port, process, time.monotonic() + 15)
        yield TurnServer(port, secrets, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def allocate(turn: TurnServer, username: str, password: str) -> bool:
    """Ask coturn for a relay allocation with these credentials, through aiortc's ICE stack."""
    try:
        async with asyncio.timeout(5):
            transport, _ = await create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=("127.0.0.1", turn.port),
                username=username,
                password=password,
                lifetime=60,
            )
    except TransactionFailed:
        return False
    relayed = transport.get_extra_info("sockname")
    transport.close()
    return bool(relayed)


def rotate(userdb: Path, action: str, secret: str) -> None:
    """Add or remove a secret in a running coturn's database with coturn/rotate-secret.sh."""
    env = {
        **os.environ,
        "TURN_USERDB": str(userdb),
        "TURN_REALM": "boltorezka.test",
        "TURN_SECRET": secret,
    }
    subprocess.run(
        ["bash", str(ROOT / "coturn" / "rotate-secret.sh"), action],
        env=env,
        check=True,
        capture_output=True,
        timeout=20,
    )

"""Shared by the load benches: the baseline server, the load tester as a subprocess, and
CPU/RSS sampling of server processes (and their PostgreSQL backends) from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from harness import ROOT, free_port, stop_process, wait_healthy

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PG_PORT_HEX = f"{5432:04X}"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return None


def postgres_client_ports(pid: int) -> set[int]:
    """Local ports of ``pid``'s TCP connections to port 5432 (its pool's sockets)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[9] in inodes and parts[2].endswith(f":{PG_PORT_HEX}"):
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


async def postgres_backends(database_url: str, server_pid: int) -> set[int]:
    """PostgreSQL backend pids serving ``server_pid`` (matched by client port, so other
    users of the same PostgreSQL are not counted)."""
    ports = postgres_client_ports(server_pid)
    if not ports:
        return set()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", list(ports)
        )
    finally:
        await conn.close()
    return {row["pid"] for row in rows}


@dataclass
class Sampler:
    """Cumulative CPU of a set of processes over time, for reading any window afterwards."""

    pids: set[int]
    samples: list[tuple[float, float]] = field(default_factory=list)
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def sample(self) -> None:
        for pid in list(self.pids):
            value = cpu_seconds(pid)
            if value is not None:
                # A process found late counts from when it was found, not its whole life.
                self.first.setdefault(pid, value)
                self.last[pid] = value
        total = sum(self.last[pid] - self.first[pid] for pid in self.last)
        self.samples.append((time.time(), total))

    def between(self, start: float, end: float) -> float:
        def at(moment: float) -> float:
            before = [v for t, v in self.samples if t <= moment]
            return before[-1] if before else (self.samples[0][1] if self.samples else 0.0)

        return at(end) - at(start)


async def sample_while(
    samplers: list[Sampler], task: asyncio.Task[Any], interval: float = 0.2
) -> None:
    while not task.done():
        for sampler in samplers:
            sampler.sample()
        await asyncio.wait({task}, timeout=interval)
    for sampler in samplers:
        sampler.sample()


async def bulk_users(env: dict[str, str], out: Path, count: int, room_size: int) -> None:
    rooms = max(1, count // room_size)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "boltorezka", "admin", "bulk-users", "--count", str(count),
        "--rooms", str(rooms), "--room-size", str(min(room_size, count)), "--out", str(out),
        env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(300):
        if await process.wait() != 0:
            raise RuntimeError("boltorezka admin bulk-users failed")


async def loadtest(
    url: str, tokens: Path, out: Path, args: list[str], timeout: float
) -> dict[str, Any]:
    """Run the load tester in its own processes; return its JSON summary."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "boltorezka_client.loadtest", "--url", url,
        "--tokens", str(tokens), "--json", str(out), "--no-progress", *args,
        env={**os.environ, "PYTHONPATH": str(ROOT / "clients" / "python")},
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            await process.wait()
    finally:
        await stop_process(process, 10)
    summary: dict[str, Any] = json.loads(await asyncio.to_thread(out.read_text))
    return summary


@contextlib.asynccontextmanager
async def baseline_server(workdir: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    with (workdir / "baseline.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "baseline_broadcast.py"), "--port", str(port),
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", process, 30)
        yield f"ws://127.0.0.1:{port}/v1/ws", process
    finally:
        await stop_process(process, 5)


def raise_open_files_limit() -> int:
    """Servers started from here inherit it; thousands of sockets need more than 1024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard

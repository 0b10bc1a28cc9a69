"""Connection churn soak: does a server that sees clients come and go keep what it holds flat?

Workers connect, authenticate, join their room, send a few messages and disconnect, over
and over, for ``--seconds``. The server's resident memory and open file descriptors (from
/proc), its live asyncio tasks, its PostgreSQL connections (pg_stat_activity, matched by
the server's own client ports) and its ``boltorezka_ws_connections`` gauge (/metrics) are
read at the start, in the middle and at the end, once every socket has closed. A leak
shows as fds, tasks or connections that keep growing with the number of sessions served;
RSS grows a little and then levels off as the allocator settles. Prints numbers; asserts
nothing.

The server exports no task count, so the bench starts it with a ``sitecustomize`` of its
own on ``PYTHONPATH``: on SIGUSR1, in the server's main thread, it appends
``len(asyncio.all_tasks())`` to a file. Nothing else about the server changes.

    python bench/churn_soak.py                        # 60 s, 20 workers
    python bench/churn_soak.py --seconds 20 --workers 10 --messages 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parent.parent / "clients" / "python"),
]

from boltorezka_client import BoltorezkaClient  # noqa: E402
from harness import DEFAULT_DB, percentile, running_server  # noqa: E402
from loadrun import bulk_users, postgres_backends, raise_open_files_limit, rss_bytes  # noqa: E402

TASKS_FILE_VARIABLE = "BZ_SOAK_TASKS_FILE"
# Loaded by every Python process that has its directory on PYTHONPATH; it acts only in
# ``boltorezka serve`` with the variable set. A signal handler runs in the main thread
# between bytecodes, where the event loop is the running one.
PROBE = f"""
import os, signal, sys
_path = os.environ.get({TASKS_FILE_VARIABLE!r})
if _path and sys.argv[1:2] == ["serve"]:
    import asyncio

    def _report(signum, frame):
        try:
            count = len(asyncio.all_tasks(asyncio.get_running_loop()))
        except RuntimeError:
            count = -1
        with open(_path, "a") as out:
            out.write(f"{{count}}\\n")

    signal.signal(signal.SIGUSR1, _report)
"""


@dataclass
class Sample:
    label: str
    rss_mb: float
    fds: int
    tasks: int | None
    db_connections: int
    ws_connections: float | None
    sessions: int


@dataclass
class Stats:
    sessions: int = 0
    messages: int = 0
    session_seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def lines_of(path: Path) -> list[str]:
    """The lines the probe wrote so far (a few bytes: reading them never blocks for long)."""
    return path.read_text().splitlines() if path.exists() else []


async def task_count(pid: int, path: Path) -> int | None:
    """Ask the probe in the server for its live asyncio tasks; None if it does not answer."""
    before = len(lines_of(path))
    os.kill(pid, signal.SIGUSR1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while True:
                lines = lines_of(path)
                if len(lines) > before:
                    value = int(lines[-1])
                    return value if value >= 0 else None
                await asyncio.sleep(0.02)
    return None


async def gauge(http: aiohttp.ClientSession, base: str, name: str) -> float | None:
    """One unlabelled sample from /metrics."""
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def sample(
    label: str,
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    tasks_file: Path,
    database_url: str,
    stats: Stats,
) -> Sample:
    return Sample(
        label=label,
        rss_mb=(rss_bytes(pid) or 0) / 2**20,
        fds=open_fds(pid),
        tasks=await task_count(pid, tasks_file),
        db_connections=len(await postgres_backends(database_url, pid)),
        ws_connections=await gauge(http, base, "boltorezka_ws_connections"),
        sessions=stats.sessions,
    )


async def churn(
    url: str,
    users: list[dict[str, Any]],
    room_of: dict[str, str],
    worker: int,
    args: argparse.Namespace,
    stats: Stats,
    until: float,
) -> None:
    """One worker: a whole session at a time, each as a different user, until ``until``."""
    turn = worker
    while time.monotonic() < until:
        user = users[turn % len(users)]
        turn += args.workers
        started = time.perf_counter()
        try:
            async with BoltorezkaClient(
                url, user["accessToken"], reconnect=False, request_timeout=10
            ) as client:
                room = room_of[user["id"]]
                await client.join(room)
                for i in range(args.messages):
                    await client.send_message(room, f"churn {worker}.{turn}.{i}")
                    stats.messages += 1
        except Exception as exc:  # counted and shown: a soak reports, it does not stop
            stats.errors[type(exc).__name__] += 1
            continue
        stats.sessions += 1
        stats.session_seconds.append(time.perf_counter() - started)


async def bench(args: argparse.Namespace) -> None:
    limit = raise_open_files_limit()
    probe_dir = Path(tempfile.mkdtemp(prefix="bz-soak-probe-"))
    (probe_dir / "sitecustomize.py").write_text(PROBE)
    tasks_file = probe_dir / "tasks.txt"
    # The harness passes this process's environment on to the server.
    os.environ[TASKS_FILE_VARIABLE] = str(tasks_file)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(probe_dir), os.environ.get("PYTHONPATH", "")) if p
    )
    try:
        stats, samples, elapsed = await soak(args, tasks_file)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    report(args, stats, samples, elapsed, limit)


async def soak(args: argparse.Namespace, tasks_file: Path) -> tuple[Stats, list[Sample], float]:
    stats = Stats()
    samples: list[Sample] = []
    async with (
        asyncio.timeout(args.seconds + args.timeout),
        running_server(
            args.database_url,
            SFU="off",
            ACCESS_TOKEN_TTL="86400",
            CHAT_SEND_BURST="1000000",
            CHAT_SEND_PER_SECOND="1000000",
        ) as server,
        # A connection per request, closed after it: a keep-alive one would stay in the
        # readings (a handler task and a file descriptor the soak did not cause).
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
    ):
        pid = server.process.pid
        tokens = server.workdir / "tokens.json"
        await bulk_users(server.env, tokens, args.users, args.room_size)
        document: dict[str, Any] = json.loads(tokens.read_text())
        users: list[dict[str, Any]] = document["users"]
        room_of = {member: room["id"] for room in document["rooms"] for member in room["members"]}
        await asyncio.sleep(1.0)  # let start-up settle before the first reading
        base = server.base

        async def read(label: str) -> None:
            samples.append(
                await sample(label, http, base, pid, tasks_file, args.database_url, stats)
            )

        await read("start")
        began = time.monotonic()
        until = began + args.seconds
        workers = [
            asyncio.create_task(churn(server.ws_url, users, room_of, w, args, stats, until))
            for w in range(args.workers)
        ]
        await asyncio.sleep(args.seconds / 2)
        await read("middle")
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - began
        # The end: once the server has let go of every socket (or given up waiting).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while (await gauge(http, base, "boltorezka_ws_connections") or 0) > 0:
                    await asyncio.sleep(0.1)
        await read("end")
    return stats, samples, elapsed


def report(
    args: argparse.Namespace, stats: Stats, samples: list[Sample], elapsed: float, limit: int
) -> None:
    durations = [s * 1000 for s in stats.session_seconds] or [0.0]
    errors = ", ".join(f"{name} {count}" for name, count in stats.errors.most_common()) or "none"
    print(
        f"churn soak: {args.workers} workers, {args.users} users, {args.messages} messages per "
        f"session, {elapsed:.0f} s; open-files limit {limit}"
    )
    print(
        f"sessions {stats.sessions} ({stats.sessions / elapsed:.1f}/s), messages "
        f"{stats.messages}; session (connect, auth, join, sends, close) p50 "
        f"{statistics.median(durations):.1f} ms, p95 {percentile(durations, 95):.1f} ms; "
        f"errors: {errors}"
    )

    def show(value: float | int | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    rows: list[tuple[str, str, str]] = [
        ("server RSS MB", "rss_mb", ".1f"),
        ("open fds", "fds", "d"),
        ("asyncio tasks", "tasks", "d"),
        ("DB connections", "db_connections", "d"),
        ("ws connections (gauge)", "ws_connections", ".0f"),
        ("sessions served so far", "sessions", "d"),
    ]
    print(f"{'':<26}" + "".join(f"{s.label:>10}" for s in samples))
    for label, attribute, fmt in rows:
        cells = "".join(f"{show(getattr(s, attribute), fmt):>10}" for s in samples)
        print(f"{label:<26}{cells}")
    print(
        "(the pool keeps the connections it opened, up to BOLTOREZKA_DB_POOL_MAX, for "
        "asyncpg's 300 s idle lifetime: one open fd each)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to churn")
    parser.add_argument("--workers", type=int, default=20, help="sessions in flight at once")
    parser.add_argument("--messages", type=int, default=3, help="messages sent per session")
    parser.add_argument("--users", type=int, default=200, help="accounts the sessions rotate")
    parser.add_argument("--room-size", type=int, default=20)
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="hard limit beyond --seconds, seconds"
    )
    parser.add_argument("--database-url", default=DEFAULT_DB)
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

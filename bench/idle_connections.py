"""What an idle connection costs: server RSS per connection and CPU per connection set-up.

N load-tester clients connect (authenticated, one room joined each) and then stay idle,
against Boltorezka and against bench/baseline_broadcast.py. RSS is read from /proc before
the clients arrive and while they all sit idle; CPU over the ramp-up, divided by the
clients connected. Prints numbers; asserts nothing.

    python bench/idle_connections.py                      # 2,000 connections
    python bench/idle_connections.py --connections 19000  # near the open-files limit here
    python bench/idle_connections.py --profile /tmp/prof  # py-spy stacks of each server
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DEFAULT_DB, running_server
from loadrun import (
    Sampler,
    baseline_server,
    bulk_users,
    loadtest,
    raise_open_files_limit,
    rss_bytes,
)


async def measure(
    name: str, url: str, pid: int, tokens: Path, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # let start-up settle before the "before" reading
    before = rss_bytes(pid) or 0
    cpu = Sampler({pid})
    rss: list[tuple[float, int]] = []
    scenario = [
        "--clients", str(args.connections), "--rate", "0", "--duration", str(args.hold),
        "--ramp-up", str(args.ramp_up), "--processes", str(args.processes), "--drain", "0",
        "--request-timeout", "60",
    ]  # fmt: skip
    run = asyncio.create_task(
        loadtest(url, tokens, workdir / f"{name}.json", scenario, args.timeout / 2)
    )
    profiler = None
    if args.profile is not None:
        # Samples the server's own stacks over the ramp-up, where set-up CPU is counted.
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--duration", str(int(args.ramp_up)),
            "--rate", "250", "--format", "raw", "--output", str(args.profile / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    while not run.done():
        cpu.sample()
        rss.append((time.time(), rss_bytes(pid) or 0))
        await asyncio.wait({run}, timeout=0.25)
    summary = run.result()
    if profiler is not None:
        await profiler.wait()
    for error in summary["errors"][:3]:
        print(f"{name}: {error}", file=sys.stderr)
    phases = summary["phases"]
    # Idle: after everyone is connected, before they leave.
    idle = [value for at, value in rss if phases["sendStart"] + 1 <= at <= phases["sendEnd"]]
    connected = max(1, summary["connections"]["ok"])
    return {
        "connected": summary["connections"]["ok"],
        "failed": summary["connections"]["failed"],
        "connect_p99": summary["latencyMs"]["connect"]["p99"],
        "rss_before": before,
        "rss_idle": max(idle, default=0),
        "rss_per_conn": (max(idle, default=before) - before) / connected,
        "cpu_ms_per_conn": cpu.between(phases["start"], phases["sendStart"]) / connected * 1e3,
    }


async def bench(args: argparse.Namespace) -> None:
    limit = raise_open_files_limit()
    results: dict[str, dict[str, Any]] = {}
    async with (
        asyncio.timeout(args.timeout),
        running_server(
            args.database_url, WS_OUTBOUND_QUEUE="256", SFU="off", ACCESS_TOKEN_TTL="3600"
        ) as server,
    ):
        workdir = Path(tempfile.mkdtemp(prefix="bz-idle-", dir=server.workdir))
        tokens = workdir / "tokens.json"
        await bulk_users(server.env, tokens, args.connections, args.room_size)
        results["boltorezka"] = await measure(
            "boltorezka", server.ws_url, server.process.pid, tokens, workdir, args
        )
        async with baseline_server(workdir) as (url, process):
            results["baseline"] = await measure("baseline", url, process.pid, tokens, workdir, args)
    print(
        f"idle connections: {args.connections} clients (authenticated, one room of "
        f"{args.room_size} joined each), held {args.hold:g} s; open-files limit {limit}"
    )
    print(f"{'':<32}" + "".join(f"{name:>14}" for name in results))
    rows: list[tuple[str, str]] = [
        ("connected / failed", "{connected}/{failed}"),
        ("connect p99 ms", "{connect_p99:.1f}"),
        ("server RSS before MB", "{rss_before_mb:.1f}"),
        ("server RSS idle MB", "{rss_idle_mb:.1f}"),
        ("RSS per connection KB", "{rss_per_conn_kb:.1f}"),
        ("CPU ms per connection set-up", "{cpu_ms_per_conn:.2f}"),
    ]
    for r in results.values():
        r.update(
            rss_before_mb=r["rss_before"] / 2**20,
            rss_idle_mb=r["rss_idle"] / 2**20,
            rss_per_conn_kb=r["rss_per_conn"] / 1024,
            connect_p99=r["connect_p99"] or 0.0,
        )
    for label, template in rows:
        print(f"{label:<32}" + "".join(f"{template.format(**r):>14}" for r in results.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--room-size", type=int, default=50)
    parser.add_argument("--ramp-up", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=10.0, help="idle seconds, all connected")
    parser.add_argument("--processes", type=int, default=2, help="load tester processes")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit, seconds")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory for py-spy profiles of each server over the ramp-up (raw stacks)",
    )
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

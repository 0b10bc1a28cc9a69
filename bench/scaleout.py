"""Scale-out: deliveries/s with 1, 2 and 3 nodes on one workload, and the CPU a node spends
on rooms it has no member of.

Starts a private ``redis-server`` on a free loopback port and N ``boltorezka serve`` nodes
on one throwaway schema, routed by that Redis. Accounts come from ``boltorezka admin
bulk-users``; the load tester spreads the clients round-robin over the nodes' URLs, so
every room has members on every node and each message crosses Redis.

Then the bystander run: three nodes, the load only on nodes 1 and 2, node 3 holding a few
idle clients joined to rooms of their own. Node 3's CPU over the send phase is compared
with its CPU over a quiet window of the same length before it; with routing by room the
difference is noise (the heartbeat's), not a share of the traffic. The bench also counts
the Redis channels node 3 is subscribed to, which should be its own rooms and users only.

Prints numbers; asserts nothing. Server, Redis, PostgreSQL and load generator share the
machine's cores, so with more nodes than cores the totals measure routing overhead, not
added capacity.

    python bench/scaleout.py                                # 300 clients, rooms of 10, 1 msg/s
    python bench/scaleout.py --clients 600 --room-size 20 --seconds 30 --nodes 1,2,3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))

from boltorezka_client import BoltorezkaClient
from harness import DEFAULT_DB, ROOT, free_port, stop_process, wait_healthy
from loadrun import Sampler, bulk_users, raise_open_files_limit, sample_while


@dataclass
class Node:
    name: str
    ws_url: str
    process: asyncio.subprocess.Process


@dataclass
class Deployment:
    nodes: list[Node]
    env: dict[str, str]
    redis_url: str
    workdir: Path


@contextlib.asynccontextmanager
async def private_redis(workdir: Path) -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(OSError, aioredis.RedisError):
                    if await client.ping():
                        break
                await asyncio.sleep(0.05)
        yield url
    finally:
        await client.aclose()
        await stop_process(process, 5)


@contextlib.asynccontextmanager
async def deployment(database_url: str, count: int) -> AsyncIterator[Deployment]:
    """``count`` nodes on one fresh schema and one private Redis."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    workdir = Path(tempfile.mkdtemp(prefix="bz-scaleout-"))
    admin = await asyncpg.connect(database_url)
    nodes: list[Node] = []
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        async with private_redis(workdir) as redis_url:
            sep = "&" if "?" in database_url else "?"
            env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
            env.update(
                {
                    "BOLTOREZKA_DATABASE_URL": f"{database_url}{sep}"
                    f"options=-csearch_path%3D{schema}",
                    "BOLTOREZKA_HOST": "127.0.0.1",
                    "BOLTOREZKA_DATA_DIR": str(workdir),
                    "BOLTOREZKA_JWT_SECRET": secrets.token_urlsafe(48),
                    "BOLTOREZKA_REDIS_URL": redis_url,
                    "BOLTOREZKA_LOG_LEVEL": "warning",
                    "BOLTOREZKA_SFU": "off",
                    "BOLTOREZKA_REGISTER_RATE_PER_MINUTE": "100000",
                    "BOLTOREZKA_WS_CONNECT_RATE_PER_MINUTE": "100000",
                    "BOLTOREZKA_WS_MAX_PER_ADDRESS": "0",
                    "BOLTOREZKA_CHAT_SEND_BURST": "100000",
                    "BOLTOREZKA_CHAT_SEND_PER_SECOND": "100000",
                    "BOLTOREZKA_WS_OUTBOUND_QUEUE": "4096",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            for index in range(count):
                port = free_port()
                node_env = {
                    **env,
                    "BOLTOREZKA_PORT": str(port),
                    "BOLTOREZKA_NODE_ID": f"node-{index + 1}",
                }
                with (workdir / f"node-{index + 1}.log").open("wb") as log:
                    process = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "boltorezka", "serve",
                        env=node_env, stdout=log, stderr=log,
                    )  # fmt: skip
                nodes.append(Node(f"node-{index + 1}", f"ws://127.0.0.1:{port}/v1/ws", process))
                # One at a time: the first applies the migrations the others then find done.
                await wait_healthy(f"http://127.0.0.1:{port}", process, 60)
            yield Deployment(nodes, env, redis_url, workdir)
    finally:
        await asyncio.gather(*(stop_process(node.process, 15) for node in nodes))
        with contextlib.suppress(Exception):
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def run_load(
    urls: list[str], tokens: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "boltorezka_client.loadtest",
        *(part for url in urls for part in ("--url", url)),
        "--tokens", str(tokens), "--json", str(out), "--no-progress",
        "--clients", str(args.clients), "--rate", str(args.rate),
        "--duration", str(args.seconds), "--ramp-up", str(args.ramp_up),
        "--processes", str(args.processes), "--drain", str(args.drain),
        "--request-timeout", "30",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "PYTHONPATH": str(ROOT / "clients" / "python")},
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(args.seconds + args.ramp_up + args.drain + 120):
            await process.wait()
    finally:
        await stop_process(process, 10)
    summary: dict[str, Any] = json.loads(await asyncio.to_thread(out.read_text))
    return summary


async def measured_load(
    deploy: Deployment, loaded: list[Node], tokens: Path, name: str, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the load against ``loaded``; CPU of every node over the send phase and drain."""
    samplers = {node.name: Sampler({node.process.pid}) for node in deploy.nodes}
    run = asyncio.create_task(
        run_load([node.ws_url for node in loaded], tokens, deploy.workdir / f"{name}.json", args)
    )
    await sample_while(list(samplers.values()), run)
    summary = run.result()
    start, end = summary["phases"]["sendStart"], summary["phases"]["sendEnd"] + args.drain
    return summary, {n: s.between(start, end) for n, s in samplers.items()}


async def scaling_run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    async with deployment(args.database_url, count) as deploy:
        tokens = deploy.workdir / "tokens.json"
        await bulk_users(deploy.env, tokens, args.clients, args.room_size)
        summary, cpu = await measured_load(deploy, deploy.nodes, tokens, f"n{count}", args)
        return {"summary": summary, "cpu": cpu}


async def channels_of(redis_url: str) -> dict[str, int]:
    """Subscriber counts of every Redis pub/sub channel with at least one subscriber."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        names = await client.pubsub_channels()
        counts = await client.pubsub_numsub(*names) if names else []
        return {name.decode() if isinstance(name, bytes) else name: int(n) for name, n in counts}
    finally:
        await client.aclose()


async def bystander_run(args: argparse.Namespace) -> dict[str, Any]:
    """Load on nodes 1 and 2; node 3 holds idle members of other rooms only."""
    async with deployment(args.database_url, 3) as deploy:
        tokens = deploy.workdir / "tokens.json"
        idle_tokens = deploy.workdir / "idle.json"
        await bulk_users(deploy.env, tokens, args.clients, args.room_size)
        idle_env = {**deploy.env}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "boltorezka", "admin", "bulk-users", "--count", "20",
            "--rooms", "4", "--room-size", "5", "--prefix", "idle-", "--out", str(idle_tokens),
            env=idle_env, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await process.wait() != 0:
            raise RuntimeError("boltorezka admin bulk-users failed for the idle accounts")
        idle = json.loads(idle_tokens.read_text())
        bystander = deploy.nodes[2]
        clients = [
            BoltorezkaClient(bystander.ws_url, user["accessToken"], reconnect=False)
            for user in idle["users"]
        ]
        await asyncio.gather(*(client.connect() for client in clients))
        by_id = {user["id"]: client for user, client in zip(idle["users"], clients, strict=True)}
        for room in idle["rooms"]:
            await asyncio.gather(
                *(by_id[m].join(room["id"]) for m in room["members"] if m in by_id)
            )
        quiet = Sampler({bystander.process.pid})
        quiet.sample()
        started = time.time()
        await asyncio.sleep(args.seconds)
        quiet.sample()
        quiet_cpu = quiet.between(started, time.time())
        summary, cpu = await measured_load(deploy, deploy.nodes[:2], tokens, "bystander", args)
        channels = await channels_of(deploy.redis_url)
        await asyncio.gather(*(client.close() for client in clients))
        return {
            "summary": summary,
            "cpu": cpu,
            "quiet_cpu": quiet_cpu,
            "channels": channels,
            "idle_rooms": [room["id"] for room in idle["rooms"]],
        }


def report(args: argparse.Namespace, runs: dict[int, dict[str, Any]], by: dict[str, Any]) -> None:
    window = args.seconds + args.drain
    print(
        f"scale-out: {args.clients} clients round-robin over the nodes, rooms of "
        f"{args.room_size}, {args.rate:g} msg/s each, {args.seconds:g} s send + "
        f"{args.drain:g} s drain; one private Redis, one PostgreSQL schema"
    )
    print(f"{'nodes':>5} {'acked/s':>9} {'delivered/s':>12} {'lost':>6} {'dup':>5} "
          f"{'deliv p99 ms':>13} {'CPU s per node':>30} {'µs/copy (all nodes)':>20}")  # fmt: skip
    for count, run in runs.items():
        s = run["summary"]
        cpu = run["cpu"]
        delivered = max(1, s["messages"]["delivered"])
        per_copy = sum(cpu.values()) / delivered * 1e6
        p99 = s["latencyMs"]["delivery"]["p99"]
        print(
            f"{count:>5} {s['throughputPerSecond']['acked']:>9.1f} "
            f"{s['throughputPerSecond']['delivered']:>12.1f} {s['messages']['lost']:>6} "
            f"{s['messages']['duplicated']:>5} {'-' if p99 is None else f'{p99:.1f}':>13} "
            f"{' '.join(f'{v:.2f}' for v in cpu.values()):>30} {per_copy:>20.1f}"
        )
    if by:
        s = by["summary"]
        loaded = by["cpu"]
        own = [name for name in by["channels"] if any(r in name for r in by["idle_rooms"])]
        print(
            "bystander: load on node-1 and node-2 only; node-3 holds 20 idle clients in "
            "4 rooms of its own"
        )
        print(f"  delivered copies (nodes 1, 2): {s['messages']['delivered']}, lost "
              f"{s['messages']['lost']}")  # fmt: skip
        print(f"  node-3 CPU over {args.seconds:g} s quiet: {by['quiet_cpu']:.3f} s; over the "
              f"{window:g} s of load: {loaded['node-3']:.3f} s "
              f"(node-1 {loaded['node-1']:.2f} s, node-2 {loaded['node-2']:.2f} s)")  # fmt: skip
        extra = loaded["node-3"] - by["quiet_cpu"] * window / args.seconds
        print(f"  node-3 CPU attributable to the load: {extra:+.3f} s")
        print(f"  Redis channels with subscribers: {len(by['channels'])}, of them naming "
              f"node-3's idle rooms: {len(own)}")  # fmt: skip


async def bench(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    runs: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(args.timeout):
        for count in args.nodes:
            runs[count] = await scaling_run(count, args)
        by = await bystander_run(args) if not args.no_bystander else {}
    report(args, runs, by)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second per client")
    parser.add_argument("--seconds", type=float, default=20.0, help="send phase, after ramp-up")
    parser.add_argument("--ramp-up", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=1, help="load tester processes")
    parser.add_argument(
        "--nodes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 2, 3],
        help="node counts to run, comma-separated (default 1,2,3)",
    )
    parser.add_argument("--no-bystander", action="store_true", help="skip the bystander run")
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit, seconds")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

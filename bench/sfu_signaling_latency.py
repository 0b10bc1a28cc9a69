"""Does SFU media work slow down signaling? WebSocket round trips with and without media.

Starts ``python -m boltorezka serve`` (which spawns its SFU process) against the local
PostgreSQL in a fresh schema, and measures ``ping`` → ``ack`` round trips from an idle
fourth client: first with no media (baseline), then while a three-party ``sfu`` call
forwards synthetic audio and video. Media clients run in a worker process of their own,
so the measuring client's event loop carries nothing but its pings. Prints a table.

    python bench/sfu_signaling_latency.py [--seconds 10] [--baseline-seconds 10]

Everything is bounded (``--timeout``); the server, the SFU, the worker and the schema are
removed at the end whatever happens. Media stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python"), str(ROOT / "bench")]

from boltorezka_client import BoltorezkaClient, NackError  # noqa: E402
from harness import free_port, percentile, stop_process, wait_healthy  # noqa: E402

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"
PASSWORD = "bench password 12345"


# --- the media worker (a process of its own) -----------------------------------------------


async def media_worker(config: dict[str, Any]) -> None:
    """Three participants in one sfu call; prints READY once all see each other, DONE at end."""
    import aioice.ice

    from tests.sfu_media import MediaPeer, loopback_only

    aioice.ice.get_host_addresses = loopback_only
    url, room = config["ws_url"], config["room"]
    size = (config["width"], config["height"])
    clients = [BoltorezkaClient(url, token) for token in config["tokens"]]
    peers: list[MediaPeer] = []
    pumps: list[asyncio.Task[None]] = []
    try:
        for ws in clients:
            await ws.connect()
            await ws.join(room)
        started = await clients[0].request("call.start", {"roomId": room, "mode": "sfu"})
        call_id = started["call"]["callId"]
        results = [started] + [
            await ws.request("call.join", {"callId": call_id}) for ws in clients[1:]
        ]
        ids = [r["participantId"] for r in results]

        for ws, colour in zip(clients, ("red", "green", "blue"), strict=True):

            async def send(kind: str, payload: dict[str, Any], ws: BoltorezkaClient = ws) -> None:
                for _ in range(100):  # the SFU may still be starting: sfu_unavailable is retryable
                    try:
                        await ws.request(kind, {"callId": call_id, **payload})
                        return
                    except NackError as exc:
                        if exc.code != "sfu_unavailable":
                            raise
                        await asyncio.sleep(0.2)
                raise RuntimeError("the SFU never became available")

            peer = MediaPeer(colour, colour, send, fps=config["fps"], size=size)
            peers.append(peer)

            async def pump(ws: BoltorezkaClient = ws, peer: MediaPeer = peer) -> None:
                kinds = ("rtc.offer", "rtc.answer", "rtc.ice")
                while True:
                    with contextlib.suppress(TimeoutError):
                        event = await ws.wait_for(lambda e: e.get("type") in kinds, timeout=60)
                        peer.deliver(event["type"], event["payload"])

            pumps.append(asyncio.create_task(pump()))
        for peer in peers:
            await peer.offer()
        for peer, pid in zip(peers, ids, strict=True):
            await peer.wait_frames([o for o in ids if o != pid], video=3, audio=5, timeout=60)

        def counts() -> dict[str, int]:
            total = {"video": 0, "audio": 0}
            for peer in peers:
                for (_, kind), frames in peer.frames.items():
                    total[kind] += frames
            return total

        print("READY " + json.dumps(counts()), flush=True)
        # Run until the parent closes our stdin (or a hard cap passes).
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config["max_seconds"]):
                await loop.run_in_executor(None, sys.stdin.read)
        print("DONE " + json.dumps(counts()), flush=True)
    finally:
        for task in pumps:
            task.cancel()
        for peer in peers:
            await peer.close()
        for ws in clients:
            await ws.close()


# --- the orchestrating process -------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU time of a process, from /proc (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sfu_pid(server_pid: int) -> int | None:
    try:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        with contextlib.suppress(OSError):
            if b"sfu" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    return None


@dataclass
class Row:
    name: str
    samples: list[float]
    cpu: dict[str, float]
    fps: float | None


class CpuMeter:
    """CPU use of named processes over a ``with`` block, as a fraction of one core."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.usage: dict[str, float] = {}
        self.wall = 0.0

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._began = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.monotonic() - self._began
        self.usage = {
            name: (cpu_seconds(pid) - self._start[name]) / self.wall
            for name, pid in self.pids.items()
        }


async def measure(ws: BoltorezkaClient, seconds: float, interval: float) -> list[float]:
    """Ping round trips in milliseconds, one every ``interval`` for ``seconds``."""
    samples: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.perf_counter()
        await ws.request("ping", {"ts": int(time.time() * 1000)}, timeout=5)
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - began)))
    return samples


async def setup_users(base: str) -> tuple[str, list[str]]:
    """Four users and a private room they all belong to; (room id, access tokens)."""
    async with aiohttp.ClientSession() as http:
        users = []
        for _ in range(4):
            name = f"bench{uuid.uuid4().hex[:10]}"
            async with http.post(
                f"{base}/v1/auth/register", json={"username": name, "password": PASSWORD}
            ) as response:
                assert response.status == 201, await response.text()
                users.append(await response.json())
        owner = {"Authorization": f"Bearer {users[0]['accessToken']}"}
        async with http.post(
            f"{base}/v1/rooms", json={"name": "bench", "kind": "private"}, headers=owner
        ) as response:
            assert response.status == 201, await response.text()
            room: str = (await response.json())["room"]["id"]
        for user in users[1:]:
            async with http.post(
                f"{base}/v1/rooms/{room}/members",
                json={"userId": user["user"]["id"], "role": "member"},
                headers=owner,
            ) as response:
                assert response.status == 201, await response.text()
    return room, [u["accessToken"] for u in users]


async def read_line(worker: asyncio.subprocess.Process, prefix: str, timeout: float) -> str:
    assert worker.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = (await worker.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"the media worker exited before {prefix}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()


async def bench(args: argparse.Namespace) -> None:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    workdir = Path(tempfile.mkdtemp(prefix="bz-bench-"))
    admin = await asyncpg.connect(args.database_url)
    server = worker = None
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
        sep = "&" if "?" in args.database_url else "?"
        database_url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
        env.update(
            {
                "BOLTOREZKA_DATABASE_URL": database_url,
                "BOLTOREZKA_HOST": "127.0.0.1",
                "BOLTOREZKA_PORT": str(port),
                "BOLTOREZKA_DATA_DIR": str(workdir),
                "BOLTOREZKA_JWT_SECRET": secrets.token_urlsafe(48),
                "BOLTOREZKA_SFU_ICE_ADDRESSES": "127.0.0.1",
                "BOLTOREZKA_LOG_LEVEL": "warning",
                "BOLTOREZKA_REGISTER_RATE_PER_MINUTE": "1000",
                "PYTHONUNBUFFERED": "1",
            }
        )
        with (workdir / "server.log").open("wb") as log:
            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "boltorezka", "serve", env=env, stdout=log, stderr=log
            )
        await wait_healthy(base, server, 60)
        room, tokens = await setup_users(base)
        ws_url = f"ws://127.0.0.1:{port}/v1/ws"

        rows: list[Row] = []
        async with BoltorezkaClient(ws_url, tokens[3]) as idle:
            await measure(idle, 1.0, args.interval)  # warm-up
            pids = {"server": server.pid, "sfu": sfu_pid(server.pid), "clients": None}
            with CpuMeter(pids) as cpu:
                baseline = await measure(idle, args.baseline_seconds, args.interval)
            rows.append(Row("baseline (no media)", baseline, cpu.usage, None))

            config = {
                "ws_url": ws_url,
                "room": room,
                "tokens": tokens[:3],
                "fps": args.fps,
                "width": args.width,
                "height": args.height,
                "max_seconds": args.seconds + 60,
            }
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--media-worker",
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            ready = json.loads(await read_line(worker, "READY ", 90))
            pids = {"server": server.pid, "sfu": sfu_pid(server.pid), "clients": worker.pid}
            with CpuMeter(pids) as cpu:
                loaded = await measure(idle, args.seconds, args.interval)
            assert worker.stdin is not None
            worker.stdin.close()
            done = json.loads(await read_line(worker, "DONE ", 30))
            # Frames decoded by the clients while measuring, per forwarded video stream (6).
            fps = (done["video"] - ready["video"]) / cpu.wall / 6
            rows.append(Row("3-party sfu call", loaded, cpu.usage, fps))

        print()
        print(
            "SFU signaling latency: ping->ack from an idle client, "
            f"one every {args.interval * 1000:.0f} ms; "
            f"media {args.width}x{args.height}@{args.fps} fps video + 48 kHz tone per participant"
        )
        print(f"machine: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}")
        header = (
            f"{'phase':<21}{'pings':>6}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}"
            f"{'server':>8}{'sfu':>6}{'clients':>8}{'fwd fps':>8}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            samples = row.samples
            clients = f"{row.cpu['clients']:.0%}" if row.fps else "-"
            fps = f"{row.fps:.1f}" if row.fps else "-"
            print(
                f"{row.name:<21}{len(samples):>6}{statistics.median(samples):>8.2f}"
                f"{percentile(samples, 95):>8.2f}{percentile(samples, 99):>8.2f}"
                f"{max(samples):>8.2f}{row.cpu['server']:>8.0%}{row.cpu['sfu']:>6.0%}"
                f"{clients:>8}{fps:>8}"
            )
        print(
            "server/sfu/clients: CPU use of each process (100% = one core); "
            "fwd fps: video frames\nper second each client decoded per forwarded stream "
            "(3 senders x 2 receivers)"
        )
    finally:
        await stop_process(worker, 10)
        await stop_process(server, 15)  # SIGTERM: the server drains and stops its SFU
        with contextlib.suppress(Exception):
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="media phase length")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between pings")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--timeout", type=float, default=180.0, help="hard cap for the whole run")
    parser.add_argument("--media-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.media_worker:
        asyncio.run(media_worker(json.loads(args.media_worker)))
        return 0

    async def bounded() -> None:
        async with asyncio.timeout(args.timeout):
            await bench(args)

    asyncio.run(bounded())
    return 0


if __name__ == "__main__":
    sys.exit(main())

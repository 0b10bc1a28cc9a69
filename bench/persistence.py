"""How many chat messages one node persists per second, and how long their acks take.

N authenticated WebSocket clients send ``chat.send`` open-loop (on schedule, without
waiting for the previous ack) at a target total rate spread over R rooms, for a few
offered rates in turn, then into a single room. For each run it prints the offered and
achieved rate, the messages the database holds afterwards, and ack latency (send to
``ack``, i.e. to durable commit) p50/p95/p99/max. Last, the bench drives a
``MessageWriter`` of its own at a few rates, without WebSocket or server in the way: the
store path's capacity. It asserts nothing.

Accounts, sessions, rooms and memberships are written straight into the server's
throwaway schema (signing up through the API would spend the run on argon2 hashes); the
tokens are signed with the secret the bench hands the server.

    python bench/persistence.py                 # 200 clients, 500/2000/5000/s; one room at 500/s
    python bench/persistence.py --rates 1000,3000 --rooms 20 --clients 100 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from harness import DEFAULT_DB, Server, percentile, running_server  # noqa: E402

from boltorezka.auth.tokens import TokenCodec  # noqa: E402
from boltorezka.config import SigningKey  # noqa: E402
from boltorezka.store.writer import MessageWriter  # noqa: E402


@dataclass
class Run:
    name: str
    offered: float
    sent: int = 0
    acked: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    stored: int = 0
    unanswered: int = 0


@dataclass
class Account:
    user_id: uuid.UUID
    token: str


async def seed(
    conn: asyncpg.Connection, codec: TokenCodec, clients: int, rooms: int, shared_by: int
) -> tuple[list[Account], list[uuid.UUID], uuid.UUID]:
    """``clients`` users in ``rooms`` public rooms, plus one room of the first ``shared_by``."""
    tag = uuid.uuid4().hex[:6]
    names = [f"p{tag}_{i}" for i in range(clients)]
    users = await conn.fetch(
        "INSERT INTO users (username, display_name, password_hash) "
        "SELECT n, n, '!unusable' FROM unnest($1::text[]) AS t(n) RETURNING id",
        names,
    )
    user_ids = [row["id"] for row in users]
    sessions = await conn.fetch(
        "INSERT INTO device_sessions (user_id, device_name, expires_at) "
        "SELECT u, 'bench', now() + interval '1 day' FROM unnest($1::uuid[]) AS t(u) "
        "RETURNING id, user_id",
        user_ids,
    )
    accounts = [
        Account(row["user_id"], codec.issue(row["user_id"], row["id"])[0]) for row in sessions
    ]
    room_rows = await conn.fetch(
        "INSERT INTO rooms (kind, name) SELECT 'public', 'bench ' || i "
        "FROM generate_series(0, $1) AS i RETURNING id",
        rooms,
    )
    room_ids = [row["id"] for row in room_rows]
    shared, spread = room_ids[0], room_ids[1:]
    member_rooms: list[uuid.UUID] = []
    member_users: list[uuid.UUID] = []
    for i, account in enumerate(accounts):
        member_rooms.append(spread[i % rooms])
        member_users.append(account.user_id)
        if i < shared_by:
            member_rooms.append(shared)
            member_users.append(account.user_id)
    await conn.execute(
        "INSERT INTO room_members (room_id, user_id, role) "
        "SELECT r, u, 'member' FROM unnest($1::uuid[], $2::uuid[]) AS t(r, u)",
        member_rooms,
        member_users,
    )
    return accounts, spread, shared


class Sender:
    """One WebSocket: sends on a schedule, times every ack."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.sent_at: dict[str, float] = {}
        self.run: Run | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            started = self.sent_at.pop(message.get("requestId") or "", None)
            if started is None or self.run is None:
                continue
            if message["type"] == "ack":
                self.run.acked += 1
                self.run.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                code = message["payload"]["code"]
                self.run.refused[code] = self.run.refused.get(code, 0) + 1

    async def send_for(self, run: Run, room_id: str, rate: float, seconds: float) -> None:
        interval = 1 / rate
        # Spread the clients' first sends over one interval so they do not arrive in step.
        next_at = time.perf_counter() + interval * secrets.randbelow(1000) / 1000
        deadline = time.perf_counter() + seconds
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            request_id = uuid.uuid4().hex
            frame = {
                "v": 1,
                "type": "chat.send",
                "requestId": request_id,
                "payload": {"roomId": room_id, "clientMsgId": request_id, "body": "x" * 100},
            }
            self.sent_at[request_id] = time.perf_counter()
            await self.ws.send_str(json.dumps(frame))
            run.sent += 1
            next_at += interval


async def connect(http: aiohttp.ClientSession, server: Server, token: str) -> Sender:
    ws = await http.ws_connect(server.ws_url, max_msg_size=0)
    await ws.receive_json()  # server.capabilities
    await ws.send_json({"v": 1, "type": "auth", "requestId": "auth", "payload": {"token": token}})
    answer = await ws.receive_json()
    if answer["type"] != "ack":
        raise RuntimeError(f"auth failed: {answer}")
    return Sender(ws)


async def measure(
    conn: asyncpg.Connection,
    senders: list[Sender],
    rooms: list[str],
    run: Run,
    seconds: float,
) -> Run:
    before = await conn.fetchval("SELECT count(*) FROM messages")
    for sender in senders:
        sender.run = run
    started = time.perf_counter()
    per_client = run.offered / len(senders)
    await asyncio.gather(
        *(
            s.send_for(run, rooms[i % len(rooms)], per_client, seconds)
            for i, s in enumerate(senders)
        )
    )
    # Wait (a bounded time) for the acks still on their way; report what never came.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while any(s.sent_at for s in senders):
                await asyncio.sleep(0.02)
    run.elapsed = time.perf_counter() - started
    run.unanswered = sum(len(s.sent_at) for s in senders)
    for sender in senders:
        sender.sent_at.clear()
    run.stored = await conn.fetchval("SELECT count(*) FROM messages") - before
    return run


async def measure_writer(
    pool: asyncpg.Pool, accounts: list[Account], rooms: list[uuid.UUID], rate: float, seconds: float
) -> Run:
    """The store path alone: this process's own MessageWriter, no WebSocket, no server."""
    run = Run("writer alone, in-process", rate)
    writer = MessageWriter(pool)
    writer.start()
    before = await pool.fetchval("SELECT count(*) FROM messages")

    async def one(account: Account, room: uuid.UUID) -> None:
        started = time.perf_counter()
        result = await writer.submit(room, account.user_id, uuid.uuid4().hex, "x" * 100, None)
        if result.outcome == "created":
            run.acked += 1
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
        else:
            run.refused[result.outcome] = run.refused.get(result.outcome, 0) + 1

    started = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        i = n % len(accounts)
        tasks.append(asyncio.create_task(one(accounts[i], rooms[i % len(rooms)])))
        run.sent += 1
    await asyncio.gather(*tasks)
    run.elapsed = time.perf_counter() - started
    await writer.close()
    run.stored = await pool.fetchval("SELECT count(*) FROM messages") - before
    return run


def report(runs: list[Run], clients: int) -> None:
    print(f"chat persistence: {clients} WebSocket clients, 100-byte bodies, open-loop sends")
    header = (
        f"{'run':<26}{'offered/s':>10}{'acked/s':>9}{'stored/s':>9}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}  unanswered, refused"
    )
    print(header)
    for run in runs:
        lat = run.latencies_ms or [float("nan")]
        print(
            f"{run.name:<26}{run.offered:>10.0f}{run.acked / run.elapsed:>9.0f}"
            f"{run.stored / run.elapsed:>9.0f}"
            + "".join(f"{percentile(lat, q):>8.1f}" for q in (50, 95, 99))
            + f"{max(lat):>8.1f}  {run.unanswered}, {run.refused or '-'}"
        )


async def bench(args: argparse.Namespace) -> None:
    secret = secrets.token_urlsafe(48)
    codec = TokenCodec((SigningKey.from_secret(secret),), 3600)
    async with (
        running_server(
            args.database_url,
            JWT_SECRET=secret,
            # The server refuses tokens that live longer than it issues them.
            ACCESS_TOKEN_TTL="3600",
            CHAT_SEND_BURST="1000000",
            CHAT_SEND_PER_SECOND="1000000",
            WS_CONNECT_RATE_PER_MINUTE="1000000",
            WS_OUTBOUND_QUEUE="4096",
            SFU="off",
        ) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        conn = await asyncpg.connect(
            args.database_url, server_settings={"search_path": server.schema}
        )
        try:
            accounts, spread, shared = await seed(
                conn, codec, args.clients, args.rooms, args.single_clients
            )
            senders = [await connect(http, server, a.token) for a in accounts]
            spread_ids = [str(r) for r in spread]
            runs: list[Run] = []
            for rate in args.rates:
                run = Run(f"{args.rooms} rooms", rate)
                runs.append(await measure(conn, senders, spread_ids, run, args.seconds))
                print(f"  done: {run.name} at {rate:.0f}/s", file=sys.stderr)
            for rate in args.single_rates:
                run = Run(f"1 room, {args.single_clients} senders", rate)
                single = senders[: args.single_clients]
                runs.append(await measure(conn, single, [str(shared)], run, args.seconds))
                print(f"  done: {run.name} at {rate:.0f}/s", file=sys.stderr)
            for sender in senders:
                await sender.ws.close()
                sender.reader.cancel()
            for rate in args.writer_rates:
                pool = await asyncpg.create_pool(
                    args.database_url,
                    min_size=2,
                    max_size=4,
                    server_settings={"search_path": server.schema},
                )
                try:
                    runs.append(await measure_writer(pool, accounts, spread, rate, args.seconds))
                finally:
                    await pool.close()
                print(f"  done: writer alone at {rate:.0f}/s", file=sys.stderr)
        finally:
            await conn.close()
    report(runs, args.clients)


def rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    # As many rooms as clients by default: every connected member of a room gets an unread
    # notification per message, and this bench measures storing, not fan-out.
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--rates", type=rates, default=[500.0, 2000.0, 5000.0])
    parser.add_argument("--single-rates", type=rates, default=[500.0])
    parser.add_argument(
        "--single-clients", type=int, default=10, help="members sending into the one room"
    )
    parser.add_argument("--writer-rates", type=rates, default=[5000.0, 10000.0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(bench(args), timeout=900))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Chat load over the realtime plane: ack latency, fan-out latency and throughput.

N scripted clients join one room; each sends messages at a fixed rate for a while. It
reports how long acks take (request to durable commit and back), how long a message takes
to reach the other members (send to receive, same clock), and messages stored and
delivered per second. The server runs as a subprocess against the local PostgreSQL in a
throwaway schema; everything stops by itself.

    python bench/ws_chat_load.py --clients 20 --rate 5 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parent.parent / "clients" / "python"),
]

from boltorezka_client import BoltorezkaClient  # noqa: E402
from harness import DEFAULT_DB, percentile, running_server  # noqa: E402

PASSWORD = "bench password 12345"


async def sign_up(http: aiohttp.ClientSession, base: str, count: int) -> list[dict[str, str]]:
    async def one(i: int) -> dict[str, str]:
        body = {"username": f"load{i}_{uuid.uuid4().hex[:6]}", "password": PASSWORD}
        async with http.post(f"{base}/v1/auth/register", json=body) as response:
            data = await response.json()
            return {"id": data["user"]["id"], "token": data["accessToken"]}

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def bench(args: argparse.Namespace) -> None:
    async with (
        running_server(
            args.database_url,
            CHAT_SEND_BURST="100000",
            CHAT_SEND_PER_SECOND="100000",
            WS_OUTBOUND_QUEUE="4096",
            SFU="off",
        ) as server,
        aiohttp.ClientSession() as http,
    ):
        users = await sign_up(http, server.base, args.clients)
        owner = {"Authorization": f"Bearer {users[0]['token']}"}
        async with http.post(
            f"{server.base}/v1/rooms", json={"name": "load", "kind": "public"}, headers=owner
        ) as response:
            room = (await response.json())["room"]["id"]
        for user in users[1:]:
            async with http.post(
                f"{server.base}/v1/rooms/{room}/join",
                headers={"Authorization": f"Bearer {user['token']}"},
            ):
                pass

        clients = [BoltorezkaClient(server.ws_url, u["token"], reconnect=False) for u in users]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(c.join(room) for c in clients))
        sent_at: dict[str, float] = {}
        ack_ms: list[float] = []
        deliver_ms: list[float] = []
        received = 0

        async def listen(client: BoltorezkaClient, me: str) -> None:
            nonlocal received
            while True:
                event = await client.wait_type("chat.message", timeout=3600)
                message = event["payload"]["message"]
                if message["senderId"] != me and message["clientMsgId"] in sent_at:
                    deliver_ms.append(
                        (time.perf_counter() - sent_at[message["clientMsgId"]]) * 1000
                    )
                    received += 1

        async def talk(client: BoltorezkaClient) -> None:
            interval = 1 / args.rate
            deadline = time.perf_counter() + args.seconds
            next_at = time.perf_counter()
            while time.perf_counter() < deadline:
                client_msg_id = uuid.uuid4().hex
                sent_at[client_msg_id] = start = time.perf_counter()
                await client.send_message(room, "x" * args.body, client_msg_id=client_msg_id)
                ack_ms.append((time.perf_counter() - start) * 1000)
                next_at += interval
                await asyncio.sleep(max(0, next_at - time.perf_counter()))

        listeners = [
            asyncio.create_task(listen(c, u["id"])) for c, u in zip(clients, users, strict=True)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(talk(c) for c in clients))
        sent = len(ack_ms)
        expected = sent * (args.clients - 1)
        async with asyncio.timeout(30):
            while received < expected:
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    print(
        f"chat load: {args.clients} clients in one room, {args.rate} msg/s each, "
        f"{args.seconds:.0f} s, {args.body}-byte bodies"
    )
    print(f"{'':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, samples in (("ack (durable)", ack_ms), ("fan-out delivery", deliver_ms)):
        print(
            f"{name:<22}"
            + "".join(f"{percentile(samples, q):>9.2f}" for q in (50, 95, 99))
            + f"{max(samples):>9.2f}"
        )
    print(
        f"stored {sent} messages ({sent / elapsed:.0f}/s), delivered {received} frames "
        f"({received / elapsed:.0f}/s), none missing: {received == expected}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second per client")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--body", type=int, default=200, help="message body size")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Resume, ordering, slow consumers and draining, against a real server and database.

Every wait is bounded; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import string
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
import websockets
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient, ConnectionLost, NackError
from websockets.exceptions import ConnectionClosed

from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import (
    PASSWORD,
    Account,
    add_member,
    cli_env,
    create_room,
    free_port,
    register_many,
    url_with_search_path,
)

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

# Generous limits so the tests measure delivery, not the rate limiters.
FAST = {
    "chat_send_burst": 100_000,
    "chat_send_per_second": 100_000.0,
    "ws_connect_rate_per_minute": 100_000,
}
WAIT = 20.0  # upper bound of every "until" wait; normally they finish in milliseconds


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting until {what}")


class RecordingClient(BoltorezkaClient):
    """The scripted client, also recording the seq of every chat.message off the wire.

    The client drops duplicates and fills gaps itself, which would hide a server that
    sends a seq twice or out of order; ``wire`` shows exactly what the server sent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire: defaultdict[str, list[int]] = defaultdict(list)

    async def _handle(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "chat.message":
            payload = frame["payload"]
            self.wire[payload["roomId"]].append(payload["message"]["seq"])
        await super()._handle(frame)


def seqs(client: BoltorezkaClient, room: str) -> list[int]:
    return [message["seq"] for message in client.messages(room)]


def ws_url_of(app: TestClient[Any, Any]) -> str:
    return f"ws://127.0.0.1:{app.server.port}/v1/ws"


async def room_with(app: TestClient[Any, Any], count: int) -> tuple[str, list[Account]]:
    """A private room and ``count`` accounts, the first one its owner, all members."""
    accounts = await register_many(app, count)
    room = await create_room(app, accounts[0])
    for account in accounts[1:]:
        await add_member(app, room, accounts[0], account)
    return room, accounts


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text exposition (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == name or sample.startswith(name + "{"):
            total += float(value)
    return total


async def read_metric(app: TestClient[Any, Any], name: str) -> float:
    response = await app.get("/metrics")
    assert response.status == 200
    return metric(await response.text(), name)


async def metric_until(
    app: TestClient[Any, Any], name: str, predicate: Callable[[float], bool], what: str
) -> float:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate(value := await read_metric(app, name)):
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what} ({name})")
    return value


@pytest.fixture
async def app(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    test_client = await make_client(services, **FAST)
    try:
        yield test_client
    finally:
        await test_client.close()


# --- a. A client dropped during a burst resumes everything, once, in order ----------------


async def test_client_dropped_mid_burst_resumes_every_message_once_in_order(
    app: TestClient[Any, Any],
) -> None:
    room, (alice, bob) = await room_with(app, 2)
    url = ws_url_of(app)
    async with (
        BoltorezkaClient(url, alice.access_token, reconnect=False) as a,
        RecordingClient(url, bob.access_token, reconnect=True, backoff_initial=0.05) as b,
    ):
        await b.join(room)
        first_socket = b.websocket
        for i in range(1, 61):
            ack = await a.send_message(room, f"burst {i}", client_msg_id=f"burst-{i}")
            assert ack["seq"] == i
            if i == 20:
                # Drop the TCP connection under the client, as a network failure would
                # (code 1006: not one of the codes after which the client gives up).
                first_socket.transport.abort()
        await eventually(lambda: b.reconnects >= 1, "B reconnected")
        await eventually(lambda: b.last_seq.get(room) == 60, "B caught up to seq 60")
        assert b.websocket is not first_socket
        assert b.close_codes == [1006]
        assert seqs(b, room) == list(range(1, 61))
        assert [m["body"] for m in b.messages(room)] == [f"burst {i}" for i in range(1, 61)]
        # The server itself sent every seq once and in order across the two connections.
        assert b.wire[room] == list(range(1, 61))
        assert b.gaps_filled == 0


# --- b. Messages posted while a resume is replaying ---------------------------------------


async def test_messages_posted_during_a_resume_arrive_once_in_order(
    app: TestClient[Any, Any],
) -> None:
    room, (alice, dave, carol) = await room_with(app, 3)
    url = ws_url_of(app)
    already = 210

    async def post(client: BoltorezkaClient, tag: str, count: int) -> list[int]:
        acked = []
        for i in range(count):
            ack = await client.send_message(room, f"{tag} {i}", client_msg_id=f"{tag}-{i}")
            acked.append(ack["seq"])
        return acked

    async with (
        BoltorezkaClient(url, alice.access_token, reconnect=False) as a,
        BoltorezkaClient(url, dave.access_token, reconnect=False) as d,
    ):
        await asyncio.gather(post(a, "before-a", already // 2), post(d, "before-d", already // 2))
        async with RecordingClient(url, carol.access_token, reconnect=False) as c:
            # C has seen up to k: the replay spans two batches of 200 while more arrive.
            k = 5
            sent_a, sent_d, joined = await asyncio.gather(
                post(a, "during-a", 40), post(d, "during-d", 40), c.join(room, last_seq=k)
            )
            final = already + 80
            assert sorted(sent_a + sent_d) == list(range(already + 1, final + 1))
            assert joined["replayed"] >= already - k
            await eventually(lambda: c.last_seq.get(room) == final, f"C caught up to {final}")
            assert seqs(c, room) == list(range(k + 1, final + 1))
            assert c.wire[room] == list(range(k + 1, final + 1))
            assert c.gaps_filled == 0


# --- c. Concurrent senders: the server orders what it publishes ---------------------------


async def test_concurrent_senders_reach_a_subscriber_once_in_seq_order(
    app: TestClient[Any, Any],
) -> None:
    room, accounts = await room_with(app, 6)
    url = ws_url_of(app)
    senders = [BoltorezkaClient(url, acc.access_token, reconnect=False) for acc in accounts[:5]]
    passive = RecordingClient(url, accounts[5].access_token, reconnect=False)

    async def post(client: BoltorezkaClient, tag: int) -> list[int]:
        acked = []
        for i in range(20):
            ack = await client.send_message(room, f"s{tag} {i}", client_msg_id=f"s{tag}-{i}")
            acked.append(ack["seq"])
        return acked

    await asyncio.gather(*(c.connect() for c in [*senders, passive]))
    try:
        await passive.join(room)
        results = await asyncio.gather(*(post(c, n) for n, c in enumerate(senders)))
        assert sorted(seq for acked in results for seq in acked) == list(range(1, 101))
        await eventually(lambda: passive.last_seq.get(room) == 100, "the subscriber has 100")
        assert passive.wire[room] == list(range(1, 101))
        assert seqs(passive, room) == list(range(1, 101))
        assert passive.gaps_filled == 0
    finally:
        await asyncio.gather(*(c.close() for c in [*senders, passive]))


# --- d. A slow consumer is cut off without holding anyone else back -----------------------


async def _request(ws: Any, msg_type: str, payload: dict[str, Any], request_id: str) -> Any:
    await ws.send(
        json.dumps({"v": 1, "type": msg_type, "requestId": request_id, "payload": payload})
    )
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("requestId") == request_id:
                assert frame["type"] == "ack", frame
                return frame["payload"]["result"]


async def test_slow_consumer_is_closed_with_4009_and_others_keep_up(services: Services) -> None:
    slow_app = await make_client(
        services,
        ws_outbound_queue=16,
        ws_send_buffer_bytes=4096,
        ws_close_timeout_seconds=5,
        **FAST,
    )
    try:
        room, (alice, fred, sam) = await room_with(slow_app, 3)
        url = ws_url_of(slow_app)
        async with (
            BoltorezkaClient(url, alice.access_token, reconnect=False) as a,
            RecordingClient(url, fred.access_token, reconnect=False) as f,
        ):
            await f.join(room)
            # No permessage-deflate: what the server queues for S is what fills its buffers.
            s = await websockets.connect(url, ping_interval=None, max_size=None, compression=None)
            try:
                sock = s.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                assert json.loads(await s.recv())["type"] == "server.capabilities"
                await _request(s, "auth", {"token": sam.access_token}, "s-auth")
                await _request(s, "room.join", {"roomId": room}, "s-join")
                gauge = "boltorezka_ws_connections"
                assert await read_metric(slow_app, gauge) == 3
                s.transport.pause_reading()  # S stops reading: its buffers fill up

                total = 300
                rng = random.Random(4009)  # bodies that do not compress away
                alphabet = string.ascii_letters + string.digits
                bodies = [
                    f"{i:04d} " + "".join(rng.choices(alphabet, k=3495)) for i in range(total)
                ]
                acked: list[int] = []

                async def burst() -> None:
                    for i, body in enumerate(bodies):
                        ack = await a.send_message(room, body, client_msg_id=f"big-{i}")
                        acked.append(ack["seq"])

                sender = asyncio.create_task(burst())
                try:
                    await metric_until(
                        slow_app,
                        "boltorezka_ws_queue_overflows_total",
                        lambda v: v >= 1,
                        "S's outbound queue overflowed",
                    )
                    # S is stuck, yet F already has everything acked so far.
                    so_far = len(acked)
                    await eventually(
                        lambda: f.last_seq.get(room, 0) >= so_far, "F kept up while S was stuck"
                    )
                    # S reads again, with an ordinary receive buffer this time.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                    s.transport.resume_reading()
                    received: list[int] = []
                    with pytest.raises(ConnectionClosed) as closed:
                        async with asyncio.timeout(WAIT):
                            while True:
                                frame = json.loads(await s.recv())
                                if frame["type"] == "chat.message":
                                    received.append(frame["payload"]["message"]["seq"])
                    await asyncio.wait_for(sender, WAIT)
                finally:
                    sender.cancel()
            finally:
                await s.close()

            rcvd = closed.value.rcvd
            assert rcvd is not None, f"no close frame reached S (close code {s.close_code})"
            assert rcvd.code == 4009, rcvd
            assert rcvd.reason == "slow_consumer_resume"
            # What S got before the cut is a gapless prefix: nothing skipped, nothing twice.
            assert received == list(range(1, len(received) + 1))
            assert len(received) < total

            await eventually(lambda: f.last_seq.get(room) == total, "F received the whole burst")
            assert acked == list(range(1, total + 1))
            assert f.wire[room] == list(range(1, total + 1))
            assert [m["body"] for m in f.messages(room)] == bodies
            assert f.close_codes == []  # F was never cut off
            await metric_until(slow_app, gauge, lambda v: v == 2, "S is no longer counted")
            closes = await read_metric(slow_app, 'boltorezka_ws_closes_total{code="4009"}')
            assert closes == 1
    finally:
        await slow_app.close()


# --- e. SIGTERM drains: no acknowledged message is lost -----------------------------------

JWT_SECRET = "drain-test-secret-0123456789-abcdefghijklmnopqrs"
assert len(JWT_SECRET) == 48


async def test_sigterm_drains_clients_and_loses_no_acked_message(
    test_db: TestDatabase, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    port = free_port()
    # A short private data dir: the server's local bus socket lives there (sun_path limit).
    data_dir = tempfile.mkdtemp(prefix="bz-drain-")
    env = cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        DATA_DIR=data_dir,
        SFU="off",  # no media process: this test is about the WebSocket plane
        PORT=str(port),
        JWT_SECRET=JWT_SECRET,
        CHAT_SEND_BURST="100000",
        CHAT_SEND_PER_SECOND="100000",
        REGISTER_RATE_PER_MINUTE="1000",
        LOGIN_RATE_PER_MINUTE="1000",
        WS_DRAIN_SECONDS="5",
        WS_CLOSE_TIMEOUT_SECONDS="5",
        LOG_LEVEL="warning",
    )
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "boltorezka",
            "serve",
            env=env,
            cwd=os.fspath(Path(__file__).resolve().parent.parent),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await _drain_scenario(proc, port, pool)
    except BaseException:
        print(log_path.read_text(errors="replace")[-5000:])  # shown by pytest on failure
        raise
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _drain_scenario(proc: asyncio.subprocess.Process, port: int, pool: asyncpg.Pool) -> None:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    assert proc.returncode is None, "the server exited early"
                    try:
                        async with http.get(f"{base}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail("the server never became ready")

        tokens = []
        for i in range(3):
            async with http.post(
                f"{base}/v1/auth/register", json={"username": f"drainer{i}", "password": PASSWORD}
            ) as response:
                assert response.status == 201, await response.text()
                tokens.append((await response.json())["accessToken"])
        owner = {"Authorization": f"Bearer {tokens[0]}"}
        async with http.post(
            f"{base}/v1/rooms", json={"name": "drain", "kind": "public"}, headers=owner
        ) as response:
            assert response.status == 201, await response.text()
            room = (await response.json())["room"]["id"]
        for token in tokens[1:]:
            async with http.post(
                f"{base}/v1/rooms/{room}/join", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200, await response.text()

    url = f"ws://127.0.0.1:{port}/v1/ws"
    clients = [BoltorezkaClient(url, token, reconnect=False) for token in tokens]
    await asyncio.gather(*(c.connect() for c in clients))
    acked: dict[str, str] = {}  # clientMsgId -> messageId
    nacks: list[NackError] = []

    async def chatter(client: BoltorezkaClient, n: int) -> None:
        for i in range(100_000):
            client_msg_id = f"c{n}-{i}"
            try:
                ack = await client.send_message(room, f"{n} says {i}", client_msg_id=client_msg_id)
            except ConnectionLost:
                return
            except NackError as exc:
                nacks.append(exc)
                return
            acked[client_msg_id] = ack["messageId"]

    try:
        await asyncio.gather(*(c.join(room) for c in clients))
        chatters = [asyncio.create_task(chatter(c, n)) for n, c in enumerate(clients)]
        await eventually(lambda: len(acked) >= 60, "60 messages were acknowledged")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*chatters)
        async with asyncio.timeout(WAIT):
            returncode = await proc.wait()
        assert returncode == 0
    finally:
        await asyncio.gather(*(c.close() for c in clients))

    assert nacks == []
    for client in clients:
        types = [event["type"] for event in client.events]
        assert "server.draining" in types, types
        draining = next(e for e in client.events if e["type"] == "server.draining")
        assert draining["payload"]["reconnectAfterMs"] >= 0
        # The first close the client saw is the drain's 1012 (its own close comes after).
        assert client.close_codes[:1] == [1012], client.close_codes

    rows = await pool.fetch(
        "SELECT id::text AS id, seq, sender_id, client_msg_id FROM messages "
        "WHERE room_id = $1 ORDER BY seq",
        uuid.UUID(room),
    )
    stored = {row["client_msg_id"]: row["id"] for row in rows}
    assert len(rows) >= len(acked) >= 60
    lost = {cmid: mid for cmid, mid in acked.items() if stored.get(cmid) != mid}
    assert lost == {}, f"acknowledged but not stored: {lost}"
    assert len({row["id"] for row in rows}) == len(rows)
    assert len({(row["sender_id"], row["client_msg_id"]) for row in rows}) == len(rows)
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))


# --- Resumes bigger than the outbound queue -------------------------------------------------


async def test_a_resume_longer_than_the_outbound_queue_completes_for_a_fast_reader(
    services: Services,
) -> None:
    """A replay is paced to the reader, not pushed into the bounded queue in one go.

    (Regression: room.join used to enqueue a whole replay batch synchronously, so a resume
    longer than ws_outbound_queue closed even an idle, fast reader with 4009 before its
    join was acknowledged.)
    """
    small = await make_client(services, ws_outbound_queue=16, **FAST)
    try:
        room, (alice, bob) = await room_with(small, 2)
        url = ws_url_of(small)
        async with BoltorezkaClient(url, alice.access_token, reconnect=False) as a:
            for i in range(1, 61):
                await a.send_message(room, f"backlog {i}", client_msg_id=f"backlog-{i}")
        async with RecordingClient(url, bob.access_token, reconnect=False) as b:
            joined = await b.join(room, last_seq=0)
            assert joined == {"roomId": room, "lastSeq": 60, "replayed": 60}
            await eventually(lambda: b.last_seq.get(room) == 60, "B has the backlog")
            assert b.wire[room] == list(range(1, 61))
            assert b.close_codes == []
        assert await read_metric(small, "boltorezka_ws_queue_overflows_total") == 0
    finally:
        await small.close()


async def test_one_overflowing_connection_counts_as_one_overflow(services: Services) -> None:
    """boltorezka_ws_queue_overflows_total counts connections, as its help text says.

    (Regression: every frame dropped before the close task ran was counted and logged.)
    """
    small = await make_client(
        services,
        ws_outbound_queue=16,
        ws_send_buffer_bytes=4096,
        ws_close_timeout_seconds=1,
        **FAST,
    )
    try:
        room, (alice, sam) = await room_with(small, 2)
        url = ws_url_of(small)
        rng = random.Random(16)
        alphabet = string.ascii_letters + string.digits
        async with BoltorezkaClient(url, alice.access_token, reconnect=False) as a:
            for i in range(150):
                body = "".join(rng.choices(alphabet, k=3500))
                await a.send_message(room, body, client_msg_id=f"big-{i}")
        s = await websockets.connect(url, ping_interval=None, max_size=None, compression=None)
        try:
            sock = s.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert json.loads(await s.recv())["type"] == "server.capabilities"
            await _request(s, "auth", {"token": sam.access_token}, "s-auth")
            # Resume from the start and stop reading: 525 kB for a 16-frame queue and small
            # socket buffers, far more than the server may hold for one connection.
            s.transport.pause_reading()
            await s.send(
                json.dumps(
                    {
                        "v": 1,
                        "type": "room.join",
                        "requestId": "s-join",
                        "payload": {"roomId": room, "lastSeq": 0},
                    }
                )
            )
            await metric_until(
                small,
                'boltorezka_ws_closes_total{code="4009"}',
                lambda v: v >= 1,
                "the server closed S for resume",
            )
            assert await read_metric(small, "boltorezka_ws_queue_overflows_total") == 1
        finally:
            s.transport.abort()
        assert await read_metric(small, 'boltorezka_ws_closes_total{code="4009"}') == 1
    finally:
        await small.close()


async def test_a_consumer_that_never_reads_again_is_dropped(services: Services) -> None:
    """A peer that stops reading for good loses its socket within the close timeout.

    (Regression: Connection.close() cancelled the writer while it waited in aiohttp's
    drain, which cancelled aiohttp's shared drain future; ws.close() then failed at once
    with CancelledError, _abort() never ran, and the stuck peer kept its socket, handler
    and buffers until it went away by itself.)
    """
    small = await make_client(
        services,
        ws_outbound_queue=16,
        ws_send_buffer_bytes=4096,
        ws_close_timeout_seconds=1,
        **FAST,
    )
    try:
        room, (alice, sam) = await room_with(small, 2)
        url = ws_url_of(small)
        s = await websockets.connect(url, ping_interval=None, max_size=None, compression=None)
        try:
            sock = s.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert json.loads(await s.recv())["type"] == "server.capabilities"
            await _request(s, "auth", {"token": sam.access_token}, "s-auth")
            await _request(s, "room.join", {"roomId": room}, "s-join")
            s.transport.pause_reading()  # and never again
            rng = random.Random(1009)
            alphabet = string.ascii_letters + string.digits
            async with BoltorezkaClient(url, alice.access_token, reconnect=False) as a:
                for i in range(150):  # live traffic: the writer blocks, then the queue fills
                    body = "".join(rng.choices(alphabet, k=3500))
                    await a.send_message(room, body, client_msg_id=f"live-{i}")
                await metric_until(
                    small,
                    "boltorezka_ws_queue_overflows_total",
                    lambda v: v >= 1,
                    "S's queue overflowed",
                )
                # Closing waits at most the close timeout (1 s) for S, then drops it.
                try:
                    async with asyncio.timeout(8):
                        while await read_metric(small, "boltorezka_ws_connections") != 1:
                            await asyncio.sleep(0.05)
                except TimeoutError:
                    pytest.fail("the stuck connection is still open 8 s after its close began")
        finally:
            s.transport.abort()
    finally:
        await small.close()

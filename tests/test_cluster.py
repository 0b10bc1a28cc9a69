"""Three nodes behind a real HAProxy (deploy/haproxy.cfg as shipped), on the test's
PostgreSQL schema, every process on 127.0.0.1; each test runs twice: on one Redis of the
test's own, and on the session's 3-master Redis Cluster (sharded pub/sub).

- A node SIGKILLed mid-burst: its clients reconnect through the balancer to the others and
  resume; every client ends up with every acknowledged message exactly once, in order; a
  user who was only on the dead node shows offline on the others.
- A node drained (SIGTERM) mid-chat: the balancer stops sending it clients, its clients
  move on, and nothing acknowledged is lost.
- A node started late sees the presence of everyone already online elsewhere.
- The node hosting a call drained (SIGTERM) or killed (SIGKILL) mid-call and mid-chat: no
  acknowledged message is lost, another node takes the same call over from PostgreSQL and
  tells its participants (``host_changed``), the participant whose socket was on that node
  rejoins through the balancer with its participant id, and signaling flows again across
  the nodes left. Drained, the node hands the call over as it stops; killed, the call waits
  until the others judge the node silent, and call requests meanwhile are answered with the
  retryable ``call_host_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from boltorezka_client import BoltorezkaClient, ConnectionLost, NackError

from tests.conftest import ROOT
from tests.helpers import cli_env, eventually, free_port, url_with_search_path
from tests.redis_cluster import PrivateRedisCluster
from tests.redis_server import PrivateRedis, require_program

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

HAPROXY = shutil.which("haproxy")
PATIENCE = 40.0
JWT_SECRET = "cluster-test-secret-0123456789-abcdefghijklmnop"
PASSWORD = "correct horse battery"


@dataclass
class Node:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("ab") as sink:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "boltorezka",
                "serve",
                env=self.env,
                cwd=ROOT,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(PATIENCE):
            while True:
                assert self.proc is not None and self.proc.returncode is None, self.output()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.base}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Cluster:
    nodes: list[Node]
    balancer_port: int
    balancer_log: Path
    http: aiohttp.ClientSession
    balancer: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.balancer_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.balancer_port}/v1/ws"

    def start_balancer(self) -> None:
        assert HAPROXY is not None
        env = {
            **os.environ,
            "BOLTOREZKA_LB_BIND": f"127.0.0.1:{self.balancer_port}",
            **{f"BOLTOREZKA_NODE{i + 1}": f"127.0.0.1:{n.port}" for i, n in enumerate(self.nodes)},
        }
        with self.balancer_log.open("ab") as sink:
            self.balancer = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    async def wait_balanced(self, up: int) -> None:
        """Until the balancer answers and ``up`` nodes pass its health checks."""

        async def healthy() -> int:
            count = 0
            for node in self.nodes:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.http.get(f"{node.base}/readyz") as response:
                        count += response.status == 200
            return count

        async with asyncio.timeout(PATIENCE):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.http.get(f"{self.base}/healthz") as response:
                        if response.status == 200 and await healthy() >= up:
                            break
                await asyncio.sleep(0.1)
        # Two passing checks one second apart (rise 2) before the balancer uses a node.
        await asyncio.sleep(2.5)

    async def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        *,
        via: Node | None = None,
    ) -> dict[str, Any]:
        """A REST call through the balancer, or straight to the node ``via``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = via.base if via is not None else self.base
        async with self.http.request(method, base + path, json=body, headers=headers) as response:
            text = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {text}"
            data: dict[str, Any] = json.loads(text) if text else {}
            return data

    async def register(self, name: str, via: Node | None = None) -> tuple[str, str]:
        credentials = {"username": name, "password": PASSWORD}
        data = await self.api("POST", "/v1/auth/register", credentials, via=via)
        return data["user"]["id"], data["accessToken"]


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_url_for_nodes(request: pytest.FixtureRequest) -> str:
    """What the nodes share: a Redis of the test's own, or the session's Redis Cluster."""
    if request.param == "redis":
        private: PrivateRedis = request.getfixturevalue("private_redis")
        await private.wait_up()
        return private.url
    shared: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
    shared.ensure_healthy()
    return shared.url


@pytest.fixture
async def cluster(
    test_db: TestDatabase, redis_url_for_nodes: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    require_program(HAPROXY, "haproxy")
    data_dir = Path(tempfile.mkdtemp(prefix="bz-cluster-"))
    nodes = []
    for i in range(3):
        port = free_port()
        env = cli_env(
            DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
            REDIS_URL=redis_url_for_nodes,
            DATA_DIR=str(data_dir / f"node{i + 1}"),
            NODE_ID=f"node{i + 1}",
            PORT=str(port),
            JWT_SECRET=JWT_SECRET,
            DRAIN_PRESTOP_SECONDS="3",
            WS_DRAIN_SECONDS="5",
            CHAT_SEND_BURST="100000",
            CHAT_SEND_PER_SECOND="100000",
            REGISTER_RATE_PER_MINUTE="10000",
            LOGIN_RATE_PER_MINUTE="10000",
            WS_CONNECT_RATE_PER_MINUTE="10000",
            LOG_LEVEL="warning",
        )
        nodes.append(Node(f"node{i + 1}", port, env, tmp_path / f"node{i + 1}.log"))
    async with aiohttp.ClientSession() as http:
        found = Cluster(nodes, free_port(), tmp_path / "haproxy.log", http)
        try:
            yield found
        except BaseException:
            for node in nodes:
                print(f"--- {node.name}\n{node.output()}")
            print(f"--- haproxy\n{found.balancer_log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            if found.balancer is not None:
                found.balancer.kill()
                found.balancer.wait(timeout=10)
            for node in nodes:
                await node.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


def _node_of(client: BoltorezkaClient) -> str:
    node_id: str = client.capabilities["nodeId"]
    return node_id


async def _start_all(cluster: Cluster) -> None:
    for node in cluster.nodes:
        await node.start()
    for node in cluster.nodes:
        await node.wait_ready(cluster.http)
    cluster.start_balancer()
    await cluster.wait_balanced(up=len(cluster.nodes))


@dataclass
class Room:
    id: str
    tokens: dict[str, str]  # by user name
    user_ids: dict[str, str]


async def _room_with(cluster: Cluster, names: list[str], via: Node | None = None) -> Room:
    accounts = [await cluster.register(name, via) for name in names]
    owner = accounts[0][1]
    body = {"name": "ops", "kind": "private"}
    room = (await cluster.api("POST", "/v1/rooms", body, owner, via=via))["room"]["id"]
    for user_id, _ in accounts[1:]:
        member = {"userId": user_id}
        await cluster.api("POST", f"/v1/rooms/{room}/members", member, owner, via=via)
    return Room(
        room,
        {name: token for name, (_, token) in zip(names, accounts, strict=True)},
        {name: user_id for name, (user_id, _) in zip(names, accounts, strict=True)},
    )


async def _wait_all_seqs(clients: list[BoltorezkaClient], room: str, count: int) -> None:
    expected = list(range(1, count + 1))
    try:
        async with asyncio.timeout(PATIENCE):
            while any(
                sorted({int(m["seq"]) for m in c.messages(room)}) != expected for c in clients
            ):
                await asyncio.sleep(0.1)
    except TimeoutError:
        pass
    for client in clients:
        seqs = [int(m["seq"]) for m in client.messages(room)]
        assert seqs == expected, f"{client.capabilities.get('nodeId')}: {seqs}"


async def _burst(client: BoltorezkaClient, room: str, tag: str, count: int) -> list[int]:
    """Send ``count`` messages one after another; sends are retried across reconnects
    with the same clientMsgId, so each one is acknowledged exactly once."""
    seqs = []
    for i in range(count):
        ack = await client.send_message(room, f"{tag} {i}", client_msg_id=f"{tag}-{i}")
        seqs.append(int(ack["seq"]))
        await asyncio.sleep(0.02)
    return seqs


async def test_a_node_killed_mid_burst_loses_nothing(cluster: Cluster) -> None:
    await _start_all(cluster)
    names = [f"user{i}" for i in range(6)] + ["loner"]
    found = await _room_with(cluster, names)
    room, tokens = found.id, found.tokens
    clients = [BoltorezkaClient(cluster.ws_url, tokens[name]) for name in names[:-1]]
    for client in clients:
        await client.connect()
    placement = {_node_of(c) for c in clients}
    assert len(placement) >= 2, f"leastconn put every client on {placement}"
    # The victim: the node holding the first client; the loner sits there too, directly.
    victim = next(n for n in cluster.nodes if n.name == _node_of(clients[0]))
    loner = BoltorezkaClient(
        f"ws://127.0.0.1:{victim.port}/v1/ws", tokens["loner"], reconnect=False
    )
    await loner.connect()
    watcher = next(c for c in clients if _node_of(c) != victim.name)
    for client in (*clients, loner):
        await client.join(room)
    loner_id = found.user_ids["loner"]

    bursts = [asyncio.create_task(_burst(c, room, f"c{i}", 15)) for i, c in enumerate(clients)]
    await asyncio.sleep(0.3)
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    async with asyncio.timeout(PATIENCE * 2):
        acked = await asyncio.gather(*bursts)

    total = sum(len(seqs) for seqs in acked)
    assert sorted(s for seqs in acked for s in seqs) == list(range(1, total + 1))
    # Every client, moved or not, has every message exactly once and in order.
    await _wait_all_seqs(clients, room, total)
    moved = [c for c in clients if c.reconnects > 0]
    assert moved, "no client was on the killed node"
    assert all(_node_of(c) != victim.name for c in moved)
    # The loner was only on the dead node: the others see them go offline.
    await watcher.wait_type("presence.changed", timeout=PATIENCE, userId=loner_id, status="offline")
    for client in clients:
        await client.close()


async def test_a_drained_node_hands_its_clients_over(cluster: Cluster) -> None:
    await _start_all(cluster)
    names = [f"drainee{i}" for i in range(6)]
    found = await _room_with(cluster, names)
    room, tokens = found.id, found.tokens
    clients = [BoltorezkaClient(cluster.ws_url, tokens[name]) for name in names]
    for client in clients:
        await client.connect()
        await client.join(room)
    victim = next(n for n in cluster.nodes if n.name == _node_of(clients[0]))

    bursts = [asyncio.create_task(_burst(c, room, f"d{i}", 20)) for i, c in enumerate(clients)]
    await asyncio.sleep(0.3)
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(PATIENCE * 2):
        acked = await asyncio.gather(*bursts)
    async with asyncio.timeout(PATIENCE):
        assert await victim.proc.wait() == 0, victim.output()

    total = sum(len(seqs) for seqs in acked)
    await _wait_all_seqs(clients, room, total)
    moved = [c for c in clients if c.reconnects > 0]
    assert moved and all("server.draining" in [e["type"] for e in c.events] for c in moved)
    # New clients go to the nodes left.
    late = BoltorezkaClient(cluster.ws_url, tokens[names[0]])
    await late.connect()
    assert _node_of(late) != victim.name
    await late.close()
    for client in clients:
        await client.close()


async def test_a_node_started_late_sees_everyone_online(cluster: Cluster) -> None:
    first, second, late_node = cluster.nodes
    for node in (first, second):
        await node.start()
        await node.wait_ready(cluster.http)
    found = await _room_with(cluster, ["early1", "early2", "late"], via=first)
    early = [
        BoltorezkaClient(f"ws://127.0.0.1:{node.port}/v1/ws", found.tokens[name])
        for node, name in ((first, "early1"), (second, "early2"))
    ]
    for client in early:
        await client.connect()
    await late_node.start()
    await late_node.wait_ready(cluster.http)
    url = f"ws://127.0.0.1:{late_node.port}/v1/ws"
    async with BoltorezkaClient(url, found.tokens["late"]) as late:
        await late.join(found.id)
        snapshot = await late.wait_type("room.presence", roomId=found.id, timeout=PATIENCE)
        statuses = {m["userId"]: m["status"] for m in snapshot["payload"]["members"]}
        assert statuses[found.user_ids["early1"]] == "online", statuses
        assert statuses[found.user_ids["early2"]] == "online", statuses
    for client in early:
        await client.close()


async def _one_socket_per_node(cluster: Cluster, tokens: list[str]) -> list[BoltorezkaClient]:
    """A client for each token through the balancer, each on a node of its own.

    leastconn sends a new socket where the fewest are open, so a socket that lands on a node
    already taken (one counting a REST keep-alive, say) is held open aside, which steers the
    next attempt elsewhere; the spares close once every client has its node."""
    clients: list[BoltorezkaClient] = []
    spares: list[BoltorezkaClient] = []
    for token in tokens:
        for _ in range(len(cluster.nodes) * 2):
            client = BoltorezkaClient(cluster.ws_url, token)
            await client.connect()
            if _node_of(client) in {_node_of(c) for c in clients}:
                spares.append(client)
                continue
            clients.append(client)
            break
    for spare in spares:
        await spare.close()
    placement = [_node_of(c) for c in clients]
    assert len(set(placement)) == len(tokens), f"clients sit on {placement}"
    return clients


def _call_state(
    call_id: str, *, reason: str | None = None, connected: set[str] | None = None
) -> Callable[[dict[str, Any]], bool]:
    """Matches a ``call.state`` of the call, with ``reason`` if given, and exactly the
    participants ``connected`` (by participant id) shown connected if given."""

    def match(event: dict[str, Any]) -> bool:
        body = event.get("payload", {})
        if event.get("type") != "call.state" or body.get("callId") != call_id:
            return False
        if reason is not None and body.get("reason") != reason:
            return False
        shown = {p["participantId"] for p in body["participants"] if p["connected"]}
        return connected is None or shown == connected

    return match


async def _chatter(
    client: BoltorezkaClient, room: str, tag: str, acked: list[int], until: asyncio.Event
) -> None:
    """Send messages one after another until ``until`` is set, recording each acked seq;
    as in ``_burst``, a send is retried across reconnects with its clientMsgId."""
    index = 0
    while not until.is_set():
        ack = await client.send_message(room, f"{tag} {index}", client_msg_id=f"{tag}-{index}")
        acked.append(int(ack["seq"]))
        index += 1
        await asyncio.sleep(0.05)


async def _rejoin(client: BoltorezkaClient, call_id: str) -> dict[str, Any]:
    """``call.join`` as a client does after its socket moved: a retryable nack (the call
    changing hands) and a socket lost under the request are retried."""
    async with asyncio.timeout(PATIENCE):
        while True:
            try:
                result: dict[str, Any] = await client.request("call.join", {"callId": call_id})
                return result
            except ConnectionLost:
                await client.wait_connected(PATIENCE)
            except NackError as exc:
                if not exc.retryable:
                    raise
                await asyncio.sleep((exc.retry_after_ms or 200) / 1000)


async def _relay_both_ways(
    one: BoltorezkaClient, one_pid: str, two: BoltorezkaClient, two_pid: str, call_id: str
) -> None:
    """An ICE-restart offer from ``one`` reaches ``two``, with a candidate after it, and
    ``two``'s answer comes back."""
    sdp = f"v=0 (ice restart {one_pid})"
    offer = {"callId": call_id, "to": two_pid, "sdp": sdp, "iceRestart": True}
    await one.request("rtc.offer", offer)
    got = await two.wait_type("rtc.offer", timeout=PATIENCE, callId=call_id, sdp=sdp)
    assert got["payload"]["from"] == one_pid
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    await one.request("rtc.ice", {"callId": call_id, "to": two_pid, "candidate": candidate})
    ice = await two.wait_type("rtc.ice", timeout=PATIENCE, callId=call_id, **{"from": one_pid})
    assert ice["payload"]["candidate"] == candidate
    answer = {"callId": call_id, "to": one_pid, "sdp": f"v=0 (answer {two_pid})"}
    await two.request("rtc.answer", {**answer, "iceRestart": True})
    back = await one.wait_type("rtc.answer", timeout=PATIENCE, callId=call_id, sdp=answer["sdp"])
    assert back["payload"]["from"] == two_pid


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["drained", "killed"])
async def test_a_call_and_a_chat_survive_losing_the_calls_host(
    cluster: Cluster, test_db: TestDatabase, how: signal.Signals
) -> None:
    await _start_all(cluster)
    names = ["caller", "callee1", "callee2"]
    found = await _room_with(cluster, names)
    room = found.id
    clients = await _one_socket_per_node(cluster, [found.tokens[name] for name in names])
    for client in clients:
        await client.join(room)
    # The call is held by the node that started it: the caller's.
    mover, *stayers = clients
    host = next(n for n in cluster.nodes if n.name == _node_of(mover))
    started = await mover.request("call.start", {"roomId": room, "mode": "p2p"})
    call_id = started["call"]["callId"]
    pids = [started["participantId"]]
    for client in stayers:
        pids.append((await client.request("call.join", {"callId": call_id}))["participantId"])
    everyone = set(pids)
    for client in clients:
        # Taken out of the events, so that a later match comes after the host is gone.
        await client.wait_for(_call_state(call_id, connected=everyone), timeout=PATIENCE)

    stop = asyncio.Event()
    acked: list[list[int]] = [[] for _ in clients]
    chatter = [
        asyncio.create_task(_chatter(c, room, f"m{i}", acked[i], stop))
        for i, c in enumerate(clients)
    ]
    await eventually(lambda: all(len(a) >= 3 for a in acked), "chat traffic from everyone")
    assert host.proc is not None
    host.proc.send_signal(how)

    # The caller's socket closes (with the drain, or the process); it reconnects through the
    # balancer to a node left, and rejoins the call at once, as a client does.
    await eventually(lambda: mover.reconnects > 0, "the caller reconnected", timeout=PATIENCE)
    await mover.wait_connected(PATIENCE)
    assert _node_of(mover) != host.name
    rejoined = await _rejoin(mover, call_id)
    assert rejoined["call"]["callId"] == call_id, "the same call, not a new one"
    assert rejoined["call"]["state"] == "active"
    assert rejoined["participantId"] == pids[0], "the caller keeps its place"

    # Those whose sockets were elsewhere keep theirs, and hear that the call moved.
    for client in stayers:
        moved = await client.wait_for(_call_state(call_id, reason="host_changed"), timeout=PATIENCE)
        payload = moved["payload"]
        assert payload["state"] == "active", payload
        shown = {p["participantId"]: p["connected"] for p in payload["participants"]}
        assert shown.keys() == everyone, payload
        assert shown[pids[1]] and shown[pids[2]], payload
    async with asyncio.timeout(PATIENCE):
        code = await host.proc.wait()
    assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL), host.output()
    stop.set()
    async with asyncio.timeout(PATIENCE * 2):
        await asyncio.gather(*chatter)

    # Every acknowledged message reached every member exactly once, in order.
    total = sum(len(seqs) for seqs in acked)
    assert sorted(s for seqs in acked for s in seqs) == list(range(1, total + 1))
    await _wait_all_seqs(clients, room, total)

    # Signaling runs through the new host between sockets on different nodes: the caller
    # and whoever is on the other node left, and the two who never moved.
    across = next(i for i in (1, 2) if _node_of(clients[i]) != _node_of(mover))
    await _relay_both_ways(mover, pids[0], clients[across], pids[across], call_id)
    await _relay_both_ways(clients[1], pids[1], clients[2], pids[2], call_id)
    for client in clients:
        await client.wait_for(_call_state(call_id, connected=everyone), timeout=PATIENCE)
    assert not [
        e
        for c in clients
        for e in c.events
        if e.get("type") == "call.state"
        and (e["payload"]["callId"] != call_id or e["payload"]["state"] == "ended")
    ], "the call never ended, and no other began"

    conn = await test_db.connect()
    try:
        calls = await conn.fetch("SELECT id, state, host_node FROM call_sessions")
        participants = await conn.fetch(
            "SELECT id, connection_node FROM call_participants WHERE left_at IS NULL"
        )
    finally:
        await conn.close()
    assert [(str(r["id"]), r["state"]) for r in calls] == [(call_id, "active")]
    left = {n.name for n in cluster.nodes} - {host.name}
    assert calls[0]["host_node"] in left
    assert {str(r["id"]): r["connection_node"] for r in participants} == {
        pid: _node_of(client) for pid, client in zip(pids, clients, strict=True)
    }
    for client in clients:
        await client.close()

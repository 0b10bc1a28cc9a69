"""RUNBOOK.md's commands, run as written.

Every fenced block of RUNBOOK.md sits between ``<!-- runbook:NAME:start -->`` and
``<!-- runbook:NAME:end -->``. The tests here run each block verbatim with bash, against
servers of their own: PostgreSQL clusters with password authentication
(tests/pg_server.py), the embedded PostgreSQL, HAProxy with a self-signed certificate, and
nodes started the way deploy/boltorezka.service starts them. The values a block takes from
the environment (``NODE``, ``DB_PASSWORD``, ``CERT_DIR``…) are the test's; the commands
are the runbook's. What only runs in production (Docker, systemd, public addresses) is
checked instead: the services, files, variables and flags it names exist.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
import websockets
import yaml
from boltorezka_client import BoltorezkaClient, NackError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import boltorezka
from boltorezka.config import Settings
from tests.conftest import ROOT
from tests.helpers import PASSWORD, cli_env, free_port, url_with_search_path
from tests.pg_server import PG_BIN, SERVICE_USER, PrivatePostgres
from tests.redis_server import require_program
from tests.test_drain import ServerProcess

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

RUNBOOK = ROOT / "RUNBOOK.md"
UNIT = ROOT / "deploy" / "boltorezka.service"
COMPOSE = ROOT / "compose.yml"
VENV_BIN = Path(sys.executable).parent
PATIENCE = 60.0
JWT_SECRET = "runbook-test-secret-0123456789-abcdefghijklmnop"
DB_PASSWORD = "runbook-db-password-0123456789"

_MARKED = re.compile(
    r"<!-- runbook:(?P<name>[a-z0-9-]+):start -->\n```(?P<lang>[a-z]*)\n(?P<body>.*?)```\n"
    r"<!-- runbook:(?P=name):end -->",
    re.S,
)


def runbook_blocks() -> dict[str, str]:
    """Every marked block of RUNBOOK.md by name, its text as written."""
    found: dict[str, str] = {}
    for match in _MARKED.finditer(RUNBOOK.read_text(encoding="utf-8")):
        assert match["name"] not in found, f"two blocks named {match['name']}"
        found[match["name"]] = match["body"]
    return found


def block(name: str) -> str:
    blocks = runbook_blocks()
    assert name in blocks, f"RUNBOOK.md lost its {name} block"
    return blocks[name]


def env_lines(name: str) -> dict[str, str]:
    """A block of ``KEY=value`` lines (an environment file) as a mapping."""
    values = {}
    for line in block(name).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and " " not in value, f"{name}: {line!r}"
            values[key] = value
    return values


# How each block is covered: run by the named test, or (production only) checked by it.
RUN = {
    "compose-secrets": "test_compose_secrets_are_the_files_compose_mounts",
    "db-create": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "host-secrets": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "host-env": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "host-shell": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "host-migrate": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "backup-external": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "backup-check": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "restore-external-over": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "restore-external-new": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "upgrade-migrate": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "db-activity": "test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands",
    "embedded-shell": "test_the_embedded_database_is_backed_up_and_restored",
    "backup-embedded": "test_the_embedded_database_is_backed_up_and_restored",
    "restore-embedded": "test_the_embedded_database_is_backed_up_and_restored",
    "node-wait-ready": "test_wss_through_the_tls_balancer_and_a_drain_seen_through_it",
    "node-checks": "test_wss_through_the_tls_balancer_and_a_drain_seen_through_it",
    "lb-run": "test_wss_through_the_tls_balancer_and_a_drain_seen_through_it",
    "tls-cert": "test_wss_through_the_tls_balancer_and_a_drain_seen_through_it",
    "tls-run": "test_wss_through_the_tls_balancer_and_a_drain_seen_through_it",
    "tls-check": "test_wss_through_the_tls_balancer_and_a_drain_seen_through_it",
}
CHECKED = {
    "compose-env": "test_compose_commands_name_what_compose_runs",
    "compose-up": "test_compose_commands_name_what_compose_runs",
    "compose-scale": "test_compose_commands_name_what_compose_runs",
    "upgrade-compose": "test_compose_commands_name_what_compose_runs",
    "backup-compose": "test_compose_commands_name_what_compose_runs",
    "restore-compose": "test_compose_commands_name_what_compose_runs",
    "host-install": "test_host_commands_name_what_the_unit_runs",
    "host-unit": "test_host_commands_name_what_the_unit_runs",
    "host-scale": "test_host_commands_name_what_the_unit_runs",
    "upgrade-node": "test_host_commands_name_what_the_unit_runs",
    "node-kill": "test_host_commands_name_what_the_unit_runs",
    "lb-env": "test_balancer_settings_are_the_variables_the_configs_read",
    "tls-env": "test_balancer_settings_are_the_variables_the_configs_read",
    "turn-env": "test_turn_commands_name_what_boltorezka_and_coturn_read",
    "coturn-start": "test_turn_commands_name_what_boltorezka_and_coturn_read",
    "turn-check": "test_turn_commands_name_what_boltorezka_and_coturn_read",
    "loadtest": "test_load_test_and_bench_commands_use_flags_that_exist",
    "bench": "test_load_test_and_bench_commands_use_flags_that_exist",
}


def test_every_command_block_is_marked_and_covered() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    fences = len(re.findall(r"^```", text, re.M))
    blocks = runbook_blocks()
    assert fences == 2 * len(blocks), "a fenced block in RUNBOOK.md has no runbook markers"
    assert not set(RUN) & set(CHECKED)
    assert set(blocks) == set(RUN) | set(CHECKED), (
        f"not covered: {sorted(set(blocks) - set(RUN) - set(CHECKED))}; "
        f"gone: {sorted(set(RUN) | set(CHECKED) - set(blocks))}"
    )
    here = globals()
    for test in {*RUN.values(), *CHECKED.values()}:
        assert callable(here.get(test)), test


# --- Running blocks --------------------------------------------------------------------


def base_env(**extra: str) -> dict[str, str]:
    """A root shell's environment: no BOLTOREZKA_*, PostgreSQL 16's tools first (the
    servers here are 16), then this virtualenv's ``python`` and ``boltorezka``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
    env.pop("PGPASSFILE", None)
    path = [str(VENV_BIN), env.get("PATH", "")]
    if PG_BIN is not None:
        path.insert(0, str(PG_BIN))
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


async def run_blocks(*names: str, env: dict[str, str], cwd: Path) -> str:
    """The named blocks, one after another in one ``bash -euo pipefail``; their stdout.
    A failing command fails the test with everything it printed."""
    script = "\n".join(block(name) for name in names)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script,
        env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(PATIENCE):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"{names} exited {proc.returncode}:\n{out.decode()}{err.decode()}"
    return out.decode()


class Background:
    """A block left running (a balancer in the foreground), in a process group of its own
    so that stopping it stops what bash started."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, name: str, env: dict[str, str], cwd: Path, log: Path) -> Background:
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-euo", "pipefail", "-c", block(name),
                env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=sink, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return cls(proc, log)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


async def start_serve(env: dict[str, str], port: int, log: Path) -> ServerProcess:
    argv = [str(VENV_BIN / "boltorezka"), "serve"]
    return await _spawn(argv, env, port, log)


async def _spawn(argv: list[str], env: dict[str, str], port: int, log: Path) -> ServerProcess:
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=log.parent, stdin=asyncio.subprocess.DEVNULL,
            stdout=sink, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    return ServerProcess(proc, port, log)


async def stop_serve(server: ServerProcess) -> None:
    """SIGTERM, as a supervisor stops it: a drain, then exit code 0."""
    server.proc.send_signal(signal.SIGTERM)
    assert await server.exit_code() == 0, server.log.read_text(errors="replace")[-3000:]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def api(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    expect: int | tuple[int, ...] = (200, 201),
    tls: ssl.SSLContext | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(
        method, url, json=body, headers=headers, ssl=tls if tls is not None else True
    ) as response:
        text = await response.text()
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status in expected, f"{method} {url}: {response.status} {text}"
        return json.loads(text) if text else None


class Chat:
    """A few users, rooms and messages, written through a node's REST API."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.tokens: dict[str, str] = {}
        self.users: dict[str, str] = {}
        self.rooms: dict[str, str] = {}

    async def register(self, name: str) -> None:
        data = await api(
            self.http,
            "POST",
            f"{self.base}/v1/auth/register",
            {"username": name, "password": PASSWORD},
        )
        self.tokens[name] = data["accessToken"]
        self.users[name] = data["user"]["id"]

    async def room(self, owner: str, name: str, kind: str, *members: str) -> str:
        data = await api(
            self.http,
            "POST",
            f"{self.base}/v1/rooms",
            {"name": name, "kind": kind},
            self.tokens[owner],
        )
        room_id: str = data["room"]["id"]
        for member in members:
            await api(
                self.http,
                "POST",
                f"{self.base}/v1/rooms/{room_id}/members",
                {"userId": self.users[member]},
                self.tokens[owner],
            )
        self.rooms[name] = room_id
        return room_id

    async def post(self, who: str, room: str, body: str) -> dict[str, Any]:
        message: dict[str, Any] = await api(
            self.http,
            "POST",
            f"{self.base}/v1/rooms/{self.rooms[room]}/messages",
            {"clientMsgId": f"{who}-{body}", "body": body},
            self.tokens[who],
        )
        return message

    async def history(self, base: str, who: str, room: str) -> list[tuple[int, str]]:
        page = await api(
            self.http,
            "GET",
            f"{base}/v1/rooms/{self.rooms[room]}/messages?after=0&limit=100",
            token=self.tokens[who],
        )
        return [(m["seq"], m["body"]) for m in page["messages"]]


# --- The systemd unit ------------------------------------------------------------------


def unit_file() -> dict[str, dict[str, list[str]]]:
    """deploy/boltorezka.service as sections of keys, each with its values in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, line
        key, sep, value = line.partition("=")
        assert sep, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(key: str) -> str:
    (value,) = unit_file()["Service"][key]
    return value


def test_the_unit_runs_the_installed_serve_and_drains_on_stop() -> None:
    service = unit_file()["Service"]
    assert service["ExecStart"] == ["/opt/boltorezka/bin/boltorezka serve"]
    assert service["KillSignal"] == ["SIGTERM"]
    # The node alone gets the signal; it stops a spawned SFU child itself, in order.
    assert service["KillMode"] == ["mixed"]
    assert service["EnvironmentFile"] == ["/etc/boltorezka/boltorezka.env"]
    assert set(service["RestartPreventExitStatus"][0].split()) == {"2", "3", "5"}
    environment = dict(line.split("=", 1) for line in service["Environment"])
    credentials = dict(line.split(":", 1) for line in service["LoadCredential"])
    assert credentials == {
        name: f"/etc/boltorezka/{name}" for name in ("jwt-secret", "turn-secret", "pgpass")
    }
    assert environment["BOLTOREZKA_JWT_SECRET_FILE"] == "%d/jwt-secret"
    assert environment["BOLTOREZKA_TURN_SECRET_FILE"] == "%d/turn-secret"
    assert environment["PGPASSFILE"] == "%d/pgpass"
    assert environment["BOLTOREZKA_DATA_DIR"] == "%S/boltorezka"
    assert service["StateDirectory"] == ["boltorezka"]

    # The stop timeout outlasts the whole drain with the runbook's settings.
    settings = Settings.from_env(env_lines("host-env") | {"BOLTOREZKA_JWT_SECRET": JWT_SECRET})
    drain = (
        settings.drain_prestop_seconds
        + settings.ws_drain_seconds
        + settings.ws_close_timeout_seconds
    )
    assert float(unit_value("TimeoutStopSec")) > drain
    documented = (
        f"({settings.drain_prestop_seconds:g} + {settings.ws_drain_seconds:g} + "
        f"{settings.ws_close_timeout_seconds:g} here)"
    )
    assert documented in RUNBOOK.read_text(), "RUNBOOK.md's sum no longer matches its settings"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    import subprocess

    verified = subprocess.run(
        [analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=30, check=False
    )
    # The one thing it may miss here: the release is not installed in /opt on this machine.
    complaints = [
        line
        for line in (verified.stdout + verified.stderr).splitlines()
        if line.strip() and "/opt/boltorezka/bin/boltorezka is not executable" not in line
    ]
    assert not complaints, "\n".join(complaints)


def _unit_environment(etc: Path, state: Path) -> dict[str, str]:
    """What systemd gives the node: the unit's Environment= with its specifiers resolved,
    a private copy of each credential, then the settings file (which wins, as in systemd),
    with /etc/boltorezka being ``etc``."""
    service = unit_file()["Service"]
    credentials = state / "credentials"
    credentials.mkdir(parents=True)
    for line in service["LoadCredential"]:
        name, path = line.split(":", 1)
        copy = credentials / name
        shutil.copy(etc / Path(path).relative_to("/etc/boltorezka"), copy)
        copy.chmod(0o400)
    for directory in service["StateDirectory"]:
        (state / directory).mkdir(parents=True, exist_ok=True)
    env = base_env()
    for line in service["Environment"]:
        key, value = line.split("=", 1)
        env[key] = value.replace("%d", str(credentials)).replace("%S", str(state))
    (settings_file,) = service["EnvironmentFile"]
    for line in (etc / Path(settings_file).relative_to("/etc/boltorezka")).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


async def start_unit_node(etc: Path, state: Path, port: int) -> ServerProcess:
    """The node as deploy/boltorezka.service runs it: its ExecStart, with the installed
    ``boltorezka`` being this virtualenv's."""
    argv = shlex.split(unit_value("ExecStart"))
    assert argv[0] == "/opt/boltorezka/bin/boltorezka"
    argv[0] = str(VENV_BIN / "boltorezka")
    state.mkdir(parents=True)
    return await _spawn(argv, _unit_environment(etc, state), port, state / "node.log")


def write_settings(etc: Path, **site: str) -> None:
    """The runbook's boltorezka.env with this machine's addresses in place of the
    example's; every replaced key must be one the runbook's file has."""
    lines, replaced = [], set()
    for line in block("host-env").splitlines():
        key = line.partition("=")[0]
        if key in site:
            line = f"{key}={site[key]}"
            replaced.add(key)
        lines.append(line)
    assert replaced == set(site), set(site) - replaced
    (etc / "boltorezka.env").write_text("\n".join(lines) + "\n")


# --- Backups of an external PostgreSQL --------------------------------------------------


def password_cluster() -> PrivatePostgres:
    """A cluster whose TCP logins need a password, except the superuser's (the admin)."""
    pg = PrivatePostgres()
    (pg.data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    pg.start()
    return pg


async def _table_count(url: str) -> int:
    conn = await asyncpg.connect(url, password=DB_PASSWORD)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        return count
    finally:
        await conn.close()


async def test_a_unit_node_is_backed_up_and_restored_with_the_runbook_commands(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Deploy as the runbook says (role and database, secrets, settings, migrate, the unit),
    write through the node, back up, roll back, restore onto a new server, serve from it;
    then the database goes away under the node, and comes back."""
    require_program(str(PG_BIN) if PG_BIN is not None else None, "initdb and pg_ctl")
    require_program(shutil.which("curl"), "curl")
    source = await asyncio.to_thread(password_cluster)
    # The server restored onto later is made meanwhile: an initdb costs seconds of CPU.
    making_target = asyncio.ensure_future(asyncio.to_thread(password_cluster))
    target: PrivatePostgres | None = None
    nodes: list[ServerProcess] = []
    etc = tmp_path / "etc"
    etc.mkdir()
    env = base_env(DB_PASSWORD=DB_PASSWORD, VERSION=boltorezka.__version__)
    try:
        await run_blocks("db-create", env=env | {"ADMIN_URL": source.url}, cwd=tmp_path)
        await run_blocks("host-secrets", env=env, cwd=etc)
        for name in ("jwt-secret", "turn-secret", "pgpass"):
            assert (etc / name).stat().st_mode & 0o777 == 0o600, name
        assert len((etc / "jwt-secret").read_text().strip()) >= 32

        def url_of(pg: PrivatePostgres) -> str:
            return f"postgresql://boltorezka@127.0.0.1:{pg.port}/boltorezka"

        port = free_port()
        site = {
            "BOLTOREZKA_HOST": "127.0.0.1",
            "BOLTOREZKA_PORT": str(port),
            "BOLTOREZKA_DATABASE_URL": url_of(source),
            "BOLTOREZKA_REDIS_URL": "",  # one node: its own bus
            "BOLTOREZKA_DRAIN_PRESTOP_SECONDS": "0",  # no balancer to wait for here
        }
        write_settings(etc, **site)
        # The password is needed (the URL has none), and the shell's password file has it.
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(url_of(source))
        migrated = await run_blocks("host-shell", "host-migrate", env=env, cwd=etc)
        shipped = len(list((ROOT / "boltorezka" / "store" / "migrations").glob("*.sql")))
        assert migrated.startswith(f"applied {shipped} migration(s)"), migrated

        node = await start_unit_node(etc, tmp_path / "state-1", port)
        nodes.append(node)
        await node.wait_status(http, 200)
        chat = Chat(http, node.base)
        for name in ("alice", "bob"):
            await chat.register(name)
        await chat.room("alice", "private", "private", "bob")
        await chat.room("bob", "lobby", "public")
        for body in ("one", "two", "three"):
            await chat.post("alice", "private", body)
        await chat.post("bob", "lobby", "hello")
        before = await chat.history(node.base, "bob", "private")
        assert [seq for seq, _ in before] == [1, 2, 3]

        await run_blocks("host-shell", "backup-external", env=env, cwd=etc)
        dump = etc / "boltorezka.dump"
        assert dump.stat().st_mode & 0o777 == 0o600, "a dump holds password hashes"
        tables = int((await run_blocks("backup-check", env=env, cwd=etc)).strip())
        assert tables == await _table_count(url_of(source))
        documented = re.search(r"\((\d+) in this release, one per table\)", RUNBOOK.read_text())
        assert documented is not None and int(documented[1]) == tables

        after_backup = await chat.post("alice", "private", "after the backup")
        await stop_serve(node)

        # Roll the database back to the dump, the node stopped.
        await run_blocks("host-shell", "restore-external-over", env=env, cwd=etc)
        conn = await asyncpg.connect(url_of(source), password=DB_PASSWORD)
        try:
            bodies = await conn.fetch("SELECT body FROM messages ORDER BY created_at")
        finally:
            await conn.close()
        assert [r["body"] for r in bodies] == ["one", "two", "three", "hello"]

        # Restore onto the other server, migrate with "the new release", serve from it.
        target = await making_target
        await run_blocks("db-create", env=env | {"ADMIN_URL": target.url}, cwd=tmp_path)
        write_settings(etc, **site | {"BOLTOREZKA_DATABASE_URL": url_of(target)})
        await run_blocks("host-shell", "restore-external-new", env=env, cwd=etc)
        upgraded = await run_blocks("host-shell", "upgrade-migrate", env=env, cwd=etc)
        # /opt/boltorezka-$VERSION is not installed on this machine: the PATH falls through.
        assert upgraded.splitlines()[0] == str(VENV_BIN / "boltorezka"), upgraded
        assert "applied 0 migration(s)" in upgraded, upgraded
        node = await start_unit_node(etc, tmp_path / "state-2", port)
        nodes.append(node)
        await node.wait_status(http, 200)
        # Sessions came back with the data: the tokens issued before still work.
        assert await chat.history(node.base, "bob", "private") == before
        assert await chat.history(node.base, "bob", "lobby") == [(1, "hello")]
        await api(
            http,
            "POST",
            f"{node.base}/v1/auth/login",
            {"username": "bob", "password": PASSWORD, "deviceName": "restored"},
        )
        # A client that saw the message written after the dump must join afresh.
        async with BoltorezkaClient(node.ws_url, chat.tokens["alice"], reconnect=False) as ws:
            with pytest.raises(NackError) as refused:
                await ws.join(chat.rooms["private"], last_seq=after_backup["seq"])
            assert refused.value.code == "validation_failed"
            assert (await ws.join(chat.rooms["private"]))["lastSeq"] == 3

        activity = await run_blocks("host-shell", "db-activity", env=env, cwd=etc)
        assert "wait_event_type" in activity and re.search(r"^\d+$", activity, re.M), activity

        # The database goes away under the node: /readyz says so, REST answers 503
        # unavailable with Retry-After, the node runs on; it heals by itself afterwards.
        await asyncio.to_thread(target.stop, "fast")
        checks = await run_blocks("node-checks", env=env | {"NODE": node.base}, cwd=etc)
        ready = json.loads(checks.splitlines()[0])
        assert ready["status"] == "not_ready", ready
        assert ready["checks"]["database"].startswith("unreachable"), ready
        problem = await api(
            http,
            "GET",
            f"{node.base}/v1/rooms/{chat.rooms['private']}/messages",
            token=chat.tokens["bob"],
            expect=503,
        )
        assert problem["code"] == "unavailable" and problem["retryable"], problem
        async with http.get(f"{node.base}/healthz") as live:
            assert live.status == 200
        await asyncio.to_thread(target.start)
        await node.wait_status(http, 200)
        assert await chat.history(node.base, "bob", "private") == before
        await stop_serve(node)
    except BaseException:
        for node in nodes:
            print(node.log.read_text(errors="replace")[-4000:])
        print(source.log_tail(), target.log_tail() if target is not None else "")
        raise
    finally:
        for node in nodes:
            await node.kill()
        with contextlib.suppress(Exception):
            target = await making_target
        cleanups = [source.cleanup] + ([target.cleanup] if target is not None else [])
        await asyncio.gather(*(asyncio.to_thread(cleanup) for cleanup in cleanups))


# --- Backups of the embedded PostgreSQL -------------------------------------------------


def _stop_embedded(pgdata: Path) -> None:
    """Whatever the test did, no embedded server outlives it."""
    if PG_BIN is None or not (pgdata / "postmaster.pid").exists():
        return
    import subprocess

    subprocess.run(
        [str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
        user=SERVICE_USER if os.geteuid() == 0 else None,
        capture_output=True,
        timeout=PATIENCE,
        check=False,
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not pytest's tmp_path: as root the embedded server runs as its own user, which must
    reach the directory; a short path also keeps its socket in the data directory."""
    path = Path(tempfile.mkdtemp(prefix="bz-rb-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        _stop_embedded(path / "pgdata")
        shutil.rmtree(path, ignore_errors=True)


async def test_the_embedded_database_is_backed_up_and_restored(
    data_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    node_env = cli_env(DATA_DIR=str(data_dir), PORT=str(port), JWT_SECRET=JWT_SECRET)
    node_env["PATH"] = base_env()["PATH"]
    shell_env = base_env(BOLTOREZKA_DATA_DIR=str(data_dir))
    node = await start_serve(node_env, port, tmp_path / "embedded-1.log")
    try:
        await node.wait_status(http, 200)
        chat = Chat(http, node.base)
        await chat.register("carol")
        await chat.room("carol", "notes", "private")
        for body in ("first", "second"):
            await chat.post("carol", "notes", body)
        before = await chat.history(node.base, "carol", "notes")

        await run_blocks("embedded-shell", "backup-embedded", env=shell_env, cwd=tmp_path)
        assert (tmp_path / "boltorezka.dump").stat().st_mode & 0o777 == 0o600
        await chat.post("carol", "notes", "after the backup")

        # Over the running node's database, then a restart.
        await run_blocks("embedded-shell", "restore-embedded", env=shell_env, cwd=tmp_path)
        await stop_serve(node)
        node = await start_serve(node_env, port, tmp_path / "embedded-2.log")
        await node.wait_status(http, 200)
        assert await chat.history(node.base, "carol", "notes") == before
        await chat.post("carol", "notes", "after the restore")
        assert [seq for seq, _ in await chat.history(node.base, "carol", "notes")] == [1, 2, 3]
        await stop_serve(node)
    except BaseException:
        print(node.log.read_text(errors="replace")[-4000:])
        raise
    finally:
        await node.kill()


# --- TLS, the balancer and a drain ------------------------------------------------------


def self_signed(directory: Path) -> ssl.SSLContext:
    """``fullchain.pem`` and ``privkey.pem`` for localhost and 127.0.0.1 in ``directory``,
    the way certbot lays them out; returns a client context trusting that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ssl.create_default_context(cafile=str(directory / "fullchain.pem"))


async def _until_ready_through(
    http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | None = None
) -> None:
    """The balancer marks the node up after its health checks pass."""
    async with asyncio.timeout(PATIENCE):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url, ssl=tls if tls is not None else True) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


async def test_wss_through_the_tls_balancer_and_a_drain_seen_through_it(
    test_db: TestDatabase, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    for program in ("haproxy", "curl", "openssl"):
        require_program(shutil.which(program), program)
    port, tls_port, redirect_port, plain_port = (free_port() for _ in range(4))
    node_env = cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        JWT_SECRET=JWT_SECRET,
        LOG_LEVEL="info",
        # Long enough to look at the node while it is not ready yet still accepting.
        DRAIN_PRESTOP_SECONDS="3",
        WS_DRAIN_SECONDS="2",
    )
    node_base = f"http://127.0.0.1:{port}"
    node = await start_serve(node_env, port, tmp_path / "node.log")
    balancers: list[Background] = []
    try:
        # Started at once: the wait is the runbook's, retrying until the node is ready.
        waited = await run_blocks("node-wait-ready", env=base_env(NODE=node_base), cwd=tmp_path)
        assert json.loads(waited)["status"] == "ready"

        client_tls = self_signed(tmp_path / "live")
        lb_env = base_env(
            CERT_DIR=str(tmp_path / "live"),
            BOLTOREZKA_LB_TLS_CERT=str(tmp_path / "boltorezka.pem"),
            BOLTOREZKA_LB_BIND=f"127.0.0.1:{tls_port}",
            BOLTOREZKA_LB_HTTP_BIND=f"127.0.0.1:{redirect_port}",
            BOLTOREZKA_NODE1=f"127.0.0.1:{port}",
        )
        await run_blocks("tls-cert", env=lb_env, cwd=tmp_path)
        assert (tmp_path / "boltorezka.pem").stat().st_mode & 0o777 == 0o600
        balancers.append(await Background.start("tls-run", lb_env, ROOT, tmp_path / "tls.log"))
        plain_env = base_env(
            BOLTOREZKA_LB_BIND=f"127.0.0.1:{plain_port}", BOLTOREZKA_NODE1=f"127.0.0.1:{port}"
        )
        balancers.append(await Background.start("lb-run", plain_env, ROOT, tmp_path / "lb.log"))
        public = f"https://localhost:{tls_port}"
        await _until_ready_through(http, f"{public}/readyz", client_tls)
        await _until_ready_through(http, f"http://127.0.0.1:{plain_port}/readyz")

        checked = await run_blocks(
            "tls-check",
            env=base_env(
                PUBLIC_ADDRESS=f"localhost:{tls_port}",
                CURL_CA_BUNDLE=str(tmp_path / "live" / "fullchain.pem"),
            ),
            cwd=tmp_path,
        )
        assert json.loads(checked.splitlines()[0])["status"] == "ready", checked
        assert re.search(r"^subject=\s*CN\s*=\s*localhost$", checked, re.M), checked
        assert re.search(r"^notAfter=", checked, re.M), checked

        async with http.get(
            f"http://127.0.0.1:{redirect_port}/readyz", allow_redirects=False
        ) as redirected:
            assert redirected.status == 301
            assert redirected.headers["Location"].startswith("https://"), redirected.headers
        async with http.get(f"{public}/readyz", ssl=client_tls) as secured:
            assert "max-age=" in secured.headers["Strict-Transport-Security"]

        data = await api(
            http,
            "POST",
            f"{public}/v1/auth/register",
            {"username": "dora", "password": PASSWORD},
            tls=client_tls,
        )
        token = data["accessToken"]
        room = (
            await api(
                http,
                "POST",
                f"{public}/v1/rooms",
                {"name": "secure", "kind": "public"},
                token,
                tls=client_tls,
            )
        )["room"]["id"]

        async with websockets.connect(
            f"wss://localhost:{tls_port}/v1/ws", ssl=client_tls, open_timeout=PATIENCE
        ) as wss:
            frames = WssFrames(wss)
            assert (await frames.next())["type"] == "server.capabilities"
            await frames.request("auth", {"token": token})
            await frames.request("room.join", {"roomId": room})
            await api(
                http,
                "POST",
                f"{public}/v1/rooms/{room}/messages",
                {"clientMsgId": "over-tls", "body": "sent over TLS"},
                token,
                tls=client_tls,
            )
            message = await frames.wait("chat.message")
            assert message["payload"]["message"]["body"] == "sent over TLS"

            # The plain balancer of "Scaling out" carries the realtime plane too.
            plain_ws = f"ws://127.0.0.1:{plain_port}/v1/ws"
            async with BoltorezkaClient(plain_ws, token, reconnect=False) as plain:
                assert (await plain.request("ping", {"ts": 3}))["ts"] == 3

                # SIGTERM: during the pre-stop delay the runbook's look at the node shows
                # it draining, both sockets still open.
                node.proc.send_signal(signal.SIGTERM)
                await node.wait_status(http, 503)
                looked = await run_blocks("node-checks", env=base_env(NODE=node_base), cwd=tmp_path)
                assert json.loads(looked.splitlines()[0])["checks"]["draining"] == "yes"
                assert re.search(r"^boltorezka_ws_connections 2\.0$", looked, re.M), looked

                # Then the drain proper, through TLS: server.draining and a 1012 close.
                await frames.wait("server.draining")
                async with asyncio.timeout(PATIENCE):
                    with contextlib.suppress(websockets.ConnectionClosed):
                        while True:
                            await wss.recv()
                assert wss.close_code == 1012, wss.close_code
        assert await node.exit_code() == 0
    except BaseException:
        print(node.log.read_text(errors="replace")[-4000:])
        for balancer in balancers:
            print(balancer.log.read_text(errors="replace")[-2000:])
        raise
    finally:
        for balancer in balancers:
            await balancer.stop()
        await node.kill()


class WssFrames:
    """Requests and awaited frames on a raw WebSocket, for the ``wss://`` one (the scripted
    client opens ``ws://`` only)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._ids = 0

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(PATIENCE):
            frame: dict[str, Any] = json.loads(await self.ws.recv())
        self.seen.append(frame)
        return frame

    async def wait(self, frame_type: str) -> dict[str, Any]:
        for frame in self.seen:
            if frame["type"] == frame_type:
                self.seen.remove(frame)
                return frame
        while True:
            frame = await self.next()
            if frame["type"] == frame_type:
                self.seen.remove(frame)
                return frame

    async def request(self, frame_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        request_id = f"r{self._ids}"
        await self.ws.send(
            json.dumps({"v": 1, "type": frame_type, "requestId": request_id, "payload": payload})
        )
        while True:
            frame = await self.next()
            if frame.get("requestId") == request_id:
                assert frame["type"] == "ack", frame
                self.seen.remove(frame)
                result: dict[str, Any] = frame["payload"]
                return result


# --- Compose: a block run here, the rest checked ---------------------------------------


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


async def test_compose_secrets_are_the_files_compose_mounts(tmp_path: Path) -> None:
    await run_blocks("compose-secrets", env=base_env(), cwd=tmp_path)
    mounted = {spec["file"] for spec in _compose()["secrets"].values()}
    made = {f"./secrets/{p.name}" for p in (tmp_path / "secrets").iterdir()}
    assert made == mounted
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "tls").is_dir()
    for path in (tmp_path / "secrets").iterdir():
        assert len(path.read_text().strip()) >= 32, path


def _compose_commands(name: str) -> list[list[str]]:
    """The ``docker compose`` commands of a block, as argument lists after ``compose``."""
    commands = []
    for line in block(name).splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["docker", "compose"]:
            commands.append(words[2:])
    assert commands, name
    return commands


def _database_url_expression(text: str) -> str:
    match = re.search(r'BOLTOREZKA_DATABASE_URL="([^"]+)"', text)
    assert match is not None, text
    return match.group(1)


def test_compose_commands_name_what_compose_runs() -> None:
    compose = _compose()
    services = compose["services"]
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert set(env_lines("compose-env")) == required

    subcommands = {"up", "ps", "stop", "build", "run", "exec", "kill", "start"}
    for name in (
        "compose-up",
        "compose-scale",
        "upgrade-compose",
        "backup-compose",
        "restore-compose",
    ):
        for words in _compose_commands(name):
            assert words[0] in subcommands, words
            named = [w for w in words[1:] if not w.startswith("-")]
            if words[0] in {"stop", "kill", "start"}:
                assert set(named) <= set(services), words
            if words[0] in {"run", "exec"} or (words[0] == "up" and named):
                assert named[0] in services, words
    assert _compose_commands("node-kill") == [["kill", "api-1"]]
    assert "api-1" in services

    # Scaling in removes api-2 and the balancer's variable for it.
    assert "BOLTOREZKA_NODE2" in services["lb"]["environment"]
    assert services["lb"]["environment"]["BOLTOREZKA_NODE2"].startswith("api-2:")

    # The migrate step builds the nodes' database URL exactly as the nodes do.
    node_command = services["api-1"]["command"]
    assert _database_url_expression(block("upgrade-compose")) == _database_url_expression(
        node_command
    ).replace("$$", "$")
    assert "postgres-password" in services["api-1"]["secrets"]

    # The dump and the restore run as the database's own user, on its database, with the
    # same options as the runbook's commands for an external PostgreSQL.
    postgres = services["postgres"]["environment"]
    (dump,) = _compose_commands("backup-compose")
    dump = dump[: dump.index(">")]
    assert f"--username={postgres['POSTGRES_USER']}" in dump
    assert dump[-1] == postgres["POSTGRES_DB"]
    (restore,) = _compose_commands("restore-compose")
    restore = restore[: restore.index("<")]
    assert restore[:4] == ["exec", "-T", "postgres", "pg_restore"]
    assert f"--username={postgres['POSTGRES_USER']}" in restore
    assert f"--dbname={postgres['POSTGRES_DB']}" in restore
    over = shlex.split(block("restore-external-over"))
    assert set(restore[4:]) - set(over) == {
        f"--username={postgres['POSTGRES_USER']}",
        f"--dbname={postgres['POSTGRES_DB']}",
    }

    # Compose's stop timeout covers the drain with the nodes' settings (defaults otherwise).
    api = services["api-1"]
    drain_settings = ("DRAIN_PRESTOP_SECONDS", "WS_DRAIN_SECONDS", "WS_CLOSE_TIMEOUT_SECONDS")
    settings = Settings.from_env(
        {
            key: str(value)
            for key, value in api["environment"].items()
            if key.removeprefix("BOLTOREZKA_") in drain_settings
        }
    )
    grace = float(str(api["stop_grace_period"]).removesuffix("s"))
    assert grace >= (
        settings.drain_prestop_seconds
        + settings.ws_drain_seconds
        + settings.ws_close_timeout_seconds
    )


def test_host_commands_name_what_the_unit_runs() -> None:
    install = block("host-install")
    assert (ROOT / "tools" / "install-release.sh").exists()
    lock = re.search(r"install-release\.sh \S+ (\S+)", install)
    assert lock is not None and (ROOT / lock.group(1)).exists(), install
    user = re.search(r"useradd .* (\S+)$", install, re.M)
    assert user is not None
    assert user.group(1) == unit_value("User") == unit_value("Group")
    home = re.search(r"--home-dir (\S+)", install)
    assert home is not None and home.group(1) == "/var/lib/" + unit_value("StateDirectory")
    # /opt/boltorezka is what ExecStart runs, a link to the release in use.
    assert 'ln -sfn "/opt/boltorezka-$VERSION" /opt/boltorezka' in install
    assert 'ln -sfn "/opt/boltorezka-$VERSION" /opt/boltorezka' in block("upgrade-node")
    assert unit_value("ExecStart").startswith("/opt/boltorezka/bin/")

    unit_name = UNIT.stem
    assert f"install -m 644 deploy/{UNIT.name} /etc/systemd/system/{UNIT.name}" in block(
        "host-unit"
    )
    systemctl = [
        shlex.split(line, comments=True)
        for name in ("host-unit", "host-scale", "upgrade-node", "node-kill")
        for line in block(name).splitlines()
        if line.startswith("systemctl ")
    ]
    for words in systemctl:
        if words[1] == "reload":
            assert words[2:] == ["haproxy"], words
        elif words[1] != "daemon-reload":
            assert words[-1] == unit_name, words
    assert ["systemctl", "kill", "--signal=SIGKILL", unit_name] in systemctl
    assert f"journalctl -u {unit_name} -f" in block("host-unit")


def _haproxy_variables(config: str) -> set[str]:
    """The environment variables an HAProxy file reads (``"${X}"``, ``.if defined(X)``)."""
    return set(re.findall(r"(?:\$\{|defined\()(BOLTOREZKA_[A-Z0-9_]+)", config))


def _sections(config: str) -> dict[str, str]:
    """An HAProxy file's sections by their header line."""
    sections: dict[str, str] = {}
    header = ""
    for line in config.splitlines():
        if line and not line[0].isspace() and not line.startswith(("#", ".")):
            header = line.strip()
            sections[header] = ""
        elif header and not line.lstrip().startswith("#"):
            sections[header] += line + "\n"
    return sections


def test_balancer_settings_are_the_variables_the_configs_read() -> None:
    plain = (ROOT / "deploy" / "haproxy.cfg").read_text()
    tls = (ROOT / "deploy" / "haproxy-tls.cfg").read_text()
    assert set(env_lines("lb-env")) <= _haproxy_variables(plain)
    assert {"BOLTOREZKA_LB_BIND", "BOLTOREZKA_NODE1"} <= set(env_lines("lb-env"))
    assert set(env_lines("tls-env")) <= _haproxy_variables(tls)
    assert {"BOLTOREZKA_LB_BIND", "BOLTOREZKA_LB_TLS_CERT", "BOLTOREZKA_NODE1"} <= set(
        env_lines("tls-env")
    )
    # The TLS file is the plain one with TLS on the frontend: the rest must not drift.
    plain_sections, tls_sections = _sections(plain), _sections(tls)
    for header in ("defaults", "backend nodes"):
        assert plain_sections[header] == tls_sections[header], header


def test_turn_commands_name_what_boltorezka_and_coturn_read(tmp_path: Path) -> None:
    secret = tmp_path / "turn-secret"
    secret.write_text("t" * 48 + "\n")
    turn = env_lines("turn-env")
    settings = Settings.from_env(
        turn
        | {
            "BOLTOREZKA_ENV": "production",
            "BOLTOREZKA_JWT_SECRET": JWT_SECRET,
            "BOLTOREZKA_TURN_SECRET_FILE": str(secret),
        }
    )
    assert settings.turn_secret == "t" * 48
    assert settings.turn_uris == tuple(turn["BOLTOREZKA_TURN_URIS"].split(","))
    assert settings.turn_ttl == int(turn["BOLTOREZKA_TURN_TTL"])

    start = (ROOT / "coturn" / "start.sh").read_text()
    given = set(re.findall(r"^(TURN_[A-Z_]+)=", block("coturn-start"), re.M))
    read = set(re.findall(r"\b(TURN_[A-Z_]+)\b", start))
    assert given <= read, given - read
    required = re.search(r"for var in ([A-Z_ ]+); do", start)
    assert required is not None and set(required.group(1).split()) <= given
    assert "coturn/start.sh" in block("coturn-start")
    assert {"TURN_SECRET_FILE", "TURN_USERDB"} <= given

    openapi = json.loads((ROOT / "protocol" / "openapi.json").read_text())
    assert "/v1/turn/credentials" in openapi["paths"]
    assert "https://chat.example.org/v1/turn/credentials" in block("turn-check")
    rotate = (ROOT / "coturn" / "rotate-secret.sh").read_text()
    for action in ("add", "remove", "count"):
        assert f"  {action})" in rotate, action


def _flags(*paths: Path) -> set[str]:
    """Every option string passed to ``add_argument`` in these files."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"
            ):
                found.update(
                    arg.value
                    for arg in node.args
                    if isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and arg.value.startswith("--")
                )
    return found


def _commands(name: str, prompt: str = "") -> list[list[str]]:
    """The commands of a block (lines after ``prompt``, with their continuations)."""
    commands, pending = [], ""
    for line in block(name).splitlines():
        if pending:
            line = pending + line
        elif prompt and not line.startswith(prompt):
            continue
        line = line.removeprefix(prompt)
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        commands.append(shlex.split(line, comments=True))
    return commands


def test_load_test_and_bench_commands_use_flags_that_exist() -> None:
    loadtest_flags = _flags(*(ROOT / "clients" / "python" / "boltorezka_client").rglob("*.py"))
    cli_flags = _flags(ROOT / "boltorezka" / "cli.py")
    bulk, run = _commands("loadtest", prompt="$ ")
    assert bulk[:3] == ["boltorezka", "admin", "bulk-users"]
    assert {w for w in bulk if w.startswith("--")} <= cli_flags
    assert run[:2] == ["boltorezka", "loadtest"]
    assert {w for w in run if w.startswith("--")} <= loadtest_flags
    for words in _commands("bench"):
        assert words[0] == "python"
        script = ROOT / words[1]
        assert script.exists(), words
        assert {w for w in words if w.startswith("--")} <= _flags(script), words


def test_log_lines_the_runbook_quotes_are_the_ones_the_code_writes() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "boltorezka").rglob("*.py"))
    runbook = " ".join(RUNBOOK.read_text().split())
    for line in (
        "not ready; still accepting",
        '"draining"',
        '"stopped"',
        "database unreachable; sends are refused as retryable",
        "database reachable again; sends are stored",
        "redis connection lost",
        "redis connection recovered",
        "rate limits are per node until it is back",
    ):
        assert line in source, line
        assert line.strip('"') in runbook, line

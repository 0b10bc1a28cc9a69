"""The ``boltorezka`` command: ``serve`` runs the server, ``migrate`` applies migrations.

``admin`` runs operator tasks (server roles, accounts, rooms, the audit log; see
``boltorezka.admin.commands``) and ``admin bulk-users`` makes load-test accounts;
``loadtest`` runs the load tester of the Python client package
(``boltorezka_client.loadtest``) when that package is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from boltorezka import __version__
from boltorezka.admin import bulk
from boltorezka.admin import commands as operator_commands
from boltorezka.api.edge import EdgeRunner
from boltorezka.api.keys import GATEWAY
from boltorezka.app import build_app, start_services
from boltorezka.auth.tokens import TokenCodec
from boltorezka.bus import Bus
from boltorezka.bus.factory import redis_bus
from boltorezka.bus.socket import BusSocketInUse, SocketBus, SocketBusClient
from boltorezka.config import ConfigError, Settings
from boltorezka.observability import tracing
from boltorezka.observability.logging import configure
from boltorezka.store import migrate
from boltorezka.store.database import (
    DatabaseUnavailable,
    EmbeddedUnavailable,
    create_pool,
    resolve_database_url,
)

_log = structlog.get_logger("boltorezka.cli")

# The database did not answer at start-up (down, unreachable, or refusing the credentials);
# a supervisor may retry later, unlike for a configuration error (2).
EXIT_DATABASE_UNAVAILABLE = 6


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:
        # A client-side tool: it needs no server settings, and its own parser owns the flags.
        return _loadtest(argv[1:])
    parser = argparse.ArgumentParser(prog="boltorezka", description=__doc__)
    parser.add_argument("--version", action="version", version=f"boltorezka {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not apply pending migrations on start"
    )
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    sfu = commands.add_parser("sfu", help="run the SFU media process")
    sfu.add_argument(
        "--bus-socket",
        help="Unix socket of a local `boltorezka serve` bus "
        "(default: BOLTOREZKA_REDIS_URL, else the local server's socket)",
    )
    admin = commands.add_parser("admin", help="operator tasks against this deployment's database")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    bulk_users = admin_commands.add_parser(
        "bulk-users",
        help="create load-test accounts (one shared password hash), sessions, tokens and rooms",
    )
    bulk_users.add_argument("--count", type=int, required=True, help="how many users")
    bulk_users.add_argument("--prefix", default="load-", help="username prefix (default load-)")
    bulk_users.add_argument("--rooms", type=int, default=0, help="how many private rooms")
    bulk_users.add_argument("--room-size", type=int, default=0, help="members per room")
    bulk_users.add_argument(
        "--password", help="the shared password (default: a random one nobody keeps)"
    )
    bulk_users.add_argument("--out", type=Path, required=True, help="tokens file to write (JSON)")
    operator_commands.add_parsers(admin_commands)
    commands.add_parser(
        "loadtest", help="run the load tester (boltorezka_client.loadtest; see its --help)"
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"boltorezka: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    if settings.secret_generated and args.command == "serve":
        _log.warning(
            "no BOLTOREZKA_JWT_SECRET set: generated an ephemeral signing key for this "
            "process (dev mode); tokens will not survive a restart"
        )
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "sfu":
            return asyncio.run(_sfu(settings, args.bus_socket))
        if args.command == "admin":
            return _admin(settings, args)
        if args.no_migrate:
            settings = replace(settings, migrate_on_start=False)
        # Before the pool exists: whether its connections trace is decided when it is made.
        tracing.configure_from_env(os.environ)
        try:
            return run_serving(settings, _serve)
        finally:
            tracing.shutdown()  # exports the spans still buffered
    except (ConfigError, tracing.TracingConfigError) as exc:
        print(f"boltorezka: configuration error: {exc}", file=sys.stderr)
        return 2
    except migrate.MigrationError as exc:
        _log.error("migration failed; not starting", error=str(exc))
        print(f"boltorezka: {exc}", file=sys.stderr)
        return 3
    except BusSocketInUse as exc:
        print(f"boltorezka: {exc}", file=sys.stderr)
        return 4
    except (EmbeddedUnavailable, SfuUnavailable, tracing.TracingUnavailable) as exc:
        print(f"boltorezka: {exc}", file=sys.stderr)
        return 5
    except DatabaseUnavailable as exc:
        _log.error("database unavailable; not starting", error=str(exc))
        print(f"boltorezka: {exc}", file=sys.stderr)
        return EXIT_DATABASE_UNAVAILABLE


def _loadtest(argv: list[str]) -> int:
    # Imported by name: the server does not depend on the client package, it only defers to it.
    try:
        loadtest = importlib.import_module("boltorezka_client.loadtest")
    except ModuleNotFoundError:
        print(
            "boltorezka: the load tester is part of the Python client package, which is not "
            "installed: pip install ./clients/python",
            file=sys.stderr,
        )
        return 2
    return int(loadtest.main(argv))


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    if args.admin_command != "bulk-users":
        return operator_commands.run(settings, args)
    if settings.secret_generated:
        # Tokens signed with a throwaway key would not work against the running server.
        print(
            "boltorezka: set BOLTOREZKA_JWT_SECRET to the server's secret first",
            file=sys.stderr,
        )
        return 2
    request = bulk.BulkRequest(
        count=args.count,
        prefix=args.prefix,
        rooms=args.rooms,
        room_size=args.room_size,
        password=args.password,
    )
    try:
        document = asyncio.run(_bulk_users(settings, request))
    except bulk.BulkError as exc:
        print(f"boltorezka: {exc}", file=sys.stderr)
        return 2
    bulk.write_private(args.out, document)
    print(
        f"created {len(document['users'])} load-test users and {len(document['rooms'])} "
        f"room(s); tokens in {args.out}"
    )
    return 0


async def _bulk_users(settings: Settings, request: bulk.BulkRequest) -> dict[str, Any]:
    url, embedded = await resolve_database_url(settings)
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            codec = TokenCodec(settings.signing_keys, settings.access_token_ttl)
            return await bulk.create(
                conn, codec, request, refresh_ttl_seconds=settings.refresh_token_ttl
            )
    finally:
        await pool.close()
        del embedded


class SfuUnavailable(RuntimeError):
    """``boltorezka sfu`` was asked for, but the media stack (aiortc) is not installed."""


def sfu_installed() -> bool:
    return importlib.util.find_spec("aiortc") is not None


async def _migrate(settings: Settings) -> int:
    url, embedded = await resolve_database_url(settings)
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            applied = await migrate.apply(conn, settings.migrations_dir)
    finally:
        await pool.close()
        del embedded
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def bus_socket_path(settings: Settings) -> Path:
    return settings.bus_socket or settings.data_dir / "bus.sock"


def make_bus(settings: Settings) -> Bus:
    if settings.redis_url:
        return redis_bus(settings.redis_url)  # one Redis, or a cluster (redis+cluster://)
    return SocketBus(bus_socket_path(settings))


async def _sfu(settings: Settings, socket_path: str | None) -> int:
    if not sfu_installed():
        raise SfuUnavailable("the SFU needs aiortc: install boltorezka[sfu]")
    from boltorezka.rtc import sfu_process  # aiortc loads only in the media process

    bus: Bus
    if socket_path:
        bus = SocketBusClient(Path(socket_path))
    elif settings.redis_url:
        bus = redis_bus(settings.redis_url)
    else:
        bus = SocketBusClient(bus_socket_path(settings))
    await sfu_process.run(bus, ice_addresses=settings.sfu_ice_addresses)
    return 0


async def _supervise_sfu(socket_path: Path | None, stop: asyncio.Event) -> None:
    """Run the SFU as a child process while the server runs; restart it if it dies.

    Without a socket path the child finds the bus itself (BOLTOREZKA_REDIS_URL).
    """
    backoff = 0.5
    args = ["--bus-socket", str(socket_path)] if socket_path is not None else []
    while not stop.is_set():
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "boltorezka", "sfu", *args
        )
        waiter = asyncio.create_task(child.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if child.returncode is None:
                child.terminate()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await child.wait()
                if child.returncode is None:
                    child.kill()
            waiter.cancel()
            return
        stopper.cancel()
        _log.warning("sfu process exited; restarting", code=child.returncode)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


def event_loop_of(settings: Settings) -> str:
    """``uvloop`` where it is installed (unless told otherwise), else ``asyncio``."""
    if settings.event_loop == "asyncio":
        return "asyncio"
    installed = importlib.util.find_spec("uvloop") is not None
    if settings.event_loop == "uvloop" and not installed:
        raise ConfigError("BOLTOREZKA_EVENT_LOOP=uvloop, but uvloop is not installed")
    return "uvloop" if installed else "asyncio"


def run_serving(settings: Settings, main: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    """Run ``main(settings)`` on the event loop the settings choose."""
    if event_loop_of(settings) == "uvloop":
        import uvloop

        return uvloop.run(main(settings))
    return asyncio.run(main(settings))


def default_node_id(settings: Settings) -> str:
    """The node's id: as configured, else the host and port, which survive restarts (so
    the cluster recognises a restarted node); with an OS-chosen port, a random one."""
    if settings.node_id:
        return settings.node_id
    if settings.port == 0:
        return ""  # the hub makes a random one
    return f"{socket.gethostname()}:{settings.port}"


async def _serve(settings: Settings) -> int:
    settings = replace(settings, node_id=default_node_id(settings))
    bus = make_bus(settings)
    services = await start_services(settings, bus)
    app = build_app(services)
    # Head deadlines and problem-JSON parser errors at the edge (api/edge.py).
    runner = EdgeRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    # With BOLTOREZKA_PORT=0 the OS picks the port: report the one actually bound.
    addresses = [a for a in runner.addresses if isinstance(a, tuple)]
    port = int(addresses[0][1]) if addresses else settings.port
    _log.info(
        "listening",
        host=settings.host,
        port=port,
        env=settings.env,
        database="embedded" if services.embedded_server is not None else "configured",
        event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        node_id=app[GATEWAY].node_id,
    )
    print(f"boltorezka listening on http://{settings.host}:{port}", flush=True)

    # An operator's drain (POST /v1/admin/nodes/{nodeId}/drain, on any node) sets this too.
    stop = services.node_control.stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sfu_task = None
    if settings.sfu_mode == "spawn" and not sfu_installed():
        _log.warning(
            "the SFU is not installed (boltorezka[sfu]); calls that need it answer sfu_unavailable"
        )
    elif settings.sfu_mode == "spawn":
        socket_path = bus.path if isinstance(bus, SocketBus) else None
        sfu_task = asyncio.create_task(_supervise_sfu(socket_path, stop))
    await stop.wait()
    # Readiness turns 503 first; connections are still accepted during the pre-stop delay,
    # so a balancer polling /readyz takes the node out before anything is refused.
    services.draining = True
    if settings.drain_prestop_seconds > 0:
        _log.info("not ready; still accepting", prestop_seconds=settings.drain_prestop_seconds)
        await asyncio.sleep(settings.drain_prestop_seconds)
    _log.info("draining")
    gateway = app[GATEWAY]
    gateway.draining = True
    # Stop accepting first, then let live sockets finish their requests and move on.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await site.stop()
    await gateway.drain()
    await runner.cleanup()
    if sfu_task is not None:
        await sfu_task
    await services.pool.close()
    _log.info("stopped")
    return 0

"""The ``boltorezka`` command: ``serve`` runs the server, ``migrate`` applies migrations."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import structlog
from aiohttp import web

from boltorezka import __version__
from boltorezka.api.keys import GATEWAY
from boltorezka.app import build_app, start_services
from boltorezka.config import ConfigError, Settings
from boltorezka.observability.logging import configure
from boltorezka.store import migrate
from boltorezka.store.database import create_pool, resolve_database_url

_log = structlog.get_logger("boltorezka.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boltorezka", description=__doc__)
    parser.add_argument("--version", action="version", version=f"boltorezka {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not apply pending migrations on start"
    )
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"boltorezka: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    if settings.secret_generated:
        _log.warning(
            "no BOLTOREZKA_JWT_SECRET set: generated an ephemeral signing key for this "
            "process (dev mode); tokens will not survive a restart"
        )
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.no_migrate:
            from dataclasses import replace

            settings = replace(settings, migrate_on_start=False)
        return asyncio.run(_serve(settings))
    except migrate.MigrationError as exc:
        _log.error("migration failed; not starting", error=str(exc))
        print(f"boltorezka: {exc}", file=sys.stderr)
        return 3


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


async def _serve(settings: Settings) -> int:
    services = await start_services(settings)
    app = build_app(services)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    _log.info(
        "listening",
        host=settings.host,
        port=settings.port,
        env=settings.env,
        database="embedded" if services.embedded_server is not None else "configured",
    )
    print(f"boltorezka listening on http://{settings.host}:{settings.port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _log.info("draining")
    services.extras["draining"] = True
    gateway = app[GATEWAY]
    gateway.draining = True
    # Stop accepting first, then let live sockets finish their requests and move on.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await site.stop()
    await gateway.drain()
    await runner.cleanup()
    await services.pool.close()
    _log.info("stopped")
    return 0

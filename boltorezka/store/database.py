"""Connecting to PostgreSQL: a configured URL, or an embedded server for one-node setups."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg

from boltorezka.config import Settings

EMBEDDED_DATABASE = "boltorezka"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come back as Python objects rather than strings.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def start_embedded(data_dir: Path) -> Any:
    """Start (or attach to) the embedded PostgreSQL kept in ``data_dir``; return its handle.

    The server stops when the last process holding a handle exits.
    """
    import pgserver  # imported lazily: the binaries are needed only without a database URL

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    get_server = pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(pgdata, cleanup_mode="stop")
    existing = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
    if "(1 row)" not in existing:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return server


async def resolve_database_url(settings: Settings) -> tuple[str, Any]:
    """Return the URL to connect to and, for the embedded server, its handle to keep alive."""
    if settings.database_url:
        return settings.database_url, None
    server = await asyncio.to_thread(start_embedded, settings.data_dir)
    return str(server.get_uri(EMBEDDED_DATABASE)), server


async def create_pool(
    url: str, *, min_size: int, max_size: int, server_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings=server_settings,
        command_timeout=30,
    )
    assert pool is not None
    return pool

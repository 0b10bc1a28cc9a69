"""Connecting to PostgreSQL: a configured URL, or an embedded server for one-node setups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import asyncpg

from boltorezka.config import Settings
from boltorezka.observability import tracing

EMBEDDED_DATABASE = "boltorezka"
# pgserver's record, inside pgdata, of the processes holding a handle on the server.
_HANDLE_PIDS = ".handle_pids.json"


class EmbeddedUnavailable(RuntimeError):
    """No database URL is configured and the embedded PostgreSQL is not installed."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be connected to: down, unreachable, or refusing the credentials.

    The message names the URL, password redacted, and the reason, in one line.
    """

    def __init__(self, url: str, exc: BaseException) -> None:
        reason = str(exc).strip().replace("\n", " ") or "timed out"
        super().__init__(
            f"cannot connect to the database at {redact_url(url)}: {type(exc).__name__}: {reason}"
        )


# What failing to connect raises: refused, unresolvable or timed-out sockets (OSError,
# TimeoutError), and the server's refusals (bad password, no such database, starting up).
_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_QUERY_PASSWORD = re.compile(r"(?i)(\bpassword=)[^&]*")


def redact_url(url: str) -> str:
    """``url`` with its password, in the authority or the query, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_PASSWORD.sub(r"\1***", url)
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return _QUERY_PASSWORD.sub(r"\1***", f"{scheme}://{authority}{slash}{tail}")


class PooledConnection(asyncpg.Connection):
    """A pool connection whose release costs no round trip.

    asyncpg's default reset query (close cursors, UNLISTEN, RESET ALL, release advisory
    locks) runs on every release, a round trip on every request and every batch of chat
    sends. Nothing here leaves that state behind on a pooled connection: no LISTEN, no
    session-level SET (search_path comes from the connection's startup settings), cursors
    only inside transactions, and the migration lock is taken and released explicitly.
    asyncpg still rolls back a transaction left open, without this query.
    """

    def get_reset_query(self) -> str:
        return ""


class TracedConnection(PooledConnection):
    """A pool connection with a span per round trip; the pool's class only while tracing
    is on, so an untraced node pays nothing per query.

    ``_execute`` and ``_executemany`` are where asyncpg's own query logging sits: every
    fetch, fetchrow, fetchval and execute with arguments passes one of them; an execute
    without arguments (BEGIN, COMMIT, DDL) goes straight to the protocol.
    """

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        if args:
            return await super().execute(query, *args, timeout=timeout)
        with tracing.query_span(query):
            return await super().execute(query, timeout=timeout)

    async def _execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with tracing.query_span(query):
            return await super()._execute(query, *args, **kwargs)  # type: ignore[misc]

    async def _executemany(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with tracing.query_span(query):
            return await super()._executemany(query, *args, **kwargs)  # type: ignore[misc]


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come back as Python objects rather than strings.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def start_embedded(data_dir: Path) -> Any:
    """Start (or attach to) the embedded PostgreSQL kept in ``data_dir``; return its handle.

    The server stops when the last process holding a handle exits.
    """
    try:
        # Imported lazily: the binaries are needed only without a database URL.
        import pgserver
    except ImportError as exc:
        raise EmbeddedUnavailable(
            "no BOLTOREZKA_DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "set BOLTOREZKA_DATABASE_URL=postgresql://... or install boltorezka[embedded]"
        ) from exc

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    # pgserver serialises handle bookkeeping with this lock; hold it while pruning too.
    lock = getattr(getattr(pgserver, "PostgresServer", None), "_lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        _forget_dead_handles(pgdata)
    get_server = pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(pgdata, cleanup_mode="stop")
    existing = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
    if "(1 row)" not in existing:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return server


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of processes that died holding a handle (SIGKILL, OOM kill, power loss).

    pgserver stops PostgreSQL only when the exiting process is the last pid on its list, so
    one stale pid left by a crash would keep the embedded server running after every later
    clean exit, for good.
    """
    path = pgdata / _HANDLE_PIDS
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


async def resolve_database_url(settings: Settings) -> tuple[str, Any]:
    """Return the URL to connect to and, for the embedded server, its handle to keep alive."""
    if settings.database_url:
        return settings.database_url, None
    server = await asyncio.to_thread(start_embedded, settings.data_dir)
    return str(server.get_uri(EMBEDDED_DATABASE)), server


async def create_pool(
    url: str, *, min_size: int, max_size: int, server_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            server_settings=server_settings,
            connection_class=TracedConnection if tracing.enabled() else PooledConnection,
            command_timeout=30,
        )
    except _CONNECT_ERRORS as exc:
        raise DatabaseUnavailable(url, exc) from exc
    assert pool is not None
    if min_size == 0:
        # An empty pool connects on first use: check now, so a wrong URL fails start-up
        # rather than the first request.
        try:
            async with pool.acquire():
                pass
        except _CONNECT_ERRORS as exc:
            await pool.close()
            raise DatabaseUnavailable(url, exc) from exc
    return pool

"""Plain-SQL migrations: numbered files applied in order, once, under an advisory lock.

Each file runs in its own transaction together with the row that records it, so a failing
file leaves no trace and the next start retries it. The advisory lock is keyed by the
current schema, so nodes starting together against one database apply each file once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from boltorezka.store import Conn

_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_LOCK_KEY_SQL = "hashtext('boltorezka.migrate.' || current_schema())"


class MigrationError(RuntimeError):
    """A migration file is malformed, was edited after being applied, or failed to apply."""


def packaged() -> Traversable:
    """The migrations that ship inside the package, from a wheel and a checkout alike."""
    return resources.files("boltorezka.store").joinpath("migrations")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    filename: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Traversable | None = None) -> list[Migration]:
    """Return the migrations in ``directory`` sorted by version; reject stray or clashing names.

    ``None`` means the packaged migrations.
    """
    if directory is None:
        directory = packaged()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir(), key=lambda entry: entry.name):
        if not path.name.endswith(".sql"):
            continue
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(
                f"migration file {path.name} must be named NNNN_lowercase_name.sql"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"migration files {found[version].filename} and {path.name} share version {version}"
            )
        found[version] = Migration(
            version, match.group(2), path.name, path.read_text(encoding="utf-8")
        )
    return [found[v] for v in sorted(found)]


async def apply(conn: Conn, directory: Traversable | None = None) -> list[str]:
    """Apply pending migrations from ``directory``; return the file names applied now."""
    migrations = discover(directory)
    applied_now: list[str] = []
    await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY_SQL})")
    try:
        await conn.execute(_CREATE_LEDGER)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.filename} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.filename} failed and was rolled back: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            applied_now.append(migration.filename)
    finally:
        await conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY_SQL})")
    return applied_now


async def pending(conn: Conn, directory: Traversable | None = None) -> list[str]:
    """Return the file names not yet applied (all of them if the ledger does not exist)."""
    migrations = discover(directory)
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m.filename for m in migrations if m.version not in done]

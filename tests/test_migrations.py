"""Migrations: applied once under concurrency, atomically per file, refusing edits and bad names."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from boltorezka.store import migrate
from tests.conftest import MIGRATIONS
from tests.helpers import cli_env, run_cli, url_with_search_path

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

CLI_TIMEOUT = 60


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def _migration_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.sql"))


async def _ledger(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


async def _exists(conn: asyncpg.Connection, table: str) -> bool:
    found: bool = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    return found


GOOD_AND_BAD = {
    "0001_good.sql": "CREATE TABLE good_table (id int PRIMARY KEY);",
    "0002_bad.sql": (
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "SELECT * FROM this_table_does_not_exist;\n"
    ),
}


async def test_two_concurrent_applies_run_each_file_once(test_db: TestDatabase) -> None:
    first, second = await test_db.connect(), await test_db.connect()
    try:
        applied_a, applied_b = await asyncio.gather(
            migrate.apply(first, MIGRATIONS), migrate.apply(second, MIGRATIONS)
        )
        files = _migration_files(MIGRATIONS)
        assert sorted(applied_a + applied_b) == files
        assert [] in (applied_a, applied_b)
        assert len(await _ledger(first)) == len(files)
        # The schema is really there and usable.
        assert await _exists(first, "users")
        # A later start applies nothing.
        assert await migrate.apply(first, MIGRATIONS) == []
    finally:
        await first.close()
        await second.close()


async def test_concurrent_applies_are_serialised_while_both_wait(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    """Both appliers are provably waiting at the same moment; still each file runs once.

    0001 reads a table the test holds locked, so whichever applier goes first blocks inside
    it; the other must then be waiting too. Without mutual exclusion both would run 0001
    (and 0002/0003 would insert twice).
    """
    directory = _write(
        tmp_path / "migrations",
        {
            "0001_create_counter.sql": "SELECT count(*) FROM gate; CREATE TABLE counter (n int);",
            "0002_first_insert.sql": "INSERT INTO counter VALUES (2);",
            "0003_second_insert.sql": "INSERT INTO counter VALUES (3);",
        },
    )
    blocker = await test_db.connect()
    first, second = await test_db.connect(), await test_db.connect()
    try:
        await blocker.execute("CREATE TABLE gate (id int)")
        blocked = blocker.transaction()
        await blocked.start()
        await blocker.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        tasks = [
            asyncio.ensure_future(migrate.apply(first, directory)),
            asyncio.ensure_future(migrate.apply(second, directory)),
        ]
        pids = [first.get_server_pid(), second.get_server_pid()]
        for _ in range(1000):
            waiting = await blocker.fetchval(
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid = ANY($1)",
                pids,
            )
            if waiting == 2 or any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        assert waiting == 2, "both appliers should be waiting"
        await blocked.rollback()
        applied_a, applied_b = await asyncio.gather(*tasks)
        assert sorted(applied_a + applied_b) == _migration_files(directory)
        assert [] in (applied_a, applied_b)
        assert await _ledger(blocker) == [1, 2, 3]
        rows = await blocker.fetch("SELECT n FROM counter ORDER BY n")
        assert [r["n"] for r in rows] == [2, 3]
    finally:
        for conn in (blocker, first, second):
            await conn.close()


async def test_two_concurrent_migrate_commands_both_succeed(test_db: TestDatabase) -> None:
    env = cli_env(
        ENV="dev",
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        MIGRATIONS_DIR=str(MIGRATIONS),
        LOG_LEVEL="warning",
    )
    results = await asyncio.gather(run_cli("migrate", env=env), run_cli("migrate", env=env))
    for code, out, err in results:
        assert code == 0, (out, err)
    counts = sorted(
        int(re.search(r"applied (\d+) migration", out).group(1))  # type: ignore[union-attr]
        for _, out, _ in results
    )
    files = _migration_files(MIGRATIONS)
    assert counts == [0, len(files)]
    conn = await test_db.connect()
    try:
        rows = await conn.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY 1")
        assert len(rows) == len(files)
        assert all(row["n"] == 1 for row in rows)
        assert await _exists(conn, "users")
    finally:
        await conn.close()


async def test_failing_migration_is_rolled_back_and_named(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    directory = _write(tmp_path / "migrations", GOOD_AND_BAD)
    conn = await test_db.connect()
    try:
        with pytest.raises(migrate.MigrationError, match=r"0002_bad\.sql"):
            await migrate.apply(conn, directory)
        assert await _ledger(conn) == [1]
        assert await _exists(conn, "good_table")
        assert not await _exists(conn, "half_done"), "the failed file left a table behind"
        # The connection is usable and the lock released: a fixed file applies on the next run.
        (directory / "0002_bad.sql").write_text("CREATE TABLE half_done (id int);")
        other = await test_db.connect()
        try:
            assert await migrate.apply(other, directory) == ["0002_bad.sql"]
        finally:
            await other.close()
        assert await _ledger(conn) == [1, 2]
    finally:
        await conn.close()


async def test_migration_edited_after_apply_is_refused(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "migrations",
        {
            "0001_first.sql": "CREATE TABLE first_table (id int);",
            "0002_second.sql": "CREATE TABLE second_table (id int);",
        },
    )
    conn = await test_db.connect()
    try:
        await migrate.apply(conn, directory)
        (directory / "0001_first.sql").write_text("CREATE TABLE first_table (id bigint);")
        (directory / "0003_third.sql").write_text("CREATE TABLE third_table (id int);")
        with pytest.raises(migrate.MigrationError, match=r"0001_first\.sql.*changed"):
            await migrate.apply(conn, directory)
        assert await _ledger(conn) == [1, 2]
        assert not await _exists(conn, "third_table")
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "bad_name",
    ["1_init.sql", "0001-init.sql", "0001_Init.sql", "init.sql", "00001_init.sql", "0001_.sql"],
)
async def test_badly_named_migration_files_are_refused(
    test_db: TestDatabase, tmp_path: Path, bad_name: str
) -> None:
    directory = _write(
        tmp_path / "migrations",
        {"0001_fine.sql": "CREATE TABLE fine (id int);", bad_name: "SELECT 1;"},
    )
    conn = await test_db.connect()
    try:
        with pytest.raises(migrate.MigrationError, match=re.escape(bad_name)):
            await migrate.apply(conn, directory)
        # Refused before touching the database.
        assert not await _exists(conn, "schema_migrations")
        assert not await _exists(conn, "fine")
    finally:
        await conn.close()


async def test_two_files_with_one_version_are_refused(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "migrations",
        {"0001_one.sql": "SELECT 1;", "0001_other.sql": "SELECT 1;"},
    )
    conn = await test_db.connect()
    try:
        with pytest.raises(migrate.MigrationError, match="share version"):
            await migrate.apply(conn, directory)
    finally:
        await conn.close()


async def test_non_sql_files_are_ignored(test_db: TestDatabase, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "migrations",
        {"0001_fine.sql": "CREATE TABLE fine (id int);", "README.md": "notes"},
    )
    conn = await test_db.connect()
    try:
        assert await migrate.apply(conn, directory) == ["0001_fine.sql"]
        assert await migrate.pending(conn, directory) == []
    finally:
        await conn.close()


async def test_pending_lists_unapplied_files(test_db: TestDatabase, tmp_path: Path) -> None:
    directory = _write(tmp_path / "migrations", {"0001_a.sql": "CREATE TABLE a (id int);"})
    conn = await test_db.connect()
    try:
        assert await migrate.pending(conn, directory) == ["0001_a.sql"]
        await migrate.apply(conn, directory)
        (directory / "0002_b.sql").write_text("CREATE TABLE b (id int);")
        assert await migrate.pending(conn, directory) == ["0002_b.sql"]
    finally:
        await conn.close()


async def test_serve_with_a_failing_migration_exits_non_zero_naming_the_file(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    directory = _write(tmp_path / "migrations", GOOD_AND_BAD)
    env = cli_env(
        ENV="dev",
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        MIGRATIONS_DIR=str(directory),
        PORT="0",
        JWT_SECRET="x" * 48,
    )
    code, out, err = await run_cli("serve", env=env)
    assert code != 0
    assert "0002_bad.sql" in err
    assert "listening" not in out
    assert "Traceback" not in err
    conn = await test_db.connect()
    try:
        assert await _ledger(conn) == [1]
        assert not await _exists(conn, "half_done")
    finally:
        await conn.close()


async def test_migrate_command_with_a_failing_migration_exits_non_zero(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    directory = _write(tmp_path / "migrations", GOOD_AND_BAD)
    env = cli_env(
        ENV="dev",
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        MIGRATIONS_DIR=str(directory),
    )
    code, _, err = await run_cli("migrate", env=env)
    assert code != 0
    assert "0002_bad.sql" in err

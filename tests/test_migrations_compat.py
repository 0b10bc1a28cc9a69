"""Migrations stay backward-compatible for one release (RUNBOOK.md, "Rolling upgrades").

During a rolling upgrade the previous release runs on the schema the new one migrated to,
and going back to it needs no schema change. So a migration only adds: tables, indexes,
columns that are nullable or have a default, functions and types. Two checks:

- a scan of every migration's SQL, outside the allowlist, for the statements that break
  the previous release (drops, renames, type changes, new NOT NULLs, constraints or unique
  indexes on existing tables, DO blocks that would hide any of them);
- the migrations applied one at a time to an empty schema, comparing PostgreSQL's catalog
  before and after each: what the scan cannot see (a statement it does not parse) still
  shows up as a table, column, function, constraint or index that changed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from boltorezka.store import migrate
from tests.conftest import MIGRATIONS

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

# A file listed here is exempt from both checks, with the reason the release before it
# lives with it: nothing older runs against it, or it removes only what that release no
# longer uses (the second half of a change made over two releases).
ALLOWED = {
    "0001_initial_schema.sql": "the first schema: no older release runs against it",
}

# What the previous release cannot live with, as (pattern, reason), matched against one
# statement with comments, string literals and function bodies taken out, upper-cased.
_FORBIDDEN = [
    (r"^DO\b", "a DO block hides its statements from this check; write them out"),
    (r"\bDROP\b", "drops something the previous release may use"),
    (r"\bRENAME\b", "renames something the previous release uses by name"),
    (r"\bTRUNCATE\b", "deletes data the previous release reads"),
    (r"\bREVOKE\b", "takes away a privilege the previous release may need"),
    (r"\bALTER\s+(?:COLUMN\s+)?\S+\s+(?:SET\s+DATA\s+)?TYPE\b", "changes a column's type"),
    (r"^ALTER\s+TYPE\b(?!.*\bADD\s+VALUE\b)", "changes a type the previous release reads"),
    (r"\bSET\s+NOT\s+NULL\b", "the previous release may write NULL there"),
]
_CONSTRAINT_ACTION = re.compile(
    r"^ADD\s+(CONSTRAINT|PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY|EXCLUDE)\b"
)
_COLUMN_ACTION = re.compile(r"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\S+\s")
_ALTER_TABLE = re.compile(r"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?([^\s(]+)\s+(.*)$")
_CREATE_TABLE = re.compile(r"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([^\s(]+)")
_UNIQUE_INDEX = re.compile(
    r"^CREATE\s+UNIQUE\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?:\S+\s+)?ON\s+(?:ONLY\s+)?([^\s(]+)"
)
# Bodies of functions: run when called, not when the migration runs.
_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def statements(sql: str) -> list[str]:
    """The statements of ``sql``, normalised: comments, string literals and dollar-quoted
    bodies replaced by placeholders, quoted identifiers kept as plain names, whitespace
    collapsed, upper-cased."""
    out: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(sql):
        char = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = len(sql) if end < 0 else end + 2
            current.append(" ")
        elif char == "'":
            end = i + 1
            while end < len(sql):
                if sql[end] == "'" and sql.startswith("''", end):
                    end += 2
                elif sql[end] == "'":
                    break
                else:
                    end += 1
            current.append(" 'literal' ")
            i = end + 1
        elif char == '"':
            end = sql.find('"', i + 1)
            end = len(sql) if end < 0 else end
            current.append(sql[i + 1 : end].replace(" ", "_"))
            i = end + 1
        elif (quote := _DOLLAR_QUOTE.match(sql, i)) is not None:
            end = sql.find(quote.group(0), quote.end())
            i = len(sql) if end < 0 else end + len(quote.group(0))
            current.append(" $body$ ")
        elif char == ";":
            out.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    out.append("".join(current))
    normalised = (" ".join(text.split()).upper() for text in out)
    return [text for text in normalised if text]


def _top_level_actions(actions: str) -> list[str]:
    """``ADD a int, ADD b int DEFAULT f(1, 2)`` split at the commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in actions:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def violations(sql: str) -> list[str]:
    """Why each statement of one migration would break the release before it."""
    found = []
    parsed = statements(sql)
    created = {m.group(1) for s in parsed if (m := _CREATE_TABLE.match(s)) is not None}
    for statement in parsed:
        for pattern, reason in _FORBIDDEN:
            if re.search(pattern, statement):
                found.append(f"{reason}: {statement[:120]}")
        unique = _UNIQUE_INDEX.match(statement)
        if unique is not None and unique.group(1) not in created:
            found.append(
                f"a unique index on an existing table refuses the previous release's "
                f"writes: {statement[:120]}"
            )
        altered = _ALTER_TABLE.match(statement)
        if altered is None or altered.group(1) in created:
            continue  # a table of this migration's own: no older code uses it
        for action in _top_level_actions(altered.group(2)):
            if _CONSTRAINT_ACTION.match(action):
                found.append(
                    f"a new constraint on an existing table refuses the previous "
                    f"release's writes: {action[:120]}"
                )
            elif (
                _COLUMN_ACTION.match(action)
                and re.search(r"\bNOT\s+NULL\b", action)
                and not re.search(r"\bDEFAULT\b", action)
            ):
                found.append(
                    f"a NOT NULL column without a default refuses the previous release's "
                    f"inserts: {action[:120]}"
                )
    return found


def _shipped() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


def test_the_allowlist_names_shipped_migrations_only() -> None:
    names = {path.name for path in _shipped()}
    assert set(ALLOWED) <= names, sorted(set(ALLOWED) - names)


# The allowlisted files are judged by their reasons, not by the scan.
@pytest.mark.parametrize(
    "path", [p for p in _shipped() if p.name not in ALLOWED], ids=lambda path: path.name
)
def test_every_migration_only_adds(path: Path) -> None:
    found = violations(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name} breaks the previous release:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE users DROP COLUMN bio",
        "DROP INDEX messages_search_idx",
        "DROP FUNCTION post_messages(uuid[], uuid[], text[], text[], uuid[])",
        "ALTER TABLE rooms RENAME COLUMN name TO title",
        "ALTER TABLE rooms RENAME TO spaces",
        "ALTER TABLE messages ALTER COLUMN body TYPE varchar(100)",
        "ALTER TABLE messages ALTER body SET DATA TYPE varchar(100)",
        "alter table users alter column bio set not null",
        "ALTER TABLE users ADD COLUMN locale text NOT NULL",
        "ALTER TABLE users ADD locale text NOT NULL, ADD tz text",
        "ALTER TABLE users ADD COLUMN a text, ADD COLUMN b int NOT NULL",
        "ALTER TABLE users ADD CONSTRAINT users_bio_short CHECK (length(bio) < 100)",
        "ALTER TABLE rooms ADD UNIQUE (name)",
        "ALTER TABLE rooms ADD FOREIGN KEY (created_by) REFERENCES users (id)",
        "CREATE UNIQUE INDEX rooms_name_key ON rooms (name)",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS rooms_name_key ON rooms (lower(name))",
        "ALTER TYPE post_outcome ADD ATTRIBUTE extra text",
        "DO $$ BEGIN EXECUTE 'ALTER TABLE users DROP COLUMN bio'; END $$",
        "TRUNCATE audit_log",
        "REVOKE SELECT ON users FROM PUBLIC",
        'ALTER TABLE "users" DROP "bio"',
    ],
)
def test_the_scan_catches_what_breaks_the_previous_release(sql: str) -> None:
    assert violations(sql), sql


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE users ADD COLUMN locale text",
        "ALTER TABLE users ADD COLUMN flags int NOT NULL DEFAULT 0, ADD COLUMN note text",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS seen timestamptz NOT NULL DEFAULT now()",
        "CREATE TABLE reactions (id uuid PRIMARY KEY, emoji text NOT NULL)",
        "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b int NOT NULL;\n"
        "CREATE UNIQUE INDEX t_a ON t (a)",
        "CREATE INDEX messages_room_idx ON messages (room_id, seq)",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        "CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS $fn$\n"
        "BEGIN DROP TABLE IF EXISTS scratch; END $fn$",
        "-- DROP TABLE users; a comment\nALTER TABLE users ADD COLUMN x int",
        "COMMENT ON COLUMN users.bio IS 'we never DROP or RENAME this'",
        "ALTER TYPE room_kind ADD VALUE 'broadcast'",
        "/* ALTER TABLE users ALTER COLUMN bio SET NOT NULL */ SELECT 1",
    ],
)
def test_the_scan_lets_additions_through(sql: str) -> None:
    assert violations(sql) == [], sql


# --- The catalog before and after each migration ----------------------------------------


@dataclass(frozen=True)
class Catalog:
    """What the previous release can see of a schema."""

    relations: dict[str, str]  # name -> relkind
    columns: dict[tuple[str, str], tuple[str, bool, bool]]  # -> (type, not null, default)
    functions: dict[tuple[str, str], str]  # (name, identity arguments) -> result
    constraints: dict[str, set[str]]  # table -> definitions
    indexes: dict[str, set[str]]  # table -> definitions
    unique_indexes: dict[str, set[str]]


async def catalog(conn: asyncpg.Connection, schema: str) -> Catalog:
    relations = {
        r["relname"]: r["relkind"]
        for r in await conn.fetch(
            "SELECT c.relname, c.relkind::text AS relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'S')",
            schema,
        )
    }
    columns = {
        (r["relname"], r["attname"]): (r["type"], r["attnotnull"], r["atthasdef"])
        for r in await conn.fetch(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, "
            "a.attnotnull, a.atthasdef FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'c') "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            schema,
        )
    }
    functions = {
        (r["proname"], r["args"]): r["result"]
        for r in await conn.fetch(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, "
            "pg_get_function_result(p.oid) AS result FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
            schema,
        )
    }
    constraints: dict[str, set[str]] = {}
    for r in await conn.fetch(
        "SELECT c.relname, pg_get_constraintdef(k.oid) AS definition FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1",
        schema,
    ):
        constraints.setdefault(r["relname"], set()).add(r["definition"])
    indexes: dict[str, set[str]] = {}
    unique: dict[str, set[str]] = {}
    for r in await conn.fetch(
        "SELECT t.relname, pg_get_indexdef(x.indexrelid) AS definition, x.indisunique "
        "FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = $1",
        schema,
    ):
        # The schema's name is in every definition; the comparison is across one schema.
        indexes.setdefault(r["relname"], set()).add(r["definition"])
        if r["indisunique"]:
            unique.setdefault(r["relname"], set()).add(r["definition"])
    return Catalog(relations, columns, functions, constraints, indexes, unique)


def breaking_changes(before: Catalog, after: Catalog) -> list[str]:
    """What in ``after`` the code written for ``before`` cannot live with."""
    found = []
    for name, kind in before.relations.items():
        if after.relations.get(name) != kind:
            found.append(f"{name} (relkind {kind}) is gone or changed kind")
    for key, (type_, not_null, _) in before.columns.items():
        now = after.columns.get(key)
        if now is None:
            found.append(f"column {key[0]}.{key[1]} is gone")
        elif now[0] != type_:
            found.append(f"column {key[0]}.{key[1]} changed type {type_} -> {now[0]}")
        elif now[1] and not not_null:
            found.append(f"column {key[0]}.{key[1]} became NOT NULL")
    for key, (_, not_null, has_default) in after.columns.items():
        if key not in before.columns and key[0] in before.relations and not_null:
            if not has_default:
                found.append(f"new column {key[0]}.{key[1]} is NOT NULL without a default")
    for key, result in before.functions.items():
        if after.functions.get(key) != result:
            found.append(f"function {key[0]}({key[1]}) is gone or returns something else")
    for table in before.relations:
        if before.constraints.get(table, set()) != after.constraints.get(table, set()):
            found.append(f"the constraints of {table} changed")
        if not before.indexes.get(table, set()) <= after.indexes.get(table, set()):
            found.append(f"an index of {table} is gone")
        if before.unique_indexes.get(table, set()) != after.unique_indexes.get(table, set()):
            found.append(f"the unique indexes of {table} changed")
    return found


async def test_each_migration_keeps_what_the_previous_release_uses(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    conn = await test_db.connect()
    try:
        # One more file at a time: migrate.apply applies only the new one.
        directory = tmp_path / "migrations"
        directory.mkdir()
        previous = await catalog(conn, test_db.schema)
        for path in _shipped():
            shutil.copy(path, directory / path.name)
            assert await migrate.apply(conn, directory) == [path.name]
            current = await catalog(conn, test_db.schema)
            if path.name not in ALLOWED:
                found = breaking_changes(previous, current)
                assert not found, f"{path.name} breaks the previous release:\n" + "\n".join(found)
            previous = current
        assert previous.relations, "the migrations created nothing"
    finally:
        await conn.close()


def _catalog(**changes: Any) -> Catalog:
    base = Catalog(
        relations={"users": "r"},
        columns={("users", "id"): ("uuid", True, True), ("users", "bio"): ("text", False, False)},
        functions={("f", "integer"): "integer"},
        constraints={"users": {"PRIMARY KEY (id)"}},
        indexes={"users": {"CREATE UNIQUE INDEX users_pkey ON users (id)"}},
        unique_indexes={"users": {"CREATE UNIQUE INDEX users_pkey ON users (id)"}},
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    "after",
    [
        _catalog(relations={}),
        _catalog(columns={("users", "id"): ("uuid", True, True)}),
        _catalog(
            columns={("users", "id"): ("uuid", True, True), ("users", "bio"): ("int", False, False)}
        ),
        _catalog(
            columns={("users", "id"): ("uuid", True, True), ("users", "bio"): ("text", True, False)}
        ),
        _catalog(
            columns={
                ("users", "id"): ("uuid", True, True),
                ("users", "bio"): ("text", False, False),
                ("users", "locale"): ("text", True, False),
            }
        ),
        _catalog(functions={}),
        _catalog(functions={("f", "integer"): "bigint"}),
        _catalog(constraints={"users": {"PRIMARY KEY (id)", "CHECK ((bio <> ''::text))"}}),
        _catalog(indexes={"users": set()}),
        _catalog(unique_indexes={"users": set()}),
    ],
)
def test_the_catalog_comparison_catches_what_breaks_the_previous_release(after: Catalog) -> None:
    assert breaking_changes(_catalog(), after)


def test_the_catalog_comparison_lets_additions_through() -> None:
    after = _catalog(
        relations={"users": "r", "reactions": "r"},
        columns={
            ("users", "id"): ("uuid", True, True),
            ("users", "bio"): ("text", False, False),
            ("users", "locale"): ("text", False, False),
            ("users", "flags"): ("integer", True, True),
            ("reactions", "id"): ("uuid", True, False),
        },
        functions={("f", "integer"): "integer", ("f", "integer, integer"): "integer"},
        constraints={"users": {"PRIMARY KEY (id)"}, "reactions": {"PRIMARY KEY (id)"}},
        indexes={
            "users": {
                "CREATE UNIQUE INDEX users_pkey ON users (id)",
                "CREATE INDEX users_bio ON users (bio)",
            }
        },
    )
    assert breaking_changes(_catalog(), after) == []

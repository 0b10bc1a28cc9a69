"""Pool connections come back clean without asyncpg's reset query (store/database.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from boltorezka.store.database import create_pool

if TYPE_CHECKING:
    from tests.conftest import TestDatabase


async def test_a_transaction_left_open_is_rolled_back_on_release(test_db: TestDatabase) -> None:
    pool = await create_pool(
        test_db.url, min_size=1, max_size=1, server_settings=test_db.server_settings
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (x int)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            # The table never committed, and the schema setting survived the release.
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
            assert await conn.fetchval("SHOW search_path") == test_db.schema
    finally:
        await pool.close()

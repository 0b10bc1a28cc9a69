"""All SQL lives in this package; services call these functions, never write queries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    #: A single connection, pooled or not: what transactions need.
    Conn: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]
    #: Anything that can run one statement: a connection or the pool itself.
    Executor: TypeAlias = Conn | asyncpg.Pool[Any]
else:
    Conn = Any
    Executor = Any

"""Lean read-only queries for the hottest paths (the key check on every request, ``GET /v1/videos/{id}``).

The ORM session costs ~1.5 ms per request (session, transaction, identity map, rollback); these
reads use SQLAlchemy Core instead. On SQLite they run on a read-only ``sqlite3`` connection right on
the event loop: in WAL mode a primary-key read never waits for a writer and takes microseconds,
cheaper than handing it to a thread. On PostgreSQL they use a pooled async connection without the
ORM. Every call still reads the database, so a revoked key stops working at once everywhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, Table, create_engine, event, select
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool


def _readonly(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=1")
    cur.execute("PRAGMA busy_timeout=2000")
    cur.close()


class FastReader:
    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self._async = engine
        self._sync: Engine | None = None
        self._path: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._plans: dict[tuple[str, str], tuple[str, list[str], list[Any]]] = {}
        self._pg_conninfo: str | None = None
        self._pg_pool: Any = None
        if url.startswith("postgresql+psycopg://"):
            self._pg_conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        if url.startswith("sqlite"):
            path = self._path = url.split(":///", 1)[1]
            self._sync = create_engine(
                f"sqlite:///{path}", poolclass=StaticPool,
                connect_args={"check_same_thread": False, "isolation_level": None},
            )
            event.listen(self._sync, "connect", _readonly)

    async def many(self, *stmts: Select[Any]) -> list[Sequence[Row[Any]]]:
        """Run several selects on one connection; their rows, in order."""
        if self._sync is not None:
            try:
                with self._sync.connect() as conn:
                    return [conn.execute(st).all() for st in stmts]
            except OperationalError:
                pass  # e.g. the database is busy checkpointing: use the async path below
        async with self._async.connect() as conn:
            return [(await conn.execute(st)).all() for st in stmts]

    async def all(self, stmt: Select[Any]) -> Sequence[Row[Any]]:
        return (await self.many(stmt))[0]

    async def one(self, stmt: Select[Any]) -> Row[Any] | None:
        rows = await self.all(stmt)
        return rows[0] if rows else None

    async def rows_by(self, table: Table, column: str, value: Any) -> list[dict[str, Any]]:
        """``SELECT * FROM table WHERE column = value`` as dicts of Python values. On SQLite this is a
        plain cursor call plus the column types' own result processors: no statement compilation,
        no result-proxy machinery (about 20 µs)."""
        if self._sync is not None:
            plan = self._plans.get((table.name, column))
            if plan is None:
                plan = self._plans[(table.name, column)] = self._plan(table, column)
            sql, names, procs = plan
            try:
                raw = self._raw().execute(sql, (value,)).fetchall()
            except sqlite3.Error:
                raw = None
            if raw is not None:
                return [{n: (p(v) if p is not None else v) for n, p, v in zip(names, procs, row)} for row in raw]
        if self._pg_conninfo is not None:
            return await self._pg_rows(table, column, value)
        rows = await self.all(select(table).where(table.c[column] == value))
        return [dict(r._mapping) for r in rows]

    async def columns_by(self, table: Table, names: Sequence[str], column: str, value: Any) -> list[tuple[Any, ...]]:
        """``SELECT names FROM table WHERE column = value`` as tuples (in ``names`` order): the same
        lean path as ``rows_by``, for a few columns only (no JSON decoding of the others)."""
        if self._sync is not None:
            key = (table.name, column + "|" + ",".join(names))
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = self._plan(table, column, names)
            sql, _, procs = plan
            try:
                raw = self._raw().execute(sql, (value,)).fetchall()
            except sqlite3.Error:
                raw = None
            if raw is not None:
                conv = [(i, p) for i, p in enumerate(procs) if p is not None]
                if not conv:
                    return raw  # sqlite3 rows are tuples already
                out = []
                for row in raw:
                    values = list(row)
                    for i, p in conv:
                        values[i] = p(values[i])
                    out.append(tuple(values))
                return out
        rows = await (self._pg_rows(table, column, value, names) if self._pg_conninfo is not None
                      else self._orm_rows(table, column, value))
        return [tuple(r[n] for n in names) for r in rows]

    async def _orm_rows(self, table: Table, column: str, value: Any) -> list[dict[str, Any]]:
        rows = await self.all(select(table).where(table.c[column] == value))
        return [dict(r._mapping) for r in rows]

    async def _pg_rows(self, table: Table, column: str, value: Any,
                       only: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """PostgreSQL: a raw psycopg pool in autocommit (no transaction, no pre-ping round trip);
        psycopg already returns aware datetimes, dicts for JSONB and booleans."""
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        if self._pg_pool is None:
            if self._pg_conninfo is None:
                raise RuntimeError("fast reader: not a PostgreSQL database")
            self._pg_pool = AsyncConnectionPool(self._pg_conninfo, min_size=1, max_size=8, open=False,
                                                kwargs={"autocommit": True, "row_factory": dict_row})
            await self._pg_pool.open()
        names = ", ".join(f'"{n}"' for n in (only or [c.name for c in table.columns]))
        sql = f'SELECT {names} FROM "{table.name}" WHERE "{column}" = %s'
        async with self._pg_pool.connection() as conn:
            cur = await conn.execute(sql, (value,))
            return list(await cur.fetchall())

    def _plan(self, table: Table, column: str, only: Sequence[str] | None = None) -> tuple[str, list[str], list[Any]]:
        assert self._sync is not None
        dialect = self._sync.dialect
        cols = [table.c[n] for n in only] if only else list(table.columns)
        names = [c.name for c in cols]
        procs = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols]
        sql = f'SELECT {", ".join(chr(34) + n + chr(34) for n in names)} FROM "{table.name}" WHERE "{column}" = ?'
        return sql, names, procs

    def _raw(self) -> sqlite3.Connection:
        if self._conn is None:
            assert self._path is not None
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA query_only=1")
            self._conn.execute("PRAGMA busy_timeout=2000")
        return self._conn

    async def aclose(self) -> None:
        if self._pg_pool is not None:
            await self._pg_pool.close()
            self._pg_pool = None
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._sync is not None:
            self._sync.dispose()

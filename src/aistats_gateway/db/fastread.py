"""Lean read-only queries for the hottest paths (the key check on every request, ``GET /v1/videos/{id}``).

The ORM session costs ~1.5 ms per request (session, transaction, identity map, rollback); these
reads use SQLAlchemy Core instead. On SQLite they run on a read-only ``sqlite3`` connection right on
the event loop: in WAL mode a primary-key read never waits for a writer and takes microseconds,
cheaper than handing it to a thread. On PostgreSQL they use a pooled async connection without the
ORM. Every call still reads the database, so a revoked key stops working at once everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.engine import Engine, Row
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
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1]
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

    def close(self) -> None:
        if self._sync is not None:
            self._sync.dispose()

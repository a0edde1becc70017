"""The requests-per-minute counter: one row per key and minute, incremented atomically."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningInsert

from aistats_gateway.auth.tables import RateCounter


async def hit(sessions: async_sessionmaker[AsyncSession], key_id: str, window: int) -> int:
    """Count one request in ``window`` (a unix minute) and return the count so far."""
    async with sessions() as s, s.begin():
        keys, bump = ["key_id", "window"], {"count": RateCounter.count + 1}
        stmt: ReturningInsert[Any]
        if s.get_bind().dialect.name == "postgresql":
            stmt = pg_insert(RateCounter).values(key_id=key_id, window=window, count=1).on_conflict_do_update(
                index_elements=keys, set_=bump).returning(RateCounter.count)
        else:
            stmt = sqlite_insert(RateCounter).values(key_id=key_id, window=window, count=1).on_conflict_do_update(
                index_elements=keys, set_=bump).returning(RateCounter.count)
        count: int = int((await s.execute(stmt)).scalar_one())
        if count == 1:  # first request of a new minute: forget old windows of this key
            await s.execute(delete(RateCounter).where(RateCounter.key_id == key_id, RateCounter.window < window - 1))
        return count

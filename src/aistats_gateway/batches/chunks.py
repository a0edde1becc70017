"""Chunk leases on a batch's rows: one conditional UPDATE leases a page of queued rows.

Invariants:

* ``claim`` leases up to ``n`` workable rows of one batch (``queued``, due, unleased or with a
  lapsed lease) in line order with ONE ``UPDATE … WHERE id IN (SELECT … LIMIT n) AND <workable>
  RETURNING``. The outer WHERE is re-checked row by row, so of two claimers each row goes to
  exactly one (PostgreSQL also skips rows another claimer has locked: ``FOR UPDATE SKIP LOCKED``).
* ``heartbeat`` extends the leases of the given rows only where they are still ``queued`` and
  ours, and says which ones it extended: any other row is lost (another process took it after our
  lease lapsed) and must be neither sent nor written by us.
* ``write`` stores many results in ONE transaction, each a conditional UPDATE on
  ``status = 'queued' AND lease_owner = <us>``: a finished row is never written again, a row we
  lost is not written by us. ``release`` hands back rows we leased but did not start.
* Every time comes from the caller (``now``): tests inject a clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from aistats_gateway.batches.tables import BatchRow

T: Table = BatchRow.__table__  # type: ignore[assignment]
_FINISH_COLS = ("status", "provider", "status_code", "usage", "cost_nanos", "error", "response", "attempts",
                "updated_at", "completed_at")
_RETRY_COLS = ("attempts", "error", "updated_at", "next_run_at")


@dataclass
class Row:
    """A leased row as the runner needs it (no ORM object)."""

    id: str
    line: int
    body: bytes
    attempts: int


def _workable(now: dt.datetime) -> Any:
    return and_(T.c.status == "queued", or_(T.c.lease_until.is_(None), T.c.lease_until < now))


async def claim(engine: AsyncEngine, batch_id: str, owner: str, n: int, now: dt.datetime,
                seconds: float) -> list[Row]:
    """Lease up to ``n`` due, workable rows of ``batch_id`` (line order) until ``now + seconds``."""
    if n <= 0:
        return []
    page = (select(T.c.id).where(T.c.batch_id == batch_id, _workable(now), T.c.next_run_at <= now)
            .order_by(T.c.line).limit(n))
    if engine.dialect.name == "postgresql":
        page = page.with_for_update(skip_locked=True)
    until = now + dt.timedelta(seconds=seconds)
    stmt = (update(T).where(T.c.id.in_(page.scalar_subquery()), _workable(now))
            .values(lease_owner=owner, lease_until=until)
            .returning(T.c.id, T.c.line, T.c.body, T.c.attempts))
    async with engine.begin() as conn:
        got = (await conn.execute(stmt)).all()
    return sorted((Row(r[0], int(r[1]), bytes(r[2]), int(r[3])) for r in got), key=lambda r: r.line)


async def heartbeat(engine: AsyncEngine, ids: Sequence[str], owner: str, until: dt.datetime) -> set[str]:
    """Extend our leases of ``ids`` to ``until``; the ids still ours (extended)."""
    if not ids:
        return set()
    stmt = (update(T).where(T.c.id.in_(list(ids)), T.c.status == "queued", T.c.lease_owner == owner)
            .values(lease_until=until).returning(T.c.id))
    async with engine.begin() as conn:
        return {str(r[0]) for r in await conn.execute(stmt)}


async def release(engine: AsyncEngine, ids: Sequence[str], owner: str) -> None:
    """Hand back rows we leased and did not start (they are workable again at once)."""
    if not ids:
        return
    async with engine.begin() as conn:
        await conn.execute(update(T).where(T.c.id.in_(list(ids)), T.c.status == "queued", T.c.lease_owner == owner)
                           .values(lease_owner=None, lease_until=None))


def _guarded(owner: str) -> Any:
    return update(T).where(T.c.id == bindparam("rid"), T.c.status == "queued", T.c.lease_owner == owner)


async def write(engine: AsyncEngine, owner: str, finished: list[dict[str, Any]],
                retries: list[dict[str, Any]]) -> int:
    """Write finished rows (``_FINISH_COLS`` + ``rid``) and rows to retry later (``_RETRY_COLS`` +
    ``rid``) in one transaction, each only while queued and ours; how many were written."""
    done = 0
    async with engine.begin() as conn:
        if finished:
            params = [{**{k: f[k] for k in _FINISH_COLS}, "rid": f["rid"], "lease_owner": None, "lease_until": None}
                      for f in finished]
            done += max((await conn.execute(_guarded(owner), params)).rowcount, 0)
        if retries:
            params = [{**{k: r[k] for k in _RETRY_COLS}, "rid": r["rid"], "lease_owner": None, "lease_until": None}
                      for r in retries]
            done += max((await conn.execute(_guarded(owner), params)).rowcount, 0)
    return done


async def batches_with_due_rows(engine: AsyncEngine, now: dt.datetime, limit: int,
                                workspaces: dict[str, str] | None = None) -> list[str]:
    """Gateway batches still running whose rows include a due, workable one (an EXISTS per batch),
    fair across workspaces: each workspace's oldest batch comes before any workspace's second one
    (round robin over a window of the oldest ``4 × limit``). ``workspaces`` is filled with each
    returned batch's workspace id."""
    from aistats_gateway.batches.tables import Batch

    B: Table = Batch.__table__  # type: ignore[assignment]
    due = select(T.c.id).where(T.c.batch_id == B.c.id, _workable(now), T.c.next_run_at <= now).exists()
    stmt = (select(B.c.id, B.c.workspace_id).where(B.c.status.in_(("validating", "in_progress")),
                                                   B.c.mode == "gateway", B.c.expires_at > now, due)
            .order_by(B.c.created_at, B.c.id).limit(4 * limit))
    async with engine.connect() as conn:
        found = [(str(r[0]), str(r[1])) for r in await conn.execute(stmt)]
    return round_robin(found, limit, workspaces)


def round_robin(found: Sequence[tuple[str, str]], limit: int, workspaces: dict[str, str] | None = None) -> list[str]:
    """Up to ``limit`` ids of ``(id, group)`` pairs (oldest first), one per group per round."""
    queues: dict[str, list[str]] = {}
    for item, group in found:
        queues.setdefault(group, []).append(item)
        if workspaces is not None:
            workspaces[item] = group
    out: list[str] = []
    depth = 0
    while len(out) < limit and any(len(q) > depth for q in queues.values()):
        out += [q[depth] for q in queues.values() if len(q) > depth][: limit - len(out)]
        depth += 1
    return out

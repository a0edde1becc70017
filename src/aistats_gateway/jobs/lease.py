"""One lease, one forward-only transition and one step runner for every asynchronous operation.

A *leased table* is any table with an id, a status, a lease deadline (``lease_until``), an optional
lease owner and a due time (``next_run_at``); ``LeaseTable`` names those columns. The row is the
truth; a lease only says who may work the row until when:

* ``claim`` / ``claim_due`` take leases with one conditional UPDATE (the second takes a batch of
  due rows, picked fairly across groups, e.g. workspaces). Of two claimers exactly one wins.
* ``heartbeat`` extends a lease only while it is still ours; ``release`` drops it (optionally
  setting when the row is due again) only while it is still ours. Tables without an owner column
  are fenced by the lease deadline itself: a lease is ours while ``lease_until`` is the value we
  wrote.
* ``run_leased`` claims, runs one step with a heartbeat, and releases. If the heartbeat finds the
  lease gone (this process stalled past it and another one took the row), the step is cancelled,
  so two processes never work one row.
* ``transition`` moves a row's status forward with a conditional UPDATE (``WHERE status IN
  allowed_from``) and then tells the ``JobEvents`` subscribers of that kind (terminal hooks: settle
  billing, queue webhooks …). A transition that did not happen tells nobody.

Every statement is SQLAlchemy Core on an ``AsyncEngine`` connection: no ORM session, identity map
or object construction on the engine's hot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Table, and_, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aistats_gateway.db.base import utcnow

log = logging.getLogger("aistats_gateway.jobs")

StatusHook = Callable[[str, str, str], Awaitable[None]]  # (item id, old status, new status)


@dataclass(frozen=True)
class LeaseTable:
    """Which columns of ``table`` hold the lease and the schedule, and which rows may be worked."""

    kind: str  # e.g. "video"; the name terminal hooks subscribe to
    table: Table
    active: tuple[str, ...]  # statuses in which a row is still worked
    terminal: tuple[str, ...] = ()
    id_col: str = "id"
    status_col: str = "status"
    owner_col: str | None = "lease_owner"
    until_col: str = "lease_until"
    due_col: str = "next_run_at"
    group_col: str | None = None  # fairness unit (the workspace), if any
    live: tuple[ColumnElement[bool], ...] = ()  # more conditions a workable row meets (e.g. not deleted)

    def c(self, name: str) -> Any:
        return self.table.c[name]

    def workable(self, now: dt.datetime) -> ColumnElement[bool]:
        """Active, live and not leased by anyone at ``now``."""
        until = self.c(self.until_col)
        return and_(self.c(self.status_col).in_(self.active), *self.live,
                    or_(until.is_(None), until < now))


Step = Callable[["Lease"], Coroutine[Any, Any, float | None]]  # advance a leased row; seconds until due again, or None


@dataclass
class Lease:
    table: LeaseTable
    item_id: str
    owner: str
    until: dt.datetime
    seconds: float
    group: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # more columns to write when it is released

    def held(self) -> ColumnElement[bool]:
        """The condition that the row is still leased by us."""
        lt = self.table
        cond = lt.c(lt.id_col) == self.item_id
        if lt.owner_col is not None:
            return and_(cond, lt.c(lt.owner_col) == self.owner)
        return and_(cond, lt.c(lt.until_col) == self.until)


Db = AsyncEngine | async_sessionmaker[AsyncSession]
_current: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("aistats_lease", default=None)


class Reader(Protocol):
    """A cheap read path (``db.fastread.FastReader``): plain SELECTs outside any transaction."""

    async def all(self, stmt: Any) -> Sequence[Any]: ...


def current() -> Lease | None:
    """The lease the running step works under (set by ``run_leased``), if any."""
    return _current.get()


def on_release(item_id: str, **values: Any) -> bool:
    """Write ``values`` with the release of the current lease of ``item_id`` (one UPDATE instead of
    two); False when no such lease is running here (write them yourself then)."""
    lease = _current.get()
    if lease is None or lease.item_id != item_id:
        return False
    lease.values.update(values)
    return True


async def _select(db: Db, stmt: Any, reader: Reader | None) -> Sequence[Any]:
    if reader is not None:
        return await reader.all(stmt)
    async with engine_of(db).connect() as conn:
        return (await conn.execute(stmt)).all()


def engine_of(db: Db) -> AsyncEngine:
    if isinstance(db, AsyncEngine):
        return db
    bind = db.kw.get("bind")
    assert isinstance(bind, AsyncEngine), "the session factory must be bound to an AsyncEngine"
    return bind


def _until(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=seconds)


def _lease_values(lt: LeaseTable, owner: str, until: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {lt.until_col: until}
    if lt.owner_col is not None:
        values[lt.owner_col] = owner
    return values


async def _due_rows(db: Db, lt: LeaseTable, now: dt.datetime, limit: int, reader: Reader | None, *,
                    due_only: bool = True) -> list[tuple[Any, str, str | None]]:
    """(due time, id, group) of up to ``limit`` workable rows in due order. One query per active
    status, each an ordered walk of the (status, due) index that stops after ``limit`` rows: an
    ``IN`` over the statuses would sort every active row on each look (10,000 rows: milliseconds)."""
    due, ident = lt.c(lt.due_col), lt.c(lt.id_col)
    group = lt.c(lt.group_col) if lt.group_col else None
    cols = [due, ident] + ([group] if group is not None else [])
    until = lt.c(lt.until_col)
    out: list[tuple[Any, str, str | None]] = []
    for status in lt.active:
        stmt = (select(*cols).where(lt.c(lt.status_col) == status, *lt.live, or_(until.is_(None), until < now),
                                    *((due <= now,) if due_only else ()))
                .order_by(due).limit(limit))
        for r in await _select(db, stmt, reader):
            out.append((r[0], r[1], r[2] if group is not None else None))
    out.sort(key=lambda r: r[0])
    return out[:limit]


async def claim(db: Db, lt: LeaseTable, item_id: str, owner: str, seconds: float) -> Lease | None:
    """Take the row's lease if it is workable and nobody holds it. Not re-entrant: a second claim by
    the same owner fails while the first lease lasts (one process may run two tasks for one row)."""
    now = utcnow()
    until = now + dt.timedelta(seconds=seconds)
    async with engine_of(db).begin() as conn:
        res = await conn.execute(update(lt.table).where(lt.c(lt.id_col) == item_id, lt.workable(now))
                                 .values(**_lease_values(lt, owner, until)))
    return Lease(lt, item_id, owner, until, seconds) if res.rowcount == 1 else None


def fair_order(candidates: Sequence[tuple[str, str | None]], running: dict[str, int] | None = None,
               cap: int | None = None, recent: dict[str, int] | None = None) -> list[tuple[str, str | None]]:
    """Round-robin over groups: ``candidates`` are (id, group) in due order; the result takes one
    from each group in turn, groups with fewer running items first, then the group served least
    recently (``recent``: group → sequence number of its last start), and at most ``cap`` running
    per group (counting ``running``). Within a group the due order is kept."""
    running = dict(running or {})
    recent = recent or {}
    queues: dict[str | None, list[tuple[str, str | None]]] = {}
    for item in candidates:
        queues.setdefault(item[1], []).append(item)
    out: list[tuple[str, str | None]] = []
    while queues:
        for group in sorted(queues, key=lambda g: (running.get(g or "", 0), recent.get(g or "", -1))):
            q = queues[group]
            if cap is not None and group is not None and running.get(group, 0) >= cap:
                del queues[group]
                continue
            out.append(q.pop(0))
            running[group or ""] = running.get(group or "", 0) + 1
            if not q:
                del queues[group]
    return out


@dataclass
class Claimed:
    """What one look at a table found: the leases taken, and when the next row not taken is due."""

    leases: list[Lease]
    next_due: dt.datetime | None


async def claim_due(db: Db, lt: LeaseTable, owner: str, seconds: float, limit: int, *,
                    running: dict[str, int] | None = None, cap: int | None = None,
                    recent: dict[str, int] | None = None, scan: int | None = None,
                    reader: Reader | None = None) -> list[Lease]:
    """Lease up to ``limit`` due rows at once (see ``look``)."""
    return (await look(db, lt, owner, seconds, limit, running=running, cap=cap, recent=recent, scan=scan,
                       reader=reader)).leases


async def look(db: Db, lt: LeaseTable, owner: str, seconds: float, limit: int, *,
               running: dict[str, int] | None = None, cap: int | None = None,
               recent: dict[str, int] | None = None, scan: int | None = None,
               reader: Reader | None = None) -> Claimed:
    """One look: the first workable rows in due order (an ordered walk of the due-time index), a
    fair pick of the due ones across groups (``fair_order``), one conditional UPDATE … RETURNING of
    the picked ids (rows another process took in between are simply not ours), and the due time of
    the first row left (due now when something due was left for lack of slots, a cap or a race)."""
    now = utcnow()
    rows = await _due_rows(db, lt, now, scan or max(limit * 8, 64), reader, due_only=False)
    due = [r for r in rows if _aware(r[0]) <= now]
    picked = fair_order([(r[1], r[2]) for r in due], running, cap, recent)[:max(limit, 0)]
    won: list[Lease] = []
    if picked:
        until = now + dt.timedelta(seconds=seconds)
        groups = dict(picked)
        async with engine_of(db).begin() as conn:
            res = await conn.execute(
                update(lt.table).where(lt.c(lt.id_col).in_(list(groups)), lt.workable(utcnow()))
                .values(**_lease_values(lt, owner, until)).returning(lt.c(lt.id_col)))
            won = [Lease(lt, r[0], owner, until, seconds, groups.get(r[0])) for r in res]
    taken = {x.item_id for x in won}
    left = [_aware(r[0]) for r in rows if r[1] not in taken]
    return Claimed(won, min(left) if left else None)


def _aware(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


async def next_due(db: Db, lt: LeaseTable, reader: Reader | None = None) -> dt.datetime | None:
    """The earliest due time of the workable (unleased or lease-expired) rows: one ``ORDER BY due
    LIMIT 1`` on the due-time index. Rows leased now are not counted; a crashed holder's row is
    seen by the first look after its lease ends (engines look at least every few seconds)."""
    rows = await _due_rows(db, lt, utcnow(), 1, reader, due_only=False)
    if not rows:
        return None
    found: dt.datetime = rows[0][0]
    if found.tzinfo is None:  # a raw read path may hand back naive UTC
        found = found.replace(tzinfo=dt.UTC)
    return found


async def due_ids(db: Db, lt: LeaseTable, limit: int, reader: Reader | None = None) -> list[str]:
    """Up to ``limit`` ids of due, workable rows (for reconcilers)."""
    return [r[1] for r in await _due_rows(db, lt, utcnow(), limit, reader)]


async def heartbeat(db: Db, lease: Lease) -> bool:
    """Extend the lease (``lease.until`` moves on); False when it is no longer ours."""
    lt = lease.table
    until = _until(lease.seconds)
    async with engine_of(db).begin() as conn:
        res = await conn.execute(update(lt.table).where(lease.held()).values({lt.until_col: until}))
    if res.rowcount != 1:
        return False
    lease.until = until
    return True


async def release(db: Db, lease: Lease, delay: float | None = None, **values: Any) -> bool:
    """Drop the lease (and set the due time ``delay`` seconds from now, and ``values``) if still ours."""
    lt = lease.table
    vals: dict[str, Any] = {lt.until_col: None, **lease.values, **values}
    if lt.owner_col is not None:
        vals[lt.owner_col] = None
    if delay is not None:
        vals[lt.due_col] = _until(delay)
    async with engine_of(db).begin() as conn:
        res = await conn.execute(update(lt.table).where(lease.held()).values(vals))
    return res.rowcount == 1


async def keep(db: Db, lease: Lease) -> None:
    """Keep a lease alive until cancelled (e.g. while an API request submits a job it leased)."""
    while True:
        await asyncio.sleep(max(lease.seconds / 3, 0.5))
        try:
            if not await heartbeat(db, lease):
                return
        except Exception:
            log.debug("lease heartbeat failed; retrying", exc_info=True)


async def run_leased(db: Db, lease: Lease, step: Step, *, on_lost: Callable[[], None] | None = None,
                     error_delay: float = 30.0) -> float | None:
    """Run ``step(lease)`` under ``lease`` (already claimed) with a heartbeat, then release it with
    the step's answer as the next due time. Returns that answer; None when the lease was lost."""
    async def under_lease() -> float | None:
        _current.set(lease)  # this task's own context: steps find their lease with current()
        return await step(lease)

    task: asyncio.Task[float | None] = asyncio.create_task(
        under_lease(), name=f"{lease.table.kind}-step-{lease.item_id}")
    lost = asyncio.Event()
    beat = asyncio.create_task(_beat(db, lease, task, lost))
    delay: float | None = None
    try:
        delay = await asyncio.shield(task)
    except asyncio.CancelledError:
        if not lost.is_set():  # this process is stopping: stop the step too; the lease is released below
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if on_lost is not None:
            on_lost()
        log.warning("lost a lease; another worker continues the item",
                    extra={"kind": lease.table.kind, "id": lease.item_id})
        return None
    except Exception:
        log.exception("job step failed", extra={"kind": lease.table.kind, "id": lease.item_id})
        delay = error_delay
    finally:
        beat.cancel()
        if not lost.is_set():
            with contextlib.suppress(Exception):
                await release(db, lease, delay)
    return delay


async def _beat(db: Db, lease: Lease, task: asyncio.Task[Any], lost: asyncio.Event) -> None:
    while True:
        await asyncio.sleep(max(lease.seconds / 3, 0.5))
        try:
            ours = await heartbeat(db, lease)
        except Exception:
            log.debug("lease heartbeat failed; retrying", exc_info=True)
            continue
        if not ours:
            lost.set()
            task.cancel()
            return


@dataclass
class JobEvents:
    """Per-process subscribers to status changes, by kind. ``on_terminal`` hooks run only for moves
    into one of the table's terminal statuses; ``on_status`` hooks for every move."""

    _status: dict[str, list[StatusHook]] = field(default_factory=dict)
    _terminal: dict[str, list[StatusHook]] = field(default_factory=dict)

    def on_status(self, kind: str, hook: StatusHook) -> None:
        self._status.setdefault(kind, []).append(hook)

    def on_terminal(self, kind: str, hook: StatusHook) -> None:
        self._terminal.setdefault(kind, []).append(hook)

    async def emit(self, lt: LeaseTable, item_id: str, old: str, new: str) -> None:
        hooks: Iterable[StatusHook] = list(self._status.get(lt.kind, ()))
        if new in lt.terminal:
            hooks = [*hooks, *self._terminal.get(lt.kind, ())]
        for hook in hooks:
            try:
                await hook(item_id, old, new)
            except Exception:
                log.exception("status hook failed", extra={"kind": lt.kind, "id": item_id, "status": new})


async def transition(db: Db, lt: LeaseTable, item_id: str, new: str, allowed_from: Iterable[str], *,
                     events: JobEvents | None = None, where: Sequence[ColumnElement[bool]] = (),
                     **values: Any) -> bool:
    """``UPDATE … SET status = new, **values WHERE id = item_id AND status IN allowed_from``; on
    success the subscribers of ``lt.kind`` hear (id, old, new). False when the row was elsewhere."""
    allowed = tuple(allowed_from)
    if not allowed:
        return False
    status = lt.c(lt.status_col)
    moved = False
    # The UPDATE is guarded on the status just read (so the hooks hear the true old status). When
    # another process moved the row in between (queued → in_progress while a cancel arrives), read
    # again: the move still happens if the row is still in an allowed status. Statuses only move
    # forward, so this ends after at most one try per status.
    for _ in range(len(allowed) + 1):
        async with engine_of(db).begin() as conn:
            old = (await conn.execute(select(status).where(lt.c(lt.id_col) == item_id))).scalar()
            if old not in allowed:
                return False
            res = await conn.execute(update(lt.table).where(lt.c(lt.id_col) == item_id, status == old,
                                                             *(where or (true(),)))
                                     .values({lt.status_col: new, **values}))
        if res.rowcount == 1:
            moved = True
            break
    if moved and events is not None:
        await events.emit(lt, item_id, str(old), new)
    return moved

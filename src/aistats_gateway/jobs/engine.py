"""Background work. The database rows are the truth; engines only decide *when* and *where* the
task functions run.

* ``Source``: one kind of background work. A *leased* source (``LeasedWork``) names its table's
  lease columns (``jobs.lease.LeaseTable``) and a step function; the engine claims its due rows in
  batches and runs each step under a heartbeat. A plain source (e.g. a repair sweep) only says which
  ids are due and how to run one, and is scanned at most every ``sweep_every`` seconds.
* ``LocalEngine`` (SQLite default, or PostgreSQL without separate workers): runs due work in this
  process. It never scans on a fixed tick: after each fill it sleeps until the earliest due time
  or lease expiry in the tables (an index-backed MIN), or until woken by a new item, a finished
  step that is due again sooner, or a freed slot. Several processes sharing one database never run
  the same row at once (the claim is a conditional UPDATE).
* Fairness: due rows are picked round-robin across groups (workspaces), the least busy group
  first, and a group may hold at most ``GroupLimiter.cap`` of this process's slots, so one
  workspace's backlog of long renders cannot starve another's job.
* ``ProcrastinateEngine`` (PostgreSQL, ``jobs/procrastinate_engine.py``): the same task functions
  dispatched through procrastinate's queue to any number of worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aistats_gateway.db.base import utcnow
from aistats_gateway.jobs import lease as leases

log = logging.getLogger("aistats_gateway.jobs")


@dataclass
class GroupLimiter:
    """Steps running in this process per group; ``cap`` is the most one group may run at once."""

    cap: int | None = None
    running: dict[str, int] = field(default_factory=dict)
    recent: dict[str, int] = field(default_factory=dict)  # group → sequence number of its last start
    _seq: int = 0

    def full(self, group: str | None) -> bool:
        return self.cap is not None and group is not None and self.running.get(group, 0) >= self.cap

    def enter(self, group: str | None) -> None:
        if group is not None:
            self.running[group] = self.running.get(group, 0) + 1
            self._seq += 1
            if len(self.recent) > 10_000:
                self.recent.clear()
            self.recent[group] = self._seq

    def leave(self, group: str | None) -> None:
        if group is not None:
            left = self.running.get(group, 0) - 1
            if left > 0:
                self.running[group] = left
            else:
                self.running.pop(group, None)


@dataclass
class LeasedWork:
    """A source backed by a leased table: how to lease its rows and how to advance one."""

    db: leases.Db
    table: leases.LeaseTable
    step: leases.Step
    owner: str
    seconds: float
    limiter: GroupLimiter = field(default_factory=GroupLimiter)
    error_delay: float = 30.0
    reader: leases.Reader | None = None  # a cheaper path for the engine's SELECTs
    capped_retry: float = 1.0  # a claimed row whose group is at its cap is handed back for this long

    async def run_lease(self, lease: leases.Lease) -> float | None:
        self.limiter.enter(lease.group)
        try:
            return await leases.run_leased(self.db, lease, self.step, error_delay=self.error_delay)
        finally:
            self.limiter.leave(lease.group)

    async def run_one(self, item_id: str) -> float | None:
        """Claim one row and advance it (what a procrastinate task does)."""
        lease = await leases.claim(self.db, self.table, item_id, self.owner, self.seconds)
        if lease is None:
            return None
        if self.table.group_col is not None and self.limiter.cap is not None:
            lease.group = await self._group(item_id)
            if self.limiter.full(lease.group):
                await leases.release(self.db, lease, self.capped_retry)
                return self.capped_retry
        return await self.run_lease(lease)

    async def _group(self, item_id: str) -> str | None:
        from sqlalchemy import select

        lt = self.table
        async with leases.engine_of(self.db).connect() as conn:
            got = (await conn.execute(select(lt.c(lt.group_col or "")).where(lt.c(lt.id_col) == item_id))).scalar()
        return None if got is None else str(got)


@dataclass(frozen=True)
class Source:
    """A kind of background work. ``due``/``run`` serve every engine; ``work`` (leased sources)
    lets the local engine claim in batches and sleep until the next due time."""

    name: str
    due: Callable[[int], Awaitable[list[str]]]  # up to N ids whose work is due and not leased
    run: Callable[[str], Awaitable[float | None]]  # advance one; seconds until due again, or None
    work: LeasedWork | None = None
    sweep_every: float = 1.0  # plain sources: scanned at most this often (and when woken)


def leased_source(name: str, work: LeasedWork) -> Source:
    async def due(limit: int) -> list[str]:
        return await leases.due_ids(work.db, work.table, limit)

    return Source(name, due, work.run_one, work)


class JobEngine(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def wake(self, source: str, item_id: str) -> None: ...


class LocalEngine:
    distributed = False  # every item runs in this process

    def __init__(self, sources: list[Source], *, concurrency: int = 4, tick: float = 0.25,
                 max_idle: float = 5.0, min_gap: float = 0.005, batch: float = 0.05) -> None:
        self.sources = {s.name: s for s in sources}
        self.concurrency = concurrency
        self.tick = tick  # the wait when due work is blocked (caps, a race with another process)
        self.max_idle = max_idle  # the longest sleep (rows added by other processes are seen then)
        self.min_gap = min_gap
        self.batch = batch  # rows due within this of each other are claimed by one look
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake_at = utcnow()
        self._blocked = False
        self._swept: dict[str, dt.datetime] = {}
        self._woken: set[str] = set()  # plain sources woken since their last sweep: swept at the next fill
        self.fills = 0  # how often the loop looked for work (for benchmarks)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="aistats-local-engine")

    async def stop(self) -> None:
        self._stopping = True
        self._event.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._running.values()):
            t.cancel()
        for t in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def wake(self, source: str, item_id: str) -> None:
        self._woken.add(source)
        self._event.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                wake_at = await self._fill()
            except Exception:
                log.exception("job scan failed")
                wake_at = utcnow() + dt.timedelta(seconds=self.tick)
            self._wake_at = wake_at
            wait = (wake_at - utcnow()).total_seconds()
            if wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._event.wait(), wait)
            if self.min_gap > 0:  # let a burst of finishing steps and wake-ups share one fill
                await asyncio.sleep(self.min_gap)
            self._event.clear()

    def _free(self) -> int:
        return self.concurrency - len(self._running)

    async def _fill(self) -> dt.datetime:
        """Start what is due; return when to look again."""
        self.fills += 1
        now = utcnow()
        wake = now + dt.timedelta(seconds=self.max_idle)
        self._blocked = False
        for source in self.sources.values():
            if source.work is not None:
                wake = min(wake, await self._fill_leased(source, source.work))
            else:
                wake = min(wake, await self._fill_plain(source, now))
        if self._free() <= 0:
            self._blocked = True  # a finishing step wakes the loop
        if self._blocked:
            wake = max(wake, utcnow() + dt.timedelta(seconds=self.tick))
        return wake

    async def _fill_leased(self, source: Source, work: LeasedWork) -> dt.datetime:
        found = await leases.look(work.db, work.table, work.owner, work.seconds, self._free(),
                                  running=work.limiter.running, cap=work.limiter.cap, recent=work.limiter.recent,
                                  reader=work.reader)
        for lease in found.leases:
            self._start(source, lease.item_id, work.run_lease(lease))
        now = utcnow()
        if found.next_due is None:
            return now + dt.timedelta(seconds=self.max_idle)
        if found.next_due <= now:
            self._blocked = True  # due but not ours to start now (slots, caps or another process)
        # A timed look waits at least ``batch`` after this one, so rows due close together share it.
        return max(found.next_due, now + dt.timedelta(seconds=self.batch))

    async def _fill_plain(self, source: Source, now: dt.datetime) -> dt.datetime:
        last = self._swept.get(source.name)
        every = dt.timedelta(seconds=source.sweep_every)
        if last is not None and now - last < every and source.name not in self._woken:
            return last + every
        self._woken.discard(source.name)
        self._swept[source.name] = now
        free = self._free()
        if free > 0:
            for item_id in await source.due(free + len(self._running)):
                if self._free() <= 0:
                    break
                if (source.name, item_id) not in self._running:
                    self._start(source, item_id, source.run(item_id))
        return now + every

    def _start(self, source: Source, item_id: str, work: Awaitable[float | None]) -> None:
        key = (source.name, item_id)
        self._running[key] = asyncio.create_task(self._run(key, work), name=f"job-{source.name}-{item_id}")

    async def _run(self, key: tuple[str, str], work: Awaitable[float | None]) -> None:
        delay: float | None = None
        try:
            delay = await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed", extra={"source": key[0], "id": key[1]})
        finally:
            self._running.pop(key, None)
            soon = delay is not None and utcnow() + dt.timedelta(seconds=delay) < self._wake_at
            if self._blocked or soon:
                self._event.set()

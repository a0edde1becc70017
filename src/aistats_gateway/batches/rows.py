"""Gateway mode's row runner: one batch's rows, claimed in chunks, run concurrently, written in groups.

One ``RowRun`` works one batch in one process (``jobs`` starts at most one per batch per process;
several processes may each run one on the same batch: the chunk leases keep them apart).

Invariants:

* Rows are leased in chunks (``chunks.claim``: one conditional UPDATE per page) and at most
  ``concurrency`` of them are in a provider call at once (plus the per-provider cap of
  ``execute.Limits``, and its 429 holds). At most ``concurrency + chunk`` rows are held at once.
* Every row we hold is heartbeated (one UPDATE for all of them) every ``lease / 3`` while it is
  queued, in a call or waiting to be written. A row is sent upstream only if its lease, as last
  confirmed by the database, lasts at least ``lease / 3`` more; otherwise it is heartbeated first
  and dropped if it turned out to be lost. So a row whose call outlasts the lease is not taken
  (and sent again) by another process; only a process stalled past its whole lease can lose one.
* Results are buffered and written in ONE transaction per group (``flush_rows`` rows or
  ``flush_seconds``), each conditional on the row still being queued and ours (``chunks.write``):
  a finished row is never written (or run) again. A kill -9 loses only unwritten results: those
  rows are still queued and run again once their lease lapses.
* A run lasts at most ``slice_seconds`` of claiming (then drains and returns), so a long batch
  does not keep a job-engine slot from other work; the engine starts it again at once.
* The batch's status is re-read every second (and with every heartbeat): once it is cancelling or past its window,
  no new row starts; rows not started are released (the batch step then cancels or expires them)
  and rows in a call finish and are written (a cancelled batch pays for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select

from aistats_gateway.batches import chunks, execute
from aistats_gateway.batches.tables import Batch
from aistats_gateway.db.base import utcnow
from aistats_gateway.jobs import lease as leases

log = logging.getLogger("aistats_gateway.batches")
BACKOFF_BASE = 2.0
STATUS_EVERY = 1.0  # seconds between reads of the batch's status (cancel, expiry)
B: Table = Batch.__table__  # type: ignore[assignment]


@dataclass
class RowSettings:
    """How a process runs batch rows (``AISTATS_BATCHES_CONCURRENCY`` …)."""

    concurrency: int = 32  # rows of one batch in a call at once, per process
    chunk: int = 64  # rows leased by one claim
    lease_seconds: float = 120.0
    flush_rows: int = 64
    flush_seconds: float = 0.1
    beat_every: float | None = None  # default lease / 3
    slice_seconds: float = 10.0  # a run stops claiming after this long and hands its job slot back
    clock: Callable[[], dt.datetime] = utcnow


@dataclass
class BatchInfo:
    """What a row's execution needs of its batch (read with Core, re-read with each heartbeat)."""

    id: str
    workspace_id: str
    status: str
    mode: str
    endpoint: str
    routing: Any
    expires_at: dt.datetime

    def runnable(self, now: dt.datetime) -> bool:
        return self.mode == "gateway" and self.status in ("validating", "in_progress") and self.expires_at > now


async def load(engine: Any, batch_id: str) -> BatchInfo | None:
    stmt = select(B.c.id, B.c.workspace_id, B.c.status, B.c.mode, B.c.endpoint, B.c.routing,
                  B.c.expires_at).where(B.c.id == batch_id)
    async with engine.connect() as conn:
        r = (await conn.execute(stmt)).first()
    if r is None:
        return None
    expires = r[6] if r[6].tzinfo is not None else r[6].replace(tzinfo=dt.UTC)
    return BatchInfo(r[0], r[1], r[2], r[3], r[4], r[5], expires)


@dataclass
class RowRun:
    state: Any
    limits: execute.Limits
    settings: RowSettings
    batch_id: str
    owner: str
    runner: execute.Runner = execute.run
    on_fanout: Callable[[], None] | None = None  # called when a full chunk was claimed (more work is left)
    engine: Any = None
    info: BatchInfo | None = None
    held: dict[str, chunks.Row] = field(default_factory=dict)  # leased by us, not written yet
    until: dict[str, dt.datetime] = field(default_factory=dict)  # each held row's confirmed lease end
    lost: set[str] = field(default_factory=set)
    finished: list[dict[str, Any]] = field(default_factory=list)
    retries: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    written: int = 0
    stopping: bool = False
    sliced: bool = False  # the run ended at its time slice with rows left: run it again soon

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = leases.engine_of(self.state.sessions)
        self.routes = execute.Routes()
        self._queue: asyncio.Queue[chunks.Row] = asyncio.Queue()
        self._freed = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._lock = asyncio.Lock()  # one heartbeat or flush at a time
        self._started: set[str] = set()  # sent upstream by this run, result not written yet

    @property
    def lease(self) -> float:
        return self.settings.lease_seconds

    async def run(self) -> None:
        """Work the batch until no row of it can be claimed and every held row is written."""
        self.info = await load(self.engine, self.batch_id)
        if self.info is None or not self.info.runnable(self.settings.clock()):
            return
        s = self.settings
        tasks = [asyncio.create_task(self._worker(i), name=f"batch-row-{self.batch_id}-{i}")
                 for i in range(max(1, s.concurrency))]
        tasks.append(asyncio.create_task(self._beat_loop(), name=f"batch-beat-{self.batch_id}"))
        tasks.append(asyncio.create_task(self._flush_loop(), name=f"batch-flush-{self.batch_id}"))
        try:
            await self._feed()
            await self._queue.join()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        left = [rid for rid in self.held if not self._busy(rid)]
        with contextlib.suppress(Exception):
            await chunks.release(self.engine, left, self.owner)

    def _busy(self, rid: str) -> bool:
        return any(f["rid"] == rid for f in self.finished) or any(r["rid"] == rid for r in self.retries)

    async def _feed(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        ends = loop.time() + s.slice_seconds
        while not self.stopping:
            if loop.time() >= ends:
                self.sliced = True  # let other work have this job slot; the engine starts the batch again
                return
            room = s.concurrency + s.chunk - len(self.held)
            if room < max(1, s.chunk // 2) and self.held:
                await self._wait(self._freed, 1.0)
                continue
            want = min(room, s.chunk)
            now = s.clock()
            rows = await chunks.claim(self.engine, self.batch_id, self.owner, want, now, self.lease)
            for r in rows:
                self.until[r.id] = now + dt.timedelta(seconds=self.lease)
                if r.id not in self.held:  # our own lapsed lease taken again: renewed, not queued twice
                    self.lost.discard(r.id)
                    self.held[r.id] = r
                    self._queue.put_nowait(r)
            if len(rows) == want and self.on_fanout is not None:
                self.on_fanout()
            if not rows:
                if not self.held:
                    return
                await self._wait(self._freed, 1.0)

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    async def _worker(self, i: int) -> None:
        while True:
            row = await self._queue.get()
            try:
                await self._one(row)
            except Exception:
                log.exception("batch row failed in the runner", extra={"row": row.id})
            finally:
                self._queue.task_done()

    async def _one(self, row: chunks.Row) -> None:
        if self.stopping or row.id in self.lost or row.id not in self.held or row.id in self._started:
            return  # released (or lost) without being sent, or already sent by this run
        margin = dt.timedelta(seconds=self.lease / 3)
        if self.until.get(row.id, dt.datetime.min.replace(tzinfo=dt.UTC)) - self.settings.clock() < margin:
            await self.beat()  # our heartbeat is late: make sure the row is still ours before sending it
            if row.id in self.lost or self.stopping:
                return
        assert self.info is not None
        self._started.add(row.id)
        self.sent += 1
        out = await self.runner(self.state, self.limits, self.info, row, self.routes)
        now = self.settings.clock()
        if out.status == "retry" and row.attempts + 1 < execute.MAX_ATTEMPTS:
            delay = max(out.retry_in, float(BACKOFF_BASE ** row.attempts))
            self.retries.append({"rid": row.id, "attempts": row.attempts + 1, "error": out.error, "updated_at": now,
                                 "next_run_at": now + dt.timedelta(seconds=delay)})
        else:
            if out.status == "retry":
                out.status = "failed"
            self.finished.append({"rid": row.id, **execute.result_values(out, row.attempts, now)})
        if len(self.finished) + len(self.retries) >= self.settings.flush_rows:
            self._flush_now.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wait(self._flush_now, self.settings.flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("writing batch row results failed; retrying")
                await asyncio.sleep(0.5)

    async def flush(self) -> None:
        """Write the buffered results in one transaction; the rows are no longer held."""
        async with self._lock:
            finished, retries = self.finished, self.retries
            if not finished and not retries:
                return
            self.finished, self.retries = [], []
            try:
                n = await chunks.write(self.engine, self.owner, finished, retries)
            except BaseException:
                self.finished[:0], self.retries[:0] = finished, retries
                raise
            total = len(finished) + len(retries)
            if n < total:
                log.warning("batch rows lost their lease before their results were written",
                            extra={"batch": self.batch_id, "lost": total - n})
            self.written += n
            for item in (*finished, *retries):  # written (or someone else's now): a claim decides again
                self.held.pop(item["rid"], None)
                self.until.pop(item["rid"], None)
                self._started.discard(item["rid"])
            self._freed.set()

    async def _beat_loop(self) -> None:
        """Heartbeat every ``lease / 3``; re-read the batch's status at least every second."""
        every = self.settings.beat_every or max(self.lease / 3, 0.2)
        tick = min(every, STATUS_EVERY)
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(tick)
            try:
                if asyncio.get_running_loop().time() - last >= every - 1e-3:
                    last = asyncio.get_running_loop().time()
                    await self.beat()
                else:
                    self._seen(await load(self.engine, self.batch_id))
            except Exception:
                log.debug("batch row heartbeat failed; retrying", exc_info=True)

    async def beat(self) -> None:
        """Extend every held row's lease (one UPDATE); rows not extended are lost. Re-reads the batch."""
        async with self._lock:
            ids = list(self.held)
            until = self.settings.clock() + dt.timedelta(seconds=self.lease)
            ours = await chunks.heartbeat(self.engine, ids, self.owner, until)
            for rid in ids:
                if rid in ours:
                    self.until[rid] = until
                elif rid in self.held:
                    self.lost.add(rid)
                    self.held.pop(rid, None)
                    self.until.pop(rid, None)
            if ids and len(ours) < len(ids):
                self._freed.set()
            info = await load(self.engine, self.batch_id)
        self._seen(info)

    def _seen(self, info: BatchInfo | None) -> None:
        if info is not None:
            self.info = info
        if info is None or not info.runnable(self.settings.clock()):
            self.stopping = True  # cancelled, expired or gone: start nothing more
            self._freed.set()

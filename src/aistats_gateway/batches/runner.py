"""The two steps the job engine runs for batches: a batch's rows (``run_rows``) and one batch (``advance``).

Invariants:

* ``run_rows`` executes ``queued`` rows under chunk leases (``rows.RowRun``), at most one runner
  per batch per process, and at most ``workspace_cap`` batch runners per workspace per process
  (the job engine's per-workspace share, so one workspace's batches never take every slot; the
  due list is round robin across workspaces, ``chunks.batches_with_due_rows``); rows of a batch
  that is not running any more (cancelling, expired, finished) are left for ``advance``.
* ``advance`` never touches a row somebody is running: rows are cancelled or expired only while
  unleased (conditional UPDATE), and the batch waits for leased rows to finish first.
* Finalisation writes the output and error files (streamed from the rows, never all in memory),
  then in ONE transaction moves the batch to its terminal status (conditional on the status it
  had), stores the files, usage and cost, settles the hold for the exact sum of the rows' costs
  (the rest is released) and queues the events. A crash before that commit leaves the batch as
  it was and the step runs again; after it, nothing runs again, so the hold is settled once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, or_, select, update

from aistats_gateway.batches import events, execute, native
from aistats_gateway.batches import rows as rowrun
from aistats_gateway.batches import service as batches
from aistats_gateway.batches.tables import Batch, BatchRow
from aistats_gateway.billing import service as billing
from aistats_gateway.billing.pricing import Line
from aistats_gateway.db.base import utcnow
from aistats_gateway.files import service as files
from aistats_gateway.jobs.engine import GroupLimiter

log = logging.getLogger("aistats_gateway.batches")
POLL_SECONDS = 0.5
WAIT_SECONDS = 1.0
PAGE = 500
WORKSPACE_BUSY_SECONDS = 1.0


@dataclass
class BatchContext:
    state: Any
    limits: execute.Limits = field(default_factory=execute.Limits)
    runner: execute.Runner = execute.run
    rows: rowrun.RowSettings = field(default_factory=rowrun.RowSettings)
    running: set[str] = field(default_factory=set)  # batches whose rows run in this process now
    workspace_cap: int | None = None  # batch runs one workspace may have in this process at once
    workspace_of: dict[str, str] = field(default_factory=dict)  # batch id → workspace (filled by ``due``)
    admitted: dict[str, str] = field(default_factory=dict)  # running batch id → the workspace it counts for
    limiter: GroupLimiter = field(default_factory=GroupLimiter)  # batch runs per workspace here now

    def __post_init__(self) -> None:
        self.limiter.cap = self.workspace_cap

    def admit(self, batch_id: str) -> bool:
        """Take a run slot for ``batch_id``'s workspace (False when it has its share already)."""
        ws = self.workspace_of.get(batch_id)
        if len(self.workspace_of) > 10_000:
            self.workspace_of.clear()
        if ws is None:
            return True
        if self.limiter.full(ws):
            return False
        self.limiter.enter(ws)
        self.admitted[batch_id] = ws
        return True

    def leave(self, batch_id: str) -> None:
        self.limiter.leave(self.admitted.pop(batch_id, None))


def _wake(state: Any, source: str, item_id: str) -> None:
    if state.jobs is not None:
        state.jobs.wake(source, item_id)


async def run_rows(ctx: BatchContext, batch_id: str, owner: str) -> float | None:
    """Run the batch's rows in this process (``rows.RowRun``) unless they already run here."""
    if batch_id in ctx.running:
        return None
    if not ctx.admit(batch_id):
        return WORKSPACE_BUSY_SECONDS  # its workspace has its share of this process's slots: later
    state = ctx.state
    ctx.running.add(batch_id)
    shared = bool(getattr(state.jobs, "distributed", False))
    try:
        run = rowrun.RowRun(state, ctx.limits, ctx.rows, batch_id, owner, ctx.runner,
                            on_fanout=(lambda: _wake(state, "batch_rows", batch_id)) if shared else None)
        await run.run()
    finally:
        ctx.running.discard(batch_id)
        ctx.leave(batch_id)
    if run.sliced:
        _wake(state, "batch_rows", batch_id)
        return 0.0
    _wake(state, "batches", batch_id)
    return None


async def _counts(state: Any, batch_id: str) -> dict[str, int]:
    async with state.sessions() as s:
        got = await s.execute(select(BatchRow.status, func.count()).where(BatchRow.batch_id == batch_id)
                              .group_by(BatchRow.status))
        return {str(k): int(v) for k, v in got}


async def _close_unleased(state: Any, batch_id: str, status: str, error: dict[str, Any]) -> None:
    now = utcnow()
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(
            BatchRow.batch_id == batch_id, BatchRow.status == "queued",
            or_(BatchRow.lease_until.is_(None), BatchRow.lease_until < now)).values(
            status=status, error=error, updated_at=now, completed_at=now))


async def advance(ctx: BatchContext, batch_id: str) -> float | None:
    state = ctx.state
    async with state.sessions() as s:
        b = await s.get(Batch, batch_id)
    if b is None or b.status in ("completed", "failed", "expired", "cancelled"):
        return None
    now = utcnow()
    if b.mode == "native":
        delay = await _native(ctx, b)
        if delay is not None:
            return delay
    elif b.status == "cancelling":
        await _close_unleased(state, batch_id, "cancelled",
                              {"code": "batch_cancelled",
                               "message": "The batch was cancelled before this request ran."})
    elif b.status in ("validating", "in_progress") and b.expires_at <= now:
        await _close_unleased(state, batch_id, "expired", {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."})
    counts = await _counts(state, batch_id)
    queued = counts.get("queued", 0) + counts.get("submitted", 0)
    completed = counts.get("completed", 0)
    failed = sum(counts.get(k, 0) for k in ("failed", "expired", "cancelled"))
    if b.status in ("validating", "in_progress"):
        await _progress(state, b, completed, failed)
    if queued:
        return POLL_SECONDS if b.status in ("validating", "in_progress") and b.expires_at > now else WAIT_SECONDS
    await finalize(state, b, counts)
    return None


async def _native(ctx: BatchContext, b: Batch) -> float | None:
    """Advance a native batch at its provider; None once every row has its result."""
    state = ctx.state
    if b.native_state == "rejected":
        return None
    if b.native_id is None:
        if b.status == "cancelling":  # not (known to be) submitted: adopt it to cancel it, else nothing to do
            if b.native_state == "submitting":
                found = await native.adopt(state, b)
                if found is None:
                    return 2.0
                if found:
                    return 0.0
            await _close_submitted(state, b.id)
            return None
        plan = await execute.planner(state)
        return await native.submit(state, b, plan.native_candidate(b))
    if b.status == "cancelling" and b.native_state == "submitted":
        await native.cancel(state, b)
    plan = await execute.planner(state)
    if not await native.poll(state, b, plan.native_candidate(b)):
        return native.POLL_SECONDS
    return None


async def _close_submitted(state: Any, batch_id: str) -> None:
    now = utcnow()
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(BatchRow.batch_id == batch_id, BatchRow.status == "submitted").values(
            status="cancelled", error={"code": "batch_cancelled", "message": "The batch was cancelled before this "
                                       "request ran."}, updated_at=now, completed_at=now))


async def _progress(state: Any, b: Batch, completed: int, failed: int) -> None:
    if (completed, failed) == (b.completed, b.failed):
        return
    done = completed + failed
    bucket = (done * 100 // b.total) // 10 * 10 if b.total else 0
    bucket = bucket if 10 <= bucket <= 90 else b.progress_bucket
    async with state.sessions() as s, s.begin():
        res = await s.execute(update(Batch).where(Batch.id == b.id, Batch.status == b.status).values(
            completed=completed, failed=failed, progress_bucket=max(bucket, b.progress_bucket), updated_at=utcnow()))
        if res.rowcount and bucket > b.progress_bucket:
            fresh = await s.get(Batch, b.id)
            assert fresh is not None
            await events.emit(s, fresh, "batch.progress", f"batch.progress:{bucket}")


async def _lines(state: Any, batch_id: str, statuses: tuple[str, ...], acc: dict[str, int]) -> AsyncIterator[bytes]:
    after = 0
    while True:
        async with state.sessions() as s:
            rows = await batches.finished_rows(s, batch_id, after, PAGE, statuses)
        if not rows:
            return
        for r in rows:
            acc["cost_nanos"] += r.cost_nanos
            for k in ("input_tokens", "output_tokens", "total_tokens"):
                acc[k] += int((r.usage or {}).get(k) or 0)
        yield b"".join(orjson.dumps(batches.output_line(r)) + b"\n" for r in rows)
        after = rows[-1].line


async def _file(state: Any, b: Batch, name: str, statuses: tuple[str, ...], n: int,
                acc: dict[str, int]) -> str | None:
    if n == 0:
        return None
    row = await files.store_stream(files.context(state), b.workspace_id, filename=f"{b.id}_{name}.jsonl",
                                   purpose="batch_output", chunks=_lines(state, b.id, statuses, acc))
    return row.id


async def finalize(state: Any, b: Batch, counts: dict[str, int]) -> None:
    """Write the files, then move to the terminal status, settle and notify in one transaction."""
    if b.status == "cancelling":
        target, frm = "cancelled", "cancelling"
    else:
        target = ("failed" if b.native_state == "rejected" else
                  "expired" if counts.get("expired", 0) else "completed")
        frm = "finalizing"
        if b.status != "finalizing":
            now = utcnow()
            async with state.sessions() as s, s.begin():
                res = await s.execute(update(Batch).where(Batch.id == b.id, Batch.status == b.status).values(
                    status="finalizing", finalizing_at=now, updated_at=now))
                if not res.rowcount:
                    return
                fresh = await s.get(Batch, b.id)
                assert fresh is not None
                await events.status_changed(s, fresh, b.status)
    acc = {"cost_nanos": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    completed = counts.get("completed", 0)
    failed = sum(counts.get(k, 0) for k in ("failed", "expired", "cancelled"))
    out_id = await _file(state, b, "output", ("completed",), completed, acc)
    err_id = await _file(state, b, "errors", ("failed", "expired", "cancelled"), failed, acc)
    now = utcnow()
    cost = acc["cost_nanos"]
    usage = {"requests": completed + failed, "input_tokens": acc["input_tokens"],
             "output_tokens": acc["output_tokens"], "total_tokens": acc["total_tokens"], "cost_nanos": cost,
             "cost_usd": f"{cost / 1e9:.9f}", "currency": "usd"}
    async with state.sessions() as s, s.begin():
        res = await s.execute(update(Batch).where(Batch.id == b.id, Batch.status == frm).values(
            status=target, output_file_id=out_id, error_file_id=err_id, completed=completed, failed=failed,
            cost_nanos=cost, usage=usage, updated_at=now, **{f"{target}_at": now}, lease_until=None))
        if res.rowcount:
            if cost > 0:
                done = await billing.settle(s, batches.ref(b.id), [Line("batch_requests", completed, completed, 0,
                                                                        cost, None)])
            else:
                done = await billing.void(s, batches.ref(b.id), memo=f"batch {b.id}: nothing to charge")
            doc = billing.billing_doc(done, b.hold_nanos)
            await s.execute(update(Batch).where(Batch.id == b.id).values(billing=doc))
            fresh = await s.get(Batch, b.id)
            assert fresh is not None
            fresh.billing = doc
            await events.status_changed(s, fresh, frm)
    if not res.rowcount:
        for fid in (out_id, err_id):
            if fid:
                await files.delete_owned(files.context(state), b.workspace_id, fid)


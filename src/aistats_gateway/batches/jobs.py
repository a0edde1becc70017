"""The batches sources for the job engines: ``batch_rows`` (a batch's rows) and ``batches``.

* ``batches`` is a leased table (``jobs.lease``): one step per batch (progress, cancel, expiry,
  finalisation, native polling) under the batch's own lease.
* ``batch_rows`` items are batch ids: a gateway batch with a due, workable row is due. Its run is
  a ``rows.RowRun``: chunk leases on the rows, calls in parallel, results written in groups. At
  most one runs per batch in a process (a second start for the same batch returns at once);
  several processes share a batch through the rows' chunk leases. With a shared queue
  (procrastinate) a runner that claimed a full chunk asks for another task, so a second worker
  joins in; a crashed worker's leases lapse and the reconciler starts the batch again.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from aistats_gateway.batches import chunks, execute, rows, runner
from aistats_gateway.batches.tables import BATCH_ACTIVE, BATCH_TERMINAL, Batch
from aistats_gateway.db.base import utcnow
from aistats_gateway.jobs.engine import GroupLimiter, LeasedWork, Source, leased_source
from aistats_gateway.jobs.lease import Lease, LeaseTable, engine_of

BATCH_LEASE = LeaseTable("batch", Batch.__table__, active=BATCH_ACTIVE, terminal=BATCH_TERMINAL,  # type: ignore[arg-type]
                         group_col="workspace_id")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:batches:{secrets.token_hex(4)}"


def row_settings(state: Any) -> rows.RowSettings:
    s = state.settings
    return rows.RowSettings(concurrency=s.batches_concurrency, chunk=s.batches_chunk_rows,
                            lease_seconds=float(s.job_lease_seconds))


def sources(state: Any) -> list[Source]:
    limits = execute.Limits(state.settings.batches_provider_concurrency,
                            timeout=state.settings.upstream_timeout_seconds)
    ctx = runner.BatchContext(state, limits, rows=row_settings(state),
                              workspace_cap=state.settings.job_workspace_cap())
    state.batches = ctx
    owner = _owner()
    seconds = float(state.settings.job_lease_seconds)
    engine = engine_of(state.sessions)

    async def batch_step(lease: Lease) -> float | None:
        return await runner.advance(ctx, lease.item_id)

    async def due(limit: int) -> list[str]:
        return await chunks.batches_with_due_rows(engine, utcnow(), limit, ctx.workspace_of)

    async def run_rows(batch_id: str) -> float | None:
        return await runner.run_rows(ctx, batch_id, owner)

    return [
        leased_source("batches", LeasedWork(db=state.sessions, table=BATCH_LEASE, step=batch_step, owner=owner,
                                            seconds=seconds, limiter=GroupLimiter(), error_delay=5.0)),
        Source("batch_rows", due, run_rows, sweep_every=1.0)  # and at once when woken,
    ]

"""The batches sources for the job engines: ``batch_rows`` (one request each) and ``batches``.

Both are leased tables (``jobs.lease``): the engine claims due rows in batches, fairly across
workspaces (at most ``job_workspace_cap`` of this process's slots per workspace), and runs the
step under a heartbeat. A crashed worker's leases lapse and another process picks the rows up;
a finished row is never claimed again (only ``queued`` rows are workable).
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from aistats_gateway.batches import execute, runner
from aistats_gateway.batches.tables import (
    BATCH_ACTIVE,
    BATCH_TERMINAL,
    ROW_DONE,
    Batch,
    BatchRow,
)
from aistats_gateway.jobs.engine import GroupLimiter, LeasedWork, Source, leased_source
from aistats_gateway.jobs.lease import Lease, LeaseTable

ROW_LEASE = LeaseTable("batch_row", BatchRow.__table__, active=("queued",), terminal=ROW_DONE,  # type: ignore[arg-type]
                       group_col="workspace_id")
BATCH_LEASE = LeaseTable("batch", Batch.__table__, active=BATCH_ACTIVE, terminal=BATCH_TERMINAL,  # type: ignore[arg-type]
                         group_col="workspace_id")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:batches:{secrets.token_hex(4)}"


def sources(state: Any) -> list[Source]:
    ctx = runner.BatchContext(state, execute.Limits(state.settings.batches_provider_concurrency))
    state.batches = ctx
    owner = _owner()
    seconds = float(state.settings.job_lease_seconds)
    cap = state.settings.job_workspace_cap()

    async def row_step(lease: Lease) -> float | None:
        return await runner.run_row(ctx, lease)

    async def batch_step(lease: Lease) -> float | None:
        return await runner.advance(ctx, lease.item_id)

    return [
        leased_source("batches", LeasedWork(db=state.sessions, table=BATCH_LEASE, step=batch_step, owner=owner,
                                            seconds=seconds, limiter=GroupLimiter(), error_delay=5.0)),
        leased_source("batch_rows", LeasedWork(db=state.sessions, table=ROW_LEASE, step=row_step, owner=owner,
                                               seconds=seconds, limiter=GroupLimiter(cap=cap), error_delay=5.0)),
    ]

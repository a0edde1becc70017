"""The videos source for the job engines: the ``video`` leased table and how to advance one job.

Collected by ``jobs.registry.collect`` from the composition root's list of domain modules; the
engine claims due jobs in batches, fairly across workspaces, and runs ``runner.advance`` on each
under a heartbeat (the same lease ``runner.run_job`` takes for a single job).
"""

from __future__ import annotations

from typing import Any

from aistats_gateway.jobs.engine import GroupLimiter, LeasedWork, Source, leased_source
from aistats_gateway.jobs.lease import Lease
from aistats_gateway.videos.runner import RunnerContext, advance
from aistats_gateway.videos.tables import VIDEO_LEASE


def source(ctx: RunnerContext, limiter: GroupLimiter | None = None) -> Source:
    async def step(lease: Lease) -> float | None:
        return await advance(ctx, lease.item_id)

    return leased_source("videos", LeasedWork(db=ctx.sessions, table=VIDEO_LEASE, step=step, owner=ctx.worker_id,
                                              seconds=ctx.lease_seconds, limiter=limiter or GroupLimiter(),
                                              reader=ctx.reader))


def sources(state: Any) -> list[Source]:
    return [source(state.runner, GroupLimiter(cap=state.settings.job_workspace_cap()))]

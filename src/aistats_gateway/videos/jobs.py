"""The videos source for the job engines: which jobs are due, and how to advance one."""

from __future__ import annotations

from sqlalchemy import or_, select

from aistats_gateway.db.base import utcnow
from aistats_gateway.jobs.engine import Source
from aistats_gateway.videos.runner import RunnerContext, run_job
from aistats_gateway.videos.tables import TERMINAL, VideoJob


def source(ctx: RunnerContext) -> Source:
    async def due(limit: int) -> list[str]:
        now = utcnow()
        async with ctx.sessions() as s:
            rows = await s.execute(
                select(VideoJob.id)
                .where(VideoJob.status.not_in(TERMINAL), VideoJob.deleted_at.is_(None), VideoJob.next_run_at <= now,
                       or_(VideoJob.lease_until.is_(None), VideoJob.lease_until < now))
                .order_by(VideoJob.next_run_at)
                .limit(limit)
            )
            return [r[0] for r in rows]

    async def run(job_id: str) -> float | None:
        return await run_job(ctx, job_id)

    return Source("videos", due, run)

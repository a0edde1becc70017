"""The billing sweep: finalize holds of terminal jobs that are still open (e.g. after a crash)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from aistats_gateway.billing.tables import Hold
from aistats_gateway.jobs.engine import Source
from aistats_gateway.videos.tables import TERMINAL, VideoJob


def source(state: Any, hooks: Any) -> Source:
    async def due(limit: int) -> list[str]:
        async with state.sessions() as s:
            rows = await s.execute(
                select(VideoJob.id).join(Hold, Hold.ref == VideoJob.id)
                .where(Hold.state == "held", VideoJob.status.in_(TERMINAL)).limit(limit))
            return [r[0] for r in rows]

    async def run(job_id: str) -> float | None:
        await hooks.finalize(job_id)
        return None

    return Source("billing", due, run)


def sources(state: Any) -> list[Source]:
    """For ``jobs.registry.collect``: the sweep, scanned every few seconds (terminal transitions
    finalize holds at once; this only repairs what a crash left open)."""
    from dataclasses import replace

    return [replace(source(state, state.hooks), sweep_every=2.0)]

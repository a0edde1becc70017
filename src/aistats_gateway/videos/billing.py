"""Pricing video jobs for billing: the estimate held at create, and the lines settled when done.

``finalize`` is the video side of billing by reference: it reads the job's outputs, prices them
(``billing.pricing.video``), hands the line to ``billing.settle`` (or voids the hold of a job that
did not complete) and writes the resulting billing object on the job, all in one transaction.
The billing sweep finds terminal jobs with open holds through ``terminal_ids``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.billing import jobs as billing_jobs
from aistats_gateway.billing import pricing
from aistats_gateway.billing import service as billing
from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.videos.tables import TERMINAL, VideoJob, VideoOutput
from aistats_gateway.videos.validation import size_class as of_dimensions

KIND = "video"
RulesFor = Callable[[str | None, str], list[PriceRule]]  # (provider id, model id) → the catalogue's rules


def ref(job_id: str) -> billing.Ref:
    return billing.Ref(KIND, job_id)


def size_class(size: str | None) -> str | None:
    """The resolution class of a ``WxH`` size string (for price rules keyed on resolution)."""
    if not size or "x" not in size:
        return None
    w, h = (int(x) for x in size.split("x", 1))
    return of_dimensions(w, h)


def estimate(offers: list[ProviderOffer], *, seconds: float, count: int, resolution: str | None, audio: bool,
             size: str | None) -> billing.Estimate:
    """The most any candidate provider would cost (fallback may land on any of them)."""
    best: billing.Estimate | None = None
    for o in offers:
        line = pricing.video(o.spec.pricing, seconds=seconds, count=count, resolution=resolution, audio=audio,
                             size=size)
        e = billing.Estimate(line.nanos, o.provider_id, [line.as_dict()], line.rule is not None)
        if best is None or e.nanos > best.nanos:
            best = e
    return best or billing.Estimate(0, None, [], False)


async def _usage_line(s: AsyncSession, job: VideoJob, rules_for: RulesFor) -> pricing.Line:
    outputs = [d for d in (await s.execute(select(VideoOutput.duration_seconds).where(
        VideoOutput.job_id == job.id, VideoOutput.variant == "video"))).scalars().all() if d is not None]
    usage = job.provider_usage or {}
    count = int(usage.get("count") or len(outputs) or job.sample_count or 1)
    seconds = usage.get("seconds") or (max(outputs) if outputs else None) or job.seconds or 0
    params = job.params or {}
    return pricing.video(rules_for(job.provider, job.model), seconds=float(seconds), count=count,
                         resolution=params.get("resolution") or size_class(job.size), audio=bool(job.audio),
                         size=job.size)


async def finalize(sessions: async_sessionmaker[AsyncSession], job: VideoJob, rules_for: RulesFor) -> bool:
    """Settle (completed) or void (failed/cancelled/expired) the job's hold. True if this call did it."""
    previous: dict[str, Any] = job.billing or {}
    async with sessions() as s, s.begin():
        if job.status == "completed":
            done = await billing.settle(s, ref(job.id), [await _usage_line(s, job, rules_for)])
        else:
            done = await billing.void(s, ref(job.id), memo=f"voided {job.id}: {job.status}")
        if done is None:
            return False
        doc = billing.billing_doc(done, previous.get("estimate_nanos"), previous.get("lines"),
                                  previous.get("priced", True))
        await s.execute(update(VideoJob).where(VideoJob.id == job.id).values(billing=doc))
        return True


def terminal_ids() -> Select[Any]:
    return select(VideoJob.id).where(VideoJob.status.in_(TERMINAL))


billing_jobs.register_terminal(KIND, terminal_ids)

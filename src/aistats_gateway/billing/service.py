"""Billing for video jobs: estimate and hold before any provider call, then settle or void once.

The hold id is ``hold_<job id>``. ``finalize`` is idempotent and safe to call from any number of
processes at once (the hold's conditional state change decides who does it); the engine's billing
sweep calls it for every terminal job whose hold is still open, so a crash between "the provider
is done" and "settled" is finished after restart.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.billing import ledger, pricing
from aistats_gateway.billing.tables import Hold
from aistats_gateway.http.errors import APIError

log = logging.getLogger("aistats_gateway.billing")


def hold_id(job_id: str) -> str:
    return f"hold_{job_id}"


@dataclass(frozen=True)
class Estimate:
    nanos: int
    provider: str | None
    lines: list[dict[str, Any]]
    priced: bool


def estimate_video(offers: list[Any], *, seconds: float, count: int, resolution: str | None, audio: bool,
                   size: str | None) -> Estimate:
    """The most any candidate provider would cost (fallback may land on any of them)."""
    best: Estimate | None = None
    for o in offers:
        line = pricing.video(o.spec.pricing, seconds=seconds, count=count, resolution=resolution, audio=audio,
                             size=size)
        e = Estimate(line.nanos, o.provider_id, [line.as_dict()], line.rule is not None)
        if best is None or e.nanos > best.nanos:
            best = e
    return best or Estimate(0, None, [], False)


def _month_start(now: dt.datetime) -> dt.datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def hold_for_job(s: AsyncSession, *, job_id: str, workspace_id: str, key_id: str, estimate: Estimate) -> None:
    """Hold the estimate and enforce the key's spend limits, in the caller's transaction.
    Raises APIError 402 (with the shortfall) before anything is sent to a provider."""
    hid = hold_id(job_id)
    try:
        await ledger.place_hold(s, hold_id=hid, workspace_id=workspace_id, key_id=key_id, ref=job_id,
                                amount_nanos=estimate.nanos)
    except ledger.InsufficientFunds as e:
        raise APIError(402, f"Insufficient credits: this request needs {ledger.usd(e.needed)} USD held, "
                       f"{ledger.usd(max(e.available, 0))} USD is available (short by {ledger.usd(e.shortfall)} USD).",
                       code="insufficient_credits") from None
    _, daily, monthly = await ledger.key_limits(s, key_id)
    now = dt.datetime.now(dt.UTC)
    for limit, since, label in ((daily, now.replace(hour=0, minute=0, second=0, microsecond=0), "daily"),
                                (monthly, _month_start(now), "monthly")):
        if limit is None:
            continue
        spent = await ledger.spent_since(s, key_id, since)  # includes the hold just placed
        if spent > limit:
            raise APIError(402, f"This key's {label} spend limit of {ledger.usd(limit)} USD would be exceeded "
                           f"({ledger.usd(spent - estimate.nanos)} USD used, this request needs "
                           f"{ledger.usd(estimate.nanos)} USD).", code=f"{label}_spend_limit_exceeded")


def billing_doc(hold: Hold | None, estimate_nanos: int | None = None, lines: list[dict[str, Any]] | None = None,
                priced: bool = True) -> dict[str, Any]:
    if hold is None:
        return {"state": "none", "currency": "usd", "held_nanos": 0, "settled_nanos": 0}
    doc: dict[str, Any] = {
        "state": hold.state, "currency": "usd", "hold_id": hold.id, "held_nanos": hold.amount_nanos,
        "settled_nanos": hold.settled_nanos, "held_usd": ledger.usd(hold.amount_nanos),
        "settled_usd": ledger.usd(hold.settled_nanos), "priced": priced,
    }
    if estimate_nanos is not None:
        doc["estimate_nanos"] = estimate_nanos
    if lines is not None:
        doc["lines"] = lines
    return doc


async def finalize(sessions: async_sessionmaker[AsyncSession], job: Any, rules_for: Any) -> bool:
    """Settle (completed) or void (failed/cancelled/expired) the job's hold. True if this call did it.

    ``rules_for(provider_id, model_id)`` returns the price rules to settle with (the catalogue's)."""
    from aistats_gateway.videos.tables import VideoJob, VideoOutput

    hid = hold_id(job.id)
    async with sessions() as s, s.begin():
        hold = await s.get(Hold, hid)
        if hold is None or hold.state != "held":
            return False
        if job.status == "completed":
            outputs = (await s.execute(select(VideoOutput.duration_seconds).where(
                VideoOutput.job_id == job.id, VideoOutput.variant == "video"))).scalars().all()
            usage = job.provider_usage or {}
            count = int(usage.get("count") or len(outputs) or job.sample_count or 1)
            seconds = usage.get("seconds") or (max(outputs) if outputs else None) or job.seconds or 0
            rules = rules_for(job.provider, job.model)
            params = job.params or {}
            line = pricing.video(rules, seconds=float(seconds), count=count, resolution=params.get("resolution")
                                 or size_class(job.size), audio=bool(job.audio), size=job.size)
            did = await ledger.settle(s, hid, line.nanos)
            lines = [line.as_dict()]
        else:
            did = await ledger.void(s, hid, memo=f"voided {job.id}: {job.status}")
            lines = (job.billing or {}).get("lines")
        if did:
            hold = await s.get(Hold, hid)
            await s.refresh(hold)
            doc = billing_doc(hold, (job.billing or {}).get("estimate_nanos"), lines, (job.billing or {}).get("priced", True))
            await s.execute(update(VideoJob).where(VideoJob.id == job.id).values(billing=doc))
        return did


def size_class(size: str | None) -> str | None:
    """The resolution class of a ``WxH`` size string (for price rules keyed on resolution)."""
    from aistats_gateway.videos.validation import size_class as of_dimensions

    if not size or "x" not in size:
        return None
    w, h = (int(x) for x in size.split("x", 1))
    return of_dimensions(w, h)

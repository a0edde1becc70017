"""Submitting a job to its providers in order, through ``routing.run_with_fallback``: the next
provider is tried after an error of a kind in ``providers.base.RETRYABLE_KINDS``, a provider whose
circuit is open is skipped, and every attempt is appended to the job's ``attempts``."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from aistats_gateway import routing
from aistats_gateway.db.base import utcnow
from aistats_gateway.providers import config as provider_config
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import VIDEO, ImageInput, ProviderError, Submitted, VideoRequest
from aistats_gateway.videos.tables import VideoJob

log = logging.getLogger("aistats_gateway.videos")


@dataclass
class SubmitOutcome:
    provider: str | None = None
    native_id: str | None = None
    error: ProviderError | None = None


async def build_request(storage: Any, job: VideoJob) -> VideoRequest:
    p = job.params or {}
    images = []
    for img in p.get("images", []):
        chunks = [c async for c in storage.open_range(img["key"])]
        images.append(ImageInput(role=img["role"], content=b"".join(chunks), mime_type=img["mime_type"],
                                 url=img.get("url"), reference_type=img.get("reference_type")))
    v = p.get("values", {})
    return VideoRequest(
        job_id=job.id, model_slug=job.provider_model_slug or "", prompt=p.get("prompt", ""),
        duration=p.get("duration"), width=p.get("width"), height=p.get("height"), resolution=p.get("resolution"),
        aspect_ratio=p.get("aspect_ratio"), size=p.get("size"), seed=v.get("seed"),
        sample_count=int(v.get("sample_count") or 1), negative_prompt=v.get("negative_prompt"),
        generate_audio=v.get("generate_audio"), enhance_prompt=v.get("enhance_prompt"),
        person_generation=v.get("person_generation"), compression_quality=v.get("compression_quality"),
        resize_mode=v.get("resize_mode"), images=tuple(images), provider_params=dict(p.get("provider_params") or {}),
    )


async def submit_with_fallback(ctx: Any, job: VideoJob, request: VideoRequest) -> SubmitOutcome:
    """Try ``job.candidates`` in order. Records every attempt on the row; on success stores the
    provider, its native id, the first poll time and the deadline.

    A job stored by an API request is leased to that request while it submits (``lease_owner``);
    the lease is kept alive here, however long the providers take, so the job engine only resumes
    the submit when the request's process has died."""
    owner = job.lease_owner
    keeper = None
    if owner is not None and owner != getattr(ctx, "worker_id", None):  # the runner keeps its own lease
        keeper = asyncio.create_task(_keep_lease(ctx, job.id, owner))
    try:
        return await _submit(ctx, job, request)
    finally:
        if keeper is not None:
            keeper.cancel()


async def _keep_lease(ctx: Any, job_id: str, owner: str) -> None:
    """The request's lease, kept alive by the shared lease keeper (``jobs.lease.keep``)."""
    from aistats_gateway.jobs import lease as leases
    from aistats_gateway.videos.tables import VIDEO_LEASE

    seconds = float(getattr(ctx, "lease_seconds", 120.0))
    await leases.keep(ctx.sessions, leases.Lease(VIDEO_LEASE, job_id, owner, utcnow(), seconds))


async def _submit(ctx: Any, job: VideoJob, request: VideoRequest) -> SubmitOutcome:
    earlier = list(job.attempts or [])
    slugs: dict[str, str] = (job.params or {}).get("slugs", {})
    targets = [routing.Target(pid, slugs.get(pid)) for pid in job.candidates or []
               if registry.get(pid, VIDEO) is not None]

    async def call(target: routing.Target) -> tuple[Submitted, VideoRequest]:
        adapter = registry.get(target.provider_id, VIDEO)
        assert adapter is not None
        req = dataclasses.replace(request, model_slug=target.slug or request.model_slug)
        try:
            return await adapter.submit(req, ctx.call_context(target.provider_id)), req
        except ProviderError as e:
            log.info("provider refused or failed", extra={"video_id": job.id, "provider": target.provider_id,
                                                          "kind": e.kind, "status": e.status})
            raise

    try:
        (sub, req), tried = await routing.run_with_fallback(targets, call, getattr(ctx, "breaker", None))
    except routing.FallbackFailed as e:
        await _save_attempts(ctx, job.id, earlier + [a.as_dict() for a in e.attempts])
        return SubmitOutcome(error=e.error)
    pid = tried[-1].provider
    adapter = registry.get(pid, VIDEO)
    assert adapter is not None
    now = utcnow()
    timing = provider_config.timing(pid, adapter)
    first_poll = sub.poll_after if sub.poll_after is not None else timing.poll_interval
    values: dict[str, Any] = {
        "provider": pid, "provider_model_slug": req.model_slug, "native_id": sub.native_id,
        "attempts": earlier + [a.as_dict() for a in tried], "next_run_at": now + dt.timedelta(seconds=first_poll),
        "deadline_at": now + dt.timedelta(seconds=timing.deadline_seconds),
    }
    if sub.status == "in_progress":
        values["status"], values["started_at"] = "in_progress", now
    if sub.progress is not None:
        values["progress"], values["progress_source"] = sub.progress, "provider"
    async with ctx.sessions() as s, s.begin():
        await s.execute(update(VideoJob).where(VideoJob.id == job.id).values(**values))
    return SubmitOutcome(provider=pid, native_id=sub.native_id)


async def _save_attempts(ctx: Any, job_id: str, attempts: list[dict[str, Any]]) -> None:
    async with ctx.sessions() as s, s.begin():
        await s.execute(update(VideoJob).where(VideoJob.id == job_id).values(attempts=attempts))

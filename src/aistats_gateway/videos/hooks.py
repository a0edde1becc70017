"""What happens when a job changes: settle or void its hold, and queue its webhook events.

Registered on the runner's status and progress hooks, so every path that moves a job (the poller,
cancel, a failed submit on resume) does the same. Both steps are idempotent; the billing sweep and
the webhook outbox make them crash-safe.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.catalogue.service import Snapshot
from aistats_gateway.videos import billing, events, present
from aistats_gateway.videos.tables import TERMINAL, VideoJob, VideoOutput
from aistats_gateway.webhooks import service as webhooks

log = logging.getLogger("aistats_gateway.videos")


class JobHooks:
    def __init__(self, state: Any) -> None:
        self.state = state
        self._buckets: dict[str, int] = {}  # last progress bucket seen per job (this process)

    def base_url(self) -> str:
        s = self.state.settings
        return s.public_base_url or f"http://{s.host}:{s.port}"

    @staticmethod
    def _rules(snap: Snapshot, provider_id: str | None, model_id: str) -> list[PriceRule]:
        """The catalogue's price rules of this model at this provider."""
        entry = snap.by_id.get(model_id)
        for o in entry.offers if entry else []:
            if o.provider_id == provider_id:
                return list(o.spec.pricing)
        return []

    async def _load(self, job_id: str) -> tuple[VideoJob | None, list[VideoOutput]]:
        async with self.state.sessions() as s:
            job = await s.get(VideoJob, job_id)
            outputs = list((await s.execute(select(VideoOutput).where(VideoOutput.job_id == job_id))).scalars())
        return job, outputs

    async def on_status(self, job_id: str, old: str, new: str) -> None:
        if new not in TERMINAL:
            return
        await self.finalize(job_id)

    async def finalize(self, job_id: str) -> None:
        job, _ = await self._load(job_id)
        if job is None or job.status not in TERMINAL:
            return
        snap = await self.state.catalogue.get()
        try:
            await billing.finalize(self.state.sessions, job, lambda p, m: self._rules(snap, p, m))
        except Exception:
            log.exception("billing finalize failed", extra={"video_id": job_id})
        await self.event(job_id, f"video.{job.status}", None)

    async def on_progress(self, job_id: str, progress: int) -> None:
        bucket = webhooks.progress_bucket(progress)
        if bucket is None or self._buckets.get(job_id) == bucket:
            return
        if len(self._buckets) > 10_000:
            self._buckets.clear()
        self._buckets[job_id] = bucket
        async with self.state.sessions() as s:
            webhook = (await s.execute(select(VideoJob.webhook).where(VideoJob.id == job_id))).scalar()
        if webhooks.subscribes(webhook, events.KIND, "video.progress"):
            await self.event(job_id, "video.progress", f"video.progress:{bucket}")

    async def event(self, job_id: str, event_type: str, key: str | None) -> None:
        job, outputs = await self._load(job_id)
        if job is None or not job.webhook:
            return
        video = present.render(job, outputs, base_url=self.base_url(), secret=self.state.settings.signing_key)
        async with self.state.sessions() as s, s.begin():
            queued = await webhooks.enqueue(s, subject=events.subject(job.id), workspace_id=job.workspace_id,
                                            webhook=job.webhook, event_type=event_type, event_key=key, data=video)
        if queued and self.state.jobs is not None:
            self.state.jobs.wake("webhooks", queued)

"""Advancing one video job: submit (or resume a submit), poll, copy outputs into storage, finish.

``run_job`` is what every job engine calls, in-process on SQLite and from procrastinate workers on
PostgreSQL. It takes a lease on the row first, so two processes never work the same job at once,
and every status change is a guarded UPDATE that never moves a job backwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.db.base import utcnow
from aistats_gateway.jobs import lease as leases
from aistats_gateway.providers import config as provider_config
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, OutputRef, ProviderError, VideoRequest
from aistats_gateway.routing.breaker import CircuitBreaker
from aistats_gateway.videos import media
from aistats_gateway.videos.submit import build_request, submit_with_fallback
from aistats_gateway.videos.tables import TERMINAL, VIDEO_LEASE, VideoJob, VideoOutput

log = logging.getLogger("aistats_gateway.videos")
JOBS = VIDEO_LEASE.table
LEASE_SECONDS = 120
MAX_DOWNLOAD_ATTEMPTS = 5

StatusHook = Callable[[str, str, str], Awaitable[None]]  # (job_id, old, new)


@dataclass
class RunnerContext:
    sessions: async_sessionmaker[AsyncSession]
    storage: Any  # BlobStore
    http: Any  # httpx.AsyncClient
    data_dir: Path
    worker_id: str = field(default_factory=lambda: "w_" + secrets.token_hex(6))
    lease_seconds: float = LEASE_SECONDS
    reader: Any = None  # db.fastread.FastReader, for reads outside a transaction
    poll_age_fraction: float = 0.0  # see _paced (settings.job_poll_age_fraction)
    on_status: list[StatusHook] = field(default_factory=list)
    on_progress: list[Callable[[str, int], Awaitable[None]]] = field(default_factory=list)
    events: leases.JobEvents = field(default_factory=leases.JobEvents)

    def __post_init__(self) -> None:
        self.events.on_status(VIDEO_LEASE.kind, self._status_hooks)

    async def _status_hooks(self, job_id: str, old: str, new: str) -> None:
        for hook in list(self.on_status):
            with contextlib.suppress(Exception):
                await hook(job_id, old, new)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)  # routing's, shared with the gateway

    def call_context(self, provider_id: str, **extra: Any) -> CallContext:
        cfg = provider_config.load(provider_id)
        return CallContext(http=self.http, api_key=cfg.api_key, base_url=cfg.base_url, data_dir=self.data_dir,
                           extra=dict(extra))


def _now() -> dt.datetime:
    return utcnow()


def _lease(ctx: RunnerContext, job_id: str) -> leases.Lease:
    return leases.Lease(VIDEO_LEASE, job_id, ctx.worker_id, _now(), ctx.lease_seconds)


async def claim(ctx: RunnerContext, job_id: str) -> bool:
    """Take the job's lease (``jobs.lease.claim``). Not re-entrant: one process may run two tasks
    for the same job at once (procrastinate can start a re-deferred task while the previous one is
    still running), and only one of them may work the job."""
    return await leases.claim(ctx.sessions, VIDEO_LEASE, job_id, ctx.worker_id, ctx.lease_seconds) is not None


async def release(ctx: RunnerContext, job_id: str, delay: float | None) -> None:
    await leases.release(ctx.sessions, _lease(ctx, job_id), delay)


def allowed_from(new: str) -> tuple[str, ...]:
    """Forward only: queued → in_progress → a terminal status; nothing moves back to queued."""
    if new == "in_progress":
        return ("queued",)
    if new in TERMINAL:
        return ("queued", "in_progress")
    return ()


async def transition(ctx: RunnerContext, job_id: str, new: str, **values: Any) -> bool:
    """Move a job to ``new`` only forward (``jobs.lease.transition``); False when it could not."""
    now = _now()
    if new == "in_progress":
        values.setdefault("started_at", now)
    if new in TERMINAL:
        values.setdefault("completed_at", now)
        values["next_run_at"] = now
    values.setdefault("updated_at", now)
    return await leases.transition(ctx.sessions, VIDEO_LEASE, job_id, new, allowed_from(new), events=ctx.events,
                                   **values)


async def set_progress(ctx: RunnerContext, job_id: str, progress: int, source: str) -> None:
    async with leases.engine_of(ctx.sessions).begin() as conn:
        await conn.execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.status.in_(("queued", "in_progress")),
                                              JOBS.c.progress < progress)
                           .values(progress=progress, progress_source=source))
    for hook in ctx.on_progress:
        with contextlib.suppress(Exception):
            await hook(job_id, progress)


def _paced(ctx: RunnerContext, job: VideoJob, backoff: float) -> float:
    """A long-running job is polled less often: at least ``poll_age_fraction`` of its age apart
    (0.1: a job running for an hour is looked at every 6 minutes, so its completion is seen at most
    10 % late), never past its deadline. Below 10x the provider's longest interval this is the
    backoff itself, so ordinary jobs are polled exactly as before."""
    if ctx.poll_age_fraction <= 0:
        return backoff
    now = _now()
    age = (now - (job.started_at or job.created_at)).total_seconds()
    paced = ctx.poll_age_fraction * age
    if job.deadline_at is not None:
        paced = min(paced, max((job.deadline_at - now).total_seconds(), 0.0) + 1.0)
    return max(backoff, paced)


def _backoff(provider_id: str, adapter: Any, poll_count: int) -> float:
    """Seconds until poll number ``poll_count + 1``: the provider's interval, x1.5 per poll, capped."""
    t = provider_config.timing(provider_id, adapter)
    base = max(t.poll_interval, 0.0)
    return min(base * (1.5 ** min(poll_count, 20)), t.max_poll_interval) if base else 0.0


async def run_job(ctx: RunnerContext, job_id: str) -> float | None:
    """Advance one job. Returns seconds until it wants to run again, or None when finished/not ours."""
    lease = await leases.claim(ctx.sessions, VIDEO_LEASE, job_id, ctx.worker_id, ctx.lease_seconds)
    if lease is None:
        return None
    return await run_claimed(ctx, lease)


async def run_claimed(ctx: RunnerContext, lease: leases.Lease) -> float | None:
    """Advance a job this worker has leased (the engine claims due jobs in batches)."""
    return await leases.run_leased(ctx.sessions, lease, lambda held: advance(ctx, held.item_id))


async def _load(ctx: RunnerContext, job_id: str) -> VideoJob | None:
    """The row as a plain (transient) ``VideoJob``: on the lean read path when there is one (a raw
    cursor on SQLite), else one Core SELECT; no session or identity map."""
    if ctx.reader is not None:
        rows = await ctx.reader.rows_by(JOBS, "id", job_id)
        return VideoJob(**rows[0]) if rows else None
    async with leases.engine_of(ctx.sessions).connect() as conn:
        row = (await conn.execute(select(JOBS).where(JOBS.c.id == job_id))).first()
    return VideoJob(**row._mapping) if row is not None else None


async def advance(ctx: RunnerContext, job_id: str) -> float | None:
    job = await _load(ctx, job_id)
    if job is None or job.status in TERMINAL or job.deleted_at is not None:
        return None
    request = await build_request(ctx.storage, job)
    if job.native_id is None:
        # The create request died between storing the job and hearing back from a provider: resume it.
        outcome = await submit_with_fallback(ctx, job, request)
        if outcome.error is not None:
            await transition(ctx, job_id, "failed", error_code=outcome.error.code or "submit_failed",
                             error_message=outcome.error.message)
            return None
        job = await _load(ctx, job_id)
        assert job is not None
    adapter = registry.adapter_for(job.provider or "", "video.generation")
    if adapter is None:
        await transition(ctx, job_id, "failed", error_code="provider_unavailable",
                         error_message=f"provider {job.provider} is not available in this gateway")
        return None
    if not job.provider_done:
        late = job.deadline_at is not None and _now() > job.deadline_at
        delay = await _poll(ctx, job, adapter, request)  # past the deadline: one last look first
        if delay is not None and late:
            await _expire(ctx, job, adapter)
            return None
        if delay is not None:
            return delay
        job = await _load(ctx, job_id)
        if job is None or job.status in TERMINAL or not job.provider_done:
            return None
    return await _download(ctx, job, adapter)


async def _expire(ctx: RunnerContext, job: VideoJob, adapter: Any) -> None:
    if adapter.can_cancel:
        with contextlib.suppress(ProviderError):
            await adapter.cancel(job.native_id, ctx.call_context(job.provider or ""))
    allowed = provider_config.timing(job.provider or "", adapter).deadline_seconds
    await transition(ctx, job.id, "expired", error_code="deadline_exceeded",
                     error_message=f"the provider did not finish within {allowed:g} s")


async def _poll(ctx: RunnerContext, job: VideoJob, adapter: Any, request: VideoRequest) -> float | None:
    cancel = threading.Event()
    call = ctx.call_context(job.provider or "", request=request, cancel_event=cancel)

    async def progress(pct: int) -> None:
        if job.status == "queued":
            await transition(ctx, job.id, "in_progress")
            job.status = "in_progress"
        await set_progress(ctx, job.id, pct, "provider")

    call.progress = progress
    watcher = asyncio.create_task(_watch_cancel(ctx, job.id, cancel))
    try:
        result = await adapter.poll(job.native_id, call)
    except ProviderError as e:
        if e.kind == "not_found":
            await transition(ctx, job.id, "failed", error_code="provider_job_not_found", error_message=e.message)
            return None
        log.warning("poll failed", extra={"video_id": job.id, "provider": job.provider, "error": e.message})
        return max(_backoff(job.provider or "", adapter, job.poll_count), e.retry_after or 0.0, 1.0)
    finally:
        watcher.cancel()
    await _count_poll(ctx, job, adapter, estimate=result.status == "in_progress" and result.progress is None
                      and job.status == "in_progress")
    wait = result.poll_after if result.poll_after is not None else _paced(
        ctx, job, _backoff(job.provider or "", adapter, job.poll_count + 1))
    if result.status in ("queued",):
        return wait
    if result.status == "in_progress":
        if job.status == "queued":
            await transition(ctx, job.id, "in_progress")
        if result.progress is not None and result.progress > job.progress:
            await set_progress(ctx, job.id, result.progress, "provider")
        elif result.progress is None and job.status == "queued":
            await _count_poll(ctx, job, adapter, estimate=True, count=False)
        return wait
    if result.status in ("failed", "cancelled", "expired"):
        await transition(ctx, job.id, result.status, error_code=result.error_code or result.status,
                         error_message=result.error_message or f"the provider reports {result.status}")
        return None
    # completed at the provider: remember what to copy, then copy it.
    async with ctx.sessions() as s, s.begin():
        await s.execute(update(VideoJob).where(VideoJob.id == job.id, VideoJob.status.not_in(TERMINAL)).values(
            provider_done=True, provider_outputs=[_ref_dict(r) for r in result.outputs],
            provider_usage=result.usage or {}))
    return None


def _ref_dict(ref: OutputRef) -> dict[str, Any]:
    d = ref.as_dict()
    if ref.data is not None:
        d["data_b64"] = base64.b64encode(ref.data).decode()
    return d


def _ref(d: dict[str, Any]) -> OutputRef:
    data = base64.b64decode(d["data_b64"]) if d.get("data_b64") else None
    return OutputRef(index=int(d["index"]), url=d.get("url"), data=data, mime_type=d.get("mime_type"),
                     handle=d.get("handle"), expires_at=d.get("expires_at"),
                     duration_seconds=d.get("duration_seconds"))


async def _count_poll(ctx: RunnerContext, job: VideoJob, adapter: Any, *, estimate: bool,
                      count: bool = True) -> None:
    """One UPDATE per poll: the poll count and, for providers without progress, an estimate from
    elapsed time against a typical render time (only ever upwards)."""
    values: dict[str, Any] = {"poll_count": JOBS.c.poll_count + 1} if count else {}
    if estimate:
        started = job.started_at or job.created_at
        elapsed = (_now() - started).total_seconds()
        typical = max(30.0, 12.0 * float(job.seconds or 8))
        pct = int(min(95.0, 100.0 * elapsed / typical))
        values["progress"] = case((and_(JOBS.c.status == "in_progress", JOBS.c.progress < pct), pct),
                                  else_=JOBS.c.progress)
        values["progress_source"] = case((and_(JOBS.c.status == "in_progress", JOBS.c.progress < pct), "estimated"),
                                         else_=JOBS.c.progress_source)
    if not values or leases.on_release(job.id, **values):  # written with the lease's release
        return
    async with leases.engine_of(ctx.sessions).begin() as conn:
        await conn.execute(update(JOBS).where(JOBS.c.id == job.id).values(values))


async def _watch_cancel(ctx: RunnerContext, job_id: str, event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.5)
        async with leases.engine_of(ctx.sessions).connect() as conn:
            status = (await conn.execute(select(JOBS.c.status, JOBS.c.deleted_at)
                                         .where(JOBS.c.id == job_id))).first()
        if status is None or status[0] in TERMINAL or status[1] is not None:
            event.set()


async def _download(ctx: RunnerContext, job: VideoJob, adapter: Any) -> float | None:
    refs = [_ref(d) for d in job.provider_outputs or []]
    if not refs:
        await transition(ctx, job.id, "failed", error_code="no_output", error_message="the provider returned no video")
        return None
    call = ctx.call_context(job.provider or "")
    stored: list[VideoOutput] = []
    keys: list[str] = []
    try:
        with tempfile.TemporaryDirectory(dir=ctx.data_dir, prefix=".dl-") as tmp:
            for ref in refs:
                video_path = Path(tmp) / f"{ref.index}.mp4"
                size, sha = await _fetch_to_file(adapter, job.native_id, ref, call, video_path)
                info = await asyncio.to_thread(media.probe, video_path)
                thumb = await asyncio.to_thread(media.make_thumbnail, video_path, Path(tmp) / f"{ref.index}.webp")
                vkey = f"videos/{job.id}/{ref.index}.mp4"
                tkey = f"videos/{job.id}/{ref.index}.thumb.{Path(thumb.path).suffix.lstrip('.')}"
                await ctx.storage.put_file(vkey, video_path, content_type=info.mime_type)
                keys.append(vkey)
                tinfo = await ctx.storage.put_file(tkey, Path(thumb.path), content_type=thumb.mime_type)
                keys.append(tkey)
                stored.append(VideoOutput(job_id=job.id, index=ref.index, variant="video", storage_key=vkey,
                                          mime_type=info.mime_type, bytes=size, sha256=sha, width=info.width,
                                          height=info.height, duration_seconds=round(info.duration_seconds, 3)))
                stored.append(VideoOutput(job_id=job.id, index=ref.index, variant="thumbnail", storage_key=tkey,
                                          mime_type=thumb.mime_type, bytes=tinfo.size, sha256=tinfo.sha256 or "",
                                          width=thumb.width, height=thumb.height, duration_seconds=None))
    except ProviderError as e:
        if e.kind == "not_found":
            await transition(ctx, job.id, "failed", error_code="output_unavailable",
                             error_message=f"the provider no longer has the output: {e.message}")
            return None
        return await _download_retry(ctx, job, e.message)
    except media.MediaError as e:
        await transition(ctx, job.id, "failed", error_code="invalid_output",
                         error_message=f"the provider's output is not a playable video: {e}")
        return None
    except OSError as e:
        return await _download_retry(ctx, job, str(e))
    first = next(o for o in stored if o.variant == "video" and o.index == 0) if stored else None
    async with ctx.sessions() as s, s.begin():
        await s.execute(delete(VideoOutput).where(VideoOutput.job_id == job.id))
        s.add_all(stored)
    moved = await transition(ctx, job.id, "completed", progress=100,
                             seconds=first.duration_seconds if first else job.seconds)
    if not moved:  # cancelled or deleted meanwhile: drop what was copied
        for key in keys:
            with contextlib.suppress(Exception):
                await ctx.storage.delete(key)
        async with ctx.sessions() as s, s.begin():
            await s.execute(delete(VideoOutput).where(VideoOutput.job_id == job.id))
    cleanup = getattr(adapter, "cleanup", None)
    if cleanup is not None:
        with contextlib.suppress(Exception):
            await cleanup(job.native_id, call)
    return None


async def _fetch_to_file(adapter: Any, native_id: str | None, ref: OutputRef, call: CallContext,
                         path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as f:
        if ref.data is not None:
            f.write(ref.data)
            digest.update(ref.data)
            size = len(ref.data)
        else:
            async for chunk in adapter.open_output(native_id, ref, call):
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


async def _download_retry(ctx: RunnerContext, job: VideoJob, message: str) -> float | None:
    attempts = job.download_attempts + 1
    if attempts >= MAX_DOWNLOAD_ATTEMPTS:
        await transition(ctx, job.id, "failed", error_code="output_download_failed",
                         error_message=f"copying the output failed {attempts} times: {message}")
        return None
    async with ctx.sessions() as s, s.begin():
        await s.execute(update(VideoJob).where(VideoJob.id == job.id).values(download_attempts=attempts))
    log.warning("output download failed; retrying", extra={"video_id": job.id, "attempt": attempts})
    return float(2 ** attempts)

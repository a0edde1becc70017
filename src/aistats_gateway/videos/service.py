"""Video job operations behind the endpoints: create, read, list, cancel, delete."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from aistats_gateway.billing import service as billing
from aistats_gateway.db import paging
from aistats_gateway.db.base import utcnow
from aistats_gateway.http import limits, ssrf
from aistats_gateway.http.errors import APIError, _param_from_loc, bad_request
from aistats_gateway.jobs import lease as leases
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import VIDEO, ProviderError
from aistats_gateway.videos import admission, cache, events, references, scratch, validation
from aistats_gateway.videos import billing as video_billing
from aistats_gateway.videos.parsing import Upload
from aistats_gateway.videos.runner import RunnerContext, transition
from aistats_gateway.videos.schemas import VideoCreateRequest
from aistats_gateway.videos.submit import build_request, submit_with_fallback
from aistats_gateway.videos.tables import TERMINAL, VIDEO_LEASE, VideoJob, VideoOutput
from aistats_gateway.webhooks import service as webhooks

log = logging.getLogger("aistats_gateway.videos")
STATUS_ALIASES = {"pending": "queued", "queued": "queued", "processing": "in_progress", "in_progress": "in_progress",
                  "running": "in_progress", "completed": "completed", "succeeded": "completed",
                  "failed": "failed", "error": "failed", "cancelled": "cancelled", "canceled": "cancelled",
                  "expired": "expired"}


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_M = TypeVar("_M", bound=BaseModel)


@dataclass
class Caller:
    key_id: str
    workspace_id: str


def new_id() -> str:
    return "video_" + secrets.token_hex(12)


def _find_nul(node: Any, path: str) -> str | None:
    """The param path of the first string (or key) holding a NUL character, which PostgreSQL cannot store."""
    if isinstance(node, str):
        return path if "\x00" in node else None
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                return sub
            if (found := _find_nul(v, sub)) is not None:
                return found
    if isinstance(node, list):
        for i, v in enumerate(node):
            if (found := _find_nul(v, f"{path}[{i}]")) is not None:
                return found
    return None


def parse_request(data: dict[str, Any]) -> VideoCreateRequest:
    if limits.structure_depth(data) > limits.MAX_NESTING_DEPTH:  # e.g. a body built from form keys
        raise bad_request(f"The request is nested more than {limits.MAX_NESTING_DEPTH} levels deep.", None,
                          "nesting_too_deep")
    limits.check_freeform(data.get("provider_params"), "provider_params")
    if (param := _find_nul(data, "")) is not None:
        raise bad_request(f"'{param}' contains a NUL character (\\u0000), which is not allowed.", param,
                          "invalid_value")
    return parse_model(VideoCreateRequest, data)


def _possible_id(video_id: str) -> bool:
    """Ids are ``video_<hex>``; anything else (too long, NUL bytes …) cannot exist, so skip the lookup."""
    return _ID.fullmatch(video_id) is not None


def parse_model(model: type[_M], data: dict[str, Any]) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = _param_from_loc(tuple(err.get("loc", ())))
        if err.get("type") == "extra_forbidden":
            raise bad_request(f"Unrecognized request argument supplied: '{param}'.", param,
                              "unknown_parameter") from None
        if err.get("type") == "missing":
            raise bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter") from None
        raise bad_request(f"Invalid value for '{param}': {err.get('msg')}.", param) from None


async def create(rctx: RunnerContext, fetch_client: Any, snap: Any, caller: Caller, req: VideoCreateRequest,
                 upload: Upload | None, policy: ssrf.GuardPolicy, wake: Any, *, request_id: str | None = None,
                 webhook_cfg: Any = None, hooks: Any = None, settings: Any = None,
                 on_insert: Callable[[AsyncSession, str], Awaitable[None]] | None = None,
                 data_urls: list[memoryview] | None = None) -> tuple[VideoJob, str | None]:
    """Validate, hold the estimate, store the job and submit it. Returns the job and, when the gateway
    generated the webhook secret, that secret (shown once). ``on_insert`` runs in the transaction that
    stores the job (the idempotency record links the job there)."""
    has_image = upload is not None or bool(req.input_references) or req.input_reference is not None
    plan = validation.plan(snap, req, has_image=has_image, health=rctx.breaker)
    webhook, new_secret = await _webhook(req, webhook_cfg)
    job_id = new_id()
    first = plan.offers[0]
    sample_count = int(plan.values.get("sample_count") or 1)
    audio = bool(plan.values.get("generate_audio"))
    estimate = video_billing.estimate(plan.offers, seconds=float(plan.duration or 0), count=sample_count,
                                      resolution=plan.resolution or validation.size_class(plan.width, plan.height),
                                      audio=audio, size=f"{plan.width}x{plan.height}")
    # Credits, limits, the renderer's cost and disk space are checked before anything is downloaded.
    await admission.precheck(rctx.sessions, settings, job_id=job_id, workspace_id=caller.workspace_id,
                             key_id=caller.key_id, plan=plan, samples=sample_count, estimate=estimate)
    images = await references.load_images(fetch_client, policy, req, upload, references.budget_from(settings),
                                          data_urls)
    stored_images = [{k: v for k, v in img.items() if k != "content"} | {"key": f"videos/{job_id}/inputs/{n}"}
                     for n, img in enumerate(images)]
    job = VideoJob(
        id=job_id, workspace_id=caller.workspace_id, key_id=caller.key_id, model=plan.model.spec.model_id,
        requested_model=req.model, status="queued", candidates=[o.provider_id for o in plan.offers],
        provider=None, provider_model_slug=first.spec.provider_model_slug, native_id=None, attempts=[],
        params={
            "prompt": plan.prompt, "duration": plan.duration, "width": plan.width, "height": plan.height,
            "resolution": plan.resolution, "aspect_ratio": plan.aspect_ratio, "size": plan.size,
            "values": plan.values, "provider_params": plan.provider_params, "images": stored_images,
            "slugs": {o.provider_id: o.spec.provider_model_slug for o in plan.offers},
            "request_id": request_id,
        },
        output_access=req.output.access if req.output else "both",
        seconds=float(plan.duration) if plan.duration is not None else None,
        size=f"{plan.width}x{plan.height}", audio=audio,
        sample_count=sample_count, progress=0, progress_source="estimated",
        # Held by this request until the submit below settles; after a crash the engine resumes it.
        next_run_at=utcnow(), lease_owner="api", lease_until=utcnow() + dt.timedelta(seconds=rctx.lease_seconds),
        webhook=webhook,
        billing={"state": "held", "currency": "usd", "hold_id": billing.hold_id(job_id),
                 "held_nanos": estimate.nanos, "settled_nanos": 0, "estimate_nanos": estimate.nanos,
                 "lines": estimate.lines, "priced": estimate.priced},
    )
    # The job and its hold are written together: a 402 leaves nothing behind.
    cap = settings.max_jobs_in_flight_per_key if settings is not None else admission.DEFAULT_MAX_JOBS_IN_FLIGHT
    async with rctx.sessions() as s, s.begin():
        s.add(job)
        await s.flush()  # on SQLite the first write takes the lock, serialising the count below
        await admission.enforce_in_flight(s, caller.key_id, cap, exclude=job_id)
        await billing.hold(s, ref=video_billing.ref(job_id), workspace_id=caller.workspace_id,
                           key_id=caller.key_id, amount_nanos=estimate.nanos)
        if on_insert is not None:
            await on_insert(s, job_id)
    try:
        for img, stored in zip(images, stored_images):
            async def one(data: bytes = img["content"]) -> Any:
                yield data
            await rctx.storage.put_stream(stored["key"], one(), content_type=img["mime_type"])
        request = await build_request(rctx.storage, job)
        outcome = await submit_with_fallback(rctx, job, request)
    except BaseException as e:
        await _void_and_discard(rctx, job_id, "the create request failed")
        if admission.is_disk_full(e):
            raise admission.storage_full() from None
        raise
    if outcome.error is not None:
        await _void_and_discard(rctx, job_id, f"no provider took the job: {outcome.error.message}")
        raise _submit_error(outcome.error)
    # Hand the job to the engine and read it back in one Core statement (no ORM session).
    jobs_table = VIDEO_LEASE.table
    async with leases.engine_of(rctx.sessions).begin() as conn:
        row = (await conn.execute(update(jobs_table).where(jobs_table.c.id == job_id)
                                  .values(lease_owner=None, lease_until=None)
                                  .returning(*jobs_table.c))).first()
    assert row is not None
    wake(job_id)
    if hooks is not None and webhook is not None:  # nothing to queue for a job without a webhook
        await hooks.event(job_id, "video.created", None)
    return VideoJob(**row._mapping), new_secret


async def _webhook(req: VideoCreateRequest, cfg: Any) -> tuple[dict[str, Any] | None, str | None]:
    if req.webhook is None:
        return None, None
    return await webhooks.subscription(events.KIND, req.webhook.url, req.webhook.secret,
                                       list(req.webhook.events) if req.webhook.events else None, cfg)


async def _void_and_discard(rctx: RunnerContext, job_id: str, memo: str) -> None:
    async with rctx.sessions() as s, s.begin():
        await billing.void(s, video_billing.ref(job_id), memo=memo)
    await _discard(rctx, job_id)


def _submit_error(e: ProviderError) -> APIError:
    if e.kind == "client":
        return APIError(400, f"The provider rejected the request: {e.message}", param=e.param,
                        code=e.code or "provider_rejected_request")
    if e.kind == "content_policy":
        return APIError(400, f"The provider refused the prompt or image: {e.message}", param="prompt",
                        code=e.code or "content_policy_violation")
    if e.kind == "rate_limit":
        headers = {"Retry-After": str(int(e.retry_after or 1))}
        return APIError(429, f"Every provider is rate limiting this request: {e.message}", code="rate_limit_exceeded",
                        headers=headers)
    return APIError(502 if e.kind in ("upstream", "auth", "quota") else 503,
                    f"No provider could take the job: {e.message}", code=e.code or "providers_unavailable",
                    type="server_error")


async def _discard(rctx: RunnerContext, job_id: str) -> None:
    async with rctx.sessions() as s, s.begin():
        await s.execute(delete(VideoJob).where(VideoJob.id == job_id))
    with contextlib.suppress(Exception):
        await rctx.storage.delete_prefix(f"videos/{job_id}/")


async def _read(reader: Any, video_id: str) -> tuple[VideoJob, list[VideoOutput]] | None:
    """A job and (when completed) its outputs, on the lean read path; None when unknown or deleted."""
    if not _possible_id(video_id):
        return None
    jobs = await reader.rows_by(VideoJob.__table__, "id", video_id)
    job = VideoJob(**jobs[0]) if jobs else None
    if job is None or job.deleted_at is not None:
        return None
    outs = await reader.rows_by(VideoOutput.__table__, "job_id", video_id) if job.status == "completed" else []
    return job, [VideoOutput(**o) for o in outs]


_STAMP_COLUMNS = ("workspace_id", "status", "deleted_at", "updated_at", "webhook")


async def stamp_of(reader: Any, video_id: str) -> tuple[cache.Stamp, bool] | None:
    """The row's owner and version (and whether it has a webhook), read without its large columns."""
    if not _possible_id(video_id):
        return None
    rows = await reader.columns_by(VideoJob.__table__, _STAMP_COLUMNS, "id", video_id)
    if not rows:
        return None
    ws, status, deleted_at, updated_at, webhook = rows[0]
    return cache.Stamp(ws, status, deleted_at is not None, updated_at), bool(webhook)


async def get_owned(rctx: RunnerContext, caller: Caller, video_id: str) -> tuple[VideoJob, list[VideoOutput]]:
    found = await _read(rctx.reader, video_id)
    if found is None or found[0].workspace_id != caller.workspace_id:
        raise APIError(404, f"No video found with id '{video_id}'.", param="video_id", code="video_not_found")
    return found


async def get_for_download(rctx: RunnerContext, video_id: str) -> tuple[VideoJob, list[VideoOutput]] | None:
    """For signed links: the job whoever owns it (the signature is the authorisation)."""
    return await _read(rctx.reader, video_id)


async def webhook_deliveries(rctx: RunnerContext, job: VideoJob) -> list[dict[str, Any]]:
    async with rctx.sessions() as s:
        return await webhooks.for_subject(s, events.subject(job.id))


def parse_statuses(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        canonical = STATUS_ALIASES.get(v.strip().lower())
        if canonical is None:
            raise bad_request(f"Invalid status {v!r}; allowed: queued, in_progress, completed, failed, cancelled, "
                              "expired (aliases: pending, processing).", "status")
        if canonical not in out:
            out.append(canonical)
    return out


async def list_jobs(rctx: RunnerContext, caller: Caller, *, limit: int, after: str | None, order: str,
                    statuses: list[str]) -> tuple[list[VideoJob], dict[str, list[VideoOutput]], bool]:
    async with rctx.sessions() as s:
        # Never load the stored request (params) or provider outputs to render a list: only the
        # request id is read out of params, by the database.
        stmt = (select(VideoJob, VideoJob.params["request_id"].as_string())
                .options(defer(VideoJob.params), defer(VideoJob.provider_outputs))
                .where(VideoJob.workspace_id == caller.workspace_id, VideoJob.deleted_at.is_(None)))
        if statuses:
            stmt = stmt.where(VideoJob.status.in_(statuses))
        anchor = None
        if after:
            anchor = (await s.execute(select(VideoJob.id, VideoJob.workspace_id, VideoJob.created_at)
                                      .where(VideoJob.id == after))).first() if _possible_id(after) else None
            if anchor is None or anchor.workspace_id != caller.workspace_id:
                raise bad_request(f"Unknown cursor 'after': {after!r}.", "after", "invalid_cursor")
        stmt = paging.keyset(stmt, VideoJob.created_at, VideoJob.id, anchor, "asc" if order == "asc" else "desc")
        rows = []
        for job, request_id in (await s.execute(stmt.limit(limit + 1))).all():
            s.expunge(job)
            job.params = {"request_id": request_id}
            rows.append(job)
        has_more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.id for r in rows if r.status == "completed"]
        outputs: dict[str, list[VideoOutput]] = {}
        if ids:
            for o in (await s.execute(select(VideoOutput).where(VideoOutput.job_id.in_(ids)))).scalars():
                outputs.setdefault(o.job_id, []).append(o)
    return rows, outputs, has_more


async def cancel(rctx: RunnerContext, caller: Caller, video_id: str) -> VideoJob:
    job, _ = await get_owned(rctx, caller, video_id)
    if job.status in TERMINAL:
        raise APIError(409, f"The video is already {job.status} and cannot be cancelled.", param="video_id",
                       code="video_not_cancellable")
    adapter = registry.get(job.provider or "", VIDEO)
    if adapter is not None and adapter.can_cancel and job.native_id:
        try:
            await adapter.cancel(job.native_id, rctx.call_context(job.provider or ""))
        except ProviderError as e:
            log.warning("provider cancel failed; stopping locally", extra={"video_id": job.id, "error": e.message})
    moved = await transition(rctx, job.id, "cancelled", error_code="cancelled", error_message="cancelled by the caller")
    job, _ = await get_owned(rctx, caller, video_id)
    if not moved and job.status != "cancelled":
        raise APIError(409, f"The video is already {job.status} and cannot be cancelled.", param="video_id",
                       code="video_not_cancellable")
    return job


async def remove(rctx: RunnerContext, caller: Caller, video_id: str) -> None:
    job, _ = await get_owned(rctx, caller, video_id)
    if job.status not in TERMINAL:
        raise APIError(409, f"The video is {job.status}; cancel it before deleting it.", param="video_id",
                       code="video_not_terminal")
    async with rctx.sessions() as s, s.begin():
        # Free what the job stored: the request (prompt, parameters), provider outputs, the outputs' rows
        # and blobs; keep the small columns billing and the ledger refer to.
        # An UPDATE executes to a CursorResult (SQLAlchemy 2.1 types it as the plain Result).
        res = cast("CursorResult[Any]", await s.execute(
            update(VideoJob).where(VideoJob.id == job.id, VideoJob.deleted_at.is_(None))
            .values(deleted_at=utcnow(), params={}, provider_outputs=None, provider_usage=None, error_message=None)))
        if res.rowcount != 1:
            raise APIError(404, f"No video found with id '{video_id}'.", param="video_id", code="video_not_found")
        await s.execute(delete(VideoOutput).where(VideoOutput.job_id == job.id))
    await rctx.storage.delete_prefix(f"videos/{job.id}/")
    await scratch.cleanup_job(rctx.data_dir, job.id)

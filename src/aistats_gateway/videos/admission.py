"""Admission of a create request: the checks that run before anything is downloaded or sent.

Invariants
----------
* :func:`precheck` runs after validation and *before* any image is fetched or decoded: the
  local renderer's cost (duration x pixels x samples), the per-key cap on jobs in flight, free
  disk space, and the credits/spend limits (a dry run of the hold, rolled back). A request that
  would be refused later is refused here, cheaply.
* :func:`enforce_in_flight` runs again inside the transaction that stores the job, serialised per
  key (a PostgreSQL advisory lock; SQLite's single writer after the first write), so concurrent
  creates cannot push a key past its cap.
* Refusals are OpenAI-shaped: 400 ``render_too_expensive``, 429 ``too_many_jobs_in_flight``,
  503 ``insufficient_storage``, 402 from billing.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.billing import service as billing
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import VIDEO
from aistats_gateway.videos import billing as video_billing
from aistats_gateway.videos.tables import STATUS_RANK, TERMINAL, VideoJob

DEFAULT_MAX_JOBS_IN_FLIGHT = 32
DEFAULT_MAX_RENDER_COST = 1920 * 1080 * 20 * 2  # pixel-seconds x samples: two 20 s 1080p renders
DEFAULT_MIN_FREE_DISK = 256 * 1024 * 1024
_DISK_CACHE: dict[str, tuple[float, int]] = {}
IN_FLIGHT = tuple(s for s in STATUS_RANK if s not in TERMINAL)  # queued, in_progress (the status index)


def render_cost(width: int | None, height: int | None, seconds: float | None, samples: int) -> int:
    return int((width or 0) * (height or 0) * float(seconds or 0) * max(samples, 1))


def check_render_cost(plan: Any, samples: int, limit: int) -> None:
    """400 when every candidate renders on this machine (an adapter with ``renders_locally``) and the
    render costs more than ``limit``."""
    if not plan.offers or not all(getattr(registry.get(o.provider_id, VIDEO), "renders_locally", False)
                                  for o in plan.offers):
        return
    cost = render_cost(plan.width, plan.height, plan.duration, samples)
    if cost > limit:
        raise bad_request(
            f"This render is too expensive for the local renderer: {plan.width}x{plan.height} x "
            f"{plan.duration:g} s x {samples} sample(s) = {cost:,} pixel-seconds; at most {limit:,} are allowed. "
            "Lower the duration, the size or sample_count.", "duration", "render_too_expensive")


async def free_disk_bytes(path: Path) -> int:
    """Free bytes where ``path`` lives (cached for one second, measured in a thread)."""
    key = str(path)
    now = time.monotonic()
    hit = _DISK_CACHE.get(key)
    if hit is not None and now - hit[0] < 1.0:
        return hit[1]
    free = (await asyncio.to_thread(shutil.disk_usage, path)).free
    _DISK_CACHE[key] = (now, free)
    return free


def storage_full(detail: str = "") -> APIError:
    return APIError(503, "The gateway is out of disk space; try again later." + (f" ({detail})" if detail else ""),
                    code="insufficient_storage", type="server_error", headers={"Retry-After": "30"})


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


async def check_disk(settings: Any) -> None:
    if settings is None or not settings.uses_local_disk_storage:
        return
    free = await free_disk_bytes(settings.data_dir)
    if free < settings.min_free_disk_bytes:
        raise storage_full(f"{free:,} bytes free, {settings.min_free_disk_bytes:,} needed")


async def _lock_key(s: AsyncSession, key_id: str) -> None:
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key_id.encode()) - 2**31})


async def _in_flight(s: AsyncSession, key_id: str, exclude: str | None = None) -> int:
    stmt = select(func.count()).select_from(VideoJob).where(
        VideoJob.status.in_(IN_FLIGHT), VideoJob.key_id == key_id, VideoJob.deleted_at.is_(None))
    if exclude is not None:
        stmt = stmt.where(VideoJob.id != exclude)
    return int((await s.execute(stmt)).scalar() or 0)


def _check_cap(running: int, cap: int) -> None:
    if running >= cap:
        raise APIError(429, f"This key already has {running} video jobs queued or in progress; at most {cap} "
                       "may be in flight. Wait for one to finish.", code="too_many_jobs_in_flight",
                       headers={"Retry-After": "5"})


async def enforce_in_flight(s: AsyncSession, key_id: str, cap: int, *, exclude: str | None = None) -> None:
    """429 when ``key_id`` already has ``cap`` jobs queued or in progress (the new one excluded)."""
    await _lock_key(s, key_id)
    _check_cap(await _in_flight(s, key_id, exclude), cap)


async def precheck(sessions: Any, settings: Any, *, job_id: str, workspace_id: str, key_id: str, plan: Any,
                   samples: int, estimate: Any) -> None:
    """Everything that can refuse the request without downloading anything."""
    cap = settings.max_jobs_in_flight_per_key if settings is not None else DEFAULT_MAX_JOBS_IN_FLIGHT
    limit = settings.local_max_render_cost if settings is not None else DEFAULT_MAX_RENDER_COST
    check_render_cost(plan, samples, limit)
    await check_disk(settings)
    async with sessions() as s:
        _check_cap(await _in_flight(s, key_id), cap)
    async with sessions() as s:  # the hold, tried and rolled back: 402 before any download
        tx = await s.begin()
        try:
            await billing.hold(s, ref=video_billing.ref(job_id), workspace_id=workspace_id, key_id=key_id,
                               amount_nanos=estimate.nanos)
        finally:
            await tx.rollback()

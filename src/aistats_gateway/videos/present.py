"""Turning a job row and its outputs into the public video object."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from aistats_gateway.providers import config as provider_config
from aistats_gateway.providers import registry
from aistats_gateway.videos import signing
from aistats_gateway.videos.tables import TERMINAL, VideoJob, VideoOutput

DEFAULT_TTL = 900


def ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def poll_after_seconds(job: VideoJob) -> int:
    """How long a client should wait before polling again: the provider's own poll interval."""
    if job.status in TERMINAL:
        return 0
    adapter = registry.adapter_for(job.provider or "", "video.generation")
    if adapter is None:
        return 5
    return max(1, math.ceil(provider_config.timing(job.provider or "", adapter).poll_interval))


# Today's hold states → the SDK's billing.state (the hold state stays readable as hold_state).
BILLING_STATES = {"none": "pending", "held": "estimated", "settled": "settled", "void": "void"}
LIFECYCLE = {"queued": "pending", "in_progress": "running"}  # the SDK's lifecycle_status; others are equal


def _billing(job: VideoJob) -> dict[str, Any]:
    doc = dict(job.billing or {"state": "none", "currency": "usd", "held_nanos": 0, "settled_nanos": 0})
    hold_state = str(doc.get("state") or "none")
    held, settled = int(doc.get("held_nanos") or 0), int(doc.get("settled_nanos") or 0)
    doc.update(hold_state=hold_state, state=BILLING_STATES.get(hold_state, "pending"), reserved_nanos=held,
               estimated_nanos=int(doc.get("estimate_nanos", held) or 0),
               total_nanos=settled if hold_state == "settled" else 0 if hold_state == "void" else None,
               billable=bool(doc.get("priced", True)), charged=hold_state == "settled" and settled > 0)
    return doc


def websocket_url(base_url: str, job_id: str) -> str:
    scheme, sep, rest = base_url.partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme) if sep else "ws"
    return f"{ws_scheme}://{rest if sep else base_url}/v1/async/video/{job_id}/ws"


def _usage(job: VideoJob) -> dict[str, Any]:
    b = job.billing or {}
    settled = b.get("settled_nanos") or 0
    return {"cost": settled / 1_000_000_000, "is_byok": False}


def render(job: VideoJob, outputs: list[VideoOutput], *, base_url: str, secret: bytes,
           now: float | None = None, deliveries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    access = job.output_access
    completed = job.status == "completed"
    videos = sorted((o for o in outputs if o.variant == "video"), key=lambda o: o.index)
    thumbs = {o.index: o for o in outputs if o.variant == "thumbnail"}
    content_base = f"{base_url}/v1/videos/{job.id}/content"
    out_list = []
    top_download: signing.SignedLink | None = None
    for o in videos:
        item: dict[str, Any] = {
            "index": o.index, "mime_type": o.mime_type, "bytes_available": True, "bytes": o.bytes,
            "sha256": o.sha256, "width": o.width, "height": o.height, "duration_seconds": o.duration_seconds,
            "content_url": None, "download_url": None, "expires_at": None, "thumbnail_url": None,
        }
        if access in ("bytes", "both"):
            item["content_url"] = content_base if o.index == 0 else f"{content_base}?index={o.index}"
            if o.index in thumbs:
                item["thumbnail_url"] = f"{content_base}?index={o.index}&variant=thumbnail"
        if access in ("signed_url", "both") and completed:
            link = signing.sign(secret, base_url, job.id, index=o.index, ttl_seconds=DEFAULT_TTL, now=now)
            item["download_url"], item["expires_at"] = link.url, link.expires_at
            if o.index == 0:
                top_download = link
        out_list.append(item)
    first = videos[0] if videos else None
    error = {"code": job.error_code or "error", "message": job.error_message or ""} if job.status in (
        "failed", "expired", "cancelled") and (job.error_code or job.error_message) else None
    return {
        "id": job.id,
        "object": "video",
        "polling_url": f"{base_url}/v1/videos/{job.id}",
        "model": job.model,
        "request_id": (job.params or {}).get("request_id"),  # the create request's x-request-id
        "session_id": None,  # this gateway has no sessions; kept for the response shape
        "status": job.status,
        "lifecycle_status": LIFECYCLE.get(job.status, job.status),
        "output_access": access,
        "generation_id": job.id,
        "created_at": ts(job.created_at),
        "started_at": ts(job.started_at),
        "completed_at": ts(job.completed_at),
        "poll_after_seconds": poll_after_seconds(job),
        "provider": job.provider,
        "native_video_id": job.native_id,
        "cancel_url": None if job.status in TERMINAL else f"{base_url}/v1/videos/{job.id}/cancel",
        "websocket_url": websocket_url(base_url, job.id),
        "seconds": job.seconds,
        "size": job.size,
        "audio": job.audio,
        "content_url": content_base if completed and access in ("bytes", "both") else None,
        "download_url": top_download.url if top_download else None,
        "expires_at": top_download.expires_at if top_download else None,
        "progress": 100 if completed else max(0, min(100, job.progress or 0)),
        "progress_source": job.progress_source if job.progress_source in ("provider", "estimated") else "estimated",
        "asset": {
            "id": f"asset_{job.id}_0", "mime_type": first.mime_type, "bytes": first.bytes, "sha256": first.sha256,
            "width": first.width, "height": first.height, "duration_seconds": first.duration_seconds,
        } if first is not None and completed else None,
        "outputs": out_list if completed else [],
        "billing": _billing(job),
        "usage": _usage(job),
        "error": error,
        "attempts": list(job.attempts or []),
        "webhook": _webhook(job, deliveries),
    }


def _webhook(job: VideoJob, deliveries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not job.webhook:
        return None
    w = {k: v for k, v in job.webhook.items() if k != "secret"}
    w["has_secret"] = bool(job.webhook.get("secret"))
    w["deliveries"] = deliveries or []
    return w

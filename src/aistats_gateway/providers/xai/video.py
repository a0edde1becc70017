"""xAI Grok Imagine video: ``POST /v1/videos/generations`` (JSON, ``Authorization: Bearer``,
``Idempotency-Key``) answers ``{"request_id"}``; ``GET /v1/videos/{request_id}`` reports
``pending`` → ``done`` (``video.url``, ``video.duration``, ``video.respect_moderation``) or
``failed`` (``error.code``/``error.message``) or ``expired``. The video URL is a temporary public link,
downloaded without credentials. xAI has no cancel endpoint: cancelling only stops polling.

xAI's odd error shapes: ``{"code": "<gRPC-style status text>", "error": "<message>"}`` (an invalid key
is **HTTP 400** "Incorrect API key provided"; no credits is 403), besides the OpenAI-style
``{"error": {"message", "code"}}``.

Settings: ``AISTATS_PROVIDER_X_AI_API_KEY``, ``AISTATS_PROVIDER_X_AI_BASE_URL`` (default
``https://api.x.ai``; a trailing ``/v1`` is tolerated) and the shared timing settings
``AISTATS_PROVIDER_X_AI_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``.
See docs/providers/x-ai.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers.base import (
    VIDEO,
    CallContext,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
    error_from_status,
)

PROVIDER = "xAI"
DEFAULT_BASE_URL = "https://api.x.ai"
OUTPUT_TTL_SECONDS = 3600  # xAI documents the video URLs as temporary; copy them promptly

STATUS = {"queued": "queued", "pending": "in_progress", "processing": "in_progress", "in_progress": "in_progress",
          "done": "completed", "failed": "failed", "expired": "expired"}
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
RESOLUTIONS = ("480p", "720p")
RESOLUTIONS_1_5 = ("480p", "720p", "1080p")  # grok-imagine-video-1.5*
MAX_REFERENCE_IMAGES = 7
POLICY_WORDS = ("moderation", "content policy", "safety", "violat")


def _base(ctx: CallContext) -> str:
    base = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key or ''}"}


# ---------------------------------------------------------------- request mapping


def _ratio_value(ratio: str) -> float:
    w, h = ratio.split(":")
    return int(w) / int(h)


def pick_aspect_ratio(aspect_ratio: str | None, width: int | None, height: int | None) -> str:
    """xAI's aspect ratio: the request's when xAI has it, else the closest one to the frame."""
    if aspect_ratio in ASPECT_RATIOS:
        return aspect_ratio
    target = None
    if aspect_ratio and ":" in aspect_ratio:
        try:
            w, h = (float(p) for p in aspect_ratio.split(":", 1))
            target = w / h if w > 0 and h > 0 else None
        except ValueError:
            target = None
    if target is None and width and height:
        target = width / height
    if target is None:
        return "16:9"
    return min(ASPECT_RATIOS, key=lambda r: abs(math.log(_ratio_value(r) / target)))


def pick_resolution(model: str, resolution: str | None, width: int | None, height: int | None) -> str | None:
    allowed = RESOLUTIONS_1_5 if model.startswith("grok-imagine-video-1.5") else RESOLUTIONS
    if resolution:
        value = resolution.lower()
        if value in allowed:
            return value
        raise ProviderError("client", f"xAI {model} offers resolutions {', '.join(allowed)}, not {resolution}",
                            code="unsupported_value", param="resolution")
    if width and height:
        short = min(width, height)
        for label, limit in (("480p", 480), ("720p", 720), ("1080p", 1080)):
            if short <= limit and label in allowed:
                return label
        raise ProviderError("client", f"xAI {model} offers resolutions {', '.join(allowed)}; {width}x{height} is "
                            "larger", code="unsupported_value", param="size")
    return None


def build_body(request: VideoRequest) -> dict[str, Any]:
    """The JSON body of ``POST /v1/videos/generations``. Raises ProviderError("client") for inputs xAI
    cannot take."""
    first = [i for i in request.images if i.role == "first_frame"]
    refs = [i for i in request.images if i.role == "reference"]
    other = sorted({i.role for i in request.images} - {"first_frame", "reference"})
    if other:
        raise ProviderError("client", f"xAI does not take {', '.join(other)} images (only a first_frame image or "
                            "reference images; video edits need a source video)", code="unsupported_value",
                            param="input_references")
    if first and refs:
        raise ProviderError("client", "xAI takes either a first_frame image or reference images, not both",
                            code="conflicting_parameters", param="input_references")
    if len(refs) > MAX_REFERENCE_IMAGES:
        raise ProviderError("client", f"xAI takes at most {MAX_REFERENCE_IMAGES} reference images",
                            code="unsupported_value", param="input_references")
    body: dict[str, Any] = {"model": request.model_slug, "prompt": request.prompt}
    if request.duration is not None:
        body["duration"] = int(request.duration)
    body["aspect_ratio"] = pick_aspect_ratio(request.aspect_ratio, request.width, request.height)
    resolution = pick_resolution(request.model_slug, request.resolution, request.width, request.height)
    if resolution:
        body["resolution"] = resolution
    if first:
        body["image"] = {"url": _http.image_url(first[0])}
    if refs:
        body["reference_images"] = [{"url": _http.image_url(i)} for i in refs]
    body.update(request.provider_params)  # e.g. user
    return body


# ---------------------------------------------------------------- errors


def _message(resp: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from either error shape."""
    message, code = f"xAI answered HTTP {resp.status_code}", None
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return (text[:500] or message), None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = str(err["code"]) if err.get("code") is not None else None
        elif isinstance(err, str) and err:
            message = err
            code = str(body["code"]) if body.get("code") is not None else None
        elif isinstance(body.get("message"), str):
            message = body["message"]
    elif isinstance(body, str) and body:
        message = body
    return message, code


def error_from_response(resp: httpx.Response) -> ProviderError:
    message, native_code = _message(resp)
    low = message.lower()
    status = resp.status_code
    if status in (402, 403) and ("credit" in low or "spending limit" in low or "license" in low):
        return ProviderError("quota", message, status=status, code="provider_quota_exceeded")
    if status in (400, 401, 403) and ("api key" in low or "unauthenticated" in low or "authorization" in low):
        return ProviderError("auth", message, status=status, code="provider_auth_failed")
    if status in (400, 422) and any(w in low for w in POLICY_WORDS):
        return ProviderError("content_policy", message, status=status, code="content_policy_violation")
    e = error_from_status(status, message, retry_after=_http.retry_after(resp))
    if status == 400 and native_code and e.code == "provider_rejected_request":
        e.message = f"{message} ({native_code})"
    return e


async def _call(ctx: CallContext, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {**_headers(ctx), **kw.pop("headers", {})}
    resp = await _http.send(ctx.http, method, f"{_base(ctx)}{path}", provider=PROVIDER, headers=headers, **kw)
    if resp.status_code >= 400:
        raise error_from_response(resp)
    return resp


# ---------------------------------------------------------------- status


def polled_from_status(body: dict[str, Any]) -> Polled:
    """Our view of ``GET /v1/videos/{request_id}``."""
    video: dict[str, Any] = v if isinstance(v := body.get("video"), dict) else {}
    native = body.get("status")
    if native is None:
        # Older/proxied answers: only {"request_id"} while pending, a video once done.
        native = "done" if video.get("url") else "pending"
    status = STATUS.get(str(native).lower())
    if status is None:
        raise ProviderError("upstream", f"xAI returned an unknown video status {native!r}",
                            code="invalid_upstream_response")
    p = body.get("progress")
    progress = max(0, min(99, int(p))) if isinstance(p, (int, float)) and not isinstance(p, bool) else None
    if status == "queued":
        return Polled(status="queued", progress=progress or 0)
    if status == "in_progress":
        return Polled(status="in_progress", progress=progress)
    if status == "expired":
        return Polled(status="expired", error_code="provider_request_expired",
                      error_message="xAI expired the request before it finished")
    if status == "failed":
        err: dict[str, Any] = v if isinstance(v := body.get("error"), dict) else {}
        code = str(err.get("code") or "generation_failed")
        message = str(err.get("message") or "the video generation failed at xAI")
        if any(w in f"{code} {message}".lower() for w in POLICY_WORDS):
            return Polled(status="failed", error_code="content_policy_violation", error_message=f"{message} ({code})")
        return Polled(status="failed", error_code=code, error_message=message)
    if video.get("respect_moderation") is False:
        return Polled(status="failed", error_code="content_policy_violation",
                      error_message="xAI blocked the generated video: it does not respect its content moderation")
    url = video.get("url")
    if not isinstance(url, str) or not url:
        return Polled(status="failed", error_code="no_output", error_message="xAI reported done but gave no video URL")
    seconds = video.get("duration")
    seconds = float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None
    usage: dict[str, Any] = {"seconds": seconds, "count": 1}
    cost = (body.get("usage") or {}).get("cost_in_usd_ticks") if isinstance(body.get("usage"), dict) else None
    if cost is not None:
        usage["cost_in_usd_ticks"] = cost
    return Polled(status="completed", progress=100,
                  outputs=(OutputRef(index=0, url=url, mime_type="video/mp4", duration_seconds=seconds,
                                     expires_at=time.time() + OUTPUT_TTL_SECONDS),),
                  usage=usage)


# ---------------------------------------------------------------- adapter


class XAIVideo:
    provider_id = "x-ai"
    can_cancel = False
    poll_interval = 5.0
    max_poll_interval = 20.0
    deadline_seconds = 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        body = build_body(request)
        resp = await _call(ctx, "POST", "/v1/videos/generations", json=body,
                           headers={"Idempotency-Key": request.job_id})
        data = _http.json_object(resp, PROVIDER)
        request_id = data.get("request_id") or data.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("upstream", "xAI returned no request_id", code="invalid_upstream_response")
        return Submitted(native_id=request_id, status="queued")

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        resp = await _call(ctx, "GET", f"/v1/videos/{native_id}")
        return polled_from_status(_http.json_object(resp, PROVIDER))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("not_found", "xAI output has no URL", code="output_unavailable")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider=PROVIDER):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return False  # xAI has no cancel endpoint


adapter = XAIVideo()
registry.register("x-ai", VIDEO, adapter)

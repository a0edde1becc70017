"""ByteDance Seedance through BytePlus ModelArk: ``POST /api/v3/contents/generations/tasks`` (a ``content``
array of text and image items plus top-level ``ratio``/``resolution``/``duration``/``seed``/...),
``GET /api/v3/contents/generations/tasks/{id}`` (``content.video_url``, valid 24 h, downloaded without
credentials) and ``DELETE /api/v3/contents/generations/tasks/{id}`` (cancels a task that is still queued).
Errors use ``{"error": {"code", "message"}}`` with an HTTP status.

Settings: ``AISTATS_PROVIDER_BYTEPLUS_API_KEY`` (an ARK API key), ``AISTATS_PROVIDER_BYTEPLUS_BASE_URL``
(default ``https://ark.ap-southeast.bytepluses.com``; Volcengine Ark in China is
``https://ark.cn-beijing.volces.com``), and the shared ``_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` /
``_DEADLINE_SECONDS`` timing settings. See docs/providers/byteplus.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any

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

PROVIDER = "BytePlus"
DEFAULT_BASE_URL = "https://ark.ap-southeast.bytepluses.com"
TASKS = "/api/v3/contents/generations/tasks"
URL_TTL_SECONDS = 24 * 3600

STATUS = {"queued": "queued", "running": "in_progress", "succeeded": "completed", "failed": "failed",
          "cancelled": "cancelled", "expired": "expired"}
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
RESOLUTIONS = ("480p", "720p", "1080p")
ROLES = {"first_frame": "first_frame", "last_frame": "last_frame", "reference": "reference_image"}
QUOTA_CODES = frozenset({"AccountOverdueError", "QuotaExceeded", "SetLimitExceeded"})


def error_for(status: int, code: str | None, message: str, retry_after: float | None = None) -> ProviderError:
    """A ModelArk error (HTTP status + ``error.code``) as a ProviderError."""
    c = code or ""
    text = f"BytePlus {c or status}: {message}"
    e = error_from_status(status, text, retry_after=retry_after)
    if "SensitiveContent" in c or "RiskDetection" in c:
        e.kind, e.code = "content_policy", "content_policy_violation"
    elif c.startswith("AuthenticationError") or c.startswith("AccessDenied"):
        e.kind, e.code = "auth", "provider_auth_failed"
    elif c in QUOTA_CODES:
        e.kind, e.code = "quota", "provider_quota_exceeded"
    elif c.startswith("RateLimitExceeded") or c == "ServerOverloaded":
        e.kind, e.code = "rate_limit", "rate_limit_exceeded"
    elif c.startswith("InternalServiceError") or c == "ServiceUnavailable":
        e.kind, e.code = "unavailable", "provider_unavailable"
    return e


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


async def _call(ctx: CallContext, method: str, path: str, **kw: Any) -> dict[str, Any]:
    resp = await _http.send(ctx.http, method, _base(ctx) + path, provider=PROVIDER,
                            headers={"Authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}, **kw)
    if resp.status_code >= 400:
        code, message = None, f"HTTP {resp.status_code}"
        try:
            err = resp.json().get("error") or {}
            code, message = err.get("code"), err.get("message") or message
        except (ValueError, AttributeError):
            pass
        raise error_for(resp.status_code, code, message, _http.retry_after(resp))
    if not resp.content:
        return {}
    return _http.json_object(resp, PROVIDER)


def native_ratio(request: VideoRequest) -> str | None:
    if any(i.role == "first_frame" for i in request.images):
        return "adaptive"  # image-to-video: the video keeps the first frame's aspect ratio
    if request.aspect_ratio in RATIOS:
        return request.aspect_ratio
    if request.width and request.height:
        target = request.width / request.height
        return min(RATIOS, key=lambda r: abs(float(Fraction(*map(int, r.split(":")))) - target))
    return None


def native_resolution(request: VideoRequest) -> str | None:
    if request.resolution and request.resolution.lower() in RESOLUTIONS:
        return request.resolution.lower()
    if request.resolution:
        raise ProviderError("client", f"Seedance has no {request.resolution} resolution (480p, 720p, 1080p)",
                            code="unsupported_value", param="resolution")
    if request.width and request.height:
        short = min(request.width, request.height)
        return "480p" if short <= 480 else "720p" if short <= 720 else "1080p"
    return None


def supports_audio(model: str) -> bool:
    return "seedance-1-5" in model or "seedance-2" in model


def native_model(request: VideoRequest) -> str:
    """Seedance 1.0 Lite has separate text- and image-to-video slugs; use the i2v one for image input."""
    model = request.model_slug
    if request.images and "-t2v-" in model:
        return model.replace("-t2v-", "-i2v-")
    return model


def build_body(request: VideoRequest) -> dict[str, Any]:
    model = native_model(request)
    content: list[dict[str, Any]] = []
    if request.prompt:
        content.append({"type": "text", "text": request.prompt})
    for image in request.images:
        role = ROLES.get(image.role)
        if role is None:
            raise ProviderError("client", f"Seedance does not take a {image.role} image", code="unsupported_value",
                                param="input_references")
        content.append({"type": "image_url", "image_url": {"url": _http.image_url(image)}, "role": role})
    body: dict[str, Any] = dict(request.provider_params)  # camera_fixed, watermark, service_tier, ...
    body["model"] = model
    body["content"] = content
    ratio, resolution = native_ratio(request), native_resolution(request)
    if ratio is not None:
        body["ratio"] = ratio
    if resolution is not None:
        body["resolution"] = resolution
    if request.duration is not None:
        body["duration"] = int(request.duration)
    if request.seed is not None:
        body["seed"] = int(request.seed)
    if request.generate_audio is not None and (request.generate_audio or supports_audio(model)):
        body["generate_audio"] = bool(request.generate_audio)
    return body


class SeedanceVideo:
    provider_id = "byteplus"
    can_cancel = True
    poll_interval = 5.0
    max_poll_interval = 20.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        body = await _call(ctx, "POST", TASKS, json=build_body(request))
        task_id = body.get("id")
        if not task_id:
            raise ProviderError("upstream", "BytePlus returned no task id", code="invalid_upstream_response")
        return Submitted(native_id=str(task_id), status="queued")

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        body = await _call(ctx, "GET", f"{TASKS}/{native_id}")
        raw = str(body.get("status") or "")
        status = STATUS.get(raw)
        if status is None:
            raise ProviderError("upstream", f"BytePlus returned an unknown task status {raw!r}",
                                code="invalid_upstream_response")
        if status in ("queued", "in_progress"):
            return Polled(status=status)
        if status != "completed":
            err: dict[str, Any] = v if isinstance(v := body.get("error"), dict) else {}
            code, message = str(err.get("code") or ""), str(err.get("message") or f"the task is {raw}")
            if "SensitiveContent" in code or "RiskDetection" in code:
                return Polled(status="failed", error_code="content_policy_violation",
                              error_message=f"BytePlus {code}: {message}")
            return Polled(status=status, error_code=code or ("generation_failed" if status == "failed" else status),
                          error_message=f"BytePlus {code}: {message}" if code else message)
        content: dict[str, Any] = v if isinstance(v := body.get("content"), dict) else {}
        url = content.get("video_url")
        if not url:
            raise ProviderError("upstream", "BytePlus reports success without content.video_url",
                                code="invalid_upstream_response")
        updated = body.get("updated_at")
        usage: dict[str, Any] = {"count": 1}
        request: VideoRequest | None = ctx.extra.get("request")
        seconds = body.get("duration") if isinstance(body.get("duration"), (int, float)) else (
            request.duration if request is not None else None)
        if seconds is not None:
            usage["seconds"] = float(seconds)
        tokens = (body.get("usage") or {}).get("completion_tokens") if isinstance(body.get("usage"), dict) else None
        if isinstance(tokens, int):
            usage["completion_tokens"] = tokens
        return Polled(status="completed", progress=100, usage=usage, outputs=(OutputRef(
            index=0, url=str(url), mime_type="video/mp4",
            expires_at=float(updated) + URL_TTL_SECONDS if isinstance(updated, (int, float)) else None),))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("upstream", "no video URL recorded for this output", code="invalid_upstream_response")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider=PROVIDER):  # a signed link: no credentials
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        """Cancel a queued task (a running one cannot be cancelled: ModelArk answers with an error)."""
        await _call(ctx, "DELETE", f"{TASKS}/{native_id}")
        return True


adapter = SeedanceVideo()
registry.register("byteplus", VIDEO, adapter)

"""Alibaba Wan video through DashScope (Alibaba Cloud Model Studio):
``POST /api/v1/services/aigc/video-generation/video-synthesis`` with ``X-DashScope-Async: enable`` (HTTP calls
must be asynchronous), ``GET /api/v1/tasks/{task_id}`` (``output.video_url``, downloaded without credentials)
and ``POST /api/v1/tasks/{task_id}/cancel`` (only while the task is ``PENDING``). Errors use
``{code, message, request_id}`` with an HTTP status.

The catalogue names the text-to-video slug (``wan2.6-t2v``); with a first-frame image the adapter calls the
image-to-video sibling (``wan2.6-i2v``). Text-to-video takes ``parameters.size`` (``"1280*720"``),
image-to-video ``parameters.resolution`` (``"720P"``).

Settings: ``AISTATS_PROVIDER_ALIBABA_API_KEY`` (a DashScope/Model Studio key),
``AISTATS_PROVIDER_ALIBABA_BASE_URL`` (default ``https://dashscope-intl.aliyuncs.com`` (Singapore); Beijing is
``https://dashscope.aliyuncs.com``, Virginia ``https://dashscope-us.aliyuncs.com``; keys are per region), and
the shared ``_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``. See docs/providers/alibaba.md.
"""

from __future__ import annotations

import math
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

PROVIDER = "DashScope"
DEFAULT_BASE_URL = "https://dashscope-intl.aliyuncs.com"
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
STATUS = {"PENDING": "queued", "RUNNING": "in_progress", "SUCCEEDED": "completed", "FAILED": "failed",
          "CANCELED": "cancelled"}  # UNKNOWN: the task id is unknown or expired (24 h) → not_found
TIER = {"480p": "480P", "720p": "720P", "1080p": "1080P"}
# Text-to-video sizes (width*height) per resolution tier and aspect ratio.
SIZES = {
    "480P": {"16:9": "832*480", "9:16": "480*832", "1:1": "624*624"},
    "720P": {"16:9": "1280*720", "9:16": "720*1280", "1:1": "960*960", "4:3": "1088*832", "3:4": "832*1088"},
    "1080P": {"16:9": "1920*1080", "9:16": "1080*1920", "1:1": "1440*1440", "4:3": "1632*1248",
              "3:4": "1248*1632"},
}
# provider_params keys that belong in ``input`` (everything else goes to ``parameters``).
INPUT_KEYS = frozenset({"audio_url", "template", "reference_urls", "reference_video_urls"})
QUOTA_CODES = frozenset({"Arrearage", "Throttling.AllocationQuota", "AllocationQuota.FreeTierOnly"})


def error_for(status: int, code: str | None, message: str, retry_after: float | None = None) -> ProviderError:
    """A DashScope error (HTTP status + ``code``) as a ProviderError."""
    c = code or ""
    e = error_from_status(status, f"DashScope {c or status}: {message}", retry_after=retry_after)
    if c.startswith("DataInspectionFailed") or c in ("data_inspection_failed", "IPInfringementSuspect"):
        e.kind, e.code = "content_policy", "content_policy_violation"
    elif c == "InvalidApiKey" or c.startswith("AccessDenied"):
        e.kind, e.code = "auth", "provider_auth_failed"
    elif c in QUOTA_CODES:
        e.kind, e.code = "quota", "provider_quota_exceeded"
    elif c.startswith("Throttling"):
        e.kind, e.code = "rate_limit", "rate_limit_exceeded"
    elif c.startswith("InternalError") or c in ("ServiceUnavailable", "SystemError"):
        e.kind, e.code = "unavailable", "provider_unavailable"
    return e


def _auth(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


async def _call(ctx: CallContext, method: str, path: str, *, headers: dict[str, str] | None = None,
                **kw: Any) -> dict[str, Any]:
    resp = await _http.send(ctx.http, method, _base(ctx) + path, provider=PROVIDER,
                            headers={**_auth(ctx), **(headers or {})}, **kw)
    if resp.status_code >= 400:
        code, message = None, f"HTTP {resp.status_code}"
        try:
            body = resp.json()
            code, message = body.get("code"), body.get("message") or message
        except (ValueError, AttributeError):
            pass
        raise error_for(resp.status_code, code, message, _http.retry_after(resp))
    return _http.json_object(resp, PROVIDER)


def _tier(request: VideoRequest) -> str | None:
    if request.resolution:
        tier = TIER.get(request.resolution.lower())
        if tier is None:
            raise ProviderError("client", f"Wan has no {request.resolution} resolution (480p, 720p, 1080p)",
                                code="unsupported_value", param="resolution")
        return tier
    if request.width and request.height:  # the tier whose pixel count is nearest (832*1088 is a 720P size)
        area = request.width * request.height
        return min(SIZES, key=lambda t: abs(math.log(area / _area(SIZES[t]["16:9"]))))
    return None


def _area(size: str) -> int:
    w, h = size.split("*")
    return int(w) * int(h)


def native_size(request: VideoRequest) -> str | None:
    """``"W*H"`` for text-to-video: the tier's size with the requested (or nearest) aspect ratio."""
    tier = _tier(request)
    if tier is None:
        return None
    table = SIZES[tier]
    if request.aspect_ratio in table:
        return table[request.aspect_ratio]
    if request.width and request.height:
        target = request.width / request.height
        ratio = min(table, key=lambda r: abs(float(Fraction(*map(int, r.split(":")))) - target))
        return table[ratio]
    return table["16:9"]


def native_model(request: VideoRequest) -> str:
    model = request.model_slug
    roles = {i.role for i in request.images}
    if "last_frame" in roles:
        if "kf2v" not in model:
            raise ProviderError("client", f"{model} takes no last frame (a -kf2v- model does)",
                                code="unsupported_value", param="input_references")
        return model
    if "first_frame" in roles and "-t2v" in model:
        return model.replace("-t2v", "-i2v")
    return model


def supports_audio(model: str) -> bool:
    return model.startswith(("wan2.5", "wan2.6", "wan2.7"))


def build_body(request: VideoRequest) -> dict[str, Any]:
    model = native_model(request)
    inp: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in request.provider_params.items():
        (inp if key in INPUT_KEYS else params)[key] = value
    if request.prompt:
        inp["prompt"] = request.prompt
    if request.negative_prompt:
        inp["negative_prompt"] = request.negative_prompt
    for image in request.images:
        url = _http.image_url(image)
        if image.role == "first_frame":
            inp["first_frame_url" if "kf2v" in model else "img_url"] = url
        elif image.role == "last_frame":
            inp["last_frame_url"] = url
        else:
            raise ProviderError("client", f"Wan {model} does not take a {image.role} image", code="unsupported_value",
                                param="input_references")
    if "kf2v" in model or "-i2v" in model:
        if "-i2v" in model and "img_url" not in inp:
            raise ProviderError("client", f"{model} is image-to-video: give a first_frame image",
                                code="missing_required_parameter", param="input_references")
        tier = _tier(request)
        if tier is not None:
            params["resolution"] = tier
    else:
        size = native_size(request)
        if size is not None:
            params["size"] = size
    if request.duration is not None:
        params["duration"] = int(request.duration)
    if request.seed is not None:
        params["seed"] = int(request.seed)
    if request.enhance_prompt is not None:
        params["prompt_extend"] = bool(request.enhance_prompt)
    if request.generate_audio is not None and (request.generate_audio or supports_audio(model)):
        params["audio"] = bool(request.generate_audio)
    return {"model": model, "input": inp, "parameters": params}


class WanVideo:
    provider_id = "alibaba"
    can_cancel = True
    poll_interval = 10.0
    max_poll_interval = 30.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        body = await _call(ctx, "POST", CREATE, json=build_body(request), headers={"X-DashScope-Async": "enable"})
        output: dict[str, Any] = v if isinstance(v := body.get("output"), dict) else {}
        task_id = output.get("task_id")
        if not task_id:
            raise ProviderError("upstream", "DashScope returned no output.task_id", code="invalid_upstream_response")
        return Submitted(native_id=str(task_id), status=STATUS.get(str(output.get("task_status")), "queued"))

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        body = await _call(ctx, "GET", f"/api/v1/tasks/{native_id}")
        output: dict[str, Any] = v if isinstance(v := body.get("output"), dict) else {}
        raw = str(output.get("task_status") or "")
        if raw == "UNKNOWN":
            raise ProviderError("not_found", f"DashScope does not know task {native_id} (task ids expire after 24 h)",
                                code="provider_job_not_found")
        status = STATUS.get(raw)
        if status is None:
            raise ProviderError("upstream", f"DashScope returned an unknown task_status {raw!r}",
                                code="invalid_upstream_response")
        if status in ("queued", "in_progress"):
            return Polled(status=status)
        if status in ("failed", "cancelled"):
            code, message = str(output.get("code") or ""), str(output.get("message") or f"the task is {raw}")
            if code.startswith("DataInspectionFailed") or code == "IPInfringementSuspect":
                return Polled(status="failed", error_code="content_policy_violation",
                              error_message=f"DashScope {code}: {message}")
            return Polled(status=status, error_code=code or ("generation_failed" if status == "failed" else status),
                          error_message=f"DashScope {code}: {message}" if code else message)
        url = output.get("video_url")
        if not url:
            raise ProviderError("upstream", "DashScope reports SUCCEEDED without output.video_url",
                                code="invalid_upstream_response")
        usage_in: dict[str, Any] = v if isinstance(v := body.get("usage"), dict) else {}
        seconds = next((usage_in[k] for k in ("output_video_duration", "video_duration", "duration")
                        if isinstance(usage_in.get(k), (int, float))), None)
        request: VideoRequest | None = ctx.extra.get("request")
        if seconds is None and request is not None:
            seconds = request.duration
        usage: dict[str, Any] = {"count": 1}
        if seconds is not None:
            usage["seconds"] = float(seconds)
        return Polled(status="completed", progress=100, usage=usage,
                      outputs=(OutputRef(index=0, url=str(url), mime_type="video/mp4"),))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("upstream", "no video URL recorded for this output", code="invalid_upstream_response")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider=PROVIDER):  # a signed OSS link: no key
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        """Cancel a PENDING task; DashScope refuses once it runs (the error is raised)."""
        await _call(ctx, "POST", f"/api/v1/tasks/{native_id}/cancel")
        return True


adapter = WanVideo()
registry.register("alibaba", VIDEO, adapter)

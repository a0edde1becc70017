"""Runway API video: ``POST /v1/text_to_video`` or ``POST /v1/image_to_video`` (chosen by whether a
first/last frame is given), ``GET /v1/tasks/{id}`` to poll, ``DELETE /v1/tasks/{id}`` to cancel.
Every call sends ``Authorization: Bearer <key>`` and ``X-Runway-Version: 2024-11-06``; Runway rejects
requests without the version header. Outputs are ``output[]`` URLs that expire in 24-48 h and are
downloaded without credentials.

Settings: ``AISTATS_PROVIDER_RUNWAY_API_KEY``, ``AISTATS_PROVIDER_RUNWAY_BASE_URL`` (default
``https://api.dev.runwayml.com``; a trailing ``/v1`` is tolerated) and the shared timing settings
``AISTATS_PROVIDER_RUNWAY_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``.
See docs/providers/runway.md.
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
    ImageInput,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
    error_from_status,
)

PROVIDER = "Runway"
DEFAULT_BASE_URL = "https://api.dev.runwayml.com"
API_VERSION = "2024-11-06"
OUTPUT_TTL_SECONDS = 24 * 3600  # Runway: output URLs expire within 24-48 hours

STATUS = {"PENDING": "queued", "THROTTLED": "queued", "RUNNING": "in_progress", "SUCCEEDED": "completed",
          "FAILED": "failed", "CANCELLED": "cancelled"}

_GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO_RATIOS = ("1280:720", "720:1280", "1920:1080", "1080:1920")
# The pixel ratios ("resolutions") each model accepts, per endpoint (runwayml/sdk-python types).
# Models not listed get the request's own WIDTH:HEIGHT.
RATIOS: dict[str, dict[str, tuple[str, ...]]] = {
    "gen4.5": {"text_to_video": ("1280:720", "720:1280", "1104:832", "832:1104", "960:960"),
               "image_to_video": _GEN4_RATIOS},
    "gen4_turbo": {"image_to_video": _GEN4_RATIOS},
    "veo3.1": {"text_to_video": _VEO_RATIOS, "image_to_video": _VEO_RATIOS},
    "veo3.1_fast": {"text_to_video": _VEO_RATIOS, "image_to_video": _VEO_RATIOS},
    "veo3": {"text_to_video": _VEO_RATIOS, "image_to_video": _VEO_RATIOS},
}
# Models that only animate an image (no text_to_video endpoint).
IMAGE_REQUIRED = frozenset({"gen4_turbo"})
# Models that take a last frame (promptImage as [{uri, position: first|last}]).
LAST_FRAME_MODELS = frozenset({"veo3.1", "veo3.1_fast", "seedance2", "seedance2_fast", "seedance2_mini"})


def _base(ctx: CallContext) -> str:
    base = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key or ''}", "X-Runway-Version": API_VERSION}


# ---------------------------------------------------------------- request mapping


def _aspect(value: str | None) -> float | None:
    if not value or ":" not in value:
        return None
    try:
        w, h = (float(p) for p in value.split(":", 1))
    except ValueError:
        return None
    return w / h if w > 0 and h > 0 else None


def pick_ratio(model: str, endpoint: str, width: int | None, height: int | None, aspect_ratio: str | None) -> str:
    """Runway's pixel-form ``ratio`` for the request: the allowed value closest in shape, then in area."""
    allowed = RATIOS.get(model, {}).get(endpoint)
    if width and height and (not allowed or f"{width}:{height}" in allowed):
        return f"{width}:{height}"
    target = (width / height) if width and height else (_aspect(aspect_ratio) or 16 / 9)
    if not allowed:
        # An unknown model: 720p-class pixels in the requested shape.
        short = 720
        w, h = (round(short * target), short) if target >= 1 else (short, round(short / target))
        return f"{w + w % 2}:{h + h % 2}"
    area = (width or 0) * (height or 0)

    def distance(ratio: str) -> tuple[float, float]:
        w, h = (int(p) for p in ratio.split(":"))
        return abs(math.log((w / h) / target)), abs(w * h - area)

    best = min(allowed, key=distance)
    if distance(best)[0] > 0.05:  # more than ~5 % off in shape: do not silently change the framing
        shape = f"{width}x{height}" if width and height else (aspect_ratio or "16:9")
        raise ProviderError("client", f"Runway {model} ({endpoint}) has no ratio close to {shape}; "
                            f"allowed: {', '.join(allowed)}", code="unsupported_value", param="aspect_ratio")
    return best


def build_body(request: VideoRequest) -> tuple[str, dict[str, Any]]:
    """(endpoint, JSON body) for a unified request. Raises ProviderError("client") for inputs Runway
    cannot take."""
    model = request.model_slug
    first = [i for i in request.images if i.role == "first_frame"]
    last = [i for i in request.images if i.role == "last_frame"]
    other = sorted({i.role for i in request.images} - {"first_frame", "last_frame"})
    if other:
        raise ProviderError("client", f"Runway does not take {', '.join(other)} images; only a first frame "
                            "(and a last frame on some models)", code="unsupported_value", param="input_references")
    if len(first) > 1 or len(last) > 1:
        raise ProviderError("client", "Runway takes at most one first frame and one last frame",
                            code="unsupported_value", param="input_references")
    if last and not first:
        raise ProviderError("client", "Runway needs a first frame to use a last frame", code="unsupported_value",
                            param="input_references")
    if last and model not in LAST_FRAME_MODELS:
        raise ProviderError("client", f"Runway model {model} does not take a last frame", code="unsupported_value",
                            param="input_references")
    if model in IMAGE_REQUIRED and not first:
        raise ProviderError("client", f"Runway model {model} animates an image: give a first_frame image",
                            code="missing_required_parameter", param="input_references")
    endpoint = "image_to_video" if first else "text_to_video"
    body: dict[str, Any] = {"model": model}
    if request.prompt.strip():
        body["promptText"] = request.prompt
    elif endpoint == "text_to_video":
        raise ProviderError("client", "Runway needs a prompt when no image is given", code="missing_required_parameter",
                            param="prompt")
    if first and last:
        body["promptImage"] = [{"uri": _uri(first[0]), "position": "first"}, {"uri": _uri(last[0]), "position": "last"}]
    elif first:
        body["promptImage"] = _uri(first[0])
    body["ratio"] = pick_ratio(model, endpoint, request.width, request.height, request.aspect_ratio)
    if request.duration is not None:
        body["duration"] = int(request.duration)
    if request.seed is not None:
        body["seed"] = int(request.seed)
    if request.negative_prompt:
        body["negativePrompt"] = request.negative_prompt
    if request.generate_audio is not None:
        body["audio"] = bool(request.generate_audio)
    body.update(request.provider_params)  # e.g. contentModeration: {publicFigureThreshold: "low"}
    return endpoint, body


def _uri(image: ImageInput) -> str:
    return _http.image_url(image)


# ---------------------------------------------------------------- errors


def error_from_response(resp: httpx.Response) -> ProviderError:
    """Runway's error body is ``{"error": "...", "issues": [{code, path, message}], "docUrl"}``."""
    message, param = f"Runway answered HTTP {resp.status_code}", None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str) and body["error"]:
            message = body["error"]
        issues = [i for i in body.get("issues") or [] if isinstance(i, dict)]
        if issues:
            parts = []
            for issue in issues[:5]:
                path = ".".join(str(p) for p in issue.get("path") or [])
                parts.append(f"{path}: {issue.get('message')}" if path else str(issue.get("message")))
            message = f"{message} ({'; '.join(parts)})"
            first_path = issues[0].get("path") or []
            param = ".".join(str(p) for p in first_path) or None
    low = message.lower()
    status = resp.status_code
    if status in (400, 402, 403) and "credit" in low:
        return ProviderError("quota", message, status=status, code="provider_quota_exceeded")
    if status == 400 and ("safety" in low or "moderation" in low):
        return ProviderError("content_policy", message, status=status, code="content_policy_violation")
    e = error_from_status(status, message, retry_after=_http.retry_after(resp))
    e.param = param
    return e


async def _call(ctx: CallContext, method: str, path: str, **kw: Any) -> httpx.Response:
    resp = await _http.send(ctx.http, method, f"{_base(ctx)}{path}", provider=PROVIDER, headers=_headers(ctx), **kw)
    if resp.status_code >= 400:
        raise error_from_response(resp)
    return resp


# ---------------------------------------------------------------- status


def polled_from_task(task: dict[str, Any], request: VideoRequest | None = None) -> Polled:
    """Our view of a Runway task object."""
    native = str(task.get("status") or "")
    status = STATUS.get(native)
    if status is None:
        raise ProviderError("upstream", f"Runway returned an unknown task status {native!r}",
                            code="invalid_upstream_response")
    if status == "queued":
        return Polled(status="queued", progress=0)
    if status == "in_progress":
        p = task.get("progress")
        progress = max(0, min(99, int(float(p) * 100))) if isinstance(p, (int, float)) else None
        return Polled(status="in_progress", progress=progress)
    if status == "completed":
        urls = [u for u in task.get("output") or [] if isinstance(u, str) and u]
        if not urls:
            return Polled(status="failed", error_code="no_output",
                          error_message="Runway reported success but no output")
        expires = time.time() + OUTPUT_TTL_SECONDS
        seconds = float(request.duration) if request is not None and request.duration else None
        return Polled(status="completed", progress=100,
                      outputs=tuple(OutputRef(index=i, url=u, mime_type="video/mp4", expires_at=expires,
                                              duration_seconds=seconds) for i, u in enumerate(urls)),
                      usage={"seconds": seconds, "count": len(urls)})
    if status == "failed":
        code = str(task.get("failureCode") or "")
        reason = str(task.get("failure") or "the task failed at Runway")
        message = f"{reason} ({code})" if code else reason
        if code.upper().startswith("SAFETY"):
            return Polled(status="failed", error_code="content_policy_violation", error_message=message)
        return Polled(status="failed", error_code=code or "generation_failed", error_message=message)
    return Polled(status="cancelled", error_code="cancelled", error_message="the task was cancelled at Runway")


# ---------------------------------------------------------------- adapter


class RunwayVideo:
    provider_id = "runway"
    can_cancel = True
    poll_interval = 5.0
    max_poll_interval = 20.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        endpoint, body = build_body(request)
        resp = await _call(ctx, "POST", f"/v1/{endpoint}", json=body)
        data = _http.json_object(resp, PROVIDER)
        task_id = data.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError("upstream", "Runway returned no task id", code="invalid_upstream_response")
        return Submitted(native_id=task_id, status="queued")

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        resp = await _call(ctx, "GET", f"/v1/tasks/{native_id}")
        return polled_from_task(_http.json_object(resp, PROVIDER), ctx.extra.get("request"))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("not_found", "Runway output has no URL", code="output_unavailable")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider=PROVIDER):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        """``DELETE /v1/tasks/{id}`` cancels a running task (or deletes a finished one)."""
        try:
            await _call(ctx, "DELETE", f"/v1/tasks/{native_id}")
        except ProviderError as e:
            if e.kind == "not_found":
                return False
            raise
        return True


adapter = RunwayVideo()
registry.register("runway", VIDEO, adapter)

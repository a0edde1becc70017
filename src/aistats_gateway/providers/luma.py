"""Luma Dream Machine API (Ray video): ``POST /dream-machine/v1/generations``,
``GET /dream-machine/v1/generations/{id}``, ``DELETE /dream-machine/v1/generations/{id}`` (used as
cancel). ``Authorization: Bearer <key>``. Outputs are CDN URLs in ``assets.video``.

Settings:
``AISTATS_PROVIDER_LUMA_API_KEY``
    the Dream Machine API key (``luma-...``).
``AISTATS_PROVIDER_LUMA_BASE_URL``
    default ``https://api.lumalabs.ai`` (the adapter appends ``/dream-machine/v1/...``).
``AISTATS_PROVIDER_LUMA_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``
    see :mod:`aistats_gateway.providers.config`.

Keyframe images must be URLs Luma can fetch ("upload and use your own CDN image URLs, currently
this is the only way to pass an image"): the https URL the caller gave is passed on; an image sent
inline (data URL or upload) is refused with a 400. The API has no idempotency key. See
docs/providers/luma.md.
"""

from __future__ import annotations

import re
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

PROVIDER_ID = "luma"
DEFAULT_BASE_URL = "https://api.lumalabs.ai"
API_PREFIX = "/dream-machine/v1"
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
# Our resolution vocabulary → Luma's. 480p has no Luma tier: the nearest, 540p, is used.
RESOLUTIONS = {"480p": "540p", "540p": "540p", "720p": "720p", "1080p": "1080p", "4k": "4k"}
MIN_PROMPT, MAX_PROMPT = 3, 5000
# Body fields this adapter sets from validated request fields; provider_params may not set them.
CONTROLLED = frozenset({"model", "prompt", "aspect_ratio", "resolution", "duration", "keyframes", "callback_url",
                        "generation_type"})

# Luma state → ours.
STATUS = {"queued": "queued", "dreaming": "in_progress", "completed": "completed", "failed": "failed"}
# failure_reason texts that mean a moderation refusal (Luma's errors page: "Contains blacklisted
# words", "Frame moderation failed", "Advanced prompt moderation failed").
_MODERATION = re.compile(r"moderat|blacklist|content (?:policy|guideline)|nsfw|unsafe", re.I)
_QUOTA = re.compile(r"credit|balance|billing|payment|quota", re.I)


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/") + API_PREFIX


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key or ''}", "Accept": "application/json"}


def detail_text(body: Any) -> str | None:
    """Luma's error text: ``{"detail": "..."}`` or FastAPI's ``{"detail": [{loc, msg}, ...]}``."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts) or None
    err = body.get("error")
    if isinstance(err, dict) and isinstance(message := err.get("message"), str):
        return message
    return message if isinstance(message := body.get("message"), str) else None


def error_for(status: int, body: Any, retry_after: float | None = None) -> ProviderError:
    text = detail_text(body) or f"Luma answered HTTP {status}"
    message = f"Luma: {text}"
    if status in (400, 403) and _QUOTA.search(text):
        return ProviderError("quota", message, status=status, code="provider_quota_exceeded")
    if status == 400 and _MODERATION.search(text):
        return ProviderError("content_policy", message, status=status, code="content_policy_violation")
    e = error_from_status(status, message, retry_after=retry_after)
    if status == 422:
        e.code = "invalid_request_parameter"
    return e


async def _send(ctx: CallContext, method: str, path: str, **kw: Any) -> httpx.Response:
    resp = await _http.send(ctx.http, method, f"{_base(ctx)}{path}", provider="Luma", headers=_headers(ctx), **kw)
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = None
        raise error_for(resp.status_code, body, _http.retry_after(resp))
    return resp


def _json(resp: httpx.Response) -> dict[str, Any]:
    return _http.json_object(resp, "Luma")


# ---------------------------------------------------------------- request mapping


def luma_resolution(request: VideoRequest) -> str | None:
    """Luma's resolution for the request: from ``resolution``, else from the resolved size's short side."""
    if request.resolution:
        value = RESOLUTIONS.get(request.resolution.lower())
        if value is not None:
            return value
    if request.width and request.height:
        short = min(request.width, request.height)
        for limit, value in ((540, "540p"), (720, "720p"), (1080, "1080p")):
            if short <= limit:
                return value
        return "4k"
    if request.resolution:
        raise ProviderError("client", f"Luma renders 540p, 720p, 1080p or 4k, not {request.resolution}",
                            code="unsupported_parameter", param="resolution")
    return None


def luma_aspect_ratio(request: VideoRequest) -> str | None:
    if request.aspect_ratio:
        if request.aspect_ratio not in ASPECT_RATIOS:
            raise ProviderError("client", f"Luma aspect ratios are {', '.join(ASPECT_RATIOS)}",
                                code="unsupported_parameter", param="aspect_ratio")
        return request.aspect_ratio
    if request.width and request.height:
        w, h = request.width, request.height
        return min(ASPECT_RATIOS, key=lambda r: abs(w / h - int(r.split(":")[0]) / int(r.split(":")[1])))
    return None


def build_body(request: VideoRequest) -> dict[str, Any]:
    """The JSON body of a create call. Raises ProviderError(client) for what Luma cannot do."""
    def refuse(message: str, param: str, code: str = "unsupported_parameter") -> ProviderError:
        return ProviderError("client", message, code=code, param=param)

    if request.seed is not None:
        raise refuse("Luma Dream Machine has no seed parameter", "seed")
    if request.sample_count > 1:
        raise refuse("Luma makes one video per request (sample_count 1)", "sample_count")
    if request.negative_prompt:
        raise refuse("Luma Dream Machine has no negative prompt", "negative_prompt")
    if request.generate_audio:
        raise refuse("Luma Dream Machine video generation has no audio", "generate_audio")
    if request.enhance_prompt:
        raise refuse("Luma Dream Machine has no prompt enhancement option", "enhance_prompt")
    for name in ("person_generation", "compression_quality", "resize_mode"):
        if getattr(request, name) is not None:
            raise refuse(f"Luma Dream Machine has no {name} option", name)
    keyframes: dict[str, Any] = {}
    for img in request.images:
        slot = {"first_frame": "frame0", "last_frame": "frame1"}.get(img.role)
        if slot is None or slot in keyframes:
            raise refuse(f"Luma takes one first_frame and one last_frame image (keyframes frame0/frame1), "
                         f"not {img.role!r}", "input_references")
        if not img.url or not img.url.startswith("https://"):
            raise refuse("Luma needs keyframe images as https URLs it can fetch; send the image as "
                         "input_references[].image_url.url = https://..., not inline (data URL or upload)",
                         "input_references", code="image_url_required")
        keyframes[slot] = {"type": "image", "url": img.url}
    for key in request.provider_params:
        if key in CONTROLLED:
            raise refuse(f"'{key}' is set by the gateway from the request's own fields", f"provider_params.{key}")
    body: dict[str, Any] = dict(request.provider_params)  # e.g. loop, concepts
    body["model"] = request.model_slug
    prompt = request.prompt.strip()
    if prompt:
        if not MIN_PROMPT <= len(prompt) <= MAX_PROMPT:
            raise refuse(f"Luma prompts are {MIN_PROMPT} to {MAX_PROMPT} characters", "prompt")
        body["prompt"] = request.prompt
    elif not keyframes:
        raise refuse("Luma needs a prompt when no keyframe image is given", "prompt")
    aspect = luma_aspect_ratio(request)
    if aspect:
        body["aspect_ratio"] = aspect
    resolution = luma_resolution(request)
    if resolution:
        body["resolution"] = resolution
    if request.duration is not None:
        body["duration"] = f"{int(request.duration)}s"  # "5s" / "9s"
    if keyframes:
        body["keyframes"] = keyframes
    return body


def polled_from(gen: dict[str, Any]) -> Polled:
    state = str(gen.get("state") or "")
    status = STATUS.get(state, "in_progress")
    if status == "completed":
        url = (gen.get("assets") or {}).get("video")
        if not url:
            return Polled(status="failed", error_code="no_output",
                          error_message="Luma reported completion but no video")
        duration = _seconds((gen.get("request") or {}).get("duration"))
        return Polled(status="completed", progress=100,
                      outputs=(OutputRef(index=0, url=str(url), mime_type="video/mp4", handle=gen.get("id"),
                                         duration_seconds=duration),),
                      usage={"seconds": duration, "count": 1})
    if status == "failed":
        reason = str(gen.get("failure_reason") or "Luma reports the generation failed")
        code = "content_policy_violation" if _MODERATION.search(reason) else "generation_failed"
        return Polled(status="failed", error_code=code, error_message=f"Luma: {reason}")
    return Polled(status=status)


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.rstrip("s"))
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- the adapter


class LumaVideo:
    provider_id = PROVIDER_ID
    can_cancel = True
    poll_interval = 5.0
    max_poll_interval = 20.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        body = build_body(request)
        gen = _json(await _send(ctx, "POST", "/generations", json=body))
        if not gen.get("id"):
            raise ProviderError("upstream", "Luma returned no generation id", code="invalid_upstream_response")
        polled = polled_from(gen)
        status = polled.status if polled.status in ("queued", "in_progress") else "queued"
        return Submitted(native_id=str(gen["id"]), status=status)

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        return polled_from(_json(await _send(ctx, "GET", f"/generations/{native_id}")))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("not_found", "the Luma output has no URL", code="output_unavailable")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider="Luma"):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        """DELETE the generation: Luma stops (or forgets) it. Already gone counts as done."""
        try:
            await _send(ctx, "DELETE", f"/generations/{native_id}")
        except ProviderError as e:
            if e.kind == "not_found":
                return True
            raise
        return True


adapter = LumaVideo()
registry.register(PROVIDER_ID, VIDEO, adapter)

"""fal.ai queue API, a host for many video models (Kling, MiniMax, Wan, Seedance, Veo, ...).

``POST {queue}/{model_id}`` with ``Authorization: Key <FAL_KEY>`` and the model's own input as JSON
answers ``{request_id, status_url, response_url, cancel_url}``. ``GET {queue}/{app}/requests/{id}/status``
reports ``IN_QUEUE`` / ``IN_PROGRESS`` / ``COMPLETED``; then ``GET {queue}/{app}/requests/{id}`` gives the
result (``video.url``), which may still be an error (422 ``{"detail": [{loc, msg, type}]}`` from the
model, or ``{"detail", "error_type"}`` from the platform). ``PUT .../requests/{id}/cancel`` cancels.
``{app}`` is the model id **without** its subpath (``fal-ai/kling-video`` for
``fal-ai/kling-video/v2.1/master/text-to-video``). The native id is a small JSON object holding the
model id, the app path and the request id.

Each model has its own input schema; :func:`build_input` maps the unified request to the schema of
the model family the catalogue's slug names (durations are strings such as ``"5"``; see FAMILIES).

Settings: ``AISTATS_PROVIDER_FAL_API_KEY`` (the ``key_id:key_secret`` FAL_KEY),
``AISTATS_PROVIDER_FAL_BASE_URL`` (replaces ``https://queue.fal.run``) and the shared timing settings
``AISTATS_PROVIDER_FAL_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``.
See docs/providers/fal.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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

PROVIDER = "fal"
DEFAULT_BASE_URL = "https://queue.fal.run"
OUTPUT_TTL_SECONDS = 7 * 24 * 3600  # fal media links live for days; copied right away anyway
STILL_RUNNING = "Request is still in progress"

STATUS = {"IN_QUEUE": "queued", "IN_PROGRESS": "in_progress", "COMPLETED": "completed", "FAILED": "failed",
          "CANCELED": "cancelled", "CANCELLED": "cancelled"}
POLICY_TYPES = frozenset({"content_policy_violation"})


@dataclass(frozen=True)
class Family:
    """How one family of fal models names the unified fields (None: the model has no such input)."""

    prefix: str
    duration: str = "string"  # "string" ("5"), "seconds" ("5s") or "integer"
    resolution: dict[str, str] | None = None  # our value -> theirs; None: not sent
    resolution_with_image_only: bool = False  # only the image-to-video endpoints take a resolution
    aspect_ratio: bool = True
    seed: bool = True
    negative_prompt: bool = True
    generate_audio: bool = True
    enhance_prompt: str | None = None  # the model's name for prompt expansion/optimisation
    first_frame: str | None = "image_url"
    last_frame: str | None = "end_image_url"


SAME_RES = {"480p": "480p", "720p": "720p", "1080p": "1080p"}
FAMILIES: tuple[Family, ...] = (
    # Kling 3: start/end frames, 720p/1080p, native audio.
    Family("fal-ai/kling-video/v3/", resolution={"720p": "720p", "1080p": "1080p"}, seed=False,
           first_frame="start_image_url"),
    # Kling 2.6: native audio; no seed, no resolution choice.
    Family("fal-ai/kling-video/v2.6/", seed=False, last_frame=None),
    # Kling 1.x-2.5: no audio, no seed, no resolution choice.
    Family("fal-ai/kling-video/", seed=False, generate_audio=False, last_frame=None),
    # MiniMax Hailuo: prompt_optimizer; 512P/768P/1080P only on image-to-video; no ratio, seed, negative.
    Family("fal-ai/minimax/", resolution={"480p": "512P", "720p": "768P", "1080p": "1080P"},
           resolution_with_image_only=True, aspect_ratio=False, seed=False, negative_prompt=False,
           generate_audio=False, enhance_prompt="prompt_optimizer"),
    # Wan 2.5 preview: prompt expansion; audio comes from audio_url, not a switch.
    Family("fal-ai/wan-25-preview/", resolution=SAME_RES, generate_audio=False,
           enhance_prompt="enable_prompt_expansion", last_frame=None),
    Family("fal-ai/wan/", resolution=SAME_RES, enhance_prompt="enable_prompt_expansion"),
    # Seedance (1.x, 1.5 with audio): no negative prompt.
    Family("fal-ai/bytedance/seedance/", resolution=SAME_RES, negative_prompt=False),
    # Veo 3 on fal: durations like "8s", prompt enhancement.
    Family("fal-ai/veo3", duration="seconds", resolution={"720p": "720p", "1080p": "1080p"},
           enhance_prompt="enhance_prompt", last_frame=None),
)
DEFAULT_FAMILY = Family("", resolution=SAME_RES)


def family_for(model_id: str) -> Family:
    return next((f for f in FAMILIES if model_id.startswith(f.prefix)), DEFAULT_FAMILY)


def app_path(model_id: str) -> str:
    """``owner/app`` of a model id: status, result and cancel URLs leave the subpath out."""
    parts = [p for p in model_id.strip("/").split("/") if p]
    return "/".join(parts[:2])


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Key {ctx.api_key or ''}"}


# ---------------------------------------------------------------- native id


def encode_native_id(model_id: str, app: str, request_id: str) -> str:
    return json.dumps({"model": model_id, "app": app, "request_id": request_id}, separators=(",", ":"))


def decode_native_id(native_id: str) -> tuple[str, str, str]:
    """(model id, app path, request id)."""
    try:
        data = json.loads(native_id)
        return str(data["model"]), str(data.get("app") or app_path(data["model"])), str(data["request_id"])
    except (ValueError, KeyError, TypeError):
        raise ProviderError("not_found", f"not a fal request handle: {native_id[:100]!r}",
                            code="provider_job_not_found") from None


def _app_from_url(url: Any, request_id: str) -> str | None:
    """The app path in a returned ``status_url``/``response_url`` (``…/{app}/requests/{id}[/status]``)."""
    if not isinstance(url, str):
        return None
    path = urlsplit(url).path
    marker = f"/requests/{request_id}"
    if marker not in path:
        return None
    app = path.split(marker, 1)[0].strip("/")
    return app or None


# ---------------------------------------------------------------- request mapping


def _ratio(width: int | None, height: int | None) -> str | None:
    if not width or not height:
        return None
    g = math.gcd(width, height)
    return f"{width // g}:{height // g}"


def _resolution(request: VideoRequest) -> str | None:
    if request.resolution:
        return request.resolution.lower()
    if request.width and request.height:
        short = min(request.width, request.height)
        return "480p" if short <= 480 else "720p" if short <= 720 else "1080p"
    return None


def endpoint_for(request: VideoRequest) -> str:
    """The model id to submit to: a catalogue ``…/text-to-video`` slug becomes ``…/image-to-video`` when the
    request animates a first frame."""
    slug = request.model_slug.strip("/")
    if any(i.role == "first_frame" for i in request.images) and slug.endswith("/text-to-video"):
        return slug[: -len("text-to-video")] + "image-to-video"
    return slug


def build_input(request: VideoRequest, model_id: str | None = None) -> dict[str, Any]:
    """The model input (the POST body) for the unified request, following the model family's schema."""
    model_id = model_id or endpoint_for(request)
    fam = family_for(model_id)
    images: dict[str, ImageInput] = {}
    for img in request.images:
        if img.role not in ("first_frame", "last_frame"):
            raise ProviderError("client", f"fal models take a first and a last frame only, not {img.role} images",
                                code="unsupported_value", param="input_references")
        if img.role in images:
            raise ProviderError("client", f"fal takes one {img.role} image", code="unsupported_value",
                                param="input_references")
        images[img.role] = img
    body: dict[str, Any] = {"prompt": request.prompt}
    if "first_frame" in images:
        if fam.first_frame is None:
            raise ProviderError("client", f"fal model {model_id} does not take a first frame",
                                code="unsupported_value", param="input_references")
        body[fam.first_frame] = _http.image_url(images["first_frame"])
    if "last_frame" in images:
        if fam.last_frame is None or "first_frame" not in images:
            raise ProviderError("client", f"fal model {model_id} does not take a last frame"
                                + ("" if fam.last_frame is None else " without a first frame"),
                                code="unsupported_value", param="input_references")
        body[fam.last_frame] = _http.image_url(images["last_frame"])
    if request.duration is not None:
        n = int(request.duration)
        body["duration"] = {"string": str(n), "seconds": f"{n}s"}.get(fam.duration, n)
    if fam.aspect_ratio:
        ratio = request.aspect_ratio or _ratio(request.width, request.height)
        if ratio:
            body["aspect_ratio"] = ratio
    if fam.resolution is not None and (images or not fam.resolution_with_image_only):
        ours = _resolution(request)
        if ours is not None:
            theirs = fam.resolution.get(ours)
            if theirs is None:
                raise ProviderError("client", f"fal model {model_id} offers resolutions "
                                    f"{', '.join(sorted(set(fam.resolution)))}, not {ours}",
                                    code="unsupported_value", param="resolution")
            body["resolution"] = theirs
    if fam.seed and request.seed is not None:
        body["seed"] = int(request.seed)
    if fam.negative_prompt and request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if fam.generate_audio and request.generate_audio is not None:
        body["generate_audio"] = bool(request.generate_audio)
    if fam.enhance_prompt and request.enhance_prompt is not None:
        body[fam.enhance_prompt] = bool(request.enhance_prompt)
    body.update(request.provider_params)  # e.g. cfg_scale, camera_fixed, enable_safety_checker
    return body


# ---------------------------------------------------------------- errors


def _detail_message(detail: Any) -> str | None:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in (item.get("loc") or []) if p != "body")
                msg = str(item.get("msg") or item.get("type") or "invalid")
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts) or None
    return None


def _detail_types(detail: Any) -> list[str]:
    return [str(i.get("type")) for i in detail if isinstance(i, dict) and i.get("type")] \
        if isinstance(detail, list) else []


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def error_from_response(resp: httpx.Response) -> ProviderError:
    body = _body(resp)
    status = resp.status_code
    message = f"fal answered HTTP {status}"
    detail: Any = None
    if isinstance(body, dict):
        detail = body.get("detail")
        err = body.get("error")
        message = _detail_message(detail) or (str(err.get("message")) if isinstance(err, dict) and err.get("message")
                                              else message)
    types = _detail_types(detail)
    low = message.lower()
    if status == 403 and ("balance" in low or "locked" in low or "billing" in low):
        return ProviderError("quota", message, status=status, code="provider_quota_exceeded")
    if POLICY_TYPES & set(types):
        return ProviderError("content_policy", message, status=status, code="content_policy_violation")
    e = error_from_status(status, message, retry_after=_http.retry_after(resp))
    if status == 422 and types:
        e.code = types[0]
    return e


async def _call(ctx: CallContext, method: str, url: str, **kw: Any) -> httpx.Response:
    return await _http.send(ctx.http, method, url, provider=PROVIDER, headers=_headers(ctx), **kw)


# ---------------------------------------------------------------- results


def polled_from_result(resp: httpx.Response, request: VideoRequest | None = None) -> Polled:
    """Our view of ``GET …/requests/{id}`` once the queue says COMPLETED."""
    body = _body(resp)
    if resp.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else None
        error_type = (body.get("error_type") if isinstance(body, dict) else None) or \
            resp.headers.get("x-fal-error-type")
        if detail == STILL_RUNNING:
            return Polled(status="in_progress")
        if resp.status_code in (401, 403, 404, 429) or (resp.status_code >= 500 and not error_type and
                                                         detail is None):
            # Not a verdict on the request: auth, gone, or a proxy/platform hiccup (no fal error body).
            raise error_from_response(resp)
        message = _detail_message(detail) or f"fal answered HTTP {resp.status_code}"
        types = _detail_types(detail)
        if POLICY_TYPES & set(types) or error_type in POLICY_TYPES:
            return Polled(status="failed", error_code="content_policy_violation", error_message=message)
        code = str(error_type or (types[0] if types else "generation_failed"))
        return Polled(status="failed", error_code=code, error_message=message)
    if not isinstance(body, dict):
        raise ProviderError("upstream", "fal returned a result that is not a JSON object",
                            code="invalid_upstream_response")
    videos: list[Any] = v if isinstance(v := body.get("videos"), list) else [body.get("video")]
    refs: list[OutputRef] = []
    seconds = float(request.duration) if request is not None and request.duration else None
    for video in videos:
        if isinstance(video, dict) and isinstance(video.get("url"), str) and video["url"]:
            refs.append(OutputRef(index=len(refs), url=video["url"], mime_type=video.get("content_type") or "video/mp4",
                                  expires_at=time.time() + OUTPUT_TTL_SECONDS,
                                  duration_seconds=video.get("duration") if isinstance(video.get("duration"),
                                                                                       (int, float)) else seconds))
    if not refs:
        return Polled(status="failed", error_code="no_output", error_message="fal returned a result without a video")
    return Polled(status="completed", progress=100, outputs=tuple(refs), usage={"seconds": seconds, "count": len(refs)})


# ---------------------------------------------------------------- adapter


class FalVideo:
    provider_id = "fal"
    can_cancel = True
    poll_interval = 5.0
    max_poll_interval = 20.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        model_id = endpoint_for(request)
        body = build_input(request, model_id)
        resp = await _call(ctx, "POST", f"{_base(ctx)}/{model_id}", json=body)
        if resp.status_code >= 400:
            raise error_from_response(resp)
        data = _http.json_object(resp, PROVIDER)
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("upstream", "fal returned no request_id", code="invalid_upstream_response")
        app = _app_from_url(data.get("status_url"), request_id) or _app_from_url(data.get("response_url"),
                                                                                request_id) or app_path(model_id)
        return Submitted(native_id=encode_native_id(model_id, app, request_id), status="queued")

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        _, app, request_id = decode_native_id(native_id)
        url = f"{_base(ctx)}/{app}/requests/{request_id}"
        resp = await _call(ctx, "GET", f"{url}/status")
        if resp.status_code >= 400:
            raise error_from_response(resp)
        body = _http.json_object(resp, PROVIDER)
        native = str(body.get("status") or "")
        status = STATUS.get(native)
        if status is None:
            raise ProviderError("upstream", f"fal returned an unknown queue status {native!r}",
                                code="invalid_upstream_response")
        if status == "queued":
            return Polled(status="queued", progress=0)
        if status == "in_progress":
            return Polled(status="in_progress")
        if status == "cancelled":
            return Polled(status="cancelled", error_code="cancelled", error_message="the request was cancelled at fal")
        if body.get("error") or status == "failed":
            code = str(body.get("error_type") or "generation_failed")
            return Polled(status="failed", error_code=code,
                          error_message=str(body.get("error") or "the request failed at fal"))
        result = await _call(ctx, "GET", url)
        return polled_from_result(result, ctx.extra.get("request"))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("not_found", "fal output has no URL", code="output_unavailable")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider=PROVIDER):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        """``PUT …/requests/{id}/cancel``: 202 CANCELLATION_REQUESTED; 400 ALREADY_COMPLETED; 404 NOT_FOUND."""
        _, app, request_id = decode_native_id(native_id)
        resp = await _call(ctx, "PUT", f"{_base(ctx)}/{app}/requests/{request_id}/cancel")
        if resp.status_code < 300:
            return True
        if resp.status_code in (400, 404):
            return False
        raise error_from_response(resp)


adapter = FalVideo()
registry.register("fal", VIDEO, adapter)

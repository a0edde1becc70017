"""Runway Gen-4 Image (``POST /v1/text_to_image``, then ``GET /v1/tasks/{id}`` until ``SUCCEEDED``):
``model: gen4_image``, ``promptText``, ``ratio`` in pixels (the ``resolution`` tier's ratio nearest to
``size`` / ``aspect_ratio``; 1080p by default), ``seed``, and ``referenceImages`` ``[{uri, tag}]`` for
an edit (the input images as data URLs). The task's ``output[0]`` URL is downloaded by the caller
(Runway's links expire). Headers, errors and settings as the video adapter (``providers.runway``)."""

from __future__ import annotations

from typing import Any

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers import runway as rw
from aistats_gateway.providers.base import CallContext, ErrorKind, ProviderError
from aistats_gateway.providers.media._hosted import nearest_ratio, poll
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "runway"
# Runway's gen4_image ratios per resolution tier, keyed by aspect ratio.
RATIOS: dict[str, dict[str, str]] = {
    "720p": {"16:9": "1280:720", "9:16": "720:1280", "1:1": "720:720", "4:3": "960:720", "3:4": "720:960",
             "21:9": "1680:720"},
    "1080p": {"16:9": "1920:1080", "9:16": "1080:1920", "1:1": "1080:1080", "4:3": "1440:1080",
              "3:4": "1080:1440", "21:9": "2112:912"},
}
MAX_PROMPT = 1000


def body_for(request: ImageRequest) -> tuple[dict[str, Any], str]:
    tier = str(request.provider_params.get("resolution") or "1080p")
    if tier not in RATIOS:
        raise ProviderError("client", f"Runway Gen-4 Image has no {tier} tier (720p, 1080p)", code="unsupported_value",
                            param="resolution")
    aspect = nearest_ratio(request, tuple(RATIOS[tier]), "16:9")
    if aspect not in RATIOS[tier]:
        raise ProviderError("client", f"Runway Gen-4 Image has no {aspect} ratio", code="unsupported_value",
                            param="aspect_ratio")
    body: dict[str, Any] = {"model": request.model_slug, "promptText": request.prompt[:MAX_PROMPT],
                            "ratio": RATIOS[tier][aspect]}
    if request.provider_params.get("seed") is not None:
        body["seed"] = int(request.provider_params["seed"])
    if request.images:
        body["referenceImages"] = [{"uri": _http.image_url(i), "tag": f"ref{n + 1}"}
                                   for n, i in enumerate(request.images[:3])]
    return body, tier


class RunwayImages:
    provider_id = PROVIDER
    supports_edits = True  # reference images

    async def _send(self, ctx: CallContext, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = await _http.send(ctx.http, method, rw._base(ctx) + path, provider=PROVIDER, headers=rw._headers(ctx),
                                **kw)
        if resp.status_code >= 400:
            raise rw.error_from_response(resp)
        return _http.json_object(resp, PROVIDER)

    async def _one(self, body: dict[str, Any], ctx: CallContext) -> GeneratedImage:
        task = await self._send(ctx, "POST", "/v1/text_to_image", json=body)
        task_id = task.get("id")
        if not isinstance(task_id, str):
            raise ProviderError("upstream", "Runway answered without a task id", code="invalid_upstream_response")

        async def fetch() -> dict[str, Any]:
            return await self._send(ctx, "GET", f"/v1/tasks/{task_id}")

        got = await poll(fetch, lambda t: t.get("status") in ("SUCCEEDED", "FAILED", "CANCELLED"), PROVIDER)
        if got.get("status") != "SUCCEEDED":
            code = str(got.get("failureCode") or "")
            kind: ErrorKind = "content_policy" if code.startswith("SAFETY") else "upstream"
            raise ProviderError(kind, f"Runway: {got.get('failure') or 'the task failed'}", param="prompt"
                                if kind == "content_policy" else None, code="content_policy_violation"
                                if kind == "content_policy" else "provider_task_failed")
        urls = [u for u in got.get("output") or [] if isinstance(u, str)]
        if not urls:
            raise ProviderError("upstream", "Runway's task has no output", code="empty_result")
        return GeneratedImage(url=urls[0], mime_type="image/png")

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        body, tier = body_for(request)
        images = [await self._one(body, ctx) for _ in range(request.n)]
        return ImageResult(tuple(images), {"resolution": tier, "size": body["ratio"].replace(":", "x")})


registry.register(PROVIDER, IMAGES, RunwayImages())

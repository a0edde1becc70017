"""fal.ai image models through fal's queue (``POST {queue}/{model_id}``, ``GET …/requests/{id}/status``,
``GET …/requests/{id}``; ``Authorization: Key <FAL_KEY>``), waited for within the call.

* ``size`` ``WxH`` → ``image_size {width, height}``; ``n`` → ``num_images`` (1-4); ``output_format``
  png|jpeg (webp is refused); ``seed`` passes through. An edit (FLUX Kontext) sends the first image as a
  data URL in ``image_url``.
* The result's image URLs (fal's CDN) are downloaded by the gateway inside the attempt.
* Errors: ``providers.fal.error_from_response`` (``detail`` lists, content policy, exhausted balance).
Settings: ``AISTATS_PROVIDER_FAL_API_KEY``, ``AISTATS_PROVIDER_FAL_BASE_URL`` (default ``https://queue.fal.run``);
``AISTATS_PROVIDER_FAL_IMAGE_TIMEOUT`` seconds to wait (default 300).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers import fal as fal_video
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "fal"
POLL_SECONDS = 0.25


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or fal_video.DEFAULT_BASE_URL).rstrip("/")


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Key {ctx.api_key or ''}"}


def body(request: ImageRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": request.prompt, "num_images": request.n}
    if request.size and request.size != "auto" and "x" in request.size:
        w, h = request.size.lower().split("x")
        out["image_size"] = {"width": int(w), "height": int(h)}
    if request.output_format in ("png", "jpeg"):
        out["output_format"] = request.output_format
    elif request.output_format == "webp":
        raise ProviderError("client", "fal's FLUX models make png or jpeg images", code="unsupported_value",
                            param="output_format")
    if request.provider_params.get("seed") is not None:
        out["seed"] = int(request.provider_params["seed"])
    if request.images:
        out["image_url"] = _http.data_url(request.images[0])
    return out


class FalImages:
    provider_id = PROVIDER
    supports_edits = True  # Kontext; other models refuse image_url-less edits upstream

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        root = _base(ctx)
        app = "/".join(request.model_slug.split("/")[:2])
        resp = await _http.send(ctx.http, "POST", f"{root}/{request.model_slug}", provider=PROVIDER,
                                headers=_headers(ctx), json=body(request))
        if resp.status_code >= 400:
            raise fal_video.error_from_response(resp)
        rid = _http.json_object(resp, PROVIDER).get("request_id")
        if not isinstance(rid, str):
            raise ProviderError("upstream", "fal accepted the request without a request_id",
                                code="invalid_upstream_response")
        deadline = time.monotonic() + float(os.environ.get("AISTATS_PROVIDER_FAL_IMAGE_TIMEOUT", "300"))
        while True:
            st = await _http.send(ctx.http, "GET", f"{root}/{app}/requests/{rid}/status", provider=PROVIDER,
                                  headers=_headers(ctx))
            if st.status_code >= 400:
                raise fal_video.error_from_response(st)
            if _http.json_object(st, PROVIDER).get("status") == "COMPLETED":
                break
            if time.monotonic() > deadline:
                await _http.send(ctx.http, "PUT", f"{root}/{app}/requests/{rid}/cancel", provider=PROVIDER,
                                 headers=_headers(ctx))
                raise ProviderError("unavailable", "fal did not finish the image in time", code="provider_timeout")
            await asyncio.sleep(POLL_SECONDS)
        res = await _http.send(ctx.http, "GET", f"{root}/{app}/requests/{rid}", provider=PROVIDER,
                               headers=_headers(ctx))
        if res.status_code >= 400:
            raise fal_video.error_from_response(res)
        got = _http.json_object(res, PROVIDER)
        images = [GeneratedImage(url=i["url"], mime_type=i.get("content_type") or "image/jpeg")
                  for i in got.get("images") or [] if isinstance(i, dict) and isinstance(i.get("url"), str)]
        if any(got.get("has_nsfw_concepts") or []):
            raise ProviderError("content_policy", "fal flagged the image as unsafe", code="content_policy_violation")
        if not images:
            raise ProviderError("upstream", "fal returned no image", code="empty_result")
        first = got["images"][0]
        w, h = first.get("width"), first.get("height")
        return ImageResult(tuple(images), {"id": rid, "size": f"{w}x{h}" if w and h else None})


registry.register(PROVIDER, IMAGES, FalImages())

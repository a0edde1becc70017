"""BytePlus ModelArk Seedream images (``POST /api/v3/images/generations``, synchronous): ``model``,
``prompt``, ``size`` (``1K``/``2K``/``4K`` or ``WIDTHxHEIGHT``; default 2K), ``seed``,
``response_format: "b64_json"``, ``watermark: false``, ``sequential_image_generation: "disabled"``
and, for an edit, ``image`` (the input images as data URLs). One image per call: ``n`` images are
``n`` calls. JPEG out. Errors and settings as the Seedance video adapter (``providers.byteplus``)."""

from __future__ import annotations

import base64
from typing import Any

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers import byteplus as ark
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "byteplus"


def body_for(request: ImageRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model_slug, "prompt": request.prompt, "response_format": "b64_json",
                            "watermark": False, "sequential_image_generation": "disabled"}
    if request.size and request.size != "auto":
        body["size"] = request.size
    seed = request.provider_params.get("seed")
    if seed is not None:
        body["seed"] = seed
    if request.images:
        urls = [_http.image_url(i) for i in request.images]
        body["image"] = urls[0] if len(urls) == 1 else urls
    return body


class SeedreamImages:
    provider_id = PROVIDER
    supports_edits = True

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        body = body_for(request)
        images: list[GeneratedImage] = []
        sizes: list[str] = []
        for _ in range(request.n):
            got = await ark._call(ctx, "POST", "/api/v3/images/generations", json=body)
            for d in got.get("data") or []:
                if isinstance(d, dict) and (d.get("b64_json") or d.get("url")):
                    images.append(GeneratedImage(data=base64.b64decode(d["b64_json"]) if d.get("b64_json") else None,
                                                 url=d.get("url"), mime_type="image/jpeg"))
                    sizes.append(str(d.get("size") or ""))
        if not images:
            raise ProviderError("upstream", "BytePlus returned no image", code="empty_result")
        return ImageResult(tuple(images), {"size": sizes[0]} if sizes and sizes[0] else {})


registry.register(PROVIDER, IMAGES, SeedreamImages())

"""Luma Photon images (``POST /dream-machine/v1/generations/image``, then ``GET …/generations/{id}``
until ``completed``): ``prompt``, ``model`` (``photon-1``, ``photon-flash-1``), ``aspect_ratio``
(given, else the nearest to ``size``; default 16:9). One image per generation: ``n`` images are ``n``
generations. ``assets.image`` is downloaded by the caller. Edits are not offered (Luma takes image
references by https URL only). Errors and settings as the video adapter (``providers.luma``)."""

from __future__ import annotations

from typing import Any

from aistats_gateway.providers import luma as lm
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ErrorKind, ProviderError
from aistats_gateway.providers.media._hosted import nearest_ratio, poll
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "luma"


def body_for(request: ImageRequest) -> dict[str, Any]:
    prompt = request.prompt[:lm.MAX_PROMPT]
    if len(prompt) < lm.MIN_PROMPT:
        raise ProviderError("client", f"Luma needs a prompt of at least {lm.MIN_PROMPT} characters",
                            code="invalid_value", param="prompt")
    return {"prompt": prompt, "model": request.model_slug,
            "aspect_ratio": nearest_ratio(request, lm.ASPECT_RATIOS, "16:9")}


class LumaImages:
    provider_id = PROVIDER
    supports_edits = False

    async def _one(self, body: dict[str, Any], ctx: CallContext) -> GeneratedImage:
        gen = lm._json(await lm._send(ctx, "POST", "/generations/image", json=body))
        gen_id = gen.get("id")
        if not isinstance(gen_id, str):
            raise ProviderError("upstream", "Luma answered without a generation id", code="invalid_upstream_response")

        async def fetch() -> dict[str, Any]:
            return lm._json(await lm._send(ctx, "GET", f"/generations/{gen_id}"))

        got = await poll(fetch, lambda g: g.get("state") in ("completed", "failed"), PROVIDER)
        if got.get("state") != "completed":
            reason = str(got.get("failure_reason") or "the generation failed")
            kind: ErrorKind = "content_policy" if lm._MODERATION.search(reason) else "upstream"
            raise ProviderError(kind, f"Luma: {reason}", code="content_policy_violation" if kind == "content_policy"
                                else "provider_task_failed", param="prompt" if kind == "content_policy" else None)
        url = (got.get("assets") or {}).get("image")
        if not isinstance(url, str) or not url:
            raise ProviderError("upstream", "Luma's generation has no image", code="empty_result")
        return GeneratedImage(url=url, mime_type="image/jpeg")

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        body = body_for(request)
        return ImageResult(tuple([await self._one(body, ctx) for _ in range(request.n)]), {})


registry.register(PROVIDER, IMAGES, LumaImages())

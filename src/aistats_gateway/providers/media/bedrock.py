"""Amazon Nova Canvas on Bedrock (``POST /model/amazon.nova-canvas-v1:0/invoke``, SigV4 or a Bedrock API
key, as the Converse adapter ``providers.bedrock``): ``taskType: TEXT_IMAGE``,
``textToImageParams {text, negativeText}``, ``imageGenerationConfig {numberOfImages, quality
standard|premium, width, height, seed}`` (size ``WxH``, default 1024x1024) → ``{images: [base64 PNG],
error}``. Edits are not offered here (Nova's inpainting takes a mask prompt this API does not carry)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from aistats_gateway.providers import bedrock as br
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import post_json
from aistats_gateway.providers.media._hosted import dimensions
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "amazon-bedrock"
MAX_PROMPT = 1024


def body_for(request: ImageRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"text": request.prompt[:MAX_PROMPT]}
    if request.provider_params.get("negative_prompt"):
        params["negativeText"] = str(request.provider_params["negative_prompt"])[:MAX_PROMPT]
    w, h = dimensions(request) or (1024, 1024)
    cfg: dict[str, Any] = {"numberOfImages": request.n, "width": w, "height": h,
                           "quality": request.quality if request.quality in ("standard", "premium") else "standard"}
    if request.provider_params.get("seed") is not None:
        cfg["seed"] = int(request.provider_params["seed"])
    return {"taskType": "TEXT_IMAGE", "textToImageParams": params, "imageGenerationConfig": cfg}


class NovaCanvasImages:
    provider_id = PROVIDER
    supports_edits = False

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        url = br._url(ctx, request.model_slug, "invoke")
        body = body_for(request)
        doc = await post_json(ctx, url, body, br._auth(ctx, url, orjson.dumps(body)), PROVIDER)
        if doc.get("error"):
            raise ProviderError("content_policy", f"amazon-bedrock: {doc['error']}", code="content_policy_violation",
                                param="prompt")
        imgs = [GeneratedImage(data=base64.b64decode(b), mime_type="image/png") for b in doc.get("images") or []
                if isinstance(b, str)]
        if not imgs:
            raise ProviderError("upstream", "amazon-bedrock returned no image", code="empty_result")
        cfg = body["imageGenerationConfig"]
        return ImageResult(tuple(imgs), {"quality": cfg["quality"], "size": f"{cfg['width']}x{cfg['height']}"})


registry.register(PROVIDER, IMAGES, NovaCanvasImages())

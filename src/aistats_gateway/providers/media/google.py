"""Google images: Imagen ``:predict`` on the Gemini API (``google-ai-studio``, ``x-goog-api-key``) and
on Vertex AI (``google-vertex``, service-account bearer token), and Gemini image output
(``gemini-*-image*`` models: ``:generateContent`` with ``responseModalities: [TEXT, IMAGE]``).

* ``size`` (OpenAI ``WxH``) becomes the nearest supported ``aspectRatio`` unless ``aspect_ratio`` is
  given; ``n`` is ``sampleCount`` (Imagen, 1-4; Gemini makes one image per call, so n calls);
  ``output_format`` jpeg → ``outputOptions.mimeType image/jpeg`` with ``compressionQuality`` =
  100 − output_compression; ``person_generation`` passes through.
* Errors are Google's envelope, mapped by ``providers.google.common.error``.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.google import ai_studio_video, vertex_video
from aistats_gateway.providers.google import common as g
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

IMAGEN_RATIOS = {"1:1": 1.0, "3:4": 0.75, "4:3": 4 / 3, "9:16": 9 / 16, "16:9": 16 / 9}
GEMINI_RATIOS = {**IMAGEN_RATIOS, "2:3": 2 / 3, "3:2": 1.5, "21:9": 21 / 9}


def aspect(request: ImageRequest, allowed: dict[str, float]) -> str | None:
    given = request.provider_params.get("aspect_ratio")
    if isinstance(given, str) and given:
        return given
    if not request.size or request.size == "auto" or "x" not in request.size:
        return None
    try:
        w, h = (int(x) for x in request.size.lower().split("x"))
    except ValueError:
        return None
    return min(allowed, key=lambda k: abs(allowed[k] - w / h))


def imagen_body(request: ImageRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"sampleCount": request.n}
    ratio = aspect(request, IMAGEN_RATIOS)
    if ratio:
        params["aspectRatio"] = ratio
    if request.provider_params.get("person_generation"):
        params["personGeneration"] = request.provider_params["person_generation"]
    if request.output_format == "jpeg":
        opts: dict[str, Any] = {"mimeType": "image/jpeg"}
        comp = request.provider_params.get("output_compression")
        if comp is not None:
            opts["compressionQuality"] = 100 - int(comp)
        params["outputOptions"] = opts
    elif request.output_format == "webp":
        raise ProviderError("client", "Imagen makes png or jpeg images, not webp", code="unsupported_value",
                            param="output_format")
    return {"instances": [{"prompt": request.prompt}], "parameters": params}


def imagen_result(body: dict[str, Any], who: str) -> ImageResult:
    images = [GeneratedImage(data=base64.b64decode(p["bytesBase64Encoded"]), mime_type=p.get("mimeType", "image/png"))
              for p in body.get("predictions") or [] if isinstance(p, dict) and p.get("bytesBase64Encoded")]
    if not images:
        raise ProviderError("content_policy", f"{who} returned no image (filtered by its safety checks)",
                            code=g.CONTENT_POLICY_CODE, param="prompt")
    return ImageResult(tuple(images), {})


def _gemini_body(request: ImageRequest) -> dict[str, Any]:
    cfg: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    ratio = aspect(request, GEMINI_RATIOS)
    if ratio:
        cfg["imageConfig"] = {"aspectRatio": ratio}
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    for img in request.images:
            parts.append({"inlineData": {"mimeType": img.mime_type, "data": base64.b64encode(img.content).decode()}})
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": cfg}


def _gemini_images(body: dict[str, Any]) -> tuple[list[GeneratedImage], dict[str, Any]]:
    out = []
    for cand in body.get("candidates") or []:
        for part in (cand.get("content") or {}).get("parts") or []:
            inline = part.get("inlineData") if isinstance(part, dict) else None
            if isinstance(inline, dict) and inline.get("data"):
                out.append(GeneratedImage(data=base64.b64decode(inline["data"]),
                                          mime_type=inline.get("mimeType", "image/png")))
    meta = body.get("usageMetadata") or {}
    usage = {"input_tokens": int(meta.get("promptTokenCount") or 0),
             "output_tokens": int(meta.get("candidatesTokenCount") or 0)}
    return out, usage


class StudioImages:
    provider_id = "google-ai-studio"

    @property
    def supports_edits(self) -> bool:
        return True  # Gemini image models edit (an inline image in the request); Imagen refuses below

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        return {"x-goog-api-key": ctx.api_key or ""}

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        base = ai_studio_video.base_url(ctx)
        slug = quote(request.model_slug, safe=".-_")
        if "image" in request.model_slug and request.model_slug.startswith("gemini"):
            return await self._gemini(f"{base}/v1beta/models/{slug}:generateContent", self._headers(ctx), request, ctx)
        if request.images:
            raise ProviderError("client", "Imagen on the Gemini API does not edit images", code="unsupported_value",
                                param="image")
        resp = await g.send(ctx, "POST", f"{base}/v1beta/models/{slug}:predict", self.provider_id,
                            headers=self._headers(ctx), json=imagen_body(request))
        return imagen_result(g.json_body(resp, self.provider_id), self.provider_id)

    async def _gemini(self, url: str, headers: dict[str, str], request: ImageRequest, ctx: CallContext) -> ImageResult:
        images: list[GeneratedImage] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        for _ in range(request.n):
            resp = await g.send(ctx, "POST", url, self.provider_id, headers=headers, json=_gemini_body(request))
            got, u = _gemini_images(g.json_body(resp, self.provider_id))
            if not got:
                raise ProviderError("content_policy", f"{self.provider_id} answered without an image",
                                    code=g.CONTENT_POLICY_CODE, param="prompt")
            images += got[:1]
            usage = {k: usage[k] + u[k] for k in usage}
        return ImageResult(tuple(images), usage)


class VertexImages(StudioImages):
    provider_id = "google-vertex"

    @property
    def supports_edits(self) -> bool:
        return False

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        location = vertex_video._location(ctx)
        project = vertex_video._project(ctx)
        path = (f"/v1/projects/{project}/locations/{location}/publishers/google/models/"
                f"{quote(request.model_slug, safe='.-_')}")
        url = vertex_video.host(ctx, location) + path
        headers = {"Authorization": f"Bearer {await vertex_video.access_token(ctx)}"}
        if request.model_slug.startswith("gemini"):
            return await self._gemini(url + ":generateContent", headers, request, ctx)
        resp = await g.send(ctx, "POST", url + ":predict", self.provider_id, headers=headers,
                            json=imagen_body(request))
        return imagen_result(g.json_body(resp, self.provider_id), self.provider_id)


registry.register("google-ai-studio", IMAGES, StudioImages())
registry.register("google-vertex", IMAGES, VertexImages())

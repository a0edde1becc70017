"""Together images (``POST /v1/images/generations``, Together's own OpenAI-like shape): ``model``,
``prompt``, ``n``, ``width``/``height`` (from ``size``), ``steps``, ``seed``, ``output_format``
``jpeg|png``, ``response_format: "base64"`` (so no expiring URL is involved); the answer's
``data[].b64_json``. Settings: ``AISTATS_PROVIDER_TOGETHER_API_KEY`` / ``…_BASE_URL`` (default
``https://api.together.xyz/v1``)."""

from __future__ import annotations

import base64
from typing import Any

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers.base import CallContext, ProviderError, error_from_status
from aistats_gateway.providers.media._hosted import dimensions
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "together"
DEFAULT_BASE_URL = "https://api.together.xyz/v1"
MIME = {"jpeg": "image/jpeg", "png": "image/png"}


def _base(ctx: CallContext) -> str:
    base = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _error(resp: Any) -> ProviderError:
    message = f"Together answered HTTP {resp.status_code}"
    try:
        err = resp.json().get("error")
        message = (err.get("message") if isinstance(err, dict) else str(err)) or message
    except (ValueError, AttributeError):
        pass
    e = error_from_status(resp.status_code, f"Together: {message}", retry_after=_http.retry_after(resp))
    if resp.status_code == 422 and "nsfw" in message.lower():
        e.kind, e.code = "content_policy", "content_policy_violation"
    return e


class TogetherImages:
    provider_id = PROVIDER
    supports_edits = False

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        fmt = request.output_format if request.output_format in MIME else "jpeg"
        if request.output_format not in (None, "jpeg", "png"):
            raise ProviderError("client", "Together makes jpeg or png images", code="unsupported_value",
                                param="output_format")
        body: dict[str, Any] = {"model": request.model_slug, "prompt": request.prompt, "n": request.n,
                                "response_format": "base64", "output_format": fmt}
        dims = dimensions(request)
        if dims is not None:
            body["width"], body["height"] = dims
        for key in ("seed", "steps", "negative_prompt"):
            if request.provider_params.get(key) is not None:
                body[key] = request.provider_params[key]
        resp = await _http.send(ctx.http, "POST", f"{_base(ctx)}/images/generations", provider=PROVIDER,
                                headers={"Authorization": f"Bearer {ctx.api_key or ''}"}, json=body)
        if resp.status_code != 200:
            raise _error(resp)
        data = _http.json_object(resp, PROVIDER).get("data") or []
        images = [GeneratedImage(data=base64.b64decode(d["b64_json"]) if d.get("b64_json") else None,
                                 url=d.get("url"), mime_type=MIME[fmt]) for d in data if isinstance(d, dict)]
        if not images:
            raise ProviderError("upstream", "Together returned no image", code="empty_result")
        size = f"{dims[0]}x{dims[1]}" if dims else None
        return ImageResult(tuple(images), {"size": size} if size else {})


registry.register(PROVIDER, IMAGES, TogetherImages())

"""xAI images (``POST /v1/images/generations``, OpenAI-shaped): model, prompt, n, ``response_format``
``b64_json`` (so no expiring URL is involved). ``size``/``quality``/``style`` are not sent: xAI refuses
them. Images are JPEG. Settings: ``AISTATS_PROVIDER_X_AI_API_KEY`` / ``…_BASE_URL`` (default
``https://api.x.ai/v1``)."""

from __future__ import annotations

import base64
from typing import Any

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers.base import CallContext, ProviderError, error_from_status
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "x-ai"
DEFAULT_BASE_URL = "https://api.x.ai/v1"


def _base(ctx: CallContext) -> str:
    base = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def error(status: int, body: Any) -> ProviderError:
    message = str(body.get("error") or body.get("code") or f"x-ai answered HTTP {status}") if isinstance(
        body, dict) else f"x-ai answered HTTP {status}"
    if status == 400 and "api key" in message.lower():
        return ProviderError("auth", message, status=status, code="provider_auth_failed")
    if status == 400 and any(w in message.lower() for w in ("moderation", "safety", "policy")):
        return ProviderError("content_policy", message, status=status, code="content_policy_violation")
    return error_from_status(status, message)


class XaiImages:
    provider_id = PROVIDER
    supports_edits = False

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        body: dict[str, Any] = {"model": request.model_slug, "prompt": request.prompt, "n": request.n,
                                "response_format": "b64_json"}
        if request.provider_params.get("user"):
            body["user"] = request.provider_params["user"]
        resp = await _http.send(ctx.http, "POST", f"{_base(ctx)}/images/generations", provider=PROVIDER,
                                headers={"Authorization": f"Bearer {ctx.api_key or ''}"}, json=body)
        if resp.status_code != 200:
            try:
                got: Any = resp.json()
            except ValueError:
                got = {}
            raise error(resp.status_code, got)
        data = _http.json_object(resp, PROVIDER).get("data") or []
        images = [GeneratedImage(data=base64.b64decode(d["b64_json"]) if d.get("b64_json") else None,
                                 url=d.get("url"), mime_type="image/jpeg", revised_prompt=d.get("revised_prompt"))
                  for d in data if isinstance(d, dict)]
        if not images:
            raise ProviderError("upstream", "x-ai returned no image", code="empty_result")
        return ImageResult(tuple(images), {})


registry.register(PROVIDER, IMAGES, XaiImages())

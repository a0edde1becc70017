"""Google AI Studio (the Gemini API) — Veo video generation.

``POST {base}/v1beta/models/{model}:predictLongRunning`` (header ``x-goog-api-key``) starts an operation
``models/{model}/operations/{id}``; ``GET {base}/v1beta/{name}`` polls it; each finished sample is a
``generateVideoResponse.generatedSamples[].video.uri`` downloaded with the key (the API redirects to a
signed URL; the key is not sent there). The Gemini API has no cancel for these operations, so cancel only
stops polling. ``generateAudio``, ``compressionQuality``, ``resizeMode`` and ``seed`` are Vertex-only and
are never sent. See docs/providers/google.md.

Settings: ``AISTATS_PROVIDER_GOOGLE_AI_STUDIO_API_KEY``, ``AISTATS_PROVIDER_GOOGLE_AI_STUDIO_BASE_URL``
(default ``https://generativelanguage.googleapis.com``; a trailing ``/v1beta`` is accepted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from aistats_gateway.providers import config, registry
from aistats_gateway.providers.base import (
    VIDEO,
    CallContext,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
)
from aistats_gateway.providers.google import common as g

PROVIDER_ID = "google-ai-studio"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_HOST = "generativelanguage.googleapis.com"
WHO = "the Gemini API"


def base_url(ctx: CallContext) -> str:
    return g.strip_version(ctx.base_url or DEFAULT_BASE_URL, "v1beta", "v1")


def _key(ctx: CallContext) -> dict[str, str]:
    if not ctx.api_key:
        raise ProviderError("auth", f"no API key: set {config.env_prefix(PROVIDER_ID)}API_KEY",
                            code="provider_auth_failed")
    return {"x-goog-api-key": ctx.api_key}


def build_body(request: VideoRequest) -> dict[str, Any]:
    """The ``predictLongRunning`` body for the Gemini API (Vertex-only fields left out)."""
    params = g.common_parameters(request)
    params.update(request.provider_params)
    return {"instances": [g.instance(request)], "parameters": params}


class GoogleAIStudioVideo:
    provider_id = PROVIDER_ID
    can_cancel = False  # the Gemini API has no cancel for Veo operations
    poll_interval = 10.0
    max_poll_interval = 30.0
    deadline_seconds = 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        url = f"{base_url(ctx)}/v1beta/models/{quote(request.model_slug, safe='.-_')}:predictLongRunning"
        resp = await g.send(ctx, "POST", url, WHO, json=build_body(request), headers=_key(ctx))
        op = g.json_body(resp, WHO)
        name = op.get("name")
        if not isinstance(name, str) or "/operations/" not in name:
            raise ProviderError("upstream", f"{WHO} returned no operation name", code="invalid_upstream_response")
        return Submitted(native_id=name, status="in_progress" if op.get("done") is False else "queued")

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        url = f"{base_url(ctx)}/v1beta/{quote(native_id, safe='/.-_')}"
        op = g.json_body(await g.send(ctx, "GET", url, WHO, headers=_key(ctx)), WHO)
        request = ctx.extra.get("request")
        seconds = float(request.duration) if request is not None and request.duration is not None else None
        return g.polled(op, WHO, seconds)

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("not_found", "the operation named no video to download", code="no_output")
        base = base_url(ctx)
        url = urljoin(base + "/v1beta/", ref.url)
        # The key goes only to the API itself (the configured base, or Google's host), never elsewhere.
        secret_origin = url if (g.same_origin(url, base) or urlsplit(url).hostname == API_HOST) else None
        try:
            async for chunk in g.stream(ctx, url, WHO, headers=_key(ctx), secret_origin=secret_origin):
                yield chunk
        except ProviderError as e:
            # The Files API answers a file that is gone (they live two days) with 403 "... or it may not exist".
            if e.status == 403 and "may not exist" in e.message:
                raise ProviderError("not_found", e.message, status=403, code="output_expired") from None
            raise

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return False


adapter = GoogleAIStudioVideo()
registry.register(PROVIDER_ID, VIDEO, adapter)

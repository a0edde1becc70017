"""OpenAI Images and Audio: ``/v1/images/generations`` (JSON), ``/v1/images/edits`` (multipart),
``/v1/audio/speech`` (streamed bytes), ``/v1/audio/transcriptions`` and ``/translations`` (multipart).

* GPT Image models (slug ``gpt-image-*``) always answer ``b64_json`` and take background,
  output_format, output_compression, moderation, input_fidelity and streamed partial images; DALL·E
  takes style and ``response_format`` (the adapter asks for ``b64_json`` so no expiring URL is
  involved). The reported ``size``/``quality``/token ``usage`` come back in ``ImageResult.usage``.
* Errors: OpenAI's ``{"error": {message, type, param, code}}``, mapped by status
  (``base.error_from_status``); a moderation block (``moderation_blocked`` / content policy) is
  ``content_policy``.
Settings: ``AISTATS_PROVIDER_OPENAI_API_KEY``, ``AISTATS_PROVIDER_OPENAI_BASE_URL``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers.base import CallContext, ProviderError, error_from_status
from aistats_gateway.providers.media.types import PartialImage
from aistats_gateway.providers.protocols import (
    IMAGES,
    SPEECH,
    TRANSCRIPTION,
    GeneratedImage,
    ImageRequest,
    ImageResult,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROVIDER = "openai"
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def base(ctx: CallContext, default: str = DEFAULT_BASE_URL) -> str:
    return (ctx.base_url or default).rstrip("/")


def headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key or ''}"}


def error(resp: httpx.Response, provider: str = PROVIDER) -> ProviderError:
    try:
        err = resp.json().get("error") or {}
    except ValueError:
        err = {}
    if not isinstance(err, dict):
        err = {"message": str(err)}
    message = str(err.get("message") or f"{provider} answered HTTP {resp.status_code}")
    code = err.get("code") if isinstance(err.get("code"), str) else None
    if code in ("moderation_blocked", "content_policy_violation") or err.get("type") == "image_generation_user_error":
        return ProviderError("content_policy", message, status=resp.status_code, code=code or "content_policy")
    e = error_from_status(resp.status_code, message, code=code, retry_after=_http.retry_after(resp))
    e.param = err.get("param") if isinstance(err.get("param"), str) else None
    return e


def _gpt_image(slug: str) -> bool:
    return slug.startswith("gpt-image") or slug.startswith("chatgpt-image")


def image_fields(request: ImageRequest) -> dict[str, Any]:
    p = request.provider_params
    out: dict[str, Any] = {"model": request.model_slug, "prompt": request.prompt, "n": request.n}
    if request.size:
        out["size"] = request.size
    if request.quality:
        out["quality"] = request.quality
    if _gpt_image(request.model_slug):
        for name, value in (("background", request.background), ("output_format", request.output_format),
                            ("output_compression", p.get("output_compression")), ("moderation", p.get("moderation")),
                            ("user", p.get("user"))):
            if value is not None:
                out[name] = value
        if request.images and p.get("input_fidelity"):
            out["input_fidelity"] = p["input_fidelity"]
    else:
        out["response_format"] = "b64_json"
        if p.get("style"):
            out["style"] = p["style"]
        if p.get("user"):
            out["user"] = p["user"]
    return out


def _result(body: dict[str, Any], request: ImageRequest) -> ImageResult:
    fmt = body.get("output_format") or request.output_format or "png"
    mime = _MIME.get(str(fmt), "image/png")
    images = []
    for item in body.get("data") or []:
        if not isinstance(item, dict):
            continue
        data = base64.b64decode(item["b64_json"]) if item.get("b64_json") else None
        images.append(GeneratedImage(data=data, url=item.get("url"), mime_type=mime,
                                     revised_prompt=item.get("revised_prompt")))
    if not images:
        raise ProviderError("upstream", "openai returned no image", code="empty_result")
    usage: dict[str, Any] = {k: body[k] for k in ("size", "quality", "background") if body.get(k)}
    u = body.get("usage")
    if isinstance(u, dict):
        usage |= {k: u[k] for k in ("input_tokens", "output_tokens", "total_tokens", "input_tokens_details") if k in u}
    return ImageResult(tuple(images), usage)


def _form(request: ImageRequest) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in image_fields(request).items()}
    field = "image[]" if len(request.images) > 1 else "image"
    files = [(field, (f"image-{i}.{_EXT.get(img.mime_type, 'png')}", img.content, img.mime_type))
             for i, img in enumerate(request.images)]
    if request.mask is not None:
        files.append(("mask", ("mask.png", request.mask.content, request.mask.mime_type)))
    return data, files


class OpenAIImages:
    provider_id = PROVIDER
    supports_edits = True

    def __init__(self, provider: str = PROVIDER, default_base: str = DEFAULT_BASE_URL) -> None:
        self.provider_id = provider
        self.default_base = default_base

    def _args(self, request: ImageRequest, ctx: CallContext, stream: bool = False) -> tuple[str, dict[str, Any]]:
        root = base(ctx, self.default_base)
        partials = int(request.provider_params.get("partial_images", 0))
        if request.images:
            data, files = _form(request)
            if stream:
                data |= {"stream": "true", "partial_images": str(partials)}
            return f"{root}/images/edits", {"headers": headers(ctx), "data": data, "files": files}
        body = image_fields(request)
        if stream:
            body |= {"stream": True, "partial_images": partials}
        return f"{root}/images/generations", {"headers": headers(ctx), "json": body}

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        url, kw = self._args(request, ctx)
        resp = await _http.send(ctx.http, "POST", url, provider=self.provider_id, **kw)
        if resp.status_code != 200:
            raise error(resp, self.provider_id)
        return _result(_http.json_object(resp, self.provider_id), request)

    async def stream(self, request: ImageRequest, ctx: CallContext) -> AsyncIterator[PartialImage | ImageResult]:
        if not _gpt_image(request.model_slug):
            yield await self.generate(request, ctx)
            return
        url, kw = self._args(request, ctx, stream=True)
        finals: list[dict[str, Any]] = []
        try:
            async with ctx.http.stream("POST", url, **kw) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise error(resp, self.provider_id)
                async for line in resp.aiter_lines():
                    event = _event(line)
                    kind = str(event.get("type", "")) if event else ""
                    if event and kind.endswith("partial_image"):
                        fmt = _MIME.get(str(event.get("output_format") or "png"), "image/png")
                        yield PartialImage(int(event.get("partial_image_index", 0)),
                                           base64.b64decode(event["b64_json"]), fmt)
                    elif event and kind.endswith("completed"):
                        finals.append(event)
        except httpx.TransportError as e:
            raise ProviderError("unavailable", f"{self.provider_id}'s image stream broke off: {e}",
                                code="provider_unreachable") from e
        if not finals:
            raise ProviderError("upstream", "openai's image stream ended without a completed image",
                                code="incomplete_stream")
        last = finals[-1]
        yield _result({"data": [{"b64_json": e["b64_json"]} for e in finals], **{k: last.get(k) for k in (
            "size", "quality", "background", "output_format", "usage")}}, request)


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("data:"):
        return None
    try:
        got = json.loads(line[5:].strip())
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


class OpenAISpeech:
    def __init__(self, provider: str = PROVIDER, default_base: str = DEFAULT_BASE_URL) -> None:
        self.provider_id = provider
        self.default_base = default_base

    async def speech(self, request: SpeechRequest, ctx: CallContext) -> AsyncIterator[bytes]:
        body: dict[str, Any] = {"model": request.model_slug, "input": request.input, "voice": request.voice,
                                "response_format": request.response_format}
        if request.speed is not None:
            body["speed"] = request.speed
        if request.instructions:
            body["instructions"] = request.instructions
        try:
            async with ctx.http.stream("POST", f"{base(ctx, self.default_base)}/audio/speech", json=body,
                                       headers=headers(ctx)) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise error(resp, self.provider_id)
                async for chunk in resp.aiter_bytes():
                    yield chunk
        except httpx.TimeoutException as e:
            raise ProviderError("unavailable", f"{self.provider_id} timed out", code="provider_timeout") from e
        except httpx.TransportError as e:
            raise ProviderError("unavailable", f"cannot reach {self.provider_id}: {e}",
                                code="provider_unreachable") from e


class OpenAITranscription:
    def __init__(self, provider: str = PROVIDER, default_base: str = DEFAULT_BASE_URL, *,
                 translates: bool = True) -> None:
        self.provider_id = provider
        self.default_base = default_base
        self.translates = translates

    async def transcribe(self, request: TranscriptionRequest, ctx: CallContext) -> TranscriptionResult:
        fmt = request.response_format
        upstream_fmt = fmt if fmt in ("json", "text", "verbose_json", "srt", "vtt") else "json"
        data: dict[str, str | list[str]] = {"model": request.model_slug, "response_format": upstream_fmt}
        if request.prompt:
            data["prompt"] = request.prompt
        if request.temperature is not None:
            data["temperature"] = str(request.temperature)
        if request.task == "transcribe":
            if request.language:
                data["language"] = request.language
            if request.timestamp_granularities:
                data["timestamp_granularities[]"] = list(request.timestamp_granularities)
        path = "transcriptions" if request.task == "transcribe" else "translations"
        resp = await _http.send(ctx.http, "POST", f"{base(ctx, self.default_base)}/audio/{path}",
                                provider=self.provider_id, headers=headers(ctx), data=data,
                                files={"file": (request.filename, request.audio, request.mime_type)})
        if resp.status_code != 200:
            raise error(resp, self.provider_id)
        if upstream_fmt in ("text", "srt", "vtt"):
            return TranscriptionResult(resp.text.strip() if upstream_fmt == "text" else resp.text,
                                       details={"raw": resp.text})
        body = _http.json_object(resp, self.provider_id)
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        details: dict[str, Any] = {k: body[k] for k in ("language", "duration", "segments", "words") if k in body}
        return TranscriptionResult(str(body.get("text") or ""), usage or {}, details)


# OpenAI-compatible transcription APIs (same multipart request and JSON answer)
registry.register("groq", TRANSCRIPTION, OpenAITranscription("groq", "https://api.groq.com/openai/v1"))
registry.register("mistral", TRANSCRIPTION, OpenAITranscription("mistral", "https://api.mistral.ai/v1",
                                                                       translates=False))
registry.register(PROVIDER, IMAGES, OpenAIImages())
registry.register(PROVIDER, SPEECH, OpenAISpeech())
registry.register(PROVIDER, TRANSCRIPTION, OpenAITranscription())

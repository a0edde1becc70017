"""ElevenLabs text-to-speech (``POST /v1/text-to-speech/{voice_id}/stream``) and speech-to-text
(``POST /v1/speech-to-text``), with ``xi-api-key``.

* Formats: ``mp3`` → ``mp3_44100_128``, ``opus`` → ``opus_48000_64``, ``pcm`` → ``pcm_24000`` (as
  OpenAI's pcm), ``wav`` → ``pcm_24000`` behind a streamed RIFF header (sizes "to the end"). ``speed``
  goes in ``voice_settings``; the voice is an ElevenLabs voice id.
* Transcription: ``timestamps_granularity`` ``word`` unless the client asked for none; the words become
  OpenAI ``words`` ({word, start, end}) and one segment per sentence. No translation endpoint.
* Errors ``{"detail": {status, message}}`` or FastAPI 422 lists, mapped by HTTP status.
Settings: ``AISTATS_PROVIDER_ELEVEN_LABS_API_KEY``, ``AISTATS_PROVIDER_ELEVEN_LABS_BASE_URL``
(default ``https://api.elevenlabs.io``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from aistats_gateway.media import audio_codec
from aistats_gateway.providers import _http, registry
from aistats_gateway.providers.base import CallContext, ProviderError, error_from_status
from aistats_gateway.providers.protocols import (
    SPEECH,
    TRANSCRIPTION,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
)

PROVIDER = "eleven-labs"
DEFAULT_BASE_URL = "https://api.elevenlabs.io"
FORMATS = {"mp3": "mp3_44100_128", "opus": "opus_48000_64", "pcm": "pcm_24000", "wav": "pcm_24000"}


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


def error(resp: httpx.Response) -> ProviderError:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, dict):
        message, code = str(detail.get("message") or detail), str(detail.get("status") or "") or None
    elif isinstance(detail, list) and detail and isinstance(detail[0], dict):
        message, code = "; ".join(str(d.get("msg")) for d in detail), "invalid_request"
    else:
        message, code = f"eleven-labs answered HTTP {resp.status_code}", None
    if resp.status_code in (400, 422):
        return ProviderError("client", message, status=resp.status_code, code=code)
    return error_from_status(resp.status_code, message, code=code, retry_after=_http.retry_after(resp))


class ElevenLabsSpeech:
    provider_id = PROVIDER

    async def speech(self, request: SpeechRequest, ctx: CallContext) -> AsyncIterator[bytes]:
        fmt = FORMATS.get(request.response_format)
        if fmt is None:
            raise ProviderError("client", f"eleven-labs cannot produce {request.response_format}",
                                code="unsupported_format", param="response_format")
        body: dict[str, Any] = {"text": request.input, "model_id": request.model_slug}
        if request.speed is not None:
            body["voice_settings"] = {"speed": request.speed}
        url = f"{_base(ctx)}/v1/text-to-speech/{request.voice}/stream"
        try:
            async with ctx.http.stream("POST", url, params={"output_format": fmt}, json=body,
                                       headers={"xi-api-key": ctx.api_key or ""}) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise error(resp)
                if request.response_format == "wav":
                    yield audio_codec.wav_header(24_000)
                async for chunk in resp.aiter_bytes():
                    yield chunk
        except httpx.TimeoutException as e:
            raise ProviderError("unavailable", "eleven-labs timed out", code="provider_timeout") from e
        except httpx.TransportError as e:
            raise ProviderError("unavailable", f"cannot reach eleven-labs: {e}", code="provider_unreachable") from e


def _segments(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    segs: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    for w in words:
        cur.append(w)
        if str(w["word"]).endswith((".", "?", "!")):
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    return [{"id": i, "start": s[0]["start"], "end": s[-1]["end"], "text": " ".join(str(w["word"]) for w in s)}
            for i, s in enumerate(segs)]


class ElevenLabsTranscription:
    provider_id = PROVIDER
    translates = False

    async def transcribe(self, request: TranscriptionRequest, ctx: CallContext) -> TranscriptionResult:
        data = {"model_id": request.model_slug, "timestamps_granularity": "word"}
        if request.language:
            data["language_code"] = request.language
        resp = await _http.send(ctx.http, "POST", f"{_base(ctx)}/v1/speech-to-text", provider=PROVIDER,
                                headers={"xi-api-key": ctx.api_key or ""}, data=data,
                                files={"file": (request.filename, request.audio, request.mime_type)})
        if resp.status_code != 200:
            raise error(resp)
        body = _http.json_object(resp, PROVIDER)
        words = [{"word": w["text"], "start": w.get("start"), "end": w.get("end")}
                 for w in body.get("words") or [] if isinstance(w, dict) and w.get("type") == "word"]
        details: dict[str, Any] = {"language": body.get("language_code")}
        if words:
            details["segments"] = _segments(words)
            if "word" in request.timestamp_granularities:
                details["words"] = words
        return TranscriptionResult(str(body.get("text") or ""), {}, details)


registry.register(PROVIDER, SPEECH, ElevenLabsSpeech())
registry.register(PROVIDER, TRANSCRIPTION, ElevenLabsTranscription())

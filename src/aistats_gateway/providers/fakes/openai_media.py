"""Fake OpenAI Images and Audio APIs (platform.openai.com API reference: images, audio), mounted on the
OpenAI fake (``media_routes``) with its own state at ``app.state.media``.

* ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart ``image`` /
  ``image[]`` parts, optional ``mask``). GPT Image models (``gpt-image-*``): size
  ``auto|1024x1024|1536x1024|1024x1536``, quality ``auto|low|medium|high``, background, output_format
  ``png|jpeg|webp``, output_compression (jpeg/webp only), ``stream`` + ``partial_images`` 0-3 (SSE
  ``image_generation.partial_image`` … ``image_generation.completed``, ``image_edit.*`` for edits),
  always ``b64_json`` (``response_format`` is refused), token ``usage``. DALL·E 2/3: ``response_format``
  ``url|b64_json`` (urls served here under ``/v1/_fake/images/`` and expiring), dall-e-3 style/quality
  and ``n=1``, ``revised_prompt``.
* ``POST /v1/audio/speech`` (JSON): tts-1, tts-1-hd, gpt-4o-mini-tts; voices; ``response_format``
  mp3|opus|aac|flac|wav|pcm, real audio streamed in chunks (chunked transfer); ``speed``;
  ``instructions`` and ``stream_format: sse`` (``speech.audio.delta`` / ``speech.audio.done``) only
  for gpt-4o-mini-tts.
* ``POST /v1/audio/transcriptions`` and ``/translations`` (multipart ``file``): whisper-1 (json, text,
  srt, verbose_json, vtt; ``timestamp_granularities[]`` word/segment with verbose_json) and
  gpt-4o(-mini)-transcribe (json, text; token usage). The text is what this fake's speech endpoint
  said for those exact bytes, else a sentence naming the duration. Undecodable audio → 400.

Faults: ``fail_next`` requests answer ``fail_status``; ``break_speech_after`` cuts the next speech stream
after that many 4 KiB chunks; ``chunk_delay`` paces speech chunks; ``requests`` records each call.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from aistats_gateway.media import audio_codec, procedural

from ._common import RecordedRequest
from .openai import ApiError

GPT_IMAGE = ("gpt-image-1", "gpt-image-1.5", "gpt-image-1-mini")
GPT_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
DALLE_SIZES = {"dall-e-2": ("256x256", "512x512", "1024x1024"), "dall-e-3": ("1024x1024", "1792x1024", "1024x1792")}
TTS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse")
TTS1_VOICES = ("alloy", "ash", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
WHISPER_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
URL_TTL = 3600.0


@dataclass
class MediaState:
    api_key: str = "sk-test"
    fail_next: int = 0
    fail_status: int = 503
    break_speech_after: int | None = None  # chunks of audio sent before the connection is cut (once)
    chunk_delay: float = 0.0  # seconds between speech chunks
    requests: list[RecordedRequest] = field(default_factory=list)
    transcripts: dict[str, str] = field(default_factory=dict)  # sha256 of audio bytes → its text
    files: dict[str, tuple[bytes, str, float]] = field(default_factory=dict)  # url images: (data, mime, expiry)
    clock: Callable[[], float] = time.time
    # transcription models → their response formats (OpenAI's by default; Groq/Mistral mounts set theirs)
    stt_models: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "whisper-1": WHISPER_FORMATS, "gpt-4o-transcribe": ("json", "text"),
        "gpt-4o-mini-transcribe": ("json", "text")})
    translate_models: tuple[str, ...] = ("whisper-1",)


def _bad(param: str | None, message: str, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _one_of(value: Any, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        raise _bad(param, f"Invalid value: '{value}'. Supported values are: "
                   + ", ".join(f"'{a}'" for a in allowed) + ".")
    return str(value)


def _int(value: Any, param: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise _bad(param, f"Invalid type for '{param}': expected an integer.", "invalid_type") from None
    if not lo <= n <= hi:
        raise _bad(param, f"Invalid '{param}': {n}. Expected a value between {lo} and {hi}.")
    return n


def _size(model: str, body: dict[str, Any]) -> tuple[int, int, str]:
    if model in GPT_IMAGE:
        size = _one_of(body.get("size") or "auto", GPT_SIZES, "size")
        size = "1024x1024" if size == "auto" else size
    else:
        size = _one_of(body.get("size") or "1024x1024", DALLE_SIZES[model], "size")
    w, h = size.split("x")
    return int(w), int(h), size


def _tokens(text: str) -> int:
    return max(1, len(text.encode()) // 4)


_OUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}


class _Image:
    """One validated images request."""

    def __init__(self, body: dict[str, Any], *, edit: bool) -> None:
        model = str(body.get("model") or ("gpt-image-1" if edit else "dall-e-2"))
        if model not in GPT_IMAGE and model not in DALLE_SIZES:
            raise ApiError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found")
        if edit and model == "dall-e-3":
            raise _bad("model", "dall-e-3 does not support image edits.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _bad("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
        limit = 32000 if model in GPT_IMAGE else 4000 if model == "dall-e-3" else 1000
        if len(prompt) > limit:
            raise _bad("prompt", f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}.")
        self.model, self.prompt, self.gpt = model, prompt, model in GPT_IMAGE
        self.n = _int(body.get("n", 1), "n", 1, 10 if model != "dall-e-3" else 1)
        self.width, self.height, self.size = _size(model, body)
        if self.gpt:
            for p in ("response_format", "style"):
                if body.get(p) is not None:
                    raise ApiError(400, f"Unknown parameter: '{p}'.", param=p, code="unknown_parameter")
            self.quality = _one_of(body.get("quality") or "auto", ("auto", "low", "medium", "high"), "quality")
            self.quality = "medium" if self.quality == "auto" else self.quality
            self.background = _one_of(body.get("background") or "auto", ("auto", "transparent", "opaque"),
                                      "background")
            self.format = _one_of(body.get("output_format") or "png", ("png", "jpeg", "webp"), "output_format")
            comp = body.get("output_compression")
            if comp is not None and self.format == "png":
                raise _bad("output_compression", "output_compression is only supported for jpeg and webp.")
            self.compression = None if comp is None else _int(comp, "output_compression", 0, 100)
            if self.background == "transparent" and self.format == "jpeg":
                raise _bad("background", "Transparent background requires output_format png or webp.")
            self.response_format = "b64_json"
            self.stream = str(body.get("stream", "false")).lower() == "true"
            self.partials = _int(body.get("partial_images", 0), "partial_images", 0, 3)
        else:
            q = ("standard", "hd") if model == "dall-e-3" else ("standard",)
            self.quality = _one_of(body.get("quality") or "standard", q, "quality")
            if model == "dall-e-3":
                _one_of(body.get("style") or "vivid", ("vivid", "natural"), "style")
            for p in ("background", "output_format", "output_compression", "stream", "partial_images"):
                if body.get(p) is not None:
                    raise ApiError(400, f"Unknown parameter: '{p}'.", param=p, code="unknown_parameter")
            self.background, self.format, self.compression = "auto", "png", None
            self.response_format = _one_of(body.get("response_format") or "url", ("url", "b64_json"),
                                           "response_format")
            self.stream, self.partials = False, 0

    def spec(self, i: int, size: tuple[int, int] | None = None) -> procedural.ImageSpec:
        w, h = size or (self.width, self.height)
        seed = int(hashlib.sha256(f"{self.model}{i}".encode()).hexdigest()[:8], 16)
        return procedural.ImageSpec(self.prompt, w, h, seed, self.format, self.background, self.compression)

    def usage(self, input_images: int = 0) -> dict[str, Any]:
        text = _tokens(self.prompt)
        out = _OUT_TOKENS[self.quality] * self.n
        return {"input_tokens": text + 323 * input_images, "output_tokens": out,
                "total_tokens": text + 323 * input_images + out,
                "input_tokens_details": {"text_tokens": text, "image_tokens": 323 * input_images}}


async def _form(request: Request) -> FormData:
    try:
        return await request.form(max_part_size=64 * 1024 * 1024)
    except Exception:
        raise _bad(None, "Could not parse multipart form.", "invalid_multipart") from None


def _fields(form: FormData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in form.multi_items():
        if isinstance(v, str):
            out[k.removesuffix("[]")] = v
    return out


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def media_routes(state: MediaState) -> list[Route]:
    def endpoint(handler: Callable[[Request, RecordedRequest], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            rec = RecordedRequest(request.method, request.url.path, dict(request.query_params),
                                  {k.lower(): v for k, v in request.headers.items()})
            state.requests.append(rec)
            try:
                auth = request.headers.get("authorization", "")
                if auth != f"Bearer {state.api_key}":
                    raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
                if state.fail_next > 0:
                    state.fail_next -= 1
                    raise ApiError(state.fail_status, "The server is overloaded or not ready yet.", "server_error")
                response: Response = await handler(request, rec)
            except ApiError as exc:
                response = exc.response()
            rec.status = response.status_code
            response.headers["x-request-id"] = f"req_{secrets.token_hex(12)}"
            return response
        return wrapped

    async def images_out(request: Request, job: _Image, datas: list[bytes], kind: str,
                         inputs: int) -> Response:
        created = int(state.clock())
        mime = procedural.FORMATS[job.format]
        meta = {"size": job.size, "quality": job.quality, "background": job.background,
                "output_format": job.format} if job.gpt else {}
        if job.stream:
            async def events() -> AsyncIterator[bytes]:
                for i in range(job.partials):
                    small = await run_in_threadpool(procedural.generate, job.spec(0, (max(16, job.width // 4),
                                                                                      max(16, job.height // 4))))
                    yield _sse(f"{kind}.partial_image", {"type": f"{kind}.partial_image", "created_at": created,
                                                         "b64_json": base64.b64encode(small).decode(),
                                                         "partial_image_index": i, **meta})
                yield _sse(f"{kind}.completed", {"type": f"{kind}.completed", "created_at": created,
                                                 "b64_json": base64.b64encode(datas[0]).decode(), **meta,
                                                 "usage": job.usage(inputs)})
            return StreamingResponse(events(), media_type="text/event-stream")
        data: list[dict[str, Any]] = []
        for d in datas:
            item: dict[str, Any] = {}
            if job.response_format == "url":
                fid = secrets.token_hex(8)
                state.files[fid] = (d, mime, state.clock() + URL_TTL)
                item["url"] = f"{str(request.base_url).rstrip('/')}/v1/_fake/images/{fid}.{job.format}"
            else:
                item["b64_json"] = base64.b64encode(d).decode()
            if job.model == "dall-e-3":
                item["revised_prompt"] = f"A detailed picture of {job.prompt}"
            data.append(item)
        body: dict[str, Any] = {"created": created, "data": data, **meta}
        if job.gpt:
            body["usage"] = job.usage(inputs)
        return JSONResponse(body)

    @endpoint
    async def generations(request: Request, rec: RecordedRequest) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise _bad(None, "We could not parse the JSON body of your request.", "invalid_json") from None
        if not isinstance(body, dict):
            raise _bad(None, "The body must be a JSON object.", "invalid_json")
        rec.body = body
        job = _Image(body, edit=False)
        datas = [await run_in_threadpool(procedural.generate, job.spec(i)) for i in range(job.n)]
        return await images_out(request, job, datas, "image_generation", 0)

    @endpoint
    async def edits(request: Request, rec: RecordedRequest) -> Response:
        form = await _form(request)
        fields = _fields(form)
        rec.body = fields
        images = [v for k, v in form.multi_items() if k in ("image", "image[]") and isinstance(v, UploadFile)]
        if not images:
            raise _bad("image", "Missing required parameter: 'image'.", "missing_required_parameter")
        job = _Image(fields, edit=True)
        if len(images) > (16 if job.gpt else 1):
            raise _bad("image", f"Too many images: at most {16 if job.gpt else 1}.")
        srcs = [await f.read() for f in images]
        mask_part = form.get("mask")
        mask = await mask_part.read() if isinstance(mask_part, UploadFile) else None
        rec.body = {**fields, "image_count": len(srcs), "mask": mask is not None}
        try:
            datas = [await run_in_threadpool(procedural.edit, job.spec(i), srcs[0], mask) for i in range(job.n)]
        except ValueError as e:
            raise _bad("image", f"Invalid image file: {e}.", "invalid_image_file") from None
        return await images_out(request, job, datas, "image_edit", len(srcs))

    async def image_file(request: Request) -> Response:
        fid = request.path_params["name"].split(".")[0]
        got = state.files.get(fid)
        if got is None or state.clock() > got[2]:
            return Response(b"<Error><Code>AuthenticationFailed</Code></Error>", 403, media_type="application/xml")
        return Response(got[0], media_type=got[1])

    @endpoint
    async def speech(request: Request, rec: RecordedRequest) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise _bad(None, "We could not parse the JSON body of your request.", "invalid_json") from None
        rec.body = body
        model = _one_of(body.get("model"), TTS, "model")
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise _bad("input", "Missing required parameter: 'input'.", "missing_required_parameter")
        if len(text) > 4096:
            raise _bad("input", "Invalid 'input': string too long. Expected a string with maximum length 4096.")
        _one_of(body.get("voice"), VOICES if model == "gpt-4o-mini-tts" else TTS1_VOICES, "voice")
        fmt = _one_of(body.get("response_format") or "mp3", SPEECH_FORMATS, "response_format")
        speed = float(body.get("speed") or 1.0)
        if not 0.25 <= speed <= 4.0:
            raise _bad("speed", f"Invalid 'speed': {speed}. Expected a value between 0.25 and 4.0.")
        if model != "gpt-4o-mini-tts" and body.get("instructions"):
            raise _bad("instructions", f"instructions are not supported with {model}.")
        stream_format = _one_of(body.get("stream_format") or "audio", ("audio", "sse"), "stream_format")
        if stream_format == "sse" and model != "gpt-4o-mini-tts":
            raise _bad("stream_format", f"stream_format 'sse' is not supported with {model}.")
        data = await run_in_threadpool(audio_codec.synthesize, text, fmt, speed)
        state.transcripts[hashlib.sha256(data).hexdigest()] = text
        if stream_format == "sse":
            async def events() -> AsyncIterator[bytes]:
                for c in audio_codec.chunks(data):
                    yield _sse("speech.audio.delta", {"type": "speech.audio.delta",
                                                      "audio": base64.b64encode(c).decode()})
                t = _tokens(text)
                yield _sse("speech.audio.done", {"type": "speech.audio.done", "usage": {
                    "input_tokens": t, "output_tokens": len(data) // 100, "total_tokens": t + len(data) // 100}})
            return StreamingResponse(events(), media_type="text/event-stream")

        cut, state.break_speech_after = state.break_speech_after, None

        async def audio() -> AsyncIterator[bytes]:
            for i, c in enumerate(audio_codec.chunks(data, 4096)):
                if cut is not None and i >= cut:
                    raise ConnectionError("injected: the connection drops mid-stream")
                if state.chunk_delay:
                    await asyncio.sleep(state.chunk_delay)
                yield c
        return StreamingResponse(audio(), media_type=audio_codec.MIME[fmt])

    async def stt(request: Request, rec: RecordedRequest, task: str) -> Response:
        form = await _form(request)
        fields = _fields(form)
        grans = [v for k, v in form.multi_items() if k in ("timestamp_granularities[]", "timestamp_granularities")
                 and isinstance(v, str)]
        rec.body = {**fields, "timestamp_granularities": grans}
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _bad("file", "Missing required parameter: 'file'.", "missing_required_parameter")
        model = _one_of(fields.get("model"), tuple(state.stt_models) if task == "transcribe" else
                        state.translate_models, "model")
        fmts = state.stt_models[model]
        fmt = _one_of(fields.get("response_format") or "json", fmts, "response_format")
        if grans and fmt != "verbose_json":
            raise _bad("timestamp_granularities", "timestamp_granularities requires response_format verbose_json.")
        for g in grans:
            _one_of(g, ("word", "segment"), "timestamp_granularities")
        data = await upload.read()
        rec.body["file_bytes"] = len(data)
        with tempfile.NamedTemporaryFile(suffix=Path(upload.filename or "a.wav").suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                seconds = await run_in_threadpool(audio_codec.probe_seconds, tmp.name)
            except ValueError:
                raise _bad("file", "Audio file might be corrupted or unsupported", "invalid_value") from None
        text = state.transcripts.get(hashlib.sha256(data).hexdigest()) or f"This is {seconds:.1f} seconds of audio."
        usage: dict[str, Any] = ({"type": "duration", "seconds": math.ceil(seconds)} if "whisper" in model else
                                 {"type": "tokens", "input_tokens": int(seconds * 10), "output_tokens": _tokens(text),
                                  "total_tokens": int(seconds * 10) + _tokens(text),
                                  "input_token_details": {"text_tokens": 0, "audio_tokens": int(seconds * 10)}})
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        words = text.split()
        step = seconds / max(1, len(words))
        segs = [{"id": 0, "seek": 0, "start": 0.0, "end": round(seconds, 2), "text": " " + text, "tokens": [],
                 "temperature": float(fields.get("temperature") or 0), "avg_logprob": -0.2,
                 "compression_ratio": 1.1, "no_speech_prob": 0.01}]
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(_subtitles(fmt, seconds, text))
        if fmt == "json":
            return JSONResponse({"text": text, "usage": usage} if task == "transcribe" else {"text": text})
        out: dict[str, Any] = {"task": task, "language": "english", "duration": round(seconds, 2), "text": text}
        if not grans or "segment" in grans:
            out["segments"] = segs
        if "word" in grans:
            out["words"] = [{"word": w, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
                            for i, w in enumerate(words)]
        if task == "transcribe":
            out["usage"] = usage
        return JSONResponse(out)

    @endpoint
    async def transcriptions(request: Request, rec: RecordedRequest) -> Response:
        return await stt(request, rec, "transcribe")

    @endpoint
    async def translations(request: Request, rec: RecordedRequest) -> Response:
        return await stt(request, rec, "translate")

    return [Route("/v1/images/generations", generations, methods=["POST"]),
            Route("/v1/images/edits", edits, methods=["POST"]),
            Route("/v1/_fake/images/{name}", image_file, methods=["GET"]),
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", translations, methods=["POST"])]


def _stamp(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def _subtitles(fmt: str, seconds: float, text: str) -> str:
    if fmt == "srt":
        return f"1\n{_stamp(0, ',')} --> {_stamp(seconds, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n{_stamp(0, '.')} --> {_stamp(seconds, '.')}\n{text}\n\n"

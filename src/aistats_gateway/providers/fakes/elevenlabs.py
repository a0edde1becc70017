"""Fake ElevenLabs API (elevenlabs.io/docs/api-reference: text-to-speech, speech-to-text), loopback only.

* Auth: ``xi-api-key``; a missing/wrong key is 401 ``{"detail": {"status": "invalid_api_key", "message"}}``.
* ``POST /v1/text-to-speech/{voice_id}`` and ``…/stream`` (JSON ``text``, ``model_id``,
  ``voice_settings{stability, similarity_boost, style, use_speaker_boost, speed}``, ``seed``,
  ``language_code``; query ``output_format`` ``mp3_44100_128`` (default), ``mp3_44100_192``,
  ``mp3_22050_32``, ``pcm_16000|22050|24000|44100``, ``opus_48000_64``) → real audio bytes (chunked on
  ``/stream``), ``x-character-count`` and ``request-id`` headers. Unknown voice → 404
  ``voice_not_found``; text over the model's limit, speed outside 0.7-1.2 → 422 FastAPI-style details.
* ``POST /v1/speech-to-text`` (multipart ``model_id`` scribe_v1|scribe_v1_experimental, ``file``,
  ``language_code``, ``timestamps_granularity`` none|word|character, ``diarize``) →
  ``{language_code, language_probability, text, words:[{text, start, end, type, speaker_id, logprob}]}``.
  The text is what this fake said for those exact bytes, else a sentence naming the duration.

Faults: ``fail_next`` / ``fail_status`` (``{"detail": {"status": "system_busy"…}}``); ``requests``.
"""
from __future__ import annotations

import hashlib
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aistats_gateway.media import audio_codec

from ._common import RecordedRequest

VOICES = {"21m00Tcm4TlvDq8ikWAM": "Rachel", "JBFqnCBsd6RMkjVDRZzb": "George", "EXAVITQu4vr4xnSDxMaL": "Sarah",
          "pNInz6obpgDQGcFmaJgB": "Adam"}
TTS_LIMITS = {"eleven_multilingual_v2": 10_000, "eleven_flash_v2_5": 40_000, "eleven_turbo_v2_5": 40_000,
              "eleven_v3": 5_000}
STT_MODELS = ("scribe_v1", "scribe_v1_experimental")


@dataclass
class FakeElevenLabsState:
    api_key: str = "el-test"
    fail_next: int = 0
    fail_status: int = 503
    requests: list[RecordedRequest] = field(default_factory=list)
    transcripts: dict[str, str] = field(default_factory=dict)


class _Err(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status)


def _unprocessable(loc: list[str], msg: str, type_: str = "value_error") -> _Err:
    return _Err(422, [{"loc": ["body", *loc], "msg": msg, "type": type_}])


def _encode(text: str, output_format: str, speed: float) -> tuple[bytes, str]:
    kind, _, rest = output_format.partition("_")
    if kind == "pcm":
        return audio_codec.pcm(text, int(rest), speed), "audio/pcm"
    if kind == "mp3":
        return audio_codec.synthesize(text, "mp3", speed), "audio/mpeg"
    if kind == "opus":
        return audio_codec.synthesize(text, "opus", speed), "audio/ogg"
    if output_format == "ulaw_8000":
        return audio_codec.pcm(text, 8000, speed), "audio/basic"
    raise _unprocessable(["output_format"], f"Invalid output format {output_format!r}")


FORMATS = ("mp3_44100_128", "mp3_44100_192", "mp3_22050_32", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100",
           "opus_48000_64", "ulaw_8000")


def create_app(api_key: str = "el-test", **knobs: Any) -> Starlette:
    state = FakeElevenLabsState(api_key=api_key, **knobs)

    def guard(request: Request) -> RecordedRequest:
        rec = RecordedRequest(request.method, request.url.path, dict(request.query_params),
                              {k.lower(): v for k, v in request.headers.items()})
        state.requests.append(rec)
        if request.headers.get("xi-api-key") != state.api_key:
            raise _Err(401, {"status": "invalid_api_key", "message": "Invalid API key"})
        if state.fail_next > 0:
            state.fail_next -= 1
            raise _Err(state.fail_status, {"status": "system_busy", "message": "The system is busy, try again."})
        return rec

    async def tts(request: Request, stream: bool) -> Response:
        rec = guard(request)
        voice = request.path_params["voice_id"]
        if voice not in VOICES:
            raise _Err(404, {"status": "voice_not_found",
                             "message": f"A voice with the voice_id {voice} was not found."})
        try:
            body = await request.json()
        except ValueError:
            raise _unprocessable([], "Invalid JSON", "json_invalid") from None
        rec.body = body
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise _unprocessable(["text"], "Field required", "missing")
        model = body.get("model_id") or "eleven_multilingual_v2"
        if model not in TTS_LIMITS:
            raise _Err(400, {"status": "model_not_found", "message": f"Model {model} does not exist."})
        if len(text) > TTS_LIMITS[model]:
            raise _Err(400, {"status": "max_character_limit_exceeded",
                             "message": f"Text is {len(text)} characters; {model} allows {TTS_LIMITS[model]}."})
        speed = float((body.get("voice_settings") or {}).get("speed") or 1.0)
        if not 0.7 <= speed <= 1.2:
            raise _unprocessable(["voice_settings", "speed"], "Input should be between 0.7 and 1.2")
        fmt = request.query_params.get("output_format", "mp3_44100_128")
        if fmt not in FORMATS:
            raise _unprocessable(["output_format"], f"Invalid output format {fmt!r}")
        data, mime = await run_in_threadpool(_encode, text, fmt, speed)
        state.transcripts[hashlib.sha256(data).hexdigest()] = text
        headers = {"x-character-count": str(len(text)), "request-id": secrets.token_hex(10)}
        if not stream:
            return Response(data, media_type=mime, headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            for c in audio_codec.chunks(data, 8192):
                yield c
        return StreamingResponse(chunks(), media_type=mime, headers=headers)

    async def stt(request: Request) -> Response:
        rec = guard(request)
        form = await request.form(max_part_size=1024 * 1024 * 1024)
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        rec.body = dict(fields)
        if fields.get("model_id") not in STT_MODELS:
            raise _unprocessable(["model_id"], f"Input should be {' or '.join(STT_MODELS)}", "literal_error")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _Err(400, {"status": "invalid_parameters",
                             "message": "Either file or cloud_storage_url is required."})
        gran = fields.get("timestamps_granularity", "word")
        if gran not in ("none", "word", "character"):
            raise _unprocessable(["timestamps_granularity"], "Input should be 'none', 'word' or 'character'",
                                 "literal_error")
        data = await upload.read()
        with tempfile.NamedTemporaryFile(suffix="-" + (upload.filename or "audio")) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                seconds = await run_in_threadpool(audio_codec.probe_seconds, tmp.name)
            except ValueError:
                raise _Err(400, {"status": "invalid_audio",
                                 "message": "The audio file could not be decoded."}) from None
        text = state.transcripts.get(hashlib.sha256(data).hexdigest()) or f"This is {seconds:.1f} seconds of audio."
        words: list[dict[str, Any]] = []
        if gran != "none":
            ws = text.split()
            step = seconds / max(1, len(ws))
            for i, w in enumerate(ws):
                words.append({"text": w, "start": round(i * step, 3), "end": round((i + 0.9) * step, 3),
                              "type": "word", "speaker_id": "speaker_0", "logprob": -0.05})
                if i + 1 < len(ws):
                    words.append({"text": " ", "start": round((i + 0.9) * step, 3), "end": round((i + 1) * step, 3),
                                  "type": "spacing", "speaker_id": "speaker_0", "logprob": 0.0})
        return JSONResponse({"language_code": fields.get("language_code") or "eng", "language_probability": 0.98,
                             "text": text, "words": words})

    def wrap(handler: Any, *args: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                response: Response = await handler(request, *args)
            except _Err as e:
                response = e.response()
            if state.requests:
                state.requests[-1].status = response.status_code
            return response
        return endpoint

    app = Starlette(routes=[
        Route("/v1/text-to-speech/{voice_id}", wrap(tts, False), methods=["POST"]),
        Route("/v1/text-to-speech/{voice_id}/stream", wrap(tts, True), methods=["POST"]),
        Route("/v1/speech-to-text", wrap(stt), methods=["POST"]),
    ])
    app.state.fake = state
    return app

"""``/v1/audio/speech``, ``/v1/audio/transcriptions`` and ``/v1/audio/translations``.

Invariants:

* Speech: the hold covers the characters, an upper bound of the tokens (one per UTF-8 byte) and of the
  output seconds (``MAX_SECONDS_PER_CHAR`` per character + 5 s). The provider is committed when its
  first audio chunk arrives (fallback before that). A pump task (not the client connection) reads the
  provider's stream to its end, so a client that goes away still gets the call settled; the actual
  output seconds are measured from the audio itself (PyAV). A stream that breaks after its first
  chunk is charged nothing. ``stream_format=sse`` wraps the same bytes in ``speech.audio.delta`` /
  ``speech.audio.done`` events.
* Transcription/translation: the upload is already a temp file (``endpoints``); its duration is read
  with PyAV before routing (undecodable audio → 400 ``file``), held and settled for exactly that.
  ``text``/``srt``/``vtt`` are plain text; ``json``/``verbose_json`` are JSON with the gateway's
  ``usage``/cost extras. Providers without native srt/vtt get them built from their segments/words.
* :func:`execute_speech_bytes` and :func:`execute_transcription` are plain functions the batches
  runner can call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.http.errors import bad_request
from aistats_gateway.media import audio_codec
from aistats_gateway.media_api import calls, offers, pricing
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.protocols import (
    SPEECH,
    TRANSCRIPTION,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
)
from aistats_gateway.routing.schemas import ProviderRouting

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TEXT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MAX_INPUT = 40_000
MAX_SECONDS_PER_CHAR = 0.5
_TASKS: set[asyncio.Task[None]] = set()


# ---- speech --------------------------------------------------------------------------------


@dataclass
class SpeechCall:
    model: str
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float | None = None
    instructions: str | None = None
    stream_format: str = "audio"
    seed: int | None = None
    prefs: ProviderRouting | None = None

    def values(self) -> dict[str, Any]:
        return {"voice": self.voice, "response_format": self.response_format, "speed": self.speed,
                "seed": self.seed}


def parse_speech(body: dict[str, Any]) -> SpeechCall:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required.", "model", "missing_required_parameter")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("'input' is required and must be a non-empty string.", "input", "missing_required_parameter")
    if len(text) > MAX_INPUT:
        raise bad_request(f"'input' is too long: {len(text)} characters, at most {MAX_INPUT}.", "input")
    voice = body.get("voice")
    if isinstance(voice, dict):
        voice = voice.get("id") or voice.get("voiceName") or voice.get("name")
    if not isinstance(voice, str) or not voice:
        raise bad_request("'voice' is required.", "voice", "missing_required_parameter")
    fmt = body.get("response_format") or body.get("format") or "mp3"
    if fmt not in SPEECH_FORMATS:
        raise bad_request(f"Invalid value for 'response_format': {fmt!r}; expected one of "
                          f"{', '.join(SPEECH_FORMATS)}.", "response_format")
    speed = body.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise bad_request("'speed' must be a number between 0.25 and 4.0.", "speed")
        speed = float(speed)
    sf = body.get("stream_format") or "audio"
    if sf not in ("audio", "sse"):
        raise bad_request(f"Invalid value for 'stream_format': {sf!r}; expected audio or sse.", "stream_format")
    instr = body.get("instructions")
    if instr is not None and not isinstance(instr, str):
        raise bad_request("'instructions' must be a string.", "instructions", "invalid_type")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("'seed' must be an integer.", "seed", "invalid_type")
    return SpeechCall(model, text, voice, fmt, speed, instr or None, sf, seed, offers.parse_prefs(body))


def _speech_hold(call: SpeechCall, offer: ProviderOffer) -> int:
    n = len(call.input)
    return pricing.total(pricing.audio_lines(offer.spec.pricing, {
        "input_characters": n, "input_tokens": len(call.input.encode()),
        "output_audio_seconds": n * MAX_SECONDS_PER_CHAR + 5}))


def _speech_lines(call: SpeechCall, offer: ProviderOffer, seconds: float) -> list[Any]:
    return pricing.audio_lines(offer.spec.pricing, {
        "input_characters": len(call.input), "input_tokens": -(-len(call.input.encode()) // 4),
        "output_audio_seconds": seconds})


def _pcm_seconds(path: Path) -> float:
    return round(path.stat().st_size / 2 / audio_codec.RATE, 3)


async def measure_seconds(path: Path, fmt: str) -> float:
    if fmt == "pcm":
        return await asyncio.to_thread(_pcm_seconds, path)
    try:
        return await asyncio.to_thread(audio_codec.probe_seconds, path)
    except ValueError:
        return 0.0


@dataclass
class SpeechStream:
    """The open call: the first chunk is in hand, the rest comes through ``chunks``."""

    gen_id: str
    mime_type: str
    chunks: AsyncIterator[bytes]
    provider: str
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


async def open_speech(gw: Any, caller: calls.Caller, call: SpeechCall) -> SpeechStream:
    """Route, hold and start the provider's stream; the returned chunks are pumped independently."""
    model_id, found = await offers.plan(gw, call.model, "audio.speech", call.prefs, call.values())
    c = calls.Call(calls.new_generation_id(), caller, "audio.speech", model_id,
                   max(_speech_hold(call, o) for o in found), stream=True)
    await calls.open_call(gw, c)

    async def attempt(offer: ProviderOffer, ctx: CallContext) -> tuple[bytes, AsyncIterator[bytes]]:
        adapter = registry.get(offer.provider_id, SPEECH)
        if adapter is None:
            raise ProviderError("unavailable", f"{offer.provider_id} has no speech adapter", code="no_adapter")
        req = SpeechRequest(offer.spec.provider_model_slug, call.input, call.voice, call.response_format,
                            call.speed, call.instructions)
        it = adapter.speech(req, ctx).__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            raise ProviderError("upstream", "the provider sent no audio", code="empty_audio") from None
        return first, it

    done = await calls.run(gw, c, found, attempt)
    first, it = done.result
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    stream = SpeechStream(c.gen_id, audio_codec.MIME[call.response_format], _drain(queue), done.offer.provider_id)

    async def pump() -> None:
        scratch = await asyncio.to_thread(scratch_dir, gw)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="speech-", suffix="." + call.response_format,
                                           dir=scratch)
        tmp = Path(name)
        try:
            try:
                chunk: bytes | None = first
                while chunk is not None:
                    await asyncio.to_thread(os.write, fd, chunk)
                    await queue.put(chunk)
                    chunk = await anext(it, None)
            except BaseException as e:
                msg = e.message if isinstance(e, ProviderError) else "the call was interrupted"
                await calls.close_call(gw, c, calls.Outcome("failed", done.offer.provider_id, attempts=done.attempts,
                                                            status_code=502, error_code="upstream_stream_failed",
                                                            error_message=msg[:500]))
                stream.done.set_result(0)
                await queue.put(_BROKEN)
                if not isinstance(e, ProviderError):
                    raise
                return
            finally:
                await asyncio.to_thread(os.close, fd)
            seconds = await measure_seconds(tmp, call.response_format)
            size = (await asyncio.to_thread(tmp.stat)).st_size
            charged = await calls.close_call(gw, c, calls.Outcome(
                "completed", done.offer.provider_id, None, _speech_lines(call, done.offer, seconds),
                {"input_characters": len(call.input), "output_audio_seconds": seconds, "bytes": size},
                done.attempts))
            stream.done.set_result(charged)
            await queue.put(None)
        finally:
            await asyncio.to_thread(tmp.unlink, True)

    task = asyncio.create_task(pump())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return stream


def scratch_dir(gw: Any) -> str:
    path = Path(gw.settings.data_dir) / "scratch" / "media"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


_BROKEN = b""  # the pump's "the provider's stream broke off" marker


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (chunk := await queue.get()) is not None:
        if chunk is _BROKEN or chunk == _BROKEN:
            raise ProviderError("upstream", "the provider's audio stream broke off")
        yield chunk


def speech_response(stream: SpeechStream, call: SpeechCall) -> Response:
    headers = {"Cache-Control": "no-store", "X-Generation-Id": stream.gen_id, "X-Provider": stream.provider}
    if call.stream_format == "audio":
        return StreamingResponse(stream.chunks, media_type=stream.mime_type, headers=headers)

    async def events() -> AsyncIterator[bytes]:
        async for chunk in stream.chunks:
            yield b"event: speech.audio.delta\ndata: " + orjson.dumps(
                {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}) + b"\n\n"
        charged = await stream.done
        yield b"event: speech.audio.done\ndata: " + orjson.dumps(
            {"type": "speech.audio.done", "usage": {"cost_nanos": charged}, "requestId": stream.gen_id}) + b"\n\n"
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def execute_speech_bytes(gw: Any, caller: calls.Caller, call: SpeechCall) -> tuple[bytes, str, int]:
    """The whole speech call, collected: (audio, mime type, nano-USD charged) — for batch rows."""
    stream = await open_speech(gw, caller, call)
    data = b"".join([c async for c in stream.chunks])
    return data, stream.mime_type, await stream.done


# ---- transcription and translation ---------------------------------------------------------


@dataclass
class TranscribeCall:
    model: str
    path: Path
    filename: str
    mime_type: str
    task: str = "transcribe"  # transcribe | translate
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float | None = None
    timestamp_granularities: tuple[str, ...] = ()
    prefs: ProviderRouting | None = None

    def values(self) -> dict[str, Any]:
        return {"language": self.language, "response_format": self.response_format,
                "temperature": self.temperature,
                "timestamp_granularities": list(self.timestamp_granularities) or None}


def parse_transcription(fields: dict[str, Any], grans: list[str], *, path: Path, filename: str, mime: str,
                        task: str) -> TranscribeCall:
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required.", "model", "missing_required_parameter")
    fmt = fields.get("response_format") or "json"
    if fmt not in TEXT_FORMATS:
        raise bad_request(f"Invalid value for 'response_format': {fmt!r}; expected one of "
                          f"{', '.join(TEXT_FORMATS)}.", "response_format")
    temp = fields.get("temperature")
    temperature = None
    if temp not in (None, ""):
        try:
            temperature = float(temp)
        except ValueError:
            raise bad_request("'temperature' must be a number.", "temperature", "invalid_type") from None
        if not 0 <= temperature <= 1:
            raise bad_request("'temperature' must be between 0 and 1.", "temperature")
    for g in grans:
        if g not in ("word", "segment"):
            raise bad_request(f"Invalid value for 'timestamp_granularities': {g!r}; expected word or segment.",
                              "timestamp_granularities")
    if grans and fmt != "verbose_json":
        raise bad_request("'timestamp_granularities' needs response_format verbose_json.", "timestamp_granularities")
    return TranscribeCall(model, path, filename, mime, task, fields.get("language") or None,
                          fields.get("prompt") or None, fmt, temperature, tuple(dict.fromkeys(grans)),
                          offers.parse_prefs({"provider": _json_field(fields.get("provider"))}))


def _json_field(v: Any) -> Any:
    if isinstance(v, str) and v.strip().startswith(("{", "[")):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(v)
    return v or None


def _stamp(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def subtitles(fmt: str, result: TranscriptionResult, seconds: float) -> str:
    segs = result.details.get("segments") or [{"start": 0.0, "end": seconds, "text": result.text}]
    sep = "," if fmt == "srt" else "."
    parts = [] if fmt == "srt" else ["WEBVTT\n"]
    for i, s in enumerate(segs, 1):
        cue = f"{_stamp(float(s['start']), sep)} --> {_stamp(float(s['end']), sep)}\n{str(s['text']).strip()}\n"
        parts.append(f"{i}\n{cue}" if fmt == "srt" else cue)
    return "\n".join(parts) + "\n"


async def execute_transcription(gw: Any, caller: calls.Caller, call: TranscribeCall) -> Response:
    """The whole call; the answer in the requested ``response_format``."""
    try:
        seconds = await asyncio.to_thread(audio_codec.probe_seconds, call.path)
    except ValueError as e:
        raise bad_request(f"The file could not be read as audio: {e}.", "file", "invalid_audio") from None
    endpoint = "audio.transcription"
    label = "audio.transcriptions" if call.task == "transcribe" else "audio.translations"

    def need(adapter: Any) -> bool:
        return adapter is not None and (call.task == "transcribe" or bool(getattr(adapter, "translates", False)))

    model_id, found = await offers.plan(gw, call.model, endpoint, call.prefs, call.values(), need,
                              "translations" if call.task == "translate" else "transcriptions")
    hold = max(pricing.total(pricing.audio_lines(o.spec.pricing, {"input_audio_seconds": seconds})) for o in found)
    c = calls.Call(calls.new_generation_id(), caller, label, model_id, hold)
    await calls.open_call(gw, c)
    audio = await asyncio.to_thread(call.path.read_bytes)

    async def attempt(offer: ProviderOffer, ctx: CallContext) -> TranscriptionResult:
        adapter = registry.get(offer.provider_id, TRANSCRIPTION)
        if adapter is None:
            raise ProviderError("unavailable", f"{offer.provider_id} has no transcription adapter", code="no_adapter")
        req = TranscriptionRequest(offer.spec.provider_model_slug, audio, call.filename, call.mime_type,
                                   call.language, call.prompt, call.response_format, call.temperature,
                                   task=call.task, timestamp_granularities=call.timestamp_granularities)
        return await adapter.transcribe(req, ctx)

    done = await calls.run(gw, c, found, attempt)
    result = done.result
    lines = pricing.audio_lines(done.offer.spec.pricing, {"input_audio_seconds": seconds})
    charged = await calls.close_call(gw, c, calls.Outcome(
        "completed", done.offer.provider_id, None, lines,
        {"input_audio_seconds": seconds, **{k: v for k, v in result.usage.items() if k != "type"}}, done.attempts))
    headers = {"X-Generation-Id": c.gen_id, "X-Provider": done.offer.provider_id}
    fmt = call.response_format
    if fmt == "text":
        raw = result.details.get("raw")
        return PlainTextResponse(raw if isinstance(raw, str) else result.text + "\n", headers=headers)
    if fmt in ("srt", "vtt"):
        raw = result.details.get("raw")
        return PlainTextResponse(raw if isinstance(raw, str) else subtitles(fmt, result, seconds), headers=headers)
    body: dict[str, Any] = {"text": result.text}
    if fmt == "verbose_json":
        body = {"task": call.task, "language": result.details.get("language") or call.language or "english",
                "duration": result.details.get("duration", seconds), "text": result.text}
        for k in ("segments", "words"):
            if result.details.get(k) is not None:
                body[k] = result.details[k]
    provider_usage = {k: v for k, v in result.usage.items()}
    body |= {"usage": {**(provider_usage or {"type": "duration", "seconds": math.ceil(seconds)}),
                       **calls.usage_doc(lines, charged)},
             "requestId": c.gen_id, "object": "transcription" if call.task == "transcribe" else "translation",
             "model": c.model, "provider": done.offer.provider_id, "cost_nanos": charged,
             "cost_cents": charged // 10_000_000, "currency": "USD", "pricing_lines": [ln.as_dict() for ln in lines]}
    return JSONResponse(body, headers=headers)

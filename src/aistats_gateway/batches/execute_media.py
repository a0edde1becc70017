"""Gateway mode for image and audio rows: ``/v1/images/generations``, ``/v1/images/edits``,
``/v1/audio/speech``, ``/v1/audio/transcriptions``, ``/v1/audio/translations``.

Invariants:

* Rows are decoded by ``media_rows`` into the media product's calls and routed by its
  ``offers.plan`` (the offer must have an adapter able to do the row, a price for the endpoint's
  meters, and accept every value the row sets), then sent through the same provider adapters as
  ``/v1/images/*`` and ``/v1/audio/*``. No generation record or media hold is opened per row:
  the batch's own hold and settlement cover them (settled once, by ``runner.finalize``).
* Upper bound at create (:class:`MediaPlanner`), at the dearest candidate offer, with the
  catalogue's ``batch`` plan rules where a meter has one (``execute.batch_rules``), else standard:
  images ``n`` × the dearest ``output_image`` rule matching the row's size/quality (an open value
  matches every rule); speech the characters, one token per UTF-8 byte and
  ``audio.MAX_SECONDS_PER_CHAR`` seconds per character + 5 s of output; transcription/translation
  the audio's duration, probed at create from the row's bytes (container duration, else decoded)
  — the same bytes are probed again when the row runs, so the charge never exceeds the bound.
  A routing or value error is a 400 at create naming the line; a row whose shape is wrong
  (missing image, unreadable audio) is bounded at 0 and fails when it runs.
* A row's cost is exactly the catalogue price of what the provider returned (images returned at
  the size/quality it reports, the measured output seconds of speech, the probed input seconds).
* Same execution rules as chat rows (``execute.run``): fallback across offers on retryable
  errors, 429 holds and per-provider concurrency (``execute.Limits``), retry later when every
  provider failed retryably, fail at once on a client error.
* Outputs are JSON: images as ``b64_json`` or a first-party signed ``url`` (valid ``LINK_TTL``);
  speech as ``audio_base64`` + ``mime_type``; transcriptions as the JSON answer, or for
  ``text``/``srt``/``vtt`` ``{"text": <that text>, "response_format": …}``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from typing import Any

import orjson

from aistats_gateway.batches import execute, media_rows
from aistats_gateway.batches.media_rows import ENDPOINTS, Row
from aistats_gateway.billing.pricing import Line
from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.http.errors import APIError
from aistats_gateway.media import audio_codec
from aistats_gateway.media_api import audio, calls, images, links, offers, pricing
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.protocols import (
    IMAGES,
    SPEECH,
    TRANSCRIPTION,
    SpeechRequest,
    TranscriptionRequest,
)

LINK_TTL = 30 * 24 * 3600
__all__ = ["ENDPOINTS", "LINK_TTL", "MediaPlanner", "batch_endpoints", "run"]


def batch_endpoints(offer: ProviderOffer, kind: str) -> tuple[str, ...]:
    """The media batch endpoints ``offer`` serves for the catalogue endpoint ``kind`` (adapter + price)."""
    if kind not in offers.METERS or kind not in offer.spec.endpoints:
        return ()
    adapter = registry.adapter_for(offer.provider_id, kind)
    if adapter is None or not pricing.has_media_price(offer.spec.pricing, offers.METERS[kind]):
        return ()
    if kind == "images.generations":
        return ("/v1/images/generations",) + (("/v1/images/edits",) if getattr(adapter, "supports_edits", False)
                                              else ())
    if kind == "audio.speech":
        return ("/v1/audio/speech",)
    return ("/v1/audio/transcriptions",) + (("/v1/audio/translations",) if getattr(adapter, "translates", False)
                                            else ())


def provider_endpoints(provider_id: str) -> list[str]:
    """The media batch endpoints a provider's adapters can do at all (for ``/v1/batches/capabilities``)."""
    out: list[str] = []
    for ep, kind in ENDPOINTS.items():
        adapter = registry.adapter_for(provider_id, kind)
        if adapter is None:
            continue
        if ep == "/v1/images/edits" and not getattr(adapter, "supports_edits", False):
            continue
        if ep == "/v1/audio/translations" and not getattr(adapter, "translates", False):
            continue
        out.append(ep)
    return out


# ---- prices --------------------------------------------------------------------------------


def _rules(offer: ProviderOffer) -> list[Any]:
    return execute.batch_rules(list(offer.spec.pricing))


def _image_context(call: images.ImageCall, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    got = usage or {}
    return {"size": got.get("size") or call.size, "quality": got.get("quality") or call.quality,
            "resolution": got.get("resolution") or call.resolution, "background": call.background}


def row_bound(row: Row, offer: ProviderOffer) -> int:
    """The most this row can cost on ``offer`` (module docstring)."""
    rules = _rules(offer)
    if row.image is not None:
        return pricing.total(pricing.image_lines(rules, count=row.image.n, context=_image_context(row.image)))
    if row.speech is not None:
        n = len(row.speech.input)
        return pricing.total(pricing.audio_lines(rules, {
            "input_characters": n, "input_tokens": len(row.speech.input.encode()),
            "output_audio_seconds": n * audio.MAX_SECONDS_PER_CHAR + 5}))
    return pricing.total(pricing.audio_lines(rules, {"input_audio_seconds": row.seconds}))


async def _plan(state: Any, row: Row) -> tuple[str, list[ProviderOffer]]:
    return await offers.plan(state, row.model, row.kind, row.prefs, row.values, row.need, row.what)


class MediaPlanner:
    """The upper bound of media rows at batch create (one per create; routing is cached per shape)."""

    def __init__(self, state: Any, workspace_id: str, endpoint: str, mode: str, routing: Any) -> None:
        if mode == "native":
            raise APIError(400, f"{endpoint} batches run in gateway mode only (no provider batch API for them "
                           "here); use mode 'gateway'.", param="mode", code="native_mode_unavailable")
        self.state, self.workspace_id, self.endpoint, self.routing = state, workspace_id, endpoint, routing
        self._cache: dict[bytes, list[ProviderOffer]] = {}

    async def bound(self, body: dict[str, Any]) -> int:
        try:
            row = await media_rows.decode(self.state, self.workspace_id, self.endpoint, body, self.routing,
                                          load=False)
        except APIError:
            return 0  # the row fails when it runs, with this error in the error file
        try:
            key = orjson.dumps([row.model, row.what, row.prefs.model_dump(mode="json") if row.prefs else None,
                                row.values], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
            found = self._cache.get(key)
            if found is None:
                _, found = await _plan(self.state, row)
                self._cache[key] = found
            return max(row_bound(row, o) for o in found)
        finally:
            row.cleanup()


# ---- one row -------------------------------------------------------------------------------


def _failed(e: APIError) -> execute.Outcome:
    return execute.Outcome("failed", status_code=e.status, error={"message": e.message, "type":
                           "invalid_request_error", "param": e.param, "code": e.code})


async def run(state: Any, limits: execute.Limits, batch: execute.BatchLike, row: execute.RowLike) -> execute.Outcome:
    """Execute one media row; never raises for a provider's or the request's fault."""
    body: dict[str, Any] = orjson.loads(row.body)
    try:
        decoded = await media_rows.decode(state, batch.workspace_id, batch.endpoint, body, batch.routing, load=True)
    except APIError as e:
        return _failed(e)
    try:
        try:
            model_id, found = await _plan(state, decoded)
        except APIError as e:
            return _failed(e)
        return await _try_offers(limits, state, decoded, model_id, found)
    finally:
        decoded.cleanup()


async def _try_offers(limits: execute.Limits, state: Any, decoded: Row, model_id: str,
                      found: list[ProviderOffer]) -> execute.Outcome:
    waits = [limits.wait_for(o.provider_id) for o in found]
    if all(w > 0 for w in waits):
        return execute.Outcome("retry", retry_in=min(waits), error=execute._error(
            429, "Every provider is rate limited.", "provider_rate_limited"))
    last: ProviderError | None = None
    retry_in = 0.0
    for offer, wait in zip(found, waits, strict=True):
        if wait > 0:
            continue
        try:
            async with limits.sem(offer.provider_id):
                out, usage, lines = await _call(state, decoded, offer, model_id)
        except ProviderError as e:
            last = e
            if e.kind == "rate_limit":
                limits.hold(offer.provider_id, float(e.retry_after or 1.0))
                retry_in = max(retry_in, float(e.retry_after or 1.0))
            if not e.retryable:
                break
            continue
        nanos = pricing.total(lines)
        out |= {"cost_nanos": nanos, "currency": "USD", "pricing_lines": [ln.as_dict() for ln in lines]}
        return execute.Outcome("completed", offer.provider_id, 200, out, None,
                               {**usage, "lines": [ln.as_dict() for ln in lines]}, nanos)
    assert last is not None
    if last.retryable:
        return execute.Outcome("retry", status_code=last.status or 502, retry_in=retry_in, error=execute._error(
            last.status or 502, last.message, last.code or "upstream_error", "server_error"))
    status = 400 if last.kind in ("client", "content_policy") else (last.status or 502)
    return execute.Outcome("failed", status_code=status, error=execute._error(
        status, last.message, last.code or "provider_rejected_request"))


Result = tuple[dict[str, Any], dict[str, Any], list[Line]]


async def _call(state: Any, decoded: Row, offer: ProviderOffer, model_id: str) -> Result:
    ctx = calls.context(state, offer)
    if decoded.image is not None:
        return await _images(state, decoded.image, offer, ctx, model_id)
    if decoded.speech is not None:
        return await _speech(state, decoded.speech, offer, ctx, model_id)
    return await _transcribe(decoded, offer, ctx, model_id)


def _no_adapter(offer: ProviderOffer, what: str) -> ProviderError:
    return ProviderError("unavailable", f"{offer.provider_id} has no {what} adapter", code="no_adapter")


async def _images(state: Any, call: images.ImageCall, offer: ProviderOffer, ctx: CallContext,
                  model_id: str) -> Result:
    adapter = registry.get(offer.provider_id, IMAGES)
    if adapter is None:
        raise _no_adapter(offer, "images")
    result = await images.materialise(await adapter.generate(images.provider_request(call, offer), ctx), ctx)
    lines = pricing.image_lines(_rules(offer), count=len(result.images), context=_image_context(call, result.usage),
                                usage=result.usage)
    out_id = calls.new_generation_id()
    data: list[dict[str, Any]] = []
    st = state.settings
    base = st.public_base_url or f"http://{st.host}:{st.port}"  # as video webhooks: no request at hand
    for i, img in enumerate(result.images):
        item: dict[str, Any] = {}
        if call.response_format == "url":
            await state.storage.put_stream(links.key(out_id, i, img.mime_type), links.one(img.data or b""),
                                           content_type=img.mime_type)
            item["url"] = links.sign(state.settings.signing_key, base, out_id, i, ttl=LINK_TTL)
        else:
            item["b64_json"] = base64.b64encode(img.data or b"").decode()
        if img.revised_prompt:
            item["revised_prompt"] = img.revised_prompt
        data.append(item)
    tokens: dict[str, Any] = {k: result.usage[k] for k in ("input_tokens", "output_tokens", "total_tokens")
                              if k in result.usage}
    body = {"created": int(time.time()), "data": data, **images.response_meta(call, result), "model": model_id,
            "usage": {**tokens, **calls.usage_doc(lines, pricing.total(lines))}, "requestId": out_id,
            "provider": offer.provider_id}
    return body, {**tokens, "images": len(result.images)}, lines


async def _speech(state: Any, call: audio.SpeechCall, offer: ProviderOffer, ctx: CallContext,
                  model_id: str) -> Result:
    adapter = registry.get(offer.provider_id, SPEECH)
    if adapter is None:
        raise _no_adapter(offer, "speech")
    req = SpeechRequest(offer.spec.provider_model_slug, call.input, call.voice, call.response_format, call.speed,
                        call.instructions)
    data = b"".join([chunk async for chunk in adapter.speech(req, ctx)])
    if not data:
        raise ProviderError("upstream", "the provider sent no audio", code="empty_audio")
    seconds = await _seconds(state, data, call.response_format)
    n = len(call.input)
    lines = pricing.audio_lines(_rules(offer), {"input_characters": n,
                                                "input_tokens": -(-len(call.input.encode()) // 4),
                                                "output_audio_seconds": seconds})
    out_id = calls.new_generation_id()
    body = {"id": out_id, "object": "audio.speech", "model": model_id, "provider": offer.provider_id,
            "response_format": call.response_format, "mime_type": audio_codec.MIME[call.response_format],
            "audio_base64": base64.b64encode(data).decode(), "bytes": len(data), "duration_seconds": seconds,
            "usage": {"input_characters": n, "output_audio_seconds": seconds,
                      **calls.usage_doc(lines, pricing.total(lines))}}
    return body, {"input_characters": n, "output_audio_seconds": seconds, "bytes": len(data)}, lines


async def _seconds(state: Any, data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return round(len(data) / 2 / audio_codec.RATE, 3)
    path = await asyncio.to_thread(media_rows._write_temp, state, data, "." + fmt)
    try:
        return await audio.measure_seconds(path, fmt)
    finally:
        await asyncio.to_thread(path.unlink, True)


async def _transcribe(decoded: Row, offer: ProviderOffer, ctx: CallContext, model_id: str) -> Result:
    call = decoded.stt
    assert call is not None
    adapter = registry.get(offer.provider_id, TRANSCRIPTION)
    if adapter is None:
        raise _no_adapter(offer, "transcription")
    req = TranscriptionRequest(offer.spec.provider_model_slug, decoded.audio, call.filename, call.mime_type,
                               call.language, call.prompt, call.response_format, call.temperature, task=call.task,
                               timestamp_granularities=call.timestamp_granularities)
    result = await adapter.transcribe(req, ctx)
    seconds = decoded.seconds
    lines = pricing.audio_lines(_rules(offer), {"input_audio_seconds": seconds})
    fmt = call.response_format
    raw = result.details.get("raw")
    if fmt in ("text", "srt", "vtt"):
        text = raw if isinstance(raw, str) else (result.text + "\n" if fmt == "text" else
                                                 audio.subtitles(fmt, result, seconds))
        body: dict[str, Any] = {"text": text, "response_format": fmt}
    elif fmt == "verbose_json":
        body = {"task": call.task, "language": result.details.get("language") or call.language or "english",
                "duration": result.details.get("duration", seconds), "text": result.text}
        body |= {k: result.details[k] for k in ("segments", "words") if result.details.get(k) is not None}
    else:
        body = {"text": result.text}
    provider_usage = {k: v for k, v in result.usage.items()}
    body |= {"usage": {**(provider_usage or {"type": "duration", "seconds": math.ceil(seconds)}),
                       **calls.usage_doc(lines, pricing.total(lines))},
             "object": "transcription" if call.task == "transcribe" else "translation", "model": model_id,
             "provider": offer.provider_id}
    usage = {"input_audio_seconds": seconds, **{k: v for k, v in result.usage.items() if k != "type"}}
    return body, usage, lines

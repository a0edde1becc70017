"""``/v1/images/generations`` and ``/v1/images/edits``: parse, route, hold, call, store, answer, settle.

Invariants:

* :func:`execute` is the whole call for one parsed :class:`ImageCall` (the batches runner calls it
  too); it returns the OpenAI-shaped body. The hold is placed before any provider is called.
* ``response_format=url`` answers first-party signed links to the blob store (``links``);
  ``b64_json`` inlines the bytes. A provider that answers with its own URL is downloaded inside the
  attempt (a failed download is a retryable provider error), so the stored bytes are ours.
* ``stream=true`` answers Server-Sent Events ``image_generation.partial_image`` (when the provider
  streams partials) then ``image_generation.completed`` per image (``image_edit.*`` for edits); the
  provider is committed once its first event arrives, and the call is settled when it ends.
* Prices: ``pricing.image_lines`` for the images the provider actually returned.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from aistats_gateway.billing.pricing import Line
from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.http.errors import bad_request
from aistats_gateway.media_api import calls, links, offers, pricing
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError
from aistats_gateway.providers.media.types import PartialImage
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult
from aistats_gateway.routing.schemas import ProviderRouting

ENDPOINT = "images.generations"
MAX_PROMPT = 32_000


@dataclass
class ImageCall:
    model: str
    prompt: str
    n: int = 1
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    response_format: str = "b64_json"
    style: str | None = None
    user: str | None = None
    seed: int | None = None
    stream: bool = False
    partial_images: int = 0
    moderation: str | None = None
    input_fidelity: str | None = None
    aspect_ratio: str | None = None  # providers that take a ratio (Imagen, Gemini); else size decides
    person_generation: str | None = None
    resolution: str | None = None  # providers priced by a resolution tier (Runway: 720p, 1080p)
    steps: int | None = None  # diffusion steps (Together FLUX)
    negative_prompt: str | None = None
    images: list[ImageInput] = field(default_factory=list)
    mask: ImageInput | None = None
    prefs: ProviderRouting | None = None

    @property
    def edit(self) -> bool:
        return bool(self.images)

    def values(self) -> dict[str, Any]:
        """What is checked against the catalogue (the other fields are the gateway's own)."""
        return {"size": self.size, "quality": self.quality, "background": self.background,
                "output_format": self.output_format, "style": self.style, "n": self.n if self.n != 1 else None,
                "seed": self.seed, "aspect_ratio": self.aspect_ratio, "person_generation": self.person_generation,
                "resolution": self.resolution, "steps": self.steps, "negative_prompt": self.negative_prompt}


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool):
        raise bad_request(f"'{name}' must be an integer.", name)
    try:
        n = int(v)
        if isinstance(v, float) and not v.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise bad_request(f"'{name}' must be an integer.", name, "invalid_type") from None
    if not lo <= n <= hi:
        raise bad_request(f"'{name}' must be between {lo} and {hi} (got {n}).", name)
    return n


def _str(body: dict[str, Any], name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    v = body.get(name)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise bad_request(f"'{name}' must be a string.", name, "invalid_type")
    if allowed is not None and v not in allowed:
        raise bad_request(f"Invalid value for '{name}': {v!r}; expected one of {', '.join(allowed)}.", name)
    return v


def _bool(v: Any, name: str) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise bad_request(f"'{name}' must be a boolean.", name, "invalid_type")


def parse(body: dict[str, Any], *, images: list[ImageInput] | None = None, mask: ImageInput | None = None,
          default_model: str = "openai/gpt-image-1") -> ImageCall:
    """Validate the shape of a generations/edits body (values are checked against offers later)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_request("'prompt' is required and must be a non-empty string.", "prompt",
                          "missing_required_parameter")
    if len(prompt) > MAX_PROMPT:
        raise bad_request(f"'prompt' is too long: {len(prompt)} characters, at most {MAX_PROMPT}.", "prompt")
    model = body.get("model") or default_model
    if not isinstance(model, str):
        raise bad_request("'model' must be a string.", "model", "invalid_type")
    fmt = _str(body, "output_format", ("png", "jpeg", "webp"))
    comp = body.get("output_compression")
    compression = None if comp is None or comp == "" else _int(comp, "output_compression", 0, 100)
    if compression is not None and fmt not in ("jpeg", "webp"):
        raise bad_request("'output_compression' needs output_format jpeg or webp.", "output_compression")
    background = _str(body, "background", ("transparent", "opaque", "auto"))
    if background == "transparent" and fmt == "jpeg":
        raise bad_request("A transparent background needs output_format png or webp.", "background")
    stream = _bool(body.get("stream"), "stream")
    partials = 0 if body.get("partial_images") in (None, "") else _int(body["partial_images"], "partial_images", 0, 3)
    if partials and not stream:
        raise bad_request("'partial_images' needs stream=true.", "partial_images")
    seed = None if body.get("seed") in (None, "") else _int(body["seed"], "seed", 0, 2**32 - 1)
    return ImageCall(
        model=model, prompt=prompt, n=1 if body.get("n") in (None, "") else _int(body["n"], "n", 1, 10),
        size=_str(body, "size"), quality=_str(body, "quality"), background=background, output_format=fmt,
        output_compression=compression,
        response_format=_str(body, "response_format", ("b64_json", "url")) or "b64_json",
        style=_str(body, "style"), user=_str(body, "user"), seed=seed, stream=stream, partial_images=partials,
        moderation=_str(body, "moderation", ("auto", "low")), input_fidelity=_str(body, "input_fidelity",
                                                                                  ("high", "low")),
        aspect_ratio=_str(body, "aspect_ratio"), person_generation=_str(body, "person_generation"),
        resolution=_str(body, "resolution"),
        steps=None if body.get("steps") in (None, "") else _int(body["steps"], "steps", 1, 100),
        negative_prompt=_str(body, "negative_prompt"),
        images=images or [], mask=mask, prefs=offers.parse_prefs(body))


def provider_request(call: ImageCall, offer: ProviderOffer) -> ImageRequest:
    extra = {k: v for k, v in {"style": call.style, "output_compression": call.output_compression,
                               "seed": call.seed, "user": call.user, "moderation": call.moderation,
                               "input_fidelity": call.input_fidelity, "partial_images": call.partial_images,
                               "stream": call.stream, "aspect_ratio": call.aspect_ratio,
                               "person_generation": call.person_generation, "resolution": call.resolution,
                               "steps": call.steps, "negative_prompt": call.negative_prompt}.items()
             if v not in (None, False, 0)}
    return ImageRequest(model_slug=offer.spec.provider_model_slug, prompt=call.prompt, n=call.n, size=call.size,
                        quality=call.quality, background=call.background, output_format=call.output_format,
                        images=tuple(call.images), mask=call.mask, provider_params=extra)


def price_context(call: ImageCall, result: ImageResult | None = None) -> dict[str, Any]:
    got = result.usage if result is not None else {}
    return {"size": got.get("size") or call.size, "quality": got.get("quality") or call.quality,
            "resolution": got.get("resolution") or call.resolution, "background": call.background}


async def materialise(result: ImageResult, ctx: CallContext) -> ImageResult:
    """Every image as bytes: a provider URL is downloaded now (failures are the provider's)."""
    out = []
    for img in result.images:
        if img.data is None:
            if not img.url:
                raise ProviderError("upstream", "the provider returned an image without data or URL",
                                    code="empty_image")
            try:
                r = await ctx.http.get(img.url)
            except Exception as e:
                raise ProviderError("unavailable", f"downloading the provider's image failed: {e}") from e
            if r.status_code != 200:
                raise ProviderError("upstream", f"downloading the provider's image answered {r.status_code}",
                                    status=r.status_code, code="image_download_failed")
            img = replace(img, data=r.content, mime_type=r.headers.get("content-type", img.mime_type).split(";")[0])
        out.append(img)
    if not out:
        raise ProviderError("upstream", "the provider returned no image", code="empty_result")
    return replace(result, images=tuple(out))


def need_for(call: ImageCall) -> Any:
    def ok(adapter: Any) -> bool:
        return adapter is not None and (not call.edit or bool(getattr(adapter, "supports_edits", False)))
    return ok


async def _prepare(gw: Any, caller: calls.Caller, call: ImageCall, endpoint: str) -> tuple[calls.Call,
                                                                                            list[ProviderOffer]]:
    model_id, found = await offers.plan(gw, call.model, ENDPOINT, call.prefs, call.values(), need_for(call),
                              "image edits" if call.edit else "image generation")
    hold = max(pricing.total(pricing.image_lines(o.spec.pricing, count=call.n, context=price_context(call)))
               for o in found)
    c = calls.Call(calls.new_generation_id(), caller, endpoint, model_id, hold, stream=call.stream)
    await calls.open_call(gw, c)
    return c, found


async def _store(gw: Any, gen_id: str, images: tuple[GeneratedImage, ...]) -> None:
    for i, img in enumerate(images):
        await gw.storage.put_stream(links.key(gen_id, i, img.mime_type), links.one(img.data or b""),
                                    content_type=img.mime_type)


def _item(gw: Any, call: ImageCall, gen_id: str, i: int, img: GeneratedImage, base_url: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if call.response_format == "url":
        item["url"] = links.sign(gw.settings.signing_key, base_url, gen_id, i)
    else:
        item["b64_json"] = base64.b64encode(img.data or b"").decode()
    if img.revised_prompt:
        item["revised_prompt"] = img.revised_prompt
    return item


def response_meta(call: ImageCall, result: ImageResult) -> dict[str, Any]:
    u = result.usage
    fmt = call.output_format or {"image/jpeg": "jpeg", "image/webp": "webp"}.get(result.images[0].mime_type, "png")
    out = {"background": u.get("background") or call.background, "output_format": fmt,
           "size": u.get("size") or call.size, "quality": u.get("quality") or call.quality}
    return {k: v for k, v in out.items() if v is not None}


def _usage(result: ImageResult, lines: list[Line], charged: int) -> dict[str, Any]:
    names = ("input_tokens", "output_tokens", "total_tokens", "input_tokens_details")
    tokens: dict[str, Any] = {k: result.usage[k] for k in names if k in result.usage}
    return {**tokens, **calls.usage_doc(lines, charged)}


def _body(gw: Any, call: ImageCall, c: calls.Call, done: calls.Done[ImageResult], lines: list[Line], charged: int,
          base_url: str) -> dict[str, Any]:
    result = done.result
    return {"created": int(time.time()), "data": [_item(gw, call, c.gen_id, i, img, base_url)
                                                  for i, img in enumerate(result.images)],
            **response_meta(call, result), "model": c.model, "usage": _usage(result, lines, charged),
            "requestId": c.gen_id, "provider": done.offer.provider_id, "cost_nanos": charged,
            "cost_cents": charged // 10_000_000, "currency": "USD", "pricing_lines": [ln.as_dict() for ln in lines]}


async def _generate(adapter: Any, req: ImageRequest, ctx: CallContext) -> ImageResult:
    return await materialise(await adapter.generate(req, ctx), ctx)


async def execute(gw: Any, caller: calls.Caller, call: ImageCall, *, base_url: str) -> dict[str, Any]:
    """The whole non-streamed call; returns the response body (see the module docstring)."""
    endpoint = "images.edits" if call.edit else "images.generations"
    c, found = await _prepare(gw, caller, call, endpoint)

    async def attempt(offer: ProviderOffer, ctx: CallContext) -> ImageResult:
        adapter = registry.get(offer.provider_id, IMAGES)
        if adapter is None:
            raise ProviderError("unavailable", f"{offer.provider_id} has no images adapter", code="no_adapter")
        return await _generate(adapter, provider_request(call, offer), ctx)

    done = await calls.run(gw, c, found, attempt)
    return await _finish(gw, call, c, done, base_url)


async def _finish(gw: Any, call: ImageCall, c: calls.Call, done: calls.Done[ImageResult],
                  base_url: str) -> dict[str, Any]:
    result = done.result
    lines = pricing.image_lines(done.offer.spec.pricing, count=len(result.images), context=price_context(call, result),
                                usage=result.usage)
    try:
        if call.response_format == "url":
            await _store(gw, c.gen_id, result.images)
    except BaseException:
        await calls.close_call(gw, c, calls.Outcome("failed", done.offer.provider_id, result.usage.get("id"),
                                                    attempts=done.attempts, status_code=500,
                                                    error_code="storage_failed"))
        raise
    charged = await calls.close_call(gw, c, calls.Outcome(
        "completed", done.offer.provider_id, result.usage.get("id"), lines,
        {k: v for k, v in result.usage.items() if k != "id"} | {"images": len(result.images)}, done.attempts))
    return _body(gw, call, c, done, lines, charged, base_url)


# ---- streaming -----------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream(gw: Any, caller: calls.Caller, call: ImageCall, *, base_url: str) -> StreamingResponse:
    """``stream=true``: partial images as the provider sends them, then each final image (SSE)."""
    endpoint = "images.edits" if call.edit else "images.generations"
    kind = "image_edit" if call.edit else "image_generation"
    c, found = await _prepare(gw, caller, call, endpoint)

    async def attempt(offer: ProviderOffer, ctx: CallContext) -> tuple[AsyncIterator[Any], Any]:
        adapter = registry.get(offer.provider_id, IMAGES)
        if adapter is None:
            raise ProviderError("unavailable", f"{offer.provider_id} has no images adapter", code="no_adapter")
        req = provider_request(call, offer)
        streamer = getattr(adapter, "stream", None)
        if streamer is None:  # no partials: the final images are the only events
            result = await _generate(adapter, req, ctx)

            async def once() -> AsyncIterator[Any]:
                yield result
            it: AsyncIterator[Any] = once()
        else:
            it = streamer(req, ctx)
        first = await it.__anext__()
        return it, first

    done = await calls.run(gw, c, found, attempt)
    it, first = done.result
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            event = first
            while True:
                if isinstance(event, ImageResult):
                    event = await materialise(event, calls.context(gw, done.offer))
                    body = await _finish(gw, call, c, calls.Done(event, done.offer, done.attempts), base_url)
                    created = body["created"]
                    keys = ("size", "quality", "background", "output_format")
                    meta: dict[str, Any] = {k: body[k] for k in keys if k in body}
                    for item in body["data"]:
                        await queue.put(_sse(f"{kind}.completed", {"type": f"{kind}.completed", **item,
                                                                   "created_at": created, **meta,
                                                                   "usage": body["usage"]}))
                    return
                if isinstance(event, PartialImage):
                    await queue.put(_sse(f"{kind}.partial_image", {
                        "type": f"{kind}.partial_image", "b64_json": base64.b64encode(event.data).decode(),
                        "created_at": int(time.time()), "partial_image_index": event.index}))
                event = await it.__anext__()
        except (ProviderError, StopAsyncIteration) as e:
            msg = e.message if isinstance(e, ProviderError) else "the provider's stream ended without an image"
            await calls.close_call(gw, c, calls.Outcome("failed", done.offer.provider_id, attempts=done.attempts,
                                                        status_code=502, error_code="upstream_stream_failed",
                                                        error_message=msg))
            await queue.put(_sse("error", {"type": "error", "error": {"message": msg, "code": "upstream_error"}}))
        finally:
            await queue.put(None)

    task = asyncio.create_task(pump())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)

    async def body() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


_TASKS: set[asyncio.Task[None]] = set()

"""Fake Luma Dream Machine API for tests (docs/providers/luma.md; the ``lumaai`` SDK's types and
docs.lumalabs.ai "Video Generation" and "Errors" pages).

Fakes, under ``/dream-machine/v1``: POST /generations (video), GET /generations/{id},
DELETE /generations/{id} (204, recorded), GET /generations?limit=&offset= (list),
GET /credits and GET /ping. ``Authorization: Bearer <key>`` everywhere. Outputs are served by the
fake itself at ``/luma-cdn/{id}/video.mp4`` and ``/luma-cdn/{id}/thumb.jpg`` (no auth, like the
real CDN links in ``assets``).

Generations go queued (first ``queued_fraction`` of ``render_seconds``) → dreaming → completed, on
an injectable monotonic clock. Output: a real H.264 MP4 (PyAV; the OpenAI fake's cached renderer)
whose short side is the resolution (540/720/1080/2160) at the aspect ratio, lasting ``duration``.

Errors (choices where the docs are silent, see docs/providers/luma.md): business rules from Luma's
errors page → 400 ``{"detail": "<message>"}`` ("Prompt is required", "Prompt is too short, minimum
length is 3 characters", "Loop is not supported for end frame", "No keyframes provided", ...);
schema errors (unknown field, bad enum or type) → 422 FastAPI-style ``{"detail": [{type, loc, msg,
input}]}``; bad or missing key → 401 ``{"detail": "Invalid API key"}``; no credits → 402
``{"detail": "Insufficient credits"}``; rate limit → 429 ``{"detail": "Too many requests"}`` with
``Retry-After``; unknown id → 404 ``{"detail": "Generation not found"}``.
Keyframe image URLs must be http(s) (never fetched; a ``data:`` URL → 400, as Luma only takes
hosted images). Moderation happens after submit: a prompt containing a ``moderation_block_prompts``
word fails when it leaves the queue with failure_reason "Advanced prompt moderation failed".
"""
from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._common import FakeState, RecordedRequest, bearer, mentions, recorded, stage
from .hosted_images import attach
from .openai import render_media

PREFIX = "/dream-machine/v1"
MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
ASPECT_RATIOS = {"1:1": (1, 1), "16:9": (16, 9), "9:16": (9, 16), "4:3": (4, 3), "3:4": (3, 4),
                 "21:9": (21, 9), "9:21": (9, 21)}
RESOLUTIONS = {"540p": 540, "720p": 720, "1080p": 1080, "4k": 2160}
DURATIONS = {"5s": 5, "9s": 9}
CREATE_PARAMS = frozenset({"prompt", "model", "aspect_ratio", "resolution", "duration", "loop", "keyframes",
                           "callback_url", "generation_type", "concepts"})
MIN_PROMPT, MAX_PROMPT = 3, 5000


@dataclass
class Generation:
    id: str
    request: dict[str, Any]
    model: str
    width: int
    height: int
    seconds: int
    created_mono: float
    render_seconds: float
    fail: tuple[str, float] | None = None  # (failure_reason, at fraction of render time)


@dataclass
class FakeLumaState(FakeState):
    api_key: str = "luma-test"
    queued_fraction: float = 0.2
    reject_unknown_params: bool = True
    credit_balance: float = 1000.0
    # fault injection (also FakeState's: fail_next_creates/fail_status, create_delay_seconds, rate_limit_next)
    retry_after_seconds: float | None = 1.0
    no_credits: bool = False  # creates → 402 Insufficient credits
    moderation_block_prompts: list[str] = field(default_factory=list)
    fail_jobs: bool = False
    fail_reason: str = "Job failed"
    expire_outputs: bool = False  # CDN links answer 403 (expired signed URL)
    # recorded state (and FakeState.requests)
    generations: dict[str, Generation] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", PREFIX + "/generations")
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "generations", "deleted")

    def iso(self, mono: float) -> str:
        at = dt.datetime.fromtimestamp(self.wall(mono), dt.UTC)
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.headers = status, detail, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=self.headers)


def _schema_error(kind: str, loc: list[Any], msg: str, value: Any = None) -> ApiError:
    return ApiError(422, [{"type": kind, "loc": ["body", *loc], "msg": msg, "input": value}])


def _rate_limited(state: FakeLumaState) -> ApiError:
    return ApiError(429, "Too many requests", state.retry_after())


def _dimensions(resolution: str, ratio: tuple[int, int]) -> tuple[int, int]:
    short = RESOLUTIONS[resolution]
    a, b = ratio
    long = round(short * max(a, b) / min(a, b))
    long += long % 2
    return (long, short) if a >= b else (short, long)


def _literal(name: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise _schema_error("literal_error", [name], f"Input should be {options}", value)


def _keyframe(slot: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _schema_error("model_attributes_type", ["keyframes", slot], "Input should be a valid dictionary", value)
    kind = value.get("type")
    if kind == "image":
        url = value.get("url")
        if not isinstance(url, str) or not url:
            raise _schema_error("missing", ["keyframes", slot, "url"], "Field required", value)
        if url.startswith("data:") or not url.startswith(("http://", "https://")):
            raise ApiError(400, f"Invalid image url for {slot}: upload the image and pass its https url")
        return value
    if kind == "generation":
        if not isinstance(value.get("id"), str):
            raise _schema_error("missing", ["keyframes", slot, "id"], "Field required", value)
        return value
    raise _schema_error("union_tag_invalid", ["keyframes", slot, "type"],
                        "Input tag does not match any of the expected tags: 'generation', 'image'", kind)


def validate_create(body: dict[str, Any], state: FakeLumaState) -> dict[str, Any]:
    if state.reject_unknown_params:
        for key in body:
            if key not in CREATE_PARAMS:
                raise _schema_error("extra_forbidden", [key], "Extra inputs are not permitted", body[key])
    if body.get("generation_type", "video") != "video":
        raise ApiError(400, "Unknown request type")
    model = body.get("model", "ray-2")
    _literal("model", model, MODELS)
    aspect = body.get("aspect_ratio", "16:9")
    _literal("aspect_ratio", aspect, tuple(ASPECT_RATIOS))
    resolution = body.get("resolution", "720p")
    _literal("resolution", resolution, tuple(RESOLUTIONS))
    duration = body.get("duration", "5s")
    _literal("duration", duration, tuple(DURATIONS))
    loop = body.get("loop", False)
    if not isinstance(loop, bool):
        raise _schema_error("bool_type", ["loop"], "Input should be a valid boolean", loop)
    callback = body.get("callback_url")
    if callback is not None and not (isinstance(callback, str) and callback.startswith(("http://", "https://"))):
        raise _schema_error("url_parsing", ["callback_url"], "Input should be a valid URL", callback)
    keyframes = body.get("keyframes")
    frames: dict[str, Any] = {}
    if keyframes is not None:
        if not isinstance(keyframes, dict) or set(keyframes) - {"frame0", "frame1"}:
            raise _schema_error("extra_forbidden", ["keyframes"], "Only frame0 and frame1 are allowed", keyframes)
        frames = {k: _keyframe(k, v) for k, v in keyframes.items() if v is not None}
        if not frames:
            raise ApiError(400, "No keyframes provided")
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _schema_error("string_type", ["prompt"], "Input should be a valid string", prompt)
    if not prompt:
        if not frames:
            raise ApiError(400, "Prompt is required")
    elif len(prompt) < MIN_PROMPT:
        raise ApiError(400, f"Prompt is too short, minimum length is {MIN_PROMPT} characters")
    elif len(prompt) > MAX_PROMPT:
        raise ApiError(400, f"Prompt is too long, maximum length is {MAX_PROMPT} characters")
    if loop and "frame0" in frames and "frame1" in frames:
        raise ApiError(400, "Loop is not supported for keyframes")
    if loop and "frame1" in frames:
        raise ApiError(400, "Loop is not supported for end frame")
    width, height = _dimensions(resolution, ASPECT_RATIOS[aspect])
    return {"model": model, "prompt": prompt or "", "width": width, "height": height,
            "seconds": DURATIONS[duration]}


LUMA_STAGES = {"queued": "queued", "running": "dreaming", "done": "completed", "failed": "failed"}


def _state_of(gen: Generation, state: FakeLumaState) -> str:
    return LUMA_STAGES[stage(state.clock() - gen.created_mono, gen.render_seconds, state.queued_fraction,
                             gen.fail[1] if gen.fail is not None else None)]


def generation_object(gen: Generation, state: FakeLumaState, base_url: str) -> dict[str, Any]:
    status = _state_of(gen, state)
    cdn = f"{base_url.rstrip('/')}/luma-cdn/{gen.id}"
    assets: dict[str, Any] | None = None
    if status == "completed":
        assets = {"video": f"{cdn}/video.mp4", "image": f"{cdn}/thumb.jpg", "progress_video": None}
    elif status == "dreaming":
        assets = {"video": None, "image": None, "progress_video": None}
    return {
        "id": gen.id, "generation_type": "video", "state": status,
        "failure_reason": gen.fail[0] if status == "failed" and gen.fail else None,
        "created_at": state.iso(gen.created_mono), "assets": assets, "model": gen.model,
        "request": {"generation_type": "video", **gen.request},
    }


def create_app(api_key: str = "luma-test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeLumaState`` fields. State: ``app.state.fake``."""
    state = FakeLumaState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def gate(request: Request, rec: RecordedRequest) -> None:
        key = bearer(request)
        if not key or key != state.api_key:
            raise ApiError(401, "Invalid API key")
        if state.take_rate_limit():
            raise _rate_limited(state)

    def endpoint(handler: Callable[..., Any], *, auth: bool = True) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=ApiError, answer=lambda exc, rec: exc.response(),
                        gate=gate if auth else None)

    def get(request: Request) -> Generation:
        gen = state.generations.get(request.path_params["gen_id"])
        if gen is None:
            raise ApiError(404, "Generation not found")
        return gen

    async def create(request: Request, rec: RecordedRequest) -> Response:
        if (failure := state.take_create_failure()) is not None:
            if failure == 429:
                raise _rate_limited(state)
            raise ApiError(failure, "Internal server error" if failure < 503 else "Service temporarily unavailable")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise _schema_error("json_invalid", [], "JSON decode error") from None
        if not isinstance(body, dict):
            raise _schema_error("model_attributes_type", [], "Input should be a valid dictionary", body)
        rec.body = body
        params = validate_create(body, state)
        if state.no_credits:
            raise ApiError(402, "Insufficient credits")
        fail = None
        if mentions(params["prompt"], state.moderation_block_prompts):
            fail = ("Advanced prompt moderation failed", state.queued_fraction)
        elif state.fail_jobs:
            fail = (state.fail_reason, 1.0)
        gen = Generation(id=str(uuid.uuid4()), request=body, model=params["model"], width=params["width"],
                         height=params["height"], seconds=params["seconds"], created_mono=state.clock(),
                         render_seconds=state.render_seconds, fail=fail)
        state.generations[gen.id] = gen
        await state.create_delay()
        return JSONResponse(generation_object(gen, state, str(request.base_url)), status_code=201)

    async def retrieve(request: Request, rec: RecordedRequest) -> Response:
        return JSONResponse(generation_object(get(request), state, str(request.base_url)))

    async def delete(request: Request, rec: RecordedRequest) -> Response:
        gen = state.generations.pop(get(request).id)
        state.deleted.append(gen.id)
        return Response(status_code=204)

    async def list_generations(request: Request, rec: RecordedRequest) -> Response:
        try:
            limit = int(request.query_params.get("limit", "10"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            raise _schema_error("int_parsing", ["limit"], "Input should be a valid integer") from None
        gens = list(reversed(state.generations.values()))
        page = gens[offset: offset + limit]
        return JSONResponse({"generations": [generation_object(g, state, str(request.base_url)) for g in page],
                             "has_more": offset + limit < len(gens), "count": len(page)})

    async def credits(request: Request, rec: RecordedRequest) -> Response:
        return JSONResponse({"credit_balance": 0.0 if state.no_credits else state.credit_balance})

    async def ping(request: Request, rec: RecordedRequest) -> Response:
        return JSONResponse({"message": "pong"})

    async def cdn(request: Request, rec: RecordedRequest) -> Response:
        gen = state.generations.get(request.path_params["gen_id"])
        if gen is None or state.expire_outputs or _state_of(gen, state) != "completed":
            return Response("<Error><Code>AccessDenied</Code></Error>", status_code=403,
                            media_type="application/xml")
        if request.path_params["asset"] == "thumb.jpg":
            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (gen.width, gen.height), (90, 120, 200)).save(buf, format="JPEG")
            return Response(buf.getvalue(), media_type="image/jpeg")
        if request.path_params["asset"] != "video.mp4":
            return Response(status_code=404)
        data = await run_in_threadpool(render_media, "video", f"{gen.width}x{gen.height}", str(gen.seconds))
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return ApiError(status, "Not Found" if status == 404 else str(getattr(exc, "detail", "")) or "Error").response()

    app = Starlette(routes=[
        Route(PREFIX + "/generations", endpoint(create), methods=["POST"]),
        Route(PREFIX + "/generations", endpoint(list_generations), methods=["GET"]),
        Route(PREFIX + "/generations/{gen_id}", endpoint(retrieve), methods=["GET"]),
        Route(PREFIX + "/generations/{gen_id}", endpoint(delete), methods=["DELETE"]),
        Route(PREFIX + "/credits", endpoint(credits), methods=["GET"]),
        Route(PREFIX + "/ping", endpoint(ping), methods=["GET"]),
        Route("/luma-cdn/{gen_id}/{asset}", endpoint(cdn, auth=False), methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return attach(app, "luma", api_key)  # the image API next to the video one

"""Fake xAI video API (Grok Imagine) for tests and manual runs (shared/reference/aistats-gateway.md §4,
xAI's video generation guide, the Vercel AI SDK's ``xai-video-model.ts``).

Fakes ``POST /v1/videos/generations`` (JSON; ``Authorization: Bearer``; ``Idempotency-Key`` returns the
original request id) answering ``{"request_id"}``, ``GET /v1/videos/{request_id}`` and the temporary
video links (``GET /xai-vidgen-bucket/xai-video-{id}.mp4`` on this server, no auth).

Request fields: ``model`` (``grok-imagine-video``, ``grok-imagine-video-1.5``), ``prompt`` (required,
≤ 4096 chars), ``duration`` (integer 1-15, default 8), ``aspect_ratio`` (1:1 16:9 9:16 4:3 3:4 3:2 2:3,
default 16:9), ``resolution`` (480p/720p, and 1080p on 1.5; default 480p), ``image: {url}`` (https URL
or image data URI; exactly one is required on 1.5), ``reference_images: [{url}]`` (1-7, not with
``image``), ``user``. Unknown fields are rejected (``reject_unknown_params``).

Status goes ``pending`` (with an integer ``progress``) → ``done`` with
``video: {url, duration, respect_moderation: true}``, ``model`` and ``usage.cost_in_usd_ticks``, on an
injectable clock. Errors use xAI's ``{"code": "<status text>", "error": "<message>"}``: a wrong key is
**HTTP 400** "Incorrect API key provided…", no credits 403, rate limit 429, bad input 400/422.
Faults: ``fail_next_creates``/``fail_status``, ``rate_limit_next``, ``no_credits``,
``moderation_fail_prompts`` (the job ends ``done`` with ``respect_moderation: false`` and no URL),
``fail_jobs`` (``failed`` with ``error.code``), ``expire_requests`` (``expired``), ``expire_outputs``
(the link answers 404).

Choices the docs leave open: a missing Authorization header is 401 ``{"code": "Unauthenticated"}``;
unknown request ids are 404; outputs are 854x480 / 1280x720 / 1920x1080 for 16:9 (the short side
from the resolution, the long side from the ratio); the link stays valid for an hour.
Not faked: ``/v1/videos/edits``, ``/v1/videos/extensions``, file ids, output upload targets.
"""
from __future__ import annotations

import base64
import binascii
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

from ._common import FakeState, RecordedRequest, bearer, mentions, recorded, remember, replay, stepped_progress
from .openai import render_media

MODELS = ("grok-imagine-video", "grok-imagine-video-1.5")
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
RESOLUTIONS = {"grok-imagine-video": ("480p", "720p"), "grok-imagine-video-1.5": ("480p", "720p", "1080p")}
SHORT_SIDE = {"480p": 480, "720p": 720, "1080p": 1080}
FIELDS = frozenset({"model", "prompt", "duration", "aspect_ratio", "resolution", "image", "reference_images", "user"})
MAX_PROMPT = 4096
LINK_TTL_SECONDS = 3600
TICKS_PER_SECOND = {"480p": 500_000_000, "720p": 700_000_000, "1080p": 1_000_000_000}  # $0.05/s = 5e8 ticks
INVALID = "Client specified an invalid argument"


@dataclass
class Job:
    id: str
    model: str
    prompt: str
    duration: int
    aspect_ratio: str
    resolution: str
    created_mono: float
    render_seconds: float
    body: dict[str, Any]
    outcome: str = "done"  # done | moderated | failed | expired
    file_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    idempotency_key: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        short = SHORT_SIDE[self.resolution]
        w, h = (int(p) for p in self.aspect_ratio.split(":"))
        long = round(short * max(w, h) / min(w, h))
        long += long % 2
        return (long, short) if w >= h else (short, long)


@dataclass
class FakeXAIState(FakeState):
    api_key: str = "xai-test"
    steps: int = 10
    reject_unknown_params: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status, rate_limit_next/retry_after_seconds)
    no_credits: bool = False
    moderation_fail_prompts: list[str] = field(default_factory=list)
    fail_jobs: bool = False
    fail_code: str = "internal_error"
    fail_message: str = "Video generation failed due to an internal error."
    expire_requests: bool = False
    expire_outputs: bool = False
    # recorded state (and FakeState.requests)
    jobs: dict[str, Job] = field(default_factory=dict)
    idempotency: dict[str, str] = field(default_factory=dict)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", "/v1/videos/generations")
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "jobs", "idempotency")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = INVALID, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "error": self.message}, status_code=self.status, headers=self.headers)


def _masked(key: str) -> str:
    return f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"


def _check_url(value: Any, where: str) -> None:
    if not isinstance(value, dict) or set(value) != {"url"} or not isinstance(value["url"], str):
        raise ApiError(422, f"Failed to deserialize the JSON body into the target type: {where}: expected an "
                            "object with a url")
    url = value["url"]
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        try:
            if not (head.startswith("data:image/") and head.endswith(";base64")):
                raise ValueError
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{where}.url: invalid image data URI") from None
    elif not url.startswith("https://"):
        raise ApiError(400, f"{where}.url: only https URLs and base64 data URIs are supported")


def validate(body: Any, reject_unknown: bool = True) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "Failed to deserialize the JSON body into the target type: expected an object")
    if reject_unknown:
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise ApiError(422, f"Failed to deserialize the JSON body into the target type: unknown field "
                                f"`{unknown[0]}`")
    model = body.get("model", "grok-imagine-video")
    if model not in MODELS:
        raise ApiError(404, f"The model {model} does not exist or your team does not have access to it.",
                       "Some requested entity was not found")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "prompt: a non-empty prompt is required")
    if len(prompt) > MAX_PROMPT:
        raise ApiError(400, f"prompt: at most {MAX_PROMPT} characters")
    duration = body.get("duration", 8)
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise ApiError(422, "Failed to deserialize the JSON body into the target type: duration: invalid type, "
                            "expected an integer")
    if not 1 <= duration <= 15:
        raise ApiError(400, f"duration must be between 1 and 15 seconds, got {duration}")
    aspect = body.get("aspect_ratio", "16:9")
    if aspect not in ASPECT_RATIOS:
        raise ApiError(400, f"Invalid aspect_ratio {aspect!r}; supported: {', '.join(ASPECT_RATIOS)}")
    resolution = body.get("resolution", "480p")
    if resolution not in RESOLUTIONS[model]:
        raise ApiError(400, f"Invalid resolution {resolution!r} for {model}; supported: "
                            f"{', '.join(RESOLUTIONS[model])}")
    if "image" in body:
        _check_url(body["image"], "image")
    refs = body.get("reference_images")
    if refs is not None:
        if not isinstance(refs, list) or not 1 <= len(refs) <= 7:
            raise ApiError(400, "reference_images: between 1 and 7 images")
        for n, ref in enumerate(refs):
            _check_url(ref, f"reference_images[{n}]")
        if "image" in body:
            raise ApiError(400, "image and reference_images cannot be used together")
    if model == "grok-imagine-video-1.5" and "image" not in body:
        raise ApiError(400, "grok-imagine-video-1.5 requires exactly one input image (image.url)")
    if "user" in body and not isinstance(body["user"], str):
        raise ApiError(422, "Failed to deserialize the JSON body into the target type: user: expected a string")
    return {"model": model, "prompt": prompt, "duration": duration, "aspect_ratio": aspect, "resolution": resolution}


def job_status(job: Job, state: FakeXAIState) -> tuple[str, int]:
    elapsed = state.clock() - job.created_mono
    if elapsed >= job.render_seconds:
        return ("expired" if job.outcome == "expired" else "failed" if job.outcome == "failed" else "done"), 100
    return "pending", stepped_progress(elapsed / job.render_seconds, state.steps)


def job_object(job: Job, state: FakeXAIState, base_url: str) -> dict[str, Any]:
    status, progress = job_status(job, state)
    if status == "pending":
        return {"status": "pending", "model": job.model, "progress": progress}
    if status == "expired":
        return {"status": "expired", "model": job.model}
    if status == "failed":
        return {"status": "failed", "video": {"duration": 0, "respect_moderation": True}, "model": "",
                "error": {"code": state.fail_code, "message": state.fail_message}}
    if job.outcome == "moderated":
        return {"status": "done", "video": {"url": "", "duration": 0, "respect_moderation": False},
                "model": job.model, "progress": 100, "usage": {"cost_in_usd_ticks": 0}}
    return {"status": "done", "model": job.model, "progress": 100,
            "video": {"url": f"{base_url}/xai-vidgen-bucket/xai-video-{job.file_id}.mp4", "duration": job.duration,
                      "respect_moderation": True},
            "usage": {"cost_in_usd_ticks": TICKS_PER_SECOND[job.resolution] * job.duration}}


def create_app(api_key: str = "xai-test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeXAIState`` fields. State: ``app.state.fake``."""
    state = FakeXAIState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def gate(request: Request, rec: RecordedRequest) -> None:
        if not request.headers.get("authorization", ""):
            raise ApiError(401, "Missing Authorization header: provide your API key as "
                                "'Authorization: Bearer <key>'.", "Unauthenticated")
        auth = request.headers["authorization"]
        token = bearer(request) if auth.startswith("Bearer ") else auth
        if token != state.api_key:
            raise ApiError(400, f"Incorrect API key provided: {_masked(token)}. You can obtain an API "
                                "key from https://console.x.ai.")
        if state.take_rate_limit():
            raise ApiError(429, "Too many requests: your team has exceeded its video generation rate "
                                "limit.", "Some resource has been exhausted", state.retry_after())

    def endpoint(handler: Callable[..., Any], *, api: bool = True) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=ApiError, answer=lambda exc, rec: exc.response(),
                        gate=gate if api else None)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @endpoint
    async def generate(request: Request, rec: RecordedRequest) -> Response:
        if (failure := state.take_create_failure()) is not None:
            raise ApiError(failure, "The service is currently unavailable." if failure >= 500
                           else f"Injected failure ({failure}).", "Service unavailable" if failure >= 500 else INVALID)
        if state.no_credits:
            raise ApiError(403, "Your team team-fake has either used all available credits or reached its monthly "
                                "spending limit. To continue making API requests, please purchase more credits or "
                                "raise your spending limit.",
                           "The caller does not have permission to execute the specified operation")
        try:
            rec.body = await request.json()
        except ValueError:
            raise ApiError(400, "Failed to parse the request body as JSON.") from None
        params = validate(rec.body, state.reject_unknown_params)
        key = request.headers.get("idempotency-key")
        if (earlier := replay(state.idempotency, state.jobs, key)) is not None:
            return JSONResponse({"request_id": earlier.id})
        outcome = "done"
        if mentions(params["prompt"], state.moderation_fail_prompts):
            outcome = "moderated"
        elif state.fail_jobs:
            outcome = "failed"
        elif state.expire_requests:
            outcome = "expired"
        job = Job(str(uuid.uuid4()), params["model"], params["prompt"], params["duration"], params["aspect_ratio"],
                  params["resolution"], state.clock(), state.render_seconds, rec.body, outcome)
        state.jobs[job.id] = job
        remember(state.idempotency, key, job.id)
        job.idempotency_key = key or None
        return JSONResponse({"request_id": job.id})

    @endpoint
    async def retrieve(request: Request, rec: RecordedRequest) -> Response:
        job = state.jobs.get(request.path_params["request_id"])
        if job is None:
            raise ApiError(404, f"No video generation request with id {request.path_params['request_id']}.",
                           "Some requested entity was not found")
        return JSONResponse(job_object(job, state, base_url(request)))

    async def link(request: Request, rec: RecordedRequest) -> Response:
        file_id = request.path_params["file_id"]
        job = next((j for j in state.jobs.values() if j.file_id == file_id), None)
        if job is None or job.outcome != "done" or job_status(job, state)[0] != "done" or state.expire_outputs or \
                state.clock() >= job.created_mono + job.render_seconds + LINK_TTL_SECONDS:
            return Response("<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code></Error>",
                            status_code=404, media_type="application/xml")
        w, h = job.size
        data = await run_in_threadpool(render_media, "video", f"{w}x{h}", str(job.duration))
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return ApiError(status, f"{request.method} {request.url.path} not found" if status in (404, 405) else
                        str(getattr(exc, "detail", "")), "Some requested entity was not found").response()

    from .inference_common import InferenceState  # the chat/embeddings routes: openai_inference.py
    from .openai_inference import inference_routes
    from .xai_images import XaiImageState, image_routes  # POST /v1/images/generations: xai_images.py

    app = Starlette(routes=[
        *image_routes(images := XaiImageState(api_key=api_key)),
        Route("/v1/videos/generations", generate, methods=["POST"]),
        Route("/v1/videos/{request_id}", retrieve, methods=["GET"]),
        Route("/xai-vidgen-bucket/xai-video-{file_id}.mp4", endpoint(link, api=False), methods=["GET"]),
        *inference_routes(inference := InferenceState(api_key=api_key, provider="x-ai", reject_unknown_params=False),
                          flavor="compat", error_style="xai"),  # chat completions and embeddings
    ], exception_handlers={HTTPException: http_error})
    app.state.fake, app.state.inference, app.state.images = state, inference, images
    return app

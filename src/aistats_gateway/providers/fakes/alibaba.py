"""Fake Alibaba DashScope video synthesis API (Wan) for tests (shared/reference/provider-apis.md §4.3,
docs/providers/alibaba.md).

Routes (``Authorization: Bearer <key>`` except the video link):

* ``POST /api/v1/services/aigc/video-generation/video-synthesis`` — requires **``X-DashScope-Async: enable``**
  (without it: 403 ``AccessDenied`` "current user api does not support synchronous calls", as upstream).
  Body ``{model, input:{prompt, negative_prompt, img_url | first_frame_url + last_frame_url, audio_url},
  parameters:{size "W*H" (text-to-video) | resolution "720P" (image-to-video, key frames), duration, seed,
  prompt_extend, watermark, audio, shot_type}}`` → ``{request_id, output:{task_id, task_status:"PENDING"}}``.
* ``GET /api/v1/tasks/{task_id}`` → ``{request_id, output:{task_id, task_status, submit_time, scheduled_time,
  end_time, video_url, orig_prompt, actual_prompt, code?, message?}, usage}``; PENDING → RUNNING → SUCCEEDED |
  FAILED, or CANCELED; an unknown id answers HTTP 200 with ``task_status: "UNKNOWN"``.
* ``POST /api/v1/tasks/{task_id}/cancel`` — only while PENDING (otherwise 400 ``UnsupportedOperation``).
* ``GET /oss/{token}.mp4`` — the signed OSS link (no auth), valid 24 h after the task ends; afterwards 403.

Errors: ``{code, message, request_id}`` — 401 ``InvalidApiKey``, 400 ``InvalidParameter`` /
``BadRequest.EmptyModel`` / ``BadRequest.EmptyInput``, 400 ``DataInspectionFailed`` (``sensitive_input_prompts``),
400 ``Arrearage`` (``arrearage``), 429 ``Throttling.RateQuota`` (``rate_limit_next``), 500 ``InternalError``.
A task whose prompt matches ``sensitive_output_prompts`` ends FAILED with ``DataInspectionFailed``.

Models (``MODELS``): wan2.6-t2v / -i2v / -i2v-flash (720P/1080P, 2–15 s, audio, shot_type), wan2.5-t2v-preview /
-i2v-preview (480P/720P/1080P, 5 or 10 s, audio), wan2.2-t2v-plus / -i2v-plus (480P/1080P, 5 s), wan2.2-i2v-flash
(480P/720P/1080P, 5 s), wan2.2-kf2v-flash (first + last frame). Text-to-video validates ``size`` against the
tier's table; image-to-video validates ``resolution``; the fake (``strict_params``) rejects ``size`` on
image-to-video and ``resolution`` on text-to-video so that an adapter mixing them up is caught. Images are
http(s) URLs or base64 data URLs (decoded: sides 360–2000 px). Output: a real H.264 MP4 (8 fps) of the
requested size; image-to-video keeps a decodable first frame's aspect ratio at about the tier's pixel count.

Chat and embeddings in DashScope's OpenAI-compatible mode are under ``/compatible-mode/v1``
(:mod:`.dashscope_compat`; their state is ``app.state.inference``).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ._common import FakeState, RecordedRequest, bearer, mentions, recorded
from .hosted_images import attach
from .openai import render_media

CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
URL_TTL_SECONDS = 24 * 3600
SIZES = {
    "480P": ("832*480", "480*832", "624*624"),
    "720P": ("1280*720", "720*1280", "960*960", "1088*832", "832*1088"),
    "1080P": ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632"),
}


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # t2v | i2v | kf2v
    tiers: tuple[str, ...]
    durations: tuple[int, ...]
    audio: bool = False
    shot_type: bool = False
    max_prompt: int = 2000


_WAN26 = tuple(range(2, 16))
MODELS = {
    "wan2.6-t2v": ModelSpec("t2v", ("720P", "1080P"), _WAN26, audio=True, shot_type=True, max_prompt=1500),
    "wan2.6-i2v": ModelSpec("i2v", ("720P", "1080P"), _WAN26, audio=True, shot_type=True, max_prompt=1500),
    "wan2.6-i2v-flash": ModelSpec("i2v", ("720P", "1080P"), _WAN26, audio=True, shot_type=True, max_prompt=1500),
    "wan2.5-t2v-preview": ModelSpec("t2v", ("480P", "720P", "1080P"), (5, 10), audio=True),
    "wan2.5-i2v-preview": ModelSpec("i2v", ("480P", "720P", "1080P"), (5, 10), audio=True),
    "wan2.2-t2v-plus": ModelSpec("t2v", ("480P", "1080P"), (5,), max_prompt=800),
    "wan2.2-i2v-plus": ModelSpec("i2v", ("480P", "1080P"), (5,), max_prompt=800),
    "wan2.2-i2v-flash": ModelSpec("i2v", ("480P", "720P", "1080P"), (5,), max_prompt=800),
    "wan2.2-kf2v-flash": ModelSpec("kf2v", ("480P", "720P", "1080P"), (5,), max_prompt=800),
}
INPUT_FIELDS = frozenset({"prompt", "negative_prompt", "img_url", "first_frame_url", "last_frame_url", "audio_url",
                          "template"})
PARAM_FIELDS = frozenset({"size", "resolution", "duration", "seed", "prompt_extend", "watermark", "audio",
                          "shot_type"})


@dataclass
class Task:
    id: str
    model: str
    prompt: str
    duration: int
    width: int
    height: int
    created_mono: float
    render_seconds: float
    body: dict[str, Any]
    prompt_extend: bool = True
    fail: tuple[str, str] | None = None
    cancelled_mono: float | None = None


@dataclass
class DashScopeRequest(RecordedRequest):
    request_id: str = ""  # the request_id of the answer


@dataclass
class FakeAlibabaState(FakeState):
    api_key: str = "sk-dashscope-test"
    queued_fraction: float = 0.3  # PENDING for this fraction of render_seconds, then RUNNING
    strict_params: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status, rate_limit_next → 429
    # Throttling.RateQuota with retry_after_seconds, create_delay_seconds)
    arrearage: bool = False  # creates → 400 Arrearage
    sensitive_input_prompts: list[str] = field(default_factory=list)
    sensitive_output_prompts: list[str] = field(default_factory=list)
    fail_jobs: bool = False
    fail_job_code: str = "InternalError.Algo"
    fail_job_message: str = "An internal error has occured during execution (fake)."
    expire_outputs: bool = False
    # recorded state (and FakeState.requests)
    tasks: dict[str, Task] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # token → task id
    cancels: list[str] = field(default_factory=list)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", CREATE)
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "tasks", "links", "cancels")

    def stamp(self, mono: float) -> str:
        """DashScope's time format, e.g. ``2025-01-08 16:43:03.123``."""
        when = dt.datetime.fromtimestamp(self.wall(mono))
        return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"



class DashScopeError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self, request_id: str) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message, "request_id": request_id},
                            status_code=self.status, headers=self.headers)


def _invalid(message: str) -> DashScopeError:
    return DashScopeError(400, "InvalidParameter", message)


def _image_size(value: Any, name: str) -> tuple[int, int] | None:
    if not isinstance(value, str) or not value:
        raise _invalid(f"The parameter {name} is required and must be a string.")
    if value.startswith(("http://", "https://")):
        return None
    head, _, payload = value.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise DashScopeError(400, "InvalidURL", f"Invalid URL provided in your request: {name}.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"The base64 image in {name} is malformed.") from None
    if len(data) > 10 * 1024 * 1024:
        raise _invalid(f"The image in {name} exceeds 10MB.")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Exception:
        raise DashScopeError(400, "InvalidParameter.DataInspection", f"The media format of {name} is not "
                             "supported or incorrect for the data inspection.") from None
    if not (360 <= w <= 2000 and 360 <= h <= 2000):
        raise _invalid(f"The image in {name} must be 360 to 2000 pixels wide and high, got {w}x{h}.")
    return w, h


def _i2v_dimensions(tier: str, image: tuple[int, int] | None) -> tuple[int, int]:
    w0, h0 = (int(v) for v in SIZES[tier][0].split("*"))
    if image is None:
        return w0, h0
    area, aspect = w0 * h0, image[0] / image[1]
    height = math.sqrt(area / aspect)
    return max(2, round(height * aspect / 2) * 2), max(2, round(height / 2) * 2)


def _validate(body: dict[str, Any], state: FakeAlibabaState) -> dict[str, Any]:
    model = body.get("model")
    if not model:
        raise DashScopeError(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        raise _invalid("Model not exist.")
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        raise DashScopeError(400, "BadRequest.EmptyInput", "Required input parameter missing from request.")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _invalid("The parameters field must be an object.")
    if state.strict_params:
        for key in inp:
            if key not in INPUT_FIELDS:
                raise _invalid(f"The parameter input.{key} is not supported.")
        for key in params:
            if key not in PARAM_FIELDS:
                raise _invalid(f"The parameter parameters.{key} is not supported.")
    prompt = inp.get("prompt", "")
    if not isinstance(prompt, str):
        raise _invalid("input.prompt must be a string.")
    if spec.kind == "t2v" and not prompt.strip():
        raise _invalid("input.prompt is required for text-to-video.")
    if len(prompt) > spec.max_prompt:
        raise _invalid(f"input.prompt exceeds {spec.max_prompt} characters.")
    negative = inp.get("negative_prompt", "")
    if not isinstance(negative, str) or len(negative) > 500:
        raise _invalid("input.negative_prompt must be a string of at most 500 characters.")
    image = None
    if spec.kind == "i2v":
        image = _image_size(inp.get("img_url"), "input.img_url")
    elif spec.kind == "kf2v":
        image = _image_size(inp.get("first_frame_url"), "input.first_frame_url")
        if "last_frame_url" in inp:
            _image_size(inp["last_frame_url"], "input.last_frame_url")
    else:
        for key in ("img_url", "first_frame_url", "last_frame_url"):
            if key in inp:
                raise _invalid(f"The parameter input.{key} is not supported by {model}.")
    if spec.kind == "t2v":
        if "resolution" in params and state.strict_params:
            raise _invalid(f"{model} takes parameters.size (e.g. 1280*720), not parameters.resolution.")
        allowed = [s for tier in spec.tiers for s in SIZES[tier]]
        size = params.get("size", "1920*1080" if "1080P" in spec.tiers else SIZES[spec.tiers[-1]][0])
        if size not in allowed:
            raise _invalid(f"The size is not match the allowed size {allowed}.")
        width, height = (int(v) for v in size.split("*"))
    else:
        if "size" in params and state.strict_params:
            raise _invalid(f"{model} takes parameters.resolution (e.g. 720P), not parameters.size.")
        tier = params.get("resolution", "1080P" if "1080P" in spec.tiers else spec.tiers[-1])
        if tier not in spec.tiers:
            raise _invalid(f"The resolution must be one of {list(spec.tiers)} for {model}.")
        width, height = _i2v_dimensions(tier, image)
    duration = params.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration not in spec.durations:
        raise _invalid(f"The duration must be one of {list(spec.durations)} for {model}.")
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2147483647):
        raise _invalid("The seed must be an integer in [0, 2147483647].")
    for name in ("prompt_extend", "watermark", "audio"):
        if name in params and not isinstance(params[name], bool):
            raise _invalid(f"parameters.{name} must be a boolean.")
    if "audio" in params and not spec.audio:
        raise _invalid(f"{model} does not support parameters.audio.")
    if "shot_type" in params and (not spec.shot_type or params["shot_type"] not in ("single", "multi")):
        raise _invalid("parameters.shot_type must be single or multi and is only supported by wan2.6 models.")
    return {"model": model, "prompt": prompt, "duration": duration, "width": width, "height": height,
            "prompt_extend": params.get("prompt_extend", True)}


def _status(task: Task, state: FakeAlibabaState) -> tuple[str, float | None, float | None]:
    """(task_status, monotonic scheduled time or None, monotonic end time or None)."""
    if task.cancelled_mono is not None:
        return "CANCELED", None, task.cancelled_mono
    now, total = state.clock(), task.render_seconds
    started = task.created_mono + total * state.queued_fraction
    if now < started:
        return "PENDING", None, None
    if task.fail is not None and task.fail[0] == "DataInspectionFailed":
        return "FAILED", started, started
    if now >= task.created_mono + total:
        return ("FAILED" if task.fail else "SUCCEEDED"), started, task.created_mono + total
    return "RUNNING", started, None


def create_app(api_key: str = "sk-dashscope-test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeAlibabaState`` fields. State: ``app.state.fake``."""
    state = FakeAlibabaState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def record(request: Request) -> DashScopeRequest:
        rec = DashScopeRequest(request.method, request.url.path, dict(request.query_params),
                               {k.lower(): v for k, v in request.headers.items()})
        rec.request_id = str(uuid.uuid4())
        return rec

    def gate(request: Request, rec: DashScopeRequest) -> None:
        key = bearer(request)
        if key != state.api_key:
            raise DashScopeError(401, "InvalidApiKey", "Invalid API-key provided." if key else
                                 "No API-key provided.")
        if state.take_rate_limit():
            raise DashScopeError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please "
                                 "try again later.", state.retry_after("Retry-After") or None)

    def endpoint(handler: Callable[..., Any], *, auth: bool = True) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=DashScopeError, answer=lambda exc, rec: exc.response(rec.request_id),
                        gate=gate if auth else None, record=record, args=lambda request, rec: (rec.request_id,))

    def task_view(task: Task, request: Request, request_id: str) -> dict[str, Any]:
        status, scheduled, end = _status(task, state)
        out: dict[str, Any] = {"task_id": task.id, "task_status": status, "submit_time": state.stamp(task.created_mono)}
        if scheduled is not None:
            out["scheduled_time"] = state.stamp(scheduled)
        if end is not None:
            out["end_time"] = state.stamp(end)
        body: dict[str, Any] = {"request_id": request_id, "output": out}
        if status == "FAILED" and task.fail:
            out["code"], out["message"] = task.fail
        if status == "SUCCEEDED":
            token = next((t for t, tid in state.links.items() if tid == task.id), None)
            if token is None:
                token = secrets.token_urlsafe(18)
                state.links[token] = task.id
            out["video_url"] = (f"{str(request.base_url).rstrip('/')}/oss/{token}.mp4?Expires="
                                f"{int(time.time()) + URL_TTL_SECONDS}&OSSAccessKeyId=fake&Signature="
                                f"{secrets.token_hex(8)}")
            out["orig_prompt"] = task.prompt
            out["actual_prompt"] = task.prompt + (" Cinematic lighting, detailed." if task.prompt_extend else "")
            body["usage"] = {"video_count": 1, "duration": task.duration, "output_video_duration": task.duration,
                             "SR": min(task.width, task.height), "size": f"{task.width}*{task.height}"}
        return body

    async def create(request: Request, rec: RecordedRequest, request_id: str) -> Response:
        if request.headers.get("x-dashscope-async", "").lower() != "enable":
            raise DashScopeError(403, "AccessDenied", "current user api does not support synchronous calls")
        if (failure := state.take_create_failure()) is not None:
            if failure >= 500:
                raise DashScopeError(failure, "InternalError" if failure == 500 else
                                     "ServiceUnavailable", "An internal error has occured, please try again later "
                                     "or contact service support.")
            raise DashScopeError(failure, "InjectedFailure", f"Injected failure ({failure}).")
        try:
            body = await request.json()
        except ValueError:
            raise _invalid("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        rec.body = body
        params = _validate(body, state)
        if state.arrearage:
            raise DashScopeError(400, "Arrearage", "Access denied, please make sure your account is in good "
                                 "standing.")
        if mentions(params["prompt"], state.sensitive_input_prompts):
            raise DashScopeError(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
        fail = None
        if mentions(params["prompt"], state.sensitive_output_prompts):
            fail = ("DataInspectionFailed", "Output data may contain inappropriate content.")
        elif state.fail_jobs:
            fail = (state.fail_job_code, state.fail_job_message)
        task = Task(str(uuid.uuid4()), params["model"], params["prompt"], params["duration"], params["width"],
                    params["height"], state.clock(), state.render_seconds, body, params["prompt_extend"], fail)
        state.tasks[task.id] = task
        await state.create_delay()
        return JSONResponse({"request_id": request_id, "output": {"task_id": task.id, "task_status": "PENDING"}})

    async def get_task(request: Request, rec: RecordedRequest, request_id: str) -> Response:
        task = state.tasks.get(request.path_params["task_id"])
        if task is None:
            return JSONResponse({"request_id": request_id, "output": {"task_id": request.path_params["task_id"],
                                                                      "task_status": "UNKNOWN"}})
        return JSONResponse(task_view(task, request, request_id))

    async def cancel(request: Request, rec: RecordedRequest, request_id: str) -> Response:
        task = state.tasks.get(request.path_params["task_id"])
        if task is None:
            raise _invalid(f"The task {request.path_params['task_id']} does not exist.")
        if _status(task, state)[0] != "PENDING":
            raise DashScopeError(400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the "
                                 "task is in PENDING status.")
        task.cancelled_mono = state.clock()
        state.cancels.append(task.id)
        return JSONResponse({"request_id": request_id})

    async def video(request: Request, rec: RecordedRequest, request_id: str) -> Response:
        task = state.tasks.get(state.links.get(request.path_params["token"], ""))
        if task is None:
            return PlainTextResponse("<Error><Code>NoSuchKey</Code></Error>", status_code=404)
        _, _, end = _status(task, state)
        if state.expire_outputs or end is None or state.clock() >= end + URL_TTL_SECONDS:
            return PlainTextResponse("<Error><Code>AccessDenied</Code><Message>Request has expired.</Message>"
                                     "</Error>", status_code=403)
        data = await run_in_threadpool(render_media, "video", f"{task.width}x{task.height}", str(task.duration))
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return DashScopeError(status, "InvalidURL" if status == 404 else "UnsupportedOperation",
                              f"{request.method} {request.url.path} is not supported.").response(str(uuid.uuid4()))

    from .dashscope_compat import routes as compat_routes
    from .inference_common import InferenceState

    inference = InferenceState(api_key=api_key, provider="alibaba", reject_unknown_params=False)
    app = Starlette(routes=[
        *compat_routes(inference),  # chat and embeddings in the OpenAI-compatible mode
        Route(CREATE, endpoint(create), methods=["POST"]),
        Route("/api/v1/tasks/{task_id}", endpoint(get_task), methods=["GET"]),
        Route("/api/v1/tasks/{task_id}/cancel", endpoint(cancel), methods=["POST"]),
        Route("/oss/{token}.mp4", endpoint(video, auth=False), methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    app.state.inference = inference
    return attach(app, "alibaba", api_key)  # the image API next to the video and compatible-mode ones

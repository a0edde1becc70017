"""Fake BytePlus ModelArk video generation API (Seedance) for tests (shared/reference/provider-apis.md §4.2,
docs/providers/byteplus.md).

Routes (``Authorization: Bearer <ARK key>`` except the video link):

* ``POST /api/v3/contents/generations/tasks`` — ``{model, content:[{type:"text", text},
  {type:"image_url", image_url:{url}, role?: first_frame|last_frame|reference_image}], ratio, resolution,
  duration | frames, seed, camera_fixed, watermark, generate_audio, return_last_frame, service_tier, draft,
  callback_url, execution_expires_after}`` → ``{id}``.
* ``GET /api/v3/contents/generations/tasks/{id}`` → ``{id, model, status, error, created_at, updated_at,
  content:{video_url}, seed, resolution, ratio, duration, framespersecond, service_tier, usage:{completion_tokens,
  total_tokens}}``; status queued → running → succeeded | failed (or cancelled / expired).
* ``GET /api/v3/contents/generations/tasks?page_num=&page_size=&filter.status=`` — list, newest first.
* ``DELETE /api/v3/contents/generations/tasks/{id}`` — cancels a queued task (it becomes ``cancelled``),
  deletes the record of a terminal one; a running task cannot be cancelled.
* ``GET /tos/{token}.mp4`` — the signed video link (no auth), valid 24 h after success; afterwards 403.

Errors: ``{"error": {"code", "message", "param", "type"}}`` with the HTTP status of ModelArk's error table:
401 ``AuthenticationError``, 400 ``InvalidParameter``/``MissingParameter``, 400
``InputTextSensitiveContentDetected`` / ``InputImageSensitiveContentDetected`` (``sensitive_input_prompts``),
403 ``AccountOverdueError``, 404 ``InvalidEndpointOrModel.NotFound`` / ``ResourceNotFound``, 429
``RateLimitExceeded.EndpointRPMExceeded`` / ``QuotaExceeded``, 500 ``InternalServiceError``. A task whose prompt
matches ``sensitive_output_prompts`` fails with ``OutputVideoSensitiveContentDetected``.

Model rules (per the docs; the fake's table ``MODELS``): Seedance 1.5 Pro 4–12 s with audio; 1.0 Pro / Pro Fast
2–12 s; 1.0 Lite has a text-only ``-t2v-`` slug and an image-only ``-i2v-`` slug (which also takes 1–4
``reference_image`` items); a ``last_frame`` needs a ``first_frame``; reference images cannot be mixed with
frames; ``generate_audio`` only where the model has audio. Endpoint ids ``ep-…`` act as Seedance 1.5 Pro.
Output: a real H.264 MP4 (8 fps, one colour per second) at Seedance's frame sizes for the resolution and
ratio (``adaptive`` follows a decodable first frame, else 16:9). Choices the docs leave open: cancelling a
running task answers 400 ``InvalidAction.TaskNotCancellable``; unknown body fields answer 400
``InvalidParameter`` (``reject_unknown_params``).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ._common import FakeState, RecordedRequest, bearer, mentions, recorded
from .hosted_images import attach
from .openai import FPS, render_media

TASKS = "/api/v3/contents/generations/tasks"
URL_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class ModelSpec:
    durations: tuple[int, int]
    audio: bool = False
    text_only: bool = False
    image_only: bool = False
    last_frame: bool = True
    max_references: int = 0
    default_resolution: str = "720p"


MODELS = {
    "seedance-1-5-pro-251215": ModelSpec((4, 12), audio=True),
    "seedance-1-0-pro-250528": ModelSpec((2, 12), default_resolution="1080p"),
    "seedance-1-0-pro-fast-251015": ModelSpec((2, 12), last_frame=False, default_resolution="1080p"),
    "seedance-1-0-lite-t2v-250428": ModelSpec((2, 12), text_only=True, last_frame=False),
    "seedance-1-0-lite-i2v-250428": ModelSpec((2, 12), image_only=True, max_references=4),
    "dreamina-seedance-2-0-260128": ModelSpec((4, 15), audio=True, max_references=9),
}
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
SIZES = {  # resolution → ratio → (width, height), Seedance's output frame sizes
    "480p": {"16:9": (864, 480), "4:3": (736, 544), "1:1": (640, 640), "3:4": (544, 736), "9:16": (480, 864),
             "21:9": (960, 416)},
    "720p": {"16:9": (1248, 704), "4:3": (1120, 832), "1:1": (960, 960), "3:4": (832, 1120), "9:16": (704, 1248),
             "21:9": (1504, 640)},
    "1080p": {"16:9": (1920, 1088), "4:3": (1664, 1248), "1:1": (1440, 1440), "3:4": (1248, 1664),
              "9:16": (1088, 1920), "21:9": (2176, 928)},
}
CREATE_PARAMS = frozenset({"model", "content", "ratio", "resolution", "duration", "frames", "seed", "camera_fixed",
                           "watermark", "generate_audio", "return_last_frame", "service_tier", "draft",
                           "callback_url", "execution_expires_after", "priority"})


@dataclass
class Task:
    id: str
    model: str
    prompt: str
    ratio: str
    resolution: str
    duration: int
    seed: int
    width: int
    height: int
    created_mono: float
    render_seconds: float
    body: dict[str, Any]
    fail: tuple[str, str] | None = None
    cancelled_mono: float | None = None
    service_tier: str = "default"


@dataclass
class ArkRequest(RecordedRequest):
    request_id: str = ""  # the X-Request-Id of the answer (and the tail of an error message)


@dataclass
class FakeBytePlusState(FakeState):
    api_key: str = "ark-test"
    queued_fraction: float = 0.3
    reject_unknown_params: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status, rate_limit_next → 429
    # RateLimitExceeded.EndpointRPMExceeded with Retry-After when retry_after_seconds is set, create_delay_seconds)
    quota_exceeded: bool = False  # creates → 429 QuotaExceeded
    account_overdue: bool = False  # creates → 403 AccountOverdueError
    sensitive_input_prompts: list[str] = field(default_factory=list)
    sensitive_output_prompts: list[str] = field(default_factory=list)
    fail_jobs: bool = False
    fail_job_code: str = "InternalServiceError"
    fail_job_message: str = "The service encountered an unexpected internal error (fake)."
    expire_outputs: bool = False  # video links answer 403
    # recorded state (and FakeState.requests)
    tasks: dict[str, Task] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # token → task id
    cancels: list[str] = field(default_factory=list)  # task ids cancelled through DELETE

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", TASKS)
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "tasks", "links", "cancels")


class ArkError(Exception):
    TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests",
             500: "InternalServerError", 503: "ServiceUnavailable"}

    def __init__(self, status: int, code: str, message: str, param: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers or {}

    def response(self, request_id: str) -> JSONResponse:
        body = {"error": {"code": self.code, "message": f"{self.message} Request id: {request_id}",
                          "param": self.param, "type": self.TYPES.get(self.status, "Error")}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _invalid(param: str, message: str | None = None) -> ArkError:
    return ArkError(400, "InvalidParameter", message or f"The parameter `{param}` specified in the request is "
                    "not valid.", param)


def _missing(param: str) -> ArkError:
    return ArkError(400, "MissingParameter", f"The request failed because it is missing the required parameter "
                    f"`{param}`.", param)


def _image_size(url: Any, param: str) -> tuple[int, int] | None:
    if not isinstance(url, str) or not url:
        raise _missing(param)
    if url.startswith(("http://", "https://")):
        return None
    head, _, payload = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise _invalid(param, f"The parameter `{param}` must be an image URL or data:image/<format>;base64,<data>.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(param, f"The base64 image in `{param}` is malformed.") from None
    if len(data) > 30 * 1024 * 1024:
        raise _invalid(param, f"The image in `{param}` exceeds 30 MB.")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        raise _invalid(param, f"The image in `{param}` could not be decoded.") from None


def _closest_ratio(width: int, height: int) -> str:
    return min(RATIOS, key=lambda r: abs(float(Fraction(*map(int, r.split(":")))) - width / height))


def _bool(body: dict[str, Any], name: str) -> bool | None:
    if name in body and not isinstance(body[name], bool):
        raise _invalid(name, f"The parameter `{name}` must be a boolean.")
    return body.get(name)


def _validate(body: dict[str, Any], state: FakeBytePlusState) -> dict[str, Any]:
    if state.reject_unknown_params:
        for key in body:
            if key not in CREATE_PARAMS:
                raise _invalid(key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing("model")
    spec = MODELS.get(model) or (MODELS["seedance-1-5-pro-251215"] if model.startswith("ep-") else None)
    if spec is None:
        raise ArkError(404, "InvalidEndpointOrModel.NotFound", f"The model or endpoint {model} does not exist or "
                       "you do not have access to it.", "model")
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise _missing("content")
    prompt, roles, first_size = "", list[str](), None
    texts = 0
    for i, item in enumerate(content):
        if not isinstance(item, dict):
            raise _invalid(f"content[{i}]")
        kind = item.get("type")
        if kind == "text":
            texts += 1
            if texts > 1 or not isinstance(item.get("text"), str):
                raise _invalid(f"content[{i}].text")
            prompt = item["text"]
        elif kind == "image_url":
            ref = item.get("image_url")
            size = _image_size(ref.get("url") if isinstance(ref, dict) else None, f"content[{i}].image_url.url")
            role = item.get("role", "first_frame" if not roles else None)
            if role not in ("first_frame", "last_frame", "reference_image"):
                raise _invalid(f"content[{i}].role", f"The parameter `content[{i}].role` must be first_frame, "
                               "last_frame or reference_image.")
            if role == "first_frame":
                first_size = size
            roles.append(role)
        else:
            raise _invalid(f"content[{i}].type")
    if not prompt and not roles:
        raise _missing("content.text")
    if roles and spec.text_only:
        raise _invalid("content", f"The model {model} does not support image input; use an image-to-video model.")
    if spec.image_only and not roles:
        raise _missing("content.image_url")
    refs = roles.count("reference_image")
    if roles.count("first_frame") > 1 or roles.count("last_frame") > 1:
        raise _invalid("content", "At most one first_frame and one last_frame image may be given.")
    if "last_frame" in roles and ("first_frame" not in roles or not spec.last_frame):
        raise _invalid("content", f"A last_frame image needs a first_frame image and a model that supports "
                       f"first and last frames ({model} {'does' if spec.last_frame else 'does not'}).")
    if refs and (refs > spec.max_references or len(roles) != refs):
        raise _invalid("content", f"{model} takes at most {spec.max_references} reference_image items, which "
                       "cannot be combined with first or last frames.")
    ratio = body.get("ratio", "adaptive" if roles else "16:9")
    if ratio not in RATIOS + ("adaptive", "keep_ratio"):
        raise _invalid("ratio", f"The parameter `ratio` must be one of {', '.join(RATIOS)}, adaptive, keep_ratio.")
    resolution = body.get("resolution", spec.default_resolution)
    if resolution not in SIZES:
        raise _invalid("resolution", "The parameter `resolution` must be one of 480p, 720p, 1080p.")
    if "duration" in body and "frames" in body:
        raise _invalid("frames", "Specify either `duration` or `frames`, not both.")
    duration = body.get("duration", 5)
    if "frames" in body:
        frames = body["frames"]
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 29 or frames > 289:
            raise _invalid("frames")
        duration = round(frames / 24)
    lo, hi = spec.durations
    if isinstance(duration, bool) or not isinstance(duration, int) or not (lo <= duration <= hi or duration == -1):
        raise _invalid("duration", f"The parameter `duration` must be an integer from {lo} to {hi} for {model}.")
    if duration == -1:
        duration = hi if spec.audio else 5
    seed = body.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -1 <= seed <= 2**32 - 1:
        raise _invalid("seed", "The parameter `seed` must be an integer from -1 to 4294967295.")
    for name in ("camera_fixed", "watermark", "return_last_frame", "draft"):
        _bool(body, name)
    if _bool(body, "generate_audio") is not None and not spec.audio:
        raise _invalid("generate_audio", f"The model {model} does not support generate_audio.")
    tier = body.get("service_tier", "default")
    if tier not in ("default", "flex"):
        raise _invalid("service_tier")
    if "callback_url" in body and not isinstance(body["callback_url"], str):
        raise _invalid("callback_url")
    if ratio in RATIOS:
        shape = ratio
    elif first_size is not None:
        shape = _closest_ratio(*first_size)
    else:
        shape = "16:9"
    width, height = SIZES[resolution][shape]
    return {"model": model, "prompt": prompt, "ratio": shape if ratio == "adaptive" else ratio,
            "resolution": resolution, "duration": duration,
            "seed": seed if seed != -1 else secrets.randbelow(2**31), "width": width, "height": height,
            "service_tier": tier}


def _status(task: Task, state: FakeBytePlusState) -> tuple[str, float | None]:
    """(status, monotonic time of the terminal transition or None)."""
    if task.cancelled_mono is not None:
        return "cancelled", task.cancelled_mono
    now, total = state.clock(), task.render_seconds
    started = task.created_mono + total * state.queued_fraction
    if task.fail is not None and task.fail[0].startswith("Output") and now >= started:
        return "failed", started
    if now >= task.created_mono + total:
        return ("failed" if task.fail else "succeeded"), task.created_mono + total
    return ("running" if now >= started else "queued"), None


def create_app(api_key: str = "ark-test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeBytePlusState`` fields. State: ``app.state.fake``."""
    state = FakeBytePlusState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def task_object(task: Task, request: Request) -> dict[str, Any]:
        status, done = _status(task, state)
        obj: dict[str, Any] = {
            "id": task.id, "model": task.model, "status": status, "error": None,
            "created_at": state.unix(task.created_mono), "updated_at": state.unix(done) if done else
            state.unix(task.created_mono + (task.render_seconds * state.queued_fraction
                                            if status == "running" else 0)),
            "seed": task.seed, "resolution": task.resolution, "ratio": task.ratio, "duration": task.duration,
            "framespersecond": FPS, "service_tier": task.service_tier,
        }
        if status == "failed" and task.fail:
            obj["error"] = {"code": task.fail[0], "message": task.fail[1]}
        if status == "succeeded":
            token = next((t for t, tid in state.links.items() if tid == task.id), None)
            if token is None:
                token = secrets.token_urlsafe(18)
                state.links[token] = task.id
            expires = URL_TTL_SECONDS
            obj["content"] = {"video_url": f"{str(request.base_url).rstrip('/')}/tos/{token}.mp4"
                                           f"?X-Tos-Expires={expires}&X-Tos-Signature={secrets.token_hex(8)}"}
            tokens = task.width * task.height * FPS * task.duration // 1024
            obj["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        return obj

    def record(request: Request) -> ArkRequest:
        rec = ArkRequest(request.method, request.url.path, dict(request.query_params),
                         {k.lower(): v for k, v in request.headers.items()})
        rec.request_id = dt.datetime.now().strftime("%Y%m%d%H%M%S") + secrets.token_hex(10)
        return rec

    def gate(request: Request, rec: ArkRequest) -> None:
        if bearer(request) != state.api_key:
            raise ArkError(401, "AuthenticationError", "The API key or AK/SK in the request is "
                           "missing or invalid.")
        if state.take_rate_limit():
            raise ArkError(429, "RateLimitExceeded.EndpointRPMExceeded", "The Requests Per Minute "
                           "(RPM) limit of the associated endpoint for your account has been exceeded.",
                           headers=state.retry_after("Retry-After") or None)

    def stamp(response: Response, rec: ArkRequest) -> None:
        response.headers["X-Request-Id"] = rec.request_id

    def endpoint(handler: Callable[..., Any], *, auth: bool = True) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=ArkError, answer=lambda exc, rec: exc.response(rec.request_id),
                        gate=gate if auth else None, record=record, finish=stamp)

    def get_task(request: Request) -> Task:
        task_id = request.path_params["task_id"]
        if task_id not in state.tasks:
            raise ArkError(404, "ResourceNotFound", f"The specified task {task_id} is not found.", "id")
        return state.tasks[task_id]

    async def create(request: Request, rec: RecordedRequest) -> Response:
        if (failure := state.take_create_failure()) is not None:
            if failure >= 500:
                raise ArkError(failure, "InternalServiceError" if failure == 500 else
                               "ServiceUnavailable", "The service is temporarily unavailable (fake).")
            raise ArkError(failure, "InjectedFailure", f"Injected failure ({failure}).")
        try:
            body = await request.json()
        except ValueError:
            raise ArkError(400, "InvalidParameter", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ArkError(400, "InvalidParameter", "The request body must be a JSON object.")
        rec.body = body
        params = _validate(body, state)
        if state.account_overdue:
            raise ArkError(403, "AccountOverdueError", "The request failed because your account has an overdue "
                           "balance.")
        if state.quota_exceeded:
            raise ArkError(429, "QuotaExceeded", "The request has exceeded the quota of your account.")
        if mentions(params["prompt"], state.sensitive_input_prompts):
            raise ArkError(400, "InputTextSensitiveContentDetected", "The request failed because the input text "
                           "may contain sensitive information.")
        fail = None
        if mentions(params["prompt"], state.sensitive_output_prompts):
            fail = ("OutputVideoSensitiveContentDetected", "The request failed because the output video may "
                    "contain sensitive information.")
        elif state.fail_jobs:
            fail = (state.fail_job_code, state.fail_job_message)
        task_id = "cgt-" + dt.datetime.now().strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
        state.tasks[task_id] = Task(task_id, params["model"], params["prompt"], params["ratio"],
                                    params["resolution"], params["duration"], params["seed"], params["width"],
                                    params["height"], state.clock(), state.render_seconds, body, fail,
                                    service_tier=params["service_tier"])
        await state.create_delay()
        return JSONResponse({"id": task_id})

    async def retrieve(request: Request, rec: RecordedRequest) -> Response:
        return JSONResponse(task_object(get_task(request), request))

    async def list_tasks(request: Request, rec: RecordedRequest) -> Response:
        q = request.query_params
        try:
            page_num, page_size = int(q.get("page_num", "1")), int(q.get("page_size", "10"))
        except ValueError:
            raise _invalid("page_num") from None
        if not (1 <= page_num <= 500 and 1 <= page_size <= 500):
            raise _invalid("page_size")
        items = [task_object(t, request) for t in reversed(list(state.tasks.values()))]
        if q.get("filter.status"):
            items = [i for i in items if i["status"] == q["filter.status"]]
        start = (page_num - 1) * page_size
        return JSONResponse({"items": items[start:start + page_size], "total": len(items)})

    async def delete(request: Request, rec: RecordedRequest) -> Response:
        task = get_task(request)
        status, _ = _status(task, state)
        if status == "queued":
            task.cancelled_mono = state.clock()
            state.cancels.append(task.id)
        elif status == "running":
            raise ArkError(400, "InvalidAction.TaskNotCancellable", f"The task {task.id} is running; only queued "
                           "tasks can be cancelled.", "id")
        else:
            del state.tasks[task.id]
        return JSONResponse({})

    async def video(request: Request, rec: RecordedRequest) -> Response:
        task_id = state.links.get(request.path_params["token"])
        task = state.tasks.get(task_id or "")
        if task is None:
            return PlainTextResponse("NoSuchKey", status_code=404)
        _, done = _status(task, state)
        if state.expire_outputs or done is None or state.clock() >= done + URL_TTL_SECONDS:
            return PlainTextResponse("AccessDenied: Request has expired", status_code=403)
        data = await run_in_threadpool(render_media, "video", f"{task.width}x{task.height}", str(task.duration))
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return ArkError(status, "NotFound" if status == 404 else "InvalidAction",
                        f"{request.method} {request.url.path} is not a valid action.").response(secrets.token_hex(8))

    app = Starlette(routes=[
        Route(TASKS, endpoint(create), methods=["POST"]),
        Route(TASKS, endpoint(list_tasks), methods=["GET"]),
        Route(TASKS + "/{task_id}", endpoint(retrieve), methods=["GET"]),
        Route(TASKS + "/{task_id}", endpoint(delete), methods=["DELETE"]),
        Route("/tos/{token}.mp4", endpoint(video, auth=False), methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return attach(app, "byteplus", api_key)  # the image API next to the video one

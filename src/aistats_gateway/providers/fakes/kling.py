"""Fake Kling (Kuaishou) video API for tests (docs/providers/kling.md; Kling's "General Information",
"Text to Video" and "Image to Video" API references).

Fakes POST /v1/videos/text2video and /v1/videos/image2video, GET /v1/videos/{endpoint}/{id}
(``id`` = task_id or external_task_id) and GET /v1/videos/{endpoint}?pageNum=&pageSize= (list).
Outputs are served by the fake itself at ``/kling-cdn/{task_id}/{video_id}.mp4`` (no auth, like the
real CDN links). Every API call needs ``Authorization: Bearer <JWT>``: HS256 signed with the secret
key of the access key in ``iss``, checked against ``exp`` and ``nbf`` on the fake's wall clock.

Envelopes: success ``{code: 0, message: "SUCCEED", request_id, data}``; errors
``{code: <service code>, message, request_id}`` with the HTTP status Kling documents for the code
(401 1000-1004, 429 1100-1102, 403 1103, 400 1200/1201, 404 1202/1203, 400 1300/1301,
429 1302-1304, 500 5000, 503 5001, 504 5002). Note the odd ones: an exhausted resource pack is a
**429 with code 1102** (not a rate limit), and no Retry-After header is documented (none is sent
unless ``retry_after_seconds`` is set).

Tasks go submitted (first ``queued_fraction`` of ``render_seconds``) → processing → succeed, on an
injectable monotonic clock; Kling reports no progress. Output: a real H.264 MP4 (PyAV; the same
cached renderer as the OpenAI fake) of the mode's size (std 720p, pro 1080p; ``*-master`` models
always 1080p) for the aspect ratio (text2video) or the first image's shape (image2video, nearest
of 16:9, 9:16, 1:1), lasting ``duration`` seconds.

Choices the docs leave open (documented in docs/providers/kling.md):
* ``external_task_id`` is unique per account: a second create with one answers 400 code 1201
  "external_task_id already exists" (and queries by it return the first task).
* Unknown body fields → 400 code 1201 (``reject_unknown_params``). ``duration`` must be the string
  "5" or "10"; ``sound`` "on" only for kling-v2-6 in mode pro; ``aspect_ratio`` only on text2video;
  ``image_tail`` needs mode pro (except kling-v1) and is refused by the ``*-master`` models (Kling's
  capability map).
* Images: bare base64 (a ``data:`` prefix is refused, as the docs say) of a JPEG/PNG ≥ 300 px,
  ≤ 10 MB, aspect 1:2.5..2.5:1; http(s) URLs are accepted unfetched. image2video needs ``image``
  or ``image_tail``; ``image_tail`` excludes ``camera_control`` and the motion-brush masks.
* Content moderation at submit (``blocked_prompts`` → 400 code 1301) or after it
  (``risk_prompts`` → task failed, "Failure to pass the risk control system").
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import _common
from .openai import render_media

T2V_MODELS = ("kling-v1", "kling-v1-6", "kling-v2-master", "kling-v2-1-master", "kling-v2-5-turbo", "kling-v2-6")
I2V_MODELS = ("kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master",
              "kling-v2-5-turbo", "kling-v2-6")
SOUND_MODELS = frozenset({"kling-v2-6"})
NO_TAIL_MODELS = frozenset({"kling-v2-master", "kling-v2-1-master"})  # no start+end frame (capability map)
ASPECT_RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
DURATIONS = ("5", "10")
MODES = ("std", "pro")
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
COMMON_PARAMS = frozenset({"model_name", "prompt", "negative_prompt", "cfg_scale", "mode", "camera_control",
                           "duration", "sound", "watermark_info", "callback_url", "external_task_id"})
T2V_PARAMS = COMMON_PARAMS | {"aspect_ratio"}
I2V_PARAMS = COMMON_PARAMS | {"image", "image_tail", "static_mask", "dynamic_masks", "voice_list"}
MAX_PROMPT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024
HTTP_FOR_CODE = {1000: 401, 1001: 401, 1002: 401, 1003: 401, 1004: 401, 1100: 429, 1101: 429, 1102: 429,
                 1103: 403, 1200: 400, 1201: 400, 1202: 404, 1203: 404, 1300: 400, 1301: 400, 1302: 429,
                 1303: 429, 1304: 429, 5000: 500, 5001: 503, 5002: 504}
CODE_FOR_HTTP = {429: 1302, 500: 5000, 502: 5000, 503: 5001, 504: 5002}
RISK_MESSAGE = "Failure to pass the risk control system"


@dataclass
class RecordedRequest(_common.RecordedRequest):
    claims: dict[str, Any] | None = None  # the verified JWT payload
    code: int | None = None  # Kling service code of the answer


@dataclass
class Task:
    id: str
    endpoint: str  # text2video | image2video
    external_task_id: str | None
    model: str
    body: dict[str, Any]
    width: int
    height: int
    duration: str
    created_mono: float
    created_ms: int
    render_seconds: float
    fail: tuple[str, float] | None = None  # (task_status_msg, at fraction of render time)
    video_id: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class FakeKlingState(_common.FakeState):
    access_key: str = "ak-test"
    secret_key: str = "sk-test"
    wall_clock: Callable[[], float] = time.time  # checks the JWT's exp/nbf (``clock`` drives task progression)
    queued_fraction: float = 0.2
    reject_unknown_params: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status → code from CODE_FOR_HTTP,
    # create_delay_seconds, rate_limit_next → 429 code 1302, retry_after_seconds: Kling documents none)
    account_error_next: int = 0  # next N creates → 429 code 1102 (resource pack used up)
    blocked_prompts: list[str] = field(default_factory=list)  # → 400 code 1301 at create
    risk_prompts: list[str] = field(default_factory=list)  # → task failed after it starts
    fail_jobs: bool = False  # → task failed at the end
    fail_message: str = "The video generation failed, please try again later"
    expire_outputs: bool = False  # CDN links answer 404
    # recorded state (and FakeState.requests)
    tasks: dict[str, Task] = field(default_factory=dict)
    by_external: dict[str, str] = field(default_factory=dict)

    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "tasks", "by_external")

    def ms(self, mono: float | None = None) -> int:
        return int(self.wall(mono) * 1000)

    @property
    def creates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.startswith("/v1/videos/")]


class ApiError(Exception):
    def __init__(self, code: int, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or HTTP_FOR_CODE.get(code, 400)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message, "request_id": _request_id()},
                            status_code=self.status, headers=self.headers)


def _request_id() -> str:
    return secrets.token_hex(16)


def _invalid(message: str) -> ApiError:
    return ApiError(1201, message)


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "SUCCEED", "request_id": _request_id(), "data": data})


def _rate_limited(state: FakeKlingState, code: int = 1302) -> ApiError:
    headers = state.retry_after()
    message = ("The API request is too fast, please slow down" if code == 1302
               else "Concurrency or QPS exceeds the prepaid resource package limit")
    return ApiError(code, message, headers=headers)


# ---------------------------------------------------------------- JWT


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_token(header: str, state: FakeKlingState) -> dict[str, Any]:
    """The verified claims of ``Authorization: Bearer <jwt>``; ApiError 1001-1004 otherwise."""
    if not header.strip():
        raise ApiError(1001, "Authorization is empty")
    if not header.startswith("Bearer "):
        raise ApiError(1002, "Authorization is invalid")
    token = header[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        raise ApiError(1002, "Authorization is invalid")
    try:
        head = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise ApiError(1002, "Authorization is invalid") from None
    if not isinstance(head, dict) or head.get("alg") != "HS256" or not isinstance(claims, dict):
        raise ApiError(1002, "Authorization is invalid")
    if claims.get("iss") != state.access_key:
        raise ApiError(1002, "Authorization is invalid")
    expected = hmac.new(state.secret_key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise ApiError(1000, "Authentication failed")
    now = state.wall_clock()
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not isinstance(exp, (int, float)):
        raise ApiError(1002, "Authorization is invalid")
    if isinstance(nbf, (int, float)) and now < nbf:
        raise ApiError(1003, "Authorization is not yet valid")
    if now >= exp:
        raise ApiError(1004, "Authorization has expired")
    return claims


# ---------------------------------------------------------------- validation


def _image_shape(value: Any, name: str) -> tuple[int, int] | None:
    """Check an image field; (width, height) for base64 images, None for URLs."""
    if not isinstance(value, str) or not value:
        raise _invalid(f"{name} must be a non-empty string (Base64 or URL)")
    if value.startswith(("http://", "https://")):
        return None
    if value.startswith("data:"):
        raise _invalid(f"{name}: Base64 must not carry a data: prefix")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{name} is neither a URL nor valid Base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise _invalid(f"{name} exceeds 10MB")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
    except Exception:
        raise _invalid(f"{name} could not be decoded as an image") from None
    if fmt not in ("JPEG", "PNG"):
        raise _invalid(f"{name} format must be jpg/jpeg/png, got {fmt}")
    if min(w, h) < 300:
        raise _invalid(f"{name} width and height must be at least 300px, got {w}x{h}")
    if not 1 / 2.5 <= w / h <= 2.5:
        raise _invalid(f"{name} aspect ratio must be between 1:2.5 and 2.5:1, got {w}x{h}")
    return w, h


def _dimensions(model: str, mode: str, ratio: tuple[int, int]) -> tuple[int, int]:
    short = 1080 if mode == "pro" or model.endswith("-master") else 720
    a, b = ratio
    long = short * max(a, b) // min(a, b)
    long += long % 2
    return (long, short) if a >= b else (short, long)


def _nearest_ratio(w: int, h: int) -> tuple[int, int]:
    return min(ASPECT_RATIOS.values(), key=lambda r: abs(w / h - r[0] / r[1]))


def validate_create(endpoint: str, body: dict[str, Any], state: FakeKlingState) -> dict[str, Any]:
    allowed = T2V_PARAMS if endpoint == "text2video" else I2V_PARAMS
    if state.reject_unknown_params:
        for key in body:
            if key not in allowed:
                raise _invalid(f"Invalid parameter: {key}")
    models = T2V_MODELS if endpoint == "text2video" else I2V_MODELS
    model = body.get("model_name", "kling-v1")
    if model not in models:
        raise ApiError(1203, f"model_name {model!r} does not exist or does not support {endpoint}")
    prompt = body.get("prompt")
    if endpoint == "text2video" and not prompt:
        raise _invalid("prompt is required")
    for name in ("prompt", "negative_prompt"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_PROMPT):
            raise _invalid(f"{name} must be a string of at most {MAX_PROMPT} characters")
    cfg = body.get("cfg_scale")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0 <= cfg <= 1):
        raise _invalid("cfg_scale must be a number in [0, 1]")
    mode = body.get("mode", "std")
    if mode not in MODES:
        raise _invalid(f"mode must be one of {', '.join(MODES)}")
    duration = body.get("duration", "5")
    if not isinstance(duration, str) or duration not in DURATIONS:
        raise _invalid(f"duration must be the string \"5\" or \"10\", got {duration!r}")
    sound = body.get("sound")
    if sound is not None:
        if sound not in ("on", "off"):
            raise _invalid("sound must be on or off")
        if sound == "on" and model not in SOUND_MODELS:
            raise _invalid(f"sound is not supported by {model}")
        if sound == "on" and mode != "pro":
            raise _invalid(f"sound on needs mode pro for {model}")
    ratio = ASPECT_RATIOS["16:9"]
    if endpoint == "text2video":
        ar = body.get("aspect_ratio", "16:9")
        if ar not in ASPECT_RATIOS:
            raise _invalid(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
        ratio = ASPECT_RATIOS[ar]
    else:
        image, tail = body.get("image"), body.get("image_tail")
        if not image and not tail:
            raise _invalid("image and image_tail cannot both be empty")
        shape = _image_shape(image, "image") if image else None
        if tail:
            if model in NO_TAIL_MODELS:
                raise _invalid(f"image_tail is not supported by {model}")
            if mode != "pro" and model != "kling-v1":
                raise _invalid(f"image_tail needs mode pro for {model}")
            tail_shape = _image_shape(tail, "image_tail")
            shape = shape or tail_shape
            if body.get("camera_control") or body.get("static_mask") or body.get("dynamic_masks"):
                raise _invalid("image_tail, motion brush (static_mask/dynamic_masks) and camera_control "
                               "cannot be used together")
        if shape is not None:
            ratio = _nearest_ratio(*shape)
    cc = body.get("camera_control")
    if cc is not None:
        if not isinstance(cc, dict) or cc.get("type") not in CAMERA_TYPES:
            raise _invalid(f"camera_control.type must be one of {', '.join(CAMERA_TYPES)}")
        config = cc.get("config")
        if cc["type"] == "simple":
            if not isinstance(config, dict) or set(config) - set(CAMERA_AXES) or \
                    sum(1 for v in config.values() if v) != 1:
                raise _invalid("camera_control.config must set exactly one of " + ", ".join(CAMERA_AXES))
        elif config is not None:
            raise _invalid("camera_control.config is only for type simple")
    ext = body.get("external_task_id")
    if ext is not None and (not isinstance(ext, str) or not ext):
        raise _invalid("external_task_id must be a non-empty string")
    width, height = _dimensions(model, mode, ratio)
    return {"model": model, "prompt": prompt or "", "duration": duration, "width": width, "height": height,
            "external_task_id": ext}


# ---------------------------------------------------------------- tasks


KLING_STAGES = {"queued": "submitted", "running": "processing", "done": "succeed", "failed": "failed"}


def _status(task: Task, state: FakeKlingState) -> str:
    return KLING_STAGES[_common.stage(state.clock() - task.created_mono, task.render_seconds, state.queued_fraction,
                                      task.fail[1] if task.fail is not None else None)]


def task_data(task: Task, state: FakeKlingState, base_url: str) -> dict[str, Any]:
    status = _status(task, state)
    data: dict[str, Any] = {
        "task_id": task.id, "task_status": status, "task_status_msg": "",
        "task_info": {"external_task_id": task.external_task_id or ""},
        "created_at": task.created_ms, "updated_at": state.ms(),
    }
    if status == "failed" and task.fail:
        data["task_status_msg"] = task.fail[0]
    if status == "succeed":
        url = f"{base_url.rstrip('/')}/kling-cdn/{task.id}/{task.video_id}.mp4"
        data["task_result"] = {"videos": [{"id": task.video_id, "url": url, "watermark_url": url,
                                           "duration": task.duration}]}
        data["watermark_info"] = {"enabled": False}
        data["final_unit_deduction"] = "1" if task.duration == "5" else "2"
        data["updated_at"] = state.ms(task.created_mono + task.render_seconds)
    return data


# ---------------------------------------------------------------- app


def create_app(access_key: str = "ak-test", secret_key: str = "sk-test", *,
               clock: Callable[[], float] = time.monotonic, render_seconds: float = 2.0,
               **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeKlingState`` fields. State: ``app.state.fake``."""
    state = FakeKlingState(access_key=access_key, secret_key=secret_key, clock=clock,
                           render_seconds=render_seconds, **knobs)

    def gate(request: Request, rec: RecordedRequest) -> None:
        rec.claims = verify_token(request.headers.get("authorization", ""), state)
        if state.take_rate_limit():
            raise _rate_limited(state)

    def answer(exc: ApiError, rec: RecordedRequest) -> Response:
        rec.code = exc.code
        return exc.response()

    def succeeded(response: Response, rec: RecordedRequest) -> None:
        if rec.code is None and response.status_code == 200:
            rec.code = 0

    def endpoint(handler: Callable[..., Any], *, auth: bool = True) -> Callable[[Request], Any]:
        return _common.recorded(state, handler, errors=ApiError, answer=answer, gate=gate if auth else None,
                                record=RecordedRequest.of, finish=succeeded if auth else None)

    def kind_of(request: Request) -> str:
        kind = str(request.path_params["endpoint"])
        if kind not in ("text2video", "image2video"):
            raise ApiError(1202, f"Invalid request: /v1/videos/{kind} is not supported by this fake")
        return kind

    async def create(request: Request, rec: RecordedRequest) -> Response:
        kind = kind_of(request)
        if (status := state.take_create_failure()) is not None:
            if status == 429:
                raise _rate_limited(state)
            raise ApiError(CODE_FOR_HTTP.get(status, 5000), "Server internal error" if status < 503
                           else "The server is temporarily unavailable, usually due to maintenance", status=status)
        if state.account_error_next > 0:
            state.account_error_next -= 1
            raise ApiError(1102, "Account exception: resource pack depleted or expired")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(1200, "Invalid request parameters: the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(1200, "Invalid request parameters: expected a JSON object")
        rec.body = body
        params = validate_create(kind, body, state)
        ext = params["external_task_id"]
        if ext and ext in state.by_external:
            raise _invalid(f"external_task_id already exists: {ext}")
        text = f"{params['prompt']} {body.get('negative_prompt') or ''}".lower()
        if _common.mentions(text, state.blocked_prompts):
            raise ApiError(1301, "Trigger the content security policy of the platform")
        fail = None
        if _common.mentions(text, state.risk_prompts):
            fail = (RISK_MESSAGE, state.queued_fraction)
        elif state.fail_jobs:
            fail = (state.fail_message, 1.0)
        now = state.clock()
        task = Task(id=str(secrets.randbelow(9 * 10**17) + 10**17), endpoint=kind, external_task_id=ext,
                    model=params["model"], body=body, width=params["width"], height=params["height"],
                    duration=params["duration"], created_mono=now, created_ms=state.ms(now),
                    render_seconds=state.render_seconds, fail=fail)
        state.tasks[task.id] = task
        if ext:
            state.by_external[ext] = task.id
        await state.create_delay()
        return _ok({"task_id": task.id, "task_status": "submitted",
                    "task_info": {"external_task_id": ext or ""},
                    "created_at": task.created_ms, "updated_at": task.created_ms})

    def find(kind: str, ident: str) -> Task:
        task = state.tasks.get(ident) or state.tasks.get(state.by_external.get(ident, ""))
        if task is None or task.endpoint != kind:
            raise ApiError(1203, f"task {ident} does not exist")
        return task

    async def query(request: Request, rec: RecordedRequest) -> Response:
        kind = kind_of(request)
        task = find(kind, request.path_params["task_id"])
        return _ok(task_data(task, state, str(request.base_url)))

    async def list_tasks(request: Request, rec: RecordedRequest) -> Response:
        kind = kind_of(request)
        try:
            page = int(request.query_params.get("pageNum", "1"))
            size = int(request.query_params.get("pageSize", "30"))
        except ValueError:
            raise _invalid("pageNum and pageSize must be integers") from None
        if not (1 <= page <= 1000 and 1 <= size <= 500):
            raise _invalid("pageNum must be in [1, 1000] and pageSize in [1, 500]")
        tasks = [t for t in reversed(state.tasks.values()) if t.endpoint == kind]
        chunk = tasks[(page - 1) * size: page * size]
        return _ok([task_data(t, state, str(request.base_url)) for t in chunk])

    async def cdn(request: Request, rec: RecordedRequest) -> Response:
        task = state.tasks.get(request.path_params["task_id"])
        if (task is None or task.video_id != request.path_params["video_id"] or state.expire_outputs
                or _status(task, state) != "succeed"):
            return Response("<Error><Code>NoSuchKey</Code></Error>", status_code=404,
                            media_type="application/xml")
        data = await run_in_threadpool(render_media, "video", f"{task.width}x{task.height}", task.duration)
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = 1202 if status in (404, 405) else 1200
        return ApiError(code, f"Invalid request: {request.method} {request.url.path}", status=status).response()

    app = Starlette(routes=[
        Route("/v1/videos/{endpoint}", endpoint(create), methods=["POST"]),
        Route("/v1/videos/{endpoint}", endpoint(list_tasks), methods=["GET"]),
        Route("/v1/videos/{endpoint}/{task_id}", endpoint(query), methods=["GET"]),
        Route("/kling-cdn/{task_id}/{video_id}.mp4", endpoint(cdn, auth=False), methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app

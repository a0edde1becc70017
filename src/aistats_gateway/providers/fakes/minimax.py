"""Fake MiniMax Hailuo video API (V1) for tests (shared/reference/provider-apis.md §4.1, docs/providers/minimax.md).

Routes (all need ``Authorization: Bearer <key>`` except the download link):

* ``POST /v1/video_generation`` — JSON ``{model, prompt, prompt_optimizer, fast_pretreatment, duration,
  resolution, first_frame_image, last_frame_image, subject_reference, callback_url, aigc_watermark}``
  → ``{task_id, base_resp}``.
* ``GET /v1/query/video_generation?task_id=`` → ``{task_id, status, file_id?, video_width?, video_height?,
  base_resp}`` with status Preparing → Queueing → Processing → Success | Fail on an injectable clock.
* ``GET /v1/files/retrieve?file_id=`` → ``{file: {file_id (an integer, as upstream), bytes, created_at,
  filename, purpose, download_url}, base_resp}``.
* ``GET /download/{token}.mp4`` — the "CDN" link (no auth), valid for 9 h; afterwards 403.

Like the real API, **errors are HTTP 200 with a non-zero ``base_resp.status_code``**: 1004 (no key),
2049 (wrong key), 1002 (rate limit), 1008 (insufficient balance), 1026 (sensitive input), 2013 (invalid
params, also for unknown task/file ids). Only the ``fail_next_creates`` knob with ``fail_status >= 400``
answers with an HTTP error (an overloaded gateway in front of the API). Every response carries a
``Trace-Id`` header.

Validation follows the documented rules: known model; prompt ≤ 2000 characters (optional when a first
frame is given); duration 6 or 10 (Hailuo models; 01-series models take neither duration nor
resolution); resolution 768P/1080P (+512P on Hailuo-02 with a first frame); 1080P only with 6 s;
Hailuo-2.3-Fast and I2V models need ``first_frame_image``; ``last_frame_image`` only on Hailuo-02 and
only with a first frame, not at 512P; S2V-01 needs ``subject_reference`` ``[{type:"character",
image:[url]}]``; images are http(s) URLs or base64 image data URLs (decoded: short side ≥ 300 px, aspect
between 2:5 and 5:2). Unknown body fields are ignored, as upstream.

Output: a real H.264 MP4 (solid colour per second, 8 fps): 768P = 1366x768, 1080P = 1920x1080,
512P = 912x512, 720P (01 series) = 1280x720; with a decodable first frame the short side is kept and
the frame's aspect ratio used. Choices the docs leave open: a failed task has ``status: "Fail"`` and the
failure's code in ``base_resp`` (1027 for output moderation, ``fail_job_code`` otherwise).
"""
from __future__ import annotations

import base64
import binascii
import io
import secrets
import time
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
from .openai import render_media

HAILUO = {  # model → (resolutions, text-to-video allowed)
    "MiniMax-Hailuo-2.3": ({"768P", "1080P"}, True),
    "MiniMax-Hailuo-2.3-Fast": ({"768P", "1080P"}, False),
    "MiniMax-Hailuo-02": ({"512P", "768P", "1080P"}, True),
}
LEGACY_T2V = ("T2V-01", "T2V-01-Director")
LEGACY_I2V = ("I2V-01", "I2V-01-Director", "I2V-01-live")
S2V = ("S2V-01",)
MODELS = tuple(HAILUO) + LEGACY_T2V + LEGACY_I2V + S2V
SHORT_SIDE = {"512P": 512, "720P": 720, "768P": 768, "1080P": 1080}
LANDSCAPE = {"512P": (912, 512), "720P": (1280, 720), "768P": (1366, 768), "1080P": (1920, 1080)}
DOWNLOAD_TTL_SECONDS = 9 * 3600
MAX_PROMPT = 2000


@dataclass
class Task:
    id: str
    model: str
    prompt: str
    duration: int
    resolution: str
    width: int
    height: int
    created_mono: float
    render_seconds: float
    fail: tuple[int, str] | None = None  # (base_resp code, message) when the task ends in Fail
    body: dict[str, Any] = field(default_factory=dict)
    file_id: int | None = None


@dataclass
class FakeMiniMaxState(FakeState):
    api_key: str = "mm-test"
    preparing_fraction: float = 0.1
    queued_fraction: float = 0.3  # Preparing, then Queueing, until this fraction of render_seconds
    # fault injection (also FakeState's: fail_next_creates, rate_limit_next, create_delay_seconds)
    fail_status: int = 503  # >= 400: an HTTP error; 200: HTTP 200 with base_resp.status_code = fail_code
    fail_code: int = 1000
    insufficient_balance: bool = False  # creates answer base_resp 1008
    sensitive_input_prompts: list[str] = field(default_factory=list)  # create → 1026
    sensitive_output_prompts: list[str] = field(default_factory=list)  # task → Fail with 1027
    fail_jobs: bool = False  # tasks created afterwards end in Fail with fail_job_code
    fail_job_code: int = 1000
    fail_job_message: str = "video generation failed (fake)"
    expire_outputs: bool = False  # download links answer 403 as if expired
    missing_outputs: bool = False  # files/retrieve answers 2013 (file gone)
    check_images: bool = True
    # recorded state (and FakeState.requests)
    tasks: dict[str, Task] = field(default_factory=dict)
    files: dict[int, str] = field(default_factory=dict)  # file_id → task id
    downloads: dict[str, tuple[int, float]] = field(default_factory=dict)  # token → (file_id, issued mono)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", "/v1/video_generation")
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "tasks", "files", "downloads")


class BaseRespError(Exception):
    """Answered as HTTP 200 with ``base_resp`` (or as ``http_status`` when given)."""

    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status

    def response(self, extra: dict[str, Any] | None = None) -> JSONResponse:
        body = {**(extra or {}), "base_resp": {"status_code": self.code, "status_msg": self.message}}
        return JSONResponse(body, status_code=self.http_status)


def _ok(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({**body, "base_resp": {"status_code": 0, "status_msg": "success"}})


def _invalid(message: str) -> BaseRespError:
    return BaseRespError(2013, f"invalid params, {message}")


def _image_size(value: Any, name: str, check: bool) -> tuple[int, int] | None:
    """Validate an image field (URL or data URL); the decoded size for data URLs."""
    if not isinstance(value, str) or not value:
        raise _invalid(f"{name} must be a non-empty string")
    if value.startswith(("http://", "https://")):
        return None
    if not value.startswith("data:"):
        raise _invalid(f"{name} must be a public URL or a base64 data URL")
    head, _, payload = value.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise _invalid(f"{name}: unsupported data URL (use data:image/jpeg|png|webp;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{name}: the base64 data is malformed") from None
    if len(data) > 20 * 1024 * 1024:
        raise _invalid(f"{name}: the image exceeds 20MB")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Exception:
        raise _invalid(f"{name}: the image could not be decoded") from None
    if check and (min(w, h) < 300 or not 0.4 <= w / h <= 2.5):
        raise _invalid(f"{name}: the short side must be at least 300px and the aspect ratio between 2:5 and 5:2")
    return w, h


def _dimensions(resolution: str, image: tuple[int, int] | None) -> tuple[int, int]:
    if image is None:
        return LANDSCAPE[resolution]
    short = SHORT_SIDE[resolution]
    w, h = image
    scale = short / min(w, h)
    width, height = round(w * scale / 2) * 2, round(h * scale / 2) * 2
    return max(width, 2), max(height, 2)


def _validate(body: dict[str, Any], state: FakeMiniMaxState) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model is required")
    if model not in MODELS:
        raise _invalid(f"model {model} is not supported")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise _invalid("prompt must be a string")
    if len(prompt) > MAX_PROMPT:
        raise _invalid(f"prompt exceeds {MAX_PROMPT} characters")
    for name in ("prompt_optimizer", "fast_pretreatment", "aigc_watermark"):
        if name in body and not isinstance(body[name], bool):
            raise _invalid(f"{name} must be a boolean")
    if "callback_url" in body and not isinstance(body["callback_url"], str):
        raise _invalid("callback_url must be a string")
    first = _image_size(body["first_frame_image"], "first_frame_image", state.check_images) \
        if "first_frame_image" in body else None
    has_first = "first_frame_image" in body
    has_last = "last_frame_image" in body
    if has_last:
        _image_size(body["last_frame_image"], "last_frame_image", state.check_images)
    hailuo = model in HAILUO
    if hailuo:
        resolutions, t2v = HAILUO[model]
        duration = body.get("duration", 6)
        if isinstance(duration, bool) or not isinstance(duration, int) or duration not in (6, 10):
            raise _invalid(f"duration {duration!r} is not supported, use 6 or 10")
        resolution = body.get("resolution", "768P")
        if resolution not in resolutions:
            raise _invalid(f"resolution {resolution!r} is not supported by {model}; "
                           f"use one of {', '.join(sorted(resolutions))}")
        if resolution == "1080P" and duration != 6:
            raise _invalid("1080P only supports a 6 s duration")
        if resolution == "512P" and not has_first:
            raise _invalid("512P is only available for image-to-video")
        if not t2v and not has_first:
            raise _invalid(f"{model} requires first_frame_image")
        if has_last and (model != "MiniMax-Hailuo-02" or not has_first or resolution == "512P"):
            raise _invalid("last_frame_image needs MiniMax-Hailuo-02, a first_frame_image and 768P or 1080P")
    else:
        for name in ("duration", "resolution"):
            if name in body:
                raise _invalid(f"{name} is not supported by {model}")
        duration, resolution = 6, "720P"
        if has_last:
            raise _invalid(f"last_frame_image is not supported by {model}")
        if model in LEGACY_I2V and not has_first:
            raise _invalid(f"{model} requires first_frame_image")
        if model in LEGACY_T2V and has_first:
            raise _invalid(f"{model} is text-to-video only")
    if model in S2V:
        refs = body.get("subject_reference")
        if not isinstance(refs, list) or len(refs) != 1 or not isinstance(refs[0], dict) \
                or refs[0].get("type") != "character" or not isinstance(refs[0].get("image"), list) \
                or len(refs[0]["image"]) != 1:
            raise _invalid("subject_reference must be [{\"type\": \"character\", \"image\": [<one image>]}]")
        _image_size(refs[0]["image"][0], "subject_reference.image", state.check_images)  # does not set the frame
    elif "subject_reference" in body:
        raise _invalid(f"subject_reference is not supported by {model}")
    if not prompt and not has_first and model not in S2V:
        raise _invalid("prompt is required for text-to-video")
    width, height = _dimensions(resolution, first)
    return {"model": model, "prompt": prompt, "duration": duration, "resolution": resolution,
            "width": width, "height": height}


def _status(task: Task, state: FakeMiniMaxState) -> str:
    elapsed, total = state.clock() - task.created_mono, task.render_seconds
    if task.fail is not None and task.fail[0] == 1027 and elapsed >= total * state.queued_fraction:
        return "Fail"  # output moderation: decided when generation starts
    if elapsed >= total:
        return "Fail" if task.fail is not None else "Success"
    if elapsed < total * state.preparing_fraction:
        return "Preparing"
    if elapsed < total * state.queued_fraction:
        return "Queueing"
    return "Processing"


def create_app(api_key: str = "mm-test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeMiniMaxState`` fields. State: ``app.state.fake``."""
    state = FakeMiniMaxState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def gate(request: Request, rec: RecordedRequest) -> None:
        key = bearer(request)
        if not key:
            raise BaseRespError(1004, "login fail: Please carry the API secret key in the "
                                      "'Authorization' field of the request header")
        if key != state.api_key:
            raise BaseRespError(2049, "invalid api key")
        if state.take_rate_limit():
            raise BaseRespError(1002, "rate limit exceeded(RPM)")

    def answer(exc: BaseRespError, rec: RecordedRequest) -> Response:
        return exc.response({"task_id": ""} if rec.path == "/v1/video_generation" else None)

    def trace(response: Response, rec: RecordedRequest) -> None:
        response.headers["Trace-Id"] = secrets.token_hex(16)

    def endpoint(handler: Callable[..., Any], *, auth: bool = True) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=BaseRespError, answer=answer, gate=gate if auth else None,
                        finish=trace)

    async def create(request: Request, rec: RecordedRequest) -> Response:
        if (failure := state.take_create_failure()) is not None:
            if failure >= 400:
                return JSONResponse({"base_resp": {"status_code": 1000, "status_msg": "service unavailable"}},
                                    status_code=failure)
            raise BaseRespError(state.fail_code, "injected failure (fake)")
        try:
            body = await request.json()
        except ValueError:
            raise _invalid("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _invalid("the request body must be a JSON object")
        rec.body = body
        params = _validate(body, state)
        if state.insufficient_balance:
            raise BaseRespError(1008, "insufficient balance")
        if mentions(params["prompt"], state.sensitive_input_prompts):
            raise BaseRespError(1026, "input new_sensitive")
        fail = None
        if mentions(params["prompt"], state.sensitive_output_prompts):
            fail = (1027, "output new_sensitive")
        elif state.fail_jobs:
            fail = (state.fail_job_code, state.fail_job_message)
        task = Task(str(secrets.randbelow(9 * 10**14) + 10**14), params["model"], params["prompt"],
                    params["duration"], params["resolution"], params["width"], params["height"],
                    state.clock(), state.render_seconds, fail, body)
        state.tasks[task.id] = task
        await state.create_delay()
        return _ok({"task_id": task.id})

    async def query(request: Request, rec: RecordedRequest) -> Response:
        task_id = request.query_params.get("task_id", "")
        task = state.tasks.get(task_id)
        if task is None:
            raise _invalid(f"task_id {task_id!r} not found" if task_id else "task_id is required")
        status = _status(task, state)
        if status == "Fail":
            assert task.fail is not None
            return JSONResponse({"task_id": task.id, "status": "Fail", "file_id": "",
                                 "base_resp": {"status_code": task.fail[0], "status_msg": task.fail[1]}})
        body: dict[str, Any] = {"task_id": task.id, "status": status, "file_id": ""}
        if status == "Success":
            if task.file_id is None:
                task.file_id = secrets.randbelow(9 * 10**14) + 10**14
                state.files[task.file_id] = task.id
            body.update(file_id=str(task.file_id), video_width=task.width, video_height=task.height)
        return _ok(body)

    async def retrieve(request: Request, rec: RecordedRequest) -> Response:
        raw = request.query_params.get("file_id", "")
        try:
            file_id = int(raw)
        except ValueError:
            raise _invalid("file_id must be an integer") from None
        if file_id not in state.files or state.missing_outputs:
            raise _invalid(f"file {raw} not found")
        task = state.tasks[state.files[file_id]]
        data = await run_in_threadpool(render_media, "video", f"{task.width}x{task.height}", str(task.duration))
        token = secrets.token_urlsafe(18)
        state.downloads[token] = (file_id, state.clock())
        url = f"{str(request.base_url).rstrip('/')}/download/{token}.mp4"
        return _ok({"file": {"file_id": file_id, "bytes": len(data), "created_at": state.unix(),
                             "filename": "output.mp4", "purpose": "video_generation", "download_url": url}})

    async def download(request: Request, rec: RecordedRequest) -> Response:
        token = request.path_params["token"]
        entry = state.downloads.get(token)
        if entry is None:
            return PlainTextResponse("NoSuchKey: The specified key does not exist.", status_code=404)
        file_id, issued = entry
        if state.expire_outputs or state.clock() >= issued + DOWNLOAD_TTL_SECONDS:
            return PlainTextResponse("AccessDenied: Request has expired.", status_code=403)
        task = state.tasks[state.files[file_id]]
        data = await run_in_threadpool(render_media, "video", f"{task.width}x{task.height}", str(task.duration))
        return Response(data, media_type="video/mp4")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return JSONResponse({"base_resp": {"status_code": 1000 if status >= 500 else 2013,
                                           "status_msg": f"{request.method} {request.url.path}: "
                                                         f"{getattr(exc, 'detail', 'error')}"}},
                            status_code=status)

    from .inference_common import InferenceState
    from .minimax_chat import routes as chat_routes

    inference = InferenceState(api_key=api_key, provider="minimax", reject_unknown_params=False,
                               usage_style="final_chunk")
    app = Starlette(routes=[
        *chat_routes(inference),  # POST /v1/text/chatcompletion_v2 (minimax_chat)
        Route("/v1/video_generation", endpoint(create), methods=["POST"]),
        Route("/v1/query/video_generation", endpoint(query), methods=["GET"]),
        Route("/v1/files/retrieve", endpoint(retrieve), methods=["GET"]),
        Route("/download/{token}.mp4", endpoint(download, auth=False), methods=["GET"]),
    ], exception_handlers={HTTPException: not_found})
    app.state.fake = state
    app.state.inference = inference
    return app

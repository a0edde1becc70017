"""Fake Runway API (video) for tests and manual runs (shared/reference/provider-apis.md §4.5).

Fakes ``POST /v1/text_to_video``, ``POST /v1/image_to_video``, ``GET /v1/tasks/{id}`` and
``DELETE /v1/tasks/{id}``, plus the output "CDN" (``GET /cdn/{task}/{n}.mp4?_jwt=…``, no auth) that
the ``output[]`` URLs point at (on this server). Every API call needs ``Authorization: Bearer <key>``
and ``X-Runway-Version: 2024-11-06`` (as Runway, the version header is checked first). Errors use
Runway's body ``{"error": "...", "issues": [{code, path, message}], "docUrl": ...}``.

Per-model validation follows runwayml/sdk-python's create params (camelCase; unknown keys are
rejected): ``gen4.5`` (text and image to video), ``gen4_turbo`` (image only, default 10 s),
``veo3.1``/``veo3.1_fast`` (4/6/8 s, ``audio``, first+last frame), ``veo3`` (8 s). ``ratio`` must be
one of the model's pixel forms; ``promptImage`` an https URL or an image data URI, or
``[{uri, position: first|last}]``.

Tasks go (``THROTTLED`` for ``throttled_fraction``) → ``PENDING`` (``queued_fraction`` of
``render_seconds``) → ``RUNNING`` (``progress`` 0..1) → ``SUCCEEDED`` with one output URL, on an
injectable clock. The output is a real H.264 MP4 of the ratio's pixel size and the duration.
Faults: ``fail_next_creates``/``fail_status``, ``rate_limit_next`` (429), ``insufficient_credits``
(400 "You do not have enough credits…"), ``moderation_block_prompts`` (task FAILED with
``SAFETY.INPUT.TEXT`` when it leaves the queue), ``fail_jobs`` (FAILED ``INTERNAL.BAD_OUTPUT.CODE01``
at the end), ``expire_outputs`` (the CDN answers 403).

Choices the docs leave open: the 401 and version-header messages; ``DELETE`` of an unfinished task
marks it ``CANCELLED`` (it stays readable), of a finished one removes it (then 404); outputs expire
48 h after completion. Not faked: video_to_video, uploads, organization/usage, other models.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._common import FakeState, RecordedRequest, bearer, mentions, recorded
from .hosted_images import attach
from .openai import render_media

API_VERSION = "2024-11-06"
DOC_URL = "https://docs.dev.runwayml.com/api"
OUTPUT_TTL_SECONDS = 48 * 3600
MAX_PROMPT = 1000
GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")


@dataclass(frozen=True)
class ModelSpec:
    ratios: dict[str, tuple[str, ...]]  # endpoint -> allowed ratios
    keys: dict[str, frozenset[str]]  # endpoint -> accepted body keys
    required: dict[str, frozenset[str]]  # endpoint -> required keys
    durations: tuple[int, ...]
    default_duration: int
    last_frame: bool = False


def _keys(*names: str) -> frozenset[str]:
    return frozenset(("model",) + names)


_GEN4 = ("promptText", "promptImage", "ratio", "duration", "seed", "contentModeration")
_VEO = ("promptText", "promptImage", "ratio", "duration", "audio")
MODELS: dict[str, ModelSpec] = {
    "gen4.5": ModelSpec(
        ratios={"text_to_video": GEN4_RATIOS[:5], "image_to_video": GEN4_RATIOS},
        keys={"text_to_video": _keys(*(k for k in _GEN4 if k != "promptImage")), "image_to_video": _keys(*_GEN4)},
        required={"text_to_video": _keys("promptText", "ratio", "duration"),
                  "image_to_video": _keys("promptText", "promptImage", "ratio", "duration")},
        durations=tuple(range(2, 11)), default_duration=5),
    "gen4_turbo": ModelSpec(
        ratios={"image_to_video": GEN4_RATIOS}, keys={"image_to_video": _keys(*_GEN4)},
        required={"image_to_video": _keys("promptImage", "ratio")}, durations=tuple(range(2, 11)),
        default_duration=10),
    "veo3.1": ModelSpec(
        ratios={"text_to_video": VEO_RATIOS, "image_to_video": VEO_RATIOS},
        keys={"text_to_video": _keys(*(k for k in _VEO if k != "promptImage")),
              "image_to_video": _keys(*_VEO, "negativePrompt")},
        required={"text_to_video": _keys("promptText", "ratio"), "image_to_video": _keys("promptImage", "ratio")},
        durations=(4, 6, 8), default_duration=8, last_frame=True),
    "veo3": ModelSpec(
        ratios={"text_to_video": VEO_RATIOS, "image_to_video": VEO_RATIOS},
        keys={"text_to_video": _keys("promptText", "ratio", "duration"),
              "image_to_video": _keys("promptText", "promptImage", "ratio", "duration")},
        required={"text_to_video": _keys("promptText", "ratio", "duration"),
                  "image_to_video": _keys("promptImage", "ratio", "duration")},
        durations=(8,), default_duration=8),
}
MODELS["veo3.1_fast"] = MODELS["veo3.1"]


@dataclass
class Task:
    id: str
    model: str
    endpoint: str
    ratio: str
    duration: int
    created_mono: float
    created_wall: float
    render_seconds: float
    body: dict[str, Any]
    fail: tuple[str, str, float] | None = None  # (failureCode, failure, at fraction of render time)
    cancelled_mono: float | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))


@dataclass
class FakeRunwayState(FakeState):
    api_key: str = "key_test"
    queued_fraction: float = 0.2
    throttled_fraction: float = 0.0
    check_images: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status, rate_limit_next/retry_after_seconds)
    insufficient_credits: bool = False
    moderation_block_prompts: list[str] = field(default_factory=list)
    fail_jobs: bool = False
    fail_code: str = "INTERNAL.BAD_OUTPUT.CODE01"
    fail_message: str = "The generation failed an internal quality check. Please try again."
    expire_outputs: bool = False
    # recorded state (and FakeState.requests)
    tasks: dict[str, Task] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)  # task ids, in the order DELETE arrived

    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "tasks", "cancels")

    @property
    def creates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path in ("/v1/text_to_video",
                                                                                 "/v1/image_to_video")]


class ApiError(Exception):
    def __init__(self, status: int, message: str, issues: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.issues, self.headers = status, message, issues, headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.issues is not None:
            body["issues"] = self.issues
            body["docUrl"] = DOC_URL
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _issue(path: list[Any], message: str, code: str = "invalid_type") -> dict[str, Any]:
    return {"code": code, "path": path, "message": message}


def _validation(issues: list[dict[str, Any]]) -> ApiError:
    return ApiError(400, "Validation of body failed", issues)


# ---------------------------------------------------------------- validation


def _check_uri(uri: Any, path: list[Any], check: bool) -> list[dict[str, Any]]:
    if not isinstance(uri, str) or not uri:
        return [_issue(path, "Expected a HTTPS URL or data URI string")]
    if uri.startswith("data:"):
        head, _, payload = uri.partition(",")
        if not (head.startswith("data:image/") and head.endswith(";base64")):
            return [_issue(path, "Data URIs must be base64-encoded images", "invalid_string")]
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return [_issue(path, "Invalid base64 in data URI", "invalid_string")]
        if check:
            from PIL import Image

            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.verify()
            except Exception:
                return [_issue(path, "The image could not be decoded", "invalid_image")]
        return []
    if not uri.startswith("https://"):
        return [_issue(path, "Invalid URL: only HTTPS URLs or data URIs are accepted", "invalid_string")]
    return []


def validate(endpoint: str, body: Any, check_images: bool = True) -> tuple[str, ModelSpec, str, int]:
    """(model, spec, ratio, duration) of a valid create body; raises ApiError(400) otherwise."""
    if not isinstance(body, dict):
        raise _validation([_issue([], "Expected object, received " + type(body).__name__)])
    model = body.get("model")
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None or endpoint not in spec.ratios:
        allowed = sorted(m for m, s in MODELS.items() if endpoint in s.ratios)
        raise _validation([_issue(["model"], f"Invalid enum value. Expected {' | '.join(repr(m) for m in allowed)}, "
                                              f"received {model!r}", "invalid_enum_value")])
    issues: list[dict[str, Any]] = []
    unknown = sorted(set(body) - spec.keys[endpoint])
    if unknown:
        issues.append(_issue([], f"Unrecognized key(s) in object: {', '.join(repr(k) for k in unknown)}",
                             "unrecognized_keys"))
    for key in sorted(spec.required[endpoint] - set(body)):
        issues.append(_issue([key], "Required"))
    text = body.get("promptText")
    if text is not None and (not isinstance(text, str) or not 1 <= len(text) <= MAX_PROMPT):
        code = "too_big" if isinstance(text, str) and text else "too_small"
        issues.append(_issue(["promptText"], f"promptText must be a non-empty string of at most {MAX_PROMPT} "
                                             "characters", code))
    ratios = spec.ratios[endpoint]
    ratio = body.get("ratio")
    if "ratio" in body and ratio not in ratios:
        issues.append(_issue(["ratio"], f"Invalid enum value. Expected {' | '.join(repr(r) for r in ratios)}, "
                                        f"received {ratio!r}", "invalid_enum_value"))
    duration = body.get("duration", spec.default_duration)
    if isinstance(duration, bool) or not isinstance(duration, int):
        issues.append(_issue(["duration"], f"Expected integer, received {type(duration).__name__}"))
    elif duration not in spec.durations:
        issues.append(_issue(["duration"], f"duration must be one of {', '.join(map(str, spec.durations))}",
                             "invalid_enum_value"))
    seed = body.get("seed")
    if "seed" in body and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4294967295):
        issues.append(_issue(["seed"], "seed must be an integer from 0 to 4294967295", "too_big"))
    if "audio" in body and not isinstance(body["audio"], bool):
        issues.append(_issue(["audio"], "Expected boolean"))
    if "negativePrompt" in body and not isinstance(body["negativePrompt"], str):
        issues.append(_issue(["negativePrompt"], "Expected string"))
    mod = body.get("contentModeration")
    if mod is not None and (not isinstance(mod, dict) or set(mod) - {"publicFigureThreshold"} or \
                mod.get("publicFigureThreshold", "auto") not in ("auto", "low")):
        issues.append(_issue(["contentModeration"], "contentModeration takes publicFigureThreshold: auto | low"))
    if "promptImage" in body:
        image = body["promptImage"]
        if isinstance(image, list):
            positions = []
            for n, item in enumerate(image):
                if not isinstance(item, dict) or set(item) - {"uri", "position"}:
                    issues.append(_issue(["promptImage", n], "Expected {uri, position}"))
                    continue
                issues += _check_uri(item.get("uri"), ["promptImage", n, "uri"], check_images)
                positions.append(item.get("position"))
            allowed_pos = ("first", "last") if spec.last_frame else ("first",)
            if not image or any(p not in allowed_pos for p in positions) or len(set(positions)) != len(positions):
                issues.append(_issue(["promptImage"], f"positions must be unique and one of {', '.join(allowed_pos)}",
                                     "invalid_enum_value"))
            elif "first" not in positions:
                issues.append(_issue(["promptImage"], "This model does not support generating with only a last frame",
                                     "custom"))
        else:
            issues += _check_uri(image, ["promptImage"], check_images)
    if issues:
        raise _validation(issues)
    return model, spec, ratio, duration  # type: ignore[return-value]


# ---------------------------------------------------------------- tasks


def task_state(task: Task, state: FakeRunwayState) -> tuple[str, float | None, float | None]:
    """(status, progress 0..1 while RUNNING, monotonic time of the terminal transition)."""
    now, total = state.clock(), task.render_seconds
    if task.fail is not None and now >= task.created_mono + total * task.fail[2] and \
            (task.cancelled_mono is None or task.cancelled_mono > task.created_mono + total * task.fail[2]):
        return "FAILED", None, task.created_mono + total * task.fail[2]
    done_at = task.created_mono + total
    if task.cancelled_mono is not None and task.cancelled_mono < done_at:
        return "CANCELLED", None, task.cancelled_mono
    elapsed = now - task.created_mono
    if elapsed >= total:
        return "SUCCEEDED", None, done_at
    if elapsed < total * state.throttled_fraction:
        return "THROTTLED", None, None
    queued_for = total * max(state.queued_fraction, state.throttled_fraction)
    if elapsed < queued_for:
        return "PENDING", None, None
    return "RUNNING", round(min(0.99, (elapsed - queued_for) / max(total - queued_for, 1e-9)), 2), None


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_object(task: Task, state: FakeRunwayState, base_url: str) -> dict[str, Any]:
    status, progress, _ = task_state(task, state)
    obj: dict[str, Any] = {"id": task.id, "createdAt": _iso(task.created_wall), "status": status}
    if status == "RUNNING":
        obj["progress"] = progress
    elif status == "SUCCEEDED":
        obj["output"] = [f"{base_url}/cdn/{task.id}/0.mp4?_jwt={task.token}"]
    elif status == "FAILED" and task.fail is not None:
        obj["failure"], obj["failureCode"] = task.fail[1], task.fail[0]
    return obj


# ---------------------------------------------------------------- app


def create_app(api_key: str = "key_test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeRunwayState`` fields. State: ``app.state.fake``."""
    state = FakeRunwayState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def gate(request: Request, rec: RecordedRequest) -> None:
        if request.headers.get("x-runway-version") != API_VERSION:
            raise ApiError(400, "The X-Runway-Version header is missing or invalid; it must be set to "
                                f"{API_VERSION}.")
        token = bearer(request)
        if token != state.api_key:
            raise ApiError(401, "The API key you provided is invalid." if token else
                           "No API key was provided (Authorization: Bearer <key>).")
        if state.take_rate_limit():
            raise ApiError(429, "You have exceeded the rate limit for this API key. Please slow down.",
                           headers=state.retry_after())

    def endpoint(handler: Callable[..., Any], *, api: bool = True) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=ApiError, answer=lambda exc, rec: exc.response(),
                        gate=gate if api else None)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def create(request: Request, rec: RecordedRequest, endpoint_name: str) -> Response:
        if (failure := state.take_create_failure()) is not None:
            raise ApiError(failure, "Runway is experiencing high load. Please retry."
                           if failure >= 500 else f"Injected failure ({failure}).")
        try:
            rec.body = await request.json()
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON.") from None
        model, _spec, ratio, duration = validate(endpoint_name, rec.body, state.check_images)
        if state.insufficient_credits:
            raise ApiError(400, "You do not have enough credits to run this task.")
        prompt = str(rec.body.get("promptText") or "")
        fail = None
        if mentions(prompt, state.moderation_block_prompts):
            fail = ("SAFETY.INPUT.TEXT", "The prompt text was rejected by content moderation.",
                    max(state.queued_fraction, state.throttled_fraction))
        elif state.fail_jobs:
            fail = (state.fail_code, state.fail_message, 1.0)
        task = Task(str(uuid.uuid4()), model, endpoint_name, ratio, duration, state.clock(), time.time(),
                    state.render_seconds, rec.body, fail)
        state.tasks[task.id] = task
        return JSONResponse({"id": task.id})

    @endpoint
    async def text_to_video(request: Request, rec: RecordedRequest) -> Response:
        return await create(request, rec, "text_to_video")

    @endpoint
    async def image_to_video(request: Request, rec: RecordedRequest) -> Response:
        return await create(request, rec, "image_to_video")

    def get_task(request: Request) -> Task:
        task = state.tasks.get(request.path_params["task_id"])
        if task is None:
            raise ApiError(404, "Task not found.")
        return task

    @endpoint
    async def retrieve_task(request: Request, rec: RecordedRequest) -> Response:
        return JSONResponse(task_object(get_task(request), state, base_url(request)))

    @endpoint
    async def delete_task(request: Request, rec: RecordedRequest) -> Response:
        task = get_task(request)
        state.cancels.append(task.id)
        status, _, _ = task_state(task, state)
        if status in ("PENDING", "THROTTLED", "RUNNING"):
            task.cancelled_mono = state.clock()
        else:
            del state.tasks[task.id]
        return Response(status_code=204)

    async def cdn(request: Request, rec: RecordedRequest) -> Response:
        task = state.tasks.get(request.path_params["task_id"])
        status, _, done = task_state(task, state) if task else ("", None, None)
        if task is None or status != "SUCCEEDED" or request.path_params["index"] != "0" or \
                request.query_params.get("_jwt") != task.token or state.expire_outputs or \
                (done is not None and state.clock() >= done + OUTPUT_TTL_SECONDS):
            return Response("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                            "<Message>Access denied</Message></Error>", status_code=403, media_type="text/xml")
        w, h = task.ratio.split(":")
        data = await run_in_threadpool(render_media, "video", f"{w}x{h}", str(task.duration))
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return ApiError(status, "Not found." if status == 404 else
                        ("Method not allowed." if status == 405 else str(getattr(exc, "detail", "")))).response()

    app = Starlette(routes=[
        Route("/v1/text_to_video", text_to_video, methods=["POST"]),
        Route("/v1/image_to_video", image_to_video, methods=["POST"]),
        Route("/v1/tasks/{task_id}", retrieve_task, methods=["GET"]),
        Route("/v1/tasks/{task_id}", delete_task, methods=["DELETE"]),
        Route("/cdn/{task_id}/{index}.mp4", endpoint(cdn, api=False), methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return attach(app, "runway", api_key)  # the image API next to the video one

"""Fake fal.ai queue API (video models) for tests and manual runs (shared/reference/provider-apis.md §4.6,
docs.fal.ai queue / errors / request-errors pages, the models' llms.txt schemas).

Fakes the queue under ``Authorization: Key <key_id>:<key_secret>``:

* ``POST /{model_id}`` (the full id, subpath included) → ``{request_id, response_url, status_url,
  cancel_url, queue_position}``; the URLs point back at this server and leave the subpath out.
* ``GET /{owner}/{app}/requests/{id}/status`` → 202 ``IN_QUEUE`` (``queue_position``) / ``IN_PROGRESS``,
  200 ``COMPLETED`` (``metrics``). A path that keeps the subpath is 404, as on fal.
* ``GET /{owner}/{app}/requests/{id}`` → 400 ``{"detail": "Request is still in progress"}`` until done,
  then the model output ``{"video": {url, content_type, file_name}, "seed"}`` or an error: the model's
  422 ``{"detail": [{loc, msg, type, ...}]}`` (input validation, ``content_policy_violation``) or the
  platform's ``{"detail", "error_type"}`` with ``X-Fal-Error-Type``.
* ``PUT /{owner}/{app}/requests/{id}/cancel`` → 202 ``CANCELLATION_REQUESTED`` / 400 ``ALREADY_COMPLETED``
  / 404 ``NOT_FOUND``.
* ``GET /files/{folder}/{name}_output.mp4`` (no auth): the output, a real H.264 MP4.

As on fal, the queue accepts any JSON object and the *model* validates it when it runs: a bad input
ends COMPLETED with a 422 result. The input schemas are those of the catalogue's video models
(MODELS: Kling 2.1 master / 2.5 turbo / 2.6 pro, Hailuo-02 standard, Wan 2.5 preview, Seedance 1 pro;
text- and image-to-video) with pydantic's error types (``literal_error`` for a duration sent as a
number instead of ``"5"``, ``missing``, ``string_type``…). Unknown fields are ignored, as pydantic does.

Faults: ``fail_next_creates``/``fail_status``, ``rate_limit_next`` (429), ``exhausted_balance`` (403
"User is locked. Reason: Exhausted balance…"), ``content_policy_prompts`` (422
``content_policy_violation`` result), ``fail_jobs`` (503 ``runner_disconnected`` result),
``expire_outputs`` (the file answers 404). Auth: a key without ``:`` is 401 "Invalid Key
Authorization header format…", an unknown one 401 "No user found for Key ID and Secret", exhausted
balance 403.

Choices the docs leave open: unknown model ids are 404 (``strict_models``); cancelling a queued request
removes it (later 404), cancelling a running one ends it COMPLETED with a 400 ``request_cancelled``
result; the output sizes in ``output_size``. Not faked: webhooks, ``/status/stream``, logs content,
sync ``fal.run``, storage uploads.
"""
from __future__ import annotations

import base64
import binascii
import re
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

from ._common import FakeState, RecordedRequest, mentions, recorded
from .openai import render_media

STILL_RUNNING = "Request is still in progress"
POLICY_MSG = "The content could not be processed because it contained material flagged by a content checker."


@dataclass(frozen=True)
class F:
    """One input field, pydantic-style: ``enum`` is a Literal of strings; ``url`` a str URL/data URI."""

    kind: str  # str | int | float | bool | enum | url
    values: tuple[str, ...] = ()
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None


def _enum(*values: str, default: str | None = None) -> F:
    return F("enum", values, default=default if default is not None else values[0])


KLING_T2V = {"prompt": F("str", required=True), "duration": _enum("5", "10"),
             "aspect_ratio": _enum("16:9", "9:16", "1:1"),
             "negative_prompt": F("str", default="blur, distort, and low quality"),
             "cfg_scale": F("float", default=0.5, minimum=0, maximum=1)}
KLING_I2V = {"prompt": F("str", required=True), "image_url": F("url", required=True), "duration": _enum("5", "10"),
             "negative_prompt": F("str", default="blur, distort, and low quality"),
             "cfg_scale": F("float", default=0.5, minimum=0, maximum=1)}
HAILUO_T2V = {"prompt": F("str", required=True), "duration": _enum("6", "10"),
              "prompt_optimizer": F("bool", default=True)}
HAILUO_I2V = {"prompt": F("str", required=True), "image_url": F("url", required=True), "end_image_url": F("url"),
              "duration": _enum("6", "10"), "prompt_optimizer": F("bool", default=True),
              "resolution": _enum("768P", "512P")}
WAN_T2V = {"prompt": F("str", required=True), "duration": _enum("5", "10"),
           "resolution": _enum("1080p", "720p", "480p"), "aspect_ratio": _enum("16:9", "9:16", "1:1"),
           "negative_prompt": F("str"), "enable_prompt_expansion": F("bool", default=True), "seed": F("int"),
           "audio_url": F("url"), "enable_safety_checker": F("bool", default=True)}
WAN_I2V = {k: v for k, v in WAN_T2V.items() if k != "aspect_ratio"} | {"image_url": F("url", required=True)}
_SEED_DURATIONS = tuple(str(n) for n in range(2, 13))
SEEDANCE_T2V = {"prompt": F("str", required=True), "aspect_ratio": _enum("16:9", "21:9", "4:3", "1:1", "3:4", "9:16"),
                "resolution": _enum("1080p", "480p", "720p"), "duration": _enum(*_SEED_DURATIONS, default="5"),
                "camera_fixed": F("bool", default=False), "seed": F("int"),
                "enable_safety_checker": F("bool", default=True), "num_frames": F("int", minimum=29, maximum=289)}
SEEDANCE_I2V = {k: v for k, v in SEEDANCE_T2V.items() if k != "aspect_ratio"} | {
    "image_url": F("url", required=True), "end_image_url": F("url"),
    "aspect_ratio": _enum("auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16")}
MODELS: dict[str, dict[str, F]] = {
    "fal-ai/kling-video/v2.1/master/text-to-video": KLING_T2V,
    "fal-ai/kling-video/v2.1/master/image-to-video": KLING_I2V,
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": KLING_T2V,
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": KLING_I2V,
    "fal-ai/kling-video/v2.6/pro/text-to-video": KLING_T2V | {"generate_audio": F("bool", default=True)},
    "fal-ai/kling-video/v2.6/pro/image-to-video": KLING_I2V | {"generate_audio": F("bool", default=True)},
    "fal-ai/minimax/hailuo-02/standard/text-to-video": HAILUO_T2V,
    "fal-ai/minimax/hailuo-02/standard/image-to-video": HAILUO_I2V,
    "fal-ai/wan-25-preview/text-to-video": WAN_T2V,
    "fal-ai/wan-25-preview/image-to-video": WAN_I2V,
    "fal-ai/bytedance/seedance/v1/pro/text-to-video": SEEDANCE_T2V,
    "fal-ai/bytedance/seedance/v1/pro/image-to-video": SEEDANCE_I2V,
}
GENERIC = {"prompt": F("str", required=True)}  # for unknown models when strict_models is off
SHORT = {"480p": 480, "512P": 512, "720p": 720, "768P": 768, "1080p": 1080}


def _even(n: float) -> int:
    n = round(n)
    return n + n % 2


def output_size(model_id: str, values: dict[str, Any]) -> tuple[int, int, int]:
    """(width, height, seconds) of the fake's output for validated inputs."""
    seconds = int(str(values.get("duration") or "5").rstrip("s"))
    if "/kling-video/" in model_id:
        short = 720
    elif "/minimax/" in model_id:
        short = SHORT[values.get("resolution") or "768P"]
    else:
        short = SHORT.get(str(values.get("resolution") or "720p"), 720)
    ratio = str(values.get("aspect_ratio") or "16:9")
    if ratio == "auto" or "/minimax/" in model_id:
        ratio = "16:9"
    w, h = (int(p) for p in ratio.split(":"))
    if "/wan-25-preview/" in model_id and short == 480 and w != h:
        long = 832  # Wan's 480P sizes: 832*480, 480*832, 624*624
    elif "/wan-25-preview/" in model_id and w == h:
        return {480: 624, 720: 960, 1080: 1440}[short], {480: 624, 720: 960, 1080: 1440}[short], seconds
    else:
        long = _even(short * max(w, h) / min(w, h))
    return ((long, short) if w >= h else (short, long)) + (seconds,)


def _err(loc: str, msg: str, type_: str, value: Any = None, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"loc": ["body", loc], "msg": msg, "type": type_, "input": value}
    if ctx:
        item["ctx"] = ctx
    return item


def _check_url(name: str, value: str) -> dict[str, Any] | None:
    if value.startswith("data:"):
        head, _, payload = value.partition(",")
        try:
            if not head.endswith(";base64"):
                raise ValueError
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return _err(name, "Invalid data URI.", "invalid_data_uri", value[:60])
        return None
    if not value.startswith("https://"):
        return _err(name, "Failed to download the file. Please check if the URL is accessible.", "file_download_error",
                    value, {"url": value})
    return None


def validate_input(schema: dict[str, F], body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(values with defaults, pydantic-style errors)."""
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, f in schema.items():
        if name not in body or body[name] is None:
            if f.required:
                errors.append(_err(name, "Field required", "missing", None))
            elif f.default is not None:
                values[name] = f.default
            continue
        v = body[name]
        if f.kind == "enum":
            if not isinstance(v, str) or v not in f.values:
                expected = " or ".join(f"'{x}'" for x in f.values)
                errors.append(_err(name, f"Input should be {expected}", "literal_error", v, {"expected": expected}))
                continue
        elif f.kind in ("str", "url"):
            if not isinstance(v, str):
                errors.append(_err(name, "Input should be a valid string", "string_type", v))
                continue
            if f.kind == "url" and (bad := _check_url(name, v)) is not None:
                errors.append(bad)
                continue
        elif f.kind == "size":  # an image model's image_size (fal_images.py)
            from .fal_images import size_error

            if (bad := size_error(v)) is not None:
                errors.append(bad)
                continue
        elif f.kind == "bool":
            if not isinstance(v, bool):
                errors.append(_err(name, "Input should be a valid boolean", "bool_type", v))
                continue
        elif f.kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                errors.append(_err(name, "Input should be a valid integer", "int_type", v))
                continue
        elif f.kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            errors.append(_err(name, "Input should be a valid number", "float_type", v))
            continue
        if f.minimum is not None and isinstance(v, (int, float)) and v < f.minimum:
            errors.append(_err(name, f"Input should be greater than or equal to {f.minimum:g}", "greater_than_equal",
                               v, {"ge": f.minimum}))
            continue
        if f.maximum is not None and isinstance(v, (int, float)) and v > f.maximum:
            errors.append(_err(name, f"Input should be less than or equal to {f.maximum:g}", "less_than_equal", v,
                               {"le": f.maximum}))
            continue
        values[name] = v
    if isinstance(values.get("prompt"), str) and not values["prompt"].strip() and "prompt" not in \
            {e["loc"][1] for e in errors}:
        errors.append(_err("prompt", "String should have at least 1 character", "string_too_short", "",
                           {"min_length": 1}))
    return values, errors


@dataclass
class QueuedRequest:
    id: str
    model_id: str
    app: str
    body: dict[str, Any]
    created_mono: float
    render_seconds: float
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "ok"  # ok | invalid | policy | failed | cancelled
    ends_at: float = 0.0  # monotonic time it completes
    starts_at: float = 0.0  # monotonic time it leaves the queue
    file: str = field(default_factory=lambda: f"{secrets.token_hex(4)}/{secrets.token_urlsafe(12)}")
    seed: int = field(default_factory=lambda: secrets.randbelow(2**31))


@dataclass
class FakeFalState(FakeState):
    api_key: str = "fal-key-id:fal-key-secret"
    queued_fraction: float = 0.2
    strict_models: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status, rate_limit_next/retry_after_seconds)
    exhausted_balance: bool = False
    content_policy_prompts: list[str] = field(default_factory=list)
    fail_jobs: bool = False
    fail_error_type: str = "runner_disconnected"
    expire_outputs: bool = False
    # recorded state (and FakeState.requests)
    queue: dict[str, QueuedRequest] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)  # request ids, in the order PUT …/cancel arrived

    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "queue", "cancels")

    @property
    def submits(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    @property
    def creates(self) -> list[RecordedRequest]:
        return self.submits

    def status(self, req: QueuedRequest) -> str:
        now = self.clock()
        if now >= req.ends_at:
            return "COMPLETED"
        return "IN_QUEUE" if now < req.starts_at else "IN_PROGRESS"


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


_STATUS_PATH = re.compile(r"^(?P<app>.+)/requests/(?P<rid>[^/]+)/status$")
_CANCEL_PATH = re.compile(r"^(?P<app>.+)/requests/(?P<rid>[^/]+)/cancel$")
_RESULT_PATH = re.compile(r"^(?P<app>.+)/requests/(?P<rid>[^/]+)$")


def app_of(model_id: str) -> str:
    return "/".join(model_id.split("/")[:2])


def create_app(api_key: str = "fal-key-id:fal-key-secret", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeFalState`` fields. State: ``app.state.fake``."""
    state = FakeFalState(api_key=api_key, clock=clock, render_seconds=render_seconds, **knobs)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def urls(request: Request, req: QueuedRequest) -> dict[str, str]:
        root = f"{base_url(request)}/{req.app}/requests/{req.id}"
        return {"request_id": req.id, "response_url": root, "status_url": f"{root}/status",
                "cancel_url": f"{root}/cancel"}

    def check_auth(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        if not auth:
            raise ApiError(401, {"detail": "Authentication is required to perform this action."})
        if not auth.startswith("Key "):
            raise ApiError(401, {"detail": "Invalid authorization header format. "
                                           "Expected 'Key <key_id>:<key_secret>'."})
        key = auth[4:].strip()
        if ":" not in key:
            raise ApiError(401, {"detail": "Invalid Key Authorization header format. "
                                           "Expected '<key_id>:<key_secret>'."})
        if key != state.api_key:
            raise ApiError(401, {"detail": "No user found for Key ID and Secret"})
        if state.exhausted_balance:
            raise ApiError(403, {"detail": "User is locked. Reason: Exhausted balance. Top up your balance at "
                                           "fal.ai/dashboard/billing."})
        if state.take_rate_limit():
            raise ApiError(429, {"detail": "Too many requests: you have reached your concurrent request limit."},
                           state.retry_after())

    def find(app: str, rid: str) -> QueuedRequest | None:
        req = state.queue.get(rid)
        return req if req is not None and req.app == app else None

    async def submit(request: Request, rec: RecordedRequest, model_id: str) -> Response:
        if (failure := state.take_create_failure()) is not None:
            raise ApiError(failure, {"detail": "Service temporarily unavailable", "error_type":
                                     "runner_scheduling_failure"} if failure >= 500 else
                           {"detail": f"Injected failure ({failure})"},
                           {"x-fal-error-type": "runner_scheduling_failure"} if failure >= 500 else None)
        schema = MODELS.get(model_id)
        if schema is None:
            if state.strict_models:
                raise ApiError(404, {"detail": f"Application '{model_id}' not found"})
            schema = GENERIC
        try:
            rec.body = await request.json()
        except ValueError:
            raise ApiError(422, {"detail": [{"loc": ["body"], "msg": "Invalid JSON",
                                             "type": "json_invalid"}]}) from None
        if not isinstance(rec.body, dict):
            raise ApiError(422, {"detail": [{"loc": ["body"], "msg": "Input should be a valid dictionary",
                                             "type": "dict_type"}]})
        now = state.clock()
        req = QueuedRequest(str(uuid.uuid4()), model_id, app_of(model_id), rec.body, now, state.render_seconds)
        req.values, req.errors = validate_input(schema, rec.body)
        req.starts_at = now + state.render_seconds * state.queued_fraction
        req.ends_at = now + state.render_seconds
        prompt = str(rec.body.get("prompt") or "")
        if req.errors:
            req.outcome, req.ends_at = "invalid", req.starts_at
        elif mentions(prompt, state.content_policy_prompts):
            req.outcome, req.ends_at = "policy", req.starts_at
        elif state.fail_jobs:
            req.outcome = "failed"
        state.queue[req.id] = req
        ahead = sum(1 for r in state.queue.values() if r is not req and state.status(r) == "IN_QUEUE")
        return JSONResponse({**urls(request, req), "queue_position": ahead})

    def status(request: Request, req: QueuedRequest) -> Response:
        st = state.status(req)
        body: dict[str, Any] = {"status": st, **urls(request, req)}
        if st == "IN_QUEUE":
            body["queue_position"] = sum(1 for r in state.queue.values() if state.status(r) == "IN_QUEUE"
                                         and r.created_mono < req.created_mono)
            return JSONResponse(body, status_code=202)
        logs = [{"message": "Generating video…", "level": "INFO", "source": "user",
                 "timestamp": "1970-01-01T00:00:00Z"}]
        body["logs"] = logs if request.query_params.get("logs") in ("1", "true") else None
        if st == "IN_PROGRESS":
            return JSONResponse(body, status_code=202)
        body["metrics"] = {"inference_time": round(req.ends_at - req.starts_at, 3)}
        return JSONResponse(body)

    def result(request: Request, req: QueuedRequest) -> Response:
        if state.status(req) != "COMPLETED":
            raise ApiError(400, {"detail": STILL_RUNNING})
        if req.outcome == "invalid":
            raise ApiError(422, {"detail": req.errors})
        if req.outcome == "policy":
            raise ApiError(422, {"detail": [{"loc": ["body", "prompt"], "msg": POLICY_MSG,
                                             "type": "content_policy_violation",
                                             "url": "https://docs.fal.ai/errors#content_policy_violation",
                                             "input": req.body.get("prompt")}]})
        if req.outcome == "failed":
            raise ApiError(503, {"detail": "The runner disconnected unexpectedly while processing the request.",
                                 "error_type": state.fail_error_type}, {"x-fal-error-type": state.fail_error_type})
        if req.outcome == "cancelled":
            raise ApiError(400, {"detail": "Request was cancelled by the user.", "error_type": "request_cancelled"},
                           {"x-fal-error-type": "request_cancelled"})
        if req.model_id in fal_images.IMAGE_MODELS:
            return JSONResponse(fal_images.result(base_url(request), req))
        return JSONResponse({"video": {"url": f"{base_url(request)}/files/{req.file}_output.mp4",
                                       "content_type": "video/mp4", "file_name": "output.mp4"},
                             "seed": req.values.get("seed", req.seed)})

    def cancel(request: Request, req: QueuedRequest | None, rid: str) -> Response:
        state.cancels.append(rid)
        if req is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        st = state.status(req)
        if st == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        if st == "IN_QUEUE":
            del state.queue[req.id]
        else:
            req.outcome, req.ends_at = "cancelled", state.clock()
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    def record(request: Request) -> RecordedRequest:
        rec = RecordedRequest.of(request)
        rec.path = "/" + request.path_params["path"].strip("/")
        return rec

    async def serve(request: Request, rec: RecordedRequest) -> Response:
        path = rec.path[1:]
        if request.method == "GET" and path.startswith("files/"):
            return await media(path[len("files/"):])
        check_auth(request)
        return await route(request, rec, path)

    dispatch = recorded(state, serve, errors=ApiError, answer=lambda exc, rec: exc.response(), record=record)

    async def route(request: Request, rec: RecordedRequest, path: str) -> Response:
        if request.method == "POST":
            return await submit(request, rec, path)
        if request.method == "PUT" and (m := _CANCEL_PATH.match(path)):
            return cancel(request, find(m["app"], m["rid"]), m["rid"])
        if request.method == "GET" and (m := _STATUS_PATH.match(path)):
            req = find(m["app"], m["rid"])
            if req is None:
                raise ApiError(404, {"detail": "Request not found"})
            return status(request, req)
        if request.method == "GET" and (m := _RESULT_PATH.match(path)):
            req = find(m["app"], m["rid"])
            if req is None:
                raise ApiError(404, {"detail": "Request not found"})
            return result(request, req)
        raise ApiError(405 if request.method not in ("GET", "POST", "PUT") else 404, {"detail": "Not Found"})

    async def media(name: str) -> Response:
        if "_image_" in name:  # an image model's output (fal_images.py)
            stem, _, rest = name.rpartition("_image_")
            img = next((r for r in state.queue.values() if r.file == stem), None)
            if img is None or img.outcome != "ok" or state.status(img) != "COMPLETED" or state.expire_outputs:
                return JSONResponse({"detail": "File not found"}, status_code=404)
            data, mime = await run_in_threadpool(fal_images.render, img, int(rest.split(".")[0]))
            return Response(data, media_type=mime)
        req = next((r for r in state.queue.values() if f"{r.file}_output.mp4" == name), None)
        if req is None or req.outcome != "ok" or state.status(req) != "COMPLETED" or state.expire_outputs:
            return JSONResponse({"detail": "File not found"}, status_code=404)
        w, h, seconds = output_size(req.model_id, req.values)
        data = await run_in_threadpool(render_media, "video", f"{w}x{h}", str(seconds))
        return Response(data, media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(getattr(exc, "detail", "Not Found"))},
                            status_code=getattr(exc, "status_code", 500))

    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=["GET", "POST", "PUT", "DELETE"])],
                    exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app


from . import fal_images  # noqa: E402  (the image models; it imports F from here)

MODELS.update(fal_images.IMAGE_MODELS)

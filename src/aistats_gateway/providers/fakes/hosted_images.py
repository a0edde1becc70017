"""Fake image APIs of hosted providers, attached to their fakes (``attach``; Together's compat fake through
``mount``) with state at ``app.state.images``:

* Together ``POST /v1/images/generations`` (docs.together.ai images): ``model``, ``prompt`` (required),
  ``n`` 1-4, ``width``/``height`` (multiples of 8, 256-1792; default 1024), ``steps`` 1-12 (FLUX.1
  schnell), ``seed``, ``negative_prompt``, ``output_format`` ``jpeg`` (default) | ``png``,
  ``response_format`` ``url`` (default) | ``base64`` → ``{id, model, object: "list", data: [{index,
  b64_json | url}]}``; errors ``{"error": {message, type, param, code}}``.
* BytePlus ModelArk ``POST /api/v3/images/generations`` (Seedream 4.0, synchronous): ``model``,
  ``prompt``, ``size`` ``1K``/``2K``/``4K`` or ``WxH`` (921 600 … 16 777 216 pixels; default 2K),
  ``seed`` -1…2147483647, ``response_format`` ``url`` (default) | ``b64_json``, ``watermark``,
  ``sequential_image_generation``, ``image`` (one or a list of up to 10 data URLs / https URLs) →
  ``{model, created, data: [{b64_json | url, size}], usage: {generated_images, output_tokens,
  total_tokens}}``; errors ``{"error": {code, message, param, type}}``.
* Runway ``POST /v1/text_to_image`` (``X-Runway-Version: 2024-11-06``): ``model`` ``gen4_image`` |
  ``gen4_image_turbo``, ``promptText`` 1-1000, ``ratio`` (Runway's pixel ratios), ``seed``,
  ``referenceImages`` ≤ 3 ``{uri, tag}`` → ``{id}``; ``GET /v1/tasks/{id}`` → ``{id, status,
  createdAt, output: [url]}`` (``SUCCEEDED`` after ``render_seconds``).
* Alibaba DashScope ``POST /api/v1/services/aigc/text2image/image-synthesis`` (needs
  ``X-DashScope-Async: enable``): ``model`` ``qwen-image``, ``input.prompt``, ``parameters.size`` one of
  Qwen-Image's five, ``n`` 1, ``seed`` → ``{output: {task_id, task_status: PENDING}, request_id}``;
  ``GET /api/v1/tasks/{id}`` → ``output.results[{url}]``, ``usage.image_count``.
* Luma ``POST /dream-machine/v1/generations/image``: ``prompt`` 3-5000, ``model`` ``photon-1`` |
  ``photon-flash-1``, ``aspect_ratio`` → a generation ``{id, state: queued}``;
  ``GET /dream-machine/v1/generations/{id}`` → ``state: completed``, ``assets.image``.

Task reads for ids these fakes did not make fall through to the video fake's own route. Images are real
(``media.procedural``) at the size the API reports; URLs are served here (``/_images/{id}``, no auth).
Faults: ``fail_next`` requests answer ``fail_status``; ``requests`` records each create body.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aistats_gateway.media import procedural

Handler = Callable[[Request], Awaitable[Response]]
RUNWAY_RATIOS = ("1920:1080", "1080:1920", "1024:1024", "1360:768", "1080:1080", "1168:880", "1440:1080",
                 "1080:1440", "1808:768", "2112:912", "1280:720", "720:1280", "720:720", "960:720", "720:960",
                 "1680:720")
QWEN_SIZES = ("1664*928", "1472*1140", "1328*1328", "1140*1472", "928*1664")
LUMA_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
LUMA_DIMS = {"1:1": (1024, 1024), "16:9": (1344, 756), "9:16": (756, 1344), "4:3": (1184, 888),
             "3:4": (888, 1184), "21:9": (1568, 672), "9:21": (672, 1568)}
SEEDREAM_NAMED = {"1k": (1024, 1024), "2k": (2048, 2048), "4k": (4096, 4096)}


@dataclass
class HostedImagesState:
    api_key: str
    fail_next: int = 0
    fail_status: int = 503
    render_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → {created, url, ...}
    clock: Callable[[], float] = time.monotonic


class Refused(Exception):
    def __init__(self, status: int, message: str, code: str = "InvalidParameter", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


async def _image(state: HostedImagesState, prompt: str, w: int, h: int, fmt: str, seed: int) -> bytes:
    spec = procedural.ImageSpec(prompt, w, h, seed % 2**32, fmt)
    data: bytes = await run_in_threadpool(procedural.generate, spec)
    return data


def _seed(prompt: str, seed: Any, i: int = 0) -> int:
    return int(seed) + i if isinstance(seed, int) and seed >= 0 else int(hashlib.sha256(
        f"{prompt}{i}".encode()).hexdigest()[:8], 16)


def _store(state: HostedImagesState, request: Request, data: bytes, mime: str) -> str:
    fid = secrets.token_hex(8)
    state.files[fid] = (data, mime)
    return f"{str(request.base_url).rstrip('/')}/_images/{fid}"


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else ""


async def _body(request: Request) -> dict[str, Any]:
    try:
        got = await request.json()
    except ValueError:
        raise Refused(400, "The request body is not valid JSON.", "InvalidRequest") from None
    if not isinstance(got, dict):
        raise Refused(400, "The request body must be a JSON object.", "InvalidRequest")
    return got


def _gate(state: HostedImagesState, request: Request) -> None:
    if _bearer(request) != state.api_key:
        raise Refused(401, "Invalid API key.", "AuthenticationError")
    if state.fail_next > 0:
        state.fail_next -= 1
        raise Refused(state.fail_status, "The service is temporarily unavailable.", "ServiceUnavailable")


# ---- Together -------------------------------------------------------------------------------


def _together_error(e: Refused) -> JSONResponse:
    kind = "invalid_request_error" if e.status < 500 else "server_error"
    return JSONResponse({"error": {"message": e.message, "type": kind, "param": e.param, "code": None}},
                        status_code=e.status)


def together_routes(state: HostedImagesState) -> list[Route]:
    models = ("black-forest-labs/FLUX.1-schnell", "black-forest-labs/FLUX.1-schnell-Free",
              "black-forest-labs/FLUX.1.1-pro", "black-forest-labs/FLUX.1-dev")

    async def generate(request: Request) -> Response:
        try:
            _gate(state, request)
            body = await _body(request)
            state.requests.append(body)
            if body.get("model") not in models:
                raise Refused(404, f"Unable to access model {body.get('model')}.", param="model")
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise Refused(400, "prompt is required", param="prompt")
            n, w, h = body.get("n", 1), body.get("width", 1024), body.get("height", 1024)
            if not isinstance(n, int) or not 1 <= n <= 4:
                raise Refused(400, "n must be between 1 and 4", param="n")
            for name, v in (("width", w), ("height", h)):
                if not isinstance(v, int) or not 256 <= v <= 1792 or v % 8:
                    raise Refused(400, f"{name} must be a multiple of 8 between 256 and 1792", param=name)
            steps = body.get("steps", 4)
            if not isinstance(steps, int) or not 1 <= steps <= 12:
                raise Refused(400, "steps must be between 1 and 12", param="steps")
            fmt, rf = body.get("output_format", "jpeg"), body.get("response_format", "url")
            if fmt not in ("jpeg", "png"):
                raise Refused(400, "output_format must be jpeg or png", param="output_format")
            if rf not in ("url", "base64"):
                raise Refused(400, "response_format must be url or base64", param="response_format")
        except Refused as e:
            return _together_error(e)
        data = []
        for i in range(n):
            img = await _image(state, prompt, w, h, fmt, _seed(prompt, body.get("seed"), i))
            item: dict[str, Any] = {"index": i}
            if rf == "base64":
                item["b64_json"] = base64.b64encode(img).decode()
            else:
                item["url"] = _store(state, request, img, procedural.FORMATS[fmt])
            data.append(item)
        return JSONResponse({"id": secrets.token_hex(12), "model": body["model"], "object": "list", "data": data})

    return [Route("/v1/images/generations", generate, methods=["POST"])]


# ---- BytePlus Seedream -------------------------------------------------------------------------


def _ark_error(e: Refused) -> JSONResponse:
    return JSONResponse({"error": {"code": e.code, "message": e.message, "param": e.param or "",
                                   "type": "BadRequest" if e.status < 500 else "ServerError"}}, status_code=e.status)


def _seedream_size(value: Any) -> tuple[int, int]:
    if value is None:
        return SEEDREAM_NAMED["2k"]
    if isinstance(value, str) and value.lower() in SEEDREAM_NAMED:
        return SEEDREAM_NAMED[value.lower()]
    try:
        w, h = (int(v) for v in str(value).lower().split("x"))
    except ValueError:
        raise Refused(400, f"The parameter `size` specified in the request is not valid: {value}",
                      param="size") from None
    if not 921_600 <= w * h <= 16_777_216:
        raise Refused(400, "The parameter `size` must be between 921600 and 16777216 pixels.", param="size")
    return w, h


def byteplus_routes(state: HostedImagesState) -> list[Route]:
    models = ("seedream-4-0-250828", "seedream-3-0-t2i-250415")

    async def generate(request: Request) -> Response:
        try:
            if _bearer(request) != state.api_key:
                raise Refused(401, "The API key in the request is missing or invalid.", "AuthenticationError")
            _gate(state, request)
            body = await _body(request)
            state.requests.append(body)
            if body.get("model") not in models:
                raise Refused(404, f"The model or endpoint {body.get('model')} does not exist.",
                              "InvalidEndpointOrModel.NotFound", "model")
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise Refused(400, "The parameter `prompt` is required.", "MissingParameter", "prompt")
            w, h = _seedream_size(body.get("size"))
            seed = body.get("seed", -1)
            if not isinstance(seed, int) or not -1 <= seed <= 2147483647:
                raise Refused(400, "The parameter `seed` is out of range.", param="seed")
            rf = body.get("response_format", "url")
            if rf not in ("url", "b64_json"):
                raise Refused(400, "The parameter `response_format` must be url or b64_json.", param="response_format")
            images = body.get("image")
            refs = images if isinstance(images, list) else [images] if images is not None else []
            if len(refs) > 10 or not all(isinstance(r, str) and r.startswith(("data:image/", "https://"))
                                         for r in refs):
                raise Refused(400, "The parameter `image` must be up to 10 image URLs or data URLs.", param="image")
        except Refused as e:
            return _ark_error(e)
        img = await _image(state, prompt, w, h, "jpeg", _seed(prompt, seed))
        item: dict[str, Any] = {"size": f"{w}x{h}"}
        if rf == "b64_json":
            item["b64_json"] = base64.b64encode(img).decode()
        else:
            item["url"] = _store(state, request, img, "image/jpeg")
        tokens = w * h // 256
        return JSONResponse({"model": body["model"], "created": int(time.time()), "data": [item],
                             "usage": {"generated_images": 1, "output_tokens": tokens, "total_tokens": tokens}})

    return [Route("/api/v3/images/generations", generate, methods=["POST"])]


# ---- Runway -----------------------------------------------------------------------------------


def _runway_error(e: Refused) -> JSONResponse:
    return JSONResponse({"error": e.message, **({"issues": [{"path": [e.param], "message": e.message}]}
                                                if e.param else {})}, status_code=e.status)


def runway_routes(state: HostedImagesState, fallback: Handler | None) -> list[Route]:
    async def create(request: Request) -> Response:
        try:
            if request.headers.get("x-runway-version") != "2024-11-06":
                raise Refused(400, "The X-Runway-Version header is missing or invalid.")
            _gate(state, request)
            body = await _body(request)
            state.requests.append(body)
            if body.get("model") not in ("gen4_image", "gen4_image_turbo"):
                raise Refused(400, "Invalid model.", param="model")
            prompt = body.get("promptText")
            if not isinstance(prompt, str) or not 1 <= len(prompt) <= 1000:
                raise Refused(400, "promptText must be 1 to 1000 characters.", param="promptText")
            if body.get("ratio") not in RUNWAY_RATIOS:
                raise Refused(400, f"Invalid ratio: {body.get('ratio')}.", param="ratio")
            refs = body.get("referenceImages") or []
            if not isinstance(refs, list) or len(refs) > 3 or not all(isinstance(r, dict) and r.get("uri")
                                                                      for r in refs):
                raise Refused(400, "referenceImages must be at most 3 {uri, tag}.", param="referenceImages")
        except Refused as e:
            return _runway_error(e)
        w, h = (int(v) for v in body["ratio"].split(":"))
        task_id = str(uuid.uuid4())
        img = await _image(state, prompt, w, h, "png", _seed(prompt, body.get("seed")))
        state.tasks[task_id] = {"created": state.clock(), "url": _store(state, request, img, "image/png")}
        return JSONResponse({"id": task_id})

    async def task(request: Request) -> Response:
        t = state.tasks.get(request.path_params["task_id"])
        if t is None:
            return await fallback(request) if fallback else JSONResponse({"error": "Task not found."}, 404)
        if _bearer(request) != state.api_key:
            return _runway_error(Refused(401, "The API key you provided is invalid."))
        done = state.clock() - t["created"] >= state.render_seconds
        out: dict[str, Any] = {"id": request.path_params["task_id"], "status": "SUCCEEDED" if done else "RUNNING",
                               "createdAt": "2026-01-01T00:00:00.000Z"}
        if done:
            out["output"] = [t["url"]]
        return JSONResponse(out)

    return [Route("/v1/text_to_image", create, methods=["POST"]), Route("/v1/tasks/{task_id}", task, methods=["GET"])]


# ---- Alibaba DashScope ------------------------------------------------------------------------


def _ds_error(e: Refused, request_id: str) -> JSONResponse:
    return JSONResponse({"request_id": request_id, "code": e.code, "message": e.message}, status_code=e.status)


def alibaba_routes(state: HostedImagesState, fallback: Handler | None) -> list[Route]:
    async def create(request: Request) -> Response:
        rid = str(uuid.uuid4())
        try:
            if _bearer(request) != state.api_key:
                raise Refused(401, "Invalid API-key provided.", "InvalidApiKey")
            if request.headers.get("x-dashscope-async") != "enable":
                raise Refused(403, "current user api does not support synchronous calls", "AccessDenied")
            _gate(state, request)
            body = await _body(request)
            state.requests.append(body)
            if body.get("model") not in ("qwen-image", "qwen-image-plus"):
                raise Refused(400, "Model not exist.", "InvalidParameter")
            prompt = (body.get("input") or {}).get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise Refused(400, "input.prompt is required", "InvalidParameter")
            params = body.get("parameters") or {}
            size = params.get("size", "1328*1328")
            if size not in QWEN_SIZES:
                raise Refused(400, f"The size is not match the allowed size {list(QWEN_SIZES)}", "InvalidParameter")
            if params.get("n", 1) != 1:
                raise Refused(400, "n must be 1 for qwen-image", "InvalidParameter")
        except Refused as e:
            return _ds_error(e, rid)
        w, h = (int(v) for v in size.split("*"))
        task_id = str(uuid.uuid4())
        img = await _image(state, prompt, w, h, "png", _seed(prompt, params.get("seed")))
        state.tasks[task_id] = {"created": state.clock(), "url": _store(state, request, img, "image/png"),
                                "prompt": prompt}
        return JSONResponse({"output": {"task_status": "PENDING", "task_id": task_id}, "request_id": rid})

    async def task(request: Request) -> Response:
        t = state.tasks.get(request.path_params["task_id"])
        if t is None:
            if fallback is not None:
                return await fallback(request)
            return _ds_error(Refused(404, "task not found", "NotFound"), str(uuid.uuid4()))
        if _bearer(request) != state.api_key:
            return _ds_error(Refused(401, "Invalid API-key provided.", "InvalidApiKey"), str(uuid.uuid4()))
        done = state.clock() - t["created"] >= state.render_seconds
        out: dict[str, Any] = {"task_id": request.path_params["task_id"],
                               "task_status": "SUCCEEDED" if done else "RUNNING"}
        body: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": out}
        if done:
            out["results"] = [{"url": t["url"], "orig_prompt": t["prompt"], "actual_prompt": t["prompt"]}]
            body["usage"] = {"image_count": 1}
        return JSONResponse(body)

    return [Route("/api/v1/services/aigc/text2image/image-synthesis", create, methods=["POST"]),
            Route("/api/v1/tasks/{task_id}", task, methods=["GET"])]


# ---- Luma -------------------------------------------------------------------------------------


def luma_routes(state: HostedImagesState, fallback: Handler | None) -> list[Route]:
    prefix = "/dream-machine/v1"

    def view(gen_id: str, t: dict[str, Any]) -> dict[str, Any]:
        done = state.clock() - t["created"] >= state.render_seconds
        return {"id": gen_id, "generation_type": "image", "state": "completed" if done else "queued",
                "failure_reason": None, "created_at": "2026-01-01T00:00:00.000Z",
                "assets": {"image": t["url"]} if done else None, "model": t["model"],
                "request": t["request"]}

    async def create(request: Request) -> Response:
        try:
            _gate(state, request)
            body = await _body(request)
            state.requests.append(body)
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not 3 <= len(prompt) <= 5000:
                raise Refused(400, "prompt: must be 3 to 5000 characters")
            model = body.get("model", "photon-1")
            if model not in ("photon-1", "photon-flash-1"):
                raise Refused(400, f"model: unknown model {model}")
            ratio = body.get("aspect_ratio", "16:9")
            if ratio not in LUMA_RATIOS:
                raise Refused(400, f"aspect_ratio: unknown value {ratio}")
        except Refused as e:
            return JSONResponse({"detail": e.message}, status_code=e.status)
        w, h = LUMA_DIMS[ratio]
        gen_id = str(uuid.uuid4())
        img = await _image(state, prompt, w, h, "jpeg", _seed(prompt, None))
        state.tasks[gen_id] = {"created": state.clock(), "url": _store(state, request, img, "image/jpeg"),
                               "model": model, "request": body}
        return JSONResponse(view(gen_id, state.tasks[gen_id]), status_code=201)

    async def retrieve(request: Request) -> Response:
        gen_id = request.path_params["gen_id"]
        t = state.tasks.get(gen_id)
        if t is None:
            return await fallback(request) if fallback else JSONResponse({"detail": "Generation not found"}, 404)
        if _bearer(request) != state.api_key:
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        return JSONResponse(view(gen_id, t))

    return [Route(prefix + "/generations/image", create, methods=["POST"]),
            Route(prefix + "/generations/{gen_id}", retrieve, methods=["GET"])]


# ---- mounting ---------------------------------------------------------------------------------


def _files_route(state: HostedImagesState) -> Route:
    async def file(request: Request) -> Response:
        got = state.files.get(request.path_params["fid"])
        if got is None:
            return Response(b"Not Found", 404)
        return Response(got[0], media_type=got[1])
    return Route("/_images/{fid}", file, methods=["GET"])


def _existing(app: Starlette, path: str) -> Handler | None:
    for r in app.router.routes:
        if isinstance(r, Route) and r.path == path and r.methods and "GET" in r.methods:
            endpoint: Handler = r.endpoint
            return endpoint
    return None


ROUTES: dict[str, tuple[Callable[..., list[Route]], str | None]] = {
    "together": (together_routes, None), "byteplus": (byteplus_routes, None),
    "runway": (runway_routes, "/v1/tasks/{task_id}"), "alibaba": (alibaba_routes, "/api/v1/tasks/{task_id}"),
    "luma": (luma_routes, "/dream-machine/v1/generations/{gen_id}"),
}


def attach(app: Starlette, provider: str, api_key: str) -> Starlette:
    """``provider``'s image routes put in front of ``app``'s (state at ``app.state.images``); the fakes'
    ``create_app`` call it last."""
    state = HostedImagesState(api_key=api_key)
    routes, task_path = ROUTES[provider]
    fallback = _existing(app, task_path) if task_path else None
    made = routes(state, fallback) if task_path else routes(state)
    app.router.routes[:0] = [*made, _files_route(state)]
    app.state.images = state
    return app


def mount(provider: str, factory: Callable[..., Starlette], api_key: str) -> Callable[..., Starlette]:
    """``factory``'s app with ``provider``'s image routes attached (for factories built elsewhere: Together's)."""
    def build(**kwargs: Any) -> Starlette:
        return attach(factory(**kwargs), provider, kwargs.get("api_key", api_key))
    return build

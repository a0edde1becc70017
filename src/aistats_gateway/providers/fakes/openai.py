"""Fake OpenAI Videos (Sora 2) API for tests (shared/reference/provider-apis.md §1, §5).

Fakes POST /v1/videos (multipart, urlencoded or JSON; ``input_reference`` as a file part, an
``{image_url}``/``{file_id}`` object or bracket keys ``input_reference[image_url]``), GET/DELETE
/v1/videos/{id} (DELETE takes an empty JSON body), GET /v1/videos (after/limit/order paging),
and GET /v1/videos/{id}/content?variant=video|thumbnail|spritesheet.
Bearer auth everywhere; errors always use the ``{"error": {message, type, param, code}}``
envelope (unknown routes too); ``Idempotency-Key`` on creates; ``x-request-id`` on responses.

Jobs go queued (first ``queued_fraction`` of ``render_seconds``) → in_progress (int progress in
``steps`` increments, < 100) → completed, on an injectable monotonic clock. Content is a real
H.264/yuv420p MP4, 8 fps, one solid colour per second, of the requested size and duration;
thumbnail = WebP of the first frame, spritesheet = JPEG grid (one tile per second). Cached.

Choices the spec leaves open:
* completed_at is set for completed and failed jobs; expires_at = completed_at + 3600 for
  completed jobs (else null), after which content answers 404. Unix times follow the clock.
* Failed jobs have progress 0. Moderation failures happen when the job leaves the queue,
  ``fail_jobs`` failures at the end; both are decided at create time.
* As upstream, a reference image must decode and match ``size`` (``check_input_reference``);
  URLs are not fetched, file ids not resolved. Unknown body params → 400 unknown_parameter
  (``reject_unknown_params``). seconds 4/8/12/16/20 (strings; a JSON int → 400 invalid_type);
  1920x1080/1080x1920 only for sora-2-pro models.
* Content of a queued/in-progress job → 404, of a failed one → 400.
* Idempotency-Key returns the current state of the original job (a new job if it was deleted).
  The job exists before ``create_delay_seconds`` is slept, so a client that times out and
  retries with the same key gets the same video.
* ``rate_limit_next`` applies to the next N authenticated requests on any route;
  ``fail_next_downloads`` to the next N content requests of completed jobs (with ``fail_status``).
Not faked: remix, edits, extensions, characters, Batch, webhooks, rate-limit headers, audio.
"""
from __future__ import annotations

import base64
import binascii
import colorsys
import io
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._common import FakeState, RecordedRequest, bearer, mentions, recorded, remember, replay, stepped_progress

MODELS = ("sora-2", "sora-2-pro", "sora-2-2025-10-06", "sora-2-pro-2025-10-06", "sora-2-2025-12-08")
PRO_MODELS = frozenset({"sora-2-pro", "sora-2-pro-2025-10-06"})
SECONDS = ("4", "8", "12", "16", "20")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
PRO_SIZES = ("1920x1080", "1080x1920")
CREATE_PARAMS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
CONTENT_TTL_SECONDS = 3600
FPS = 8
MAX_PROMPT = 32_000
VARIANT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}


@dataclass
class FilePart:
    """A file part of a multipart body, as received."""
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Job:
    id: str
    model: str
    prompt: str
    size: str
    seconds: str
    created_mono: float
    render_seconds: float
    fail: tuple[str, str, float] | None = None  # (code, message, at fraction of render time)
    input_reference: Any = None
    idempotency_key: str | None = None


@dataclass
class FakeOpenAIState(FakeState):
    api_key: str = "sk-test"
    queued_fraction: float = 0.2
    steps: int = 10
    poll_after_ms: int | None = None
    check_input_reference: bool = True
    reject_unknown_params: bool = True
    # fault injection (also FakeState's: fail_next_creates/fail_status, rate_limit_next, create_delay_seconds)
    fail_next_downloads: int = 0  # content requests of completed jobs that fail first (with fail_status)
    moderation_block_prompts: list[str] = field(default_factory=list)
    retry_after_seconds: float = 1.0
    expire_content: bool = False
    fail_jobs: bool = False
    # recorded state (and FakeState.requests)
    videos: dict[str, Job] = field(default_factory=dict)  # in creation order
    idempotency: dict[str, str] = field(default_factory=dict)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", "/v1/videos")
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "videos", "idempotency")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _rate_limited(state: FakeOpenAIState) -> ApiError:
    ra = state.retry_after_seconds
    return ApiError(429, "Rate limit reached for requests (fake). Please try again later.", "requests",
                    code="rate_limit_exceeded",
                    headers={"retry-after": f"{ra:g}", "retry-after-ms": str(int(ra * 1000))})


def _injected_failure(status: int, state: FakeOpenAIState) -> ApiError:
    if status == 429:
        return _rate_limited(state)
    if status >= 500:
        msg = ("The server had an error while processing your request. Sorry about that!"
               if status == 500 else "The server is overloaded or not ready yet.")
        return ApiError(status, msg, "server_error")
    return ApiError(status, f"Injected failure ({status}).")


# ---------------------------------------------------------------- media
_MEDIA_CACHE: dict[tuple[str, str, str], bytes] = {}
_MEDIA_LOCK = threading.Lock()


def _colour(second: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((second * 0.07) % 1.0, 0.6, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def _render(variant: str, width: int, height: int, seconds: int) -> bytes:
    import av
    from PIL import Image

    buf = io.BytesIO()
    if variant == "thumbnail":
        Image.new("RGB", (width, height), _colour(0)).save(buf, format="WEBP")
    elif variant == "spritesheet":  # one tile per second, 5 per row
        tw, th = 160, max(2, round(160 * height / width))
        sheet = Image.new("RGB", (tw * min(seconds, 5), th * -(-seconds // 5)))
        for s in range(seconds):
            sheet.paste(Image.new("RGB", (tw, th), _colour(s)), ((s % 5) * tw, (s // 5) * th))
        sheet.save(buf, format="JPEG", quality=80)
    else:
        with av.open(buf, mode="w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "35"}
            for s in range(seconds):
                img = Image.new("RGB", (width, height), _colour(s))
                frame = av.VideoFrame.from_image(img).reformat(format="yuv420p")
                for i in range(s * FPS, (s + 1) * FPS):
                    frame.pts, frame.time_base = i, Fraction(1, FPS)
                    for packet in stream.encode(frame):
                        out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    return buf.getvalue()


def render_media(variant: str, size: str, seconds: str) -> bytes:
    """Bytes of a content variant (``video``/``thumbnail``/``spritesheet``); cached, thread-safe."""
    key = (variant, size, seconds)
    if (cached := _MEDIA_CACHE.get(key)) is not None:  # a hit never waits for another variant's encode
        return cached
    with _MEDIA_LOCK:
        if key not in _MEDIA_CACHE:
            width, height = (int(v) for v in size.split("x"))
            _MEDIA_CACHE[key] = _render(variant, width, height, int(seconds))
        return _MEDIA_CACHE[key]


# ---------------------------------------------------------------- jobs
def _status(job: Job, state: FakeOpenAIState) -> tuple[str, int, float | None]:
    """(status, progress, monotonic time of the terminal transition or None)."""
    now, total = state.clock(), job.render_seconds
    if job.fail is not None and now >= job.created_mono + total * job.fail[2]:
        return "failed", 0, job.created_mono + total * job.fail[2]
    elapsed, queued_for = now - job.created_mono, total * state.queued_fraction
    if elapsed >= total:
        return "completed", 100, job.created_mono + total
    if elapsed < queued_for:
        return "queued", 0, None
    frac = (elapsed - queued_for) / max(total - queued_for, 1e-9)
    return "in_progress", stepped_progress(frac, state.steps), None


def _video_object(job: Job, state: FakeOpenAIState) -> dict[str, Any]:
    status, progress, done = _status(job, state)
    completed_at = state.unix(done) if done is not None else None
    return {
        "id": job.id, "object": "video", "model": job.model, "status": status, "progress": progress,
        "created_at": state.unix(job.created_mono), "completed_at": completed_at,
        "expires_at": completed_at + CONTENT_TTL_SECONDS if status == "completed" and completed_at is not None
        else None,
        "prompt": job.prompt, "size": job.size, "seconds": job.seconds,
        "remixed_from_video_id": None,
        "error": {"code": job.fail[0], "message": job.fail[1]} if status == "failed" and job.fail else None,
    }


def _new_job(state: FakeOpenAIState, params: dict[str, Any]) -> Job:
    fail = None
    if mentions(params["prompt"], state.moderation_block_prompts):
        fail = ("moderation_blocked", "Your request was blocked by our moderation system.",
                state.queued_fraction)
    elif state.fail_jobs:
        fail = ("internal_error", "Video generation failed due to an internal error.", 1.0)
    job = Job(f"video_{secrets.token_hex(24)}", params["model"], params["prompt"], params["size"],
              params["seconds"], state.clock(), state.render_seconds, fail,
              input_reference=params.get("input_reference"))
    state.videos[job.id] = job
    return job


# ---------------------------------------------------------------- request parsing
_BRACKET = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")


async def _parse_body(request: Request) -> dict[str, Any]:
    """JSON object or form fields; multipart bracket keys ``a[b]`` become ``{"a": {"b": ...}}``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid body: expected a JSON object.")
        return body
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(400, f"Unsupported content type '{ctype}'; use multipart/form-data or JSON.")
    form = await request.form(max_part_size=32 * 1024 * 1024)
    fields: dict[str, Any] = {}
    for key, item in form.multi_items():
        value: Any = item
        if isinstance(item, UploadFile):
            value = FilePart(item.filename, item.content_type, await item.read())
        m = _BRACKET.match(key)
        if m:
            target = fields.setdefault(m[1], {})
            if not isinstance(target, dict):
                raise _invalid(m[1], f"Invalid '{m[1]}': mixed plain and bracket keys.")
            target[m[2]] = value
        else:
            fields[key] = value
    return fields


def _check_image(data: bytes, size: str, param: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Exception:
        raise _invalid(param, "Invalid input_reference: the image could not be decoded.",
                       "invalid_image") from None
    if f"{w}x{h}" != size:
        raise _invalid(param, f"Inpaint image must match the requested width and height ({size}); "
                              f"got {w}x{h}.", "invalid_image_size")


def _validate_reference(ref: Any, size: str, check: bool) -> Any:
    p = "input_reference"
    if isinstance(ref, FilePart):
        if check:
            _check_image(ref.data, size, p)
        return ref
    if not isinstance(ref, dict):
        raise _invalid(p, "Invalid type for 'input_reference'.", "invalid_type")
    for key in ref:
        if key not in ("image_url", "file_id"):
            raise _invalid(f"{p}.{key}", f"Unknown parameter: '{p}.{key}'.", "unknown_parameter")
    if len(ref) != 1 or not all(isinstance(v, str) and v for v in ref.values()):
        raise _invalid(p, "input_reference must have exactly one of 'image_url' or 'file_id'.")
    url = ref.get("image_url")
    if url is not None and url.startswith("data:"):
        head, _, payload = url.partition(",")
        try:
            if not (head.startswith("data:image/") and head.endswith(";base64")):
                raise ValueError
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"{p}.image_url", "image_url must be a base64 image data URL.") from None
        if len(data) > 20 * 1024 * 1024:
            raise _invalid(f"{p}.image_url", "image_url exceeds 20 MiB.")
        if check:
            _check_image(data, size, f"{p}.image_url")
    elif url is not None and not url.startswith(("http://", "https://")):
        raise _invalid(f"{p}.image_url", "image_url must be an http(s) URL or a data URL.")
    return ref


def _validate_create(fields: dict[str, Any], state: FakeOpenAIState) -> dict[str, Any]:
    if state.reject_unknown_params:
        for key in fields:
            if key not in CREATE_PARAMS:
                raise _invalid(key, f"Unknown parameter: '{key}'.", "unknown_parameter")
    values: dict[str, Any] = {}
    for name, default in (("prompt", None), ("model", "sora-2"), ("seconds", "4"), ("size", "720x1280")):
        value = fields.get(name, default)
        if value is not None and not isinstance(value, str):
            kind = "file" if isinstance(value, FilePart) else type(value).__name__
            raise _invalid(name, f"Invalid type for '{name}': expected a string, but got {kind} instead.",
                           "invalid_type")
        values[name] = value
    prompt, model, seconds, size = values["prompt"], values["model"], values["seconds"], values["size"]
    if prompt is None:
        raise _invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
    if not 1 <= len(prompt) <= MAX_PROMPT:
        raise _invalid("prompt", f"Invalid 'prompt': length {len(prompt)}, expected 1 to {MAX_PROMPT}.",
                       "string_below_min_length" if not prompt else "string_above_max_length")
    allowed_sizes = SIZES + PRO_SIZES if model in PRO_MODELS else SIZES
    for name, value, allowed in (("model", model, MODELS), ("seconds", seconds, SECONDS),
                                 ("size", size, allowed_sizes)):
        if value not in allowed:
            raise _invalid(name, f"Invalid value: '{value}'. Supported values are: "
                                 f"{', '.join(repr(a) for a in allowed)}.")
    if fields.get("input_reference") is not None:
        values["input_reference"] = _validate_reference(fields["input_reference"], size,
                                                        state.check_input_reference)
    return values


# ---------------------------------------------------------------- app
def create_app(api_key: str = "sk-test", *, clock: Callable[[], float] = time.monotonic,
               render_seconds: float = 2.0, steps: int = 10, **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other ``FakeOpenAIState`` fields (e.g. ``fail_jobs=True``).

    ``steps`` is the number of progress increments while in_progress. The state is
    ``app.state.fake``; tests may change any of its fields while the app runs.
    """
    state = FakeOpenAIState(api_key=api_key, clock=clock, render_seconds=render_seconds, steps=steps,
                            **knobs)

    def gate(request: Request, rec: RecordedRequest) -> None:
        key = bearer(request)
        if key != state.api_key:
            raise ApiError(401, "Incorrect API key provided." if key else "You didn't provide an "
                           "API key (Authorization: Bearer YOUR_KEY).", code="invalid_api_key")
        if state.take_rate_limit():
            raise _rate_limited(state)

    def answer(exc: ApiError | HTTPException, rec: RecordedRequest) -> Response:
        if isinstance(exc, HTTPException):  # e.g. malformed multipart from request.form()
            return ApiError(exc.status_code, str(exc.detail)).response()
        return exc.response()

    def stamp(response: Response, rec: RecordedRequest) -> None:
        response.headers["x-request-id"] = f"req_{secrets.token_hex(16)}"

    def endpoint(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        return recorded(state, handler, errors=(ApiError, HTTPException), answer=answer, gate=gate, finish=stamp)

    def get_job(request: Request) -> Job:
        video_id = request.path_params["video_id"]
        if video_id not in state.videos:
            raise ApiError(404, f"Video with id '{video_id}' not found.", param="video_id")
        return state.videos[video_id]

    @endpoint
    async def create_video(request: Request, rec: RecordedRequest) -> Response:
        if (failure := state.take_create_failure()) is not None:
            raise _injected_failure(failure, state)
        rec.body = await _parse_body(request)
        params = _validate_create(rec.body, state)
        key = request.headers.get("idempotency-key")
        if (earlier := replay(state.idempotency, state.videos, key)) is not None:
            return JSONResponse(_video_object(earlier, state))
        job = _new_job(state, params)
        remember(state.idempotency, key, job.id)
        job.idempotency_key = key or None
        await state.create_delay()
        return JSONResponse(_video_object(job, state))

    @endpoint
    async def retrieve_video(request: Request, rec: RecordedRequest) -> Response:
        response = JSONResponse(_video_object(get_job(request), state))
        if state.poll_after_ms is not None:
            response.headers["openai-poll-after-ms"] = str(state.poll_after_ms)
        return response

    @endpoint
    async def list_videos(request: Request, rec: RecordedRequest) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            raise _invalid("limit", f"Invalid 'limit': expected an integer, got '{q['limit']}'.",
                           "invalid_type") from None
        if not 0 <= limit <= 100:
            raise _invalid("limit", f"Invalid 'limit': {limit}. Expected a value between 0 and 100.")
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _invalid("order", f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.")
        jobs = list(state.videos.values())[:: 1 if order == "asc" else -1]
        if after := q.get("after"):
            ids = [j.id for j in jobs]
            if after not in ids:
                raise _invalid("after", f"Invalid 'after': no video with id '{after}'.")
            jobs = jobs[ids.index(after) + 1:]
        page = [_video_object(j, state) for j in jobs[:limit]]
        return JSONResponse({"object": "list", "data": page,
                             "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None, "has_more": len(jobs) > limit})

    @endpoint
    async def delete_video(request: Request, rec: RecordedRequest) -> Response:
        job = state.videos.pop(get_job(request).id)
        return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})

    @endpoint
    async def download_content(request: Request, rec: RecordedRequest) -> Response:
        job = get_job(request)
        variant = request.query_params.get("variant", "video")
        if variant not in VARIANT_TYPES:
            raise _invalid("variant", f"Invalid value: '{variant}'. Supported values are: 'video', "
                                      "'thumbnail' and 'spritesheet'.")
        status, _, done = _status(job, state)
        if status == "failed":
            raise ApiError(400, f"Video '{job.id}' failed; no content is available.", param="video_id")
        if status != "completed" or done is None:
            raise ApiError(404, f"Video '{job.id}' is not ready yet (status: {status}). Use GET "
                                f"/v1/videos/{job.id} to check its status.", param="video_id")
        if state.fail_next_downloads > 0:
            state.fail_next_downloads -= 1
            raise _injected_failure(state.fail_status, state)
        if state.expire_content or state.clock() >= done + CONTENT_TTL_SECONDS:
            raise ApiError(404, f"Video content expired: the assets of '{job.id}' are no longer "
                                "available.", param="video_id", code="video_content_expired")
        data = await run_in_threadpool(render_media, variant, job.size, job.seconds)
        return Response(data, media_type=VARIANT_TYPES[variant])

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        message = (f"Invalid URL ({request.method} {request.url.path})" if status in (404, 405)
                   else str(getattr(exc, "detail", "")) or "Bad request")
        return ApiError(status, message).response()

    from .inference_common import InferenceState  # the inference routes: openai_inference.py
    from .openai_inference import inference_routes
    from .openai_media import MediaState, media_routes  # images and audio: openai_media.py

    app = Starlette(routes=[
        Route("/v1/videos", create_video, methods=["POST"]),
        Route("/v1/videos", list_videos, methods=["GET"]),
        Route("/v1/videos/{video_id}", retrieve_video, methods=["GET"]),
        Route("/v1/videos/{video_id}", delete_video, methods=["DELETE"]),
        Route("/v1/videos/{video_id}/content", download_content, methods=["GET"]),
        *inference_routes(inference := InferenceState(api_key=api_key)),  # chat, responses, embeddings…
        *media_routes(media := MediaState(api_key=api_key)),  # images, speech, transcriptions
    ], exception_handlers={HTTPException: http_error})
    app.state.fake, app.state.inference, app.state.media = state, inference, media
    return app

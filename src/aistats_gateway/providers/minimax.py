"""MiniMax Hailuo video (V1 API): ``POST /v1/video_generation``, ``GET /v1/query/video_generation?task_id=``,
then ``GET /v1/files/retrieve?file_id=`` for a short-lived ``file.download_url`` that is downloaded without
credentials. MiniMax reports most errors as **HTTP 200 with a non-zero ``base_resp.status_code``**.
No cancel endpoint: cancelling a job only stops polling.

Settings: ``AISTATS_PROVIDER_MINIMAX_API_KEY``, ``AISTATS_PROVIDER_MINIMAX_BASE_URL`` (default
``https://api.minimax.io``; ``https://api.minimaxi.com`` in mainland China), and the shared timing
settings ``AISTATS_PROVIDER_MINIMAX_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``.
See docs/providers/minimax.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aistats_gateway.providers import _http, registry
from aistats_gateway.providers.base import (
    VIDEO,
    CallContext,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
    error_from_status,
)

PROVIDER = "MiniMax"
DEFAULT_BASE_URL = "https://api.minimax.io"

STATUS = {"Preparing": "queued", "Queueing": "queued", "Processing": "in_progress", "Success": "completed",
          "Fail": "failed"}

# base_resp.status_code → our error kind (https://platform.minimax.io/docs/api-reference/errorcode).
AUTH_CODES = frozenset({1004, 2049, 2038})  # not authorised / invalid key / real-name verification needed
QUOTA_CODES = frozenset({1008})  # insufficient balance
RATE_CODES = frozenset({1002, 1039, 1041, 2056})  # rate limit, token limit, connection limit, usage limit
INPUT_POLICY_CODES = frozenset({1026})  # sensitive input
OUTPUT_POLICY_CODES = frozenset({1027})  # sensitive output
CLIENT_CODES = frozenset({2013, 1042, 1043})  # invalid params, invisible characters, ...
RETRY_CODES = frozenset({1000, 1001, 1024, 1033})  # unknown error, timeout, internal error, system error
KIND_CODE = {"auth": "provider_auth_failed", "quota": "provider_quota_exceeded", "rate_limit": "rate_limit_exceeded",
             "content_policy": "content_policy_violation", "client": "provider_rejected_request",
             "unavailable": "provider_unavailable", "upstream": "provider_error"}

# Our resolution vocabulary → MiniMax's. 720p is served as 768P (1366x768); 512P exists on Hailuo-02.
RESOLUTION = {"480p": "512P", "512p": "512P", "720p": "768P", "768p": "768P", "1080p": "1080P"}
# Models that only animate an image (a first frame is required).
FIRST_FRAME_REQUIRED = ("MiniMax-Hailuo-2.3-Fast", "I2V-01")


def status_kind(code: int) -> str:
    """The error kind of a non-zero ``base_resp.status_code``."""
    if code in AUTH_CODES:
        return "auth"
    if code in QUOTA_CODES:
        return "quota"
    if code in RATE_CODES:
        return "rate_limit"
    if code in INPUT_POLICY_CODES or code in OUTPUT_POLICY_CODES:
        return "content_policy"
    if code in CLIENT_CODES:
        return "client"
    if code in RETRY_CODES:
        return "unavailable"
    return "upstream"


def base_error(code: int, message: str, *, http_status: int | None = None) -> ProviderError:
    kind = status_kind(code)
    return ProviderError(kind, f"MiniMax status_code {code}: {message or 'no message'}",  # type: ignore[arg-type]
                         status=http_status, code=KIND_CODE[kind])


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}


def _base_resp(body: dict[str, Any]) -> tuple[int, str]:
    br = body.get("base_resp")
    if not isinstance(br, dict):
        return 0, ""
    try:
        code = int(br.get("status_code") or 0)
    except (TypeError, ValueError):
        code = 1000
    return code, str(br.get("status_msg") or "")


async def _call(ctx: CallContext, method: str, path: str, **kw: Any) -> dict[str, Any]:
    """One API call; HTTP errors and transport failures raised, the JSON body (base_resp unchecked) returned."""
    resp = await _http.send(ctx.http, method, _base(ctx) + path, provider=PROVIDER, headers=_headers(ctx), **kw)
    if resp.status_code >= 400:
        message = f"MiniMax answered HTTP {resp.status_code}"
        try:
            code, msg = _base_resp(resp.json())
            if code:
                message += f" (status_code {code}: {msg})"
        except ValueError:
            pass
        raise error_from_status(resp.status_code, message, retry_after=_http.retry_after(resp))
    return _http.json_object(resp, PROVIDER)


def native_resolution(request: VideoRequest) -> str | None:
    """MiniMax's resolution name for the request (``768P`` for our 720p)."""
    if request.resolution:
        value = RESOLUTION.get(request.resolution.lower())
        if value is None:
            raise ProviderError("client", f"MiniMax has no {request.resolution} resolution (768P/1080P; 512P on "
                                "Hailuo-02)", code="unsupported_value", param="resolution")
        return value
    if request.width and request.height:
        short = min(request.width, request.height)
        return "512P" if short <= 512 else "768P" if short <= 768 else "1080P"
    return None


def build_body(request: VideoRequest) -> dict[str, Any]:
    """The ``POST /v1/video_generation`` body for a unified request."""
    model = request.model_slug
    hailuo = model.startswith("MiniMax-Hailuo")
    body: dict[str, Any] = dict(request.provider_params)  # e.g. fast_pretreatment, aigc_watermark
    body["model"] = model
    if request.prompt:
        body["prompt"] = request.prompt
    if request.enhance_prompt is not None:
        body["prompt_optimizer"] = bool(request.enhance_prompt)
    if hailuo:  # the 01-series models are fixed at 6 s / 720P and take neither field
        if request.duration is not None:
            body["duration"] = int(request.duration)
        resolution = native_resolution(request)
        if resolution is not None:
            body["resolution"] = resolution
    subjects = []
    for image in request.images:
        if image.role == "first_frame":
            body["first_frame_image"] = _http.image_url(image)
        elif image.role == "last_frame":
            body["last_frame_image"] = _http.image_url(image)
        elif image.role == "reference" and model.startswith("S2V"):
            subjects.append(_http.image_url(image))
        else:
            raise ProviderError("client", f"MiniMax {model} does not take a {image.role} image",
                                code="unsupported_value", param="input_references")
    if subjects:
        body["subject_reference"] = [{"type": "character", "image": subjects}]
    if model.startswith("S2V") and not subjects:
        raise ProviderError("client", f"MiniMax {model} needs a reference image of the subject",
                            code="missing_required_parameter", param="input_references")
    if model.startswith(FIRST_FRAME_REQUIRED) and "first_frame_image" not in body:
        raise ProviderError("client", f"MiniMax {model} is image-to-video only: give a first_frame image",
                            code="missing_required_parameter", param="input_references")
    if "last_frame_image" in body and "first_frame_image" not in body:
        raise ProviderError("client", "MiniMax needs a first frame with a last frame",
                            code="missing_required_parameter", param="input_references")
    return body


class MiniMaxVideo:
    provider_id = "minimax"
    can_cancel = False
    poll_interval = 10.0
    max_poll_interval = 30.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        body = await _call(ctx, "POST", "/v1/video_generation", json=build_body(request))
        code, msg = _base_resp(body)
        if code:
            raise base_error(code, msg)
        task_id = body.get("task_id")
        if not task_id:
            raise ProviderError("upstream", "MiniMax returned no task_id", code="invalid_upstream_response")
        return Submitted(native_id=str(task_id), status="queued")

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        body = await _call(ctx, "GET", "/v1/query/video_generation", params={"task_id": native_id})
        code, msg = _base_resp(body)
        status = STATUS.get(str(body.get("status") or ""))
        if status == "failed" or (code and code in OUTPUT_POLICY_CODES):
            if code in INPUT_POLICY_CODES or code in OUTPUT_POLICY_CODES:
                return Polled(status="failed", error_code="content_policy_violation",
                              error_message=f"MiniMax moderation blocked the video (status_code {code}: {msg})")
            detail = f" (status_code {code}: {msg})" if code else ""
            return Polled(status="failed", error_code="generation_failed",
                          error_message=f"MiniMax reports the task failed{detail}")
        if code:
            e = base_error(code, msg)
            if e.kind == "client":  # the only parameter is the task id: MiniMax does not know it (any more)
                raise ProviderError("not_found", f"MiniMax does not know task {native_id}: {e.message}",
                                    code="provider_job_not_found")
            raise e
        if status is None:
            raise ProviderError("upstream", f"MiniMax returned an unknown task status {body.get('status')!r}",
                                code="invalid_upstream_response")
        if status != "completed":
            return Polled(status=status)
        file_id = body.get("file_id")
        if file_id in (None, ""):
            raise ProviderError("upstream", "MiniMax reports Success without a file_id",
                                code="invalid_upstream_response")
        request: VideoRequest | None = ctx.extra.get("request")
        usage: dict[str, Any] = {"count": 1}
        if request is not None and request.duration is not None:
            usage["seconds"] = float(request.duration)
        for key in ("video_width", "video_height"):
            if isinstance(body.get(key), int):
                usage[key.removeprefix("video_")] = body[key]
        return Polled(status="completed", progress=100,
                      outputs=(OutputRef(index=0, handle=str(file_id), mime_type="video/mp4"),), usage=usage)

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        body = await _call(ctx, "GET", "/v1/files/retrieve", params={"file_id": ref.handle})
        code, msg = _base_resp(body)
        if code:
            e = base_error(code, msg)
            if e.kind == "client":
                raise ProviderError("not_found", f"MiniMax no longer has file {ref.handle}: {e.message}",
                                    code="output_unavailable")
            raise e
        file = body.get("file")
        url = file.get("download_url") if isinstance(file, dict) else None
        if not url:
            raise ProviderError("upstream", "MiniMax returned no file.download_url", code="invalid_upstream_response")
        # A signed CDN link: no Authorization header (it would leak the key to another host).
        async for chunk in _http.stream_url(ctx.http, str(url), provider=PROVIDER):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return False


adapter = MiniMaxVideo()
registry.register("minimax", VIDEO, adapter)

"""Kling (Kuaishou) video API: ``POST /v1/videos/text2video`` or ``/v1/videos/image2video``,
``GET /v1/videos/{text2video|image2video}/{task_id}``; outputs are plain CDN URLs
(``data.task_result.videos[].url``, kept 30 days). There is no cancel endpoint: cancel stops polling.

Auth: every request carries ``Authorization: Bearer <JWT>``, a JWT signed HS256 with the secret key,
claims ``{iss: access_key, exp: now+1800, nbf: now-5}`` (made here with the standard library).

Settings:
``AISTATS_PROVIDER_KLING_API_KEY``
    ``<access_key>:<secret_key>``; or the access key alone with
``AISTATS_PROVIDER_KLING_SECRET_KEY``
    the secret key.
``AISTATS_PROVIDER_KLING_BASE_URL``
    default ``https://api-singapore.klingai.com`` (``https://api-beijing.klingai.com`` in China).
``AISTATS_PROVIDER_KLING_POLL_INTERVAL`` / ``_MAX_POLL_INTERVAL`` / ``_DEADLINE_SECONDS``
    see :mod:`aistats_gateway.providers.config`.

The native id is ``<endpoint>:<task_id>`` (the poll path depends on the create endpoint). The
job id is sent as ``external_task_id``, so a create that is retried after a lost answer finds the
first task instead of making a second one. See docs/providers/kling.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aistats_gateway.providers import _http, config, registry
from aistats_gateway.providers.base import (
    VIDEO,
    CallContext,
    ImageInput,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
    error_from_status,
)

PROVIDER_ID = "kling"
DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
TOKEN_TTL_SECONDS = 1800
TOKEN_NBF_SKEW_SECONDS = 5
ENDPOINTS = ("text2video", "image2video")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MAX_PROMPT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_MIMES = ("image/jpeg", "image/jpg", "image/png")
# Body fields this adapter sets from validated request fields; provider_params may not set them.
CONTROLLED = frozenset({"model_name", "prompt", "negative_prompt", "duration", "aspect_ratio", "sound", "image",
                        "image_tail", "external_task_id", "callback_url"})

# Kling task_status → ours.
STATUS = {"submitted": "queued", "processing": "in_progress", "succeed": "completed", "failed": "failed"}

# Kling's service codes (the "code" of the error body) → (kind, our code). The HTTP status that Kling
# sends with each is in docs/providers/kling.md; the code decides, the status is a fallback.
CODE_KINDS: dict[int, tuple[str, str]] = {
    1000: ("auth", "provider_auth_failed"),  # authentication failed
    1001: ("auth", "provider_auth_failed"),  # Authorization empty
    1002: ("auth", "provider_auth_failed"),  # Authorization invalid
    1003: ("auth", "provider_auth_failed"),  # token not yet valid (nbf)
    1004: ("auth", "provider_auth_failed"),  # token expired
    1100: ("quota", "provider_quota_exceeded"),  # account exception
    1101: ("quota", "provider_quota_exceeded"),  # account in arrears (postpaid)
    1102: ("quota", "provider_quota_exceeded"),  # resource pack used up or expired (prepaid)
    1103: ("auth", "provider_permission_denied"),  # no permission for the interface or model
    1200: ("client", "invalid_request_parameter"),
    1201: ("client", "invalid_request_parameter"),  # a key or value is invalid
    1202: ("client", "invalid_request_parameter"),  # invalid request method
    1203: ("not_found", "not_found"),  # the resource (model, task) does not exist
    1300: ("client", "provider_policy_rejected"),  # platform policy triggered
    1301: ("content_policy", "content_policy_violation"),  # content security policy
    1302: ("rate_limit", "rate_limit_exceeded"),  # requests too fast
    1303: ("rate_limit", "rate_limit_exceeded"),  # concurrency/QPS over the resource pack's limit
    1304: ("auth", "provider_ip_not_allowed"),  # IP whitelist policy
    5000: ("unavailable", "provider_unavailable"),  # internal error
    5001: ("unavailable", "provider_unavailable"),  # temporarily unavailable (maintenance)
    5002: ("unavailable", "provider_timeout"),  # internal timeout (backlog)
}

# task_status_msg of a failed task that means a content-safety refusal.
_CONTENT_FAILURE = re.compile(r"risk|moderat|sensitive|content (?:security|safety|policy)|violat|inappropriate|"
                              r"prohibit|not compliant|compliance", re.I)
_MODEL_VERSION = re.compile(r"^kling-v(\d+)(?:-(\d+))?")


# ---------------------------------------------------------------- credentials and auth


def credentials(ctx: CallContext, env: Any = None) -> tuple[str, str]:
    """(access_key, secret_key) from ``API_KEY`` (``ak:sk``) or ``API_KEY`` + ``SECRET_KEY``."""
    env = os.environ if env is None else env
    raw = (ctx.api_key or "").strip()
    access, sep, secret = raw.partition(":")
    if not sep:
        secret = (env.get(config.env_prefix(PROVIDER_ID) + "SECRET_KEY") or "").strip()
    access, secret = access.strip(), secret.strip()
    if not access or not secret:
        prefix = config.env_prefix(PROVIDER_ID)
        raise ProviderError("auth", f"Kling needs an access key and a secret key: set {prefix}API_KEY to "
                                    f"'<access_key>:<secret_key>' (or the access key, with {prefix}SECRET_KEY)",
                            code="provider_auth_not_configured")
    return access, secret


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(access_key: str, secret_key: str, now: float | None = None) -> str:
    """The API token: a compact JWS (HS256) with ``iss``, ``exp`` (+30 min) and ``nbf`` (-5 s)."""
    now = int(time.time() if now is None else now)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps({"iss": access_key, "exp": now + TOKEN_TTL_SECONDS,
                                  "nbf": now - TOKEN_NBF_SKEW_SECONDS}, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret_key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _headers(ctx: CallContext) -> dict[str, str]:
    access, secret = credentials(ctx)
    return {"Authorization": f"Bearer {make_token(access, secret)}"}


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


# ---------------------------------------------------------------- errors


def error_for(status: int, body: Any, retry_after: float | None = None) -> ProviderError:
    """A ProviderError for a Kling answer: by service code when the body has one, else by HTTP status."""
    code, message = None, None
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message")
    text = f"Kling error {code}: {message}" if code is not None else (message or f"Kling answered HTTP {status}")
    if isinstance(code, int) and code in CODE_KINDS:
        kind, ours = CODE_KINDS[code]
        e = ProviderError(kind, text, status=status, code=ours,  # type: ignore[arg-type]
                          retry_after=retry_after if kind == "rate_limit" else None)
    elif status >= 400:
        e = error_from_status(status, text, retry_after=retry_after)
    else:
        e = ProviderError("upstream", text, status=status, code="invalid_upstream_response")
    e.kling_code = code  # type: ignore[attr-defined]
    return e


async def _send(ctx: CallContext, method: str, url: str, **kw: Any) -> dict[str, Any]:
    resp = await _http.send(ctx.http, method, url, provider="Kling", headers=_headers(ctx), **kw)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        raise error_for(resp.status_code, body, _http.retry_after(resp))
    if not isinstance(body, dict):
        raise ProviderError("upstream", "Kling returned a body that is not a JSON object",
                            status=resp.status_code, code="invalid_upstream_response")
    if body.get("code") not in (0, None):  # an error sent with HTTP 200
        raise error_for(resp.status_code, body, _http.retry_after(resp))
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError("upstream", "Kling returned no task data", status=resp.status_code,
                            code="invalid_upstream_response")
    return data


# ---------------------------------------------------------------- request mapping


def supports_sound(model: str) -> bool:
    """``sound`` exists from kling-v2-6 on (and on later generations)."""
    m = _MODEL_VERSION.match(model)
    if not m:
        return False
    return (int(m[1]), int(m[2] or 0)) >= (2, 6)


def _image_value(img: ImageInput) -> str:
    """What Kling takes for ``image``/``image_tail``: the https URL (jpg/png) or bare base64 (no data: prefix)."""
    mime = (img.mime_type or "").lower()
    if img.url and img.url.startswith("https://") and mime in IMAGE_MIMES:
        return img.url
    data = img.content
    if mime not in IMAGE_MIMES:  # Kling reads jpg/jpeg/png only
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                out = io.BytesIO()
                im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB").save(out, format="PNG")
                data = out.getvalue()
        except Exception as e:
            raise ProviderError("client", f"Kling accepts JPEG or PNG images; could not convert the {img.role} "
                                          f"image ({mime or 'unknown type'})", code="invalid_image",
                                param="input_references") from e
    if len(data) > MAX_IMAGE_BYTES:
        raise ProviderError("client", f"Kling accepts images up to 10 MB; the {img.role} image is {len(data)} bytes",
                            code="image_too_large", param="input_references")
    return base64.b64encode(data).decode("ascii")


def build_body(request: VideoRequest) -> tuple[str, dict[str, Any]]:
    """(endpoint, JSON body) for a create call. Raises ProviderError(client) for what Kling cannot do."""
    def refuse(message: str, param: str) -> ProviderError:
        return ProviderError("client", message, code="unsupported_parameter", param=param)

    if request.seed is not None:
        raise refuse("Kling has no seed parameter", "seed")
    if request.sample_count > 1:
        raise refuse("Kling makes one video per request (sample_count 1)", "sample_count")
    if request.enhance_prompt:
        raise refuse("Kling has no prompt enhancement option", "enhance_prompt")
    for name in ("person_generation", "compression_quality", "resize_mode"):
        if getattr(request, name) is not None:
            raise refuse(f"Kling has no {name} option", name)
    first = last = None
    for img in request.images:
        if img.role == "first_frame" and first is None:
            first = img
        elif img.role == "last_frame" and last is None:
            last = img
        else:
            raise refuse(f"Kling takes one first_frame and one last_frame image, not {img.role!r}",
                         "input_references")
    endpoint = "image2video" if (first or last) else "text2video"
    for key in request.provider_params:
        if key in CONTROLLED:
            raise refuse(f"'{key}' is set by the gateway from the request's own fields", f"provider_params.{key}")
    body: dict[str, Any] = dict(request.provider_params)  # e.g. mode, cfg_scale, camera_control, watermark_info
    body["model_name"] = request.model_slug
    if request.prompt:
        if len(request.prompt) > MAX_PROMPT:
            raise refuse(f"Kling prompts are at most {MAX_PROMPT} characters", "prompt")
        body["prompt"] = request.prompt
    elif endpoint == "text2video":
        raise refuse("Kling text-to-video needs a prompt", "prompt")
    if request.negative_prompt:
        if len(request.negative_prompt) > MAX_PROMPT:
            raise refuse(f"Kling negative prompts are at most {MAX_PROMPT} characters", "negative_prompt")
        body["negative_prompt"] = request.negative_prompt
    if request.duration is not None:
        body["duration"] = str(int(request.duration))  # "5" or "10": a string on the wire
    if "mode" not in body and request.resolution:
        mode = {"720p": "std", "1080p": "pro"}.get(request.resolution.lower())
        if mode is None:
            raise refuse("Kling renders 720p (mode std) or 1080p (mode pro)", "resolution")
        body["mode"] = mode
    if endpoint == "text2video":
        if request.aspect_ratio:
            if request.aspect_ratio not in ASPECT_RATIOS:
                raise refuse(f"Kling aspect ratios are {', '.join(ASPECT_RATIOS)}", "aspect_ratio")
            body["aspect_ratio"] = request.aspect_ratio
    else:
        # image2video follows the image's shape; it has no aspect_ratio field.
        if first is not None:
            body["image"] = _image_value(first)
        if last is not None:
            body["image_tail"] = _image_value(last)
    if request.generate_audio is not None:
        if supports_sound(request.model_slug):
            body["sound"] = "on" if request.generate_audio else "off"
        elif request.generate_audio:
            raise refuse(f"{request.model_slug} cannot generate audio (sound needs kling-v2-6 or later)",
                         "generate_audio")
    if "mode" not in body and (body.get("sound") == "on" or "image_tail" in body) and request.model_slug != "kling-v1":
        body["mode"] = "pro"  # sound and end frames are pro-mode features (kling-v1 also has them in std)
    body["external_task_id"] = request.job_id
    return endpoint, body


def split_native_id(native_id: str) -> tuple[str, str]:
    endpoint, sep, task_id = native_id.partition(":")
    if not sep or endpoint not in ENDPOINTS or not task_id:
        raise ProviderError("not_found", f"not a Kling task id: {native_id!r}", code="not_found")
    return endpoint, task_id


def polled_from(data: dict[str, Any]) -> Polled:
    """Our view of a Kling task (the ``data`` of a query answer)."""
    raw = str(data.get("task_status") or "")
    status = STATUS.get(raw, "in_progress")
    if status == "completed":
        videos = (data.get("task_result") or {}).get("videos") or []
        outputs: list[OutputRef] = []
        total = 0.0
        for i, v in enumerate(videos):
            if not isinstance(v, dict) or not v.get("url"):
                continue
            seconds = _float(v.get("duration"))
            total = max(total, seconds or 0.0)
            outputs.append(OutputRef(index=len(outputs), url=str(v["url"]), mime_type="video/mp4",
                                     handle=str(v.get("id") or i), duration_seconds=seconds))
        if not outputs:
            return Polled(status="failed", error_code="no_output", error_message="Kling reported success but no video")
        return Polled(status="completed", progress=100, outputs=tuple(outputs),
                      usage={"seconds": total or None, "count": len(outputs),
                             "units": data.get("final_unit_deduction")})
    if status == "failed":
        msg = str(data.get("task_status_msg") or "Kling reports the task failed")
        code = "content_policy_violation" if _CONTENT_FAILURE.search(msg) else "generation_failed"
        return Polled(status="failed", error_code=code, error_message=f"Kling: {msg}")
    return Polled(status=status)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- the adapter


class KlingVideo:
    provider_id = PROVIDER_ID
    can_cancel = False
    poll_interval = 10.0
    max_poll_interval = 30.0
    deadline_seconds = 3 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        endpoint, body = build_body(request)
        url = f"{_base(ctx)}/v1/videos/{endpoint}"
        try:
            data = await _send(ctx, "POST", url, json=body)
        except ProviderError as e:
            if getattr(e, "kling_code", None) == 1201 and "external_task_id" in e.message.lower():
                # A retried create: the task exists already under our job id.
                data = await _send(ctx, "GET", f"{url}/{request.job_id}")
            else:
                raise
        task_id = data.get("task_id")
        if not task_id:
            raise ProviderError("upstream", "Kling returned no task_id", code="invalid_upstream_response")
        polled = polled_from(data)
        status = polled.status if polled.status in ("queued", "in_progress") else "queued"
        return Submitted(native_id=f"{endpoint}:{task_id}", status=status)

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        endpoint, task_id = split_native_id(native_id)
        data = await _send(ctx, "GET", f"{_base(ctx)}/v1/videos/{endpoint}/{task_id}")
        return polled_from(data)

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if not ref.url:
            raise ProviderError("not_found", "the Kling output has no URL", code="output_unavailable")
        async for chunk in _http.stream_url(ctx.http, ref.url, provider="Kling"):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return False  # Kling's public API has no cancel; the gateway stops polling


adapter = KlingVideo()
registry.register(PROVIDER_ID, VIDEO, adapter)

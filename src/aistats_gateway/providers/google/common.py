"""What the two Google Veo adapters (Gemini API and Vertex AI) share.

Both speak the same ``predictLongRunning`` body (``{"instances": [{...}], "parameters": {...}}``) and
return a ``google.longrunning.Operation``; HTTP errors use the Google envelope
``{"error": {"code", "message", "status", "details"}}``. This module maps the unified request to
that body, Google errors to :class:`ProviderError`, and a finished operation to :class:`Polled`.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from aistats_gateway.providers import _http, config
from aistats_gateway.providers.base import (
    ImageInput,
    OutputRef,
    Polled,
    ProviderError,
    VideoRequest,
    error_from_status,
)

# google.rpc.Code numbers → canonical names (an operation's ``error.code`` is the number).
RPC_CODES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
# Words Google uses when a safety filter refused a prompt, an image or an output.
_SAFETY = re.compile(r"usage guidelines|responsible ai|sensitive words|violat|safety filter|support codes?:"
                     r"|raiMediaFiltered|prohibited use", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
MAX_REDIRECTS = 5
ASPECT_RATIOS = ("16:9", "9:16")
CONTENT_POLICY_CODE = "content_policy_violation"


def env(provider_id: str, name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``AISTATS_PROVIDER_<ID>_<NAME>`` from the environment (read at call time), or None when unset."""
    value = (os.environ if environ is None else environ).get(config.env_prefix(provider_id) + name)
    return value.strip() if value and value.strip() else None


def strip_version(base: str, *versions: str) -> str:
    """A configured base URL without a trailing ``/v1`` / ``/v1beta`` (both forms are accepted)."""
    base = base.rstrip("/")
    for v in versions:
        if base.endswith("/" + v):
            return base[: -len(v) - 1]
    return base


def is_veo2(model: str) -> bool:
    return model.startswith("veo-2")


# ---------------------------------------------------------------- request mapping

def aspect_ratio(request: VideoRequest) -> str | None:
    """``16:9`` / ``9:16`` from the request's aspect ratio, else from its resolved width and height."""
    ratio = request.aspect_ratio
    if ratio is None and request.width and request.height:
        ratio = "16:9" if request.width >= request.height else "9:16"
    if ratio is None:
        return None
    if ratio not in ASPECT_RATIOS:
        raise ProviderError("client", f"Veo supports the aspect ratios 16:9 and 9:16, not {ratio}",
                            code="unsupported_value", param="aspect_ratio")
    return ratio


def resolution(request: VideoRequest) -> str | None:
    """Veo's ``720p`` / ``1080p`` / ``4k`` from our resolution (or from the size's short side)."""
    value = request.resolution
    if value is None and request.width and request.height:
        value = {720: "720p", 1080: "1080p", 2160: "4k"}.get(min(request.width, request.height))
        if value is None:
            raise ProviderError("client", f"Veo renders 1280x720, 1920x1080 or 3840x2160 (or portrait), not "
                                          f"{request.width}x{request.height}", code="unsupported_value", param="size")
        return value
    if value is None:
        return None
    native = {"720p": "720p", "1080p": "1080p", "4k": "4k"}.get(value.lower())
    if native is None:
        raise ProviderError("client", f"Veo supports the resolutions 720p, 1080p and 4K, not {value}",
                            code="unsupported_value", param="resolution")
    return native


def media(image: ImageInput) -> dict[str, str]:
    """An input image as the inline ``{bytesBase64Encoded, mimeType}`` object both APIs accept."""
    return {"bytesBase64Encoded": base64.b64encode(image.content).decode("ascii"), "mimeType": image.mime_type}


def instance(request: VideoRequest) -> dict[str, Any]:
    """``instances[0]``: prompt, ``image`` (first frame), ``lastFrame`` and ``referenceImages``."""
    inst: dict[str, Any] = {}
    if request.prompt:
        inst["prompt"] = request.prompt
    refs = []
    for img in request.images:
        if img.role == "first_frame":
            inst["image"] = media(img)
        elif img.role == "last_frame":
            inst["lastFrame"] = media(img)
        elif img.role == "reference":
            kind = (img.reference_type or "asset").lower()
            if kind not in ("asset", "style"):
                raise ProviderError("client",
                                    f"Veo reference images are 'asset' or 'style', not {img.reference_type!r}",
                                    code="unsupported_value", param="input_references")
            refs.append({"image": media(img), "referenceType": kind})
        else:
            raise ProviderError("client", f"Veo does not take an image with role {img.role!r}",
                                code="unsupported_value", param="input_references")
    if refs:
        inst["referenceImages"] = refs
    return inst


def common_parameters(request: VideoRequest) -> dict[str, Any]:
    """The ``parameters`` both APIs accept (camelCase, only the fields that were set)."""
    params: dict[str, Any] = {}
    ratio = aspect_ratio(request)
    if ratio:
        params["aspectRatio"] = ratio
    res = resolution(request)
    if res and not is_veo2(request.model_slug):  # Veo 2 is 720p only and has no resolution parameter
        params["resolution"] = res
    if request.duration is not None:
        params["durationSeconds"] = round(float(request.duration))
    if request.sample_count and request.sample_count != 1:
        params["sampleCount"] = int(request.sample_count)
    if request.negative_prompt:
        params["negativePrompt"] = request.negative_prompt
    if request.enhance_prompt is not None:
        params["enhancePrompt"] = bool(request.enhance_prompt)
    if request.person_generation:
        params["personGeneration"] = request.person_generation
    return params


# ---------------------------------------------------------------- errors

def _details(err: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = err.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def retry_after(resp: httpx.Response, err: Mapping[str, Any] | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header, else from a ``google.rpc.RetryInfo`` detail (``"37s"``)."""
    from_header = _http.retry_after(resp)
    if from_header is not None:
        return from_header
    for d in _details(err or {}):
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(d.get("retryDelay", "")))
            if m:
                return float(m[1])
    return None


def is_safety_message(message: str | None) -> bool:
    return bool(message and _SAFETY.search(message))


def error(resp: httpx.Response, who: str) -> ProviderError:
    """A Google HTTP error response → ProviderError (the kind decides fallback; see docs/providers/google.md)."""
    err: dict[str, Any] = {}
    try:
        body = resp.json()
        if isinstance(body, list) and body and isinstance(body[0], dict):  # some Google APIs wrap it in a list
            body = body[0]
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
    except ValueError:
        pass
    status_name = str(err.get("status") or "")
    message = str(err.get("message") or f"{who} answered HTTP {resp.status_code}")
    reasons = {str(d.get("reason", "")) for d in _details(err)}
    code = status_name.lower() or None
    if "API_KEY_INVALID" in reasons or "API_KEY_SERVICE_BLOCKED" in reasons:
        return ProviderError("auth", message, status=resp.status_code, code="provider_auth_failed")
    if resp.status_code == 400 and status_name == "FAILED_PRECONDITION":
        # e.g. billing not enabled or the location is not supported: the operator's account, not the request.
        return ProviderError("auth", message, status=resp.status_code, code="provider_precondition_failed")
    if resp.status_code == 400 and is_safety_message(message):
        return ProviderError("content_policy", message, status=400, code=CONTENT_POLICY_CODE, param="prompt")
    e = error_from_status(resp.status_code, message, code=None, retry_after=retry_after(resp, err))
    if e.kind == "client" and code:
        e.code = code
    return e


async def send(ctx: Any, method: str, url: str, who: str, **kw: Any) -> httpx.Response:
    """One request through the shared client; transport failures → ``unavailable``, ≥400 → :func:`error`."""
    resp = await _http.send(ctx.http, method, url, provider=who, **kw)
    if resp.status_code >= 400:
        raise error(resp, who)
    return resp


def json_body(resp: httpx.Response, who: str) -> dict[str, Any]:
    return _http.json_object(resp, who)


# ---------------------------------------------------------------- operations

def _samples(response: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int, list[str]]:
    """(videos, filtered count, filter reasons) from either API's GenerateVideoResponse shape."""
    inner = response.get("generateVideoResponse")
    src: Mapping[str, Any] = inner if isinstance(inner, dict) else response
    videos: list[dict[str, Any]] = []
    for sample in src.get("generatedSamples") or []:  # Gemini API: [{video: {uri | encodedVideo}}]
        if isinstance(sample, dict) and isinstance(sample.get("video"), dict):
            videos.append(sample["video"])
    for v in src.get("videos") or []:  # Vertex: [{gcsUri | bytesBase64Encoded, mimeType}]
        if isinstance(v, dict):
            videos.append(v)
    try:
        filtered = int(src.get("raiMediaFilteredCount") or 0)
    except (TypeError, ValueError):
        filtered = 0
    reasons = [str(r) for r in src.get("raiMediaFilteredReasons") or [] if r]
    return videos, filtered, reasons


def output_ref(index: int, video: Mapping[str, Any]) -> OutputRef | None:
    mime = str(video.get("mimeType") or video.get("encoding") or "video/mp4")
    inline = video.get("bytesBase64Encoded") or video.get("encodedVideo") or video.get("videoBytes")
    if inline:
        try:
            return OutputRef(index=index, data=base64.b64decode(inline), mime_type=mime)
        except (ValueError, TypeError):
            return None
    url = video.get("uri") or video.get("gcsUri")
    return OutputRef(index=index, url=str(url), mime_type=mime) if url else None


def polled(op: Mapping[str, Any], who: str, seconds: float | None) -> Polled:
    """An Operation → Polled. ``done`` false → in_progress; ``error`` → failed; ``response`` → completed,
    or failed with ``content_policy_violation`` when the safety filter removed every video."""
    if not op.get("done"):
        meta: dict[str, Any] = v if isinstance(v := op.get("metadata"), dict) else {}
        pct = meta.get("progressPercent")
        return Polled(status="in_progress",
                      progress=max(0, min(99, int(pct))) if isinstance(pct, (int, float)) else None)
    err = op.get("error")
    if isinstance(err, dict):
        message = str(err.get("message") or f"{who} reports the operation failed")
        if is_safety_message(message):
            return Polled(status="failed", error_code=CONTENT_POLICY_CODE, error_message=message)
        rpc = err.get("code")
        name = RPC_CODES.get(rpc, str(err.get("status") or "UNKNOWN")) if isinstance(rpc, int) else str(
            err.get("status") or "UNKNOWN")
        return Polled(status="failed", error_code=name.lower(), error_message=message)
    response = op.get("response")
    if not isinstance(response, dict):
        raise ProviderError("upstream", f"{who} reports the operation done with neither response nor error",
                            code="invalid_upstream_response")
    videos, filtered, reasons = _samples(response)
    refs = [r for r in (output_ref(i, v) for i, v in enumerate(videos)) if r is not None]
    if not refs:
        if filtered or reasons:
            why = "; ".join(reasons) or f"{filtered} video(s) removed by the provider's safety filter"
            return Polled(status="failed", error_code=CONTENT_POLICY_CODE, error_message=why)
        return Polled(status="failed", error_code="no_output", error_message=f"{who} returned no video")
    refs = [OutputRef(index=i, url=r.url, data=r.data, mime_type=r.mime_type) for i, r in enumerate(refs)]
    return Polled(status="completed", progress=100, outputs=tuple(refs),
                  usage={"seconds": seconds, "count": len(refs), "filtered": filtered})


# ---------------------------------------------------------------- downloads

def same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


async def stream(ctx: Any, url: str, who: str, *, headers: dict[str, str] | None = None,
                 secret_origin: str | None = None) -> AsyncIterator[bytes]:
    """GET ``url`` and yield its body, following redirects by hand. ``headers`` (the credential) go only
    with the first request, and only when ``url`` is on ``secret_origin``: a redirect names a signed URL
    that carries its own authorisation, so the key is never sent to it."""
    for hop in range(MAX_REDIRECTS + 1):
        send_headers = headers if headers and hop == 0 and secret_origin and same_origin(url, secret_origin) else {}
        try:
            async with ctx.http.stream("GET", url, headers=send_headers, follow_redirects=False) as resp:
                if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                    url = urljoin(url, resp.headers["location"])
                    continue
                if resp.status_code >= 400:
                    await resp.aread()
                    raise error(resp, who)
                async for chunk in resp.aiter_bytes(1024 * 1024):
                    yield chunk
                return
        except httpx.TimeoutException as e:
            raise ProviderError("unavailable", f"{who} timed out sending the video", code="provider_timeout") from e
        except httpx.TransportError as e:
            raise ProviderError("unavailable", f"download from {who} failed: {e}", code="provider_unreachable") from e
    raise ProviderError("upstream", f"{who} redirected the download more than {MAX_REDIRECTS} times",
                        code="too_many_redirects")

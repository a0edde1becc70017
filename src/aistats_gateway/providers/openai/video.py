"""OpenAI Videos API (Sora): ``POST /v1/videos`` (multipart), ``GET /v1/videos/{id}``,
``GET /v1/videos/{id}/content``. No cancel endpoint exists, so cancel stops polling only.
Creates carry ``Idempotency-Key: <job id>``, so a resumed submit finds the same video; an
``openai-poll-after-ms`` header on a status answer sets the wait before the next poll.
Settings: ``AISTATS_PROVIDER_OPENAI_API_KEY``, ``AISTATS_PROVIDER_OPENAI_BASE_URL``
(default ``https://api.openai.com/v1``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

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

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_STATUS = {"queued": "queued", "in_progress": "in_progress", "processing": "in_progress", "running": "in_progress",
           "completed": "completed", "succeeded": "completed", "failed": "failed", "error": "failed",
           "cancelled": "cancelled", "canceled": "cancelled", "expired": "expired"}
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def _base(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.api_key or ''}"}


def _error(resp: httpx.Response) -> ProviderError:
    message, code = f"OpenAI answered {resp.status_code}", None
    try:
        err = resp.json().get("error") or {}
        message = err.get("message") or message
        code = err.get("code")
    except ValueError:
        pass
    e = error_from_status(resp.status_code, message, code=code, retry_after=_http.retry_after(resp))
    if code in ("moderation_blocked", "content_policy_violation"):
        e.kind = "content_policy"
    return e


async def _send(ctx: CallContext, method: str, url: str, **kw: Any) -> httpx.Response:
    resp = await _http.send(ctx.http, method, url, provider="OpenAI",
                            headers={**_headers(ctx), **kw.pop("headers", {})}, **kw)
    if resp.status_code >= 400:
        raise _error(resp)
    return resp


class OpenAIVideo:
    provider_id = "openai"
    can_cancel = False
    poll_interval = 5.0
    max_poll_interval = 30.0
    deadline_seconds = 2 * 3600.0

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        data: dict[str, Any] = {"model": request.model_slug, "prompt": request.prompt}
        if request.duration is not None:
            data["seconds"] = str(int(request.duration))
        if request.width and request.height:
            data["size"] = f"{request.width}x{request.height}"
        data.update({k: str(v) for k, v in request.provider_params.items()})
        # Always multipart/form-data, as the API documents (httpx sends a body without file parts as
        # urlencoded, so every field goes in as a part without a filename).
        parts: list[tuple[str, tuple[str | None, bytes | str] | tuple[str, bytes, str]]] = [
            (k, (None, v)) for k, v in data.items()]
        first = next((i for i in request.images if i.role in ("first_frame", "reference")), None)
        if first is not None:
            ext = _EXT.get(first.mime_type, "png")
            parts.append(("input_reference", (f"reference.{ext}", first.content, first.mime_type)))
        resp = await _send(ctx, "POST", f"{_base(ctx)}/videos", files=parts,
                           headers={"Idempotency-Key": request.job_id})
        body = _json(resp)
        if not body.get("id"):
            raise ProviderError("upstream", "OpenAI returned no video id", code="invalid_upstream_response")
        return Submitted(native_id=str(body["id"]), status=_STATUS.get(str(body.get("status")), "queued"),
                         progress=_progress(body))

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        resp = await _send(ctx, "GET", f"{_base(ctx)}/videos/{native_id}")
        body = _json(resp)
        status = _STATUS.get(str(body.get("status")), "in_progress")
        if status == "completed":
            seconds = body.get("seconds")
            return Polled(status="completed", progress=100,
                          outputs=(OutputRef(index=0, handle=native_id, mime_type="video/mp4",
                                             expires_at=body.get("expires_at")),),
                          usage={"seconds": float(seconds) if seconds else None, "count": 1})
        if status in ("failed", "cancelled", "expired"):
            err = body.get("error") or {}
            return Polled(status=status, error_code=err.get("code") or "generation_failed",
                          error_message=err.get("message") or f"the provider reports the job {status}")
        return Polled(status=status, progress=_progress(body), poll_after=_poll_after(resp))

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        url = f"{_base(ctx)}/videos/{ref.handle or native_id}/content"
        try:
            async with ctx.http.stream("GET", url, headers={**_headers(ctx), "Accept": "application/binary"},
                                       params={"variant": "video"}) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _error(resp)
                async for chunk in resp.aiter_bytes(1024 * 1024):
                    yield chunk
        except httpx.TimeoutException as e:
            raise ProviderError("unavailable", "OpenAI timed out sending the video", code="provider_timeout") from e
        except httpx.TransportError as e:
            raise ProviderError("unavailable", f"download from OpenAI failed: {e}", code="provider_unreachable") from e

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return False


def _json(resp: httpx.Response) -> dict[str, Any]:
    return _http.json_object(resp, "OpenAI")


def _poll_after(resp: httpx.Response) -> float | None:
    """OpenAI's hint for the next poll (``openai-poll-after-ms``), when it sends one."""
    value = resp.headers.get("openai-poll-after-ms")
    try:
        return min(max(float(value) / 1000, 0.0), 300.0) if value else None
    except ValueError:
        return None


def _progress(body: dict[str, Any]) -> int | None:
    p = body.get("progress")
    return max(0, min(100, int(p))) if isinstance(p, (int, float)) else None


adapter = OpenAIVideo()
registry.register("openai", VIDEO, adapter)

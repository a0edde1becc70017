"""Serving stored video bytes: ETag, Range (206/416), conditional requests (negotiated by
:mod:`aistats_gateway.http.ranges`), dispositions.

Invariant: no status line or ``Content-Length`` is sent before the blob is known to be there in
full. The blob is stat-ed (a missing or truncated blob is 410 ``video_content_unavailable``) and
the first chunk is read before the response starts, so a download racing a ``DELETE`` either gets
the bytes (an open file stays readable) or a clean error, never a connection aborted mid-body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aistats_gateway.http import ranges
from aistats_gateway.http.errors import APIError
from aistats_gateway.storage.base import BlobNotFound, InvalidRange
from aistats_gateway.videos.tables import VideoOutput


def _etag(o: VideoOutput) -> str:
    return f'"{o.sha256[:32]}"' if o.sha256 else f'"{o.bytes:x}-{o.index}"'


async def serve(request: Request, storage: Any, output: VideoOutput, *, video_id: str,
                disposition: str | None = None) -> Response:
    size = output.bytes
    headers = {
        "Cache-Control": "private, max-age=0, must-revalidate",
        "X-Content-Type-Options": "nosniff",
    }
    if disposition:
        ext = "mp4" if output.variant == "video" else output.storage_key.rsplit(".", 1)[-1]
        suffix = "" if output.index == 0 else f"-{output.index}"
        name = f"{video_id}{suffix}{'-thumbnail' if output.variant == 'thumbnail' else ''}.{ext}"
        headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
    span = ranges.negotiate(request, size, _etag(output), headers)
    if isinstance(span, Response):
        return span
    start, end, status = span.start, span.end, span.status
    info = await storage.stat(output.storage_key)
    if info is None or info.size != size:
        raise _gone(video_id, "missing" if info is None else "truncated")
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type=output.mime_type)
    chunks = storage.open_range(output.storage_key, start, end)
    try:
        first = await chunks.__anext__()  # opens the blob now: a DELETE after this cannot cut the body
    except (BlobNotFound, InvalidRange, StopAsyncIteration):
        raise _gone(video_id, "missing") from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=output.mime_type)


def _gone(video_id: str, why: str) -> APIError:
    return APIError(410, f"The content of video '{video_id}' is no longer available ({why} in storage).",
                    param="video_id", code="video_content_unavailable", type="invalid_request_error")

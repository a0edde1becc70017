"""Serving stored video bytes: ETag, Range (206/416), conditional requests, dispositions.

Invariant: no status line or ``Content-Length`` is sent before the blob is known to be there in
full. The blob is stat-ed (a missing or truncated blob is 410 ``video_content_unavailable``) and
the first chunk is read before the response starts, so a download racing a ``DELETE`` either gets
the bytes (an open file stays readable) or a clean error, never a connection aborted mid-body.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aistats_gateway.http.errors import APIError, error_response
from aistats_gateway.storage.base import BlobNotFound, InvalidRange
from aistats_gateway.videos.tables import VideoOutput

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _etag(o: VideoOutput) -> str:
    return f'"{o.sha256[:32]}"' if o.sha256 else f'"{o.bytes:x}-{o.index}"'


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive; None when the header should be ignored; "unsatisfiable" for 416."""
    m = _RANGE.match(header.strip().replace(" ", ""))
    if not m or (not m[1] and not m[2]):
        return None  # malformed or multi-range: serve the whole file (allowed by RFC 9110)
    if not m[1]:
        length = int(m[2])
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if start >= size or (m[2] and end < start):
        return "unsatisfiable"
    return start, min(end, size - 1)


async def serve(request: Request, storage: Any, output: VideoOutput, *, video_id: str,
                disposition: str | None = None) -> Response:
    size = output.bytes
    etag = _etag(output)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",
        "X-Content-Type-Options": "nosniff",
    }
    if disposition:
        ext = "mp4" if output.variant == "video" else output.storage_key.rsplit(".", 1)[-1]
        suffix = "" if output.index == 0 else f"-{output.index}"
        name = f"{video_id}{suffix}{'-thumbnail' if output.variant == 'thumbnail' else ''}.{ext}"
        headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)
    rng = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if rng and if_range and if_range.strip() != etag:
        rng = None
    start, end, status = 0, size - 1, 200
    if rng and size > 0:
        parsed = parse_range(rng, size)
        if parsed == "unsatisfiable":
            resp = error_response(416, f"Range {rng!r} is not satisfiable; the file has {size} bytes.",
                                  param="Range", code="range_not_satisfiable", type="invalid_request_error")
            resp.headers["Content-Range"] = f"bytes */{size}"
            return resp
        if isinstance(parsed, tuple):
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
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

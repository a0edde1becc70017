"""Serving a stored file's bytes: streamed from the blob store, with ETag, Range (206/416), HEAD
(negotiated by :mod:`aistats_gateway.http.ranges`).

The bytes are always sent as ``application/octet-stream`` with ``Content-Disposition: attachment``
and ``nosniff``, whatever was uploaded, so a file can never be rendered as a page of this origin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aistats_gateway.files import service
from aistats_gateway.files.service import FilesContext
from aistats_gateway.files.tables import StoredFile
from aistats_gateway.http import ranges

MEDIA_TYPE = "application/octet-stream"


def etag(row: StoredFile) -> str:
    return f'"{row.sha256[:32]}"' if row.sha256 else f'"{row.id}-{row.bytes:x}"'


def _disposition(filename: str) -> str:
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in filename) or "file"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def serve(request: Request, ctx: FilesContext, row: StoredFile) -> Response:
    size = row.bytes
    headers = {
        "Cache-Control": "private, max-age=0, must-revalidate",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": _disposition(row.filename),
    }
    span = ranges.negotiate(request, size, etag(row), headers)
    if isinstance(span, Response):
        return span
    start, end, status = span.start, span.end, span.status
    await service.check_content(ctx, row)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=MEDIA_TYPE)

    async def body() -> AsyncIterator[bytes]:
        if size == 0:
            return
        async for chunk in service.open_content(ctx, row, start, end):
            yield chunk

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=MEDIA_TYPE)

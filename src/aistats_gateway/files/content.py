"""Serving a stored file's bytes: streamed from the blob store, with ETag, Range (206/416), HEAD.

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
from aistats_gateway.http.errors import error_response
from aistats_gateway.videos.content import parse_range

MEDIA_TYPE = "application/octet-stream"


def etag(row: StoredFile) -> str:
    return f'"{row.sha256[:32]}"' if row.sha256 else f'"{row.id}-{row.bytes:x}"'


def _disposition(filename: str) -> str:
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in filename) or "file"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def serve(request: Request, ctx: FilesContext, row: StoredFile) -> Response:
    size = row.bytes
    tag = etag(row)
    headers = {
        "ETag": tag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": _disposition(row.filename),
    }
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or tag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)
    rng = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if rng and if_range and if_range.strip() != tag:
        rng = None
    start, end, status = 0, size - 1, 200
    if rng:
        parsed = parse_range(rng, size) if size > 0 else "unsatisfiable"
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
    await service.check_content(ctx, row)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=MEDIA_TYPE)

    async def body() -> AsyncIterator[bytes]:
        if size == 0:
            return
        async for chunk in service.open_content(ctx, row, start, end):
            yield chunk

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=MEDIA_TYPE)

"""The ``/v1/files`` routes (also under ``/v1/batches/files`` and ``/v1/batch/files``). Thin:
parsing and shaping here, the upload in ``upload``, the rest in ``service``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from aistats_gateway.auth.dependencies import Principal, require_key
from aistats_gateway.files import content, service, upload
from aistats_gateway.files.schemas import (
    FileDeleted,
    FileList,
    FileObject,
    FilePurpose,
    FileUpload,
)
from aistats_gateway.http.responses import ERRORS, NOT_FOUND, JSONBytes, _err

PREFIX = "/v1/files"
ALIASES = ("/v1/batches/files", "/v1/batch/files")
# The upload routes enforce their own body limit (AISTATS_FILES_MAX_BYTES), not the global one.
UPLOAD_PATHS = frozenset((PREFIX, *ALIASES))

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": FileUpload.model_json_schema(by_alias=True)}},
    }
}


Caller = Annotated[Principal, Depends(require_key)]


def _ctx(request: Request) -> service.FilesContext:
    return service.context(request.app.state.gateway)


def build_router(prefix: str, *, include_in_schema: bool) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["Files"], responses=ERRORS, include_in_schema=include_in_schema)

    @router.post("", response_model=FileObject, summary="Upload a file", openapi_extra=_UPLOAD_BODY,
                 responses={413: _err("The file is larger than AISTATS_FILES_MAX_BYTES"),
                            415: _err("Not multipart/form-data")})
    async def create_file(request: Request, principal: Caller) -> Response:
        row = await upload.receive(_ctx(request), request, principal.workspace_id, principal.key_id)
        return JSONBytes(service.render(row))

    @router.get("", response_model=FileList, summary="List your files")
    async def list_files(
        request: Request,
        principal: Caller,
        limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
        after: Annotated[str | None, Query(max_length=100, description="A file id: page after it")] = None,
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        purpose: Annotated[FilePurpose | None, Query()] = None,
    ) -> Response:
        rows, has_more = await service.list_files(_ctx(request), principal.workspace_id, limit=limit, after=after,
                                                  order=order, purpose=purpose)
        data = [service.render(r) for r in rows]
        return JSONBytes({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None, "has_more": has_more})

    @router.get("/{file_id}", response_model=FileObject, responses=NOT_FOUND, summary="Retrieve a file")
    async def retrieve_file(file_id: str, request: Request, principal: Caller) -> Response:
        return JSONBytes(service.render(await service.get_owned(_ctx(request), principal.workspace_id, file_id)))

    @router.head("/{file_id}/content", include_in_schema=False)
    @router.get("/{file_id}/content", summary="Download a file's content", response_class=Response,
                responses={**NOT_FOUND, 416: _err("Range not satisfiable"),
                           200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
                           206: {"content": {"application/octet-stream": {}}, "description": "Partial content"},
                           304: {"description": "Not modified"}})
    async def file_content(file_id: str, request: Request, principal: Caller) -> Response:
        ctx = _ctx(request)
        row = await service.get_owned(ctx, principal.workspace_id, file_id)
        return await content.serve(request, ctx, row)

    @router.delete("/{file_id}", response_model=FileDeleted, responses=NOT_FOUND, summary="Delete a file")
    async def delete_file(file_id: str, request: Request, principal: Caller) -> Response:
        await service.delete_owned(_ctx(request), principal.workspace_id, file_id)
        return JSONBytes({"id": file_id, "object": "file", "deleted": True})

    return router


def _routers() -> list[APIRouter]:
    return [build_router(PREFIX, include_in_schema=True),
            *(build_router(a, include_in_schema=False) for a in ALIASES)]


router = APIRouter()
for _r in _routers():
    router.include_router(_r)

__all__ = ["ALIASES", "UPLOAD_PATHS", "router"]

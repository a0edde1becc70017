"""The ``/v1/videos`` routes. Thin: parsing and shaping here, logic in ``service``."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from aistats_gateway.auth.dependencies import Principal, bearer, require_key
from aistats_gateway.http import asyncjobs, limits
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.http.responses import CONFLICT, ERRORS, NOT_FOUND, JSONBytes, _err
from aistats_gateway.idempotency import service as idempotency
from aistats_gateway.videos import cache, content, parsing, present, service, signing, validation
from aistats_gateway.videos.schemas import (
    DownloadURL,
    DownloadURLRequest,
    VideoCreateRequest,
    VideoDeleted,
    VideoList,
    VideoObject,
)

router = APIRouter(prefix="/v1/videos", tags=["Videos"], responses=ERRORS)

_CREATE_BODY = {
    "parameters": [{
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Retry safely: the same key and body within 24 h return the first answer (the same job, "
        "no second charge); the same key with another body is 409 idempotency_key_reused.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/VideoCreateRequest"}},
            "multipart/form-data": {"schema": {
                "type": "object",
                "description": "The same fields as the JSON body, as the openai SDK sends them: numbers and "
                "booleans as strings, nested fields as bracketed keys (input_reference[image_url]), "
                "and an image file as input_reference.",
                "required": ["model", "prompt"],
                "properties": {"model": {"type": "string"}, "prompt": {"type": "string"},
                               "seconds": {"type": "string"}, "size": {"type": "string"},
                               "input_reference": {"type": "string", "format": "binary"}},
                "additionalProperties": True,
            }},
        },
    }
}


def _ctx(request: Request) -> Any:
    return request.app.state.gateway


def _caller(p: Principal) -> service.Caller:
    return service.Caller(p.key_id, p.workspace_id)


def _base_url(request: Request) -> str:
    configured = _ctx(request).settings.public_base_url
    return configured or str(request.base_url).rstrip("/")


def _video(request: Request, job: Any, outputs: list[Any],
           deliveries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return present.render(job, outputs, base_url=_base_url(request), secret=_ctx(request).settings.signing_key,
                          deliveries=deliveries)


_TERMINAL_POLL = {"openai-poll-after-ms": "1000"}  # what _poll_headers gives a finished job


def _poll_headers(job: Any) -> dict[str, str]:
    return {"openai-poll-after-ms": str(max(present.poll_after_seconds(job), 1) * 1000)}


@router.post("", status_code=202, response_model=VideoObject, summary="Create video",
             openapi_extra=_CREATE_BODY, responses={
                 409: _err("Idempotency-Key reused with another body, or still in use"),
                 415: _err("Unsupported content type"),
                 429: _err("Every provider is rate limiting, or too many jobs in flight for this key"),
                 502: _err("Providers failed"), 503: _err("No provider could take the job, or the disk is full")})
async def create_video(request: Request, principal: Principal = Depends(require_key)) -> Response:
    gw = _ctx(request)
    idempotency.key_from(request)  # a malformed header is a 400 before any work
    data, upload = await parsing.read_body(request)
    snap = await gw.catalogue.get()
    req = service.parse_request(validation.fold_aliases(snap, data))
    data_urls: list[memoryview] = getattr(request.state, "data_urls", None) or []
    fp = await idempotency.fingerprint(data, upload.data if upload else None,
                                       f"{upload.filename}|{upload.content_type}" if upload else "",
                                       data_urls) if idempotency.key_from(request) else ""

    async def handler(claim: idempotency.Claim | None) -> Response:
        job, secret = await service.create(gw.runner, gw.fetch_client, snap, _caller(principal), req, upload,
                                           gw.fetch_policy, lambda job_id: gw.jobs.wake("videos", job_id),
                                           request_id=getattr(request.state, "request_id", None),
                                           webhook_cfg=gw.webhooks, hooks=gw.hooks, settings=gw.settings,
                                           on_insert=claim.attach if claim is not None else None,
                                           data_urls=data_urls)
        body = _video(request, job, [])
        if secret and body.get("webhook") is not None:
            body["webhook"]["secret"] = secret  # generated by the gateway: shown once, here
        return JSONBytes(body, status_code=202, headers=_poll_headers(job))

    async def recover(job_id: str) -> Response:  # the first attempt died after storing the job
        job, outputs = await service.get_owned(gw.runner, _caller(principal), job_id)
        return JSONBytes(_video(request, job, outputs), status_code=202, headers=_poll_headers(job))

    return await idempotency.run(request, gw.sessions, scope=f"{principal.key_id} POST /v1/videos", fp=fp,
                                 ttl=gw.settings.idempotency_ttl_seconds, handler=handler, recover=recover)


@router.get("", response_model=VideoList, summary="List your videos")
async def list_videos(
    request: Request,
    principal: Principal = Depends(require_key),
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=100, description="A video id: page after it")] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    status: Annotated[list[str] | None, Query(description="Repeat or comma-separate; pending and processing "
                                              "are accepted as aliases")] = None,
) -> Response:
    statuses = service.parse_statuses([p for v in status or [] for p in v.split(",") if p.strip()])
    rows, outputs, has_more = await service.list_jobs(_ctx(request).runner, _caller(principal), limit=limit,
                                                      after=after, order=order, statuses=statuses)
    data = [_video(request, r, outputs.get(r.id, [])) for r in rows]
    return JSONBytes({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None, "has_more": has_more})


@router.get("/{video_id}", response_model=VideoObject, responses=NOT_FOUND, summary="Retrieve a video")
async def get_video(video_id: str, request: Request, principal: Principal = Depends(require_key)) -> Response:
    gw = _ctx(request)
    rendered: cache.RenderedJobs | None = getattr(gw, "rendered_jobs", None)
    found = await service.stamp_of(gw.reader, video_id) if rendered is not None else None
    base = _base_url(request)
    if rendered is not None and found is not None and found[0].workspace_id == principal.workspace_id \
            and rendered.cacheable(*found):
        body = rendered.get(video_id, found[0], base)
        if body is not None:
            return JSONBytes(body, headers=_TERMINAL_POLL)
    second = int(time.time())
    job, outputs = await service.get_owned(gw.runner, _caller(principal), video_id)
    deliveries = await service.webhook_deliveries(gw.runner, job) if job.webhook else None
    video = present.render(job, outputs, base_url=base, secret=gw.settings.signing_key, now=second,
                           deliveries=deliveries)
    data = orjson.dumps(video)
    if rendered is not None and found is not None and rendered.cacheable(*found) and found[0].status == job.status:
        rendered.put(video_id, found[0], base, second, data)
    return JSONBytes(data, headers=_poll_headers(job))


@router.head("/{video_id}/content", include_in_schema=False)  # same headers, no body (HEAD is implied by GET)
@router.get(
    "/{video_id}/content",
    summary="Download video content",
    description="Authenticated with the API key, or with a signed link from POST /download_url (no key).",
    responses={**NOT_FOUND, **CONFLICT, 403: _err("Signed link tampered, expired or for another output"),
               416: _err("Range not satisfiable"),
               200: {"content": {"video/mp4": {}, "image/webp": {}, "image/jpeg": {}}, "description": "Bytes"},
               206: {"content": {"video/mp4": {}}, "description": "Partial content"},
               304: {"description": "Not modified"}},
    response_class=Response,
)
async def video_content(
    video_id: str,
    request: Request,
    index: Annotated[int, Query(ge=0, le=3)] = 0,
    variant: Annotated[Literal["video", "thumbnail"], Query()] = "video",
    expires: Annotated[int | None, Query()] = None,
    sig: Annotated[str | None, Query(max_length=128)] = None,
    disposition: Annotated[Literal["inline", "attachment"] | None, Query()] = None,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Response:
    gw = _ctx(request)
    if sig is not None or expires is not None:
        why = signing.verify(gw.settings.signing_key, video_id, index, variant, disposition or "attachment",
                             expires or 0, sig or "")
        if why is not None:
            raise APIError(403, "This download link has expired." if why == "expired" else
                           "This download link is not valid.", code=f"download_link_{why}")
        found = await service.get_for_download(gw.runner, video_id)
        if found is None:
            raise APIError(404, f"No video found with id '{video_id}'.", param="video_id", code="video_not_found")
        job, outputs = found
        disposition = disposition or "attachment"
    else:
        principal = await require_key(request, credentials)
        job, outputs = await service.get_owned(gw.runner, _caller(principal), video_id)
    if job.status in ("failed", "expired", "cancelled"):
        raise APIError(409, f"The video {job.status}: {job.error_message or job.error_code or 'no output'}.",
                       param="video_id", code=f"video_{job.status}")
    if job.status != "completed":
        raise APIError(409, f"The video is not ready yet (status {job.status}); poll GET /v1/videos/{video_id}.",
                       param="video_id", code="video_not_ready")
    out = next((o for o in outputs if o.index == index and o.variant == variant), None)
    if out is None:
        raise APIError(404, f"The video has no output {index} ({variant}).", param="index", code="output_not_found")
    return await content.serve(request, gw.storage, out, video_id=video_id, disposition=disposition)


async def _optional_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = await limits.loads_json(raw)
    if not isinstance(data, dict):
        raise bad_request("The JSON body must be an object.", None, "invalid_json")
    return data


@router.post("/{video_id}/download_url", response_model=DownloadURL, summary="Create a signed download link",
             responses={**NOT_FOUND, **CONFLICT},
             openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/DownloadURLRequest"}}}}})
async def create_download_url(video_id: str, request: Request,
                              principal: Principal = Depends(require_key)) -> Response:
    data = await _optional_json(request)
    body = service.parse_model(DownloadURLRequest, data)
    gw = _ctx(request)
    job, outputs = await service.get_owned(gw.runner, _caller(principal), video_id)
    if job.status != "completed":
        raise APIError(409, f"A download link needs a completed video (status {job.status}).", param="video_id",
                       code="video_not_ready")
    if not any(o.index == body.index and o.variant == "video" for o in outputs):
        raise bad_request(f"The video has no output {body.index}.", "index", "output_not_found")
    link = signing.sign(gw.settings.signing_key, _base_url(request), video_id, index=body.index,
                        disposition=body.disposition, ttl_seconds=body.ttl_seconds)
    return JSONBytes({"download_url": link.url, "expires_at": link.expires_at})


@router.post("/{video_id}/cancel", response_model=VideoObject, summary="Cancel a video job",
             responses={**NOT_FOUND, **CONFLICT})
async def cancel_video(video_id: str, request: Request, principal: Principal = Depends(require_key)) -> Response:
    await request.body()  # an empty body with Content-Type: application/json is fine
    job = await service.cancel(_ctx(request).runner, _caller(principal), video_id)
    return JSONBytes(_video(request, job, []))


@router.delete("/{video_id}", response_model=VideoDeleted, summary="Delete a finished video",
               responses={**NOT_FOUND, **CONFLICT})
async def delete_video(video_id: str, request: Request, principal: Principal = Depends(require_key)) -> Response:
    await request.body()
    await service.remove(_ctx(request).runner, _caller(principal), video_id)
    asyncjobs.NOTIFIER.poke("video", video_id)  # websockets watching it send job.deleted now
    return JSONBytes({"id": video_id, "object": "video.deleted", "deleted": True})


# Make the request schema part of components even though the body is parsed by hand.
__all__ = ["VideoCreateRequest", "router"]

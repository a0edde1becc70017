"""The ``/v1/images/*`` and ``/v1/audio/*`` routes. Thin: body reading here, the calls in ``images``/``audio``.

Invariants: every route needs an API key except the signed content link; multipart uploads are
streamed to temp files (``forms``) and removed when the call ends; an image-edit input must decode as
an image (400 ``image``) before anything is held.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from aistats_gateway.auth.dependencies import Principal, require_key
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.http.responses import ERRORS, NOT_FOUND, JSONBytes, _err
from aistats_gateway.media import procedural
from aistats_gateway.media_api import audio, calls, forms, images, links
from aistats_gateway.providers.base import ImageInput

CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS, 402: _err("Not enough credits for the hold (nothing was sent upstream)"),
    429: _err("Rate limited (this key's requests per minute)"),
    502: _err("Every provider failed (the error names the attempts)"),
    503: _err("Every provider is unavailable or rate limited"),
}
router = APIRouter(tags=["Images and audio"], responses=CALL_ERRORS)


def _body(required: list[str], props: dict[str, Any], *, multipart: bool = False) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": props, "additionalProperties": True}
    kind = "multipart/form-data" if multipart else "application/json"
    return {"requestBody": {"required": True, "content": {kind: {"schema": schema}}}}


_S, _I, _N, _B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_FILE = {"type": "string", "format": "binary"}
_IMAGE_FIELDS = {"model": _S, "prompt": _S, "n": _I, "size": _S, "quality": _S, "background": _S,
                 "output_format": _S, "output_compression": _I, "response_format": _S, "style": _S, "user": _S,
                 "stream": _B, "partial_images": _I, "seed": _I}
_IMAGE_OK: dict[int | str, dict[str, Any]] = {200: {
    "description": "The images (JSON), or Server-Sent Events with stream=true",
    "content": {"application/json": {}, "text/event-stream": {}}}}
_STT = _body(["file", "model"], {"file": _FILE, "model": _S, "language": _S, "prompt": _S, "response_format": _S,
                                 "temperature": _N, "timestamp_granularities[]": {"type": "array", "items": _S}},
             multipart=True)
_STT_OK: dict[int | str, dict[str, Any]] = {200: {"description": "The text: JSON, or plain text for text/srt/vtt",
                 "content": {"application/json": {}, "text/plain": {}}}}
MAX_AUDIO_BYTES = 25 * 1024 * 1024
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MULTIPART = 64 * 1024 * 1024
_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"GIF8": "image/gif"}


def _gw(request: Request) -> Any:
    return request.app.state.gateway


def _caller(p: Principal) -> calls.Caller:
    return calls.Caller(p.key_id, p.workspace_id)


def _base_url(request: Request) -> str:
    return _gw(request).settings.public_base_url or str(request.base_url).rstrip("/")


def _scratch(request: Request) -> Path:
    return Path(_gw(request).settings.data_dir) / "scratch" / "media"


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("We could not parse the JSON body of your request.", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The JSON body must be an object.", None, "invalid_json")
    return data


async def _image_input(data: bytes, role: str, param: str) -> ImageInput:
    try:
        await asyncio.to_thread(procedural.image_size, data)
    except ValueError:
        raise bad_request(f"'{param}' is not a readable image (PNG, JPEG or WebP).", param, "invalid_image") from None
    mime = next((m for magic, m in _MIME.items() if data.startswith(magic)), "image/png")
    return ImageInput(role=role, content=data, mime_type=mime)


def _data_url(v: Any, param: str) -> bytes:
    if not isinstance(v, str):
        if isinstance(v, dict) and isinstance(v.get("image_url"), str):
            v = v["image_url"]
        else:
            raise bad_request(f"'{param}' must be a base64 data URL.", param, "invalid_type")
    b64 = v.split(",", 1)[1] if v.startswith("data:") and "," in v else v
    if v.startswith(("http://", "https://")):
        raise bad_request(f"'{param}' as a URL is not supported here; upload the file (multipart) or send a "
                          "base64 data URL.", param, "unsupported_value")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"'{param}' is not valid base64.", param, "invalid_value") from None


@router.post("/v1/images/generations", summary="Create images", response_model=None, responses=_IMAGE_OK,
             openapi_extra=_body(["prompt"], _IMAGE_FIELDS))
async def generate_images(request: Request, principal: Principal = Depends(require_key)) -> Response:
    call = images.parse(await _json(request))
    if call.stream:
        return await images.stream(_gw(request), _caller(principal), call, base_url=_base_url(request))
    return JSONBytes(await images.execute(_gw(request), _caller(principal), call, base_url=_base_url(request)))


@router.post("/v1/images/edits", summary="Edit images", response_model=None, responses=_IMAGE_OK,
             openapi_extra=_body(["image", "prompt"], {**_IMAGE_FIELDS, "image": _FILE, "mask": _FILE,
                                                       "input_fidelity": _S}, multipart=True))
async def edit_images(request: Request, principal: Principal = Depends(require_key)) -> Response:
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await _json(request)
        raw = body.get("image") if body.get("image") is not None else body.get("images")
        items = raw if isinstance(raw, list) else [raw] if raw is not None else []
        srcs = [await _image_input(_data_url(v, "image"), "source", "image") for v in items]
        mask = await _image_input(_data_url(body["mask"], "mask"), "mask", "mask") if body.get("mask") else None
    else:
        form = await forms.read(request, _scratch(request), max_file_bytes=MAX_IMAGE_BYTES,
                                max_body_bytes=MAX_MULTIPART)
        try:
            body = dict(form.fields)
            srcs = [await _image_input(await asyncio.to_thread(f.path.read_bytes), "source", "image")
                    for f in form.files_named("image")]
            masks = form.files_named("mask")
            mask = (await _image_input(await asyncio.to_thread(masks[0].path.read_bytes), "mask", "mask")
                    if masks else None)
            body["provider"] = _maybe_json(body.get("provider"))
        finally:
            form.cleanup()
    if not srcs:
        raise bad_request("'image' is required: one or more images to edit.", "image", "missing_required_parameter")
    if len(srcs) > 16:
        raise bad_request(f"At most 16 images can be edited at once (got {len(srcs)}).", "image")
    call = images.parse(body, images=srcs, mask=mask, default_model="openai/gpt-image-1.5")
    if call.stream:
        return await images.stream(_gw(request), _caller(principal), call, base_url=_base_url(request))
    return JSONBytes(await images.execute(_gw(request), _caller(principal), call, base_url=_base_url(request)))


def _maybe_json(v: str | None) -> Any:
    if v and v.strip().startswith("{"):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            raise bad_request("'provider' must be a JSON object.", "provider") from None
    return v or None


@router.get("/v1/images/content/{gen_id}/{index}", summary="An image output (signed link)",
            response_class=Response, responses={200: {"content": {"image/png": {}, "image/jpeg": {},
                                                                   "image/webp": {}}},
                                                403: _err("Link tampered or expired"), **NOT_FOUND})
async def image_content(gen_id: str, index: int, request: Request, expires: int = 0, sig: str = "") -> Response:
    gw = _gw(request)
    why = links.verify(gw.settings.signing_key, gen_id, index, expires, sig)
    if why is not None:
        raise APIError(403, "This image link has expired." if why == "expired" else "This image link is not valid.",
                       code=f"download_link_{why}")
    for mime in links.EXT:
        key = links.key(gen_id, index, mime)
        info = await gw.storage.stat(key)
        if info is not None:
            return StreamingResponse(gw.storage.open_range(key), media_type=info.content_type,
                                     headers={"Content-Length": str(info.size), "ETag": info.etag,
                                              "Cache-Control": "private, max-age=3600"})
    raise APIError(404, f"No image {index} for '{gen_id}'.", param="index", code="output_not_found")


@router.post("/v1/audio/speech", summary="Create speech", response_class=Response,
             responses={200: {"content": {"audio/mpeg": {}, "audio/wav": {}, "audio/flac": {}, "audio/aac": {},
                                          "audio/ogg": {}, "audio/pcm": {}, "text/event-stream": {}}}},
             openapi_extra=_body(["model", "input", "voice"], {
                 "model": _S, "input": _S, "voice": _S, "response_format": _S, "speed": _N, "instructions": _S,
                 "stream_format": _S}))
async def create_speech(request: Request, principal: Principal = Depends(require_key)) -> Response:
    call = audio.parse_speech(await _json(request))
    stream = await audio.open_speech(_gw(request), _caller(principal), call)
    return audio.speech_response(stream, call)


async def _stt(request: Request, principal: Principal, task: str) -> Response:
    form = await forms.read(request, _scratch(request), max_file_bytes=MAX_AUDIO_BYTES,
                            max_body_bytes=MAX_AUDIO_BYTES + 1024 * 1024)
    try:
        files = form.files_named("file")
        if not files:
            raise bad_request("'file' is required: the audio to transcribe.", "file", "missing_required_parameter")
        f = files[0]
        call = audio.parse_transcription(form.fields, form.all("timestamp_granularities"), path=f.path,
                                         filename=f.filename, mime=f.content_type, task=task)
        return await audio.execute_transcription(_gw(request), _caller(principal), call)
    finally:
        form.cleanup()


@router.post("/v1/audio/transcriptions", summary="Transcribe audio", response_model=None, responses=_STT_OK,
             openapi_extra=_STT)
async def create_transcription(request: Request, principal: Principal = Depends(require_key)) -> Response:
    return await _stt(request, principal, "transcribe")


@router.post("/v1/audio/translations", summary="Translate audio into English", response_model=None,
             responses=_STT_OK, openapi_extra=_STT)
async def create_translation(request: Request, principal: Principal = Depends(require_key)) -> Response:
    return await _stt(request, principal, "translate")

"""Receiving ``POST /v1/files``: a multipart body streamed into the blob store.

Invariants:

* Bounded memory: the ``file`` part goes to the blob store in chunks of about 256 KiB as it
  arrives (counted, hashed by the store, fed to the JSONL validator); small fields are capped.
* The size limit is the ``file`` part's bytes (``AISTATS_FILES_MAX_BYTES``): above it the upload
  stops at once with 413 ``param: "file"``; a Content-Length that cannot fit is refused before any
  byte is stored. After any error the rest of the body is read and dropped (up to the limit, at
  least 16 MiB) so that clients which send everything before reading get the answer; a body
  declared larger than that is not read at all.
* Nothing is left behind: a failed, refused or disconnected upload aborts the blob write and
  deletes its ``uploading`` row (a crash leaves a row the sweep removes).
* ``purpose=batch`` files are validated line by line while they stream in (or, when ``purpose``
  comes after ``file`` in the form, validated speculatively and judged once the purpose is known);
  an invalid file is a 400 naming the line, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect, Request

from aistats_gateway.files import service
from aistats_gateway.files.jsonl import BatchFileError, BatchFileStats, JsonlValidator
from aistats_gateway.files.multipart import (
    BodyTooLarge,
    Data,
    FormStream,
    MalformedForm,
    PartEnd,
    PartStart,
    boundary_of,
)
from aistats_gateway.files.service import FilesContext
from aistats_gateway.files.tables import StoredFile
from aistats_gateway.http.errors import APIError, bad_request

log = logging.getLogger("aistats_gateway.files")
CHUNK = 256 * 1024
MAX_FIELD_BYTES = 4096
MAX_FILENAME_CHARS = 512
FORM_OVERHEAD = 1024 * 1024  # room for boundaries, part headers and the small fields
DRAIN_MIN_BYTES = 16 * 1024 * 1024  # after an error, read and drop at least this much of the rest
FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")


@dataclass
class _Upload:
    ctx: FilesContext
    workspace_id: str
    key_id: str
    form: FormStream
    fields: dict[str, str] = field(default_factory=dict)
    row: StoredFile | None = None
    size: int = 0
    sha256: str | None = None
    validator: JsonlValidator | None = None
    batch_error: BatchFileError | None = None
    stats: BatchFileStats | None = None


def too_large(limit: int) -> APIError:
    return APIError(413, f"The file is larger than the limit of {limit} bytes.", param="file",
                    code="file_too_large")


async def receive(ctx: FilesContext, request: Request, workspace_id: str, key_id: str) -> StoredFile:
    """Parse, store and validate an upload; return the ``processed`` row."""
    ctype = request.headers.get("content-type", "")
    try:
        boundary = boundary_of(ctype)
    except MalformedForm as e:
        raise bad_request(str(e), None, "invalid_body") from None
    if boundary is None:
        raise APIError(415, "Upload files as multipart/form-data with the fields 'file' and 'purpose'.",
                       code="unsupported_media_type")
    header = request.headers.get("content-length")
    length = int(header) if header and header.isdigit() else None
    form = FormStream(request.stream(), boundary, max_body_bytes=ctx.max_bytes + FORM_OVERHEAD)
    up = _Upload(ctx, workspace_id, key_id, form)
    try:
        try:
            if length is not None and length > ctx.max_bytes + FORM_OVERHEAD:
                raise too_large(ctx.max_bytes)
            return await _receive(up)
        except BodyTooLarge:
            raise too_large(ctx.max_bytes) from None
        except ClientDisconnect:
            raise APIError(400, "The client disconnected before the upload finished.", param="file",
                           code="upload_incomplete") from None
    except BaseException as exc:
        if up.row is not None:
            try:
                await asyncio.shield(service.discard(ctx, up.row))
            except Exception:
                log.warning("discarding a failed upload failed", exc_info=True, extra={"file_id": up.row.id})
        budget = max(ctx.max_bytes + FORM_OVERHEAD, DRAIN_MIN_BYTES)
        if isinstance(exc, APIError) and (length is None or length - up.form.received <= budget):
            await up.form.drain(budget)  # so a client that sends everything before reading sees the error
        raise


async def _receive(up: _Upload) -> StoredFile:
    try:
        while (ev := await up.form.next()) is not None:
            if not isinstance(ev, PartStart):
                raise MalformedForm("Unexpected data outside a form part.")
            if ev.filename is None:
                await _field(up, ev.name)
            elif ev.name != "file":
                raise bad_request(f"Unexpected file field '{ev.name}'; send the file as 'file'.", ev.name,
                                  "unknown_parameter")
            elif up.row is not None:
                raise bad_request("Send exactly one 'file'.", "file", "invalid_value")
            else:
                await _file(up, ev.filename)
    except MalformedForm as e:
        raise bad_request(str(e), None, "invalid_body") from None
    if up.row is None:
        raise bad_request("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    purpose = _purpose(up.fields.get("purpose"))
    expires_at = _expires_at(up, purpose)
    if purpose == "batch":
        if up.batch_error is not None:
            raise _batch_error(up.batch_error)
        if up.validator is None:  # cannot happen: a validator runs unless it already failed
            raise AssertionError("batch upload without a validator")
        try:
            up.stats = up.validator.finish()
        except BatchFileError as e:
            raise _batch_error(e) from None
    return await service.finish(up.ctx, up.row, purpose=purpose, size=up.size, sha256=up.sha256,
                                expires_at=expires_at, stats=up.stats)


async def _field(up: _Upload, name: str) -> None:
    if name == "file":
        raise bad_request("'file' must be a file part (with a filename).", "file", "invalid_value")
    if name not in FIELDS:
        raise bad_request(f"Unrecognized request argument supplied: '{name}'.", name, "unknown_parameter")
    if name in up.fields:
        raise bad_request(f"'{name}' is given more than once.", name, "invalid_value")
    buf = bytearray()
    while not isinstance(ev := await up.form.next(), PartEnd):
        if not isinstance(ev, Data):
            raise MalformedForm("Malformed form part.")
        buf += ev.data
        if len(buf) > MAX_FIELD_BYTES:
            raise bad_request(f"'{name}' is too long.", name, "invalid_value")
    try:
        up.fields[name] = buf.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise bad_request(f"'{name}' is not valid UTF-8.", name, "invalid_value") from None
    if name == "purpose":
        _purpose(up.fields[name])  # refuse a wrong purpose before the file is read


def _purpose(value: str | None) -> str:
    if value is None or value == "":
        raise bad_request("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    if value not in service.UPLOAD_PURPOSES:
        raise bad_request(f"Invalid value for 'purpose': {value!r}; use one of "
                          f"{', '.join(service.UPLOAD_PURPOSES)}.", "purpose", "invalid_value")
    return value


def _expires_at(up: _Upload, purpose: str) -> dt.datetime | None:
    anchor = up.fields.get("expires_after[anchor]")
    seconds = up.fields.get("expires_after[seconds]")
    assert up.row is not None
    if anchor is None and seconds is None:
        if purpose == "batch" and up.ctx.batch_expires_seconds:
            return up.row.created_at + dt.timedelta(seconds=up.ctx.batch_expires_seconds)
        return None
    if anchor is None:
        raise bad_request("Missing required parameter: 'expires_after[anchor]'.", "expires_after.anchor",
                          "missing_required_parameter")
    if anchor != "created_at":
        raise bad_request(f"Invalid value for 'expires_after.anchor': {anchor!r}; the only anchor is "
                          "'created_at'.", "expires_after.anchor", "invalid_value")
    if seconds is None:
        raise bad_request("Missing required parameter: 'expires_after[seconds]'.", "expires_after.seconds",
                          "missing_required_parameter")
    if not seconds.isdigit() or not service.EXPIRES_MIN_SECONDS <= int(seconds) <= service.EXPIRES_MAX_SECONDS:
        raise bad_request(f"Invalid value for 'expires_after.seconds': {seconds!r}; it must be an integer between "
                          f"{service.EXPIRES_MIN_SECONDS} and {service.EXPIRES_MAX_SECONDS}.",
                          "expires_after.seconds", "invalid_value")
    return up.row.created_at + dt.timedelta(seconds=int(seconds))


def _batch_error(e: BatchFileError) -> APIError:
    return bad_request(f"Invalid batch file: {e}", "file", e.code)


async def _file(up: _Upload, filename: str) -> None:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    if len(name) > MAX_FILENAME_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise bad_request(f"The filename must be at most {MAX_FILENAME_CHARS} characters without control "
                          "characters.", "file", "invalid_filename")
    purpose = up.fields.get("purpose")
    if purpose in (None, "batch"):  # unknown yet: validate in case it turns out to be batch
        up.validator = JsonlValidator(max_lines=up.ctx.batch_max_lines, max_line_bytes=up.ctx.batch_max_line_bytes)
    up.row = await service.begin(up.ctx, up.workspace_id, up.key_id, name, purpose)
    info = await up.ctx.storage.put_stream(up.row.storage_key, _chunks(up, purpose == "batch"),
                                           content_type="application/octet-stream")
    if info.size != up.size:
        raise APIError(500, "The stored file does not have the uploaded size.", code="storage_error")
    up.sha256 = info.sha256


async def _chunks(up: _Upload, batch_known: bool) -> AsyncIterator[bytes]:
    """The ``file`` part's bytes in ~256 KiB chunks: counted, validated, the row kept fresh."""
    assert up.row is not None
    buf = bytearray()
    beat = time.monotonic()
    while True:
        ev = await up.form.next()
        if isinstance(ev, Data):
            up.size += len(ev.data)
            if up.size > up.ctx.max_bytes:
                raise too_large(up.ctx.max_bytes)
            buf += ev.data
            if len(buf) < CHUNK:
                continue
        elif not isinstance(ev, PartEnd):
            raise MalformedForm("The file part did not end.")
        if buf:
            chunk = bytes(buf)
            buf.clear()
            await _validate(up, chunk, batch_known)
            yield chunk
        if time.monotonic() - beat > service.UPLOAD_HEARTBEAT_SECONDS:
            beat = time.monotonic()
            if not await service.touch(up.ctx, up.row.id):
                raise APIError(409, "The upload stalled for too long and was discarded; upload the file again.",
                               param="file", code="upload_abandoned")
        if isinstance(ev, PartEnd):
            return


async def _validate(up: _Upload, chunk: bytes, batch_known: bool) -> None:
    if up.validator is None:
        return
    try:
        await asyncio.to_thread(up.validator.feed, chunk)
    except BatchFileError as e:
        if batch_known:
            raise _batch_error(e) from None
        up.validator, up.batch_error = None, e  # judged once the purpose is known


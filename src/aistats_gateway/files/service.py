"""The Files domain: rows, ownership, listing, deletion and the expiry sweep.

Invariants:

* A file is visible (``VISIBLE`` status, not expired) only to its workspace; any other caller, an
  unknown id, an expired or a half-written file all get the same 404.
* Every state change is a conditional UPDATE on the status it expects, so a request, the sweep and
  another process never act twice on one row.
* Bytes and rows: the row is inserted (``uploading``) before the first byte is stored, and moved to
  ``deleting`` before its blob is removed; the row is deleted only after the blob is gone. A crash
  at any point leaves a row the sweep finishes, never a blob nobody knows about.

Other domains (batches) use :func:`get_owned`, :func:`store_stream` (output and error files) and
:func:`open_content`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.db import paging
from aistats_gateway.db.base import utcnow
from aistats_gateway.files.jsonl import BatchFileStats
from aistats_gateway.files.tables import VISIBLE, StoredFile
from aistats_gateway.http.errors import APIError, bad_request

log = logging.getLogger("aistats_gateway.files")

# What clients may upload (OpenAI's purposes); what the gateway itself writes on top of them.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
GATEWAY_PURPOSES = ("batch_output", "assistants_output", "fine-tune-results")
ALL_PURPOSES = UPLOAD_PURPOSES + GATEWAY_PURPOSES
EXPIRES_MIN_SECONDS = 3600
EXPIRES_MAX_SECONDS = 30 * 24 * 3600
UPLOAD_STALE_SECONDS = 600.0  # an upload whose row was not refreshed for this long is abandoned
UPLOAD_HEARTBEAT_SECONDS = 30.0
DELETE_RETRY_SECONDS = 60.0
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class FilesContext:
    sessions: async_sessionmaker[AsyncSession]
    storage: Any  # storage.BlobStore
    max_bytes: int
    batch_max_lines: int
    batch_max_line_bytes: int
    batch_expires_seconds: int


def context(state: Any) -> FilesContext:
    s = state.settings
    return FilesContext(state.sessions, state.storage, s.files_max_bytes, s.files_batch_max_lines,
                        s.files_batch_max_line_bytes, s.files_batch_expires_seconds)


def new_id() -> str:
    return "file-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _possible_id(file_id: str) -> bool:
    return file_id.startswith("file-") and 5 < len(file_id) <= 64


def not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


def _visible(now: dt.datetime) -> Any:
    return and_(StoredFile.status.in_(VISIBLE),
                or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > now))


# -- reading ----------------------------------------------------------------------------------

async def get_owned(ctx: FilesContext, workspace_id: str, file_id: str) -> StoredFile:
    """The caller's visible file, else a 404 (unknown, another workspace's, expired, unfinished)."""
    if not _possible_id(file_id):
        raise not_found(file_id)
    async with ctx.sessions() as s:
        row = (await s.execute(select(StoredFile).where(
            StoredFile.id == file_id, StoredFile.workspace_id == workspace_id, _visible(utcnow())
        ))).scalar_one_or_none()
    if row is None:
        raise not_found(file_id)
    return row


async def list_files(ctx: FilesContext, workspace_id: str, *, limit: int, after: str | None, order: str,
                     purpose: str | None) -> tuple[list[StoredFile], bool]:
    now = utcnow()
    async with ctx.sessions() as s:
        stmt = select(StoredFile).where(StoredFile.workspace_id == workspace_id, _visible(now))
        if purpose:
            stmt = stmt.where(StoredFile.purpose == purpose)
        anchor = None
        if after:
            anchor = await s.get(StoredFile, after) if _possible_id(after) else None
            if anchor is None or anchor.workspace_id != workspace_id:
                raise bad_request(f"Unknown cursor 'after': {after!r}.", "after", "invalid_cursor")
        stmt = paging.keyset(stmt, StoredFile.created_at, StoredFile.id, anchor, "asc" if order == "asc" else "desc")
        rows = list((await s.execute(stmt.limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


def open_content(ctx: FilesContext, row: StoredFile, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """Stream the file's bytes ``start..end`` (inclusive) from the blob store."""
    return ctx.storage.open_range(row.storage_key, start, end)  # type: ignore[no-any-return]


async def check_content(ctx: FilesContext, row: StoredFile) -> None:
    """A 500 before any byte is sent when the blob is missing or not the size recorded."""
    info = await ctx.storage.stat(row.storage_key)
    if info is None or info.size != row.bytes:
        log.error("file content missing or wrong size in the blob store",
                  extra={"file_id": row.id, "key": row.storage_key, "stored": info.size if info else None,
                         "expected": row.bytes})
        raise APIError(500, "The file's content is not available.", code="file_content_unavailable")


# -- writing ----------------------------------------------------------------------------------

async def begin(ctx: FilesContext, workspace_id: str, key_id: str | None, filename: str,
                purpose: str | None) -> StoredFile:
    """Insert the ``uploading`` row that owns the bytes about to be stored."""
    file_id = new_id()
    now = utcnow()
    row = StoredFile(id=file_id, workspace_id=workspace_id, key_id=key_id, filename=filename,
                     purpose=purpose or "", status="uploading", bytes=0, storage_key=f"files/{file_id}",
                     created_at=now, updated_at=now)
    async with ctx.sessions() as s, s.begin():
        s.add(row)
    return row


async def touch(ctx: FilesContext, file_id: str) -> bool:
    """Refresh an ``uploading`` row so the sweep leaves it alone; False if it was swept."""
    async with ctx.sessions() as s, s.begin():
        res = await s.execute(update(StoredFile).where(StoredFile.id == file_id, StoredFile.status == "uploading")
                              .values(updated_at=utcnow()))
    return bool(res.rowcount)  # type: ignore[attr-defined]


async def finish(ctx: FilesContext, row: StoredFile, *, purpose: str, size: int, sha256: str | None,
                 expires_at: dt.datetime | None, stats: BatchFileStats | None) -> StoredFile:
    """``uploading`` → ``processed`` with what was stored; a 409 if the sweep took the row meanwhile."""
    values: dict[str, Any] = {"purpose": purpose, "bytes": size, "sha256": sha256, "status": "processed",
                              "expires_at": expires_at, "updated_at": utcnow()}
    if stats is not None:
        values.update(batch_lines=stats.lines, batch_endpoint=stats.endpoint, batch_models=stats.models,
                      meta={"batch": stats.as_dict()})
    async with ctx.sessions() as s, s.begin():
        res = await s.execute(update(StoredFile).where(StoredFile.id == row.id, StoredFile.status == "uploading")
                              .values(**values))
        if not res.rowcount:  # type: ignore[attr-defined]
            raise APIError(409, "The upload stalled for too long and was discarded; upload the file again.",
                           param="file", code="upload_abandoned")
        fresh = await s.get(StoredFile, row.id, populate_existing=True)
    assert fresh is not None
    return fresh


async def discard(ctx: FilesContext, row: StoredFile) -> None:
    """Forget an unfinished or failed upload: its row goes to ``deleting``, then blob and row go.

    The blob is deleted by key even when the row is already gone (swept while the bytes were still
    arriving), so a late write never outlives its row.
    """
    async with ctx.sessions() as s, s.begin():
        await s.execute(update(StoredFile).where(StoredFile.id == row.id, StoredFile.status == "uploading")
                        .values(status="deleting", updated_at=utcnow()))
    await ctx.storage.delete(row.storage_key)
    async with ctx.sessions() as s, s.begin():
        await s.execute(delete(StoredFile).where(StoredFile.id == row.id, StoredFile.status == "deleting"))


async def store_stream(ctx: FilesContext, workspace_id: str, *, filename: str, purpose: str,
                       chunks: AsyncIterator[bytes], expires_at: dt.datetime | None = None,
                       key_id: str | None = None) -> StoredFile:
    """Store a file the gateway writes itself (e.g. a batch's output), streamed; no size limit."""
    row = await begin(ctx, workspace_id, key_id, filename, purpose)
    try:
        info = await ctx.storage.put_stream(row.storage_key, chunks, content_type="application/octet-stream")
        return await finish(ctx, row, purpose=purpose, size=info.size, sha256=info.sha256, expires_at=expires_at,
                            stats=None)
    except BaseException:
        await discard(ctx, row)
        raise


async def delete_owned(ctx: FilesContext, workspace_id: str, file_id: str) -> None:
    row = await get_owned(ctx, workspace_id, file_id)
    async with ctx.sessions() as s, s.begin():
        res = await s.execute(update(StoredFile).where(StoredFile.id == row.id, StoredFile.status.in_(VISIBLE))
                              .values(status="deleting", updated_at=utcnow()))
    if not res.rowcount:  # type: ignore[attr-defined]
        raise not_found(file_id)  # deleted (or swept) by someone else meanwhile
    try:
        await _remove(ctx, row.id)
    except Exception:
        log.warning("file blob not removed yet; the sweep will retry", exc_info=True, extra={"file_id": row.id})


async def _remove(ctx: FilesContext, file_id: str) -> None:
    """Delete the blob of a ``deleting`` row, then the row."""
    async with ctx.sessions() as s:
        row = await s.get(StoredFile, file_id)
    if row is None or row.status != "deleting":
        return
    await ctx.storage.delete(row.storage_key)
    async with ctx.sessions() as s, s.begin():
        await s.execute(delete(StoredFile).where(StoredFile.id == file_id, StoredFile.status == "deleting"))


# -- the sweep --------------------------------------------------------------------------------

async def due_for_sweep(ctx: FilesContext, limit: int, now: dt.datetime | None = None) -> list[str]:
    """Expired files, abandoned uploads and deletions to retry."""
    now = now or utcnow()
    stale_upload = now - dt.timedelta(seconds=UPLOAD_STALE_SECONDS)
    retry_delete = now - dt.timedelta(seconds=DELETE_RETRY_SECONDS)
    async with ctx.sessions() as s:
        rows = await s.execute(select(StoredFile.id).where(or_(
            and_(StoredFile.status.in_(VISIBLE), StoredFile.expires_at <= now),
            and_(StoredFile.status == "uploading", StoredFile.updated_at <= stale_upload),
            and_(StoredFile.status == "deleting", StoredFile.updated_at <= retry_delete),
        )).limit(limit))
        return [r[0] for r in rows]


async def sweep_one(ctx: FilesContext, file_id: str, now: dt.datetime | None = None) -> bool:
    """Remove one expired, abandoned or half-deleted file; True if this call claimed it."""
    now = now or utcnow()
    stale_upload = now - dt.timedelta(seconds=UPLOAD_STALE_SECONDS)
    retry_delete = now - dt.timedelta(seconds=DELETE_RETRY_SECONDS)
    async with ctx.sessions() as s, s.begin():
        res = await s.execute(update(StoredFile).where(StoredFile.id == file_id, or_(
            and_(StoredFile.status.in_(VISIBLE), StoredFile.expires_at <= now),
            and_(StoredFile.status == "uploading", StoredFile.updated_at <= stale_upload),
            and_(StoredFile.status == "deleting", StoredFile.updated_at <= retry_delete),
        )).values(status="deleting", updated_at=utcnow()))
    if not res.rowcount:  # type: ignore[attr-defined]
        return False
    await _remove(ctx, file_id)
    return True


# -- presentation -----------------------------------------------------------------------------

def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def render(row: StoredFile) -> dict[str, Any]:
    """The OpenAI file object."""
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": _ts(row.created_at),
            "filename": row.filename, "purpose": row.purpose,
            "status": row.status if row.status in VISIBLE else "uploaded",
            "status_details": row.status_details, "expires_at": _ts(row.expires_at)}

"""The Batches domain: create (rows copied, hold placed), read, list, cancel, rows and results.

Invariants:

* A batch is created in one transaction with all its rows, its hold and its ``batch.created``
  event: either everything exists or nothing does (402 before anything runs when the upper bound
  cannot be held). Rows are copied from the input file, so deleting the file later changes nothing.
* A batch is visible only to its workspace; another workspace's or an unknown id gets 404.
* ``completion_window`` is one the batch's models advertise (``windows``), else 400.
* Cancel is a conditional UPDATE ``validating | in_progress → cancelling``; the batch step
  (``runner``) then cancels the rows nobody is running and finalises.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.batches import events, execute_media, windows
from aistats_gateway.batches.schemas import BatchCreate
from aistats_gateway.batches.tables import BATCH_ACTIVE, Batch, BatchRow
from aistats_gateway.billing import service as billing
from aistats_gateway.db import paging
from aistats_gateway.db.base import utcnow
from aistats_gateway.files import service as files
from aistats_gateway.files.jsonl import (
    ENDPOINTS,
    BatchFileError,
    JsonlValidator,
    normalize_endpoint,
)
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.webhooks import service as webhooks

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
INSERT_CHUNK = 1000
STATUS_ALIASES: dict[str, tuple[str, ...]] = {
    "pending": ("validating",), "queued": ("validating",),
    "running": ("in_progress", "finalizing", "cancelling"), "processing": ("in_progress", "finalizing", "cancelling"),
    "in_progress": ("in_progress", "finalizing", "cancelling"),
}
ALL_STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
ROW_FINISHED = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Caller:
    key_id: str
    workspace_id: str


class Planner(Protocol):
    """Prices a row's upper bound (nano-USD) and picks a native provider; both raise APIError."""

    def bound(self, endpoint: str, body: dict[str, Any], routing: Any) -> int: ...

    def native(self, endpoint: str, model: str, routing: Any) -> str: ...

    def windows(self, model: str, native_provider: str | None) -> list[str]: ...


def new_id() -> str:
    return "batch_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def ref(batch_id: str) -> billing.Ref:
    return billing.Ref(events.KIND, batch_id)


def not_found(batch_id: str) -> APIError:
    return APIError(404, f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")


def _row_error(e: BatchFileError, param: str) -> APIError:
    return APIError(400, str(e), param=param, code=e.code)


async def _iter_file_rows(state: Any, caller: Caller, file_id: str, endpoint: str,
                          max_lines: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    ctx = files.context(state)
    row = await files.get_owned(ctx, caller.workspace_id, file_id)
    if row.purpose != "batch":
        raise bad_request(f"File {file_id} has purpose {row.purpose!r}; a batch needs a file uploaded with "
                          "purpose 'batch'.", "input_file_id", "invalid_file_purpose")
    if row.batch_endpoint and row.batch_endpoint != endpoint:
        raise bad_request(f"The file's requests use {row.batch_endpoint}, not the batch's endpoint {endpoint}.",
                          "endpoint", "batch_mixed_endpoints")
    v = JsonlValidator(max_lines=max_lines, max_line_bytes=ctx.batch_max_line_bytes, endpoint=endpoint)
    buf = b""
    line = 0
    first = True
    async for chunk in files.open_content(ctx, row):
        if first:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            first = False
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            line += 1
            raw = raw.rstrip(b"\r")
            if raw.strip():
                obj = orjson.loads(raw)
                v.check_row(obj, line)
                yield line, obj
    if buf.strip():
        line += 1
        obj = orjson.loads(buf.rstrip(b"\r"))
        v.check_row(obj, line)
        yield line, obj
    if v.stats.lines == 0:
        raise BatchFileError(0, "The batch file has no requests.", "batch_file_empty")


async def _iter_inline(rows: list[dict[str, Any]], endpoint: str,
                       max_lines: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    v = JsonlValidator(max_lines=max_lines, endpoint=endpoint)
    for i, obj in enumerate(rows):
        if isinstance(obj, dict):
            obj = {"method": "POST", "url": endpoint, **obj}
            if "custom_id" not in obj:
                obj["custom_id"] = f"request-{i + 1}"
        v.check_row(obj, i + 1)
        yield i + 1, obj
    if v.stats.lines == 0:
        raise BatchFileError(0, "The batch has no requests.", "batch_file_empty")


def _check_window(window: str, accepted: list[list[str]]) -> None:
    """400 naming ``completion_window`` unless every model of the batch accepts ``window``."""
    common = [w for w in (accepted[0] if accepted else []) if all(w in a for a in accepted)]
    if window not in common:
        raise bad_request(f"completion_window {window!r} is not available for this batch; use "
                          f"{' or '.join(common) or '24h'}.", "completion_window", "invalid_completion_window")


def _webhook_cfg(state: Any) -> Any:
    return state.webhooks


async def create(state: Any, caller: Caller, req: BatchCreate, plan: Planner) -> tuple[Batch, str | None]:
    """Validate, copy the rows, hold the upper bound and queue ``batch.created``; (batch, new secret)."""
    endpoint = normalize_endpoint(req.endpoint)
    if endpoint is None:
        raise bad_request(f"endpoint {req.endpoint!r} is not supported; use one of {', '.join(ENDPOINTS)}.",
                          "endpoint", "invalid_endpoint")
    window_seconds = windows.seconds(req.completion_window)
    if window_seconds is None:
        raise bad_request(f"completion_window {req.completion_window!r} is not a window; use e.g. 24h (the "
                          "windows each model accepts: GET /v1/batches/models).", "completion_window",
                          "invalid_completion_window")
    if (req.input_file_id is None) == (req.requests is None):
        raise bad_request("Give exactly one of input_file_id and requests.",
                          "input_file_id" if req.input_file_id is None else "requests",
                          "missing_batch_input" if req.input_file_id is None else "ambiguous_batch_input")
    mode = req.mode or "gateway"
    s_ = state.settings
    max_rows: int = s_.files_batch_max_lines
    in_flight: int = s_.batches_max_in_flight
    webhook: dict[str, Any] | None = None
    secret: str | None = None
    if req.webhook is not None:
        webhook, secret = await webhooks.subscription(events.KIND, req.webhook.url, req.webhook.secret,
                                                      list(req.webhook.events) if req.webhook.events else None,
                                                      _webhook_cfg(state))
    routing = req.provider if isinstance(req.provider, dict) else ({"only": [req.provider]} if req.provider else None)
    media = (execute_media.MediaPlanner(state, caller.workspace_id, endpoint, mode, routing)
             if endpoint in execute_media.ENDPOINTS else None)  # images and audio rows
    batch_id = new_id()
    now = utcnow()
    source = (_iter_file_rows(state, caller, req.input_file_id, endpoint, max_rows) if req.input_file_id
              else _iter_inline(req.requests or [], endpoint, max_rows))
    param = "input_file_id" if req.input_file_id else "requests"
    hold = 0
    total = 0
    models: set[str] = set()
    async with state.sessions() as s, s.begin():
        active = (await s.execute(select(func.count()).select_from(Batch).where(
            Batch.workspace_id == caller.workspace_id, Batch.status.in_(BATCH_ACTIVE)))).scalar_one()
        if active >= in_flight:
            raise APIError(429, f"This workspace already has {active} batches in flight (limit {in_flight}); wait "
                           "for one to finish.", code="batch_limit_reached", type="rate_limit_error")
        s.add(Batch(id=batch_id, workspace_id=caller.workspace_id, key_id=caller.key_id, status="in_progress",
                    mode=mode, endpoint=endpoint, completion_window=req.completion_window,
                    input_file_id=req.input_file_id, model=req.model, routing=routing, meta=req.metadata,
                    webhook=webhook, created_at=now, updated_at=now, in_progress_at=now,
                    expires_at=now + dt.timedelta(seconds=window_seconds), next_run_at=now))
        await s.flush()
        chunk: list[dict[str, Any]] = []
        row_status = "submitted" if mode == "native" else "queued"
        try:
            async for line, obj in source:
                body = obj["body"]
                if req.model is not None:
                    if body.get("model") not in (None, req.model):
                        raise BatchFileError(line, f"'body.model' {body['model']!r} differs from the batch's model "
                                                   f"{req.model!r}.", "batch_model_conflict")
                    body = {**body, "model": req.model}
                if not body.get("model"):
                    raise BatchFileError(line, "'body.model' is missing (or give the batch a top-level model).")
                models.add(body["model"])
                try:
                    hold += await media.bound(body) if media is not None else plan.bound(endpoint, body, routing)
                except APIError as e:
                    raise APIError(e.status, f"Line {line}: {e.message}", param=param, code=e.code) from None
                total += 1
                chunk.append({"id": f"{batch_id}:{line}", "batch_id": batch_id, "workspace_id": caller.workspace_id,
                              "line": line, "custom_id": obj["custom_id"], "body": orjson.dumps(body),
                              "status": row_status, "attempts": 0, "cost_nanos": 0, "created_at": now,
                              "updated_at": now, "next_run_at": now})
                if len(chunk) >= INSERT_CHUNK:
                    await s.execute(insert(BatchRow), chunk)
                    chunk = []
        except BatchFileError as e:
            raise _row_error(e, param) from None
        except orjson.JSONDecodeError as e:
            raise bad_request(f"The input file is not valid JSONL ({e}).", param, "invalid_batch_file") from None
        if chunk:
            await s.execute(insert(BatchRow), chunk)
        model = req.model or (next(iter(models)) if len(models) == 1 else None)
        native_provider = None
        if mode == "native":
            if model is None:
                raise bad_request("A native batch runs one model; its rows name several.", param,
                                  "batch_model_conflict")
            native_provider = plan.native(endpoint, model, routing)
        _check_window(req.completion_window, [plan.windows(m, native_provider) for m in sorted(models)])
        await s.execute(update(Batch).where(Batch.id == batch_id).values(total=total, hold_nanos=hold, model=model,
                                                                         provider=native_provider))
        if hold > 0:
            await billing.hold(s, ref=ref(batch_id), workspace_id=caller.workspace_id, key_id=caller.key_id,
                               amount_nanos=hold)
        fresh = await s.get(Batch, batch_id, populate_existing=True)
        assert fresh is not None
        await events.emit(s, fresh, "batch.created")
    if state.jobs is not None:
        state.jobs.wake("batch_rows", batch_id)
        state.jobs.wake("batches", batch_id)
    return await get(state, caller, batch_id), secret


async def get(state: Any, caller: Caller, batch_id: str) -> Batch:
    async with state.sessions() as s:
        row: Batch | None = (await s.get(Batch, batch_id)
                             if batch_id.startswith("batch_") and len(batch_id) <= 64 else None)
    if row is None or row.workspace_id != caller.workspace_id:
        raise not_found(batch_id)
    return row


def statuses_for(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    out: list[str] = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if part in STATUS_ALIASES:
            out.extend(STATUS_ALIASES[part])
        elif part in ALL_STATUSES:
            out.append(part)
        elif part == "canceled":
            out.append("cancelled")
        else:
            raise bad_request(f"Unknown status {part!r}; use one of {', '.join(ALL_STATUSES)} (or pending, running).",
                              "status")
    return tuple(dict.fromkeys(out))


async def list_batches(state: Any, caller: Caller, *, limit: int, after: str | None,
                       statuses: tuple[str, ...] | None) -> tuple[list[Batch], bool]:
    async with state.sessions() as s:
        stmt = select(Batch).where(Batch.workspace_id == caller.workspace_id)
        if statuses:
            stmt = stmt.where(Batch.status.in_(statuses))
        anchor = None
        if after:
            anchor = await s.get(Batch, after) if after.startswith("batch_") else None
            if anchor is None or anchor.workspace_id != caller.workspace_id:
                raise bad_request(f"Unknown cursor 'after': {after!r}.", "after", "invalid_cursor")
        stmt = paging.keyset(stmt, Batch.created_at, Batch.id, anchor).limit(limit + 1)
        rows = list((await s.execute(stmt)).scalars())
    return rows[:limit], len(rows) > limit


async def cancel(state: Any, caller: Caller, batch_id: str) -> Batch:
    row = await get(state, caller, batch_id)
    if row.status in ("cancelling", "cancelled"):
        return row
    now = utcnow()
    async with state.sessions() as s, s.begin():
        res = await s.execute(update(Batch).where(Batch.id == batch_id, Batch.status.in_(("validating", "in_progress")))
                              .values(status="cancelling", cancelling_at=now, updated_at=now, next_run_at=now))
        if res.rowcount:
            fresh = await s.get(Batch, batch_id)
            assert fresh is not None
            await events.status_changed(s, fresh, row.status)
    if not res.rowcount:
        current = await get(state, caller, batch_id)
        if current.status in ("cancelling", "cancelled"):
            return current
        raise APIError(409, f"Cannot cancel a batch that is {current.status}.", param="batch_id",
                       code="batch_not_cancellable")
    if state.jobs is not None:
        state.jobs.wake("batches", batch_id)
    return await get(state, caller, batch_id)


async def list_rows(state: Any, caller: Caller, batch_id: str, *, limit: int, after: int | None,
                    status: str | None) -> tuple[list[BatchRow], bool]:
    await get(state, caller, batch_id)
    async with state.sessions() as s:
        stmt = select(BatchRow).where(BatchRow.batch_id == batch_id)
        if status:
            stmt = stmt.where(BatchRow.status == status)
        if after is not None:
            stmt = stmt.where(BatchRow.line > after)
        rows = list((await s.execute(stmt.order_by(BatchRow.line).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def finished_rows(s: AsyncSession, batch_id: str, after: int, limit: int,
                        statuses: tuple[str, ...] = ROW_FINISHED) -> list[BatchRow]:
    stmt = (select(BatchRow).where(BatchRow.batch_id == batch_id, BatchRow.status.in_(statuses),
                                   BatchRow.line > after).order_by(BatchRow.line).limit(limit))
    return list((await s.execute(stmt)).scalars())


def output_line(row: BatchRow) -> dict[str, Any]:
    """OpenAI's batch output line for a finished row."""
    rid = f"batch_req_{row.batch_id.removeprefix('batch_')}_{row.line}"
    if row.status == "completed":
        return {"id": rid, "custom_id": row.custom_id, "response": {
            "status_code": row.status_code or 200, "request_id": row.request_id or rid,
            "body": orjson.loads(row.response) if row.response else None}, "error": None}
    if row.status == "failed" and row.status_code:
        return {"id": rid, "custom_id": row.custom_id, "response": {
            "status_code": row.status_code, "request_id": row.request_id or rid,
            "body": {"error": row.error or {"message": "failed"}}}, "error": None}
    return {"id": rid, "custom_id": row.custom_id, "response": None,
            "error": row.error or {"code": f"batch_{row.status}", "message": f"The request was {row.status}."}}


async def stream_results(state: Any, batch_id: str, page: int = 500) -> AsyncIterator[bytes]:
    after = 0
    while True:
        async with state.sessions() as s:
            rows = await finished_rows(s, batch_id, after, page)
        if not rows:
            return
        yield b"".join(orjson.dumps(output_line(r)) + b"\n" for r in rows)
        after = rows[-1].line


# -- presentation -----------------------------------------------------------------------------

def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def render(b: Batch, base_url: str) -> dict[str, Any]:
    url = f"{base_url}/v1/batches/{b.id}"
    hook = None
    if b.webhook:
        hook = {"url": b.webhook.get("url"), "events": b.webhook.get("events"), "has_secret": True}
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": b.errors,
        "input_file_id": b.input_file_id, "completion_window": b.completion_window, "status": b.status,
        "output_file_id": b.output_file_id, "error_file_id": b.error_file_id, "created_at": _ts(b.created_at),
        "in_progress_at": _ts(b.in_progress_at), "expires_at": _ts(b.expires_at),
        "finalizing_at": _ts(b.finalizing_at), "completed_at": _ts(b.completed_at), "failed_at": _ts(b.failed_at),
        "expired_at": _ts(b.expired_at), "cancelling_at": _ts(b.cancelling_at), "cancelled_at": _ts(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": b.meta, "model": b.model, "provider": b.provider, "mode": b.mode,
        "polling_url": url, "cancel_url": f"{url}/cancel" if b.status in ("validating", "in_progress") else None,
        "results_url": f"{url}/results", "usage": b.usage, "billing": b.billing or _pending_billing(b),
        "webhook": hook,
    }


def _pending_billing(b: Batch) -> dict[str, Any]:
    from aistats_gateway.billing.ledger import usd

    return {"state": "held" if b.hold_nanos else "none", "currency": "usd", "held_nanos": b.hold_nanos,
            "held_usd": usd(b.hold_nanos), "settled_nanos": 0}


def render_row(r: BatchRow) -> dict[str, Any]:
    return {"id": r.id, "object": "batch.request", "custom_id": r.custom_id, "request_index": r.line - 1,
            "status": r.status, "provider": r.provider, "attempts": r.attempts, "response_status": r.status_code,
            "usage": r.usage, "cost_nanos": r.cost_nanos, "error": r.error, "created_at": _ts(r.created_at),
            "updated_at": _ts(r.updated_at), "completed_at": _ts(r.completed_at)}

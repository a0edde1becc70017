"""Native mode: the batch handed to the provider's own batch API (OpenAI: JSONL upload + ``/batches``),
reconciled by polling, its results written back into the rows.

Invariants:

* Never submitted twice: ``native_state = 'submitting'`` is committed BEFORE the create call. A
  step that finds it so (a crash, a timeout, a 5xx: the outcome is unknown) first looks the batch
  up at the provider by its metadata (``gateway_batch_id``) and adopts it; only when the provider
  has none does it submit again (with the same ``Idempotency-Key``). A definitive 4xx fails the
  batch; nothing was created, so nothing is charged.
* Rows are ``submitted`` while the provider has them (the row source never claims them); results
  are written with a conditional UPDATE on that status, so reconciling twice changes nothing.
* Rows are priced like gateway rows, at the provider's batch price.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from sqlalchemy import select, update

from aistats_gateway.batches.tables import Batch, BatchRow
from aistats_gateway.db.base import utcnow
from aistats_gateway.inference import charge
from aistats_gateway.inference.codecs import chat
from aistats_gateway.providers import config

log = logging.getLogger("aistats_gateway.batches")
POLL_SECONDS = 0.5
PAGE = 500
_TERMINAL = ("completed", "failed", "expired", "cancelled")


class Ambiguous(Exception):
    """The provider's answer does not tell whether the call took effect (timeout, 5xx)."""


class Rejected(Exception):
    """The provider refused the call definitively (4xx other than 408/429)."""


def _cfg(provider: str) -> tuple[str, dict[str, str]]:
    cfg = config.load(provider)
    base = (cfg.base_url or "https://api.openai.com/v1").rstrip("/")
    return base, {"Authorization": f"Bearer {cfg.api_key or ''}"}


async def _call(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
    try:
        r = await http.request(method, url, headers=headers, **kw)
    except httpx.HTTPError as e:
        raise Ambiguous(f"{method} {url}: {type(e).__name__}") from None
    if r.status_code >= 500 or r.status_code in (408, 429):
        raise Ambiguous(f"{method} {url}: HTTP {r.status_code}")
    if r.status_code >= 400:
        raise Rejected(f"HTTP {r.status_code}: {r.text[:500]}")
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content


async def _jsonl(state: Any, b: Batch, slug: str) -> AsyncIterator[bytes]:
    after = 0
    while True:
        async with state.sessions() as s:
            rows = list((await s.execute(select(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.line > after)
                                         .order_by(BatchRow.line).limit(PAGE))).scalars())
        if not rows:
            return
        for r in rows:
            body = {**orjson.loads(r.body), "model": slug}
            yield orjson.dumps({"custom_id": r.custom_id, "method": "POST", "url": b.endpoint, "body": body}) + b"\n"
        after = rows[-1].line


async def _set(state: Any, batch_id: str, **values: Any) -> None:
    async with state.sessions() as s, s.begin():
        await s.execute(update(Batch).where(Batch.id == batch_id).values(updated_at=utcnow(), **values))


async def _find(state: Any, b: Batch) -> str | None:
    """The provider's batch carrying our id in its metadata, if any."""
    base, headers = _cfg(b.provider or "openai")
    after = None
    for _ in range(20):
        params = {"limit": "100", **({"after": after} if after else {})}
        page = await _call(state.http, "GET", f"{base}/batches", headers, params=params)
        for nb in page.get("data", []):
            if (nb.get("metadata") or {}).get("gateway_batch_id") == b.id:
                return str(nb["id"])
        if not page.get("has_more") or not page.get("data"):
            return None
        after = page["data"][-1]["id"]
    return None


async def adopt(state: Any, b: Batch) -> bool:
    """Look an unknown submission up at the provider; True when found (and recorded)."""
    try:
        found = await _find(state, b)
    except (Ambiguous, Rejected):
        return False
    if found:
        await _set(state, b.id, native_id=found, native_state="submitted")
    return found is not None


async def submit(state: Any, b: Batch, slug: str) -> float | None:
    """Submit (or adopt) the provider's batch; seconds until the next step."""
    base, headers = _cfg(b.provider or "openai")
    try:
        if b.native_state == "submitting":
            found = await _find(state, b)
            if found:
                await _set(state, b.id, native_id=found, native_state="submitted")
                return POLL_SECONDS
        else:
            await _set(state, b.id, native_state="submitting")
        file_id = b.native_file_id
        if file_id is None:
            data = b"".join([chunk async for chunk in _jsonl(state, b, slug)])
            up = await _call(state.http, "POST", f"{base}/files", headers, data={"purpose": "batch"},
                             files={"file": (f"{b.id}.jsonl", data, "application/jsonl")})
            file_id = str(up["id"])
            await _set(state, b.id, native_file_id=file_id)
        created = await _call(state.http, "POST", f"{base}/batches", {**headers, "Idempotency-Key": f"gw:{b.id}"},
                              json={"input_file_id": file_id, "endpoint": b.endpoint,
                                    "completion_window": b.completion_window,
                                    "metadata": {"gateway_batch_id": b.id}})
    except Ambiguous as e:
        log.warning("native batch submission outcome unknown; reconciling before any retry",
                    extra={"batch_id": b.id, "error": str(e)})
        return 1.0
    except Rejected as e:
        await _fail_rows(state, b, 502, {"message": f"The provider refused the batch: {e}", "type": "server_error",
                                         "param": None, "code": "provider_rejected_batch"})
        await _set(state, b.id, native_state="rejected", errors={"object": "list", "data": [
            {"code": "provider_rejected_batch", "message": str(e)[:500], "param": None, "line": None}]})
        return 0.0
    await _set(state, b.id, native_id=str(created["id"]), native_state="submitted")
    return POLL_SECONDS


async def _fail_rows(state: Any, b: Batch, status: int, error: dict[str, Any]) -> None:
    now = utcnow()
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.status == "submitted").values(
            status="failed", status_code=status, error=error, updated_at=now, completed_at=now))


async def cancel(state: Any, b: Batch) -> None:
    if b.native_id and b.native_state == "submitted":
        base, headers = _cfg(b.provider or "openai")
        try:
            await _call(state.http, "POST", f"{base}/batches/{b.native_id}/cancel", headers)
        except (Ambiguous, Rejected) as e:
            log.warning("native batch cancel failed; polling on", extra={"batch_id": b.id, "error": str(e)})
            return
        await _set(state, b.id, native_state="cancel_sent")


async def poll(state: Any, b: Batch, rules: list[Any]) -> bool:
    """Look at the provider's batch; on a terminal status write its results into the rows. True when
    every row has its result."""
    base, headers = _cfg(b.provider or "openai")
    try:
        nb = await _call(state.http, "GET", f"{base}/batches/{b.native_id}", headers)
    except (Ambiguous, Rejected) as e:
        log.warning("native batch poll failed", extra={"batch_id": b.id, "error": str(e)})
        return False
    if nb.get("status") not in _TERMINAL:
        return False
    for key in ("output_file_id", "error_file_id"):
        fid = nb.get(key)
        if fid:
            try:
                data = await _call(state.http, "GET", f"{base}/files/{fid}/content", headers)
            except (Ambiguous, Rejected) as e:
                log.warning("native batch results not readable yet", extra={"batch_id": b.id, "error": str(e)})
                return False
            await _apply(state, b, data if isinstance(data, bytes) else orjson.dumps(data), rules)
    left = {"cancelled": ("cancelled", "batch_cancelled"), "expired": ("expired", "batch_expired")}.get(
        str(nb.get("status")), ("failed", "missing_result"))
    now = utcnow()
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.status == "submitted").values(
            status=left[0], error={"code": left[1], "message": f"The provider's batch ended {nb.get('status')} "
                                   "without a result for this request."}, updated_at=now, completed_at=now))
    return True


async def _apply(state: Any, b: Batch, data: bytes, rules: list[Any]) -> None:
    from aistats_gateway.batches.execute import batch_rules

    priced = batch_rules(rules)
    now = utcnow()
    async with state.sessions() as s, s.begin():
        for raw in data.splitlines():
            if not raw.strip():
                continue
            ln = orjson.loads(raw)
            resp = ln.get("response") or {}
            code = int(resp.get("status_code") or 0)
            body = resp.get("body")
            values: dict[str, Any] = {"updated_at": now, "completed_at": now, "provider": b.provider,
                                      "request_id": resp.get("request_id"), "status_code": code or None}
            if code == 200 and isinstance(body, dict):
                u = chat.usage_from(body.get("usage"))
                nanos, lines = charge.cost(priced, u)
                values.update(status="completed", response=orjson.dumps(body), cost_nanos=nanos,
                              usage={"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                                     "cached_tokens": u.cached_tokens, "total_tokens": u.total_tokens,
                                     "lines": lines})
            else:
                err = (body or {}).get("error") if isinstance(body, dict) else None
                values.update(status="failed", error=err or ln.get("error") or {"message": "failed"})
            await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.custom_id == ln.get("custom_id"),
                                                   BatchRow.status == "submitted").values(**values))

"""Native mode: the batch handed to the provider's own batch API (its ``BatchProvider`` adapter,
``providers/batch_api.py``), reconciled by polling, its results converted back into the rows.

Invariants:

* Never submitted twice: ``native_state = 'submitting'`` (and ``native_since``) is committed
  BEFORE the create call. A step that finds it so (a crash, a timeout, a 5xx: the outcome is
  unknown) first looks the batch up at the provider (``BatchProvider.find``: by metadata, or by request
  count and time where the API has no metadata) and adopts it; only when the provider has none
  does it submit again. A definitive 4xx fails the batch; nothing was created, nothing is charged.
* Rows are ``submitted`` while the provider has them (the row source never claims them); results
  are written with a conditional UPDATE on that status, so reconciling twice changes nothing.
* Rows are converted from the batch's endpoint to the provider's protocol through the inference
  IR (a chat batch can run on Anthropic), and the answers back; priced at the batch price.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from sqlalchemy import select, update

from aistats_gateway.batches.tables import Batch, BatchRow
from aistats_gateway.db.base import utcnow
from aistats_gateway.inference import charge, route
from aistats_gateway.llm.codecs import chat, messages, responses
from aistats_gateway.llm.codecs._common import Meta
from aistats_gateway.llm.ir import IRResponse
from aistats_gateway.providers import registry
from aistats_gateway.providers.batch_api import BATCH, Ambiguous, BatchProvider, Rejected, Result, Target

log = logging.getLogger("aistats_gateway.batches")
POLL_SECONDS = 0.5
PAGE = 1000
_CODEC: dict[str, Any] = {"/v1/chat/completions": chat, "/v1/responses": responses, "/v1/messages": messages}


def adapter(provider_id: str) -> BatchProvider:
    got = registry.get(provider_id, BATCH)
    if got is None:
        raise LookupError(f"provider {provider_id!r} has no native batch API")
    return got


def native_endpoints(provider_id: str) -> tuple[str, ...]:
    """The batch endpoints ``provider_id`` runs in its own batch API (none when it has no such API)."""
    got = registry.get(provider_id, BATCH)
    return got.endpoints if got is not None else ()


def native_providers() -> tuple[str, ...]:
    return tuple(pid for pid, entry in registry.registered().items() if BATCH in entry.adapters)


def encode_row(driver: BatchProvider, endpoint: str, body: dict[str, Any], cand: route.Candidate) -> dict[str, Any]:
    """One row in the provider's protocol: decoded into the IR (cut to what the offer supports)."""
    codec = _CODEC.get(endpoint)
    req = route.request_for(codec.decode_request({k: v for k, v in body.items() if k != "provider"}), cand) \
        if codec is not None else None
    return driver.encode(endpoint, req, body, Target(cand.model_slug, cand.supports))


def decode_answer(driver: BatchProvider, endpoint: str, body: dict[str, Any], client_model: str,
                  provider: str) -> tuple[dict[str, Any], Any]:
    """The provider's answer in the batch endpoint's protocol, and its usage."""
    out, usage = driver.decode(endpoint, body)
    if isinstance(out, IRResponse):
        meta = Meta(out.native_id or f"batchreq_{time.time_ns()}", client_model, provider, int(time.time()))
        return _CODEC[endpoint].encode_response(out, meta), usage
    return out, usage


async def _set(state: Any, batch_id: str, **values: Any) -> None:
    async with state.sessions() as s, s.begin():
        await s.execute(update(Batch).where(Batch.id == batch_id).values(updated_at=utcnow(), **values))


async def _encoded(state: Any, b: Batch, cand: route.Candidate) -> tuple[list[tuple[int, dict[str, Any]]],
                                                                        list[tuple[int, str]]]:
    """Every row in the provider's protocol, and the rows that cannot be converted (line, reason)."""
    driver = adapter(cand.provider_id)
    ok: list[tuple[int, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    after = 0
    while True:
        async with state.sessions() as s:
            rows = list((await s.execute(select(BatchRow.line, BatchRow.body).where(
                BatchRow.batch_id == b.id, BatchRow.line > after).order_by(BatchRow.line).limit(PAGE))).all())
        if not rows:
            return ok, bad
        for line, raw in rows:
            try:
                ok.append((line, encode_row(driver, b.endpoint, orjson.loads(raw), cand)))
            except Exception as e:
                bad.append((line, getattr(e, "message", str(e))))
        after = rows[-1][0]


async def adopt(state: Any, b: Batch) -> bool | None:
    """Look an unknown submission up; True when found (and recorded), False when the provider has
    none, None when we cannot tell (lookup failed, or several batches could be it)."""
    driver = adapter(b.provider or "")
    try:
        hits = await driver.find(state.http, b.id, b.total, b.native_since or b.created_at)
    except (Ambiguous, Rejected) as e:
        log.warning("native batch lookup failed", extra={"batch_id": b.id, "error": str(e)})
        return None
    if hits:
        async with state.sessions() as s:  # provider batches other batches of ours already adopted
            known = set((await s.execute(select(Batch.native_id).where(Batch.native_id.in_(hits),
                                                                       Batch.id != b.id))).scalars())
        hits = [h for h in hits if h not in known]
    if len(hits) > 1:
        log.warning("several provider batches could be this submission; waiting", extra={"batch_id": b.id})
        return None
    if hits:
        await _set(state, b.id, native_id=hits[0], native_state="submitted")
    return bool(hits)


async def submit(state: Any, b: Batch, cand: route.Candidate) -> float:
    """Submit (or adopt) the provider's batch; seconds until the next step."""
    driver = adapter(cand.provider_id)
    if b.native_state == "submitting":
        found = await adopt(state, b)
        if found is None:
            return 2.0
        if found:
            return POLL_SECONDS
    lines, bad = await _encoded(state, b, cand)
    if bad:
        await _fail_lines(state, b, bad)
    if not lines:
        await _set(state, b.id, native_state="rejected")
        return 0.0
    await _set(state, b.id, native_state="submitting", native_since=utcnow())
    try:
        native_id = await driver.create(state.http, b.id, b.endpoint, b.completion_window, lines)
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
    await _set(state, b.id, native_id=native_id, native_state="submitted")
    return POLL_SECONDS


async def _fail_lines(state: Any, b: Batch, bad: list[tuple[int, str]]) -> None:
    now = utcnow()
    async with state.sessions() as s, s.begin():
        for line, reason in bad:
            await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.line == line,
                                                   BatchRow.status == "submitted").values(
                status="failed", status_code=400, updated_at=now, completed_at=now,
                error={"message": reason, "type": "invalid_request_error", "param": None, "code": "invalid_request"}))


async def _fail_rows(state: Any, b: Batch, status: int, error: dict[str, Any]) -> None:
    now = utcnow()
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.status == "submitted").values(
            status="failed", status_code=status, error=error, updated_at=now, completed_at=now))


async def cancel(state: Any, b: Batch) -> None:
    if b.native_id and b.native_state == "submitted":
        try:
            await adapter(b.provider or "").cancel(state.http, b.native_id)
        except (Ambiguous, Rejected) as e:
            log.warning("native batch cancel failed; polling on", extra={"batch_id": b.id, "error": str(e)})
            return
        await _set(state, b.id, native_state="cancel_sent")


async def poll(state: Any, b: Batch, cand: route.Candidate) -> bool:
    """Look at the provider's batch; once it ended write its results into the rows. True when every
    row has its result."""
    driver = adapter(b.provider or "")
    assert b.native_id
    try:
        st = await driver.status(state.http, b.native_id)
        if st.state == "running":
            return False
        async for res in driver.results(state.http, st):
            await _apply(state, b, cand, res)
    except (Ambiguous, Rejected) as e:
        log.warning("native batch poll failed", extra={"batch_id": b.id, "error": str(e)})
        return False
    left = {"cancelled": ("cancelled", "batch_cancelled"), "expired": ("expired", "batch_expired")}.get(
        st.state, ("failed", "missing_result"))
    now = utcnow()
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.status == "submitted").values(
            status=left[0], error={"code": left[1], "message": f"The provider's batch ended {st.state} without a "
                                   "result for this request."}, updated_at=now, completed_at=now))
    return True


async def _apply(state: Any, b: Batch, cand: route.Candidate, res: Result) -> None:
    from aistats_gateway.batches.execute import batch_rules

    now = utcnow()
    values: dict[str, Any] = {"updated_at": now, "completed_at": now, "provider": b.provider,
                              "status_code": res.status or None}
    if res.status == 200 and res.body is not None:
        body, u = decode_answer(adapter(b.provider or ""), b.endpoint, res.body, b.model or "", b.provider or "")
        nanos, lines = charge.cost(batch_rules(cand.rules), u)
        values.update(status="completed", response=orjson.dumps(body), cost_nanos=nanos, request_id=body.get("id"),
                      usage={"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                             "cached_tokens": u.cached_tokens, "total_tokens": u.total_tokens, "lines": lines})
    else:
        values.update(status="failed", error=res.error or {"message": "failed"})
    async with state.sessions() as s, s.begin():
        await s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.line == res.line,
                                               BatchRow.status == "submitted").values(**values))

"""One image/audio call: route → hold → try providers in order → record and settle, exactly once.

Invariants:

* Nothing is sent upstream before :func:`open_call` committed the ``in_progress`` generation row and
  its hold (the dearest estimate over the offers that may serve it, since fallback may land on any).
  A hold that does not fit answers 402 (billing's domain errors) with nothing sent.
* :func:`close_call` finalises the generation with a conditional UPDATE (``status = in_progress``)
  and, only when that matched, settles the hold for the priced lines (billing caps/handles overage)
  or voids it — in one transaction, so ``generations.cost_nanos`` equals what the ledger charged.
* Fallback is routing's loop (``run_with_fallback``): only retryable provider errors move on; the
  breaker sees every attempt; the attempts are stored on the generation.
* The hold kind is ``media`` (``billing.Ref("media", gen_id)``), its id ``hold_<gen_id>``. A call
  the process never closed (it crashed mid-call) is closed by the billing sweep once it is
  ``ABANDON_AFTER`` old: :func:`finalizer` marks it failed and voids its hold, conditionally, so a
  call that finishes meanwhile keeps its own settlement.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, or_, select, update

from aistats_gateway.billing import jobs as billing_jobs
from aistats_gateway.billing import service as billing
from aistats_gateway.billing.pricing import Line
from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.db.base import utcnow
from aistats_gateway.http.errors import APIError
from aistats_gateway.inference.tables import Generation
from aistats_gateway.providers import config as provider_config
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.routing.fallback import Attempt, FallbackFailed, run_with_fallback

KIND = "media"
ENDPOINTS = ("images.generations", "images.edits", "audio.speech", "audio.transcriptions", "audio.translations")
ABANDON_AFTER = dt.timedelta(hours=1)
R = TypeVar("R")


def _due() -> Select[Any]:
    """Media generations whose hold the sweep may finalize: closed ones, or open ones long abandoned."""
    cutoff = utcnow() - ABANDON_AFTER
    return select(Generation.id).where(Generation.endpoint.in_(ENDPOINTS), or_(
        Generation.status != "in_progress", Generation.created_at < cutoff))


billing_jobs.register_terminal(KIND, _due)


def finalizer(gw: Any) -> Callable[[str], Awaitable[None]]:
    """The sweep's close of one media call (put in ``GatewayState.hold_finalizers[KIND]``)."""
    async def finalize(gen_id: str) -> None:
        async with gw.sessions() as s, s.begin():
            await s.execute(update(Generation).where(Generation.id == gen_id, Generation.status == "in_progress")
                            .values(status="failed", status_code=500, error_code="abandoned",
                                    error_message="the gateway stopped before the call ended", finished_at=utcnow()))
            await billing.void(s, billing.Ref(KIND, gen_id), memo=f"voided {gen_id}: abandoned")
    return finalize


@dataclass(frozen=True)
class Caller:
    key_id: str
    workspace_id: str


def new_generation_id() -> str:
    return f"gen_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


@dataclass
class Call:
    gen_id: str
    caller: Caller
    endpoint: str  # images.generations | images.edits | audio.speech | audio.transcriptions | …
    model: str
    hold_nanos: int
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Done(Generic[R]):
    result: R
    offer: ProviderOffer
    attempts: list[Attempt]


def context(gw: Any, offer: ProviderOffer) -> CallContext:
    cfg = provider_config.load(offer.provider_id)
    return CallContext(http=gw.http, api_key=cfg.api_key, base_url=cfg.base_url, data_dir=gw.settings.data_dir,
                       extra={"slug": offer.spec.provider_model_slug})


async def open_call(gw: Any, call: Call) -> None:
    async with gw.sessions() as s, s.begin():
        s.add(Generation(id=call.gen_id, workspace_id=call.caller.workspace_id, key_id=call.caller.key_id,
                         endpoint=call.endpoint, model=call.model, stream=call.stream, status="in_progress",
                         attempts=[], usage={}, hold_nanos=call.hold_nanos, cost_nanos=0))
        if call.hold_nanos > 0:
            await billing.hold(s, ref=billing.Ref(KIND, call.gen_id), workspace_id=call.caller.workspace_id,
                               key_id=call.caller.key_id, amount_nanos=call.hold_nanos)


@dataclass
class Outcome:
    status: str  # completed | failed
    provider: str | None = None
    native_id: str | None = None
    lines: list[Line] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    status_code: int = 200
    error_code: str | None = None
    error_message: str | None = None


async def close_call(gw: Any, call: Call, out: Outcome) -> int:
    """Finalise the generation and settle or void its hold, once. Returns the nano-USD charged."""
    latency = int((time.perf_counter() - call.started) * 1000)
    lines = [ln.as_dict() for ln in out.lines] if out.status == "completed" else []
    actual = sum(ln.nanos for ln in out.lines) if out.status == "completed" else 0
    charged = min(actual, call.hold_nanos) if call.hold_nanos > 0 else 0
    async with gw.sessions() as s, s.begin():
        res = await s.execute(update(Generation).where(
            Generation.id == call.gen_id, Generation.status == "in_progress").values(
            status=out.status, provider=out.provider, native_id=(out.native_id or None) and out.native_id[:200],
            status_code=out.status_code, error_code=out.error_code, error_message=out.error_message,
            attempts=[a.as_dict() for a in out.attempts], usage={**out.usage, "lines": lines},
            cost_nanos=charged, latency_ms=latency, finished_at=utcnow()))
        if getattr(res, "rowcount", 0) != 1:
            return 0
        if call.hold_nanos > 0:
            ref = billing.Ref(KIND, call.gen_id)
            if out.status == "completed" and actual > 0:
                done = await billing.settle(s, ref, out.lines)
                if done is not None and done.charged_nanos != charged:
                    charged = done.charged_nanos
                    await s.execute(update(Generation).where(Generation.id == call.gen_id).values(cost_nanos=charged))
            else:
                await billing.void(s, ref, memo=f"voided {call.gen_id}: {out.status}")
    return charged


def upstream_error(err: ProviderError, attempts: int) -> APIError:
    """The client's answer when no provider served the call."""
    if err.kind in ("client", "content_policy"):
        return APIError(400, err.message, param=err.param, code=err.code or "provider_rejected_request")
    status = 503 if err.kind in ("unavailable", "rate_limit") else 502
    return APIError(status, f"No provider could serve the request after {attempts} attempt(s): {err.message}",
                    code="upstream_error", type="server_error")


async def run(gw: Any, call: Call, offers: Sequence[ProviderOffer],
              attempt: Callable[[ProviderOffer, CallContext], Awaitable[R]]) -> Done[R]:
    """Try ``offers`` in order; on failure close the call (voiding the hold) and raise the answer."""
    async def one(offer: ProviderOffer) -> tuple[R, ProviderOffer]:
        return await attempt(offer, context(gw, offer)), offer

    try:
        (result, offer), attempts = await run_with_fallback(offers, one, gw.breaker)
    except FallbackFailed as e:
        err = upstream_error(e.error, len(e.attempts))
        await close_call(gw, call, Outcome("failed", attempts=e.attempts, status_code=err.status,
                                           error_code=e.error.code or err.code, error_message=e.error.message[:500]))
        raise err from None
    except BaseException:
        await close_call(gw, call, Outcome("failed", status_code=500, error_code="gateway_error",
                                           error_message="the call was interrupted"))
        raise
    return Done(result, offer, attempts)


def usage_doc(lines: list[Line], charged: int) -> dict[str, Any]:
    """The ``usage.pricing_breakdown`` a media response carries (and ``cost_nanos``)."""
    return {"pricing_breakdown": {"lines": [ln.as_dict() for ln in lines], "total_nanos": charged,
                                  "currency": "USD"}}

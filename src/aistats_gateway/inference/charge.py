"""Money and token limits for one inference call (today's ``billing.ledger`` functions).

Invariants:
* :func:`open_call` runs before anything is sent upstream, in one transaction: the key's
  tokens-per-minute check (429 + Retry-After), the hold of the upper-bound estimate (402 with the
  shortfall; nothing held for a free call) and the ``in_progress`` generation row.
* :func:`close_call` runs exactly once per call, in one transaction: it finalises the generation
  with a conditional UPDATE (``status = in_progress``) and, only if that matched, settles the hold
  for the actual cost (or voids it). So ledger settlements and ``generations.cost_nanos`` always
  agree. The hold is an upper-bound estimate (output is bounded by ``max_tokens``, or
  :data:`DEFAULT_MAX_OUTPUT` when the client set none); usage above it is billing's overage rule
  (``billing.settle``: the actual cost when the workspace can pay it, else what it can, with the
  shortfall recorded on the generation). Holds are ``billing.Ref("generation", gen_id)``.
* Prices (pro rata per token, rounded up to a nano-USD per line): ``input_tokens`` for uncached input,
  ``cached_input_tokens`` for cached input (else the input price), ``output_tokens`` for output
  including reasoning tokens, ``request`` per call.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.auth.tables import ApiKey
from aistats_gateway.billing import ledger, pricing
from aistats_gateway.billing import service as billing
from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.db.base import utcnow
from aistats_gateway.http.errors import APIError
from aistats_gateway.inference.tables import Generation, TokenCounter
from aistats_gateway.llm.ir import ImagePart, IRRequest, TextPart, Usage

DEFAULT_MAX_OUTPUT = 16_384
IMAGE_TOKENS = 2_000  # upper bound per input image


def input_upper_bound(req: IRRequest) -> int:
    """At most one token per UTF-8 byte of text, a fixed allowance per image and per message/tool."""
    n = 0
    for m in req.messages:
        n += 8
        for p in m.content:
            if isinstance(p, TextPart):
                n += len(p.text.encode())
            elif isinstance(p, ImagePart):
                n += IMAGE_TOKENS
        for c in m.tool_calls:
            n += len(c.name) + len(c.arguments.encode()) + 8
    for t in req.tools:
        import orjson

        n += len(orjson.dumps(t.parameters)) + len(t.name) + len((t.description or "").encode()) + 16
    if req.response_format is not None and req.response_format.schema:
        import orjson

        n += len(orjson.dumps(req.response_format.schema))
    return n


def output_upper_bound(req: IRRequest) -> int:
    out = req.max_tokens or DEFAULT_MAX_OUTPUT
    budget = req.thinking_budget()
    return out + (budget or 0) if budget and (req.max_tokens or 0) <= budget else out


def _line(rules: list[PriceRule], meter: str, qty: int, fallback: str | None = None) -> pricing.Line | None:
    """Tokens are priced pro rata (``qty * price / unit_size``, rounded up to a whole nano-USD), not
    in whole blocks of ``unit_size`` like video seconds; per-request meters price whole units."""
    if qty <= 0:
        return None
    rule = pricing.pick(rules, meter, {}) or (pricing.pick(rules, fallback, {}) if fallback else None)
    if rule is None:
        return None
    nanos = -(-qty * rule.price_nanos // rule.unit_size)
    return pricing.Line(meter, qty, qty, rule.price_nanos, nanos, rule)


KIND = "generation"


def ref(gen_id: str) -> billing.Ref:
    return billing.Ref(KIND, gen_id)


def cost_lines(rules: list[PriceRule], usage: Usage) -> list[pricing.Line]:
    lines = [_line(rules, "input_tokens", max(0, usage.input_tokens - usage.cached_tokens)),
             _line(rules, "cached_input_tokens", usage.cached_tokens, "input_tokens"),
             _line(rules, "output_tokens", usage.output_tokens),
             _line(rules, "request", 1)]
    return [ln for ln in lines if ln is not None]


def cost(rules: list[PriceRule], usage: Usage) -> tuple[int, list[dict[str, Any]]]:
    got = cost_lines(rules, usage)
    return sum(ln.nanos for ln in got), [ln.as_dict() for ln in got]


def estimate(rules_list: list[list[PriceRule]], input_tokens: int, output_tokens: int) -> int:
    """The most any candidate would cost for these token counts (fallback may land on any)."""
    return max((cost(r, Usage(input_tokens, output_tokens))[0] for r in rules_list), default=0)


@dataclass
class Call:
    gen_id: str
    workspace_id: str
    key_id: str
    endpoint: str
    model: str
    stream: bool
    hold_nanos: int
    est_tokens: int
    started: float = field(default_factory=time.perf_counter)


def _window(now: float) -> int:
    return int(now // 60)


async def _tpm_check(s: AsyncSession, key_id: str, est_tokens: int) -> None:
    limit = (await s.execute(select(ApiKey.tpm_limit).where(ApiKey.id == key_id))).scalar()
    if not limit:
        return
    now = time.time()
    used = (await s.execute(select(TokenCounter.tokens).where(TokenCounter.key_id == key_id,
                                                              TokenCounter.window == _window(now)))).scalar() or 0
    if used + min(est_tokens, limit) > limit:
        retry = max(1, int(60 - now % 60))
        raise APIError(429, f"Rate limit reached: this key allows {limit} tokens per minute ({used} used in this "
                       f"minute). Try again in {retry} s.", code="tokens_per_minute_exceeded",
                       type="rate_limit_error", headers={"Retry-After": str(retry)})


async def count_tokens(s: AsyncSession, key_id: str, tokens: int) -> None:
    if tokens <= 0:
        return
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(TokenCounter).values(key_id=key_id, window=_window(time.time()), tokens=tokens)
    await s.execute(stmt.on_conflict_do_update(index_elements=["key_id", "window"],
                                               set_={"tokens": TokenCounter.tokens + tokens}))


async def open_call(sessions: async_sessionmaker[AsyncSession], call: Call, *, tpm_tokens: int) -> None:
    async with sessions() as s, s.begin():
        await _tpm_check(s, call.key_id, tpm_tokens)
        s.add(Generation(id=call.gen_id, workspace_id=call.workspace_id, key_id=call.key_id, endpoint=call.endpoint,
                         model=call.model, stream=call.stream, status="in_progress", attempts=[], usage={},
                         hold_nanos=call.hold_nanos, cost_nanos=0))
        if call.hold_nanos > 0:
            await billing.hold(s, ref=ref(call.gen_id), workspace_id=call.workspace_id, key_id=call.key_id,
                               amount_nanos=call.hold_nanos)
        else:
            bal = await ledger.balance(s, call.workspace_id)
            if bal.available_nanos < 0:
                raise APIError(402, "Insufficient credits: the workspace balance is negative.",
                               code="insufficient_credits")


@dataclass
class Outcome:
    status: str  # completed | failed
    provider: str | None = None
    native_id: str | None = None
    usage: Usage | None = None
    rules: list[PriceRule] | None = None
    finish_reason: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status_code: int = 200
    error_code: str | None = None
    error_message: str | None = None
    ttft_ms: int | None = None
    extra_usage: dict[str, Any] = field(default_factory=dict)


async def close_call(sessions: async_sessionmaker[AsyncSession], call: Call, out: Outcome) -> tuple[int, list[Any]]:
    """Finalise the generation and settle/void its hold, exactly once. Returns (charged nanos, lines)."""
    _, nanos, lines = await finalise(sessions, call, out)
    return nanos, lines


async def finalise(sessions: async_sessionmaker[AsyncSession], call: Call,
                   out: Outcome) -> tuple[bool, int, list[Any]]:
    """:func:`close_call`, also saying whether this call was the one that finalised it."""
    priced = (cost_lines(out.rules, out.usage) if out.status == "completed" and out.usage is not None
              and out.rules is not None else [])
    if call.hold_nanos <= 0:
        priced = []  # nothing was held: the call was priced as free
    lines: list[Any] = [ln.as_dict() for ln in priced]
    u = out.usage or Usage()
    usage_doc = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cached_tokens": u.cached_tokens,
                 "reasoning_tokens": u.reasoning_tokens, "total_tokens": u.total_tokens, **out.extra_usage,
                 "lines": lines}
    latency = int((time.perf_counter() - call.started) * 1000)
    async with sessions() as s, s.begin():
        res = await s.execute(update(Generation).where(Generation.id == call.gen_id,
                                                       Generation.status == "in_progress").values(
            status=out.status, provider=out.provider, native_id=(out.native_id or None) and out.native_id[:200],
            status_code=out.status_code, error_code=out.error_code, error_message=out.error_message,
            attempts=out.attempts, usage=usage_doc, finish_reason=out.finish_reason, cost_nanos=0,
            latency_ms=latency, ttft_ms=out.ttft_ms, finished_at=utcnow()))
        if getattr(res, "rowcount", 0) != 1:
            return False, 0, []
        nanos = 0
        if call.hold_nanos > 0:
            if out.status == "completed" and sum(ln.nanos for ln in priced) > 0:
                done = await billing.settle(s, ref(call.gen_id), priced)
                if done is not None:
                    nanos = done.charged_nanos
                    if done.shortfall_nanos:
                        usage_doc["shortfall_nanos"] = done.shortfall_nanos
                        usage_doc["actual_nanos"] = done.actual_nanos
            else:
                await billing.void(s, ref(call.gen_id), memo=f"voided {call.gen_id}: {out.status}")
        await s.execute(update(Generation).where(Generation.id == call.gen_id).values(cost_nanos=nanos,
                                                                                       usage=usage_doc))
        await count_tokens(s, call.key_id, u.total_tokens)
    return True, nanos, lines


def as_record(g: Generation) -> dict[str, Any]:
    def ts(d: dt.datetime | None) -> int | None:
        return int(d.timestamp()) if d else None

    return {"id": g.id, "object": "generation", "endpoint": g.endpoint, "model": g.model, "provider": g.provider,
            "native_response_id": g.native_id, "stream": g.stream, "status": g.status, "status_code": g.status_code,
            "success": g.status == "completed", "error_code": g.error_code, "error_message": g.error_message,
            "attempts": g.attempts, "usage": g.usage, "finish_reason": g.finish_reason, "cost_nanos": g.cost_nanos,
            "cost_usd": ledger.usd(g.cost_nanos), "currency": "USD", "held_nanos": g.hold_nanos,
            "latency_ms": g.latency_ms, "time_to_first_token_ms": g.ttft_ms, "key_id": g.key_id,
            "created_at": ts(g.created_at), "finished_at": ts(g.finished_at)}


STALE_SECONDS = 3600.0  # longer than any call can last (streams are bounded by the upstream timeout per read)


async def sweep_stale(sessions: async_sessionmaker[AsyncSession], older_than: float = STALE_SECONDS) -> int:
    """Finish calls a crashed process left ``in_progress`` (their holds void, no charge); returns how many.
    Safe with several processes: :func:`close_call` finalises each one exactly once."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than)
    async with sessions() as s:
        rows = (await s.execute(select(Generation).where(Generation.status == "in_progress",
                                                         Generation.created_at < cutoff).limit(1000))).scalars().all()
    done = 0
    for g in rows:
        call = Call(g.id, g.workspace_id, g.key_id, g.endpoint, g.model, g.stream, g.hold_nanos, 0)
        did, _, _ = await finalise(sessions, call, Outcome(
            "failed", g.provider, status_code=500, error_code="interrupted",
            error_message="The gateway stopped before this call finished.", attempts=list(g.attempts or [])))
        done += did
    return done

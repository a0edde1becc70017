"""Money and token limits for one inference call (today's ``billing.ledger`` functions).

Invariants:
* :func:`open_call` runs before anything is sent upstream, in one transaction, committed before it
  returns: the key's tokens-per-minute check (429 + Retry-After), the hold of the upper-bound
  estimate (402 with the shortfall; nothing held for a free call) and the ``in_progress`` generation
  row. The key's limits come from the key row read on this request (``Call.limits``), else from the
  database in the same transaction.
* :func:`close_call` runs exactly once per call, in one transaction: it settles (or voids) the hold
  for the actual cost, then finalises the generation with a conditional UPDATE (``status =
  in_progress``) carrying the charged cost; if that UPDATE matched nothing (someone else finalised
  it) the whole transaction rolls back, settlement included. So ledger settlements and
  ``generations.cost_nanos`` always agree, and the record is committed before the client gets its
  answer (no write-behind). The hold is an upper-bound estimate (output is bounded by ``max_tokens``, or
  :data:`DEFAULT_MAX_OUTPUT` when the client set none); usage above it is billing's overage rule
  (``billing.lean.settle``: the actual cost when the workspace can pay it, else what it can, with the
  shortfall recorded on the generation). Holds are ``billing.Ref("generation", gen_id)``.
* Both are lean write transactions (``db.writer``: plain statements, group-committed with the calls
  of the same event-loop iteration on SQLite). Tokens are counted per minute for keys that have a
  tokens-per-minute limit.
* Prices (pro rata per token, rounded up to a nano-USD per line): ``input_tokens`` for uncached input,
  ``cached_input_tokens`` for cached input (else the input price), ``output_tokens`` for output
  including reasoning tokens, ``request`` per call.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.billing import lean, ledger, pricing
from aistats_gateway.billing import service as billing
from aistats_gateway.catalogue.schema import NANOS_PER_USD, PriceRule
from aistats_gateway.db import writer
from aistats_gateway.db.base import utcnow
from aistats_gateway.db.writer import Tx
from aistats_gateway.http.errors import APIError
from aistats_gateway.inference.tables import Generation
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
    unit = _price_nanos(rule.price)
    return pricing.Line(meter, qty, qty, unit, -(-qty * unit // rule.unit_size), rule)


@functools.lru_cache(maxsize=4096)
def _price_nanos(price: str) -> int:
    """``PriceRule.price_nanos`` (a Decimal parse), memoised by the price text."""
    return int(Decimal(price) * NANOS_PER_USD)


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
    usage = Usage(input_tokens, output_tokens)
    return max((sum(ln.nanos for ln in cost_lines(r, usage)) for r in rules_list), default=0)


@dataclass(frozen=True)
class KeyLimits:
    """The key's limits as read with the key on this request (``auth``), so the call needs no re-read."""

    tpm: int | None = None
    daily_nanos: int | None = None
    monthly_nanos: int | None = None


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
    limits: KeyLimits | None = None  # None: read them from the key's row in open_call


def _window(now: float) -> int:
    return int(now // 60)


async def _key_limits(tx: Tx, key_id: str) -> KeyLimits:
    row = await tx.one("SELECT tpm_limit, daily_spend_limit_nanos, monthly_spend_limit_nanos FROM api_keys "
                       "WHERE id = ?", (key_id,))
    return KeyLimits(*row) if row else KeyLimits()


async def _tpm_check(tx: Tx, key_id: str, limit: int, est_tokens: int) -> None:
    now = time.time()
    row = await tx.one('SELECT tokens FROM token_counters WHERE key_id = ? AND "window" = ?', (key_id, _window(now)))
    used = int(row[0]) if row and row[0] else 0
    if used + min(est_tokens, limit) > limit:
        retry = max(1, int(60 - now % 60))
        raise APIError(429, f"Rate limit reached: this key allows {limit} tokens per minute ({used} used in this "
                       f"minute). Try again in {retry} s.", code="tokens_per_minute_exceeded",
                       type="rate_limit_error", headers={"Retry-After": str(retry)})


async def count_tokens(tx: Tx, key_id: str, tokens: int) -> None:
    if tokens <= 0:
        return
    await tx.exec('INSERT INTO token_counters (key_id, "window", tokens) VALUES (?, ?, ?) '
                  'ON CONFLICT (key_id, "window") DO UPDATE SET tokens = token_counters.tokens + excluded.tokens',
                  (key_id, _window(time.time()), tokens))


async def open_call(sessions: async_sessionmaker[AsyncSession], call: Call, *, tpm_tokens: int) -> None:
    """The tpm check, the hold (402) and the ``in_progress`` generation row, in one lean write transaction
    (``db.writer``: group-committed with concurrent calls on SQLite); committed before it returns."""

    async def work(tx: Tx) -> None:
        limits = call.limits or await _key_limits(tx, call.key_id)
        call.limits = limits
        if limits.tpm:
            await _tpm_check(tx, call.key_id, limits.tpm, tpm_tokens)
        await tx.exec("INSERT INTO generations (id, workspace_id, key_id, endpoint, model, stream, status, "
                      "attempts, usage, hold_nanos, cost_nanos, created_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, 'in_progress', ?, ?, ?, 0, ?)",
                      (call.gen_id, call.workspace_id, call.key_id, call.endpoint, call.model, call.stream, [], {},
                       call.hold_nanos, tx.now()))
        if call.hold_nanos > 0:
            spend = (lean.KeyLimits(limits.daily_nanos, limits.monthly_nanos)
                     if limits.daily_nanos is not None or limits.monthly_nanos is not None else None)
            await lean.place_hold(tx, hold_id=billing.hold_id(call.gen_id), workspace_id=call.workspace_id,
                                  key_id=call.key_id, ref_kind=KIND, ref=call.gen_id, amount_nanos=call.hold_nanos,
                                  limits=spend)
        else:
            bal = await lean.balance(tx, call.workspace_id)
            if bal.available_nanos < 0:
                raise APIError(402, "Insufficient credits: the workspace balance is negative.",
                               code="insufficient_credits")

    await writer.run(sessions, work)


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


class _NotOurs(Exception):
    """The generation was finalised before (another process, the sweep): undo this transaction."""


async def finalise(sessions: async_sessionmaker[AsyncSession], call: Call,
                   out: Outcome) -> tuple[bool, int, list[Any]]:
    """:func:`close_call`, also saying whether this call was the one that finalised it.

    One lean write transaction: settle (or void) the hold, then the conditional UPDATE of the
    generation (``status = in_progress``) with the charged cost; when that UPDATE matches nothing the
    whole transaction rolls back (the settlement included), so the ledger and ``cost_nanos`` agree."""
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
    native = out.native_id[:200] if out.native_id else None
    hid = billing.hold_id(call.gen_id)
    # open_call placed this hold from the same Call (the generation row's hold_nanos is its amount)
    known = lean.Known(call.hold_nanos, call.workspace_id, call.gen_id)

    async def work(tx: Tx) -> int:
        nanos = 0
        if call.hold_nanos > 0:
            actual = sum(ln.nanos for ln in priced)
            if out.status == "completed" and actual > 0:
                done = await lean.settle(tx, hid, actual, known)
                if done is not None:
                    nanos = done.charged_nanos
                    if done.shortfall_nanos:
                        usage_doc["shortfall_nanos"] = done.shortfall_nanos
                        usage_doc["actual_nanos"] = done.actual_nanos
            else:
                await lean.void(tx, hid, memo=f"voided {call.gen_id}: {out.status}", known=known)
        matched = await tx.exec(
            "UPDATE generations SET status = ?, provider = ?, native_id = ?, status_code = ?, error_code = ?, "
            "error_message = ?, attempts = ?, usage = ?, finish_reason = ?, cost_nanos = ?, latency_ms = ?, "
            "ttft_ms = ?, finished_at = ? WHERE id = ? AND status = 'in_progress'",
            (out.status, out.provider, native, out.status_code, out.error_code, out.error_message, out.attempts,
             usage_doc, out.finish_reason, nanos, latency, out.ttft_ms, tx.now(), call.gen_id))
        if matched != 1:
            raise _NotOurs()
        limits = call.limits
        if limits is None or limits.tpm:  # tokens are counted for keys with a tokens-per-minute limit
            await count_tokens(tx, call.key_id, u.total_tokens)
        return nanos

    try:
        nanos = await writer.run(sessions, work)
    except _NotOurs:
        return False, 0, []
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

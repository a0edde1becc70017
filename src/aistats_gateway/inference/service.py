"""One inference call: route, hold, try providers in order, answer in the client's protocol, settle.

Invariants:
* Nothing is sent upstream before :func:`charge.open_call` succeeded (402/429 otherwise).
* Candidates come from the shared routing layer (:mod:`inference.route` over ``routing.plan``), and
  are tried by routing's one fallback loop (``routing.run_with_fallback``) with the gateway's circuit
  breaker (``state.breaker``): a provider whose circuit is open is skipped (a ``circuit_open`` attempt).
* Fallback to the next candidate happens only on ``providers.base.RETRYABLE_KINDS`` (connect errors,
  timeouts, 408, 429, 5xx, malformed answers) and only before the first byte reaches the client:
  a stream commits to a provider when its first event arrives; a failure after that is the stream's
  (an error event), never a fallback. Every attempt is stored on the generation.
* A stream is pumped by its own task, independent of the client connection: when the client goes
  away the task keeps reading the provider's stream to its end and charges the usage it reports.
  A stream that fails after its first event ends with the protocol's error event and is charged
  nothing (like a call where every provider failed).
* Every call ends in exactly one :func:`charge.close_call`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.responses import Response

from aistats_gateway import routing
from aistats_gateway.http.errors import APIError
from aistats_gateway.http.responses import EventStream
from aistats_gateway.inference import charge, route
from aistats_gateway.llm.codecs._common import Meta
from aistats_gateway.llm.ir import (
    IRDelta,
    IRRequest,
    IRResponse,
    StreamSummary,
    Usage,
)
from aistats_gateway.providers.base import ProviderError

log = logging.getLogger("aistats_gateway.inference")
KEEPALIVE_SECONDS = 15.0
_TASKS: set[asyncio.Task[Any]] = set()  # running stream pumps (kept referenced until they finish)


class Encoder(Protocol):
    def start(self) -> bytes: ...

    def delta(self, d: IRDelta) -> bytes: ...

    def finish(self, usage: Usage) -> bytes: ...

    def error(self, message: str, code: str = ...) -> bytes: ...


@dataclass
class Principal:
    key_id: str
    workspace_id: str
    limits: charge.KeyLimits | None = None  # as read with the key on this request; None: read in open_call


@dataclass
class Attempts:
    """The attempts stored on a generation: routing's ``Attempt.as_dict()`` plus ``ok``, ``ms`` and ``kind``."""

    items: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, attempts: list[routing.Attempt]) -> Attempts:
        return cls([{**a.as_dict(), "message": a.message[:300] if a.message else None, "ok": a.outcome == "accepted",
                     "ms": a.duration_ms, "kind": a.kind} for a in attempts])


def new_generation_id() -> str:
    return f"gen_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def server_timing(upstream_ms: float, total_ms: float) -> str:
    return f"upstream;dur={upstream_ms:.1f}, gateway;dur={max(0.0, total_ms - upstream_ms):.1f}"


def client_error(err: ProviderError | None, attempts: int) -> APIError:
    """What the client sees when no provider answered."""
    if err is None:
        return APIError(502, "No provider answered.", code="upstream_error")
    if err.kind in ("client", "content_policy"):
        return APIError(400, err.message, param=err.param, code=err.code or "provider_rejected_request")
    if err.kind == "rate_limit":
        headers = {"Retry-After": str(max(1, int(err.retry_after or 1)))}
        return APIError(429, f"Every provider is rate limited ({attempts} tried): {err.message}",
                        code="provider_rate_limited", headers=headers)
    status = 504 if err.code == "provider_timeout" else 502
    return APIError(status, f"Every provider failed ({attempts} tried); last error: {err.message}",
                    code=err.code or "upstream_error", type="server_error")


@dataclass
class Plan:
    state: Any
    call: charge.Call
    cands: list[route.Candidate]
    meta: Meta


async def plan(state: Any, principal: Principal, endpoint: str, client_model: str, body: dict[str, Any],
               req: IRRequest | None, *, input_tokens: int, output_tokens: int, stream: bool,
               record_endpoint: str | None = None) -> Plan:
    """Resolve candidates, estimate, hold and record: everything before the first upstream byte."""
    prefs = route.parse_routing(body)
    snap = await state.catalogue.get()
    model_id, cands = route.candidates(snap, client_model, endpoint, prefs, req.params if req else None,
                                       state.breaker)
    hold = charge.estimate([c.rules for c in cands], input_tokens, output_tokens)
    gen_id = new_generation_id()
    call = charge.Call(gen_id, principal.workspace_id, principal.key_id, record_endpoint or endpoint, model_id,
                       stream, hold, input_tokens + output_tokens, limits=principal.limits)
    await charge.open_call(state.sessions, call, tpm_tokens=input_tokens)
    return Plan(state, call, cands, Meta(gen_id, client_model, "", int(time.time())))


async def fail(p: Plan, attempts: Attempts, err: ProviderError | None) -> APIError:
    api = client_error(err, len(attempts.items))
    await charge.close_call(p.state.sessions, p.call, charge.Outcome(
        "failed", attempts=attempts.items, status_code=api.status, error_code=api.code, error_message=api.message))
    return api


async def run_once(p: Plan, call: Callable[[route.Candidate, Any], Awaitable[Any]]
                   ) -> tuple[route.Candidate, Any, float, Attempts]:
    """Try candidates in order (routing's fallback loop and breaker) until one answers;
    (candidate, answer, upstream ms, attempts)."""

    async def one(cand: route.Candidate) -> tuple[route.Candidate, Any, float]:
        t0 = time.perf_counter()
        answer = await call(cand, cand.context(p.state.http))
        return cand, answer, (time.perf_counter() - t0) * 1000

    try:
        (cand, answer, upstream_ms), tried = await routing.run_with_fallback(p.cands, one, p.state.breaker)
    except routing.FallbackFailed as e:
        raise await fail(p, Attempts.of(e.attempts), e.error) from None
    return cand, answer, upstream_ms, Attempts.of(tried)


def observe_throughput(p: Plan, provider_id: str, usage: Usage, ms: float) -> None:
    """Output tokens per second of a call, for ``provider.sort=throughput`` (routing's observed health)."""
    if usage.output_tokens > 0 and ms > 0:
        p.state.breaker.observe_throughput(provider_id, usage.output_tokens / (ms / 1000))


async def complete(p: Plan, req: IRRequest, encode: Callable[[IRResponse, Meta], dict[str, Any]]) -> Response:
    cand, resp, upstream_ms, attempts = await run_once(
        p, lambda c, ctx: c.adapter.complete(route.request_for(req, c), ctx))
    assert isinstance(resp, IRResponse)
    observe_throughput(p, cand.provider_id, resp.usage, upstream_ms)
    nanos, _ = await charge.close_call(p.state.sessions, p.call, charge.Outcome(
        "completed", cand.provider_id, resp.native_id, resp.usage, cand.rules, resp.finish_reason, attempts.items,
        ttft_ms=int(upstream_ms)))
    p.meta.provider = cand.provider_id
    p.meta.cost_nanos = nanos
    total = (time.perf_counter() - p.call.started) * 1000
    return Response(orjson.dumps(encode(resp, p.meta)), media_type="application/json",
                    headers={"Server-Timing": server_timing(upstream_ms, total), "Cache-Control": "no-store"})


@dataclass
class _Opened:
    cand: route.Candidate
    it: AsyncIterator[IRDelta]
    first: IRDelta
    ttfb_ms: float


async def stream(p: Plan, req: IRRequest, make_encoder: Callable[[Meta], Encoder]) -> Response:
    """Open the stream of the first candidate that yields an event (routing's fallback loop: a failure
    before the first event moves on to the next candidate); from then on the stream is committed."""

    async def open_one(cand: route.Candidate) -> _Opened:
        t0 = time.perf_counter()
        it = cand.adapter.stream(route.request_for(req, cand), cand.context(p.state.http)).__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            raise ProviderError("upstream", f"{cand.provider_id} ended the stream without any event",
                                code="upstream_empty_stream") from None
        except ProviderError:
            await _close(it)
            raise
        return _Opened(cand, it, first, (time.perf_counter() - t0) * 1000)

    try:
        opened, tried = await routing.run_with_fallback(p.cands, open_one, p.state.breaker)
    except routing.FallbackFailed as e:
        raise await fail(p, Attempts.of(e.attempts), e.error) from None
    p.meta.provider = opened.cand.provider_id
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    pump = Pump(p, opened.cand, opened.it, opened.first, make_encoder(p.meta), queue, Attempts.of(tried),
                opened.ttfb_ms, started=time.perf_counter() - opened.ttfb_ms / 1000)
    task = asyncio.get_running_loop().create_task(pump.run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    total = (time.perf_counter() - p.call.started) * 1000
    return EventStream(pump.body(), media_type="text/event-stream",
                       headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no",
                                "Server-Timing": server_timing(opened.ttfb_ms, total)})


async def _close(it: AsyncIterator[IRDelta]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


@dataclass
class Pump:
    """Reads one provider stream to its end, feeding encoded frames to the client while it listens."""

    p: Plan
    cand: route.Candidate
    it: AsyncIterator[IRDelta]
    first: IRDelta
    enc: Encoder
    queue: asyncio.Queue[bytes | None]
    attempts: Attempts
    ttfb_ms: float
    gone: bool = False
    started: float = field(default_factory=time.perf_counter)  # when the stream was committed

    def put(self, data: bytes) -> None:
        if data and not self.gone:
            self.queue.put_nowait(data)

    async def run(self) -> None:
        summary = StreamSummary()
        error: ProviderError | None = None
        try:
            summary.add(self.first)
            self.put(self.enc.start() + self.enc.delta(self.first))
            # Let the response send the first frame now: when the provider's events are already
            # buffered, reading them never suspends, and the first byte would wait for the whole stream.
            await asyncio.sleep(0)
            async for d in self.it:
                summary.add(d)
                self.put(self.enc.delta(d))
        except ProviderError as e:
            error = e
        except Exception as e:
            log.exception("stream pump failed", extra={"generation": self.p.call.gen_id})
            error = ProviderError("upstream", f"stream failed: {e.__class__.__name__}", code="stream_failed")
        resp = summary.response()
        try:
            if error is None:
                observe_throughput(self.p, self.cand.provider_id, resp.usage,
                                   (time.perf_counter() - self.started) * 1000)
                nanos, _ = await charge.close_call(self.p.state.sessions, self.p.call, charge.Outcome(
                    "completed", self.cand.provider_id, resp.native_id, resp.usage, self.cand.rules,
                    resp.finish_reason, self.attempts.items, ttft_ms=int(self.ttfb_ms)))
                self.p.meta.cost_nanos = nanos
                self.put(self.enc.finish(resp.usage))
            else:
                self.p.state.breaker.record_failure(self.cand.provider_id, retryable=error.retryable)
                await charge.close_call(self.p.state.sessions, self.p.call, charge.Outcome(
                    "failed", self.cand.provider_id, resp.native_id, resp.usage, None, "error", self.attempts.items,
                    status_code=502, error_code=error.code or "upstream_stream_error", error_message=error.message,
                    ttft_ms=int(self.ttfb_ms)))
                self.put(self.enc.error(error.message, error.code or "upstream_error"))
        finally:
            self.queue.put_nowait(None)

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self.queue.empty():
                    try:
                        async with asyncio.timeout(KEEPALIVE_SECONDS):  # no extra task per frame, unlike wait_for
                            item = await self.queue.get()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                else:
                    item = self.queue.get_nowait()
                if item is None:
                    return
                end = False
                while not self.queue.empty():  # frames already waiting go out in one write
                    more = self.queue.get_nowait()
                    if more is None:
                        end = True
                        break
                    item += more
                yield item
                if end:
                    return
        finally:
            self.gone = True

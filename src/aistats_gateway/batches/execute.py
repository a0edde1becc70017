"""Gateway mode: one batch row run through the inference service's routing, adapters and codecs.

Invariants:

* A row is executed only under its lease and only while ``queued``; its result is written by a
  conditional UPDATE on ``status = 'queued' AND lease_owner = <us>``. A finished row is never run
  again; a crash mid-call leaves the row ``queued`` and it runs again after the lease lapses.
* Fallback: the batch's candidates are tried in order (its ``provider`` routing object applies).
  A retryable error (timeout, 5xx, 429, malformed answer) moves on to the next provider; a 429
  also puts that provider on hold in this process for its ``Retry-After``. When every provider
  failed retryably the row is retried later (backoff, at most ``MAX_ATTEMPTS``), else it fails
  with the error in the error file. A client error (400) fails the row at once.
* Per-provider concurrency: at most ``PROVIDER_CONCURRENCY`` calls per provider in this process.
* ``Routes`` plans a batch's route once per (model, request features) and catalogue snapshot;
  rows call upstream through the shared upstream client (``state.http``: httpx's API on aiohttp's
  wire, ``http/aiohttp_transport.py``).
* The endpoint → kind / codec tables (``_KIND``, ``_CODEC``) and ``_call``'s per-endpoint branches
  are the one place a new row kind plugs in.
* Prices: the catalogue's ``batch`` plan rules where a meter has one, else the standard ones.
  The hold placed at create is an upper bound of every row (input bytes + 16 tokens, the row's
  max output tokens or :data:`charge.DEFAULT_MAX_OUTPUT`), at the dearest candidate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from aistats_gateway.batches import native, windows
from aistats_gateway.batches.media_rows import ENDPOINTS as MEDIA_ENDPOINTS
from aistats_gateway.batches.tables import Batch
from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.http.errors import APIError
from aistats_gateway.inference import charge, route
from aistats_gateway.llm.codecs import chat, messages, responses
from aistats_gateway.llm.codecs._common import Meta
from aistats_gateway.llm.ir import IRRequest, IRResponse, Usage
from aistats_gateway.providers.base import ProviderError
from aistats_gateway.providers.inference import EmbeddingsRequest

MAX_ATTEMPTS = 4
PROVIDER_CONCURRENCY = 64
_KIND = {"/v1/chat/completions": "chat.completions", "/v1/responses": "chat.completions",
         "/v1/messages": "chat.completions", "/v1/embeddings": "embeddings", "/v1/moderations": "moderations"}
_CODEC: dict[str, Any] = {"/v1/chat/completions": chat, "/v1/responses": responses, "/v1/messages": messages}


def batch_rules(rules: list[PriceRule]) -> list[PriceRule]:
    """The batch plan's rule for each meter that has one (as a standard rule), else the standard rule."""
    batch = [r.model_copy(update={"plan": "standard"}) for r in rules if r.plan == "batch"]
    covered = {r.meter for r in batch}
    return batch + [r for r in rules if r.plan == "standard" and r.meter not in covered]


def _routing_body(body: dict[str, Any], routing: Any) -> dict[str, Any]:
    return {**body, "provider": routing} if routing else body


def _decode(endpoint: str, body: dict[str, Any]) -> IRRequest | None:
    codec = _CODEC.get(endpoint)
    if codec is None:
        return None
    req: IRRequest = codec.decode_request({k: v for k, v in body.items() if k != "provider"})
    return req


def _max_output(body: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(key)
        if isinstance(v, int) and v > 0:
            return v
    return charge.DEFAULT_MAX_OUTPUT


def input_bound(body: dict[str, Any]) -> int:
    return len(orjson.dumps(body)) + 16


class Planner:
    """Prices rows (upper bound) and picks native providers on one catalogue snapshot."""

    def __init__(self, snap: Any, gateway_windows: tuple[str, ...] = windows.DEFAULT) -> None:
        self.snap = snap
        self.gateway_windows = gateway_windows
        self._cache: dict[tuple[str, str, bytes], list[route.Candidate]] = {}

    def candidates(self, endpoint: str, model: str, routing: Any,
                   req: IRRequest | None = None) -> list[route.Candidate]:
        key = (endpoint, model, orjson.dumps(routing, option=orjson.OPT_SORT_KEYS))
        got = self._cache.get(key)
        if got is None:
            routing_ = route.parse_routing(_routing_body({}, routing))
            _, got = route.candidates(self.snap, model, _KIND[endpoint], routing_,
                                      req.params if req else None)
            self._cache[key] = got
        return got

    def bound(self, endpoint: str, body: dict[str, Any], routing: Any) -> int:
        try:
            req = _decode(endpoint, body)
        except APIError:
            req = None  # the row fails when it runs, with this error in the error file
        rules = [batch_rules(c.rules) for c in self.candidates(endpoint, body["model"], routing, req)]
        out = 0 if endpoint in ("/v1/embeddings", "/v1/moderations") else _max_output(body)
        return charge.estimate(rules, input_bound(body), out)

    def native(self, endpoint: str, model: str, routing: Any) -> str:
        """The first candidate provider with a native batch API for ``endpoint`` (400 when none)."""
        for c in self.candidates(endpoint, model, routing):
            if endpoint in native.native_endpoints(c.provider_id):
                return c.provider_id
        raise APIError(400, f"No provider of '{model}' runs {endpoint} batches natively here (native mode: "
                       f"{', '.join(native.native_providers())}); use mode 'gateway'.", param="mode",
                       code="native_mode_unavailable")

    def windows(self, model: str, native_provider: str | None) -> list[str]:
        """The completion windows a batch of ``model`` accepts (``batches.windows``)."""
        return windows.for_model(self.snap, model, self.gateway_windows, native_provider)

    def native_candidate(self, b: Batch) -> route.Candidate:
        assert b.model and b.provider
        return self.candidates(b.endpoint, b.model, {"only": [b.provider]})[0]


async def planner(state: Any) -> Planner:
    return Planner(await state.catalogue.get(), windows.gateway_windows(state.settings))


@dataclass
class Limits:
    """Process-local: calls in flight and 429 holds per provider."""

    concurrency: int = PROVIDER_CONCURRENCY
    sems: dict[str, asyncio.Semaphore] | None = None
    held_until: dict[str, float] | None = None
    timeout: float = 60.0

    def sem(self, provider: str) -> asyncio.Semaphore:
        if self.sems is None:
            self.sems = {}
        got = self.sems.get(provider)
        if got is None:
            got = self.sems[provider] = asyncio.Semaphore(self.concurrency)
        return got

    def hold(self, provider: str, seconds: float) -> None:
        if self.held_until is None:
            self.held_until = {}
        self.held_until[provider] = max(self.held_until.get(provider, 0.0), time.monotonic() + seconds)

    def wait_for(self, provider: str) -> float:
        until = (self.held_until or {}).get(provider, 0.0)
        return max(0.0, until - time.monotonic())


@dataclass
class Outcome:
    status: str  # completed | failed | retry
    provider: str | None = None
    status_code: int | None = None
    body: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    cost_nanos: int = 0
    retry_in: float = 0.0


def _error(status: int, message: str, code: str | None, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"message": message, "type": type_, "param": None, "code": code}


class Routes:
    """One batch's routing, computed once per (model, request features) on one catalogue snapshot:
    a row does not re-plan its route (the batch's ``provider`` object is the same for every row)."""

    def __init__(self) -> None:
        self._snap: Any = None
        self._got: dict[tuple[str, str, frozenset[str]], tuple[str, list[route.Candidate]]] = {}

    async def candidates(self, state: Any, endpoint: str, model: str, routing: Any,
                         params: frozenset[str] | None) -> tuple[str, list[route.Candidate]]:
        snap = await state.catalogue.get()
        if snap is not self._snap:
            self._snap, self._got = snap, {}
        key = (endpoint, model, frozenset(params or ()))
        got = self._got.get(key)
        if got is None:
            got = self._got[key] = route.candidates(snap, model, _KIND[endpoint],
                                                    route.parse_routing(_routing_body({}, routing)),
                                                    set(params) if params else None)
        return got


class BatchLike(Protocol):
    workspace_id: str
    endpoint: str
    routing: Any


class RowLike(Protocol):
    body: bytes


async def run(state: Any, limits: Limits, batch: BatchLike, row: RowLike, routes: Routes | None = None,
              http: Any = None) -> Outcome:
    """Execute one row; never raises for a provider's or the request's fault."""
    if batch.endpoint in MEDIA_ENDPOINTS:  # images and audio rows: batches/execute_media.py
        from aistats_gateway.batches import execute_media

        return await execute_media.run(state, limits, batch, row)
    body: dict[str, Any] = orjson.loads(row.body)
    endpoint = batch.endpoint
    try:
        req = _decode(endpoint, body)
        model_id, cands = await (routes or Routes()).candidates(state, endpoint, body["model"], batch.routing,
                                                                frozenset(req.params) if req else None)
    except APIError as e:
        return Outcome("failed", status_code=e.status, error=_error(e.status, e.message, e.code))
    waits = [limits.wait_for(c.provider_id) for c in cands]
    if all(w > 0 for w in waits):
        return Outcome("retry", retry_in=min(waits), error=_error(429, "Every provider is rate limited.",
                                                                  "provider_rate_limited"))
    last: ProviderError | None = None
    retry_in = 0.0
    for cand, wait in zip(cands, waits, strict=True):
        if wait > 0:
            continue
        try:
            async with limits.sem(cand.provider_id):
                body_out, usage = await _call(state, endpoint, cand, req, body, model_id, http)
        except ProviderError as e:
            last = e
            if e.kind == "rate_limit":
                limits.hold(cand.provider_id, float(e.retry_after or 1.0))
                retry_in = max(retry_in, float(e.retry_after or 1.0))
            if not e.retryable:
                break
            continue
        nanos, lines = charge.cost(batch_rules(cand.rules), usage)
        return Outcome("completed", cand.provider_id, 200, body_out, None,
                       {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                        "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
                        "total_tokens": usage.total_tokens, "lines": lines}, nanos)
    assert last is not None
    if last.retryable:
        return Outcome("retry", status_code=last.status or 502, retry_in=retry_in,
                       error=_error(last.status or 502, last.message, last.code or "upstream_error", "server_error"))
    status = 400 if last.kind in ("client", "content_policy") else (last.status or 502)
    return Outcome("failed", status_code=status, error=_error(status, last.message, last.code or
                                                               "provider_rejected_request"))


async def _call(state: Any, endpoint: str, cand: route.Candidate, req: IRRequest | None, body: dict[str, Any],
                model_id: str, http: Any = None) -> tuple[dict[str, Any], Usage]:
    ctx = cand.context(http or state.http)
    meta = Meta("batchreq_" + str(time.time_ns()), body["model"], cand.provider_id, int(time.time()))
    if req is not None:
        resp = await cand.adapter.complete(route.request_for(req, cand), ctx)
        assert isinstance(resp, IRResponse)
        return _CODEC[endpoint].encode_response(resp, meta), resp.usage
    if endpoint == "/v1/embeddings":
        value = body.get("input")
        inputs = [value] if isinstance(value, str) else list(value or [])
        result = await cand.adapter.embed(EmbeddingsRequest(cand.model_slug, inputs, body.get("dimensions"), None,
                                                            body.get("user")), ctx)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(result.vectors)]
        return ({"object": "list", "data": data, "model": model_id,
                 "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens}},
                Usage(result.input_tokens, 0))
    result = await cand.adapter.moderate(cand.model_slug, body.get("input"), ctx)
    return ({"id": result.native_id or meta.id, "model": model_id, "results": result.results},
            Usage(result.input_tokens, 0))


def result_values(out: Outcome, attempts: int, now: dt.datetime) -> dict[str, Any]:
    """The columns of a finished row (completed / failed) after its attempt number ``attempts + 1``."""
    return {"status": out.status, "provider": out.provider, "status_code": out.status_code,
            "usage": out.usage, "cost_nanos": out.cost_nanos, "error": out.error,
            "response": orjson.dumps(out.body) if out.body is not None else None,
            "attempts": attempts + 1, "updated_at": now, "completed_at": now}


Runner = Callable[..., Awaitable[Outcome]]  # run's signature

"""The inference routes: chat completions, responses, messages, embeddings, moderations, generations.

Thin: parse the JSON body, authenticate (``Authorization: Bearer`` or ``x-api-key``), decode with
the protocol's codec, hand over to :mod:`service`. Errors are OpenAI-shaped except on
``/v1/messages``, which answers Anthropic's ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import select
from starlette.responses import JSONResponse, Response

from aistats_gateway.auth.dependencies import authenticate
from aistats_gateway.http import domain
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.http.responses import ERRORS, _err
from aistats_gateway.inference import charge, route, service
from aistats_gateway.inference.tables import Generation
from aistats_gateway.llm.codecs import chat, messages, responses
from aistats_gateway.llm.codecs._common import Meta, arr, integer, opt_str, string
from aistats_gateway.providers import inference_adapters  # noqa: F401  (registers the adapters)
from aistats_gateway.providers.inference import (
    EmbeddingsRequest,
    EmbeddingsResult,
    ModerationResult,
)


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


def _anthropic_err(description: str) -> dict[str, Any]:
    return {"model": AnthropicErrorResponse, "description": description}


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS, 402: _err("Insufficient credits for the request's upper-bound cost (nothing was sent upstream)"),
    404: _err("Unknown model (or generation)"), 429: _err("Rate or tokens-per-minute limit, or every provider "
                                                          "rate limited"),
    502: _err("Every provider failed"), 504: _err("Every provider timed out")}
ANTHROPIC_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _anthropic_err(doc["description"]) for status, doc in OPENAI_ERRORS.items() if status != 413}
ANTHROPIC_ERRORS[413] = ERRORS[413]  # answered by the body-size middleware before the route, OpenAI-shaped

router = APIRouter(prefix="/v1", tags=["Inference"])
_OPEN_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
MAX_EMBED_INPUTS = 2048


async def _principal(request: Request) -> service.Principal:
    auth = request.headers.get("authorization")
    token = None
    if auth and auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
    elif request.headers.get("x-api-key"):
        token = request.headers["x-api-key"].strip()
    p = await authenticate(request, token)
    return service.Principal(p.key_id, p.workspace_id, charge.KeyLimits(p.tpm_limit, p.daily_spend_limit_nanos,
                                                                        p.monthly_spend_limit_nanos))


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise APIError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _state(request: Request) -> Any:
    return request.app.state.gateway


async def _text(request: Request, decode: Callable[[dict[str, Any]], Any], endpoint: str,
                encode: Callable[[Any, Meta], dict[str, Any]],
                encoder: Callable[[Meta, dict[str, Any]], Any]) -> Response:
    principal = await _principal(request)
    body = await _body(request)
    req = decode(body)
    p = await service.plan(_state(request), principal, "chat.completions", req.model, body, req,
                           input_tokens=charge.input_upper_bound(req), output_tokens=charge.output_upper_bound(req),
                           stream=req.stream, record_endpoint=endpoint)
    if req.stream:
        return await service.stream(p, req, lambda meta: encoder(meta, body))
    return await service.complete(p, req, encode)


def _include_usage(body: dict[str, Any]) -> bool:
    so = body.get("stream_options")
    return bool(isinstance(so, dict) and so.get("include_usage"))


@router.post("/chat/completions", summary="Create a chat completion (any text model)", openapi_extra=_OPEN_BODY,
             responses=OPENAI_ERRORS)
async def chat_completions(request: Request) -> Response:
    return await _text(request, chat.decode_request, "chat.completions", chat.encode_response,
                       lambda meta, body: chat.StreamEncoder(meta, _include_usage(body)))


@router.post("/responses", summary="Create a response (OpenAI Responses API, any text model)",
             openapi_extra=_OPEN_BODY, responses=OPENAI_ERRORS)
async def create_response(request: Request) -> Response:
    return await _text(request, responses.decode_request, "responses", responses.encode_response,
                       lambda meta, body: responses.StreamEncoder(meta))


@router.post("/messages", summary="Create a message (Anthropic Messages API, any text model)",
             openapi_extra=_OPEN_BODY, responses=ANTHROPIC_ERRORS)
async def create_message(request: Request) -> Response:
    try:
        return await _text(request, messages.decode_request, "messages", messages.encode_response,
                           lambda meta, body: messages.StreamEncoder(meta))
    except (APIError, *domain.DOMAIN_ERRORS) as exc:
        e = exc if isinstance(exc, APIError) else domain.to_api_error(exc)
        return JSONResponse(messages.error_body(e.status, e.message), e.status, headers=e.headers)


# ---- embeddings and moderations -----------------------------------------------------------


def _embed_inputs(value: Any) -> list[str] | list[list[int]]:
    if isinstance(value, str):
        return [value]
    items = arr(value, "input")
    if not items:
        raise bad_request("'input' must not be empty.", "input")
    if len(items) > MAX_EMBED_INPUTS:
        raise bad_request(f"'input' accepts at most {MAX_EMBED_INPUTS} items.", "input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return [list(items)]
    if all(isinstance(x, list) for x in items):
        for i, x in enumerate(items):
            if not x or not all(isinstance(t, int) and not isinstance(t, bool) for t in x):
                raise bad_request(f"'input[{i}]' must be a non-empty array of token ids.", f"input[{i}]")
        return items
    return [string(x, f"input[{i}]") for i, x in enumerate(items)]


@router.post("/embeddings", summary="Create embeddings", openapi_extra=_OPEN_BODY, responses=OPENAI_ERRORS)
async def create_embeddings(request: Request) -> Response:
    principal = await _principal(request)
    body = await _body(request)
    model = string(body.get("model"), "model")
    if body.get("input") is None:
        raise bad_request("Missing required parameter: 'input'.", "input")
    inputs = _embed_inputs(body["input"])
    fmt = opt_str(body, "encoding_format")
    if fmt not in (None, "float", "base64"):
        raise bad_request("Invalid value for 'encoding_format': expected float or base64.", "encoding_format")
    dims = integer(body, "dimensions", 1, 65536)
    input_type = opt_str(body, "input_type")
    if input_type not in (None, "search_document", "search_query", "classification", "clustering"):
        raise bad_request("Invalid value for 'input_type'.", "input_type")
    est = sum(len(x.encode()) if isinstance(x, str) else len(x) for x in inputs)
    p = await service.plan(_state(request), principal, "embeddings", model, body, None, input_tokens=est,
                           output_tokens=0, stream=False)

    async def call(cand: route.Candidate, ctx: Any) -> EmbeddingsResult:
        # Ask for floats upstream; base64 is encoded here so every provider can serve it.
        result: EmbeddingsResult = await cand.adapter.embed(EmbeddingsRequest(
            cand.model_slug, inputs, dims, None, opt_str(body, "user"), input_type), ctx)
        return result

    cand, result, upstream_ms, attempts = await service.run_once(p, call)
    from aistats_gateway.llm.ir import Usage

    usage = Usage(result.input_tokens, 0)
    nanos, _ = await charge.close_call(p.state.sessions, p.call, charge.Outcome(
        "completed", cand.provider_id, None, usage, cand.rules, None, attempts.items, ttft_ms=int(upstream_ms)))
    data = []
    for i, v in enumerate(result.vectors):
        if fmt == "base64" and isinstance(v, list):
            import struct

            v = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        data.append({"object": "embedding", "index": i, "embedding": v})
    out = {"object": "list", "id": p.call.gen_id, "data": data, "model": p.meta.model, "provider": cand.provider_id,
           "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens, "cost": nanos / 1e9},
           "cost_nanos": nanos}
    return _json(out, upstream_ms, p)


@router.post("/moderations", summary="Classify text (and images) for policy violations", openapi_extra=_OPEN_BODY,
             responses=OPENAI_ERRORS)
async def create_moderation(request: Request) -> Response:
    principal = await _principal(request)
    body = await _body(request)
    model = opt_str(body, "model") or "openai/omni-moderation"
    value = body.get("input")
    if value is None:
        raise bad_request("Missing required parameter: 'input'.", "input")
    if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
        raise bad_request("'input' must be a string or a non-empty array.", "input")
    est = len(orjson.dumps(value))
    p = await service.plan(_state(request), principal, "moderations", model, body, None, input_tokens=est,
                           output_tokens=0, stream=False)

    async def call(cand: route.Candidate, ctx: Any) -> ModerationResult:
        result: ModerationResult = await cand.adapter.moderate(cand.model_slug, value, ctx)
        return result

    cand, result, upstream_ms, attempts = await service.run_once(p, call)
    from aistats_gateway.llm.ir import Usage

    usage = Usage(result.input_tokens, 0)
    nanos, _ = await charge.close_call(p.state.sessions, p.call, charge.Outcome(
        "completed", cand.provider_id, result.native_id, usage, cand.rules, None, attempts.items,
        ttft_ms=int(upstream_ms)))
    out: dict[str, Any] = {"id": p.call.gen_id, "object": "list", "model": p.meta.model, "provider": cand.provider_id,
                           "results": result.results, "cost_nanos": nanos}
    if result.native_id:
        out["nativeResponseId"] = result.native_id
    return _json(out, upstream_ms, p)


def _json(out: dict[str, Any], upstream_ms: float, p: service.Plan) -> Response:
    import time

    total = (time.perf_counter() - p.call.started) * 1000
    return Response(orjson.dumps(out), media_type="application/json",
                    headers={"Server-Timing": service.server_timing(upstream_ms, total), "Cache-Control": "no-store"})


# ---- generations --------------------------------------------------------------------------


async def _generation(request: Request, gen_id: str | None) -> Response:
    principal = await _principal(request)
    if not gen_id:
        raise bad_request("Missing required parameter: 'id'.", "id", code="missing_required_parameter")
    async with _state(request).sessions() as s:
        g = (await s.execute(select(Generation).where(Generation.id == gen_id))).scalar_one_or_none()
    if g is None or g.workspace_id != principal.workspace_id:
        raise APIError(404, f"No generation with id '{gen_id}'.", param="id", code="generation_not_found")
    return Response(orjson.dumps(charge.as_record(g)), media_type="application/json")


@router.get("/generations/{gen_id}", summary="The stored record of one inference call", responses=OPENAI_ERRORS)
async def get_generation(request: Request, gen_id: str) -> Response:
    return await _generation(request, gen_id)


@router.get("/generations", summary="The stored record of one inference call (?id=)", responses=OPENAI_ERRORS)
async def get_generation_by_query(request: Request, id: str | None = None) -> Response:
    return await _generation(request, id)


Handler = Callable[[Request], Awaitable[Response]]

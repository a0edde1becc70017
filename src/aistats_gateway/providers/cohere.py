"""Chat and embeddings through Cohere's v2 API (``POST {base}/v2/chat``, ``/v2/embed``).

Settings: ``AISTATS_PROVIDER_COHERE_API_KEY`` (``Authorization: Bearer``) and ``_BASE_URL`` (default
``https://api.cohere.com``). Messages and tools have the OpenAI chat shape (``developer`` → ``system``);
renamed fields: ``top_p`` → ``p`` (Cohere accepts 0.01–0.99), ``top_k`` → ``k``, ``stop`` →
``stop_sequences``; ``temperature`` is capped at 1; a JSON schema is ``response_format
{type: json_object, json_schema}``; reasoning effort/budget → ``thinking {type: enabled, token_budget}``;
``tool_choice`` required → ``REQUIRED``, none → ``NONE``. Usage is billed from ``usage.billed_units``.
Finish reasons: COMPLETE/STOP_SEQUENCE → stop, MAX_TOKENS → length, TOOL_CALL → tool_calls; a stream's
``message-end`` with ``ERROR`` is an upstream failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aistats_gateway.llm.codecs import chat
from aistats_gateway.llm.codecs._common import int_of
from aistats_gateway.llm.ir import (
    FinishReason,
    IRDelta,
    IRRequest,
    IRResponse,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import (
    EmbeddingsRequest,
    EmbeddingsResult,
    event_json,
    open_stream,
    post_json,
    sse_events,
)

DEFAULT_BASE_URL = "https://api.cohere.com"
FINISH: dict[str, FinishReason] = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
                                   "TOOL_CALL": "tool_calls"}


def _base(ctx: CallContext) -> str:
    base = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
    return base.removesuffix("/v2")


def _headers(ctx: CallContext) -> dict[str, str]:
    return {"authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}


def encode_request(req: IRRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "messages": chat.encode_messages(req.messages, developer_role=False)}
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = min(1.0, req.temperature)
    if req.top_p is not None:
        body["p"] = min(0.99, max(0.01, req.top_p))
    if req.top_k is not None:
        body["k"] = min(500, req.top_k)
    if req.stop:
        body["stop_sequences"] = req.stop
    for name in ("seed", "presence_penalty", "frequency_penalty"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    tc = req.tool_choice
    if req.tools and not (tc is not None and tc.mode == "none"):
        body["tools"] = chat.encode_tools(req.tools)
        if tc is not None and tc.mode in ("required", "tool"):
            body["tool_choice"] = "REQUIRED"
    rf = req.response_format
    if rf is not None and rf.type != "text":
        fmt: dict[str, Any] = {"type": "json_object"}
        if rf.type == "json_schema" and rf.schema:
            fmt["json_schema"] = rf.schema
        body["response_format"] = fmt
    budget = req.thinking_budget()
    if budget is not None:
        body["thinking"] = {"type": "enabled", "token_budget": budget} if budget > 0 else {"type": "disabled"}
    return body


def usage_from(u: dict[str, Any] | None) -> Usage:
    return Usage(int_of(u, "billed_units.input_tokens"), int_of(u, "billed_units.output_tokens"))


def decode_response(doc: dict[str, Any]) -> IRResponse:
    msg = doc.get("message") or {}
    text: list[str] = []
    thinking: list[str] = []
    for item in msg.get("content") or []:
        if item.get("type") == "text":
            text.append(str(item.get("text") or ""))
        elif item.get("type") == "thinking":
            thinking.append(str(item.get("thinking") or ""))
    calls = [ToolCall(str(tc.get("id") or ""), str((tc.get("function") or {}).get("name") or ""),
                      str((tc.get("function") or {}).get("arguments") or "")) for tc in msg.get("tool_calls") or []]
    finish: FinishReason = "tool_calls" if calls else FINISH.get(str(doc.get("finish_reason")), "stop")
    return IRResponse("".join(text), "".join(thinking) or None, calls, finish, usage_from(doc.get("usage")),
                      doc.get("id"), None)


class CohereChat:
    provider_id = "cohere"
    supports = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "presence_penalty",
                          "frequency_penalty", "tools", "tool_choice", "response_format", "reasoning_effort"})

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        doc = await post_json(ctx, _base(ctx) + "/v2/chat", encode_request(req), _headers(ctx), self.provider_id)
        if not isinstance(doc.get("message"), dict):
            raise ProviderError("upstream", "cohere returned no message", code="invalid_upstream_response")
        return decode_response(doc)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        body = encode_request(req)
        body["stream"] = True
        calls: dict[int, int] = {}
        async with open_stream(ctx, _base(ctx) + "/v2/chat", body, _headers(ctx), self.provider_id) as resp:
            async for ev in sse_events(resp):
                doc = event_json(ev, self.provider_id)
                if doc is None:
                    break
                kind = doc.get("type") or ev.event
                delta = doc.get("delta") or {}
                message = delta.get("message") or {}
                if kind == "message-start":
                    yield IRDelta(native_id=doc.get("id"))
                elif kind == "content-delta":
                    content = message.get("content") or {}
                    if content.get("text"):
                        yield IRDelta(text=str(content["text"]))
                    elif content.get("thinking"):
                        yield IRDelta(reasoning=str(content["thinking"]))
                elif kind in ("tool-call-start", "tool-call-delta"):
                    tc = message.get("tool_calls") or {}
                    fn = tc.get("function") or {}
                    index = calls.setdefault(int(doc.get("index") or 0), len(calls))
                    yield IRDelta(tool_call=ToolCallDelta(index, tc.get("id"), fn.get("name"),
                                                          str(fn.get("arguments") or "")))
                elif kind == "message-end":
                    reason = str(delta.get("finish_reason") or "COMPLETE")
                    if reason == "ERROR":
                        raise ProviderError("upstream", f"cohere: {delta.get('error') or 'stream error'}",
                                            code="upstream_stream_error")
                    yield IRDelta(finish_reason="tool_calls" if calls else FINISH.get(reason, "stop"))
                    yield IRDelta(usage=usage_from(delta.get("usage")))
                    break


class CohereEmbeddings:
    provider_id = "cohere"

    async def embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult:
        if req.inputs and not isinstance(req.inputs[0], str):
            raise ProviderError("client", "Cohere embeddings take text input, not token arrays", param="input",
                                code="unsupported_input")
        body: dict[str, Any] = {"model": req.model, "texts": req.inputs, "embedding_types": ["float"],
                                "input_type": req.input_type or "search_document"}
        if req.dimensions is not None:
            body["output_dimension"] = req.dimensions
        doc = await post_json(ctx, _base(ctx) + "/v2/embed", body, _headers(ctx), self.provider_id)
        vectors = (doc.get("embeddings") or {}).get("float")
        if not isinstance(vectors, list):
            raise ProviderError("upstream", "cohere returned no embeddings", code="invalid_upstream_response")
        return EmbeddingsResult(vectors, int_of(doc.get("meta"), "billed_units.input_tokens"), req.model)

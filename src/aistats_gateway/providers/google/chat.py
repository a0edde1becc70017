"""Chat and embeddings through Gemini ``generateContent`` / ``streamGenerateContent?alt=sse``.

Google AI Studio: ``{base}/v1beta/models/{m}:…`` with ``x-goog-api-key`` (settings as for video:
``AISTATS_PROVIDER_GOOGLE_AI_STUDIO_API_KEY`` / ``_BASE_URL``). Google Vertex: the same body at
``{host}/v1/projects/{P}/locations/{L}/publishers/google/models/{m}:…`` with the service account's
bearer token (``providers.google.vertex_video``).

Mapping: system/developer → ``systemInstruction``; assistant → role ``model``; tool calls →
``functionCall`` parts, tool results → ``functionResponse`` (the function name is looked up from
the call id in the history); JSON schema → ``responseMimeType`` + ``responseJsonSchema``;
reasoning effort/budget → ``thinkingConfig.thinkingBudget`` (``includeThoughts``); usage:
``promptTokenCount`` (incl. cached), ``candidatesTokenCount + thoughtsTokenCount``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from aistats_gateway.llm.codecs._common import dumps, int_of, json_args
from aistats_gateway.llm.ir import (
    FinishReason,
    ImagePart,
    IRDelta,
    IRRequest,
    IRResponse,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    new_call_id,
)
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.google import common as g
from aistats_gateway.providers.inference import (
    EmbeddingsRequest,
    EmbeddingsResult,
    event_json,
    open_stream,
    post_json,
    sse_events,
)

AI_STUDIO_BASE = "https://generativelanguage.googleapis.com"
FINISH: dict[str, FinishReason] = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                                   "RECITATION": "content_filter", "PROHIBITED_CONTENT": "content_filter",
                                   "BLOCKLIST": "content_filter", "SPII": "content_filter"}


def encode_request(req: IRRequest) -> dict[str, Any]:
    names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []

    def push(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for m in req.messages:
        if m.role in ("system", "developer"):
            continue
        parts: list[dict[str, Any]] = []
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "tool")
            push("user", [{"functionResponse": {"name": name, "response": {"content": json_args(m.text)
                                                                           if m.text.startswith(("{", "["))
                                                                           else m.text}}}])
            continue
        for p in m.content:
            if isinstance(p, TextPart):
                if p.text:
                    parts.append({"text": p.text})
            elif isinstance(p, ImagePart) and p.data is not None:
                parts.append({"inlineData": {"mimeType": p.media_type, "data": p.data}})
            else:
                parts.append({"fileData": {"fileUri": p.url, "mimeType": "image/*"}})
        for c in m.tool_calls:
            names[c.id] = c.name
            parts.append({"functionCall": {"name": c.name, "args": json_args(c.arguments)}})
        push("model" if m.role == "assistant" else "user", parts or [{"text": ""}])
    body: dict[str, Any] = {"contents": contents}
    if req.system_text:
        body["systemInstruction"] = {"parts": [{"text": req.system_text}]}
    gen: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                     ("max_tokens", "maxOutputTokens"), ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                     ("frequency_penalty", "frequencyPenalty")):
        if getattr(req, src) is not None:
            gen[dst] = getattr(req, src)
    if req.stop:
        gen["stopSequences"] = req.stop[:5]
    rf = req.response_format
    if rf is not None and rf.type != "text":
        gen["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema:
            gen["responseJsonSchema"] = rf.schema
    budget = req.thinking_budget()
    if budget is not None:
        gen["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    if gen:
        body["generationConfig"] = gen
    tc = req.tool_choice
    if req.tools and not (tc is not None and tc.mode == "none"):
        body["tools"] = [{"functionDeclarations": [
            {"name": t.name, "description": t.description or "", "parametersJsonSchema": t.parameters}
            for t in req.tools]}]
        if tc is not None:
            cfg: dict[str, Any] = {"mode": {"auto": "AUTO", "required": "ANY", "tool": "ANY"}[tc.mode]}
            if tc.mode == "tool" and tc.name:
                cfg["allowedFunctionNames"] = [tc.name]
            body["toolConfig"] = {"functionCallingConfig": cfg}
    return body


def usage_from(u: dict[str, Any] | None) -> Usage:
    thoughts = int_of(u, "thoughtsTokenCount")
    return Usage(int_of(u, "promptTokenCount"), int_of(u, "candidatesTokenCount") + thoughts,
                 int_of(u, "cachedContentTokenCount"), thoughts)


def _candidate(doc: dict[str, Any]) -> dict[str, Any]:
    cands = doc.get("candidates")
    if isinstance(cands, list) and cands and isinstance(cands[0], dict):
        return cands[0]
    feedback = doc.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        return {"finishReason": "SAFETY", "content": {"parts": []}}
    return {}


def decode_response(doc: dict[str, Any]) -> IRResponse:
    cand = _candidate(doc)
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for p in (cand.get("content") or {}).get("parts") or []:
        if "functionCall" in p:
            fc = p["functionCall"] or {}
            calls.append(ToolCall(str(fc.get("id") or new_call_id()), str(fc.get("name") or ""),
                                  dumps(fc.get("args") or {})))
        elif p.get("thought"):
            thoughts.append(str(p.get("text") or ""))
        elif "text" in p:
            text.append(str(p["text"]))
    finish: FinishReason = "tool_calls" if calls else FINISH.get(str(cand.get("finishReason")), "stop")
    return IRResponse("".join(text), "".join(thoughts) or None, calls, finish,
                      usage_from(doc.get("usageMetadata")), doc.get("responseId"), doc.get("modelVersion"))


class GeminiChat:
    supports = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "presence_penalty",
                          "frequency_penalty", "tools", "tool_choice", "response_format", "reasoning_effort"})
    native = frozenset({"reasoning_effort"})  # effort/budget → thinkingConfig.thinkingBudget

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id

    async def _target(self, ctx: CallContext, model: str, method: str) -> tuple[str, dict[str, str]]:
        m = quote(model, safe=".-_")
        if self.provider_id == "google-vertex":
            from aistats_gateway.providers.google import vertex_video as gv

            location = gv._location(ctx)
            url = f"{gv.host(ctx, location)}/v1/projects/{gv._project(ctx)}/locations/{location}" \
                  f"/publishers/google/models/{m}:{method}"
            return url, {"authorization": f"Bearer {await gv.access_token(ctx)}"}
        if not ctx.api_key:
            raise ProviderError("auth", "google-ai-studio: no API key configured", code="provider_auth_failed")
        base = g.strip_version(ctx.base_url or AI_STUDIO_BASE, "v1beta", "v1")
        return f"{base}/v1beta/models/{m}:{method}", {"x-goog-api-key": ctx.api_key}

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        url, headers = await self._target(ctx, req.model, "generateContent")
        doc = await post_json(ctx, url, encode_request(req), headers, self.provider_id)
        return decode_response(doc)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        url, headers = await self._target(ctx, req.model, "streamGenerateContent")
        calls = 0
        finish: FinishReason | None = None
        usage = Usage()
        async with open_stream(ctx, url + "?alt=sse", encode_request(req), headers, self.provider_id) as resp:
            async for ev in sse_events(resp):
                doc = event_json(ev, self.provider_id)
                if doc is None:
                    break
                if isinstance(doc.get("error"), dict):
                    raise ProviderError("upstream", f"{self.provider_id}: {doc['error'].get('message')}",
                                        code="upstream_stream_error")
                cand = _candidate(doc)
                for p in (cand.get("content") or {}).get("parts") or []:
                    if "functionCall" in p:
                        fc = p["functionCall"] or {}
                        yield IRDelta(tool_call=ToolCallDelta(calls, str(fc.get("id") or new_call_id()),
                                                              str(fc.get("name") or ""), dumps(fc.get("args") or {})))
                        calls += 1
                    elif p.get("thought") and p.get("text"):
                        yield IRDelta(reasoning=str(p["text"]), native_id=doc.get("responseId"))
                    elif p.get("text"):
                        yield IRDelta(text=str(p["text"]), native_id=doc.get("responseId"))
                if cand.get("finishReason"):
                    finish = "tool_calls" if calls else FINISH.get(str(cand["finishReason"]), "stop")
                if isinstance(doc.get("usageMetadata"), dict):
                    usage = usage_from(doc["usageMetadata"])
        if finish is not None:
            yield IRDelta(finish_reason=finish)
        yield IRDelta(usage=usage)


class GeminiEmbeddings:
    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id
        self._chat = GeminiChat(provider_id)

    async def embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult:
        if req.inputs and not isinstance(req.inputs[0], str):
            raise ProviderError("client", "Gemini embeddings take text input, not token arrays", param="input",
                                code="unsupported_input")
        url, headers = await self._chat._target(ctx, req.model, "batchEmbedContents")
        model = f"models/{req.model}"
        reqs: list[dict[str, Any]] = []
        for text in req.inputs:
            one: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if req.dimensions is not None:
                one["outputDimensionality"] = req.dimensions
            reqs.append(one)
        doc = await post_json(ctx, url, {"requests": reqs}, headers, self.provider_id)
        embs = doc.get("embeddings")
        if not isinstance(embs, list):
            raise ProviderError("upstream", f"{self.provider_id} returned no embeddings",
                                code="invalid_upstream_response")
        # Gemini reports no token count for embeddings; estimate 1 token per 4 characters (rounded up).
        tokens = sum((len(t) + 3) // 4 for t in req.inputs if isinstance(t, str))
        return EmbeddingsResult([e.get("values") for e in embs if isinstance(e, dict)], tokens, req.model)

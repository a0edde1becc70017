"""Fake Gemini inference for the Google fakes (:mod:`.google` mounts these routes next to Veo): the Gemini API
(google-ai-studio) and Vertex AI (google-vertex) ``generateContent`` family.

Gemini API (``x-goog-api-key`` header or ``?key=``; the Veo fake's key and messages), under ``/v1beta`` and
``/v1``: ``models/{m}:generateContent``, ``:streamGenerateContent`` (``?alt=sse``: SSE frames
``data: {chunk}`` separated by CRLF CRLF, no ``[DONE]``; without ``alt=sse``: one streamed JSON array),
``:countTokens``, ``:embedContent``, ``:batchEmbedContents``; and the OpenAI-compatible
``/v1beta/openai/chat/completions`` and ``/embeddings`` (:mod:`.openai_inference`, Bearer = the API key).
Vertex AI (OAuth bearer from the fake's token endpoint; the path's project must be the service account's),
under ``/v1`` and ``/v1beta1``: ``projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent``,
``:streamGenerateContent``, ``:countTokens``. Vertex needs a ``role`` on every content; answers carry
``createTime`` and ``usageMetadata.trafficType``.

Requests accept camelCase and snake_case field names (proto JSON); unknown fields answer 400
``Invalid JSON payload received. Unknown name "x"…``. Checks: ``contents`` present and each with parts;
roles ``user``/``model``; a ``functionCall`` turn must follow a user or function-response turn and be answered
by as many ``functionResponse`` parts; ``generationConfig`` ranges (temperature 0–2, topP 0–1,
candidateCount 1–8, ≤ 5 stopSequences), ``responseSchema`` needs ``responseMimeType: application/json``;
``thinkingConfig.thinkingBudget`` (-1 dynamic, 0 off except for *-pro models) or ``thinkingLevel``.
Errors: ``{"error": {code, message, status, details?}}`` (:mod:`.google_errors`); injected 429s carry a
``RetryInfo`` detail (Google sends no Retry-After header).

Output (see :mod:`.inference_common`): thinking models (``2.5`` / ``gemini-3`` in the name) report
``thoughtsTokenCount`` (dynamic: 32, else min(budget, 64)) and, with ``includeThoughts``, a ``thought: true``
part first; function calls are ``functionCall`` parts (with a ``thoughtSignature`` on thinking models),
finishReason ``STOP``, ``MAX_TOKENS`` when ``maxOutputTokens`` (which includes thoughts) cuts the answer.
``usageMetadata``: ``promptTokenCount`` (includes ``cachedContentTokenCount``), ``candidatesTokenCount``
(excludes thoughts), ``thoughtsTokenCount``, ``totalTokenCount``; repeated, cumulative, on every stream chunk.
A prompt containing a ``block_words`` entry answers 200 with ``promptFeedback.blockReason = "SAFETY"`` and no
candidates. A mid-stream failure is a ``data: {"error": {...}}`` frame. Embeddings report no usage (as the
API); their vectors are seeded unit vectors (3072 dims for gemini-embedding-*, else 768).
Not faked: cachedContents, files, grounding/code execution tools (accepted, ignored), safety ratings.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .google_errors import ApiError, invalid
from .google_state import FakeGoogleState
from .inference_common import (
    IMAGE_TOKENS,
    InferenceState,
    RecordedCall,
    count_tokens,
    example_for_schema,
    finish_text,
    first_byte_wait,
    make_usage,
    pick_tool,
    pieces,
    read_json_body,
    reasoning_tokens_for,
    record,
    seeded_vector,
    stream,
)

TOP = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
                 "cachedContent", "labels", "model"})
GEN = frozenset({"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
                 "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
                 "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
                 "thinkingConfig", "mediaResolution", "imageConfig", "audioTimestamp", "routingConfig"})
OPAQUE = frozenset({"args", "response", "parameters", "parametersJsonSchema", "responseSchema",
                    "responseJsonSchema", "labels", "properties", "schema"})
FINISH = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS"}


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def normalize(value: Any) -> Any:
    """snake_case → camelCase keys (proto JSON accepts both), leaving user-defined objects alone."""
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {_camel(k): (v if _camel(k) in OPAQUE else normalize(v)) for k, v in value.items()}
    return value


def _unknown(name: str, where: str | None = None) -> ApiError:
    at = f" at '{where}'" if where else ""
    msg = f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
    return ApiError(400, "INVALID_ARGUMENT", msg, [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                                    "fieldViolations": [{"field": where or "", "description": msg}]}])


def _lower_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset schemas use upper-case types (``STRING``); JSON schema uses lower case."""
    if isinstance(schema, list):
        return [_lower_schema(s) for s in schema]
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_schema(v)) for k, v in schema.items()}
    return schema


def _parts_text(parts: list[dict[str, Any]]) -> tuple[str, int, int, int]:
    """(text, extra tokens, function calls, function responses) of a content's parts."""
    text, extra, calls, responses = "", 0, 0, 0
    for p in parts:
        if isinstance(p.get("text"), str):
            text += p["text"]
        elif "inlineData" in p or "fileData" in p:
            extra += IMAGE_TOKENS
        elif isinstance(p.get("functionCall"), dict):
            calls += 1
            extra += count_tokens(str(p["functionCall"].get("name", ""))) + count_tokens(
                json.dumps(p["functionCall"].get("args", {})))
        elif isinstance(p.get("functionResponse"), dict):
            responses += 1
            text += json.dumps(p["functionResponse"].get("response", {}))
    return text, extra, calls, responses


def parse_contents(contents: Any, vertex: bool) -> tuple[int, str]:
    """Validate ``contents``; (tokens, echo text)."""
    if not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified\n", "contents")
    if not isinstance(contents, list):
        raise invalid("Invalid value at 'contents': expected a list of Content.", "contents")
    tokens, echo, open_calls, prev_role = 0, "", 0, None
    for i, c in enumerate(contents):
        if not isinstance(c, dict):
            raise invalid(f"Invalid value at 'contents[{i}]': expected a Content object.", f"contents[{i}]")
        for k in c:
            if k not in ("role", "parts"):
                raise _unknown(k, f"contents[{i}]")
        role = c.get("role")
        if role is None and vertex:
            raise invalid("Please use a valid role: user, model.", f"contents[{i}].role")
        role = role or "user"
        if role not in ("user", "model", "function"):
            raise invalid("Please use a valid role: user, model.", f"contents[{i}].role")
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n",
                          f"contents[{i}].parts")
        text, extra, calls, responses = _parts_text(parts)
        if open_calls and responses != open_calls:
            raise invalid("Please ensure that the number of function response parts is equal to the number of "
                          "function call parts of the function call turn.", f"contents[{i}]")
        if calls and prev_role == "model":
            raise invalid("Please ensure that function call turn comes immediately after a user turn or after a "
                          "function response turn.", f"contents[{i}]")
        open_calls, prev_role = calls, role
        tokens += count_tokens(text) + extra
        if role in ("user", "function"):
            echo = text if not responses else "".join(
                json.dumps(p["functionResponse"].get("response", {})) for p in parts if "functionResponse" in p)
    return tokens, echo


def _config_number(cfg: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool = False) -> Any:
    v = cfg.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise invalid(f"Invalid value at 'generation_config.{name}' ({type(v).__name__}), expected a number.",
                      f"generation_config.{name}")
    if v < lo or (hi is not None and v > hi):
        raise invalid(f"* GenerateContentRequest.generation_config.{name}: {name} must be in the range "
                      f"[{lo:g}, {hi if hi is not None else 'inf'}].\n", f"generation_config.{name}")
    return v


def _tools(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str | None, int]:
    decls: list[tuple[str, Any]] = []
    for i, tool in enumerate(body.get("tools") or []):
        for j, fd in enumerate(tool.get("functionDeclarations") or [] if isinstance(tool, dict) else []):
            if not isinstance(fd, dict) or not isinstance(fd.get("name"), str) or not fd["name"]:
                raise invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: [FIELD_INVALID]"
                              " Invalid function name.\n", f"tools[{i}].function_declarations[{j}].name")
            schema = fd.get("parametersJsonSchema") or _lower_schema(fd.get("parameters"))
            decls.append((fd["name"], schema))
    fcc = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
    mode = str(fcc.get("mode", "AUTO")).upper()
    allowed = fcc.get("allowedFunctionNames") or []
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise invalid(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode}).",
                      "tool_config.function_calling_config.mode")
    choice: str | None = {"ANY": "required", "NONE": "none"}.get(mode, "auto")
    if mode == "ANY" and len(allowed) == 1:
        choice = allowed[0]
    tokens = sum(count_tokens(json.dumps(t, sort_keys=True)) for t in body.get("tools") or [])
    return decls, choice, tokens


def _thinking(model: str, gen: dict[str, Any]) -> tuple[int, bool]:
    """(thought tokens, include thought parts)."""
    tc = gen.get("thinkingConfig") or {}
    if not isinstance(tc, dict):
        raise invalid("Invalid value at 'generation_config.thinking_config'.", "generation_config.thinking_config")
    thinking_model = "2.5" in model or "gemini-3" in model
    budget, level = tc.get("thinkingBudget"), tc.get("thinkingLevel")
    if budget is not None and level is not None:
        raise invalid("You can only set only one of thinking budget and thinking level.",
                      "generation_config.thinking_config")
    if not thinking_model:
        if budget not in (None, 0) or level is not None:
            raise invalid("Thinking is not supported by this model.", "generation_config.thinking_config")
        return 0, False
    if budget == 0 and "pro" in model:
        raise invalid("Budget 0 is invalid. This model only works in thinking mode.",
                      "generation_config.thinking_config.thinking_budget")
    if level is not None:
        tokens = reasoning_tokens_for(str(level).lower())
    elif budget is None or budget == -1:
        tokens = 32
    elif not isinstance(budget, int) or budget < 0:
        raise invalid("thinking_budget must be -1 or a non-negative integer.",
                      "generation_config.thinking_config.thinking_budget")
    else:
        tokens = reasoning_tokens_for(None, budget)
    return tokens, bool(tc.get("includeThoughts")) and tokens > 0


def build(state: InferenceState, model: str, raw: Any, vertex: bool) -> tuple[dict[str, Any], int, list[str]]:
    """Validate a generateContent body; (final response, candidate count, stream text pieces of candidate 0)."""
    if not isinstance(raw, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    body = normalize(raw)
    for k in body:
        if k not in TOP:
            raise _unknown(k)
    gen = body.get("generationConfig") or {}
    for k in gen:
        if k not in GEN:
            raise _unknown(k, "generation_config")
    tokens, echo = parse_contents(body.get("contents"), vertex)
    sys_parts = (body.get("systemInstruction") or {}).get("parts") or []
    tokens += count_tokens(_parts_text(sys_parts)[0])
    _config_number(gen, "temperature", 0, 2)
    _config_number(gen, "topP", 0, 1)
    n = _config_number(gen, "candidateCount", 1, 8, integer=True) or 1
    max_out = _config_number(gen, "maxOutputTokens", 1, None, integer=True)
    stops = gen.get("stopSequences") or []
    if not isinstance(stops, list) or len(stops) > 5:
        raise invalid("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are "
                      "allowed.\n", "generation_config.stop_sequences")
    mime = gen.get("responseMimeType", "text/plain")
    schema = gen.get("responseJsonSchema") or _lower_schema(gen.get("responseSchema"))
    if schema is not None and mime != "application/json":
        raise invalid("* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be "
                      "application/json when response_schema is set.\n", "generation_config.response_mime_type")
    thoughts, include_thoughts = _thinking(model, gen)
    decls, choice, tool_tokens = _tools(body)
    tokens += tool_tokens
    if any(w.lower() in echo.lower() for w in state.block_words):
        usage = make_usage(state, tokens, 0)
        return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage_json(usage, vertex),
                "modelVersion": model, "responseId": secrets.token_urlsafe(16)}, 0, []
    parts: list[dict[str, Any]] = []
    if include_thoughts:
        parts.append({"text": " ".join(["Thinking"] * thoughts), "thought": True})
    calls = pick_tool(state, decls, choice, echo)
    if calls:
        for name, args in calls:
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if thoughts:
                part["thoughtSignature"] = hashlib.sha256(f"{name}{args}".encode()).hexdigest()
            parts.append(part)
        out = sum(count_tokens(name) + count_tokens(json.dumps(args)) for name, args in calls)
        reason, chunks = "STOP", []
    else:
        if mime == "application/json" and state.reply_text is None:
            text, why = json.dumps(example_for_schema(schema, echo.strip()[:40] or "x") if schema is not None
                                   else {"echo": echo.strip()}), "stop"
        else:
            text, why = finish_text(state, echo, None if max_out is None else max(0, max_out - thoughts), stops)
        parts.append({"text": text})
        out, reason, chunks = count_tokens(text), FINISH[why], pieces(text)
    usage = make_usage(state, tokens, out * n, thoughts * n)
    resp: dict[str, Any] = {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": reason, "index": i}
                       for i in range(n)],
        "usageMetadata": usage_json(usage, vertex), "modelVersion": model, "responseId": secrets.token_urlsafe(16)}
    if vertex:
        resp["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return resp, n, chunks


def usage_json(u: Any, vertex: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"promptTokenCount": u.input_tokens}
    candidates = u.output_tokens - u.reasoning_tokens
    if candidates:
        out["candidatesTokenCount"] = candidates
    out["totalTokenCount"] = u.total_tokens
    if u.cached_tokens:
        out["cachedContentTokenCount"] = u.cached_tokens
    out["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": u.input_tokens}]
    if u.reasoning_tokens:
        out["thoughtsTokenCount"] = u.reasoning_tokens
    if vertex:
        out["trafficType"] = "ON_DEMAND"
    return out


def stream_chunks(resp: dict[str, Any], chunks: list[str]) -> list[dict[str, Any]]:
    """The response split into cumulative-usage chunks of ~4 tokens (function calls come whole)."""
    if not resp.get("candidates"):
        return [resp]
    final = resp["candidates"][0]
    parts = final["content"]["parts"]
    usage = resp["usageMetadata"]
    if not chunks or len(resp["candidates"]) > 1:
        return [resp]
    head = [p for p in parts if p.get("thought")]
    groups = ["".join(chunks[i:i + 4]) for i in range(0, len(chunks), 4)]
    out, sent = [], 0
    for k, text in enumerate(groups):
        sent += count_tokens(text)
        part_list = (head if k == 0 else []) + [{"text": text}]
        cand: dict[str, Any] = {"content": {"parts": part_list, "role": "model"}, "index": 0}
        u = dict(usage)
        if k < len(groups) - 1:
            u["candidatesTokenCount"] = sent
            u["totalTokenCount"] = usage["promptTokenCount"] + sent + usage.get("thoughtsTokenCount", 0)
        else:
            cand["finishReason"] = final["finishReason"]
        out.append({**{k2: v for k2, v in resp.items() if k2 != "candidates"}, "candidates": [cand],
                    "usageMetadata": u})
    return out


def _injected(state: InferenceState, status: int) -> ApiError:
    msg = state.fail_message
    if status == 429:
        return ApiError(429, "RESOURCE_EXHAUSTED", msg or "Resource has been exhausted (e.g. check quota).",
                        [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                          "retryDelay": f"{state.retry_after_seconds:g}s"}])
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
    default = {503: "The model is overloaded. Please try again later.",
               500: "An internal error has occurred. Please retry or report in "
                    "https://developers.generativeai.google/guide/troubleshooting"}
    return ApiError(status, names.get(status, "UNKNOWN"), msg or default.get(status, f"Injected failure ({status})."))


def _error_frame(_i: int) -> bytes:
    return b'data: {"error": {"code": 503, "message": "The model is overloaded. Please try again later.", ' \
           b'"status": "UNAVAILABLE"}}\r\n\r\n'


Handler = Callable[[Request, Any, str, bool], Awaitable[Response]]


def gemini_routes(gstate: FakeGoogleState, state: InferenceState) -> list[BaseRoute]:
    """Gemini routes bound to the Veo fake's auth state ``gstate`` and the inference state ``state``."""
    def endpoint(auth: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            rec: RecordedCall = record(state, request)
            try:
                if auth == "key":
                    check_key(gstate, request)
                else:
                    vertex_project(gstate, request, check_bearer(gstate, request))
                if (status := state.take_failure()) is not None:
                    raise _injected(state, status)
                model = request.path_params["model"]
                if state.models is not None and model not in state.models:
                    raise ApiError(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is "
                                   "not supported for generateContent. Call ListModels to see the list of available "
                                   "models and their supported methods.")
                try:
                    body = await read_json_body(request, rec)
                except ValueError:
                    raise invalid("Invalid JSON payload received. Unexpected token.") from None
                response = await handler(request, body, model, auth == "bearer")
            except ApiError as exc:
                response = exc.response()
            rec.status = response.status_code
            return response
        return wrapped

    async def generate(request: Request, body: Any, model: str, vertex: bool) -> Response:
        resp, _, _ = build(state, model, body, vertex)
        await first_byte_wait(state)
        return JSONResponse(resp)

    async def stream_generate(request: Request, body: Any, model: str, vertex: bool) -> Response:
        resp, _, chunks = build(state, model, body, vertex)
        parts = stream_chunks(resp, chunks)
        await first_byte_wait(state)
        if request.query_params.get("alt") == "sse":
            frames = [f"data: {json.dumps(p)}\r\n\r\n".encode() for p in parts]
            return stream(state, frames, _error_frame)
        frames = [(("[" if i == 0 else ",\r\n") + json.dumps(p, indent=2)).encode() for i, p in enumerate(parts)]
        frames[-1] += b"]"
        return stream(state, frames, lambda i: b"]", media_type="application/json")

    async def count(request: Request, body: Any, model: str, vertex: bool) -> Response:
        body = normalize(body) if isinstance(body, dict) else {}
        inner = body.get("generateContentRequest") or body
        tokens, _ = parse_contents(inner.get("contents"), vertex)
        tokens += count_tokens(_parts_text(((inner.get("systemInstruction") or {}).get("parts")) or [])[0])
        return JSONResponse({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT",
                                                                             "tokenCount": tokens}]})

    def embed_one(req: Any, model: str, where: str) -> tuple[list[float], int]:
        req = normalize(req) if isinstance(req, dict) else None
        parts = ((req or {}).get("content") or {}).get("parts")
        if not isinstance(parts, list) or not parts:
            raise invalid("* EmbedContentRequest.content: content is not specified\n", f"{where}content")
        text = _parts_text(parts)[0]
        full = 3072 if "gemini-embedding" in model else 768
        dims = req.get("outputDimensionality") if req else None
        if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= full):
            raise invalid(f"* EmbedContentRequest.output_dimensionality: output_dimensionality must be in [1, "
                          f"{full}].\n", f"{where}output_dimensionality")
        return seeded_vector(text, dims or full), count_tokens(text)

    async def embed(request: Request, body: Any, model: str, vertex: bool) -> Response:
        values, tokens = embed_one(body, model, "")
        make_usage(state, tokens, 0)
        await first_byte_wait(state)
        return JSONResponse({"embedding": {"values": values}})

    async def batch_embed(request: Request, body: Any, model: str, vertex: bool) -> Response:
        reqs = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs:
            raise invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n", "requests")
        out, total = [], 0
        for i, r in enumerate(reqs):
            if isinstance(r, dict) and r.get("model") not in (None, f"models/{model}"):
                raise invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: the model of each request must be "
                              f"models/{model}.\n", f"requests[{i}].model")
            values, tokens = embed_one(r, model, f"requests[{i}].")
            out.append({"values": values})
            total += tokens
        make_usage(state, total, 0)
        await first_byte_wait(state)
        return JSONResponse({"embeddings": out})

    routes: list[BaseRoute] = []
    for version in ("v1beta", "v1"):
        studio = f"/{version}/models/{{model}}"
        routes += [
            Route(studio + ":generateContent", endpoint("key", generate), methods=["POST"]),
            Route(studio + ":streamGenerateContent", endpoint("key", stream_generate), methods=["POST"]),
            Route(studio + ":countTokens", endpoint("key", count), methods=["POST"]),
            Route(studio + ":embedContent", endpoint("key", embed), methods=["POST"]),
            Route(studio + ":batchEmbedContents", endpoint("key", batch_embed), methods=["POST"]),
        ]
    from .openai_inference import (
        inference_routes,  # Gemini's OpenAI-compatible endpoint (Bearer = the API key)
    )
    routes += inference_routes(state, flavor="compat", prefix="/v1beta/openai")
    for version in ("v1", "v1beta1"):
        base = f"/{version}/projects/{{project}}/locations/{{location}}/publishers/google/models/{{model}}"
        routes += [
            Route(base + ":generateContent", endpoint("bearer", generate), methods=["POST"]),
            Route(base + ":streamGenerateContent", endpoint("bearer", stream_generate), methods=["POST"]),
            Route(base + ":countTokens", endpoint("bearer", count), methods=["POST"]),
        ]
    return routes


# ---------------------------------------------------------------- auth (the Veo fake's keys and tokens)
def check_key(gstate: FakeGoogleState, request: Request) -> None:
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if not key:
        raise ApiError(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                       "established identity). Please use API Key or other form of API consumer identity to call "
                       "this API.")
    if key != gstate.api_key:
        raise ApiError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                       [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])


def check_bearer(gstate: FakeGoogleState, request: Request) -> str:
    """The service-account email of a valid access token from the fake's token endpoint."""
    auth = request.headers.get("authorization", "")
    held = gstate.tokens.get(auth[7:].strip() if auth.lower().startswith("bearer ") else "")
    if held is None or held[1] <= time.time():
        raise ApiError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                       "access token, login cookie or other valid authentication credential. See "
                       "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                       [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                         "reason": "ACCESS_TOKEN_EXPIRED" if held else "CREDENTIALS_MISSING",
                         "domain": "googleapis.com"}])
    return held[0]


def vertex_project(gstate: FakeGoogleState, request: Request, email: str) -> None:
    p = request.path_params
    account = gstate.service_accounts.get(email)
    if account is None or account.project != p["project"]:
        resource = f"projects/{p['project']}/locations/{p['location']}/publishers/google/models/{p['model']}"
        raise ApiError(403, "PERMISSION_DENIED", f"Permission 'aiplatform.endpoints.predict' denied on resource "
                       f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
                       [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                         "domain": "aiplatform.googleapis.com"}])

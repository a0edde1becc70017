"""Fake Cohere v2 API (docs.cohere.com: Chat v2, chat streaming events, Embed v2, errors) for tests.

Routes: ``POST /v2/chat`` (plain and ``stream: true``) and ``POST /v2/embed``; ``Authorization: Bearer``.
Errors are Cohere's ``{"id", "message"}`` (401 "invalid api token", 400 "invalid request: …",
429 with ``Retry-After``, 5xx); unknown fields → 400 "invalid request: unknown field: parameter X is not a
valid field".

Chat: ``model`` and ``messages`` required; roles system/user/assistant/tool; ``content`` a string or
``text``/``image_url``/``document`` parts; assistant ``tool_calls`` (``{id, type: "function", function:
{name, arguments}}``) must each be answered by a ``tool`` message with that ``tool_call_id``;
``temperature`` 0–1, ``p`` 0.01–0.99, ``k`` 0–500, ``max_tokens`` ≥ 1, ``tool_choice`` REQUIRED|NONE,
``response_format`` text|json_object (with optional ``json_schema``), ``thinking`` ``{type: enabled|disabled,
token_budget}``. The answer: ``{id, finish_reason (COMPLETE|STOP_SEQUENCE|MAX_TOKENS|TOOL_CALL),
message: {role, content: [{type: "text", text}] | tool_plan + tool_calls, citations: []}, usage}``. With
thinking, a ``{type: "thinking", thinking}`` content item comes first. ``usage.billed_units`` are the billed
``input_tokens``/``output_tokens`` (:mod:`.inference_common` counts); ``usage.tokens`` are the raw counts,
the input including ``TEMPLATE_TOKENS`` of prompt template (as upstream, raw ≥ billed) — bill from
``billed_units``.
Streams: SSE ``event: <type>`` + ``data: {"type", …}`` frames: ``message-start``, ``content-start`` /
``content-delta`` (``delta.message.content.text``) / ``content-end``, or ``tool-plan-delta`` then
``tool-call-start`` / ``tool-call-delta`` (argument fragments) / ``tool-call-end``; ``message-end`` with
``delta.finish_reason`` and ``delta.usage``. A mid-stream failure is a ``message-end`` with
``finish_reason: "ERROR"`` and ``delta.error``.
Embed: ``model``, ``input_type`` (search_document|search_query|classification|clustering|image) and one of
``texts``/``images``/``inputs`` (≤ 96) required; ``embedding_types`` float|int8|uint8|binary|ubinary|base64;
``output_dimension`` 256|512|1024|1536 (embed-v4 only); sizes 1536 (v4), 1024 (v3), 384 (light).
Answers ``{id, embeddings: {<type>: [...]}, texts, meta: {api_version, billed_units: {input_tokens}},
response_type: "embeddings_by_type"}``. Not faked: documents/citations content, rerank, classify, v1 API.
"""
from __future__ import annotations

import base64
import json
import secrets
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .inference_common import (
    IMAGE_TOKENS,
    InferenceState,
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
    sse,
    stream,
)

CHAT_PARAMS = frozenset({"model", "messages", "tools", "strict_tools", "documents", "citation_options",
                         "response_format", "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed",
                         "frequency_penalty", "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking",
                         "priority", "stream"})
EMBED_PARAMS = frozenset({"model", "input_type", "texts", "images", "inputs", "embedding_types", "output_dimension",
                          "truncate", "max_tokens", "priority"})
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
EMBED_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")
TEMPLATE_TOKENS = 4
FINISH = {"stop": "COMPLETE", "stop_sequence": "STOP_SEQUENCE", "length": "MAX_TOKENS"}


class CohereError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"id": str(uuid.uuid4()), "message": self.message}, status_code=self.status,
                            headers=self.headers)


def bad(message: str) -> CohereError:
    return CohereError(400, f"invalid request: {message}")


def _injected(state: InferenceState, status: int) -> CohereError:
    msg = state.fail_message
    if status == 429:
        return CohereError(429, msg or "You are past the per minute request limit, please wait and try again later.",
                           {"retry-after": f"{state.retry_after_seconds:g}"})
    if status == 401:
        return CohereError(401, msg or "invalid api token")
    if status >= 500:
        return CohereError(status, msg or ("internal server error, this has been reported to our developers"
                                           if status == 500 else "service unavailable"))
    return CohereError(status, msg or f"injected failure ({status})")


def _number(body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise bad(f"{name} must be a number")
    if v < lo or (hi is not None and v > hi):
        raise bad(f"{name} must be between {lo:g} and {hi if hi is not None else 'infinity'}, got {v}")
    return v


def _text(content: Any, where: str) -> tuple[str, int]:
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise bad(f"{where} must be a string or a list of content items")
    text, extra = "", 0
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text += part["text"]
        elif kind in ("image_url", "document"):
            extra += IMAGE_TOKENS
        else:
            raise bad(f"{where}[{j}].type must be one of text, image_url, document")
    return text, extra


def parse_messages(messages: Any) -> tuple[int, str]:
    if not isinstance(messages, list) or not messages:
        raise bad("messages must contain at least one message")
    tokens, echo, pending = 0, "", set[str]()
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(f"messages[{i}].role must be one of system, user, assistant, tool")
        if role != "tool" and pending:
            raise bad(f"tool call ids {sorted(pending)} were not answered by tool messages")
        if role == "assistant":
            text, extra = _text(m.get("content") or "", f"messages[{i}].content")
            for call in m.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(call.get("id"), str):
                    raise bad(f"messages[{i}].tool_calls must be {{id, type, function: {{name, arguments}}}}")
                pending.add(call["id"])
                extra += count_tokens(str(fn.get("name", ""))) + count_tokens(str(fn.get("arguments", "")))
            extra += count_tokens(str(m.get("tool_plan") or ""))
        else:
            if m.get("content") is None:
                raise bad(f"messages[{i}].content is required")
            content = m["content"]
            if role == "tool" and isinstance(content, list):
                content = [p if p.get("type") != "document" else {"type": "text", "text": json.dumps(p.get(
                    "document", {}))} for p in content if isinstance(p, dict)]
            text, extra = _text(content, f"messages[{i}].content")
            if role == "tool":
                cid = m.get("tool_call_id")
                if cid not in pending:
                    raise bad(f"messages[{i}].tool_call_id {cid!r} does not match a preceding tool call")
                pending.discard(cid)
            if role in ("user", "tool"):
                echo = text
        tokens += count_tokens(text) + extra
    if pending:
        raise bad(f"tool call ids {sorted(pending)} were not answered by tool messages")
    return tokens, echo


def build_chat(state: InferenceState, body: dict[str, Any]) -> dict[str, Any]:
    if state.reject_unknown_params:
        for k in body:
            if k not in CHAT_PARAMS:
                raise bad(f"unknown field: parameter {k} is not a valid field")
    for k in ("model", "messages"):
        if body.get(k) is None:
            raise bad(f"{k} is required")
    tokens, echo = parse_messages(body["messages"])
    _number(body, "temperature", 0, 1)
    _number(body, "p", 0.01, 0.99)
    _number(body, "k", 0, 500, integer=True)
    max_tokens = _number(body, "max_tokens", 1, None, integer=True)
    tools = []
    for i, t in enumerate(body.get("tools") or []):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"tools[{i}] must be {{type: function, function: {{name, parameters}}}}")
        tools.append((fn["name"], fn.get("parameters")))
    tokens += sum(count_tokens(json.dumps(t, sort_keys=True)) for t in body.get("tools") or [])
    tc = body.get("tool_choice")
    if tc not in (None, "REQUIRED", "NONE"):
        raise bad("tool_choice must be one of REQUIRED, NONE")
    if tc is not None and not tools:
        raise bad("tool_choice requires tools to be specified")
    rf = body.get("response_format") or {"type": "text"}
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object"):
        raise bad("response_format.type must be one of text, json_object")
    thinking = body.get("thinking") or {}
    if not isinstance(thinking, dict) or thinking.get("type", "disabled") not in ("enabled", "disabled"):
        raise bad("thinking.type must be one of enabled, disabled")
    budget = thinking.get("token_budget")
    reasoning = reasoning_tokens_for(None, budget if isinstance(budget, int) else 64) if thinking.get(
        "type") == "enabled" else 0
    calls = pick_tool(state, tools, {"REQUIRED": "required", "NONE": "none"}.get(tc or "", "auto"), echo)
    message: dict[str, Any] = {"role": "assistant"}
    content: list[dict[str, Any]] = []
    if reasoning:
        content.append({"type": "thinking", "thinking": " ".join(["Reasoning"] * reasoning)})
    if calls:
        plan = "I will call " + ", ".join(n for n, _ in calls) + "."
        message["tool_plan"] = plan
        message["tool_calls"] = [{"id": f"{name}_{secrets.token_hex(4)}", "type": "function",
                                  "function": {"name": name, "arguments": json.dumps(args)}} for name, args in calls]
        out = count_tokens(plan) + sum(count_tokens(n) + count_tokens(json.dumps(a)) for n, a in calls)
        finish = "TOOL_CALL"
    else:
        if rf["type"] == "json_object" and state.reply_text is None:
            schema = rf.get("json_schema")
            text, why = json.dumps(example_for_schema(schema, echo.strip()[:40] or "x") if schema else
                                   {"echo": echo.strip()}), "stop"
        else:
            text, why = finish_text(state, echo, max_tokens, body.get("stop_sequences") or [])
        content.append({"type": "text", "text": text})
        out, finish = count_tokens(text), FINISH[why]
    if content:
        message["content"] = content
    message["citations"] = []
    usage = make_usage(state, tokens, out, reasoning)
    return {"id": str(uuid.uuid4()), "finish_reason": finish, "message": message,
            "usage": {"billed_units": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
                      "tokens": {"input_tokens": usage.input_tokens + TEMPLATE_TOKENS,
                                 "output_tokens": usage.output_tokens},
                      "cached_tokens": usage.cached_tokens}}


def stream_events(resp: dict[str, Any]) -> list[bytes]:
    msg = resp["message"]
    ev = [sse({"id": resp["id"], "type": "message-start", "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}, "message-start")]
    for i, item in enumerate(msg.get("content", [])):
        key = item["type"]
        ev.append(sse({"type": "content-start", "index": i, "delta": {"message": {"content": {
            "type": key, key: ""}}}}, "content-start"))
        ev.extend(sse({"type": "content-delta", "index": i, "delta": {"message": {"content": {key: p}}}},
                      "content-delta") for p in pieces(item[key]))
        ev.append(sse({"type": "content-end", "index": i}, "content-end"))
    if msg.get("tool_plan"):
        ev.extend(sse({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": p}}}, "tool-plan-delta")
                  for p in pieces(msg["tool_plan"]))
    for i, call in enumerate(msg.get("tool_calls", [])):
        ev.append(sse({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {
            "id": call["id"], "type": "function", "function": {"name": call["function"]["name"],
                                                               "arguments": ""}}}}}, "tool-call-start"))
        args = call["function"]["arguments"]
        ev.extend(sse({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {
            "function": {"arguments": args[s:s + 8]}}}}}, "tool-call-delta") for s in range(0, len(args), 8))
        ev.append(sse({"type": "tool-call-end", "index": i}, "tool-call-end"))
    ev.append(sse({"type": "message-end", "delta": {"finish_reason": resp["finish_reason"],
                                                    "usage": resp["usage"]}}, "message-end"))
    return ev


def _error_event(_i: int) -> bytes:
    return sse({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal server error"}},
               "message-end")


def _embeddings(body: dict[str, Any], state: InferenceState) -> dict[str, Any]:
    if state.reject_unknown_params:
        for k in body:
            if k not in EMBED_PARAMS:
                raise bad(f"unknown field: parameter {k} is not a valid field")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("model is required")
    if body.get("input_type") not in INPUT_TYPES:
        raise bad(f"input_type must be one of {', '.join(INPUT_TYPES)}")
    texts, images, inputs = body.get("texts"), body.get("images"), body.get("inputs")
    if sum(x is not None for x in (texts, images, inputs)) != 1:
        raise bad("exactly one of texts, images or inputs must be specified")
    items: list[tuple[str, int]] = []
    if texts is not None:
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts) or len(texts) > 96:
            raise bad("texts must be a list of 1 to 96 strings")
        items = [(t, count_tokens(t)) for t in texts]
    elif images is not None:
        items = [(str(i), IMAGE_TOKENS) for i in (images if isinstance(images, list) else [])]
    else:
        for inp in inputs if isinstance(inputs, list) else []:
            text, extra = _text((inp or {}).get("content") if isinstance(inp, dict) else None, "inputs.content")
            items.append((text, count_tokens(text) + extra))
    if not items:
        raise bad("at least one input is required")
    full = 1536 if "v4" in model else 384 if "light" in model else 1024
    dims = body.get("output_dimension")
    if dims is not None and ("v4" not in model or dims not in (256, 512, 1024, 1536)):
        raise bad("output_dimension must be one of 256, 512, 1024, 1536 and is only supported by embed-v4.0")
    types = body.get("embedding_types") or ["float"]
    if not isinstance(types, list) or any(t not in EMBED_TYPES for t in types):
        raise bad(f"embedding_types must be a list of {', '.join(EMBED_TYPES)}")
    vecs = [seeded_vector(t, dims or full) for t, _ in items]
    out: dict[str, Any] = {}
    for t in types:
        if t == "float":
            out[t] = vecs
        elif t in ("int8", "uint8"):
            out[t] = [[round(v * 127) + (128 if t == "uint8" else 0) for v in vec] for vec in vecs]
        elif t in ("binary", "ubinary"):
            packed = []
            for vec in vecs:
                bits = [int("".join("1" if v > 0 else "0" for v in vec[k:k + 8]), 2) for k in range(0, len(vec), 8)]
                packed.append([b - 128 for b in bits] if t == "binary" else bits)
            out[t] = packed
        else:
            out[t] = [base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() for vec in vecs]
    usage = make_usage(state, sum(n for _, n in items), 0)
    return {"id": str(uuid.uuid4()), "embeddings": out, "texts": texts or [], "response_type": "embeddings_by_type",
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": usage.input_tokens}}}


def create_app(api_key: str = "co-test", **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are :class:`InferenceState` fields. The state is ``app.state.fake``."""
    state = InferenceState(api_key=api_key, provider="cohere", **knobs)

    def endpoint(handler: Callable[[dict[str, Any]], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            rec = record(state, request)
            try:
                auth = request.headers.get("authorization", "")
                if (auth[7:].strip() if auth[:7].lower() == "bearer " else "") != state.api_key:
                    raise CohereError(401, "invalid api token" if auth else "no api key supplied")
                if (status := state.take_failure()) is not None:
                    raise _injected(state, status)
                try:
                    body = await read_json_body(request, rec)
                except ValueError:
                    raise bad("invalid json body") from None
                if not isinstance(body, dict):
                    raise bad("body must be a json object")
                response = await handler(body)
            except CohereError as exc:
                response = exc.response()
            rec.status = response.status_code
            return response
        return wrapped

    @endpoint
    async def chat(body: dict[str, Any]) -> Response:
        resp = build_chat(state, body)
        await first_byte_wait(state)
        if body.get("stream") is True:
            return stream(state, stream_events(resp), _error_event)
        return JSONResponse(resp)

    @endpoint
    async def embed(body: dict[str, Any]) -> Response:
        resp = _embeddings(body, state)
        await first_byte_wait(state)
        return JSONResponse(resp)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return CohereError(status, "not found" if status == 404 else str(getattr(exc, "detail", ""))).response()

    app = Starlette(routes=[Route("/v2/chat", chat, methods=["POST"]), Route("/v2/embed", embed, methods=["POST"])],
                    exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app

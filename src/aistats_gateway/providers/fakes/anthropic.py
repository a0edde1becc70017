"""Fake Anthropic Messages API for tests and manual runs (docs.anthropic.com: Messages, streaming, errors,
extended thinking, tool use, token counting).

Routes: ``POST /v1/messages`` (plain and ``stream: true``), ``POST /v1/messages/count_tokens``.
Auth: ``x-api-key`` (or ``Authorization: Bearer``) and an ``anthropic-version`` header are required; a
missing/wrong key is 401 ``authentication_error``, a missing version 400. Every error is
``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the ``request-id`` header; the
types are ``invalid_request_error`` 400, ``authentication_error`` 401, ``permission_error`` 403,
``not_found_error`` 404, ``rate_limit_error`` 429 (``retry-after``), ``api_error`` 500 and
``overloaded_error`` 529 (an injected 503 keeps its status, as ``api_error``).

Validation (messages named as the API does, e.g. ``max_tokens: Field required``,
``temperature: Input should be less than or equal to 1``, ``messages.0.role: Input should be 'user' or
'assistant'``, ``foo: Extra inputs are not permitted``): ``model``, ``messages``, ``max_tokens`` ≥ 1 are
required; content blocks text/image/document/tool_use/tool_result/thinking/redacted_thinking; every
``tool_use`` needs a ``tool_result`` in the next message and every ``tool_result`` a ``tool_use`` in the
previous one; tools need ``name`` and ``input_schema``; ``tool_choice`` auto/any/tool/none; ``thinking``
``{type: "enabled", budget_tokens ≥ 1024 and < max_tokens}`` forbids a temperature other than 1 and a
forced tool choice; ``{type: "adaptive"}`` and ``{type: "disabled"}`` are accepted.

Output: with thinking, a ``thinking`` block first (min(budget, 64) tokens of text and a ``signature``),
then a ``text`` block (echo of the last user text or tool result, see :mod:`.inference_common`) or
``tool_use`` blocks. ``stop_reason`` end_turn | max_tokens | stop_sequence | tool_use. Usage: as the API,
``input_tokens`` excludes cached tokens, which appear as ``cache_read_input_tokens``; ``output_tokens``
includes the thinking tokens. Streams: ``message_start`` (usage with input tokens, ``output_tokens`` 1),
for each block ``content_block_start`` / ``content_block_delta`` (``text_delta``, ``thinking_delta`` then
``signature_delta``, ``input_json_delta``) / ``content_block_stop`` with a ``ping`` after the first start,
``message_delta`` (``stop_reason`` and the cumulative usage) and ``message_stop``; a mid-stream failure is
``event: error`` ``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}``.
Not faked: server tools, citations, prompt-cache writes (``cache_control`` is accepted and ignored),
batches, files, PDF/image token accounting beyond a flat ``IMAGE_TOKENS``.
"""
from __future__ import annotations

import hashlib
import json
import secrets
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
    RecordedCall,
    count_tokens,
    finish_text_seq,
    first_byte_wait,
    make_usage,
    pick_tool,
    pieces,
    read_json_body,
    reasoning_tokens_for,
    record,
    sse,
    stream,
)

PARAMS = frozenset({"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
                    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
                    "container", "mcp_servers", "context_management", "output_format", "output_config",
                    "inference_geo"})
COUNT_PARAMS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
                          "context_management", "output_format", "output_config"})
BLOCKS = {"user": ("text", "image", "document", "tool_result", "search_result"),
          "assistant": ("text", "tool_use", "thinking", "redacted_thinking")}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
STOP = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
THINK_WORDS = ("Let", "me", "think", "about", "this", "carefully")


class AnthropicError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self, request_id: str) -> JSONResponse:
        body = {"type": "error", "error": {"type": ERROR_TYPES.get(self.status, "api_error"),
                                           "message": self.message}, "request_id": request_id}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def bad(message: str) -> AnthropicError:
    return AnthropicError(400, message)


def _injected(state: InferenceState, status: int) -> AnthropicError:
    msg = state.fail_message
    if status == 429:
        return AnthropicError(429, msg or "Number of request tokens has exceeded your per-minute rate limit.",
                              {"retry-after": f"{state.retry_after_seconds:g}"})
    if status == 529:
        return AnthropicError(529, msg or "Overloaded")
    if status >= 500:
        return AnthropicError(status, msg or "Internal server error")
    return AnthropicError(status, msg or f"Injected failure ({status}).")


# ---------------------------------------------------------------- request validation
def _blocks(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad(f"{where}: Input should be a valid list")
    for j, block in enumerate(content):
        btype = block.get("type") if isinstance(block, dict) else None
        if btype not in BLOCKS[role]:
            raise bad(f"{where}.{j}.type: Input tag '{btype}' found using 'type' does not match any of the expected "
                      f"tags: {', '.join(repr(b) for b in BLOCKS[role])}")
        need = {"text": ("text",), "tool_use": ("id", "name", "input"), "tool_result": ("tool_use_id",),
                "thinking": ("thinking", "signature"), "image": ("source",), "document": ("source",)}.get(btype, ())
        for key in need:
            if key not in block:
                raise bad(f"{where}.{j}.{btype}.{key}: Field required")
    return content


def _tool_result_text(block: dict[str, Any]) -> str:
    c = block.get("content")
    if isinstance(c, list):
        return "".join(b.get("text", "") for b in c if isinstance(b, dict) and b.get("type") == "text")
    return c if isinstance(c, str) else ""


def parse_messages(messages: Any, system: Any) -> tuple[int, str]:
    """Validate ``messages`` and ``system``; (input tokens, echo text)."""
    if not isinstance(messages, list):
        raise bad("messages: Input should be a valid list")
    if isinstance(system, str):
        tokens = count_tokens(system)
    elif isinstance(system, list):
        tokens = sum(count_tokens(b.get("text", "")) for b in _blocks(system, "system", "assistant"))
    elif system is None:
        tokens = 0
    else:
        raise bad("system: Input should be a valid string")
    echo, pending = "", set[str]()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad(f"messages.{i}: Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in msg:
            raise bad(f"messages.{i}.content: Field required")
        blocks = _blocks(msg["content"], f"messages.{i}.content", role)
        results = {b["tool_use_id"] for b in blocks if b["type"] == "tool_result"}
        if pending - results:
            raise bad(f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                      f"{', '.join(sorted(pending - results))}. Each `tool_use` block must have a corresponding "
                      "`tool_result` block in the next message.")
        if results - pending:
            j = next(k for k, b in enumerate(blocks) if b["type"] == "tool_result" and b["tool_use_id"] not in pending)
            raise bad(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                      f"{', '.join(sorted(results - pending))}. Each `tool_result` block must have a corresponding "
                      "`tool_use` block in the previous message.")
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
        text = ""
        for b in blocks:
            if b["type"] == "text":
                text += b["text"]
            elif b["type"] == "tool_result":
                text += _tool_result_text(b)
            elif b["type"] == "tool_use":
                tokens += count_tokens(b["name"]) + count_tokens(json.dumps(b["input"]))
            elif b["type"] == "thinking":
                tokens += count_tokens(b["thinking"])
            elif b["type"] in ("image", "document"):
                tokens += IMAGE_TOKENS
        tokens += count_tokens(text)
        if role == "user":
            echo = text
    if pending:
        raise bad(f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` blocks "
                  f"immediately after: {', '.join(sorted(pending))}. Each `tool_use` block must have a "
                  "corresponding `tool_result` block in the next message.")
    return tokens, echo


def _number(body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise bad(f"{name}: Input should be a valid {'integer' if integer else 'number'}")
    if v < lo:
        raise bad(f"{name}: Input should be greater than or equal to {lo:g}")
    if hi is not None and v > hi:
        raise bad(f"{name}: Input should be less than or equal to {hi:g}")
    return v


def _tools(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str | None, int]:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise bad("tools: Input should be a valid list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise bad(f"tools.{i}.custom.name: Field required")
        if t.get("type") in (None, "custom") and not isinstance(t.get("input_schema"), dict):
            raise bad(f"tools.{i}.custom.input_schema: Field required")
        out.append((t["name"], t.get("input_schema")))
    tc = body.get("tool_choice")
    choice: str | None = None
    if tc is not None:
        if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
            raise bad("tool_choice: Input tag found using 'type' does not match any of the expected tags: 'auto', "
                      "'any', 'tool', 'none'")
        choice = tc["type"]
        if choice == "tool":
            choice = tc.get("name")
            if choice not in {n for n, _ in out}:
                raise bad(f"tool_choice.tool.name: tool '{choice}' not found in tools")
    return out, choice, sum(count_tokens(json.dumps(t, sort_keys=True)) for t in tools)


def _check(body: dict[str, Any], state: InferenceState, known: frozenset[str], counting: bool) -> dict[str, Any]:
    if state.reject_unknown_params:
        for key in body:
            if key not in known:
                raise bad(f"{key}: Extra inputs are not permitted")
    for name in ("model", "messages") + (() if counting else ("max_tokens",)):
        if body.get(name) is None:
            raise bad(f"{name}: Field required")
    if not isinstance(body["model"], str):
        raise bad("model: Input should be a valid string")
    if state.models is not None and body["model"] not in state.models:
        raise AnthropicError(404, f"model: {body['model']}")
    max_tokens = None if counting else _number(body, "max_tokens", 1, None, integer=True)
    temperature = _number(body, "temperature", 0, 1)
    _number(body, "top_p", 0, 1)
    _number(body, "top_k", 0, None, integer=True)
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop_sequences: Input should be a valid list of strings")
    tokens, echo = parse_messages(body["messages"], body.get("system"))
    tools, choice, tool_tokens = _tools(body)
    thinking = body.get("thinking")
    budget: int | None = None
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "disabled", "adaptive"):
            raise bad("thinking: Input tag found using 'type' does not match any of the expected tags: 'enabled', "
                      "'disabled', 'adaptive'")
        if kind == "enabled":
            b = thinking.get("budget_tokens")
            if not isinstance(b, int) or isinstance(b, bool):
                raise bad("thinking.enabled.budget_tokens: Field required")
            if b < 1024:
                raise bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if max_tokens is not None and b >= max_tokens:
                raise bad("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                          "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                          "#max-tokens-and-context-window-size")
            budget = b
        elif kind == "adaptive":
            budget = 1024
        if budget is not None and temperature not in (None, 1):
            raise bad("`temperature` may only be set to 1 when thinking is enabled or in adaptive mode. Please "
                      "consult our documentation at https://docs.claude.com/en/docs/build-with-claude/"
                      "extended-thinking#feature-compatibility")
        if budget is not None and choice not in (None, "auto", "none"):
            raise bad("Thinking may not be enabled when tool_choice forces tool use.")
    stream_flag = body.get("stream", False)
    if not isinstance(stream_flag, bool):
        raise bad("stream: Input should be a valid boolean")
    return {"model": body["model"], "tokens": tokens + tool_tokens, "echo": echo, "max_tokens": max_tokens,
            "stops": stops, "tools": tools, "choice": choice, "budget": budget, "stream": stream_flag}


# ---------------------------------------------------------------- response
def _thinking_text(n: int) -> str:
    return " ".join(THINK_WORDS[i % len(THINK_WORDS)] for i in range(n))


def build_message(state: InferenceState, req: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    reasoning = reasoning_tokens_for(None, req["budget"]) if req["budget"] is not None else 0
    if req["budget"] is not None:
        thought = _thinking_text(reasoning)
        content.append({"type": "thinking", "thinking": thought,
                        "signature": hashlib.sha256(thought.encode()).hexdigest()})
    calls = pick_tool(state, req["tools"], req["choice"], req["echo"])
    out_tokens, stop_seq = 0, None
    if calls:
        for name, args in calls:
            content.append({"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": name, "input": args})
            out_tokens += count_tokens(name) + count_tokens(json.dumps(args))
        reason = "tool_use"
    else:
        limit = None if req["max_tokens"] is None else max(0, req["max_tokens"] - reasoning)
        text, why, stop_seq = finish_text_seq(state, req["echo"], limit, req["stops"])
        content.append({"type": "text", "text": text})
        out_tokens, reason = count_tokens(text), STOP[why]
    usage = make_usage(state, req["tokens"], out_tokens, reasoning)
    return {"id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "model": req["model"],
            "content": content, "stop_reason": reason, "stop_sequence": stop_seq, "usage": usage_json(usage)}


def usage_json(u: Any) -> dict[str, Any]:
    return {"input_tokens": u.input_tokens - u.cached_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": u.cached_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": u.output_tokens, "service_tier": "standard"}


def stream_events(msg: dict[str, Any]) -> list[bytes]:
    usage = msg["usage"]
    start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    ev = [sse({"type": "message_start", "message": start}, "message_start")]
    for i, block in enumerate(msg["content"]):
        kind = block["type"]
        shell = {"text": {"type": "text", "text": ""},
                 "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "tool_use": {**block, "input": {}}}[kind]
        ev.append(sse({"type": "content_block_start", "index": i, "content_block": shell}, "content_block_start"))
        if i == 0:
            ev.append(sse({"type": "ping"}, "ping"))
        deltas: list[dict[str, Any]]
        if kind == "text":
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        elif kind == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            js = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                {"type": "input_json_delta", "partial_json": js[s:s + 8]} for s in range(0, len(js), 8)]
        ev.extend(sse({"type": "content_block_delta", "index": i, "delta": d}, "content_block_delta") for d in deltas)
        ev.append(sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    delta_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                                         "output_tokens")}
    ev.append(sse({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"],
                                                      "stop_sequence": msg["stop_sequence"]},
                   "usage": delta_usage}, "message_delta"))
    ev.append(sse({"type": "message_stop"}, "message_stop"))
    return ev


def _error_event(_i: int) -> bytes:
    return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")


# ---------------------------------------------------------------- app
def create_app(api_key: str = "sk-ant-test", **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are :class:`InferenceState` fields. The state is ``app.state.fake``."""
    state = InferenceState(api_key=api_key, provider="anthropic", **knobs)

    def endpoint(handler: Callable[[Request, dict[str, Any]], Awaitable[Response]]
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            rec: RecordedCall = record(state, request)
            request_id = f"req_{secrets.token_hex(12)}"
            try:
                auth = request.headers.get("authorization", "")
                key = request.headers.get("x-api-key") or (auth[7:].strip() if auth[:7].lower() == "bearer " else "")
                if not key:
                    raise AnthropicError(401, "x-api-key header is required")
                if key != state.api_key:
                    raise AnthropicError(401, "invalid x-api-key")
                if not request.headers.get("anthropic-version"):
                    raise bad("anthropic-version: header is required")
                if (status := state.take_failure()) is not None:
                    raise _injected(state, status)
                try:
                    body = await read_json_body(request, rec)
                except ValueError:
                    raise bad("There was an error parsing the body of your request. Please check it is valid "
                              "JSON.") from None
                if not isinstance(body, dict):
                    raise bad("Input should be a valid dictionary")
                response = await handler(request, body)
            except AnthropicError as exc:
                response = exc.response(request_id)
            rec.status = response.status_code
            response.headers["request-id"] = request_id
            return response
        return wrapped

    @endpoint
    async def messages(request: Request, body: dict[str, Any]) -> Response:
        req = _check(body, state, PARAMS, counting=False)
        msg = build_message(state, req)
        await first_byte_wait(state)
        if req["stream"]:
            return stream(state, stream_events(msg), _error_event)
        return JSONResponse(msg)

    @endpoint
    async def count(request: Request, body: dict[str, Any]) -> Response:
        req = _check(body, state, COUNT_PARAMS, counting=True)
        return JSONResponse({"input_tokens": req["tokens"]})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        message = "Not Found" if status == 404 else str(getattr(exc, "detail", "")) or "Error"
        return AnthropicError(status, message).response(f"req_{secrets.token_hex(12)}")

    app = Starlette(routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count, methods=["POST"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app

"""Fake OpenAI inference API — and the generic OpenAI-compatible one (Mistral, DeepSeek, xAI, Groq,
Together, Ollama's ``/v1``…) — for tests and manual runs.

Routes (``inference_routes``; mounted into the OpenAI and xAI video fakes, or standalone via
``create_app``): ``POST /v1/chat/completions`` (plain and ``stream: true``), ``POST /v1/responses``
(:mod:`.openai_responses`), ``POST /v1/embeddings`` and ``POST /v1/moderations``
(:mod:`.openai_embeddings`; moderations only for ``flavor="openai"``).

Faithful to the documented API: ``Authorization: Bearer`` (401 ``invalid_api_key``); errors are
``{"error": {message, type, param, code}}`` (``error_style="mistral"``: ``{"object": "error", message,
type, param, code}``; ``"xai"``: ``{"code", "error"}``); unknown top-level parameters → 400
"Unrecognized request argument supplied" (``reject_unknown_params``, off by default for compat
providers); type/range checks name the parameter (``messages[1].content``…); a ``tool`` message must
answer a preceding ``tool_calls`` and every tool call needs an answer; ``json_object`` needs the word
"json" in the messages; reasoning models (o1/o3/o4/gpt-5*) refuse ``max_tokens`` and a temperature
other than 1, other models refuse ``reasoning_effort``. Streams are SSE ``data: {chunk}\\n\\n`` lines
ending with ``data: [DONE]``: a role delta first, content deltas token by token (or tool-call deltas:
id/name first, then argument fragments), a chunk with ``finish_reason``, and with
``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk has
``choices: []`` and the usage. A mid-stream failure is a ``data: {"error": {...}}`` line.

Output, usage, faults and recording follow :mod:`.inference_common` (the state is ``InferenceState``,
``app.state.fake`` standalone, ``app.state.inference`` when mounted into a video fake).
Not faked: audio output, logprobs values (``logprobs: true`` answers ``content: []``), ``prediction``,
web search, stored completions, ``n`` > 1 with tool calls (each choice gets the same calls).
"""
from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .inference_common import (
    IMAGE_TOKENS,
    InferenceState,
    RecordedCall,
    count_tokens,
    finish_text,
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

CHAT_PARAMS = frozenset({
    "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
    "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_retention", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options"})
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = {"user": ("text", "image_url", "input_audio", "file"), "system": ("text",),
              "developer": ("text",), "assistant": ("text", "refusal"), "tool": ("text",)}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REASONING_MODEL = re.compile(r"^(o\d|gpt-5(?!.*-chat))")  # gpt-5-chat-latest is not a reasoning model
FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length"}
XAI_CODES = {400: "Client specified an invalid argument", 401: "Unauthenticated", 403: "The caller does not have "
             "permission to execute the specified operation", 404: "Some requested entity was not found",
             422: "Client specified an invalid argument", 429: "Too many requests", 500: "Internal error",
             503: "The service is currently unavailable"}
BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")


class OAIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self, style: str = "openai") -> dict[str, Any]:
        if style == "xai":  # xAI's gRPC-status texts
            return {"code": XAI_CODES.get(self.status, "Internal error"), "error": self.message}
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"object": "error", **err} if style == "mistral" else {"error": err}

    def response(self, style: str = "openai") -> JSONResponse:
        return JSONResponse(self.body(style), status_code=self.status, headers=self.headers)


def invalid(param: str | None, message: str, code: str | None = "invalid_value") -> OAIError:
    return OAIError(400, message, param=param, code=code)


def injected(state: InferenceState, status: int) -> OAIError:
    msg = state.fail_message
    if status == 429:
        ra = state.retry_after_seconds
        return OAIError(429, msg or f"Rate limit reached for requests. Please try again in {ra:g}s.", "requests",
                        code="rate_limit_exceeded",
                        headers={"retry-after": f"{ra:g}", "retry-after-ms": str(int(ra * 1000))})
    if status == 401:
        return OAIError(401, msg or "Incorrect API key provided.", code="invalid_api_key")
    if status >= 500:
        return OAIError(status, msg or ("The server had an error while processing your request. Sorry about that!"
                                        if status == 500 else "The engine is currently overloaded, please try "
                                        "again later."), "server_error")
    return OAIError(status, msg or f"Injected failure ({status}).")


Handler = Callable[[Request, RecordedCall, dict[str, Any]], Awaitable[Response]]


def endpoint(state: InferenceState, style: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Record → Bearer auth → injected failure → JSON body → handler; errors in the provider's shape."""
    async def wrapped(request: Request) -> Response:
        rec = record(state, request)
        try:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if state.api_key and key != state.api_key:  # no key configured: any (Ollama); xAI: a wrong key → 400
                missing = ("You didn't provide an API key. You need to provide your API key in an Authorization "
                           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
                raise OAIError(400 if style == "xai" and key else 401,
                               f"Incorrect API key provided: {key[:3]}***{key[-4:]}." if key else missing,
                               code="invalid_api_key")
            if (status := state.take_failure()) is not None:
                raise injected(state, status)
            try:
                body = await read_json_body(request, rec)
            except ValueError:
                raise OAIError(400, BAD_JSON) from None
            if not isinstance(body, dict):
                raise invalid(None, f"Invalid type for body: expected an object, but got {_kind(body)} instead.",
                              "invalid_type")
            if state.models is not None and isinstance(body.get("model"), str) and body["model"] not in state.models:
                raise OAIError(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                               param="model", code="model_not_found")
            response = await handler(request, rec, body)
        except OAIError as exc:
            response = exc.response(style)
        rec.status = response.status_code
        response.headers["x-request-id"] = f"req_{secrets.token_hex(16)}"
        if state.provider == "openai":
            response.headers["openai-version"] = "2020-10-01"
            response.headers["openai-processing-ms"] = "1"
        return response
    return wrapped


# ---------------------------------------------------------------- validation helpers
def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a decimal"}.get(type(value), type(value).__name__)


def check_type(body: dict[str, Any], name: str, types: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise invalid(name, f"Invalid type for '{name}': expected {what}, but got {_kind(value)} instead.",
                      "invalid_type")
    return value


def check_number(body: dict[str, Any], name: str, lo: float, hi: float, integer: bool = False) -> Any:
    value = check_type(body, name, (int,) if integer else (int, float), "an integer" if integer else "a decimal")
    if value is None:
        return None
    kind = "integer" if integer else "decimal"
    if value < lo:
        raise invalid(name, f"Invalid '{name}': {kind} below minimum value. Expected a value >= {lo:g}, but got "
                            f"{value:g} instead.", f"{kind}_below_min_value")
    if value > hi:
        raise invalid(name, f"Invalid '{name}': {kind} above maximum value. Expected a value <= {hi:g}, but got "
                            f"{value:g} instead.", f"{kind}_above_max_value")
    return value


def check_unknown(body: dict[str, Any], known: frozenset[str], state: InferenceState) -> None:
    if state.reject_unknown_params:
        for key in body:
            if key not in known:
                raise invalid(None, f"Unrecognized request argument supplied: {key}", None)


def require(body: dict[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise invalid(name, f"Missing required parameter: '{name}'.", "missing_required_parameter")
    return body[name]


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise invalid("stop", "Invalid 'stop': expected a string or an array of at most 4 strings.", "invalid_type")


# ---------------------------------------------------------------- chat: request
def _content_text(content: Any, param: str, role: str) -> tuple[str, int]:
    """(text, image count) of a message's content, validating its parts."""
    if content is None or isinstance(content, str):
        return content or "", 0
    if not isinstance(content, list):
        raise invalid(param, f"Invalid type for '{param}': expected one of a string or an array of objects, but "
                             f"got {_kind(content)} instead.", "invalid_type")
    texts, images = [], 0
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype not in PART_TYPES.get(role, ("text",)):
            allowed = ", ".join(f"'{t}'" for t in PART_TYPES.get(role, ("text",)))
            raise invalid(f"{p}.type", f"Invalid value: '{ptype}'. Supported values are: {allowed}.")
        if ptype in ("text", "refusal"):
            if not isinstance(part.get(ptype), str):
                raise invalid(f"{p}.{ptype}", f"Missing required parameter: '{p}.{ptype}'.",
                              "missing_required_parameter")
            texts.append(part[ptype])
        elif ptype == "image_url":
            url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:image/")):
                raise invalid(f"{p}.image_url.url", "Invalid 'image_url.url': expected a URL or a base64 image "
                                                    "data URL.", "invalid_image_url")
            images += 1
    return "".join(texts), images


def parse_messages(messages: Any) -> tuple[int, str, str]:
    """Validate ``messages``; (input tokens, echo text, all text lower-cased)."""
    if not isinstance(messages, list):
        raise invalid("messages", f"Invalid type for 'messages': expected an array, but got {_kind(messages)} "
                                  "instead.", "invalid_type")
    if not messages:
        raise invalid("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1, but "
                                  "got an empty array instead.", "empty_array")
    tokens, echo, everything, pending = 0, "", [], set[str]()
    for i, msg in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid(p, f"Invalid type for '{p}': expected an object, but got {_kind(msg)} instead.",
                          "invalid_type")
        role = msg.get("role")
        if role not in ROLES:
            raise invalid(f"{p}.role", f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                                       "'user', 'function', 'tool', and 'developer'.")
        if role != "tool" and pending:
            raise invalid(f"messages.[{i}].role", "An assistant message with 'tool_calls' must be followed by tool "
                          "messages responding to each 'tool_call_id'. The following tool_call_ids did not have "
                          f"response messages: {', '.join(sorted(pending))}", None)
        if role != "assistant" and msg.get("content") is None:
            raise invalid(f"{p}.content", f"Missing required parameter: '{p}.content'.", "missing_required_parameter")
        text, images = _content_text(msg.get("content"), f"{p}.content", role)
        tokens += count_tokens(text) + images * IMAGE_TOKENS
        everything.append(text)
        if role == "assistant":
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise invalid(f"{p}.tool_calls", f"Invalid type for '{p}.tool_calls': expected an array.",
                              "invalid_type")
            if msg.get("content") is None and not calls:
                raise invalid(f"{p}.content", f"Missing required parameter: '{p}.content'.",
                              "missing_required_parameter")
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(call.get("id"), str) or not isinstance(
                        fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                    raise invalid(f"{p}.tool_calls[{j}]", f"Invalid '{p}.tool_calls[{j}]': expected {{id, type, "
                                  "function: {name, arguments}}.", "invalid_type")
                tokens += count_tokens(fn["name"]) + count_tokens(fn["arguments"])
                pending.add(call["id"])
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str):
                raise invalid(f"{p}.tool_call_id", f"Missing required parameter: '{p}.tool_call_id'.",
                              "missing_required_parameter")
            if call_id not in pending:
                raise invalid(f"messages.[{i}].role", "Invalid parameter: messages with role 'tool' must be a "
                              "response to a preceeding message with 'tool_calls'.", None)
            pending.discard(call_id)
        if role in ("user", "tool"):
            echo = text
    if pending:
        raise invalid(f"messages.[{len(messages) - 1}].role", "An assistant message with 'tool_calls' must be "
                      "followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did "
                      f"not have response messages: {', '.join(sorted(pending))}", None)
    return tokens, echo, " ".join(everything).lower()


def parse_tools(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str | None, int]:
    """(tools as (name, parameters schema), tool choice name/mode, tokens of the definitions)."""
    tools = check_type(body, "tools", (list,), "an array") or []
    out: list[tuple[str, Any]] = []
    for i, tool in enumerate(tools):
        p = f"tools[{i}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") not in ("function", "custom") or not isinstance(fn, dict):
            raise invalid(f"{p}.type", f"Invalid value for '{p}': expected {{type: 'function', function: {{...}}}}.")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise invalid(f"{p}.function.name", f"Invalid '{p}.function.name': string does not match pattern. "
                          "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.", "invalid_value")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise invalid(f"{p}.function.parameters", "Invalid 'parameters': expected an object.", "invalid_type")
        out.append((name, fn.get("parameters")))
    choice = body.get("tool_choice")
    if choice is not None and not tools:
        raise invalid("tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                                     "are specified.", None)
    mode: str | None
    if choice is None or choice in ("none", "auto", "required"):
        mode = choice
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mode = choice["function"].get("name")
        if mode not in {n for n, _ in out}:
            raise invalid("tool_choice", f"Invalid value for 'tool_choice': no function named '{mode}' was "
                                         "specified in the 'tools' parameter.", None)
    else:
        raise invalid("tool_choice", "Invalid value: expected 'none', 'auto', 'required' or {type: 'function', "
                                     "function: {name}}.")
    return out, mode, sum(count_tokens(json.dumps(t, sort_keys=True)) for t in tools)


def parse_response_format(body: dict[str, Any], all_text: str) -> tuple[str, Any]:
    """(``text`` | ``json_object`` | ``json_schema``, schema)."""
    rf = check_type(body, "response_format", (dict,), "an object")
    if rf is None:
        return "text", None
    kind = rf.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid("response_format.type", f"Invalid value: '{kind}'. Supported values are: 'text', "
                                              "'json_object', and 'json_schema'.")
    if kind == "json_object" and "json" not in all_text:
        raise invalid("messages", "'messages' must contain the word 'json' in some form, to use 'response_format' "
                                  "of type 'json_object'.", None)
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("name"), str):
            raise invalid("response_format.json_schema.name", "Missing required parameter: "
                          "'response_format.json_schema.name'.", "missing_required_parameter")
        return kind, js.get("schema") or {"type": "object"}
    return kind, None


def reply_for(state: InferenceState, kind: str, schema: Any, echo: str, max_tokens: int | None,
              stops: list[str]) -> tuple[str, str]:
    """(reply text, finish reason) honouring the response format (JSON is never truncated by stops)."""
    from .inference_common import example_for_schema

    if kind == "json_schema" and state.reply_text is None:
        return json.dumps(example_for_schema(schema, echo.strip()[:40] or "x")), "stop"
    if kind == "json_object" and state.reply_text is None:
        return json.dumps({"echo": echo.strip()}), "stop"
    return finish_text(state, echo, max_tokens, stops)


# ---------------------------------------------------------------- chat: response
def chat_usage_json(u: Any, state: InferenceState | None = None) -> dict[str, Any]:
    out = {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
           "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens, "audio_tokens": 0,
                                         "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    if state is not None and state.provider == "deepseek":  # DeepSeek's context-cache counters
        out["prompt_cache_hit_tokens"] = u.cached_tokens
        out["prompt_cache_miss_tokens"] = u.input_tokens - u.cached_tokens
    return out


def _check_chat(body: dict[str, Any], state: InferenceState) -> dict[str, Any]:
    check_unknown(body, CHAT_PARAMS, state)
    model = require(body, "model")
    if not isinstance(model, str):
        raise invalid("model", f"Invalid type for 'model': expected a string, but got {_kind(model)} instead.",
                      "invalid_type")
    tokens, echo, all_text = parse_messages(require(body, "messages"))
    temperature = check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    check_number(body, "presence_penalty", -2, 2)
    check_number(body, "frequency_penalty", -2, 2)
    n = check_number(body, "n", 1, 128, integer=True) or 1
    max_tokens = check_number(body, "max_tokens", 1, 10**7, integer=True)
    max_completion = check_number(body, "max_completion_tokens", 1, 10**7, integer=True)
    streaming = check_type(body, "stream", (bool,), "a boolean") or False
    opts = check_type(body, "stream_options", (dict,), "an object")
    if opts is not None and not streaming:
        raise invalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      None)
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid("reasoning_effort", f"Invalid value: '{effort}'. Supported values are: "
                                          f"{', '.join(repr(e) for e in EFFORTS)}.")
    if state.provider == "openai":
        if REASONING_MODEL.match(model):
            if max_tokens is not None:
                raise invalid("max_tokens", "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                            "Use 'max_completion_tokens' instead.", "unsupported_parameter")
            if temperature is not None and temperature != 1:
                raise invalid("temperature", f"Unsupported value: 'temperature' does not support {temperature:g} "
                                             "with this model. Only the default (1) value is supported.",
                              "unsupported_value")
        elif effort is not None:
            raise invalid("reasoning_effort", "Unsupported parameter: 'reasoning_effort' is not supported with this "
                                              "model.", "unsupported_parameter")
    tools, choice, tool_tokens = parse_tools(body)
    kind, schema = parse_response_format(body, all_text)
    reasoning = reasoning_tokens_for(effort or ("medium" if REASONING_MODEL.match(model) else None))
    return {"model": model, "tokens": tokens + tool_tokens, "echo": echo, "n": n, "stream": streaming,
            "include_usage": bool((opts or {}).get("include_usage")),
            "max_tokens": max_completion if max_completion is not None else max_tokens, "stops": _stops(body),
            "tools": tools, "choice": choice, "kind": kind, "schema": schema, "reasoning": reasoning,
            "obfuscate": (opts or {}).get("include_obfuscation", state.provider == "openai") is not False}


def _chat_result(state: InferenceState, req: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]], str, Any]:
    """(content or None, tool calls, finish reason, usage)."""
    if req["max_tokens"] is not None:  # reasoning and visible tokens share max_completion_tokens
        req = {**req, "reasoning": min(req["reasoning"], req["max_tokens"])}
    calls = pick_tool(state, req["tools"], req["choice"], req["echo"])
    if calls:
        out: list[dict[str, Any]] = [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
                                      "function": {"name": name, "arguments": json.dumps(args)}}
                                     for name, args in calls]
        out_tokens = sum(count_tokens(name) + count_tokens(json.dumps(args)) for name, args in calls)
        return None, out, "tool_calls", make_usage(state, req["tokens"], out_tokens * req["n"], req["reasoning"])
    limit = None if req["max_tokens"] is None else max(0, req["max_tokens"] - req["reasoning"])  # reasoning counts
    text, reason = reply_for(state, req["kind"], req["schema"], req["echo"], limit, req["stops"])
    return text, [], FINISH[reason], make_usage(state, req["tokens"], count_tokens(text) * req["n"], req["reasoning"])


def _chat_stream_events(state: InferenceState, req: dict[str, Any], base: dict[str, Any], content: str | None,
                        calls: list[dict[str, Any]], finish: str, usage: Any) -> list[bytes]:
    extra: dict[str, Any] = {"usage": None} if req["include_usage"] else {}

    style, last = state.usage_style, req["n"] - 1

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                     "finish_reason": finish_reason}], **extra}
        if req["obfuscate"]:
            data["obfuscation"] = secrets.token_urlsafe(6)
        if finish_reason is not None and index == last and style == "final_chunk":
            data["usage"] = chat_usage_json(usage, state)
        if finish_reason is not None and index == last and style == "x_groq":
            data["x_groq"] = {"id": f"req_{secrets.token_hex(12)}", "usage": chat_usage_json(usage, state)}
        return sse(data)

    events: list[bytes] = []
    for i in range(req["n"]):
        if calls:
            for k, call in enumerate(calls):
                head = {"index": k, "id": call["id"], "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""}}
                delta: dict[str, Any] = {"tool_calls": [head]}
                if k == 0:
                    delta = {"role": "assistant", "content": None, **delta, "refusal": None}
                events.append(chunk(i, delta))
                args = call["function"]["arguments"]
                for start in range(0, len(args), 8):
                    events.append(chunk(i, {"tool_calls": [{"index": k, "function": {"arguments":
                                                                                     args[start:start + 8]}}]}))
        else:
            events.append(chunk(i, {"role": "assistant", "content": "", "refusal": None}))
            events.extend(chunk(i, {"content": piece}) for piece in pieces(content or ""))
        events.append(chunk(i, {}, finish))
    if req["include_usage"] and style != "final_chunk":
        events.append(sse({**base, "choices": [], "usage": chat_usage_json(usage, state)}))
    events.append(b"data: [DONE]\n\n")
    return events


def stream_error_event(_index: int = 0) -> bytes:
    return sse({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                          "type": "server_error", "param": None, "code": None}})


def chat_handler(state: InferenceState) -> Handler:
    async def chat(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        req = _check_chat(body, state)
        content, calls, finish, usage = _chat_result(state, req)
        base = {"id": f"chatcmpl-{secrets.token_urlsafe(21)}", "object": "chat.completion", "created": int(time.time()),
                "model": req["model"], "service_tier": "default", "system_fingerprint": "fp_fake0001"}
        await first_byte_wait(state)
        if req["stream"]:
            base["object"] = "chat.completion.chunk"
            return stream(state, _chat_stream_events(state, req, base, content, calls, finish, usage),
                          stream_error_event)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        return JSONResponse({**base, "choices": [
            {"index": i, "message": message, "logprobs": {"content": [], "refusal": None} if body.get("logprobs")
             else None, "finish_reason": finish} for i in range(req["n"])], "usage": chat_usage_json(usage, state)})
    return chat


# ---------------------------------------------------------------- routes and app
def inference_routes(state: InferenceState, *, flavor: str = "openai", error_style: str = "openai",
                     prefix: str = "/v1") -> list[BaseRoute]:
    """The inference routes bound to ``state`` under ``prefix`` (``flavor="compat"``: chat and embeddings only)."""
    from .openai_embeddings import embeddings_handler, moderations_handler
    from .openai_responses import responses_handler

    routes: list[BaseRoute] = [
        Route(f"{prefix}/chat/completions", endpoint(state, error_style, chat_handler(state)), methods=["POST"]),
        Route(f"{prefix}/embeddings", endpoint(state, error_style, embeddings_handler(state)), methods=["POST"]),
    ]
    if state.provider == "mistral":
        from .mistral_moderations import moderations_handler as mistral_moderations

        routes.append(Route(f"{prefix}/moderations", endpoint(state, error_style, mistral_moderations(state)),
                            methods=["POST"]))
    if flavor == "openai":
        routes += [
            Route(f"{prefix}/responses", endpoint(state, error_style, responses_handler(state)), methods=["POST"]),
            Route(f"{prefix}/moderations", endpoint(state, error_style, moderations_handler(state)),
                  methods=["POST"]),
        ]
    return routes


def create_app(api_key: str = "sk-test", *, provider: str = "openai-compatible", flavor: str = "compat",
               error_style: str = "openai", **knobs: Any) -> Starlette:
    """A standalone OpenAI-compatible fake; ``knobs`` are other :class:`InferenceState` fields.
    Unknown parameters are accepted unless ``reject_unknown_params=True`` (compat servers vary)."""
    knobs.setdefault("reject_unknown_params", flavor == "openai")
    state = InferenceState(api_key=api_key, provider=provider, **knobs)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return OAIError(status, f"Invalid URL ({request.method} {request.url.path})" if status in (404, 405)
                        else str(getattr(exc, "detail", "")) or "Bad request").response(error_style)

    app = Starlette(routes=inference_routes(state, flavor=flavor, error_style=error_style),
                    exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app


def compat_factory(provider: str, api_key: str, error_style: str = "openai",
                   usage_style: str = "openai") -> Callable[..., Starlette]:
    """A FAKES entry for an OpenAI-compatible provider: its default key, error shape and streamed-usage style
    (``openai``: a ``choices: []`` chunk when asked; ``final_chunk``: usage on the finish chunk, always;
    ``x_groq``: also ``x_groq.usage`` on the finish chunk)."""
    def factory(api_key: str = api_key, **knobs: Any) -> Starlette:
        knobs.setdefault("usage_style", usage_style)
        return create_app(api_key, provider=provider, error_style=error_style, **knobs)
    return factory

"""``POST /v1/responses`` of the fake OpenAI API (:mod:`.openai_inference` mounts it).

Input: ``input`` a string or an array of message items (``{role, content}`` with ``input_text`` /
``input_image`` / ``output_text`` parts or a string), ``function_call`` and ``function_call_output``
items (an output must answer a call of this input or of ``previous_response_id``); ``instructions``;
``tools`` (``{type: "function", name, parameters}``; other tool types → 400), ``tool_choice``,
``text.format`` (``text`` | ``json_object`` | ``json_schema`` with ``name`` and ``schema``),
``max_output_tokens`` (≥ 16; hitting it → ``status: "incomplete"``, ``incomplete_details.reason =
"max_output_tokens"``), ``reasoning.effort`` (reasoning models get a ``reasoning`` output item and
``output_tokens_details.reasoning_tokens``), ``store`` (default true: ``previous_response_id`` works).
Output items: ``reasoning``, then a ``message`` with one ``output_text`` part, or ``function_call`` items.
Streaming (``stream: true``): SSE ``event: <type>`` + ``data: {type, sequence_number, …}`` frames:
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` (one per token),
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``
(function calls: ``response.function_call_arguments.delta``/``.done``), then ``response.completed`` (or
``response.incomplete``) carrying the full response with usage. A mid-stream failure is an ``error``
event ``{type: "error", code, message, param, sequence_number}``.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
    reasoning_tokens_for,
    sse,
    stream,
)

PARAMS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "text", "max_output_tokens", "temperature", "top_p",
    "reasoning", "stream", "stream_options", "store", "previous_response_id", "metadata", "parallel_tool_calls",
    "truncation", "user", "include", "background", "prompt", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier", "service_tier", "top_logprobs", "max_tool_calls", "conversation"})
PART_TEXT = {"input_text": "text", "output_text": "text", "refusal": "refusal"}


def _parse_input(value: Any, known_calls: set[str]) -> tuple[int, str]:
    """Validate ``input``; (tokens, echo text)."""
    from .openai_inference import _kind, invalid

    if isinstance(value, str):
        return count_tokens(value), value
    if not isinstance(value, list):
        raise invalid("input", f"Invalid type for 'input': expected one of a string or an array of input items, "
                               f"but got {_kind(value)} instead.", "invalid_type")
    tokens, echo, calls = 0, "", set(known_calls)
    for i, item in enumerate(value):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(p, f"Invalid type for '{p}': expected an object.", "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role not in ("user", "assistant", "system", "developer"):
                raise invalid(f"{p}.role", f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', "
                                           "'system', and 'developer'.")
            parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list):
                raise invalid(f"{p}.content", f"Missing required parameter: '{p}.content'.",
                              "missing_required_parameter")
            text = ""
            for j, part in enumerate(parts):
                ptype = part.get("type") if isinstance(part, dict) else None
                if ptype in PART_TEXT and isinstance(part.get(PART_TEXT[ptype]), str):
                    text += part[PART_TEXT[ptype]]
                elif ptype in ("input_image", "input_file"):
                    tokens += IMAGE_TOKENS
                else:
                    raise invalid(f"{p}.content[{j}].type", f"Invalid value: '{ptype}'. Supported values are: "
                                  "'input_text', 'input_image', 'input_file', 'output_text' and 'refusal'.")
            tokens += count_tokens(text)
            if role == "user":
                echo = text
        elif kind == "function_call":
            if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
                raise invalid(p, f"Invalid '{p}': a function_call needs call_id, name and arguments.", "invalid_type")
            calls.add(item["call_id"])
            tokens += count_tokens(item["name"]) + count_tokens(item["arguments"])
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, (str, list)):
                raise invalid(p, f"Invalid '{p}': a function_call_output needs call_id and output.", "invalid_type")
            if call_id not in calls:
                raise invalid("input", f"No tool call found for function call output with call_id {call_id}.", None)
            text = output if isinstance(output, str) else json.dumps(output)
            tokens += count_tokens(text)
            echo = text
        elif kind != "reasoning":
            raise invalid(f"{p}.type", f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', "
                                       "'function_call_output' and 'reasoning'.")
    return tokens, echo


def _tools(body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str | None, int]:
    from .openai_inference import check_type, invalid

    tools = check_type(body, "tools", (list,), "an array") or []
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise invalid(f"tools[{i}]", f"Invalid 'tools[{i}]': this fake supports function tools "
                                         "{type: 'function', name, parameters} only.")
        out.append((tool["name"], tool.get("parameters")))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice.get("name")
        if choice not in {n for n, _ in out}:
            raise invalid("tool_choice", f"Tool choice '{choice}' not found in 'tools' parameter.", None)
    elif choice not in (None, "none", "auto", "required"):
        raise invalid("tool_choice", f"Invalid value: '{choice}'. Supported values are: 'none', 'auto' and "
                                     "'required'.")
    return out, choice, sum(count_tokens(json.dumps(t, sort_keys=True)) for t in tools)


def _usage_json(u: Any) -> dict[str, Any]:
    return {"input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.total_tokens}


def _build(state: InferenceState, body: dict[str, Any]) -> dict[str, Any]:
    from .openai_inference import (
        REASONING_MODEL,
        check_number,
        check_type,
        check_unknown,
        invalid,
        require,
    )

    check_unknown(body, PARAMS, state)
    model = require(body, "model")
    if not isinstance(model, str):
        raise invalid("model", "Invalid type for 'model': expected a string.", "invalid_type")
    prev_id = check_type(body, "previous_response_id", (str,), "a string")
    prev = state.stored.get(prev_id) if prev_id else None
    if prev_id and prev is None:
        raise invalid("previous_response_id", f"Previous response with id '{prev_id}' not found.",
                      "previous_response_not_found")
    known = {o["call_id"] for o in (prev or {}).get("output", []) if o.get("type") == "function_call"}
    tokens, echo = _parse_input(require(body, "input"), known)
    if prev is not None:
        tokens += prev["usage"]["input_tokens"] + prev["usage"]["output_tokens"]
    instructions = check_type(body, "instructions", (str,), "a string")
    tokens += count_tokens(instructions or "")
    max_out = check_number(body, "max_output_tokens", 16, 10**7, integer=True)
    temperature = check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    streaming = check_type(body, "stream", (bool,), "a boolean") or False
    reasoning_cfg = check_type(body, "reasoning", (dict,), "an object") or {}
    effort = reasoning_cfg.get("effort")
    is_reasoning = bool(REASONING_MODEL.match(model))
    if effort is not None and not is_reasoning and state.provider == "openai":
        raise invalid("reasoning.effort", "Unsupported parameter: 'reasoning.effort' is not supported with this "
                                          "model.", "unsupported_parameter")
    if is_reasoning and temperature is not None and temperature != 1:
        raise invalid("temperature", "Unsupported parameter: 'temperature' is not supported with this model.",
                      "unsupported_parameter")
    tools, choice, tool_tokens = _tools(body)
    fmt = (check_type(body, "text", (dict,), "an object") or {}).get("format") or {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid("text.format.type", "Invalid value. Supported values are: 'text', 'json_object' and "
                                          "'json_schema'.")
    if fmt["type"] == "json_schema" and (not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"),
                                                                                                  dict)):
        raise invalid("text.format.name", "Missing required parameter: 'text.format.name' (and 'schema').",
                      "missing_required_parameter")
    reasoning = reasoning_tokens_for(effort or ("medium" if is_reasoning else None))
    calls = pick_tool(state, tools, choice, echo)
    output: list[dict[str, Any]] = []
    if is_reasoning:
        output.append({"id": f"rs_{secrets.token_hex(16)}", "type": "reasoning", "summary": []})
    status, incomplete, out_tokens = "completed", None, 0
    if calls:
        for name, args in calls:
            arguments = json.dumps(args)
            out_tokens += count_tokens(name) + count_tokens(arguments)
            output.append({"id": f"fc_{secrets.token_hex(16)}", "type": "function_call", "status": "completed",
                           "arguments": arguments, "call_id": f"call_{secrets.token_hex(12)}", "name": name})
    else:
        if fmt["type"] == "json_schema" and state.reply_text is None:
            text, reason = json.dumps(example_for_schema(fmt["schema"], echo.strip()[:40] or "x")), "stop"
        elif fmt["type"] == "json_object" and state.reply_text is None:
            text, reason = json.dumps({"echo": echo.strip()}), "stop"
        else:
            text, reason = finish_text(state, echo, None if max_out is None else max(0, max_out - reasoning))
        if reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        out_tokens = count_tokens(text)
        output.append({"id": f"msg_{secrets.token_hex(16)}", "type": "message", "status": status, "role": "assistant",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
    usage = make_usage(state, tokens + tool_tokens, out_tokens, reasoning)
    return {
        "id": f"resp_{secrets.token_hex(24)}", "object": "response", "created_at": int(time.time()),
        "status": status, "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": instructions, "max_output_tokens": max_out, "max_tool_calls": None, "model": model,
        "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": prev_id, "reasoning": {"effort": effort or ("medium" if is_reasoning else None),
                                                       "summary": reasoning_cfg.get("summary")},
        "service_tier": "default", "store": body.get("store", True), "temperature": temperature or 1.0,
        "text": {"format": fmt, "verbosity": "medium"}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_logprobs": 0, "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"), "usage": _usage_json(usage), "user": body.get("user"),
        "metadata": body.get("metadata") or {}, "_stream": streaming,
    }


def _events(resp: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    shell = {**resp, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    ev: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": shell}),
                                            ("response.in_progress", {"response": shell})]
    for idx, item in enumerate(resp["output"]):
        base = {"output_index": idx}
        if item["type"] == "message":
            part = item["content"][0]
            ev.append(("response.output_item.added",
                       {**base, "item": {**item, "status": "in_progress", "content": []}}))
            ref = {"item_id": item["id"], **base, "content_index": 0}
            ev.append(("response.content_part.added", {**ref, "part": {**part, "text": ""}}))
            ev.extend(("response.output_text.delta", {**ref, "delta": p, "logprobs": [],
                                                      "obfuscation": secrets.token_urlsafe(6)})
                      for p in pieces(part["text"]))
            ev.append(("response.output_text.done", {**ref, "text": part["text"], "logprobs": []}))
            ev.append(("response.content_part.done", {**ref, "part": part}))
        elif item["type"] == "function_call":
            ev.append(("response.output_item.added",
                       {**base, "item": {**item, "status": "in_progress", "arguments": ""}}))
            args = item["arguments"]
            ev.extend(("response.function_call_arguments.delta",
                       {"item_id": item["id"], **base, "delta": args[s:s + 8], "obfuscation": "x"})
                      for s in range(0, len(args), 8))
            ev.append(("response.function_call_arguments.done",
                       {"item_id": item["id"], **base, "name": item["name"], "arguments": args}))
        else:
            ev.append(("response.output_item.added", {**base, "item": item}))
        ev.append(("response.output_item.done", {**base, "item": item}))
    ev.append(("response.incomplete" if resp["status"] == "incomplete" else "response.completed", {"response": resp}))
    return ev


def responses_handler(state: InferenceState) -> Any:
    async def responses(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        resp = _build(state, body)
        streaming = resp.pop("_stream")
        if resp["store"]:
            state.stored[resp["id"]] = resp
        await first_byte_wait(state)
        if not streaming:
            return JSONResponse(resp)
        frames = [sse({"type": t, "sequence_number": n, **d}, event=t) for n, (t, d) in enumerate(_events(resp))]

        def error_event(n: int) -> bytes:
            return sse({"type": "error", "code": "server_error", "message": "The server had an error while "
                        "processing your request. Sorry about that!", "param": None, "sequence_number": n},
                       event="error")
        return stream(state, frames, error_event)
    return responses

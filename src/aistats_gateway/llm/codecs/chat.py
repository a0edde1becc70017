"""OpenAI Chat Completions ⇄ IR, both as the client protocol and as the upstream protocol.

Client side: :func:`decode_request`, :func:`encode_response`, :class:`StreamEncoder` (chunks, a
final ``choices: []`` usage chunk carrying ``usage.cost`` when usage is asked for, ``[DONE]``; a
mid-stream error is ``{"object": "error", ...}``). Upstream side: :func:`encode_request` (always
asks for stream usage), :func:`decode_response`, :func:`decode_chunk`.
"""

from __future__ import annotations

from typing import Any

from aistats_gateway.http.errors import bad_request
from aistats_gateway.llm.codecs._common import (
    Meta,
    arr,
    boolean,
    dumps,
    int_of,
    integer,
    number,
    obj,
    opt_str,
    sse,
    stops,
    string,
    usage_chat,
)
from aistats_gateway.llm.ir import (
    FORCED_TOOL_CHOICE,
    FinishReason,
    ImagePart,
    IRDelta,
    IRRequest,
    IRResponse,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    normalise_effort,
)

ROLES = ("system", "developer", "user", "assistant", "tool")
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                    "function_call": "tool_calls", "content_filter": "content_filter"}


# ---- shared pieces (also used by the Responses codec) ------------------------------------


def decode_tools(value: Any, param: str = "tools") -> list[Tool]:
    out = []
    for i, t in enumerate(arr(value, param)):
        t = obj(t, f"{param}[{i}]")
        if t.get("type", "function") != "function":
            raise bad_request(f"Unsupported tool type {t.get('type')!r}; only 'function' tools are supported.",
                              f"{param}[{i}].type")
        fn = obj(t.get("function", t), f"{param}[{i}].function")
        name = string(fn.get("name"), f"{param}[{i}].function.name")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(Tool(name, opt_str(fn, "description"), obj(params, f"{param}[{i}].function.parameters"),
                        fn.get("strict") if isinstance(fn.get("strict"), bool) else None))
    return out


def decode_tool_choice(value: Any, param: str = "tool_choice") -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise bad_request(f"Invalid value for '{param}': expected auto, none, required or a named tool.", param)
        return ToolChoice(value)  # type: ignore[arg-type]
    value = obj(value, param)
    fn = value.get("function") if isinstance(value.get("function"), dict) else value
    return ToolChoice("tool", string(fn.get("name"), f"{param}.function.name"))


def decode_response_format(value: Any, param: str = "response_format") -> ResponseFormat | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"type": value}
    value = obj(value, param)
    kind = value.get("type")
    if kind == "json_schema":
        js = obj(value.get("json_schema", value), f"{param}.json_schema")
        return ResponseFormat("json_schema", opt_str(js, "name") or "response",
                              obj(js.get("schema") or {}, f"{param}.json_schema.schema"),
                              js.get("strict") if isinstance(js.get("strict"), bool) else None,
                              opt_str(js, "description"))
    if kind in ("json_object", "text"):
        return ResponseFormat(kind)
    raise bad_request(f"Invalid value for '{param}.type': expected text, json_object or json_schema.", f"{param}.type")


def _parts(content: Any, param: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    out: list[Part] = []
    for i, p in enumerate(arr(content, param)):
        p = obj(p, f"{param}[{i}]")
        kind = p.get("type")
        if kind in ("text", "input_text", "output_text"):
            out.append(TextPart(string(p.get("text"), f"{param}[{i}].text")))
        elif kind in ("image_url", "input_image"):
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            detail = iu.get("detail") if isinstance(iu, dict) else p.get("detail")
            out.append(ImagePart.from_url(string(url, f"{param}[{i}].image_url.url"), detail))
        elif kind == "refusal":
            out.append(TextPart(str(p.get("refusal") or "")))
        else:
            raise bad_request(f"Unsupported content part type {kind!r}.", f"{param}[{i}].type")
    return out


def _message(m: Any, i: int) -> Message:
    p = f"messages[{i}]"
    m = obj(m, p)
    role = m.get("role")
    if role not in ROLES:
        raise bad_request(f"Invalid value for '{p}.role': expected one of {', '.join(ROLES)}.", f"{p}.role")
    msg = Message(role, _parts(m.get("content"), f"{p}.content"), name=opt_str(m, "name", f"{p}.name"))
    if role == "assistant":
        for j, tc in enumerate(arr(m.get("tool_calls") or [], f"{p}.tool_calls")):
            tc = obj(tc, f"{p}.tool_calls[{j}]")
            fn = obj(tc.get("function"), f"{p}.tool_calls[{j}].function")
            args = fn.get("arguments", "")
            msg.tool_calls.append(ToolCall(string(tc.get("id"), f"{p}.tool_calls[{j}].id"),
                                           string(fn.get("name"), f"{p}.tool_calls[{j}].function.name"),
                                           args if isinstance(args, str) else dumps(args)))
        rc = m.get("reasoning_content")
        msg.reasoning = rc if isinstance(rc, str) and rc else None
    if role == "tool":
        msg.tool_call_id = string(m.get("tool_call_id"), f"{p}.tool_call_id")
    return msg


def decode_request(body: dict[str, Any]) -> IRRequest:
    """A client's chat completions body → IR (400 naming the parameter on bad input)."""
    model = string(body.get("model"), "model")
    messages = arr(body.get("messages"), "messages")
    if not messages:
        raise bad_request("'messages' must contain at least one message.", "messages")
    req = IRRequest(model=model, messages=[_message(m, i) for i, m in enumerate(messages)])
    if (integer(body, "n", 1, 16) or 1) > 1:
        raise bad_request("Only n=1 is supported: make several requests for several choices.", "n",
                          code="unsupported_value")
    req.max_tokens = integer(body, "max_completion_tokens", 1) or integer(body, "max_tokens", 1)
    req.temperature = number(body, "temperature", 0, 2)
    req.top_p = number(body, "top_p", 0, 1)
    req.top_k = integer(body, "top_k", 0)
    req.stop = stops(body.get("stop"), "stop")
    req.seed = integer(body, "seed", -(2**63), 2**63)
    req.presence_penalty = number(body, "presence_penalty", -2, 2)
    req.frequency_penalty = number(body, "frequency_penalty", -2, 2)
    req.user = opt_str(body, "user")
    req.verbosity = verbosity(body.get("verbosity"), "verbosity")
    req.stream = bool(boolean(body, "stream"))
    if body.get("tools"):
        req.tools = decode_tools(body["tools"])
    req.tool_choice = decode_tool_choice(body.get("tool_choice"))
    if boolean(body, "parallel_tool_calls") is False:
        req.tool_choice = ToolChoice(req.tool_choice.mode if req.tool_choice else "auto",
                                     req.tool_choice.name if req.tool_choice else None, parallel=False)
    req.response_format = decode_response_format(body.get("response_format"))
    reasoning = body.get("reasoning")
    if body.get("reasoning_effort") is not None:
        req.reasoning_effort = normalise_effort(body["reasoning_effort"])
    elif reasoning is not None:
        r = obj(reasoning, "reasoning")
        if r.get("max_tokens") is not None:
            req.reasoning_budget = integer(r, "max_tokens", 0, param="reasoning.max_tokens")
        if r.get("enabled") is False:
            req.reasoning_effort = "none"
        else:
            req.reasoning_effort = normalise_effort(r.get("effort", "medium"), "reasoning.effort")
    mark_params(req)
    return req


def verbosity(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if value not in ("low", "medium", "high"):
        raise bad_request(f"Invalid value for '{param}': expected low, medium or high.", param)
    return str(value)


def mark_params(req: IRRequest) -> None:
    """Fill ``req.params`` with the optional features the request uses."""
    checks = {"max_tokens": req.max_tokens is not None, "temperature": req.temperature is not None,
              "top_p": req.top_p is not None, "top_k": req.top_k is not None, "stop": bool(req.stop),
              "seed": req.seed is not None, "presence_penalty": req.presence_penalty is not None,
              "frequency_penalty": req.frequency_penalty is not None, "tools": bool(req.tools),
              "tool_choice": req.tool_choice is not None, "response_format": req.response_format is not None,
              "reasoning_effort": req.reasoning_effort is not None or req.reasoning_budget is not None,
              "user": req.user is not None, "verbosity": req.verbosity is not None,
              FORCED_TOOL_CHOICE: req.tool_choice is not None and req.tool_choice.mode in ("required", "tool")}
    req.params = {k for k, used in checks.items() if used}


def _finish(value: Any) -> FinishReason:
    return _FINISH.get(str(value), "stop") if value else "stop"


def usage_from(u: dict[str, Any] | None) -> Usage:
    return Usage(int_of(u, "prompt_tokens", "input_tokens"), int_of(u, "completion_tokens", "output_tokens"),
                 int_of(u, "prompt_tokens_details.cached_tokens", "input_tokens_details.cached_tokens"),
                 int_of(u, "completion_tokens_details.reasoning_tokens", "output_tokens_details.reasoning_tokens"))


# ---- client side: encode ------------------------------------------------------------------


def _tool_calls_out(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def encode_response(resp: IRResponse, meta: Meta) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": resp.content if resp.content or not resp.tool_calls
                               else None, "refusal": None, "annotations": []}
    if resp.tool_calls:
        message["tool_calls"] = _tool_calls_out(resp.tool_calls)
    if resp.reasoning:
        message["reasoning_content"] = resp.reasoning
    out: dict[str, Any] = {
        "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
        "provider": meta.provider,
        "choices": [{"index": 0, "message": message, "finish_reason": resp.finish_reason, "logprobs": None}],
        "usage": usage_chat(resp.usage, meta), "cost_nanos": meta.cost_nanos,
    }
    if resp.native_id:
        out["nativeResponseId"] = resp.native_id
    return out


class StreamEncoder:
    """IR deltas → ``chat.completion.chunk`` SSE frames, the final usage chunk and ``[DONE]``."""

    def __init__(self, meta: Meta, include_usage: bool = True) -> None:
        self.meta = meta
        self.include_usage = include_usage
        self._started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._started:
            delta = {"role": "assistant", **delta}
            self._started = True
        return sse({"id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created,
                    "model": self.meta.model, "provider": self.meta.provider,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    def start(self) -> bytes:
        return self._chunk({"content": ""})

    def delta(self, d: IRDelta) -> bytes:
        if d.text:
            return self._chunk({"content": d.text})
        if d.reasoning:
            return self._chunk({"reasoning_content": d.reasoning})
        if d.tool_call is not None:
            tc = d.tool_call
            call: dict[str, Any] = {"index": tc.index, "function": {"arguments": tc.arguments}}
            if tc.id:
                call["id"] = tc.id
                call["type"] = "function"
            if tc.name:
                call["function"]["name"] = tc.name
            return self._chunk({"tool_calls": [call]})
        if d.finish_reason:
            return self._chunk({}, d.finish_reason)
        return b""

    def finish(self, usage: Usage) -> bytes:
        out = b""
        if self.include_usage:
            out += sse({"id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created,
                        "model": self.meta.model, "provider": self.meta.provider, "choices": [],
                        "usage": usage_chat(usage, self.meta), "cost_nanos": self.meta.cost_nanos})
        return out + b"data: [DONE]\n\n"

    def error(self, message: str, code: str = "upstream_error") -> bytes:
        return sse({"id": self.meta.id, "object": "error", "message": message,
                    "error": {"message": message, "type": "server_error", "code": code}})


# ---- upstream side ------------------------------------------------------------------------


def _parts_out(parts: list[Part]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        else:
            iu: dict[str, Any] = {"url": p.url}
            if p.detail:
                iu["detail"] = p.detail
            out.append({"type": "image_url", "image_url": iu})
    return out


def encode_messages(messages: list[Message], developer_role: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.role if developer_role or m.role != "developer" else "system"
        item: dict[str, Any] = {"role": role}
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
            item["content"] = m.text
        elif m.role == "assistant":
            item["content"] = m.text or None
            if m.tool_calls:
                item["tool_calls"] = _tool_calls_out(m.tool_calls)
        else:
            item["content"] = _parts_out(m.content)
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


def encode_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
        if t.description:
            fn["description"] = t.description
        if t.strict is not None:
            fn["strict"] = t.strict
        out.append({"type": "function", "function": fn})
    return out


def encode_request(req: IRRequest, *, supports: frozenset[str] | None = None, developer_role: bool = True,
                   max_tokens_key: str = "max_completion_tokens",
                   renames: dict[str, str] | None = None) -> dict[str, Any]:
    """IR → an OpenAI-compatible chat body. ``supports`` (when given) drops unlisted features;
    ``renames`` maps field names for providers that spell them differently (Mistral ``random_seed``)."""
    def ok(name: str) -> bool:
        return supports is None or name in supports

    body: dict[str, Any] = {"model": req.model, "messages": encode_messages(req.messages, developer_role)}
    if req.max_tokens is not None and ok("max_tokens"):
        body[max_tokens_key] = req.max_tokens
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "user", "verbosity"):
        value = getattr(req, name)
        if value is not None and ok(name):
            body[(renames or {}).get(name, name)] = value
    if req.stop and ok("stop"):
        body["stop"] = req.stop
    if req.tools and ok("tools"):
        body["tools"] = encode_tools(req.tools)
        tc = req.tool_choice
        if tc is not None:
            body["tool_choice"] = ({"type": "function", "function": {"name": tc.name}} if tc.mode == "tool"
                                   else tc.mode)
            if tc.parallel is False:
                body["parallel_tool_calls"] = False
    rf = req.response_format
    if rf is not None and ok("response_format"):
        if rf.type == "json_schema":
            js: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
            if rf.strict is not None:
                js["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": js}
        else:
            body["response_format"] = {"type": rf.type}
    if req.reasoning_effort and ok("reasoning_effort"):
        body["reasoning_effort"] = req.reasoning_effort
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def decode_response(body: dict[str, Any]) -> IRResponse:
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    calls = []
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        calls.append(ToolCall(str(tc.get("id") or ""), str(fn.get("name") or ""), str(fn.get("arguments") or "")))
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    content = msg.get("content")
    return IRResponse(content if isinstance(content, str) else "", reasoning if isinstance(reasoning, str) else None,
                      calls, _finish(choice.get("finish_reason")), usage_from(body.get("usage")),
                      body.get("id"), body.get("model"))


def decode_chunk(chunk: dict[str, Any]) -> list[IRDelta]:
    out: list[IRDelta] = []
    native = chunk.get("id")
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            out.append(IRDelta(text=delta["content"], native_id=native))
        rc = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(rc, str) and rc:
            out.append(IRDelta(reasoning=rc, native_id=native))
        for tc in delta.get("tool_calls") or []:
            fn = tc.get("function") or {}
            out.append(IRDelta(tool_call=ToolCallDelta(int(tc.get("index") or 0), tc.get("id"), fn.get("name"),
                                                       fn.get("arguments") or ""), native_id=native))
        if choice.get("finish_reason"):
            out.append(IRDelta(finish_reason=_finish(choice["finish_reason"]), native_id=native))
    if isinstance(chunk.get("usage"), dict):
        out.append(IRDelta(usage=usage_from(chunk["usage"]), native_id=native))
    if not out and native:
        out.append(IRDelta(native_id=native, model=chunk.get("model")))
    return out

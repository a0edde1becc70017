"""Anthropic Messages ⇄ IR, as the client protocol and as the upstream protocol.

Conventions converted here: Anthropic ``usage.input_tokens`` excludes cache reads/writes (the IR's
includes them); ``thinking.budget_tokens`` ⇄ reasoning effort (:mod:`ir`); stop reasons
``end_turn/stop_sequence`` ⇄ ``stop``, ``max_tokens`` ⇄ ``length``, ``tool_use`` ⇄ ``tool_calls``,
``refusal`` ⇄ ``content_filter``. Errors on this protocol use ``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aistats_gateway.http.errors import bad_request
from aistats_gateway.llm.codecs import chat
from aistats_gateway.llm.codecs._common import (
    Meta,
    arr,
    boolean,
    dumps,
    int_of,
    integer,
    json_args,
    number,
    obj,
    opt_str,
    sse,
    stops,
    string,
)
from aistats_gateway.llm.ir import (
    FinishReason,
    ImagePart,
    IRDelta,
    IRRequest,
    IRResponse,
    Message,
    Part,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    budget_to_effort,
    normalise_effort,
)

TO_ANTHROPIC: dict[str, str] = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                                "content_filter": "refusal", "error": "end_turn"}
FROM_ANTHROPIC: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                                           "tool_use": "tool_calls", "refusal": "content_filter",
                                           "pause_turn": "stop", "model_context_window_exceeded": "length"}
ERROR_TYPES: dict[int, str] = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                               429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error",
                               504: "api_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error" if status >= 500
                                                               else "invalid_request_error"), "message": message}}


# ---- client side: decode ------------------------------------------------------------------


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [obj(b, f"{param}[{i}]") for i, b in enumerate(arr(content, param))]


def _image(b: dict[str, Any], param: str) -> ImagePart:
    src = obj(b.get("source"), f"{param}.source")
    if src.get("type") == "base64":
        return ImagePart.from_base64(string(src.get("media_type"), f"{param}.source.media_type"),
                                     string(src.get("data"), f"{param}.source.data"))
    if src.get("type") == "url":
        return ImagePart.from_url(string(src.get("url"), f"{param}.source.url"))
    raise bad_request("Invalid image source: expected base64 or url.", f"{param}.source.type")


def _decode_message(m: Any, i: int) -> list[Message]:
    p = f"messages[{i}]"
    m = obj(m, p)
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise bad_request(f"Invalid value for '{p}.role': expected user or assistant.", f"{p}.role")
    out: list[Message] = []
    current = Message(role)
    for j, b in enumerate(_blocks(m.get("content"), f"{p}.content")):
        bp = f"{p}.content[{j}]"
        kind = b.get("type")
        if kind == "text":
            current.content.append(TextPart(string(b.get("text"), f"{bp}.text")))
        elif kind == "image":
            current.content.append(_image(b, bp))
        elif kind == "tool_use" and role == "assistant":
            current.tool_calls.append(ToolCall(string(b.get("id"), f"{bp}.id"), string(b.get("name"), f"{bp}.name"),
                                               dumps(b.get("input") or {})))
        elif kind == "thinking" and role == "assistant":
            current.reasoning = (current.reasoning or "") + str(b.get("thinking") or "")
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_result" and role == "user":
            parts: list[Part] = []
            inner = b.get("content")
            if isinstance(inner, str):
                parts.append(TextPart(inner))
            elif inner is not None:
                for k, ib in enumerate(arr(inner, f"{bp}.content")):
                    ib = obj(ib, f"{bp}.content[{k}]")
                    if ib.get("type") == "text":
                        parts.append(TextPart(str(ib.get("text") or "")))
                    elif ib.get("type") == "image":
                        parts.append(_image(ib, f"{bp}.content[{k}]"))
            out.append(Message("tool", parts, tool_call_id=string(b.get("tool_use_id"), f"{bp}.tool_use_id"),
                               is_error=bool(b.get("is_error"))))
        else:
            raise bad_request(f"Unsupported content block type {kind!r} in a {role} message.", f"{bp}.type")
    if current.content or current.tool_calls or current.reasoning or not out:
        out.append(current)
    return out


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    v = obj(value, "tool_choice")
    kind = v.get("type")
    parallel = False if v.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return ToolChoice("auto", parallel=parallel)
    if kind == "any":
        return ToolChoice("required", parallel=parallel)
    if kind == "none":
        return ToolChoice("none")
    if kind == "tool":
        return ToolChoice("tool", string(v.get("name"), "tool_choice.name"), parallel)
    raise bad_request("Invalid value for 'tool_choice.type': expected auto, any, none or tool.", "tool_choice.type")


def decode_request(body: dict[str, Any]) -> IRRequest:
    model = string(body.get("model"), "model")
    messages: list[Message] = []
    system = body.get("system")
    if system is not None:
        text = system if isinstance(system, str) else "\n\n".join(
            str(b.get("text") or "") for b in _blocks(system, "system") if b.get("type") == "text")
        messages.append(Message("system", [TextPart(text)]))
    raw = arr(body.get("messages"), "messages")
    if not raw:
        raise bad_request("'messages' must contain at least one message.", "messages")
    for i, m in enumerate(raw):
        messages.extend(_decode_message(m, i))
    if body.get("max_tokens") is None:
        raise bad_request("Missing required parameter: 'max_tokens'.", "max_tokens")
    req = IRRequest(model=model, messages=messages, max_tokens=integer(body, "max_tokens", 1))
    req.temperature = number(body, "temperature", 0, 1)
    req.top_p = number(body, "top_p", 0, 1)
    req.top_k = integer(body, "top_k", 0)
    req.stop = stops(body.get("stop_sequences"), "stop_sequences")
    req.stream = bool(boolean(body, "stream"))
    if body.get("tools"):
        tools = []
        for i, t in enumerate(arr(body["tools"], "tools")):
            t = obj(t, f"tools[{i}]")
            if t.get("type") not in (None, "custom"):
                raise bad_request(f"Unsupported tool type {t.get('type')!r}.", f"tools[{i}].type")
            tools.append(Tool(string(t.get("name"), f"tools[{i}].name"), opt_str(t, "description"),
                              obj(t.get("input_schema") or {"type": "object"}, f"tools[{i}].input_schema"),
                              t.get("strict") if isinstance(t.get("strict"), bool) else None))
        req.tools = tools
    req.tool_choice = _tool_choice(body.get("tool_choice"))
    thinking = body.get("thinking")
    if thinking is not None:
        th = obj(thinking, "thinking")
        if th.get("type") == "enabled":
            budget = integer(th, "budget_tokens", 1024, param="thinking.budget_tokens")
            if budget is None:
                raise bad_request("Missing required parameter: 'thinking.budget_tokens'.", "thinking.budget_tokens")
            req.reasoning_budget = budget
            req.reasoning_effort = budget_to_effort(budget)
        elif th.get("type") == "disabled":
            req.reasoning_effort = "none"
        elif th.get("type") == "adaptive":
            req.reasoning_effort = "medium"
        else:
            raise bad_request("Invalid value for 'thinking.type'.", "thinking.type")
    oc = body.get("output_config")
    if oc is not None:
        oc = obj(oc, "output_config")
        if oc.get("effort") is not None:
            req.reasoning_effort = normalise_effort(oc["effort"], "output_config.effort")
        fmt = oc.get("format")
        if fmt is not None:
            from aistats_gateway.llm.ir import ResponseFormat

            fmt = obj(fmt, "output_config.format")
            req.response_format = ResponseFormat("json_schema", "response",
                                                 obj(fmt.get("schema") or {}, "output_config.format.schema"))
    md = body.get("metadata")
    if isinstance(md, dict) and isinstance(md.get("user_id"), str):
        req.user = md["user_id"]
    chat.mark_params(req)
    return req


# ---- client side: encode ------------------------------------------------------------------


def _usage(u: Usage, meta: Meta | None) -> dict[str, Any]:
    out: dict[str, Any] = {"input_tokens": max(0, u.input_tokens - u.cached_tokens - u.cache_write_tokens),
                           "output_tokens": u.output_tokens, "cache_read_input_tokens": u.cached_tokens,
                           "cache_creation_input_tokens": u.cache_write_tokens}
    if meta is not None:
        out["cost"] = meta.cost_usd
    return out


def encode_response(resp: IRResponse, meta: Meta) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if resp.reasoning:
        content.append({"type": "thinking", "thinking": resp.reasoning, "signature": ""})
    if resp.content or not resp.tool_calls:
        content.append({"type": "text", "text": resp.content, "citations": None})
    for c in resp.tool_calls:
        content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": json_args(c.arguments)})
    return {"id": meta.id, "type": "message", "role": "assistant", "model": meta.model, "content": content,
            "stop_reason": "stop_sequence" if resp.stop_sequence and resp.finish_reason == "stop"
            else TO_ANTHROPIC.get(resp.finish_reason, "end_turn"),
            "stop_sequence": resp.stop_sequence, "usage": _usage(resp.usage, meta),
            "provider": meta.provider, "cost_nanos": meta.cost_nanos}


class StreamEncoder:
    """IR deltas → Anthropic events: message_start, content_block_*, message_delta, message_stop."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.index = -1
        self.open: str | None = None  # "text" | "thinking" | "tool:<ir index>"
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None

    def start(self) -> bytes:
        return sse({"type": "message_start", "message": {
            "id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}, "message_start")

    def _stop(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._stop()
        self.index += 1
        self.open = kind
        return out + sse({"type": "content_block_start", "index": self.index, "content_block": block},
                         "content_block_start")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": self.index, "delta": delta}, "content_block_delta")

    def delta(self, d: IRDelta) -> bytes:
        out = b""
        if d.text:
            if self.open != "text":
                out += self._begin("text", {"type": "text", "text": "", "citations": None})
            out += self._delta({"type": "text_delta", "text": d.text})
        elif d.reasoning:
            if self.open != "thinking":
                out += self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": d.reasoning})
        elif d.tool_call is not None:
            key = f"tool:{d.tool_call.index}"
            if self.open != key:
                out += self._begin(key, {"type": "tool_use", "id": d.tool_call.id or "", "name": d.tool_call.name or "",
                                         "input": {}})
            if d.tool_call.arguments:
                out += self._delta({"type": "input_json_delta", "partial_json": d.tool_call.arguments})
        elif d.finish_reason:
            self.finish_reason = d.finish_reason
            self.stop_sequence = d.stop_sequence
        return out

    def _stop_sequence(self) -> str | None:
        return self.stop_sequence if (self.finish_reason or "stop") == "stop" else None

    def _stop_reason(self) -> str:
        if self._stop_sequence():
            return "stop_sequence"
        return TO_ANTHROPIC.get(self.finish_reason or "stop", "end_turn")

    def finish(self, usage: Usage) -> bytes:
        return self._stop() + sse({"type": "message_delta",
                                   "delta": {"stop_reason": self._stop_reason(),
                                             "stop_sequence": self._stop_sequence()},
                                   "usage": _usage(usage, self.meta), "cost_nanos": self.meta.cost_nanos},
                                  "message_delta") + sse({"type": "message_stop"}, "message_stop")

    def error(self, message: str, code: str = "api_error") -> bytes:
        return sse({"type": "error", "error": {"type": "api_error", "message": message}}, "error")


# ---- upstream side ------------------------------------------------------------------------


def _image_block(p: ImagePart) -> dict[str, Any]:
    if p.data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": p.media_type, "data": p.data}}
    return {"type": "image", "source": {"type": "url", "url": p.url}}


def _content_out(parts: list[Part]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else _image_block(p) for p in parts]


def encode_request(req: IRRequest, default_max_tokens: int = 4096) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in req.messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id,
                                     "content": _content_out(m.content)}
            if m.is_error:
                block["is_error"] = True
            push("user", [block])
        elif m.role == "assistant":
            blocks = [b for b in _content_out(m.content) if b.get("type") != "text" or b.get("text")]
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": json_args(c.arguments)}
                       for c in m.tool_calls]
            push("assistant", blocks or [{"type": "text", "text": ""}])
        else:
            push("user", _content_out(m.content))
    body: dict[str, Any] = {"model": req.model, "messages": messages,
                            "max_tokens": req.max_tokens or default_max_tokens}
    if req.system_text:
        body["system"] = req.system_text
    budget = req.thinking_budget()
    if req.tool_choice is not None and req.tool_choice.mode in ("required", "tool") and req.tools:
        budget = None  # Anthropic forbids extended thinking with a forced tool choice: the tool choice wins
    if budget:
        budget = max(1024, budget)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if body["max_tokens"] <= budget:
            body["max_tokens"] = budget + (req.max_tokens or default_max_tokens)
    else:
        for name in ("temperature", "top_p", "top_k"):
            if getattr(req, name) is not None:
                body[name] = min(1.0, getattr(req, name)) if name == "temperature" else getattr(req, name)
    if req.stop:
        body["stop_sequences"] = req.stop
    tools = list(req.tools)
    rf = req.response_format
    tc = req.tool_choice
    if rf is not None and rf.type == "json_schema":
        body["output_config"] = {"format": {"type": "json_schema", "schema": rf.schema or {}}}
    if tools and not (tc is not None and tc.mode == "none"):
        body["tools"] = [{"name": t.name, "description": t.description or "", "input_schema": t.parameters}
                         for t in tools]
        if tc is not None:
            choice: dict[str, Any] = {"auto": {"type": "auto"}, "required": {"type": "any"}}.get(
                tc.mode, {"type": "tool", "name": tc.name})
            if tc.parallel is False:
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body


def usage_from(u: dict[str, Any] | None) -> Usage:
    cached = int_of(u, "cache_read_input_tokens")
    written = int_of(u, "cache_creation_input_tokens")
    return Usage(int_of(u, "input_tokens") + cached + written, int_of(u, "output_tokens"), cached, 0, written)


def decode_response(body: dict[str, Any]) -> IRResponse:
    text, thinking, calls = [], [], []
    for b in body.get("content") or []:
        if b.get("type") == "text":
            text.append(str(b.get("text") or ""))
        elif b.get("type") == "thinking":
            thinking.append(str(b.get("thinking") or ""))
        elif b.get("type") == "tool_use":
            calls.append(ToolCall(str(b.get("id") or ""), str(b.get("name") or ""), dumps(b.get("input") or {})))
    return IRResponse("".join(text), "".join(thinking) or None, calls,
                      FROM_ANTHROPIC.get(str(body.get("stop_reason")), "stop"), usage_from(body.get("usage")),
                      body.get("id"), body.get("model"), body.get("stop_sequence"))


@dataclass
class StreamDecoder:
    """Anthropic SSE events → IR deltas (block indexes → tool-call indexes)."""

    tools: dict[int, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def event(self, data: dict[str, Any]) -> list[IRDelta]:
        kind = data.get("type")
        if kind == "message_start":
            msg = data.get("message") or {}
            self.usage = usage_from(msg.get("usage"))
            return [IRDelta(native_id=msg.get("id"), model=msg.get("model"))]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = self.tools[int(data.get("index") or 0)] = len(self.tools)
                return [IRDelta(tool_call=ToolCallDelta(idx, block.get("id"), block.get("name"), ""))]
            if block.get("type") == "text" and block.get("text"):
                return [IRDelta(text=block["text"])]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dk = delta.get("type")
            if dk == "text_delta":
                return [IRDelta(text=str(delta.get("text") or ""))]
            if dk == "thinking_delta":
                return [IRDelta(reasoning=str(delta.get("thinking") or ""))]
            if dk == "input_json_delta":
                idx = self.tools.get(int(data.get("index") or 0), 0)
                return [IRDelta(tool_call=ToolCallDelta(idx, arguments=str(delta.get("partial_json") or "")))]
            return []
        if kind == "message_delta":
            u = data.get("usage") or {}
            upd = usage_from({"input_tokens": max(0, self.usage.input_tokens - self.usage.cached_tokens
                                                     - self.usage.cache_write_tokens),
                                 "cache_read_input_tokens": self.usage.cached_tokens,
                                 "cache_creation_input_tokens": self.usage.cache_write_tokens, **u})
            self.usage = self.usage.merge(upd)
            out = [IRDelta(usage=self.usage)]
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                seq = (data.get("delta") or {}).get("stop_sequence")
                out.insert(0, IRDelta(finish_reason=FROM_ANTHROPIC.get(str(reason), "stop"),
                                      stop_sequence=seq if isinstance(seq, str) else None))
            return out
        return []

"""OpenAI Responses ⇄ IR.

Client side: :func:`decode_request` (``input`` string or items, ``instructions``, function tools,
``text.format``, ``reasoning.effort``), :func:`encode_response` (a ``response`` object with
``output`` items) and :class:`StreamEncoder` (``response.created`` → ``output_item.added`` →
``content_part.added`` → ``output_text.delta`` … → ``response.completed``; ``error`` mid-stream).
Upstream side: :func:`encode_request` and :func:`decode_response` (used by adapters that speak
Responses).
"""

from __future__ import annotations

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
    number,
    obj,
    opt_str,
    sse,
    stops,
    string,
)
from aistats_gateway.llm.ir import (
    IRDelta,
    IRRequest,
    IRResponse,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
    normalise_effort,
)


def _tools(value: Any) -> list[Tool]:
    out = []
    for i, t in enumerate(arr(value, "tools")):
        t = obj(t, f"tools[{i}]")
        if t.get("type") != "function":
            raise bad_request(f"Unsupported tool type {t.get('type')!r}; only 'function' tools are supported.",
                              f"tools[{i}].type")
        out.append(Tool(string(t.get("name"), f"tools[{i}].name"), opt_str(t, "description"),
                        obj(t.get("parameters") or {"type": "object", "properties": {}}, f"tools[{i}].parameters"),
                        t.get("strict") if isinstance(t.get("strict"), bool) else None))
    return out


def _tool_choice(value: Any) -> ToolChoice | None:
    if isinstance(value, dict) and value.get("type") == "function":
        return ToolChoice("tool", string(value.get("name"), "tool_choice.name"))
    return chat.decode_tool_choice(value)


def _format(text: Any) -> ResponseFormat | None:
    if text is None:
        return None
    fmt = obj(text, "text").get("format")
    if fmt is None:
        return None
    fmt = obj(fmt, "text.format")
    if fmt.get("type") == "json_schema":
        return ResponseFormat("json_schema", opt_str(fmt, "name") or "response",
                              obj(fmt.get("schema") or {}, "text.format.schema"),
                              fmt.get("strict") if isinstance(fmt.get("strict"), bool) else None,
                              opt_str(fmt, "description"))
    if fmt.get("type") in ("text", "json_object"):
        return ResponseFormat(fmt["type"])
    raise bad_request("Invalid value for 'text.format.type'.", "text.format.type")


def _items(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [Message("user", [TextPart(value)])]
    out: list[Message] = []
    for i, item in enumerate(arr(value, "input")):
        p = f"input[{i}]"
        item = obj(item, p)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                raise bad_request(f"Invalid value for '{p}.role'.", f"{p}.role")
            out.append(Message(role, chat._parts(item.get("content"), f"{p}.content")))
        elif kind == "function_call":
            call = ToolCall(string(item.get("call_id"), f"{p}.call_id"), string(item.get("name"), f"{p}.name"),
                            string(item.get("arguments", ""), f"{p}.arguments"))
            if out and out[-1].role == "assistant":
                out[-1].tool_calls.append(call)
            else:
                out.append(Message("assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else dumps(output)
            out.append(Message("tool", [TextPart(text)], tool_call_id=string(item.get("call_id"), f"{p}.call_id")))
        elif kind == "reasoning":
            continue
        else:
            raise bad_request(f"Unsupported input item type {kind!r}.", f"{p}.type")
    return out


def decode_request(body: dict[str, Any]) -> IRRequest:
    model = string(body.get("model"), "model")
    if body.get("n") is not None:
        raise bad_request("'n' is not supported on /v1/responses.", "n")
    if body.get("input") is None:
        raise bad_request("Missing required parameter: 'input'.", "input")
    messages = _items(body["input"])
    instructions = opt_str(body, "instructions")
    if instructions:
        messages.insert(0, Message("system", [TextPart(instructions)]))
    if not messages:
        raise bad_request("'input' must contain at least one item.", "input")
    req = IRRequest(model=model, messages=messages)
    req.max_tokens = (integer(body, "max_output_tokens", 1) or integer(body, "max_completion_tokens", 1)
                      or integer(body, "max_tokens", 1))
    req.temperature = number(body, "temperature", 0, 2)
    req.top_p = number(body, "top_p", 0, 1)
    req.stop = stops(body.get("stop"), "stop")
    req.user = opt_str(body, "user")
    req.stream = bool(boolean(body, "stream"))
    if body.get("tools"):
        req.tools = _tools(body["tools"])
    req.tool_choice = _tool_choice(body.get("tool_choice"))
    if boolean(body, "parallel_tool_calls") is False:
        req.tool_choice = ToolChoice(req.tool_choice.mode if req.tool_choice else "auto",
                                     req.tool_choice.name if req.tool_choice else None, parallel=False)
    req.response_format = _format(body.get("text")) or chat.decode_response_format(body.get("response_format"))
    if isinstance(body.get("text"), dict):
        req.verbosity = chat.verbosity(body["text"].get("verbosity"), "text.verbosity")
    if body.get("reasoning") is not None:
        r = obj(body["reasoning"], "reasoning")
        if r.get("effort") is not None:
            req.reasoning_effort = normalise_effort(r["effort"], "reasoning.effort")
        if r.get("max_tokens") is not None:
            req.reasoning_budget = integer(r, "max_tokens", 0, param="reasoning.max_tokens")
    chat.mark_params(req)
    return req


def _usage(u: Usage, meta: Meta | None) -> dict[str, Any]:
    out: dict[str, Any] = {"input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
                           "output_tokens": u.output_tokens,
                           "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
                           "total_tokens": u.total_tokens}
    if meta is not None:
        out["cost"] = meta.cost_usd
    return out


def _msg_id(meta: Meta) -> str:
    return "msg_" + meta.id.removeprefix("gen_")


def _message_item(meta: Meta, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": _msg_id(meta), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text or
            status == "completed" else []}


def _call_item(meta: Meta, index: int, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{index}_{meta.id.removeprefix('gen_')}", "call_id": call.id,
            "name": call.name, "arguments": call.arguments, "status": status}


def _envelope(meta: Meta, status: str, output: list[dict[str, Any]], usage: Usage | None,
              finish: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": meta.id, "object": "response", "created_at": meta.created, "status": status, "model": meta.model,
        "provider": meta.provider, "output": output, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
        "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": None, "top_p": None,
        "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
        "usage": _usage(usage, meta) if usage is not None else None,
    }
    if usage is not None:
        out["cost_nanos"] = meta.cost_nanos
        out["finish_reason"] = finish
    return out


def encode_response(resp: IRResponse, meta: Meta) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if resp.reasoning:
        output.append({"type": "reasoning", "id": "rs_" + meta.id.removeprefix("gen_"),
                       "summary": [{"type": "summary_text", "text": resp.reasoning}]})
    if resp.content or not resp.tool_calls:
        output.append(_message_item(meta, resp.content))
    output.extend(_call_item(meta, i, c) for i, c in enumerate(resp.tool_calls))
    status = "incomplete" if resp.finish_reason == "length" else "completed"
    out = _envelope(meta, status, output, resp.usage, resp.finish_reason)
    if resp.native_id:
        out["nativeResponseId"] = resp.native_id
    return out


class StreamEncoder:
    """IR deltas → Responses stream events (each with ``type`` and ``sequence_number``)."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.seq = 0
        self.items: list[dict[str, Any]] = []  # output items in order, updated as deltas arrive
        self.text_index: int | None = None
        self.calls: dict[int, int] = {}  # IR tool-call index → output index
        self.finish_reason: str | None = None

    def _ev(self, kind: str, **payload: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **payload}
        self.seq += 1
        return sse(data, kind)

    def start(self) -> bytes:
        env = _envelope(self.meta, "in_progress", [], None, None)
        return self._ev("response.created", response=env) + self._ev("response.in_progress", response=env)

    def _close_text(self) -> bytes:
        if self.text_index is None:
            return b""
        i = self.text_index
        item = self.items[i]
        text = item["content"][0]["text"]
        part = item["content"][0]
        item["status"] = "completed"
        self.text_index = None
        return (self._ev("response.output_text.done", item_id=item["id"], output_index=i, content_index=0, text=text)
                + self._ev("response.content_part.done", item_id=item["id"], output_index=i, content_index=0,
                           part=part)
                + self._ev("response.output_item.done", output_index=i, item=item))

    def delta(self, d: IRDelta) -> bytes:
        out = b""
        if d.text:
            if self.text_index is None:
                item = _message_item(self.meta, "", "in_progress")
                self.items.append(item)
                self.text_index = len(self.items) - 1
                out += self._ev("response.output_item.added", output_index=self.text_index,
                                item=dict(item, content=[]))
                item["content"] = [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]
                out += self._ev("response.content_part.added", item_id=item["id"], output_index=self.text_index,
                                content_index=0, part=item["content"][0])
            item = self.items[self.text_index]
            item["content"][0]["text"] += d.text
            out += self._ev("response.output_text.delta", item_id=item["id"], output_index=self.text_index,
                            content_index=0, delta=d.text, logprobs=[])
        elif d.reasoning:
            out += self._ev("response.reasoning_text.delta", item_id="rs_" + self.meta.id.removeprefix("gen_"),
                            output_index=len(self.items), content_index=0, delta=d.reasoning)
        elif d.tool_call is not None:
            tc = d.tool_call
            if tc.index not in self.calls:
                out += self._close_text()
                item = _call_item(self.meta, tc.index, ToolCall(tc.id or "", tc.name or "", ""), "in_progress")
                self.items.append(item)
                self.calls[tc.index] = len(self.items) - 1
                out += self._ev("response.output_item.added", output_index=self.calls[tc.index], item=dict(item))
            i = self.calls[tc.index]
            if tc.arguments:
                self.items[i]["arguments"] += tc.arguments
                out += self._ev("response.function_call_arguments.delta", item_id=self.items[i]["id"],
                                output_index=i, delta=tc.arguments)
        elif d.finish_reason:
            self.finish_reason = d.finish_reason
        return out

    def finish(self, usage: Usage) -> bytes:
        out = self._close_text()
        for i in sorted(self.calls.values()):
            item = self.items[i]
            item["status"] = "completed"
            out += self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                            arguments=item["arguments"])
            out += self._ev("response.output_item.done", output_index=i, item=item)
        status = "incomplete" if self.finish_reason == "length" else "completed"
        env = _envelope(self.meta, status, self.items, usage, self.finish_reason or "stop")
        return out + self._ev("response.completed" if status == "completed" else "response.incomplete",
                              response=env)

    def error(self, message: str, code: str = "upstream_error") -> bytes:
        return self._ev("error", code=code, message=message, param=None,
                        error={"type": "server_error", "code": code, "message": message})


# ---- upstream side ------------------------------------------------------------------------


def encode_request(req: IRRequest) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    instructions = []
    for m in req.messages:
        if m.role in ("system", "developer"):
            instructions.append(m.text)
        elif m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text})
        else:
            if m.content:
                kind = "output_text" if m.role == "assistant" else "input_text"
                parts: list[dict[str, Any]] = []
                for p in m.content:
                    if isinstance(p, TextPart):
                        parts.append({"type": kind, "text": p.text})
                    else:
                        parts.append({"type": "input_image", "image_url": p.url, "detail": p.detail or "auto"})
                items.append({"type": "message", "role": m.role, "content": parts})
            for c in m.tool_calls:
                items.append({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments})
    body: dict[str, Any] = {"model": req.model, "input": items, "store": False}
    if instructions:
        body["instructions"] = "\n\n".join(instructions)
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    for name in ("temperature", "top_p", "user"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.tools:
        body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                          "parameters": t.parameters, **({"strict": t.strict} if t.strict is not None else {})}
                         for t in req.tools]
        if req.tool_choice is not None:
            tc = req.tool_choice
            body["tool_choice"] = {"type": "function", "name": tc.name} if tc.mode == "tool" else tc.mode
    rf = req.response_format
    if rf is not None:
        fmt: dict[str, Any] = {"type": rf.type}
        if rf.type == "json_schema":
            fmt.update(name=rf.name or "response", schema=rf.schema or {})
            if rf.strict is not None:
                fmt["strict"] = rf.strict
        body["text"] = {"format": fmt}
    if req.verbosity:
        body.setdefault("text", {})["verbosity"] = req.verbosity
    if req.reasoning_effort:
        body["reasoning"] = {"effort": req.reasoning_effort}
    if req.stream:
        body["stream"] = True
    return body


def decode_response(body: dict[str, Any]) -> IRResponse:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for item in body.get("output") or []:
        if item.get("type") == "message":
            text.extend(c.get("text", "") for c in item.get("content") or [] if c.get("type") == "output_text")
        elif item.get("type") == "function_call":
            calls.append(ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""),
                                  str(item.get("arguments") or "")))
        elif item.get("type") == "reasoning":
            reasoning.extend(s.get("text", "") for s in item.get("summary") or [])
    u = body.get("usage") or {}
    usage = Usage(int_of(u, "input_tokens"), int_of(u, "output_tokens"),
                  int_of(u, "input_tokens_details.cached_tokens"),
                  int_of(u, "output_tokens_details.reasoning_tokens"))
    incomplete = (body.get("incomplete_details") or {}).get("reason") == "max_output_tokens"
    finish = "length" if incomplete else ("tool_calls" if calls else "stop")
    return IRResponse("".join(text), "".join(reasoning) or None, calls, finish, usage,  # type: ignore[arg-type]
                      body.get("id"), body.get("model"))

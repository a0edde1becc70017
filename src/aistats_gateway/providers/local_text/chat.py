"""``local/echo``: the built-in chat model of the ``local`` provider (no key, no network, no weights).

It is not a language model: it answers deterministically from the conversation, so that a new user
can try every text endpoint (chat completions, responses, messages, streaming, tools, structured
output, batches) and every client SDK on a laptop, and tests can predict its answers.

Invariants:
* The answer is a function of the request alone (temperature, top_p and seed are accepted and change
  nothing). The text is the last user message's text; after a tool result it is
  ``"<tool name> returned: <result>"``; a user message with only images is described
  (``"I received 2 images."``).
* Tools: ``tool_choice`` ``required`` / ``any`` or a named tool → one call of that tool (the first tool
  when not named) whose arguments validate against its ``parameters`` schema
  (:mod:`.schema_value`, strings taken from the user's words). ``auto`` (the default) → a call only
  when the last message is the user's and names the tool (``get_weather`` or ``get weather``,
  any case); ``none`` → text.
* ``response_format`` ``json_schema`` → the content is JSON valid against the schema; ``json_object``
  → ``{"message": <the text>}``.
* Tokens are :func:`tokens` pieces (a word or a punctuation mark with its leading spaces); usage counts
  them: input = every message's text, tool definitions and schema; output = what was emitted.
* ``stop``: the text ends before the first stop sequence (finish ``stop``, ``stop_sequence`` set);
  ``max_tokens``: at most that many tokens are emitted (finish ``length``), tool arguments included.
* ``stream`` yields one text delta per token (one tool-call delta per token of arguments), then
  the finish reason and the usage.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from aistats_gateway.llm.ir import (
    FinishReason,
    ImagePart,
    IRDelta,
    IRRequest,
    IRResponse,
    Message,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from aistats_gateway.providers.base import CallContext
from aistats_gateway.providers.local_text.schema_value import value_for

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def tokens(text: str) -> list[str]:
    """``text`` cut into tokens whose concatenation is ``text``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(tokens(text))


@dataclass
class Answer:
    text: str
    call: ToolCall | None
    finish: FinishReason
    stop_sequence: str | None
    usage: Usage
    native_id: str


def _last_user_text(messages: list[Message]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            if m.text:
                return m.text
            images = sum(isinstance(p, ImagePart) for p in m.content)
            if images:
                return f"I received {images} image{'s' if images != 1 else ''}."
    return ""


def _reply_text(messages: list[Message]) -> str:
    last = messages[-1] if messages else None
    if last is not None and last.role == "tool":
        name = next((c.name for m in messages if m.role == "assistant" for c in m.tool_calls
                     if c.id == last.tool_call_id), None) or last.name or "the tool"
        return f"{name} returned: {last.text}"
    return _last_user_text(messages) or "(empty message)"


def _forced_tool(req: IRRequest) -> Tool | None:
    """The tool to call, or None to answer with text."""
    if not req.tools:
        return None
    choice = req.tool_choice
    mode = choice.mode if choice is not None else "auto"
    if mode == "none":
        return None
    if mode == "tool":
        return next((t for t in req.tools if choice is not None and t.name == choice.name), req.tools[0])
    if mode == "required":
        return req.tools[0]
    last = req.messages[-1] if req.messages else None
    if last is None or last.role != "user":
        return None
    said = last.text.lower()
    return next((t for t in req.tools if t.name.lower() in said or t.name.lower().replace("_", " ") in said), None)


def _structured(req: IRRequest, text: str) -> str:
    rf = req.response_format
    if rf is None or rf.type == "text":
        return text
    if rf.type == "json_object":
        return orjson.dumps({"message": text}).decode()
    return orjson.dumps(value_for(rf.schema or {}, text)).decode()


def _input_tokens(req: IRRequest) -> int:
    n = sum(count_tokens(m.text) + 2 + sum(count_tokens(c.arguments) for c in m.tool_calls) for m in req.messages)
    for t in req.tools:
        n += count_tokens(t.name + " " + (t.description or "")) + count_tokens(orjson.dumps(t.parameters).decode())
    if req.response_format is not None and req.response_format.schema:
        n += count_tokens(orjson.dumps(req.response_format.schema).decode())
    return max(1, n)


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    best: tuple[int, str] | None = None
    for s in stops:
        if s:
            i = text.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
    return (text, None) if best is None else (text[:best[0]], best[1])


def answer(req: IRRequest) -> Answer:
    """The model's whole answer to ``req``."""
    digest = hashlib.sha256(orjson.dumps([[m.role, m.text] for m in req.messages])).hexdigest()
    native = "local-" + digest[:24]
    limit = req.max_tokens if req.max_tokens is not None and req.max_tokens >= 0 else None
    finish: FinishReason = "stop"
    tool = _forced_tool(req)
    if tool is not None:
        args = orjson.dumps(value_for(tool.parameters, _last_user_text(req.messages))).decode()
        pieces = tokens(args)
        if limit is not None and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"
        call = ToolCall("call_" + digest[24:48], tool.name, "".join(pieces))
        return Answer("", call, "tool_calls" if finish == "stop" else finish, None,
                      Usage(_input_tokens(req), len(pieces)), native)
    text, stop = _cut_at_stop(_structured(req, _reply_text(req.messages)), req.stop)
    pieces = tokens(text)
    if limit is not None and len(pieces) > limit:
        pieces, finish, stop = pieces[:limit], "length", None
    return Answer("".join(pieces), None, finish, stop, Usage(_input_tokens(req), len(pieces)), native)


class LocalChat:
    """The ``local`` provider's chat adapter (``ChatProvider``)."""

    provider_id = "local"
    supports = frozenset({"max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice",
                          "response_format", "user"})

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        a = answer(req)
        return IRResponse(content=a.text, tool_calls=[a.call] if a.call else [], finish_reason=a.finish,
                          usage=a.usage, native_id=a.native_id, model=req.model, stop_sequence=a.stop_sequence)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        a = answer(req)
        yield IRDelta(native_id=a.native_id, model=req.model)
        for piece in tokens(a.text):
            yield IRDelta(text=piece, native_id=a.native_id)
            await asyncio.sleep(0)  # one event per token: let the writer send it
        if a.call is not None:
            yield IRDelta(tool_call=ToolCallDelta(0, a.call.id, a.call.name, ""), native_id=a.native_id)
            for piece in tokens(a.call.arguments):
                yield IRDelta(tool_call=ToolCallDelta(0, arguments=piece), native_id=a.native_id)
                await asyncio.sleep(0)
        yield IRDelta(finish_reason=a.finish, native_id=a.native_id, stop_sequence=a.stop_sequence)
        yield IRDelta(usage=a.usage, native_id=a.native_id)

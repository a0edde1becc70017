"""The internal representation (IR) every text protocol is decoded into and encoded from.

Invariants:
* A client codec decodes its protocol's request into one :class:`IRRequest`; a provider adapter
  encodes that into its own wire format and returns an :class:`IRResponse` (or a stream of
  :class:`IRDelta`); the client codec encodes that back. Nothing outside the codecs knows a wire
  format.
* ``IRRequest.params`` names every optional feature the request uses (``tools``, ``stop``,
  ``response_format`` …), so routing can skip providers that cannot honour one when
  ``provider.require_parameters`` is true, and adapters can drop the rest.
* Token counts are integers >= 0; ``output_tokens`` includes ``reasoning_tokens`` and
  ``input_tokens`` includes ``cached_tokens`` (the OpenAI convention). Codecs for protocols with
  the other convention (Anthropic) convert at the edge.
* Reasoning effort is one of :data:`EFFORTS`; :func:`effort_to_budget` / :func:`budget_to_effort`
  convert to and from token budgets (Anthropic ``thinking.budget_tokens``, Gemini
  ``thinkingConfig.thinkingBudget``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh")
EFFORT_ALIASES: dict[str, str] = {"instant": "minimal", "max": "xhigh"}

# Budget (tokens) for each effort; the inverse maps a budget to the nearest effort at or below.
_BUDGETS: dict[str, int] = {"none": 0, "minimal": 1024, "low": 2048, "medium": 8192, "high": 16384,
                            "xhigh": 32768}


@dataclass(frozen=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class ImagePart:
    """An image by URL (``https:`` or ``data:``); ``media_type``/``data`` are set for base64 data."""

    url: str
    detail: str | None = None
    media_type: str | None = None
    data: str | None = None  # base64 payload, when the url is a data: URL
    type: Literal["image"] = "image"

    @staticmethod
    def from_url(url: str, detail: str | None = None) -> ImagePart:
        if url.startswith("data:") and ";base64," in url:
            head, data = url[5:].split(";base64,", 1)
            return ImagePart(url=url, detail=detail, media_type=head or "application/octet-stream", data=data)
        return ImagePart(url=url, detail=detail)

    @staticmethod
    def from_base64(media_type: str, data: str) -> ImagePart:
        return ImagePart(url=f"data:{media_type};base64,{data}", media_type=media_type, data=data)


Part = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass
class Message:
    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # role == "tool": the call this answers
    name: str | None = None
    reasoning: str | None = None  # assistant reasoning carried back in history
    is_error: bool = False  # a tool result that reports a failure

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(frozen=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None  # mode == "tool"
    parallel: bool | None = None  # False: at most one call


#: The feature a request uses when its ``tool_choice`` forces a call (``required`` or a named tool): an
#: adapter whose provider only takes ``auto``/``none`` does not have it (the choice is then sent as
#: ``auto``, or the provider skipped under ``provider.require_parameters``).
FORCED_TOOL_CHOICE = "tool_choice:forced"


@dataclass(frozen=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass
class IRRequest:
    model: str  # the provider's model slug once routed; the client's model id before
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None  # explicit token budget (Anthropic/Gemini); else from effort
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    verbosity: str | None = None  # low | medium | high (OpenAI)
    stream: bool = False
    params: set[str] = field(default_factory=set)  # optional features used (see module docstring)

    @property
    def system_text(self) -> str:
        return "\n\n".join(m.text for m in self.messages if m.role in ("system", "developer"))

    def thinking_budget(self) -> int | None:
        if self.reasoning_budget is not None:
            return self.reasoning_budget
        return effort_to_budget(self.reasoning_effort) if self.reasoning_effort else None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def merge(self, other: Usage) -> Usage:
        """Fields of ``other`` that are set (non-zero) replace ours (streams report usage in pieces)."""
        return Usage(other.input_tokens or self.input_tokens, other.output_tokens or self.output_tokens,
                     other.cached_tokens or self.cached_tokens, other.reasoning_tokens or self.reasoning_tokens,
                     other.cache_write_tokens or self.cache_write_tokens)


@dataclass
class IRResponse:
    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    native_id: str | None = None
    model: str | None = None  # the model the provider says answered
    stop_sequence: str | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    id: str | None = None  # set on the first delta of a call
    name: str | None = None  # set on the first delta of a call
    arguments: str = ""


@dataclass(frozen=True)
class IRDelta:
    """One streamed event. Exactly one of the payload fields is meaningful per delta kind."""

    text: str | None = None
    reasoning: str | None = None
    tool_call: ToolCallDelta | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    native_id: str | None = None
    model: str | None = None
    stop_sequence: str | None = None  # with finish_reason "stop": the stop sequence that ended the text


@dataclass
class StreamSummary:
    """Folds a delta stream into the final response (for records and billing)."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, list[str]] = field(default_factory=dict)  # index → [id, name, args…]
    finish_reason: FinishReason | None = None
    usage: Usage = field(default_factory=Usage)
    native_id: str | None = None
    model: str | None = None
    stop_sequence: str | None = None
    events: int = 0

    def add(self, d: IRDelta) -> None:
        self.events += 1
        if d.text:
            self.content.append(d.text)
        if d.reasoning:
            self.reasoning.append(d.reasoning)
        if d.tool_call is not None:
            entry = self.calls.setdefault(d.tool_call.index, ["", ""])
            if d.tool_call.id:
                entry[0] = d.tool_call.id
            if d.tool_call.name:
                entry[1] = d.tool_call.name
            if d.tool_call.arguments:
                entry.append(d.tool_call.arguments)
        if d.finish_reason:
            self.finish_reason = d.finish_reason
            self.stop_sequence = d.stop_sequence
        if d.usage is not None:
            self.usage = self.usage.merge(d.usage)
        if d.native_id and not self.native_id:
            self.native_id = d.native_id
        if d.model and not self.model:
            self.model = d.model

    def response(self) -> IRResponse:
        calls = [ToolCall(v[0], v[1], "".join(v[2:])) for _, v in sorted(self.calls.items())]
        finish: FinishReason = self.finish_reason or ("tool_calls" if calls else "stop")
        return IRResponse("".join(self.content), "".join(self.reasoning) or None, calls, finish, self.usage,
                          self.native_id, self.model, self.stop_sequence)


# ---- reasoning effort ⇄ budgets -----------------------------------------------------------


def normalise_effort(value: Any, param: str = "reasoning_effort") -> str:
    from aistats_gateway.http.errors import bad_request

    if not isinstance(value, str):
        raise bad_request(f"'{param}' must be a string.", param)
    v = EFFORT_ALIASES.get(value, value)
    if v not in EFFORTS:
        raise bad_request(f"Invalid value for '{param}': expected one of {', '.join(EFFORTS)}.", param)
    return v


def effort_to_budget(effort: str) -> int:
    return _BUDGETS[EFFORT_ALIASES.get(effort, effort)]


def budget_to_effort(budget: int) -> str:
    best = "none"
    for name, b in _BUDGETS.items():
        if budget >= b:
            best = name
    return best


def new_call_id(prefix: str = "call_") -> str:
    import secrets

    return prefix + secrets.token_hex(12)

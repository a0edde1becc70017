"""Shared machinery of the fake inference APIs (OpenAI-compatible, Anthropic, Gemini, Cohere, Bedrock).

Invariants every inference fake keeps:

* **Deterministic output.** The answer is ``state.reply_text`` when set, else an echo of the last user
  (or tool-result) text of the request, ``"OK"`` when that is empty. Token counts come from
  :func:`count_tokens` (one token per word ``\\w+`` and per punctuation character) over the text pieces
  the protocol module extracts from the request, plus ``IMAGE_TOKENS`` per image; output tokens are
  counted over the reply text and tool-call argument JSON. ``state.usage`` overrides any of
  ``input_tokens``/``output_tokens``/``cached_tokens``/``reasoning_tokens``. Every usage a fake
  reported is appended to ``state.usages`` so tests can assert exact charges.
* **Faults** (checked after auth, before validation): ``fail_next`` requests answer ``fail_status``
  (429 carries ``Retry-After``); ``first_byte_delay`` is slept before the response starts (plain and
  streaming), ``first_event_delay`` after a stream's headers, ``event_delay`` between stream events;
  ``fail_stream_after`` = N stops a stream after N
  events with the protocol's error event (``stream_fail_mode="event"``) or by dropping the connection
  (``"disconnect"``).
* **Recording.** Every request that reached a route is in ``state.requests`` (``request_count``,
  ``last_body``, ``last_headers``), the failed and unauthenticated ones included, so a test can assert
  that nothing was sent upstream.
* An empty ``api_key`` accepts any key (keyless local servers such as Ollama).
* ``max_tokens`` truncates the reply to that many tokens (finish reason "length"); a stop sequence cuts
  the reply before its first occurrence.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])", re.UNICODE)
IMAGE_TOKENS = 85
REASONING_BUDGET = {"none": 0, "minimal": 0, "low": 8, "medium": 32, "high": 128, "xhigh": 256}


@dataclass
class RecordedCall:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any = None  # parsed JSON when it parsed, else the raw bytes
    status: int | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int  # includes reasoning_tokens
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class InferenceState:
    api_key: str = "sk-test"
    provider: str = "openai"
    reply_text: str | None = None  # fixed answer text instead of the echo
    usage: dict[str, int] = field(default_factory=dict)  # overrides of the computed usage
    cached_tokens: int = 0  # reported as cached (capped to the input tokens)
    models: set[str] | None = None  # None: any model name is accepted
    reject_unknown_params: bool = True
    usage_style: str = "openai"  # OpenAI-compatible streams: openai | final_chunk | x_groq
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None  # force these calls (name, arguments)
    block_words: list[str] = field(default_factory=list)  # prompts refused by a safety filter (Gemini)
    flag_words: dict[str, str] = field(default_factory=lambda: {  # moderation: word → category
        "kill": "violence", "hate": "hate", "bomb": "illicit/violent", "suicide": "self-harm"})
    moderation_usage: bool = False  # Mistral's moderations: also report usage (its documented answer has none)
    # faults
    fail_next: int = 0
    fail_status: int = 503
    fail_message: str | None = None
    retry_after_seconds: float = 1.0
    first_byte_delay: float = 0.0  # before the status line
    first_event_delay: float = 0.0  # streams: after the headers, before the first event
    event_delay: float = 0.0  # streams: between events
    fail_stream_after: int | None = None
    stream_fail_mode: str = "event"  # "event" | "disconnect"
    # records
    requests: list[RecordedCall] = field(default_factory=list)
    usages: list[Usage] = field(default_factory=list)
    stored: dict[str, Any] = field(default_factory=dict)  # stored responses / messages by id

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def last(self) -> RecordedCall | None:
        return self.requests[-1] if self.requests else None

    @property
    def last_body(self) -> Any:
        return self.requests[-1].body if self.requests else None

    @property
    def last_headers(self) -> dict[str, str] | None:
        return self.requests[-1].headers if self.requests else None

    def find(self, path_contains: str) -> list[RecordedCall]:
        return [r for r in self.requests if path_contains in r.path]

    def __post_init__(self) -> None:
        self._initial = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def reset(self) -> None:
        """Back to the state the factory built (knobs as configured, no records); for fakes shared by tests."""
        for name, value in self._initial.items():
            setattr(self, name, copy.deepcopy(value))

    def take_failure(self) -> int | None:
        """The injected status for this request, or None (decrements ``fail_next``)."""
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_status
        return None


def record(state: InferenceState, request: Request) -> RecordedCall:
    rec = RecordedCall(request.method, request.url.path, dict(request.query_params),
                       {k.lower(): v for k, v in request.headers.items()})
    state.requests.append(rec)
    return rec


async def read_json_body(request: Request, rec: RecordedCall) -> Any:
    """The parsed JSON body (recorded on ``rec``); raises ValueError when it is not JSON."""
    raw = await request.body()
    try:
        rec.body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        rec.body = raw
        raise ValueError("body is not valid JSON") from None
    return rec.body


# ---------------------------------------------------------------- text and tokens
def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def pieces(text: str) -> list[str]:
    """Stream chunks: each token with its leading whitespace; their concatenation is ``text`` (minus
    trailing whitespace)."""
    out = PIECE_RE.findall(text)
    return out if out else ([text] if text else [])


def truncate_tokens(text: str, limit: int) -> str:
    return "".join(pieces(text)[:limit]).lstrip() if limit >= 0 else text


def apply_stop(text: str, stops: Iterable[str]) -> tuple[str, str | None]:
    """(text cut before the earliest stop sequence, that sequence or None)."""
    best: tuple[int, str] | None = None
    for s in stops:
        if s and (i := text.find(s)) >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return (text[:best[0]], best[1]) if best else (text, None)


def finish_text_seq(state: InferenceState, echo: str, max_tokens: int | None,
                    stops: Iterable[str] = ()) -> tuple[str, str, str | None]:
    """(reply text, reason, the stop sequence hit) with reason in ``stop`` | ``length`` | ``stop_sequence``."""
    text = state.reply_text if state.reply_text is not None else (echo.strip() or "OK")
    text, hit = apply_stop(text, stops)
    if max_tokens is not None and count_tokens(text) > max_tokens:
        return truncate_tokens(text, max_tokens), "length", None
    return text, "stop_sequence" if hit else "stop", hit


def finish_text(state: InferenceState, echo: str, max_tokens: int | None,
                stops: Iterable[str] = ()) -> tuple[str, str]:
    """(reply text, reason) with reason in ``stop`` | ``length`` | ``stop_sequence``."""
    text, reason, _ = finish_text_seq(state, echo, max_tokens, stops)
    return text, reason


def make_usage(state: InferenceState, input_tokens: int, output_tokens: int, reasoning: int = 0) -> Usage:
    o = state.usage
    u = Usage(input_tokens=o.get("input_tokens", input_tokens),
              output_tokens=o.get("output_tokens", output_tokens + reasoning),
              cached_tokens=o.get("cached_tokens", min(state.cached_tokens, input_tokens)),
              reasoning_tokens=o.get("reasoning_tokens", reasoning))
    state.usages.append(u)
    return u


def reasoning_tokens_for(effort: str | None, budget: int | None = None) -> int:
    if budget is not None:
        return max(0, min(budget, 64))
    return REASONING_BUDGET.get(effort or "", 0)


# ---------------------------------------------------------------- JSON schema → instance, tool arguments
def example_for_schema(schema: Any, seed: str, depth: int = 0) -> Any:
    """A deterministic value matching the common JSON-schema keywords of ``schema`` (type, properties,
    required, enum, const, items, anyOf/oneOf, minItems); every property is filled, required or not."""
    if not isinstance(schema, dict) or depth > 8:
        return seed
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_for_schema(schema[key][0], seed, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or (typ is None and "properties" in schema):
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        out = {k: example_for_schema(v, seed, depth + 1) for k, v in props.items()}
        for k in schema.get("required") or []:
            out.setdefault(k, seed)
        return out
    if typ == "array":
        n = max(1, int(schema.get("minItems", 1)))
        return [example_for_schema(schema.get("items", {}), seed, depth + 1) for _ in range(n)]
    if typ == "integer":
        return int(schema.get("minimum", 1))
    if typ == "number":
        return float(schema.get("minimum", 1.5))
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return seed


def pick_tool(state: InferenceState, tools: list[tuple[str, Any]], choice: str | None,
              user_text: str) -> list[tuple[str, dict[str, Any]]]:
    """Tool calls to make: ``state.tool_calls`` when set; ``choice`` = a tool name → that tool;
    ``required``/``any`` → the first tool named in the user text, else the first tool; ``auto`` → a tool
    whose name appears in the user text (none otherwise); ``none`` → none. Arguments follow the schema."""
    if not tools or choice == "none":
        return []
    if state.tool_calls is not None:
        return list(state.tool_calls)
    named = {n: s for n, s in tools}
    lower = user_text.lower()
    mentioned = next((n for n, _ in tools if n.lower() in lower), None)
    if choice not in (None, "auto", "required", "any"):
        target: str | None = choice if choice in named else None
    elif choice in ("required", "any"):
        target = mentioned or tools[0][0]
    else:
        target = mentioned
    if target is None:
        return []
    args = example_for_schema(named[target] or {"type": "object"}, user_text.strip()[:40] or "x")
    return [(target, args if isinstance(args, dict) else {"value": args})]


def seeded_vector(text: str, dims: int) -> list[float]:
    """A unit-length vector derived from sha256(text); same text → same vector."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    vec = out[:dims]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


# ---------------------------------------------------------------- delays and streams
async def first_byte_wait(state: InferenceState) -> None:
    if state.first_byte_delay > 0:
        await asyncio.sleep(state.first_byte_delay)


class StreamDropped(Exception):
    """Raised inside a streaming body to drop the connection (``stream_fail_mode="disconnect"``)."""


def stream(state: InferenceState, events: list[bytes], error_event: Callable[[int], bytes],
           media_type: str = "text/event-stream", headers: dict[str, str] | None = None) -> Response:
    """A streaming response of pre-framed ``events`` honouring the delay and mid-stream fault knobs.
    ``error_event(i)`` frames the protocol's error event replacing event ``i``. ``first_byte_delay`` is
    slept by the caller (before the status line) via :func:`first_byte_wait`."""
    fail_after, mode, gap, first = state.fail_stream_after, state.stream_fail_mode, state.event_delay, \
        state.first_event_delay

    async def body() -> AsyncIterator[bytes]:
        for i, ev in enumerate(events):
            if i == 0 and first > 0:
                await asyncio.sleep(first)
            if i and gap > 0:
                await asyncio.sleep(gap)
            if fail_after is not None and i >= fail_after:
                if mode == "disconnect":
                    raise StreamDropped("fake stream dropped")
                yield error_event(i)
                return
            yield ev

    hdrs = {"cache-control": "no-cache", **(headers or {})}
    return StreamingResponse(body(), media_type=media_type, headers=hdrs)


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame: optional ``event:`` line, one ``data:`` line of compact JSON (or a raw string)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()

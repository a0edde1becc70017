"""Field checks shared by the codecs, the SSE frame writer and the metadata every encoder adds.

Every check raises ``APIError`` 400 naming the parameter, so bad input is never a 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from aistats_gateway.http.errors import bad_request
from aistats_gateway.llm.ir import Usage

NANOS = 1_000_000_000


@dataclass
class Meta:
    """What the gateway adds to each answer: its generation id, the model the client named, the
    provider that answered, the creation time and (once known) the cost."""

    id: str
    model: str
    provider: str
    created: int
    cost_nanos: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / NANOS


def sse(data: Any, event: str | None = None) -> bytes:
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    if event:
        return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"


def obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"'{param}' must be an object.", param)
    return value


def arr(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise bad_request(f"'{param}' must be an array.", param)
    return value


def string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"'{param}' must be a string.", param)
    return value


def opt_str(body: dict[str, Any], key: str, param: str | None = None) -> str | None:
    v = body.get(key)
    return None if v is None else string(v, param or key)


def number(body: dict[str, Any], key: str, lo: float, hi: float, param: str | None = None) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    p = param or key
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad_request(f"'{p}' must be a number.", p)
    if not lo <= v <= hi:
        raise bad_request(f"Invalid value for '{p}': {v} is outside [{lo:g}, {hi:g}].", p)
    return float(v)


def integer(body: dict[str, Any], key: str, lo: int, hi: int = 2**31, param: str | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    p = param or key
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"'{p}' must be an integer.", p)
    if not lo <= v <= hi:
        raise bad_request(f"Invalid value for '{p}': {v} is outside [{lo}, {hi}].", p)
    return v


def boolean(body: dict[str, Any], key: str, param: str | None = None) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise bad_request(f"'{key}' must be a boolean.", param or key)
    return v


def stops(value: Any, param: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = arr(value, param)
    if len(items) > 16:
        raise bad_request(f"'{param}' accepts at most 16 sequences.", param)
    return [string(s, f"{param}[{i}]") for i, s in enumerate(items)]


def json_args(text: str) -> Any:
    """Tool-call arguments (JSON text) as a value; invalid JSON is kept as a string."""
    if not text:
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"_raw": text}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def int_of(d: dict[str, Any] | None, *keys: str) -> int:
    """The first integer found at a (dotted) key of ``d``, else 0."""
    for key in keys:
        cur: Any = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, int) and not isinstance(cur, bool):
            return cur
    return 0


def usage_chat(u: Usage, meta: Meta | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }
    if meta is not None:
        out["cost"] = meta.cost_usd
    return out

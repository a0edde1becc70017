"""The protocols an inference adapter implements, and the upstream HTTP/SSE helpers they share.

Invariants:
* An adapter turns an :class:`~aistats_gateway.llm.ir.IRRequest` into its provider's wire
  format and back; it never touches the database, billing or the client's protocol.
* ``stream`` yields IR deltas as the provider's events arrive (SSE parsed line by line, never the
  whole body first). Errors before the first delta are raised as ``ProviderError`` (the router
  may fall back); errors after it are raised too, and the endpoint turns them into the client
  protocol's error event.
* Every upstream failure is a ``ProviderError`` with a kind (``providers.base``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from aistats_gateway.http import aiohttp_transport
from aistats_gateway.llm.ir import IRDelta, IRRequest, IRResponse
from aistats_gateway.providers import _http
from aistats_gateway.providers.base import CallContext, ProviderError, error_from_status


class ChatProvider(Protocol):
    provider_id: str
    # Request features (IRRequest.params names) this adapter can send upstream.
    supports: frozenset[str]

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse: ...

    def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]: ...


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    inputs: list[str] | list[list[int]]
    dimensions: int | None = None
    encoding_format: str | None = None  # float | base64
    user: str | None = None
    input_type: str | None = None  # search_document | search_query | classification | clustering (Cohere)


@dataclass
class EmbeddingsResult:
    vectors: list[Any]  # list[float] each, or base64 strings when asked for
    input_tokens: int
    model: str | None = None


class EmbeddingsProvider(Protocol):
    provider_id: str

    async def embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult: ...


@dataclass
class ModerationResult:
    results: list[dict[str, Any]]
    native_id: str | None = None
    model: str | None = None
    input_tokens: int = 0


class ModerationProvider(Protocol):
    provider_id: str

    async def moderate(self, model: str, inputs: Any, ctx: CallContext) -> ModerationResult: ...


# ---- helpers ------------------------------------------------------------------------------


def error_message(resp: httpx.Response, body: bytes) -> tuple[str, str | None]:
    """The provider's error message and code from an error body (OpenAI, Anthropic or Google shape)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode(errors="replace") or f"HTTP {resp.status_code}", None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type") or err.get("status")
        return str(err.get("message") or doc), str(code) if code is not None else None
    if isinstance(err, str):
        return err, None
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"]), None
    return str(doc)[:300], None


def raise_for(resp: httpx.Response, body: bytes, provider: str) -> None:
    if resp.status_code < 400:
        return
    message, code = error_message(resp, body)
    err = error_from_status(resp.status_code, f"{provider}: {message}", retry_after=_http.retry_after(resp))
    err.code = err.code if code is None or resp.status_code >= 500 else code
    if resp.status_code == 529:
        err.kind = "unavailable"
    raise err


async def post_json(ctx: CallContext, url: str, body: dict[str, Any], headers: dict[str, str],
                    provider: str) -> dict[str, Any]:
    hdrs = {"content-type": "application/json", **headers}
    fast = aiohttp_transport.direct(ctx.http)
    if fast is None:
        resp = await _http.send(ctx.http, "POST", url, provider=provider, content=orjson.dumps(body), headers=hdrs)
        raise_for(resp, resp.content, provider)
        return _http.json_object(resp, provider)
    # The upstream client's aiohttp wire without httpx's models (same headers, timeouts and errors).
    status, raw_headers, content = await _http.guarded(provider, fast.post_bytes(ctx.http, url, orjson.dumps(body),
                                                                                 hdrs))
    if status >= 400:
        raise_for(httpx.Response(status, headers=raw_headers, content=content), content, provider)
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError as e:
        raise ProviderError("upstream", f"{provider} returned a body that is not JSON (HTTP {status})",
                            status=status, code="invalid_upstream_response") from e
    if not isinstance(doc, dict):
        raise ProviderError("upstream", f"{provider} returned an unexpected JSON body (HTTP {status})",
                            status=status, code="invalid_upstream_response")
    return doc


@dataclass
class SSEEvent:
    event: str | None
    data: str


@dataclass
class _Lines:
    event: str | None = None
    data: list[str] = field(default_factory=list)


@asynccontextmanager
async def open_stream(ctx: CallContext, url: str, body: dict[str, Any], headers: dict[str, str],
                      provider: str) -> AsyncIterator[httpx.Response]:
    """POST and open the response for streaming; HTTP errors raise before anything is yielded."""
    hdrs = {"content-type": "application/json", "accept": "text/event-stream", **headers}
    fast = aiohttp_transport.direct(ctx.http)
    try:
        if fast is not None:  # the upstream client's aiohttp wire without httpx's client machinery
            resp = await fast.open_post(ctx.http, url, orjson.dumps(body), hdrs)
            try:
                if resp.status_code >= 400:
                    raise_for(resp, await resp.aread(), provider)
                yield resp
            finally:
                await resp.aclose()
            return
        async with ctx.http.stream("POST", url, content=orjson.dumps(body), headers=hdrs) as resp:
            if resp.status_code >= 400:
                raise_for(resp, await resp.aread(), provider)
            yield resp
    except httpx.TimeoutException as e:
        raise ProviderError("unavailable", f"{provider} timed out ({e.__class__.__name__})",
                            code="provider_timeout") from e
    except httpx.TransportError as e:
        raise ProviderError("unavailable", f"cannot reach {provider}: {e.__class__.__name__}: {e}",
                            code="provider_unreachable") from e


async def sse_events(resp: httpx.Response) -> AsyncIterator[SSEEvent]:
    """Server-sent events from a streaming response, one at a time as lines arrive."""
    cur = _Lines()
    async for line in resp.aiter_lines():
        if not line:
            if cur.data:
                yield SSEEvent(cur.event, "\n".join(cur.data))
            cur = _Lines()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            cur.data.append(value)
        elif name == "event":
            cur.event = value
    if cur.data:
        yield SSEEvent(cur.event, "\n".join(cur.data))


def event_json(ev: SSEEvent, provider: str) -> dict[str, Any] | None:
    """The event's JSON object; None for ``[DONE]``; ``upstream`` error for anything else."""
    if ev.data.strip() == "[DONE]":
        return None
    try:
        doc = orjson.loads(ev.data)
    except orjson.JSONDecodeError as e:
        raise ProviderError("upstream", f"{provider} sent an event that is not JSON",
                            code="invalid_upstream_event") from e
    if not isinstance(doc, dict):
        raise ProviderError("upstream", f"{provider} sent an unexpected event", code="invalid_upstream_event")
    return doc

"""Chat through Anthropic's Messages API (``POST {base}/messages``, SSE when streaming).

Settings: ``AISTATS_PROVIDER_ANTHROPIC_API_KEY`` (sent as ``x-api-key`` with
``anthropic-version: 2023-06-01``) and ``AISTATS_PROVIDER_ANTHROPIC_BASE_URL`` (default
``https://api.anthropic.com/v1``). ``max_tokens`` is required upstream: the request's, else
:data:`DEFAULT_MAX_TOKENS`. Overloaded (529) counts as unavailable, so the router falls back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aistats_gateway.llm.codecs import messages
from aistats_gateway.llm.ir import IRDelta, IRRequest, IRResponse
from aistats_gateway.providers.base import CallContext, ErrorKind, ProviderError
from aistats_gateway.providers.inference import (
    event_json,
    open_stream,
    post_json,
    sse_events,
)

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
DEFAULT_MAX_TOKENS = 4096
VERSION = "2023-06-01"


def _url(ctx: CallContext) -> str:
    return (ctx.base_url or DEFAULT_BASE_URL).rstrip("/") + "/messages"


def _headers(ctx: CallContext) -> dict[str, str]:
    out = {"anthropic-version": VERSION}
    if ctx.api_key:
        out["x-api-key"] = ctx.api_key
    return out


class AnthropicChat:
    provider_id = "anthropic"
    supports = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
                          "response_format", "reasoning_effort", "user"})
    # Kept whatever the catalogue's parameter list says: effort becomes an extended-thinking budget.
    native = frozenset({"reasoning_effort"})

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        body = messages.encode_request(req, DEFAULT_MAX_TOKENS)
        body.pop("stream", None)
        doc = await post_json(ctx, _url(ctx), body, _headers(ctx), self.provider_id)
        if doc.get("type") != "message":
            raise ProviderError("upstream", "anthropic returned something other than a message",
                                code="invalid_upstream_response")
        return messages.decode_response(doc)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        body = messages.encode_request(req, DEFAULT_MAX_TOKENS)
        body["stream"] = True
        decoder = messages.StreamDecoder()
        async with open_stream(ctx, _url(ctx), body, _headers(ctx), self.provider_id) as resp:
            async for ev in sse_events(resp):
                doc = event_json(ev, self.provider_id)
                if doc is None:
                    continue
                if doc.get("type") == "error" or ev.event == "error":
                    err = doc.get("error") or {}
                    kind: ErrorKind = "unavailable" if err.get("type") == "overloaded_error" else "upstream"
                    raise ProviderError(kind, f"anthropic: {err.get('message') or 'stream error'}",
                                        code="upstream_stream_error")
                for d in decoder.event(doc):
                    yield d
                if doc.get("type") == "message_stop":
                    break

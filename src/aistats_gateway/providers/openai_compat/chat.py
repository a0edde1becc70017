"""Chat Completions against any OpenAI-compatible API; the per-provider differences are data.

Settings per provider: ``AISTATS_PROVIDER_<ID>_API_KEY`` (sent as ``Authorization: Bearer``) and
``AISTATS_PROVIDER_<ID>_BASE_URL`` (replaces :attr:`Family.base_url`, which includes ``/v1``; for a provider
whose base URL is its API host shared with other capabilities, :attr:`Family.root_suffix` is appended to it:
Alibaba's ``/compatible-mode/v1``).
Streams always ask for usage (``stream_options.include_usage``) so they can be charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aistats_gateway.llm.codecs import chat
from aistats_gateway.llm.ir import IRDelta, IRRequest, IRResponse
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import (
    event_json,
    open_stream,
    post_json,
    sse_events,
)

ALL = frozenset({"max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
                 "tools", "tool_choice", "response_format", "reasoning_effort", "user"})
OPENAI = ALL | {"verbosity"}


@dataclass(frozen=True)
class Family:
    """One OpenAI-compatible provider: where it is and which request features it accepts."""

    provider_id: str
    base_url: str
    supports: frozenset[str] = ALL
    developer_role: bool = True  # False: send "developer" messages as "system"
    max_tokens_key: str = "max_completion_tokens"
    renames: tuple[tuple[str, str], ...] = ()  # (IR field, the provider's name)
    chat_path: str = "/chat/completions"  # below the base URL
    root_suffix: str = ""  # appended to a configured AISTATS_PROVIDER_<ID>_BASE_URL (see the module docstring)
    embed_batch: int | None = None  # most inputs per /embeddings call (more are sent in several calls)
    forced_tool_choice: bool = True  # False: tool_choice takes only auto/none (a forced one is sent as auto)


FAMILIES: dict[str, Family] = {f.provider_id: f for f in (
    Family("openai", "https://api.openai.com/v1", OPENAI),
    Family("mistral", "https://api.mistral.ai/v1", ALL - {"reasoning_effort", "user"}, False, "max_tokens",
           (("seed", "random_seed"),)),
    Family("deepseek", "https://api.deepseek.com/v1", ALL - {"seed", "reasoning_effort", "user"}, False, "max_tokens"),
    Family("x-ai", "https://api.x.ai/v1", ALL, False, "max_tokens"),
    Family("groq", "https://api.groq.com/openai/v1", ALL - {"reasoning_effort"}, False, "max_tokens"),
    Family("together", "https://api.together.xyz/v1", ALL - {"reasoning_effort"}, False, "max_tokens"),
    # DashScope's OpenAI-compatible mode; AISTATS_PROVIDER_ALIBABA_BASE_URL is the host (shared with video).
    Family("alibaba", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
           ALL - {"reasoning_effort", "user", "frequency_penalty"}, False, "max_tokens",
           root_suffix="/compatible-mode/v1", embed_batch=10),
)}


def base_url(family: Family, ctx: CallContext) -> str:
    if ctx.base_url:
        return ctx.base_url.rstrip("/") + family.root_suffix
    return family.base_url.rstrip("/")


def headers(ctx: CallContext) -> dict[str, str]:
    return {"authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}


class OpenAICompatChat:
    def __init__(self, family: Family) -> None:
        self.family = family
        self.provider_id = family.provider_id
        self.supports = family.supports
        self.forced_tool_choice = family.forced_tool_choice

    def body(self, req: IRRequest) -> dict[str, object]:
        return chat.encode_request(req, supports=self.supports, developer_role=self.family.developer_role,
                                   max_tokens_key=self.family.max_tokens_key, renames=dict(self.family.renames))

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        body = self.body(req)
        body.pop("stream", None)
        body.pop("stream_options", None)
        doc = await post_json(ctx, base_url(self.family, ctx) + self.family.chat_path, body, headers(ctx),
                              self.provider_id)
        if not isinstance(doc.get("choices"), list):
            raise ProviderError("upstream", f"{self.provider_id} returned no choices", code="invalid_upstream_response")
        return chat.decode_response(doc)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        body = self.body(req)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        async with open_stream(ctx, base_url(self.family, ctx) + self.family.chat_path, body, headers(ctx),
                               self.provider_id) as resp:
            async for ev in sse_events(resp):
                doc = event_json(ev, self.provider_id)
                if doc is None:
                    break
                if isinstance(doc.get("error"), dict) or doc.get("object") == "error":
                    err: dict[str, Any] = doc["error"] if isinstance(doc.get("error"), dict) else doc
                    raise ProviderError("upstream", f"{self.provider_id}: {err.get('message') or 'stream error'}",
                                        code="upstream_stream_error")
                for d in chat.decode_chunk(doc):
                    yield d

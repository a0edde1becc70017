"""MiniMax text chat: ``POST /v1/text/chatcompletion_v2`` (OpenAI-shaped, with MiniMax's ``base_resp``).

The request and answer are the Chat Completions shape (``chat`` codec); the differences are data on the
:data:`FAMILY` (path, ``max_completion_tokens``, no ``developer`` role, no stop sequences or seed) and
MiniMax's error convention: an HTTP 200 whose ``base_resp.status_code`` is not 0 is an error, mapped to
the same kinds as the video adapter (``minimax.status_kind``: 1004 auth, 1008 quota, 1002/1039 rate
limit, 1026/1027 content policy, 2013 client, 1000/1001/1024 unavailable). In a stream such an answer
can come as a JSON body instead of events, or as an event carrying ``base_resp``; both raise.

Settings: ``AISTATS_PROVIDER_MINIMAX_API_KEY`` and ``AISTATS_PROVIDER_MINIMAX_BASE_URL`` (the API host,
default ``https://api.minimax.io``; ``https://api.minimaxi.com`` in mainland China), shared with video.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from aistats_gateway.llm.codecs import chat
from aistats_gateway.llm.ir import IRDelta, IRRequest, IRResponse
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import event_json, open_stream, post_json, sse_events
from aistats_gateway.providers.minimax import base_error
from aistats_gateway.providers.openai_compat.chat import Family, OpenAICompatChat, base_url, headers

FAMILY = Family("minimax", "https://api.minimax.io",
                frozenset({"max_tokens", "temperature", "top_p", "tools", "tool_choice", "response_format"}),
                developer_role=False, max_tokens_key="max_completion_tokens", chat_path="/v1/text/chatcompletion_v2",
                forced_tool_choice=False)  # tool_choice: "none" or "auto" only


def check_base_resp(doc: dict[str, Any]) -> None:
    """Raise the ``ProviderError`` of a non-zero ``base_resp.status_code``."""
    base = doc.get("base_resp")
    if not isinstance(base, dict):
        return
    code = base.get("status_code")
    if isinstance(code, int) and code != 0:
        raise base_error(code, str(base.get("status_msg") or ""))


class MiniMaxChat(OpenAICompatChat):
    def __init__(self) -> None:
        super().__init__(FAMILY)

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        body = self.body(req)
        body.pop("stream", None)
        body.pop("stream_options", None)
        doc = await post_json(ctx, base_url(FAMILY, ctx) + FAMILY.chat_path, body, headers(ctx), self.provider_id)
        check_base_resp(doc)
        if not isinstance(doc.get("choices"), list) or not doc["choices"]:
            raise ProviderError("upstream", "minimax returned no choices", code="invalid_upstream_response")
        return chat.decode_response(doc)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        body = self.body(req)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        async with open_stream(ctx, base_url(FAMILY, ctx) + FAMILY.chat_path, body, headers(ctx),
                               self.provider_id) as resp:
            if resp.headers.get("content-type", "").startswith("application/json"):  # an error, not a stream
                try:
                    doc = orjson.loads(await resp.aread())
                except orjson.JSONDecodeError:
                    doc = None
                if isinstance(doc, dict):
                    check_base_resp(doc)
                raise ProviderError("upstream", "minimax answered a stream request without events",
                                    code="invalid_upstream_response")
            async for ev in sse_events(resp):
                doc = event_json(ev, self.provider_id)
                if doc is None:
                    break
                check_base_resp(doc)
                for d in chat.decode_chunk(doc):
                    yield d

"""Embeddings and moderations against OpenAI-compatible APIs (``/embeddings``, ``/moderations``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import (
    EmbeddingsRequest,
    EmbeddingsResult,
    ModerationResult,
    post_json,
)
from aistats_gateway.providers.openai_compat.chat import Family, base_url, headers


class OpenAICompatEmbeddings:
    def __init__(self, family: Family) -> None:
        self.family = family
        self.provider_id = family.provider_id

    async def embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult:
        size = self.family.embed_batch
        if size is None or len(req.inputs) <= size:
            return await self._embed(req, ctx)
        vectors: list[Any] = []
        tokens = 0
        model: str | None = None
        for start in range(0, len(req.inputs), size):  # the provider's batch limit, in order
            part = await self._embed(replace(req, inputs=req.inputs[start:start + size]), ctx)
            vectors.extend(part.vectors)
            tokens += part.input_tokens
            model = model or part.model
        return EmbeddingsResult(vectors, tokens, model)

    async def _embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult:
        body: dict[str, Any] = {"model": req.model, "input": req.inputs}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if req.encoding_format:
            body["encoding_format"] = req.encoding_format
        if req.user:
            body["user"] = req.user
        doc = await post_json(ctx, base_url(self.family, ctx) + "/embeddings", body, headers(ctx), self.provider_id)
        data = doc.get("data")
        if not isinstance(data, list):
            raise ProviderError("upstream", f"{self.provider_id} returned no embeddings",
                                code="invalid_upstream_response")
        data = sorted((d for d in data if isinstance(d, dict)), key=lambda d: int(d.get("index") or 0))
        usage = doc.get("usage") or {}
        tokens = usage.get("prompt_tokens") or usage.get("total_tokens") or 0
        return EmbeddingsResult([d.get("embedding") for d in data], int(tokens), doc.get("model"))


class OpenAICompatModerations:
    def __init__(self, family: Family) -> None:
        self.family = family
        self.provider_id = family.provider_id

    async def moderate(self, model: str, inputs: Any, ctx: CallContext) -> ModerationResult:
        doc = await post_json(ctx, base_url(self.family, ctx) + "/moderations", {"model": model, "input": inputs},
                              headers(ctx), self.provider_id)
        results = doc.get("results")
        if not isinstance(results, list):
            raise ProviderError("upstream", f"{self.provider_id} returned no results", code="invalid_upstream_response")
        return ModerationResult(results, doc.get("id"), doc.get("model"))
